// SPDX-License-Identifier: MIT
/*
 * Page-server connections (source-remote.c's sources share them): the table
 * of connections by socket and uid, a source joining and leaving one (the
 * last closes it; one that leaves with GETs in flight stays as an orphan
 * until they are answered), which source's session pays for its buffers,
 * their accounting (remote_drop()) and the spare ones kept for the next
 * GETs (conn_buf()), the worker's epoll watch of a source's
 * descriptor, telling a source's worker that something came for it, a
 * connection breaking, and its end.  The end belongs to whoever uses the
 * stream last: while the daemon holds a connection only the daemon writes to
 * it, so the last source to leave ends it (conn_end()): the answers to every
 * GET still in flight are read (and dropped), then PS_IOV_CLOSE goes out and
 * CRIU's status is read, each wait bounded, and the stream is shut down
 * (CRIU then closes its end, which the client waits for).  That runs on a
 * thread of its own, so that a slow or silent server stalls no worker.
 * With an fd store, a TCP connection is durable: its socket and its record
 * (remote-record.c: its sources, each GET journaled before it goes out,
 * each reply's header before it is read) sit in the store as r<id>.sock and
 * r<id>.state until its end is done, so that a successor takes the stream
 * over where it stood (remote-adopt.c), and the end, the rule above with
 * it, stays the daemon's across a restart.  It calls remote-record.c,
 * store.c, log.c and util.c.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "remote-internal.h"

/* How long the end waits for a server that moves nothing: as long as a live
 * source does (source-remote.c), so that a slow server is not cut short. */
#define CONN_END_TIMEOUT_MS 10000
/* A nap while part of a reply's header waits for the rest. */
#define CONN_END_NAP_MS 1

pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
struct conn *conns;
static _Atomic uint64_t next_conn = 1, next_remote = 1;

/* next above id, whatever other threads take meanwhile. */
static void taken(_Atomic uint64_t *next, uint64_t id)
{
	uint64_t cur = atomic_load(next);

	while (id >= cur && !atomic_compare_exchange_weak(next, &cur, id + 1))
		;
}

void conn_id_taken(uint64_t id)
{
	taken(&next_conn, id);
}

void remote_id_taken(uint64_t id)
{
	taken(&next_remote, id & ~REMOTE_ID_BIT);
}

uint64_t remote_id_next(void)
{
	return REMOTE_ID_BIT | atomic_fetch_add(&next_remote, 1);
}

/* Tell rm's worker that something moved for it (from another worker). */
void remote_tell(struct remote *rm, const struct worker *self)
{
	uint64_t one = 1;

	atomic_store(&rm->moved, true);
	if (rm->w && rm->w != self && write(rm->w->efd, &one, sizeof(one)) != sizeof(one))
		ulog(LOG_ERR, "session %" PRIu64 ": eventfd write for page server: %m", rm->sid);
}

/* Watch the socket once, edge-triggered: replies, a hang-up, room after a
 * send found none, each wakes the worker once, whose rounds pump every
 * source (remotes_pump()): no epoll_ctl() as GETs come and go.  With nothing
 * asked, what comes is not read here (the next GET's answer check finds it)
 * and wakes no more.  Nothing once broken.  rm's worker only. */
void remote_rewatch(struct remote *rm)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET,
				  .data.ptr = &rm->w->wevent };
	bool want = !rm->c->err;

	if (want == !!rm->events)
		return;
	if (epoll_ctl(rm->w->ep, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, rm->fd, want ? &ev : NULL) <
	    0)
		ulog(LOG_ERR, "session %" PRIu64 ": epoll_ctl(%s) of page server r%" PRIu64 ": %m",
		     rm->sid, want ? "ADD" : "DEL", rm->id & ~REMOTE_ID_BIT);
	else
		rm->events = want ? ev.events : 0;
}

/* Once: say why, and stop reading it; every source of it is told. */
void remote_broken(struct remote *rm, int err, uint64_t addr, uint64_t nr, const char *why)
{
	struct conn *c = rm->c;

	if (c->err)
		return;
	c->err = err;
	if (!nr)
		ulog(LOG_ERR,
		     "session %" PRIu64 ": page server (task %" PRIu64 ", %u sources), no GET "
		     "waiting: %s; its pages not in yet will be poisoned",
		     rm->sid, rm->task, c->live, why);
	else
		ulog(LOG_ERR,
		     "session %" PRIu64 ": page server (task %" PRIu64
		     ", %u sources): GET [%#" PRIx64 ", %#" PRIx64 "): %s; its pages are poisoned",
		     rm->sid, rm->task, c->live, addr, addr + (nr << uffdd_page_shift), why);
	for (struct remote *v = c->views; v; v = v->cnext)
		if (!v->orphan)
			remote_tell(v, rm->w);
}

