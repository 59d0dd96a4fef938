// SPDX-License-Identifier: MIT
/*
 * Page-server sources: the pages of a region asked for over a connected
 * stream socket that a client handed over (CRIU's page-server protocol,
 * spoken by libpin's pin_ps_gets: this file only decides what to ask and
 * keeps what came).  A source's offsets are the remote task's addresses; a
 * GET carries the task's id.  The socket belongs to one worker, whose epoll
 * wakes the worker when it is ready (watched with the worker's own eventfd
 * watch, so nothing here dangles when a session ends); the worker pumps it
 * between rounds (remotes_pump()).  What was asked is kept as a list of
 * GETs, each with its buffer: a page is asked once while its GET is in
 * flight or its buffer not used up, and a buffer is freed once its pages
 * are placed.  The buffers of a source hold UFFDD_REMOTE_BYTES_MAX at most,
 * charged to the session that uses it (session.c).  A server that hangs up,
 * answers what was not asked or does not answer within REMOTE_TIMEOUT_NS
 * breaks its source only: one log line, then every read of it fails with
 * that error (fault.c poisons the pages).  A source does not survive a
 * daemon restart: CRIU's stream has no framing to find the next reply in
 * after a reply half read, so a region rebuilt from the record gets a lost
 * source (remote_lost()), whose reads fail with -ENOTCONN.  It calls log.c
 * and util.c.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "uffdd.h"

/* GETs a source keeps at most: its list is scanned for each read. */
#define REMOTE_GETS_MAX 256
/* Pages one GET asks for at most: CRIU's page server answers 1 MiB whole. */
#define REMOTE_GET_PAGES 256
/* How far ahead of a push run the pages are asked for, so that GETs are in
 * flight back to back while the run before them is placed.  A fault's GET
 * is answered after them (the server answers in order): more would make
 * each fault wait longer. */
#define REMOTE_AHEAD_BYTES (4ull << 20)
/* A server that moves no reply for this long is taken as hung. */
#define REMOTE_TIMEOUT_NS (10ull * 1000000000ull)

/* One GET: [addr, addr + nr pages), ready pages in buf from addr, used of
 * them placed. */
struct rget {
	uint64_t addr, nr, ready, used;
	uint8_t *buf;
};

struct remote {
	uint64_t id; /* REMOTE_ID_BIT set */
	uint64_t task;
	uint64_t sid; /* the session that handed it over, for log lines */
	struct pin_ps *ps;
	struct pin_ps_gets *gets;
	struct worker *w; /* NULL: lost, never read */
	uint32_t events;  /* what the worker's epoll waits for */
	struct rget *v;
	size_t n;
	uint64_t bytes;
	uint64_t since; /* ns: the last reply, or when the first GET went out */
	int err;	/* broken: its -errno */
	bool moved;	/* a reply came or it broke since the last pump */
	struct remote *next;
};

static uint64_t next_id = 1;

uint64_t remote_id(const struct remote *rm)
{
	return rm->id;
}

/* Watch for what the socket must do now: replies (and a hang-up) always,
 * room while GETs wait to go. */
static void rewatch(struct remote *rm)
{
	uint32_t want = EPOLLIN | (pin_ps_gets_sending(rm->gets) ? EPOLLOUT : 0);
	struct epoll_event ev = { .events = want, .data.ptr = &rm->w->wevent };

	if (want == rm->events)
		return;
	if (epoll_ctl(rm->w->ep, EPOLL_CTL_MOD, pin_ps_fd(rm->ps), &ev) < 0)
		ulog(LOG_ERR, "session %" PRIu64 ": epoll_ctl(MOD) of page server r%" PRIu64 ": %m",
		     rm->sid, rm->id & ~REMOTE_ID_BIT);
	else
		rm->events = want;
}

static void unwatch(struct remote *rm)
{
	if (rm->w && rm->events && epoll_ctl(rm->w->ep, EPOLL_CTL_DEL, pin_ps_fd(rm->ps), NULL) < 0)
		ulog(LOG_ERR, "session %" PRIu64 ": epoll_ctl(DEL) of page server r%" PRIu64 ": %m",
		     rm->sid, rm->id & ~REMOTE_ID_BIT);
	rm->events = 0;
}

