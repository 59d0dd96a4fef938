// SPDX-License-Identifier: MIT
/*
 * Page-server connections (source-remote.c's sources share them): the table
 * of connections by socket and uid, a source joining and leaving one (the
 * last closes it; one that leaves with GETs in flight stays as an orphan
 * until they are answered), which source's session pays for its buffers,
 * their accounting (remote_drop()), the worker's epoll watch of a source's
 * descriptor, telling a source's worker that something came for it, and a
 * connection breaking.  It calls log.c and util.c.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "remote-internal.h"

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn *conns;

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
 * asked, what comes is not read (the stream is the client's then:
 * uffdd-lazy-pages closes the connection there once every page is in), and
 * wakes no more.  Nothing once broken.  rm's worker only. */
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

static void conn_free(struct conn *c)
{
	while (c->views) {
		struct remote *v = c->views;
		c->views = v->cnext;
		for (size_t i = 0; i < v->n; i++)
			free(v->v[i].buf);
		free(v->v);
		free(v);
	}
	pin_ps_gets_free(c->gets);
	pin_ps_free(c->ps);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* A new connection over a descriptor of its own (the caller keeps fd). */
static int conn_new(int fd, const struct stat *st, uid_t uid, uint64_t sid, struct conn **ret)
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
	*ret = c;
	return 0;
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
		*ret = c;
		return 0;
	}
	int r = conn_new(fd, st, uid, sid, ret);
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
	c->live++;
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
	free(rm->v[i].buf);
	rm->v[i] = rm->v[--rm->n];
	for (struct remote *v = c->views; v; v = v->cnext) {
		if (v->starved) {
			v->starved = false;
			remote_tell(v, self);
		}
	}
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

void conn_leave(struct conn *c, struct remote *rm)
{
	pthread_mutex_lock(&conns_lock);
	pthread_mutex_lock(&c->lock);
	if (--c->live == 0) {
		struct conn **p = &conns;
		while (*p != c)
			p = &(*p)->next;
		*p = c->next;
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_unlock(&conns_lock);
		/* The last source closes it: what is in flight is dropped. */
		conn_free(c);
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
