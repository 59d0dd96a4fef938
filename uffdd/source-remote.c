// SPDX-License-Identifier: MIT
/*
 * Page-server sources: the pages of a region asked for over a connected
 * stream socket that a client handed over (CRIU's page-server protocol,
 * spoken by libpin's pin_ps_gets: this file only decides what to ask and
 * keeps what came).  A source's offsets are the remote task's addresses; its
 * GETs carry the task's id.  One connection (struct conn) serves every source
 * made over the same socket by one uid: CRIU's page server takes one
 * connection for a whole tree, whose tasks are sessions of their own here.
 * Each source (struct remote, a view of the connection for one task) keeps
 * its GETs, each with its buffer, and its own descriptor of the socket in its
 * worker's epoll, so that each worker wakes when a reply comes; the worker
 * pumps the connection between rounds (remotes_pump()), under the
 * connection's lock, and a reply for another worker's source wakes that
 * worker (its eventfd).  A page is asked once while its GET is in flight or
 * its buffer not used up, and a buffer is freed (or kept for the next GET:
 * remote-conn.c), by its own worker only, once its pages are placed.  The
 * buffers of a connection hold UFFDD_REMOTE_BYTES_MAX at most, charged to one
 * session that uses it (its payer; session.c): a source that finds no room
 * asks the others to drop the answered buffers they hold and waits for them.
 * A source that ends leaves the connection to the others (its GETs in flight
 * still read, their pages dropped); the last one ends it with the server
 * (PS_IOV_CLOSE once what is in flight is read: remote-conn.c) and closes it.
 * A server that hangs up, answers what was not asked or does not answer
 * within REMOTE_TIMEOUT_NS breaks the connection's sources only: one log
 * line, then every read of them fails with that error (fault.c poisons the
 * pages).  A source survives a daemon restart with its connection
 * (remote-conn.c journals the stream, remote-adopt.c takes it back): a region
 * rebuilt from the record claims it again; one whose connection was not taken
 * back gets a lost source (remote_lost()), whose reads fail with -ENOTCONN.
 * It calls remote-conn.c (the connections), log.c and util.c.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "remote-internal.h"

/* GETs a source keeps at most: its list is scanned for each read. */
#define REMOTE_GETS_MAX 256
/* How far ahead of a push run the pages are asked for, so that GETs are in
 * flight back to back while the run before them is placed.  A fault's GET
 * is answered after them (the server answers in order): more would make
 * each fault wait longer. */
#define REMOTE_AHEAD_BYTES (4ull << 20)
/* A server that moves no reply for this long is taken as hung. */
#define REMOTE_TIMEOUT_NS (10ull * 1000000000ull)

uint64_t remote_id(const struct remote *rm)
{
	return rm->id;
}

bool remote_pays(const struct remote *rm)
{
	return atomic_load(&rm->pays);
}

int remote_new(int fd, uint64_t task, uid_t uid, struct worker *w, uint64_t sid,
	       struct remote **ret)
{
	int type = 0;
	socklen_t len = sizeof(type);
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	struct stat st;

	/* A connected stream: what a page server's client holds. */
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM ||
	    getpeername(fd, (struct sockaddr *)&peer, &plen) < 0 || fstat(fd, &st) < 0) {
		close(fd);
		return -ENOTSOCK;
	}
	struct remote *rm = calloc(1, sizeof(*rm));
	if (!rm) {
		close(fd);
		return -ENOMEM;
	}
	atomic_init(&rm->moved, false);
	atomic_init(&rm->refs, 1);
	/* Whole before the connection's other sources may see it. */
	rm->fd = fd;
	rm->task = task;
	rm->sid = sid;
	rm->w = w;
	rm->home = w;
	rm->id = remote_id_next();
	int r = conn_join(fd, &st, uid, sid, rm);
	if (r < 0) {
		close(fd);
		free(rm);
		return r;
	}
	rm->next = w->remotes;
	w->remotes = rm;
	*ret = rm;
	return 0;
}

struct remote *remote_lost(uint64_t id)
{
	struct remote *rm = calloc(1, sizeof(*rm));

	if (!rm)
		return NULL;
	rm->id = id;
	rm->err = -ENOTCONN;
	rm->fd = -1;
	atomic_init(&rm->refs, 1);
	atomic_init(&rm->pays, false);
	atomic_init(&rm->moved, false);
	remote_id_taken(id);
	return rm;
}