/* Once: say why, and stop reading it. */
static void broken(struct remote *rm, int err, const char *call, uint64_t addr, uint64_t nr,
		   const char *why)
{
	if (rm->err)
		return;
	rm->err = err;
	rm->moved = true;
	if (!nr)
		ulog(LOG_ERR,
		     "session %" PRIu64 ": page server (task %" PRIu64 "), no GET waiting: %s; "
		     "its pages not in yet will be poisoned",
		     rm->sid, rm->task, why);
	else
		ulog(LOG_ERR,
		     "session %" PRIu64 ": page server (task %" PRIu64 "): %s [%#" PRIx64
		     ", %#" PRIx64 "): %s; its pages are poisoned",
		     rm->sid, rm->task, call, addr, addr + (nr << uffdd_page_shift), why);
	unwatch(rm);
}

int remote_new(int fd, uint64_t task, struct worker *w, uint64_t sid, struct remote **ret)
{
	int type = 0;
	socklen_t len = sizeof(type);
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	char name[64];

	/* A connected stream: what a page server's client holds. */
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM ||
	    getpeername(fd, (struct sockaddr *)&peer, &plen) < 0) {
		close(fd);
		return -ENOTSOCK;
	}
	struct remote *rm = calloc(1, sizeof(*rm));
	if (!rm) {
		close(fd);
		return -ENOMEM;
	}
	snprintf(name, sizeof(name), "session %" PRIu64, sid);
	int r = pin_ps_wrap(fd, name, &rm->ps);
	if (r < 0) {
		close(fd);
		free(rm);
		return r;
	}
	r = pin_ps_gets_new(rm->ps, task, &rm->gets);
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &w->wevent };
	if (!r && epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		r = -errno;
	if (r < 0) {
		pin_ps_gets_free(rm->gets);
		pin_ps_free(rm->ps);
		free(rm);
		return r;
	}
	rm->events = EPOLLIN;
	rm->id = REMOTE_ID_BIT | next_id++;
	rm->task = task;
	rm->sid = sid;
	rm->w = w;
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
	if ((id & ~REMOTE_ID_BIT) >= next_id)
		next_id = (id & ~REMOTE_ID_BIT) + 1;
	return rm;
}

void remote_free(struct remote *rm)
{
	if (!rm)
		return;
	if (rm->w) {
		unwatch(rm);
		struct remote **p = &rm->w->remotes;
		while (*p != rm)
			p = &(*p)->next;
		*p = rm->next;
	}
	pin_ps_gets_free(rm->gets);
	pin_ps_free(rm->ps);
	for (size_t i = 0; i < rm->n; i++)
		free(rm->v[i].buf);
	free(rm->v);
	free(rm);
}

static uint64_t rget_end(const struct rget *g)
{
	return g->addr + (g->nr << uffdd_page_shift);
}

/* A reply whole (pin_ps_done_fn): its pages are ready. */
static void arrived(void *arg, uint64_t addr, uint64_t nr, void *buf)
{
	struct remote *rm = arg;

	(void)buf;
	for (size_t i = 0; i < rm->n; i++) {
		struct rget *g = &rm->v[i];
		/* Not one before it that is whole and ends there. */
		if (g->ready < g->nr && addr == g->addr + (g->ready << uffdd_page_shift)) {
			g->ready += nr;
			break;
		}
	}
	rm->since = uffdd_now_ns();
	rm->moved = true;
}

static void drop(struct remote *rm, size_t i)
{
	rm->bytes -= rm->v[i].nr << uffdd_page_shift;
	free(rm->v[i].buf);
	rm->v[i] = rm->v[--rm->n];
}

/* Room for a GET of bytes: the buffers of answered GETs go first, those
 * most used first (their pages were placed); never the one holding keep. */
static bool room(struct remote *rm, uint64_t bytes, uint64_t keep)
{
	while (rm->n == REMOTE_GETS_MAX || rm->bytes + bytes > UFFDD_REMOTE_BYTES_MAX) {
		size_t best = rm->n;
		for (size_t i = 0; i < rm->n; i++) {
			const struct rget *g = &rm->v[i];
			if (g->ready == g->nr && (keep < g->addr || keep >= rget_end(g)) &&
			    (best == rm->n || g->used > rm->v[best].used))
				best = i;
		}
		if (best == rm->n)
			return false;
		drop(rm, best);
	}
	return true;
}

