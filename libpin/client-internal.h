/* SPDX-License-Identifier: MIT */
/*
 * The uffdd client's private declarations, shared by its files only:
 * client.c (the connection, its restarts, the end), client-wire.c (one
 * request on the connection), client-regions.c, client-pins.c and
 * client-list.c (the requests, by what they are about).  Each of those calls
 * only the files after it in this list: client-regions.c, client-pins.c,
 * client-list.c, client.c, client-wire.c.  Never installed.
 */
#ifndef LIBPIN_CLIENT_INTERNAL_H
#define LIBPIN_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "libpin-private.h"

/* The client's duplicate of a source file's descriptor, shared by every
 * region added with it in one call (a CRIU task's thousands of regions are
 * one descriptor, not one each).  Counted under the client's lock. */
struct client_src {
	int fd;
	unsigned int refs;
};

struct client_region {
	uint64_t addr;
	uint64_t len;
	uint32_t mode;
	bool push;
	struct client_src *src; /* NULL: zero pages */
	uint64_t offset;
	bool ps; /* src is a page server's socket, its GETs for task */
	uint64_t task;
};

struct client_pin {
	uint64_t addr;
	uint64_t len;
	uint64_t cookie;
};

struct pin_client {
	pthread_mutex_t lock;
	int sock; /* -1 after goodbye, or after a reconnect failed to connect */
	/* The daemon ended the connection (or a reconnect did not get one):
	 * requests fail with -ECONNRESET at once, or reconnect. */
	bool lost;
	char *path;
	char *name;
	unsigned int flags;
	unsigned int reconnect_ms;
	pin_client_stale_fn stale_fn;
	void *stale_data;
	struct pin_ctx *ctx;
	bool populates; /* ctx's misses call populate_for_pin() */
	uint64_t seq;
	uint64_t session;

	/* Handed over again on reconnect. */
	int uffd;      /* our duplicate; -1 before pin_client_handover() */
	bool uffd_own; /* opened in this process: pin_uffd_own() */
	uint64_t features;
	/* /proc/self/pagemap, handed over with a WP_ASYNC userfaultfd of this
	 * process: the daemon scans it for the written pages; -1: none. */
	int pagemap;
	/* The session's event log (struct pin_evlog), when ctx caches pins of
	 * this process: its memfd, handed over with the userfaultfd (-1: none),
	 * and our read-only view, kept until pin_client_free(). */
	int evlog_fd;
	const struct pin_evlog *evlog;
	struct client_region *regions;
	size_t nr_regions, cap_regions;
	struct client_pin *pins;
	size_t nr_pins;
};

/* ---- client-wire.c: one request on the connection ---- */

/* A send's or a receive's result that means the connection ended. */
bool client_connection_lost(int r);
/* After a Hello that found the connection ended: the refusal that may wait
 * on the socket, or 0. */
int client_refusal_waiting(const struct pin_client *c);
/* Dispatch the messages already queued, without blocking, adding the notices
 * to *n: 0, or -errno. */
int client_drain(struct pin_client *c, int *n);
/* Send req and wait for its Reply, dispatching notices meanwhile; no
 * reconnect.  The Reply's error, and the Reply in *ret_msg (when asked for)
 * whenever one came, an error's too (a Goodbye's end carries the session's
 * counters either way). */
int client_request_reply(struct pin_client *c, Uffdd__Msg *req, const int *fds, size_t nfds,
			 Uffdd__Msg **ret_msg);
/* client_request_reply(), *ret_msg on success only. */
int client_request_once(struct pin_client *c, Uffdd__Msg *req, const int *fds, size_t nfds,
			Uffdd__Msg **ret_msg);

/* ---- client.c: the connection, its restarts, the end ---- */

/* client_request_once(), and once more after a reconnect when the connection
 * ended and the client reconnects (PIN_CLIENT_RECONNECT).  Under c->lock. */
int client_request(struct pin_client *c, Uffdd__Msg *req, const int *fds, size_t nfds,
		   Uffdd__Msg **ret_msg);
/* Connect again, say Hello and hand over again what the client holds; under
 * c->lock. */
int client_reconnect_locked(struct pin_client *c);
int client_send_handover(struct pin_client *c, bool takeover);
/* retry: allowed to reconnect (not while reconnecting). */
int client_send_region_add(struct pin_client *c, const struct client_region *cr, bool registered,
			   bool retry);
int client_send_pin_report(struct pin_client *c, const struct client_pin *p, bool retry);
/* A WP region of a WP_ASYNC userfaultfd is tracked without faults. */
bool client_wp_async(const struct pin_client *c, unsigned int mode);
Uffdd__SourceKind client_source_kind(const struct client_region *cr);
/* A duplicate of fd, one reference: NULL with errno set on failure. */
struct client_src *client_src_new(int fd);
struct client_src *client_src_ref(struct client_src *src);
void client_src_unref(struct client_src *src);
/* The event log for c->ctx: a sealed memfd of one page, mapped read-only;
 * closed and unmapped by client_evlog_close(). */
int client_evlog_open(struct pin_client *c);
void client_evlog_close(struct pin_client *c);
/* A session's counters, from the daemon's message. */
void client_copy_stats(struct pin_client_stats *d, const Uffdd__Stats *s);

#endif