void conn_free(struct conn *c)
{
	while (c->views) {
		struct remote *v = c->views;
		c->views = v->cnext;
		for (size_t i = 0; i < v->n; i++)
			free(v->v[i].buf);
		free(v->v);
		free(v);
	}
	while (c->nspares)
		free(c->spares[--c->nspares]);
	pin_ps_gets_free(c->gets);
	pin_ps_free(c->ps);
	rrec_unmap(c->rec);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Each step of c's stream, journaled (pin_ps_gets_journal()), under
 * c->lock; a test may kill the daemon at each (uffdd_hold()). */
static void conn_note(void *arg, enum pin_ps_note what, const struct pin_ps_noted *n)
{
	struct conn *c = arg;
	const struct remote *rm = n->tag;

	switch (what) {
	case PIN_PS_NOTE_GET:
		rrec_get(c->rec, rm->id, n);
		uffdd_hold("ps-get-journaled");
		break;
	case PIN_PS_NOTE_SENT:
		uffdd_hold("ps-get-sent");
		break;
	case PIN_PS_NOTE_REPLY:
		rrec_reply(c->rec, n);
		uffdd_hold("ps-reply-journaled");
		break;
	case PIN_PS_NOTE_TAKEN:
		uffdd_hold("ps-reply-half-read");
		break;
	}
}

/* c's record, made and stored with its socket (r<id>.sock, r<id>.state)
 * when the store is on: 0, or -errno (then c is not kept across a
 * restart). */
static int conn_record(struct conn *c, int fd)
{
	uint64_t rd, wr;
	int memfd;

	if (!store_enabled())
		return 0;
	int r = rrec_counts(fd, &rd, &wr);
	if (r < 0)
		return r;
	r = rrec_new(c->id, c->uid, rd, wr, &c->rec, &memfd);
	if (r < 0)
		return r;
	/* Both before any source joins: a successor that finds one of them
	 * alone drops it, the stream left to the client. */
	r = store_put(fd, "r%" PRIu64 ".sock", c->id);
	if (!r)
		r = store_put(memfd, "r%" PRIu64 ".state", c->id);
	close(memfd);
	if (r < 0) {
		store_remove("r%" PRIu64 ".sock", c->id);
		rrec_unmap(c->rec);
		c->rec = NULL;
	}
	return r;
}

int conn_new(int fd, const struct stat *st, uid_t uid, uint64_t sid, struct rrec *rec,
	     struct conn **ret)
{
	char name[64];
	int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);

	if (dup < 0)
		return -errno;
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(dup);
		return -ENOMEM;
	}
	snprintf(name, sizeof(name), "session %" PRIu64, sid);
	int r = pin_ps_wrap(dup, name, &c->ps);
	if (r < 0) {
		close(dup);
		free(c);
		return r;
	}
	r = pin_ps_gets_new(c->ps, 0, &c->gets);
	if (r < 0) {
		pin_ps_free(c->ps);
		free(c);
		return r;
	}
	pthread_mutex_init(&c->lock, NULL);
	c->dev = st->st_dev;
	c->ino = st->st_ino;
	c->uid = uid;
	c->rec = rec;
	if (rec) {
		c->id = rrec_id(rec);
		conn_id_taken(c->id);
	} else {
		c->id = atomic_fetch_add(&next_conn, 1);
		r = conn_record(c, dup);
		if (r < 0)
			ulog(LOG_WARNING,
			     "session %" PRIu64 ": page server connection r%" PRIu64
			     " not kept across a restart: %s",
			     sid, c->id, strerror(-r));
	}
	if (c->rec)
		pin_ps_gets_journal(c->gets, conn_note, c);
	if (c->rec && !rec)
		uffdd_hold("ps-conn-stored");
	*ret = c;
	return 0;
}

void conn_add(struct conn *c)
{
	pthread_mutex_lock(&conns_lock);
	c->next = conns;
	conns = c;
	pthread_mutex_unlock(&conns_lock);
}

/* The connection of uid over the socket st is, made if none (under
 * conns_lock); -EBUSY when another uid's reads it. */
