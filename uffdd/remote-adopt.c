// SPDX-License-Identifier: MIT
/*
 * Page-server connections taken back after a restart, before the sessions
 * that use them: each from its socket (r<id>.sock) and its record
 * (r<id>.state, untrusted: remote-record.c's rrec_plan() says where the
 * stream stands, or refuses), with a view for each source the record holds
 * and one orphan for each source gone whose GETs are still in flight, each
 * GET in flight again with a buffer for its reply.  A region rebuilt claims
 * its source (remote_claim()), its worker watches it once the session is
 * served (remote_attach()), and the sources no region claimed leave once
 * every session is rebuilt (the last one ends the connection with the
 * server, as ever, its end journaled before it leaves the record; but a
 * connection none of whose sources was claimed and
 * whose end had not begun, which a death before its handover's commit
 * leaves, is only dropped, its stream left to its client, which hands it
 * over again).  A connection refused is cut both ways (its client,
 * waiting for the end, is woken) and its sources are lost: their pages are
 * poisoned, never guessed.  It calls remote-conn.c, remote-record.c,
 * store.c, log.c and util.c.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "remote-internal.h"

/* A view of c for source id (task's), made with the connection. */
static struct remote *view_new(struct conn *c, uint64_t id, uint64_t task, bool orphan)
{
	struct remote *rm = calloc(1, sizeof(*rm));

	if (!rm)
		return NULL;
	rm->id = id;
	rm->task = task;
	rm->c = c;
	rm->fd = -1;
	rm->orphan = orphan;
	atomic_init(&rm->pays, false);
	atomic_init(&rm->moved, false);
	atomic_init(&rm->refs, 0);
	rm->cnext = c->views;
	c->views = rm;
	if (!orphan)
		c->live++;
	remote_id_taken(id);
	return rm;
}

static struct remote *view_of(struct conn *c, uint64_t id)
{
	for (struct remote *v = c->views; v; v = v->cnext)
		if (v->id == id)
			return v;
	return NULL;
}

/* c's views and its GETs in flight, as p says: 0, -ENOMEM, or -EBADMSG. */
static int rebuild(struct conn *c, const struct rrec_plan *p, char *why, size_t len)
{
	uint64_t id, task;

	for (size_t i = 0; i < RREC_SOURCES; i++) {
		if (!rrec_src_at(c->rec, i, &id, &task))
			continue;
		if (view_of(c, id)) {
			snprintf(why, len, "source r%" PRIu64 " twice", id & ~REMOTE_ID_BIT);
			return -EBADMSG;
		}
		if (!view_new(c, id, task, false))
			return -ENOMEM;
	}
	int r = pin_ps_gets_resume(c->gets, p->seq, p->rd, p->skip);
	for (size_t i = 0; !r && i < p->n; i++) {
		const struct rrec_planned *g = &p->v[i];
		struct remote *v = view_of(c, g->src);
		if (!v)
			v = view_new(c, g->src, g->task, true);
		if (!v)
			return -ENOMEM;
		if (v->task != g->task) {
			snprintf(why, len,
				 "a GET of source r%" PRIu64 " for task %" PRIu64 ", not %" PRIu64,
				 g->src & ~REMOTE_ID_BIT, g->task, v->task);
			return -EBADMSG;
		}
		uint64_t bytes = g->nr << uffdd_page_shift;
		/* Grown as ask() grows it (source-remote.c), RGETS_STEP at once. */
		if (v->n % RGETS_STEP == 0) {
			struct rget *nv = realloc(v->v, (v->n + RGETS_STEP) * sizeof(*nv));
			if (!nv)
				return -ENOMEM;
			v->v = nv;
		}
		uint8_t *buf = aligned_alloc(uffdd_page, bytes);
		if (!buf)
			return -ENOMEM;
		v->v[v->n++] = (struct rget){ .addr = g->addr, .nr = g->nr, .buf = buf };
		c->bytes += bytes;
		r = pin_ps_gets_add_task(c->gets, g->task, g->addr, g->nr, buf, v);
	}
	if (!r)
		r = pin_ps_gets_gone_out(c->gets, p->out);
	if (r == -EINVAL) {
		snprintf(why, len, "its GETs in flight do not fit the stream");
		return -EBADMSG;
	}
	return r;
}

/* Take connection id back from its socket and record (the caller closes
 * both). */
static int adopt(uint64_t id, int sock, int recfd, char *why, size_t len)
{
	struct rrec *rec = NULL;
	struct conn *c = NULL;
	struct stat st;
	uint64_t rd, wr;
	int type = 0;
	socklen_t tlen = sizeof(type);

	int r = rrec_map(recfd, id, &rec, why, len);
	if (r < 0)
		return r;
	if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 || type != SOCK_STREAM ||
	    fstat(sock, &st) < 0) {
		rrec_unmap(rec);
		return -ENOTSOCK;
	}
	struct rrec_plan *p = malloc(sizeof(*p));
	r = p ? rrec_counts(sock, &rd, &wr) : -ENOMEM;
	if (!r)
		r = rrec_plan(rec, rd, wr, p, why, len);
	if (!r)
		r = conn_new(sock, &st, rrec_uid(rec), 0, rec, &c);
	if (r < 0) {
		free(p);
		rrec_unmap(rec);
		return r;
	}
	r = rebuild(c, p, why, len);
	if (r < 0) {
		free(p);
		conn_free(c);
		return r;
	}
	c->since = uffdd_now_ns();
	c->adopted = true;
	c->end_journaled = p->ending;
	ulog(LOG_INFO,
	     "page server connection r%" PRIu64 " (uid %u): taken over, %u sources, %zu GETs "
	     "in flight, %" PRIu64 " bytes of a reply half read dropped",
	     id, (unsigned int)c->uid, c->live, p->n, p->skip);
	free(p);
	conn_add(c);
	return 0;
}