static void pump(struct remote *rm)
{
	int r = pin_ps_gets_pump(rm->gets, arrived, rm);

	if (r < 0) {
		uint64_t addr, nr;
		const char *why = pin_ps_gets_failure(rm->gets, &addr, &nr);
		broken(rm, r, "GET", addr, nr, why);
		return;
	}
	rewatch(rm);
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
		if (rm->n % 16 == 0) {
			struct rget *v = realloc(rm->v, (rm->n + 16) * sizeof(*v));
			if (!v)
				return;
			rm->v = v;
		}
		uint8_t *buf = aligned_alloc(uffdd_page, bytes);
		bool idle = !pin_ps_gets_pending(rm->gets);
		if (!buf || pin_ps_gets_add(rm->gets, off, nr, buf) < 0) {
			free(buf);
			return;
		}
		/* The wait for an answer starts now. */
		if (idle)
			rm->since = uffdd_now_ns();
		rm->v[rm->n++] = (struct rget){ .addr = off, .nr = nr, .buf = buf };
		rm->bytes += bytes;
		off += bytes;
	}
}

int remote_data(struct remote *rm, uint64_t off, size_t *len, uint64_t ahead, const void **ret)
{
	const struct rget *g = find(rm, off);

	/* What came before a source broke is as good as ever. */
	if (g && off >= g->addr + (g->ready << uffdd_page_shift))
		return rm->err ? rm->err : -EINPROGRESS;
	if (g) {
		/* A push run asks for what comes after it while it is placed. */
		uint64_t from = rget_end(g);
		if (ahead > from && !rm->err) {
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
	if (rm->err)
		return rm->err;
	uint64_t end = off + *len;
	if (ahead > end)
		end = ahead < off + REMOTE_AHEAD_BYTES ? ahead : off + REMOTE_AHEAD_BYTES;
	ask(rm, off, end, UINT64_MAX);
	pump(rm);
	return rm->err ? rm->err : -EINPROGRESS;
}

void remote_used(struct remote *rm, uint64_t off, size_t len)
{
	for (size_t i = 0; i < rm->n; i++) {
		struct rget *g = &rm->v[i];
		if (off < g->addr || off >= rget_end(g))
			continue;
		g->used += len >> uffdd_page_shift;
		if (g->used >= g->nr && g->ready == g->nr)
			drop(rm, i);
		return;
	}
}

bool remotes_pump(struct worker *w)
{
	bool moved = false;

	for (struct remote *rm = w->remotes; rm; rm = rm->next) {
		/* With nothing asked too: a hang-up, or a lie, is read now. */
		if (!rm->err)
			pump(rm);
		/* After the pump, which may have moved since. */
		uint64_t now = uffdd_now_ns();
		if (!rm->err && pin_ps_gets_pending(rm->gets) &&
		    now - rm->since > REMOTE_TIMEOUT_NS) {
			uint64_t addr = 0, nr = 0;
			for (size_t i = 0; i < rm->n; i++) {
				if (rm->v[i].ready < rm->v[i].nr) {
					addr = rm->v[i].addr + (rm->v[i].ready << uffdd_page_shift);
					nr = rm->v[i].nr - rm->v[i].ready;
					break;
				}
			}
			broken(rm, -ETIMEDOUT, "GET", addr, nr, "no answer in time");
		}
		moved |= rm->moved;
		rm->moved = false;
	}
	return moved;
}

int remotes_timeout(const struct worker *w)
{
	uint64_t now = uffdd_now_ns(), wake = UINT64_MAX;

	for (const struct remote *rm = w->remotes; rm; rm = rm->next) {
		/* A reply read outside remotes_pump() (by a fault's or a run's
		 * read): the faults waiting for it are served at once. */
		if (rm->moved)
			return 0;
		if (!rm->err && pin_ps_gets_pending(rm->gets) &&
		    rm->since + REMOTE_TIMEOUT_NS < wake)
			wake = rm->since + REMOTE_TIMEOUT_NS;
	}
	if (wake == UINT64_MAX)
		return -1;
	return wake <= now ? 0 : (int)((wake - now + 999999) / 1000000);
}