static int conn_get(int fd, const struct stat *st, uid_t uid, uint64_t sid, struct conn **ret)
{
	for (struct conn *c = conns; c; c = c->next) {
		if (c->dev != st->st_dev || c->ino != st->st_ino)
			continue;
		if (c->uid != uid)
			return -EBUSY;
		if (c->ending)
			return -ESHUTDOWN;
		*ret = c;
		return 0;
	}
	int r = conn_new(fd, st, uid, sid, NULL, ret);
	if (r < 0)
		return r;
	(*ret)->next = conns;
	conns = *ret;
	return 0;
}

int conn_join(int fd, const struct stat *st, uid_t uid, uint64_t sid, struct remote *rm)
{
	pthread_mutex_lock(&conns_lock);
	int r = conn_get(fd, st, uid, sid, &rm->c);
	if (r < 0) {
		pthread_mutex_unlock(&conns_lock);
		return r;
	}
	struct conn *c = rm->c;
	pthread_mutex_lock(&c->lock);
	atomic_init(&rm->pays, !c->live);
	/* Taken by a region: not one to release after a takeover. */
	rm->claimed = true;
	c->live++;
	if (c->rec && rrec_src_add(c->rec, rm->id, rm->task) < 0)
		ulog(LOG_WARNING,
		     "session %" PRIu64 ": page server connection r%" PRIu64 " holds %d sources: "
		     "this one's pages are not kept across a restart",
		     sid, c->id, RREC_SOURCES);
	rm->cnext = c->views;
	c->views = rm;
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&conns_lock);
	return 0;
}

uint64_t rget_end(const struct rget *g)
{
	return g->addr + (g->nr << uffdd_page_shift);
}

/* Drop GET i of rm (under c->lock); the sources that found no room are
 * told, by self's worker. */
void remote_drop(struct remote *rm, size_t i, const struct worker *self)
{
	struct conn *c = rm->c;

	c->bytes -= rm->v[i].nr << uffdd_page_shift;
	/* Its bytes leave the buffers in use and join the spares: within the
	 * cap still. */
	if (rm->v[i].nr == REMOTE_GET_PAGES && c->nspares < REMOTE_SPARES_MAX)
		c->spares[c->nspares++] = rm->v[i].buf;
	else
		free(rm->v[i].buf);
	rm->v[i] = rm->v[--rm->n];
	for (struct remote *v = c->views; v; v = v->cnext) {
		if (v->starved) {
			v->starved = false;
			remote_tell(v, self);
		}
	}
}

/* A buffer for a GET of nr pages that room() made room for (under c->lock):
 * a spare one for a whole GET, else a new one, once the spares that would
 * take the buffers in use and the spares past UFFDD_REMOTE_BYTES_MAX are
 * freed.  NULL without memory. */
uint8_t *conn_buf(struct conn *c, uint64_t nr)
{
	uint64_t bytes = nr << uffdd_page_shift,
		 whole = (uint64_t)REMOTE_GET_PAGES << uffdd_page_shift;

	if (nr == REMOTE_GET_PAGES && c->nspares)
		return c->spares[--c->nspares];
	while (c->nspares && c->bytes + bytes + c->nspares * whole > UFFDD_REMOTE_BYTES_MAX)
		free(c->spares[--c->nspares]);
	return aligned_alloc(uffdd_page, bytes);
}

/* Drop every answered GET of rm: none of its buffers is being read (rm's
 * worker, between placements).  Asked to while none is answered yet, it
 * drops them as they come. */
void remote_shed(struct remote *rm)
{
	size_t before = rm->n;

	for (size_t i = 0; i < rm->n;) {
		if (rm->v[i].ready == rm->v[i].nr)
			remote_drop(rm, i, rm->w);
		else
			i++;
	}
	if (rm->n < before || !rm->n)
		rm->shed = false;
}

void remote_unlink(struct conn *c, struct remote *rm)
{
	struct remote **p = &c->views;

	while (*p != rm)
		p = &(*p)->cnext;
	*p = rm->cnext;
}

/* Read the answers to the GETs still in flight (their pages dropped: their
 * buffers are freed with the connection); 0, or -errno. */