void remote_free(struct remote *rm)
{
	if (!rm || atomic_fetch_sub(&rm->refs, 1) > 1)
		return;
	if (rm->w) {
		if (rm->events && epoll_ctl(rm->w->ep, EPOLL_CTL_DEL, rm->fd, NULL) < 0)
			ulog(LOG_ERR,
			     "session %" PRIu64 ": epoll_ctl(DEL) of page server r%" PRIu64 ": %m",
			     rm->sid, rm->id & ~REMOTE_ID_BIT);
		struct remote **p = &rm->w->remotes;
		while (*p != rm)
			p = &(*p)->next;
		*p = rm->next;
	}
	if (rm->fd >= 0)
		close(rm->fd);
	if (!rm->c) {
		free(rm);
		return;
	}
	conn_leave(rm->c, rm);
}

/* What a pump needs: the connection and the worker that pumps. */
struct pumping {
	struct conn *c;
	const struct worker *self;
};

/* A reply whole (pin_ps_done_fn): its pages are ready for the source that
 * asked (tag). */
static void arrived(void *arg, void *tag, uint64_t addr, uint64_t nr, void *buf)
{
	struct pumping *pu = arg;
	struct remote *rm = tag;

	(void)buf;
	for (size_t i = 0; i < rm->n; i++) {
		struct rget *g = &rm->v[i];
		/* Not one before it that is whole and ends there. */
		if (g->ready < g->nr && addr == g->addr + (g->ready << uffdd_page_shift)) {
			g->ready += nr;
			if (rm->orphan && g->ready == g->nr)
				remote_drop(rm, i, pu->self);
			break;
		}
	}
	pu->c->since = uffdd_now_ns();
	uffdd_hold("ps-reply-read");
	if (!rm->orphan) {
		remote_tell(rm, pu->self);
	} else if (!rm->n) {
		remote_unlink(pu->c, rm);
		free(rm->v);
		free(rm);
	}
}

/* Under c->lock, by rm's worker. */
static void pump(struct remote *rm)
{
	struct pumping pu = { rm->c, rm->w };

	if (!rm->c->err && pin_ps_gets_pending(rm->c->gets)) {
		int r = pin_ps_gets_pump(rm->c->gets, arrived, &pu);
		if (r < 0) {
			uint64_t addr, nr;
			const char *why = pin_ps_gets_failure(rm->c->gets, &addr, &nr);
			remote_broken(rm, r, addr, nr, why);
		}
	}
	remote_rewatch(rm);
}

/* Room for a GET of bytes: the buffers of rm's answered GETs go first, those
 * most used first (their pages were placed); never the one holding keep.
 * Else the other sources are asked to drop theirs, and rm is told when
 * they did. */
static bool room(struct remote *rm, uint64_t bytes, uint64_t keep)
{
	struct conn *c = rm->c;

	while (rm->n == REMOTE_GETS_MAX || c->bytes + bytes > UFFDD_REMOTE_BYTES_MAX) {
		size_t best = rm->n;
		for (size_t i = 0; i < rm->n; i++) {
			const struct rget *g = &rm->v[i];
			if (g->ready == g->nr && (keep < g->addr || keep >= rget_end(g)) &&
			    (best == rm->n || g->used > rm->v[best].used))
				best = i;
		}
		if (best < rm->n) {
			remote_drop(rm, best, rm->w);
			continue;
		}
		if (rm->n < REMOTE_GETS_MAX) {
			for (struct remote *v = c->views; v; v = v->cnext) {
				if (v != rm && !v->orphan && v->n) {
					v->shed = true;
					remote_tell(v, rm->w);
				}
			}
		}
		rm->starved = true;
		return false;
	}
	return true;
}

/* The GET that has the page at off, if any. */
static struct rget *find(struct remote *rm, uint64_t off)
{
	for (size_t i = 0; i < rm->n; i++)
		if (off >= rm->v[i].addr && off < rget_end(&rm->v[i]))
			return &rm->v[i];
	return NULL;
}

/* Ask for the pages of [off, end) no GET has, in GETs of REMOTE_GET_PAGES
 * at most, while there is room (keeping the GET that has keep). */
static void ask(struct remote *rm, uint64_t off, uint64_t end, uint64_t keep)
{
	struct conn *c = rm->c;

	while (off < end) {
		const struct rget *have = find(rm, off);
		if (have) {
			off = rget_end(have);
			continue;
		}
		uint64_t stop = end;
		for (size_t i = 0; i < rm->n; i++)
			if (rm->v[i].addr > off && rm->v[i].addr < stop)
				stop = rm->v[i].addr;
		uint64_t nr = (stop - off) >> uffdd_page_shift;
		if (nr > REMOTE_GET_PAGES)
			nr = REMOTE_GET_PAGES;
		uint64_t bytes = nr << uffdd_page_shift;
		if (!room(rm, bytes, keep))
			return;
		if (rm->n % RGETS_STEP == 0) {
			struct rget *v = realloc(rm->v, (rm->n + RGETS_STEP) * sizeof(*v));
			if (!v)
				return;
			rm->v = v;
		}
		uint8_t *buf = conn_buf(c, nr);
		bool idle = !pin_ps_gets_pending(c->gets);
		if (!buf || pin_ps_gets_add_task(c->gets, rm->task, off, nr, buf, rm) < 0) {
			free(buf);
			return;
		}
		/* The wait for an answer starts now. */
		if (idle)
			c->since = uffdd_now_ns();
		rm->v[rm->n++] = (struct rget){ .addr = off, .nr = nr, .buf = buf };
		c->bytes += bytes;
		off += bytes;
	}
}

