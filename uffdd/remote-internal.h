/* SPDX-License-Identifier: MIT */
/*
 * Page-server sources (source-remote.c) and the connections they share
 * (remote-conn.c; taken back after a restart by remote-adopt.c), private to
 * those three files.
 */
#ifndef UFFDD_REMOTE_INTERNAL_H
#define UFFDD_REMOTE_INTERNAL_H

#include "uffdd.h"

/* A source's list of GETs grows by this many at once: its room is always
 * its count rounded up to a multiple of it. */
#define RGETS_STEP 16
/* Pages one GET asks for at most: CRIU's page server answers 1 MiB whole. */
#define REMOTE_GET_PAGES 256
/*
 * Buffers of whole GETs a connection keeps once their pages are placed, for
 * the next GETs: a buffer new to the daemon faults in each of its pages as
 * the reply is read into it (and gives them back when freed), which took a
 * quarter of uffdd's CPU time in a 256 MiB remote restore.  A push keeps
 * REMOTE_AHEAD_BYTES (source-remote.c) in flight and places the GET before
 * them: this many cover that.
 */
#define REMOTE_SPARES_MAX 8

/* One GET: [addr, addr + nr pages), ready pages in buf from addr, used of
 * them placed. */
struct rget {
	uint64_t addr, nr, ready, used;
	uint8_t *buf;
};

/* One connection to a page server, shared by the sources of one uid made
 * over the same socket; every field but the fixed ones under lock. */
struct conn {
	pthread_mutex_t lock;
	uint64_t id;	  /* r<id> in the fd store, fixed */
	struct rrec *rec; /* its durable record (remote-record.c); NULL: none */
	bool adopted;	  /* taken back at start: its sources not yet claimed */
	dev_t dev;	  /* the socket's, fixed */
	ino_t ino;
	uid_t uid;
	struct pin_ps *ps;
	struct pin_ps_gets *gets;
	struct remote *views; /* its sources, the orphans too */
	unsigned int live;    /* sources not orphaned */
	uint64_t bytes;	      /* buffers of all its sources */
	uint64_t since;	      /* ns: the last reply, or when the first GET went out */
	int err;	      /* broken: its -errno */
	bool ending;	      /* its last source left: being closed (conn_end()) */
	bool end_journaled;   /* taken back with its end begun */
	/* Free buffers of whole GETs: with bytes, within the cap. */
	uint8_t *spares[REMOTE_SPARES_MAX];
	unsigned int nspares;
	struct conn *next;
};

struct remote {
	uint64_t id; /* REMOTE_ID_BIT set */
	uint64_t task;
	uint64_t sid;	  /* the session that handed it over, for log lines */
	struct conn *c;	  /* NULL: lost, never read */
	struct worker *w; /* NULL: lost, or an orphan */
	/* Under c->lock: the worker of its sessions (remote_home()). */
	struct worker *home;
	int fd;		 /* its descriptor of the socket, in w's epoll */
	uint32_t events; /* what the worker's epoll waits for */
	int err;	 /* lost: -ENOTCONN */
	/* Under c->lock: */
	struct rget *v;
	size_t n;
	bool orphan;  /* its sources are gone: kept for its GETs in flight */
	bool claimed; /* taken back at start: a region rebuilt took it */
	/* Its sources (the regions rebuilt that claimed it; 1 for a source
	 * made of a handover): the last remote_free() frees it. */
	_Atomic unsigned int refs;
	bool starved; /* found no room: told when some is freed */
	bool shed;    /* asked to drop its answered buffers */
	struct remote *cnext;
	/* Any thread: */
	atomic_bool pays;    /* its session is charged for the connection */
	atomic_bool moved;   /* a reply came or it broke since the last pump */
	struct remote *next; /* w's list */
};

/* The end of g's pages in the source. */
uint64_t rget_end(const struct rget *g);
/* Tell rm's worker that something moved for it (self: the worker telling). */
void remote_tell(struct remote *rm, const struct worker *self);
/* rm's worker's epoll watch of its descriptor: made once, gone once the
 * connection broke. */
void remote_rewatch(struct remote *rm);
/* rm's connection fails with err (once: one log line; its sources told). */
void remote_broken(struct remote *rm, int err, uint64_t addr, uint64_t nr, const char *why);
/* Drop GET i of rm and its buffer; the sources that found no room are told. */
void remote_drop(struct remote *rm, size_t i, const struct worker *self);
/* A buffer for a GET of nr pages (under c->lock): a spare, or a new one. */
uint8_t *conn_buf(struct conn *c, uint64_t nr);
/* Drop rm's answered GETs (rm's worker), or as they come. */
void remote_shed(struct remote *rm);
/* Take an orphan out of c's sources. */
void remote_unlink(struct conn *c, struct remote *rm);
/* rm joins uid's connection over the socket fd (st), made if none: 0, or
 * -EBUSY (another uid's), -ESHUTDOWN (being ended), -errno; its session pays if it is the first. */
int conn_join(int fd, const struct stat *st, uid_t uid, uint64_t sid, struct remote *rm);
/* A connection over a descriptor of its own (the caller keeps fd), its
 * record rec (NULL: a new one is made and stored when the store is on). */
int conn_new(int fd, const struct stat *st, uid_t uid, uint64_t sid, struct rrec *rec,
	     struct conn **ret);
/* Free a connection no one else holds. */
void conn_free(struct conn *c);
/* c, adopted, joins the table. */
void conn_add(struct conn *c);
/* Every connection, under conns_lock. */
extern pthread_mutex_t conns_lock;
extern struct conn *conns;
/* Drop c from the table and free it without ending its stream (under
 * conns_lock, kept, and c->lock, released). */
void conn_drop(struct conn *c);
/* The last source left c (under conns_lock and c->lock, both released
 * here): c is ended with the server off the caller's thread. */
void conn_last_left(struct conn *c);
/* Connection and source ids are above those taken (taken back). */
void conn_id_taken(uint64_t id);
void remote_id_taken(uint64_t id);
/* A new source's id (REMOTE_ID_BIT set). */
uint64_t remote_id_next(void);
/* rm (its worker's watch gone) leaves c: the last ends it with the server
 * (PS_IOV_CLOSE once what is in flight is read) and closes it, else rm stays
 * as an orphan while GETs of it are in flight. */
void conn_leave(struct conn *c, struct remote *rm);

#endif