void remote_conn_adopt(uint64_t id, int sock, int recfd)
{
	char why[160] = "";
	/* Half stored: a death before any source of it was recorded. */
	bool half = sock < 0 || recfd < 0;
	int r = half ? 0 : adopt(id, sock, recfd, why, sizeof(why));

	if (half) {
		ulog(LOG_WARNING,
		     "page server connection r%" PRIu64 ": stored without its %s, before any "
		     "source of it: left to its client",
		     id, sock < 0 ? "socket" : "record");
		store_remove("r%" PRIu64 ".state", id);
		store_remove("r%" PRIu64 ".sock", id);
	} else if (r < 0) {
		ulog(LOG_ERR,
		     "page server connection r%" PRIu64 ": not taken over: %s; its sources' "
		     "pages not in yet will be poisoned",
		     id, r == -EBADMSG ? why : strerror(-r));
		/* Cut: its client waits for the end. */
		if (sock >= 0 && shutdown(sock, SHUT_RDWR) < 0 && errno != ENOTCONN)
			ulog(LOG_ERR, "page server connection r%" PRIu64 ": shutdown: %m", id);
		store_remove("r%" PRIu64 ".state", id);
		store_remove("r%" PRIu64 ".sock", id);
	}
	if (sock >= 0)
		close(sock);
	if (recfd >= 0)
		close(recfd);
}

struct remote *remote_claim(uint64_t id, uid_t uid)
{
	struct remote *found = NULL;

	pthread_mutex_lock(&conns_lock);
	for (struct conn *c = conns; c && !found; c = c->next) {
		if (!c->adopted || c->uid != uid)
			continue;
		pthread_mutex_lock(&c->lock);
		struct remote *v = view_of(c, id);
		/* Each region that had it claims it: they share it again. */
		if (v && !v->orphan && v->claimed) {
			atomic_fetch_add(&v->refs, 1);
			found = v;
		} else if (v && !v->orphan) {
			bool paid = false;
			for (struct remote *o = c->views; o; o = o->cnext)
				paid |= atomic_load(&o->pays);
			atomic_store(&v->pays, !paid);
			atomic_store(&v->refs, 1);
			v->claimed = true;
			found = v;
		}
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&conns_lock);
	return found;
}

struct worker *remote_home(struct remote *rm, struct worker *w)
{
	struct conn *c = rm->c;

	if (!c)
		return NULL;
	pthread_mutex_lock(&c->lock);
	if (!rm->home)
		rm->home = w;
	w = rm->home;
	pthread_mutex_unlock(&c->lock);
	return w;
}

void remote_attach(struct remote *rm, struct worker *w, uint64_t sid)
{
	struct conn *c = rm->c;

	if (!c || rm->w)
		return;
	pthread_mutex_lock(&c->lock);
	rm->w = w;
	rm->sid = sid;
	rm->next = w->remotes;
	w->remotes = rm;
	rm->fd = fcntl(pin_ps_fd(c->ps), F_DUPFD_CLOEXEC, 3);
	if (rm->fd < 0)
		remote_broken(rm, -errno, 0, 0, "no descriptor for its worker");
	else
		remote_rewatch(rm);
	/* Its GETs in flight are pumped at the worker's next round. */
	atomic_store(&rm->moved, true);
	pthread_mutex_unlock(&c->lock);
}

/* An adopted connection, no longer marked, under conns_lock; NULL: none. */
static struct conn *next_adopted(void)
{
	for (struct conn *c = conns; c; c = c->next) {
		if (c->adopted) {
			c->adopted = false;
			return c;
		}
	}
	return NULL;
}

/* c's sources a region rebuilt claimed (under c->lock). */
static unsigned int claimed_of(const struct conn *c)
{
	unsigned int n = 0;

	for (const struct remote *v = c->views; v; v = v->cnext)
		n += !v->orphan && v->claimed;
	return n;
}

void remotes_unclaimed_release(void)
{
	struct conn *c;

	pthread_mutex_lock(&conns_lock);
	while ((c = next_adopted())) {
		pthread_mutex_lock(&c->lock);
		/* Ended, not dropped, once its last source leaves: its end is
		 * journaled before that source leaves the record (as
		 * conn_leave() does), so that a successor of a death in
		 * between finds the end begun and ends it too, never drops a
		 * stream whose client waits for its end. */
		if (!claimed_of(c) && !c->end_journaled && pin_ps_gets_pending(c->gets))
			rrec_ending(c->rec);
		for (struct remote **p = &c->views; *p;) {
			struct remote *v = *p;
			if (v->orphan || v->claimed) {
				p = &v->cnext;
				continue;
			}
			/* No region took it: it leaves, its GETs still read. */
			rrec_src_del(c->rec, v->id);
			c->live--;
			v->orphan = true;
			if (v->n) {
				p = &v->cnext;
				continue;
			}
			*p = v->cnext;
			free(v->v);
			free(v);
		}
		if (!c->live && !c->end_journaled && !pin_ps_gets_pending(c->gets)) {
			/* None claimed, its end not begun, nothing in
			 * flight: a death before its handover's commit.
			 * Dropped now, so that the handover sent again
			 * makes it anew. */
			conn_drop(c);
			continue;
		}
		if (!c->live) {
			conn_last_left(c);
			pthread_mutex_lock(&conns_lock);
			continue;
		}
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&conns_lock);
}