/* remote_data() under c->lock. */
static int data_locked(struct remote *rm, uint64_t off, size_t *len, uint64_t ahead,
		       const void **ret)
{
	int err = rm->c->err;
	const struct rget *g = find(rm, off);

	/* What came before a source broke is as good as ever. */
	if (g && off >= g->addr + (g->ready << uffdd_page_shift))
		return err ? err : -EINPROGRESS;
	if (g) {
		/* A push run asks for what comes after it while it is placed. */
		uint64_t from = rget_end(g);
		if (ahead > from && !err) {
			ask(rm, from,
			    ahead < from + REMOTE_AHEAD_BYTES ? ahead : from + REMOTE_AHEAD_BYTES,
			    off);
			pump(rm);
			g = find(rm, off);
		}
		uint64_t ready = g->addr + (g->ready << uffdd_page_shift);
		*ret = g->buf + (off - g->addr);
		if (*len > ready - off)
			*len = (size_t)(ready - off);
		return 0;
	}
	if (err)
		return err;
	uint64_t end = off + *len;
	if (ahead > end)
		end = ahead < off + REMOTE_AHEAD_BYTES ? ahead : off + REMOTE_AHEAD_BYTES;
	ask(rm, off, end, UINT64_MAX);
	pump(rm);
	return rm->c->err ? rm->c->err : -EINPROGRESS;
}

int remote_data(struct remote *rm, uint64_t off, size_t *len, uint64_t ahead, const void **ret)
{
	if (!rm->c)
		return rm->err;
	pthread_mutex_lock(&rm->c->lock);
	int r = data_locked(rm, off, len, ahead, ret);
	pthread_mutex_unlock(&rm->c->lock);
	return r;
}

void remote_used(struct remote *rm, uint64_t off, size_t len)
{
	if (!rm->c)
		return;
	pthread_mutex_lock(&rm->c->lock);
	for (size_t i = 0; i < rm->n; i++) {
		struct rget *g = &rm->v[i];
		if (off < g->addr || off >= rget_end(g))
			continue;
		g->used += len >> uffdd_page_shift;
		if (g->used >= g->nr && g->ready == g->nr)
			remote_drop(rm, i, rm->w);
		break;
	}
	pthread_mutex_unlock(&rm->c->lock);
}

bool remotes_pump(struct worker *w)
{
	bool moved = false;

	for (struct remote *rm = w->remotes; rm; rm = rm->next) {
		struct conn *c = rm->c;
		if (!c)
			continue;
		pthread_mutex_lock(&c->lock);
		if (rm->shed)
			remote_shed(rm);
		pump(rm);
		/* After the pump, which may have moved since. */
		uint64_t now = uffdd_now_ns();
		if (!c->err && pin_ps_gets_pending(c->gets) && now - c->since > REMOTE_TIMEOUT_NS) {
			uint64_t addr = 0, nr = 0;
			for (size_t i = 0; i < rm->n; i++) {
				if (rm->v[i].ready < rm->v[i].nr) {
					addr = rm->v[i].addr + (rm->v[i].ready << uffdd_page_shift);
					nr = rm->v[i].nr - rm->v[i].ready;
					break;
				}
			}
			remote_broken(rm, -ETIMEDOUT, addr, nr, "no answer in time");
			remote_rewatch(rm);
		}
		pthread_mutex_unlock(&c->lock);
		moved |= atomic_exchange(&rm->moved, false);
	}
	return moved;
}

int remotes_timeout(const struct worker *w)
{
	uint64_t now = uffdd_now_ns(), wake = UINT64_MAX;

	for (const struct remote *rm = w->remotes; rm; rm = rm->next) {
		/* A reply read outside remotes_pump() (by a fault's or a run's
		 * read, or by another worker): the faults waiting for it are
		 * served at once. */
		if (atomic_load(&rm->moved))
			return 0;
		struct conn *c = rm->c;
		if (!c)
			continue;
		pthread_mutex_lock(&c->lock);
		if (!c->err && pin_ps_gets_pending(c->gets) && c->since + REMOTE_TIMEOUT_NS < wake)
			wake = c->since + REMOTE_TIMEOUT_NS;
		pthread_mutex_unlock(&c->lock);
	}
	if (wake == UINT64_MAX)
		return -1;
	return wake <= now ? 0 : (int)((wake - now + 999999) / 1000000);
}