static int conn_drain(struct conn *c)
{
	struct pollfd p = { .fd = pin_ps_fd(c->ps) };
	uint64_t moved = uffdd_now_ns(), rd = pin_ps_gets_read(c->gets);

	while (pin_ps_gets_pending(c->gets)) {
		int r = pin_ps_gets_pump(c->gets, NULL, NULL);
		if (r < 0)
			return r;
		if (!pin_ps_gets_pending(c->gets))
			break;
		/* A header not whole yet (journaled streams read none before)
		 * leaves the socket readable: that wait naps, bounded too. */
		if (pin_ps_gets_read(c->gets) != rd) {
			rd = pin_ps_gets_read(c->gets);
			moved = uffdd_now_ns();
		} else if (uffdd_now_ns() - moved > CONN_END_TIMEOUT_MS * 1000000ull) {
			return -ETIMEDOUT;
		}
		p.events = POLLIN | (pin_ps_gets_sending(c->gets) ? POLLOUT : 0);
		r = poll(&p, 1, CONN_END_TIMEOUT_MS);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		if (r > 0 && pin_ps_gets_read(c->gets) == rd && (p.revents & POLLIN))
			poll(NULL, 0, CONN_END_NAP_MS);
	}
	return 0;
}

/* End c with the server, then free it (its own thread, or the caller's when
 * none could be made): nothing else holds c now. */
static void *conn_end(void *arg)
{
	struct conn *c = arg;
	int fd = pin_ps_fd(c->ps), r = c->err;

	if (!r) {
		r = conn_drain(c);
		if (r < 0)
			ulog(LOG_ERR,
			     "page server of uid %u: reading the answers in flight before "
			     "PS_IOV_CLOSE: %s; the connection is cut",
			     (unsigned int)c->uid, strerror(-r));
	}
	if (!r) {
		uffdd_hold("ps-end-drained");
		r = pin_ps_close(c->ps, CONN_END_TIMEOUT_MS);
	}
	/* Ended: CRIU reads EOF and closes its end.  Else cut both ways, so
	 * that the client waiting for the end is woken all the same. */
	if (shutdown(fd, r ? SHUT_RDWR : SHUT_WR) < 0 && errno != ENOTCONN)
		ulog(LOG_ERR, "page server of uid %u: shutdown: %m", (unsigned int)c->uid);
	pthread_mutex_lock(&conns_lock);
	struct conn **p = &conns;
	while (*p != c)
		p = &(*p)->next;
	*p = c->next;
	pthread_mutex_unlock(&conns_lock);
	/* Ended or cut: nothing for a successor. */
	if (c->rec) {
		store_remove("r%" PRIu64 ".state", c->id);
		store_remove("r%" PRIu64 ".sock", c->id);
	}
	conn_free(c);
	return NULL;
}

void conn_drop(struct conn *c)
{
	struct conn **p = &conns;

	while (*p != c)
		p = &(*p)->next;
	*p = c->next;
	pthread_mutex_unlock(&c->lock);
	ulog(LOG_WARNING,
	     "page server connection r%" PRIu64 ": no region rebuilt reads it; left to its "
	     "client, which hands it over again",
	     c->id);
	store_remove("r%" PRIu64 ".state", c->id);
	store_remove("r%" PRIu64 ".sock", c->id);
	conn_free(c);
}

void conn_last_left(struct conn *c)
{
	pthread_attr_t attr;
	pthread_t t;
	int r;

	c->ending = true;
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&conns_lock);
	r = pthread_attr_init(&attr);
	if (!r) {
		r = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (!r)
			r = pthread_create(&t, &attr, conn_end, c);
		pthread_attr_destroy(&attr);
	}
	if (r) {
		ulog(LOG_ERR, "page server of uid %u: pthread_create for its end: %s; ended here",
		     (unsigned int)c->uid, strerror(r));
		conn_end(c);
	}
}

void conn_leave(struct conn *c, struct remote *rm)
{
	pthread_mutex_lock(&conns_lock);
	pthread_mutex_lock(&c->lock);
	/* Its end is journaled before its last source leaves the record: a
	 * successor finds either a source or the end begun. */
	if (c->rec && c->live == 1)
		rrec_ending(c->rec);
	if (c->rec && !rm->orphan)
		rrec_src_del(c->rec, rm->id);
	if (--c->live == 0) {
		conn_last_left(c);
		return;
	}
	pthread_mutex_unlock(&conns_lock);
	/* The others go on: one of them pays for the buffers now. */
	if (atomic_load(&rm->pays)) {
		for (struct remote *v = c->views; v; v = v->cnext) {
			if (v != rm && !v->orphan) {
				atomic_store(&v->pays, true);
				break;
			}
		}
		atomic_store(&rm->pays, false);
	}
	remote_shed(rm);
	rm->w = NULL;
	rm->orphan = true;
	rm->starved = rm->shed = false;
	/* Its GETs in flight are still answered on the stream: kept until
	 * they are, their pages dropped. */
	if (!rm->n) {
		remote_unlink(c, rm);
		free(rm->v);
		free(rm);
	}
	pthread_mutex_unlock(&c->lock);
}
