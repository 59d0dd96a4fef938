// SPDX-License-Identifier: MIT
/*
 * The client side of the uffdd protocol: synchronous requests over one
 * SOCK_SEQPACKET connection; the daemon's restarts, which keep the connection
 * (a Resume names the last request the new daemon found done, and the one
 * outstanding is sent again unless that was it); the end of the connection,
 * after which every call fails at once; and what a reconnect must hand over
 * again (the userfaultfd, the regions, the pins) to a daemon that was stopped
 * and started anew; and the registration cache's misses on memory it serves
 * (populate_for_pin()).  Calls proto.c, util.c, pin_ctx_invalidate() and
 * pin_ctx_set_populate() only.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "libpin-private.h"

#define RECONNECT_MS_DEFAULT 5000
#define RECONNECT_STEP_MS    20

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

static const char *body_name(Uffdd__Msg__BodyCase b)
{
	switch (b) {
	case UFFDD__MSG__BODY_HELLO:
		return "Hello";
	case UFFDD__MSG__BODY_UFFD:
		return "UffdHandover";
	case UFFDD__MSG__BODY_REGION_ADD:
		return "RegionAdd";
	case UFFDD__MSG__BODY_REGION_ADD_BATCH:
		return "RegionAddBatch";
	case UFFDD__MSG__BODY_REGION_REMOVE:
		return "RegionRemove";
	case UFFDD__MSG__BODY_PREFETCH:
		return "Prefetch";
	case UFFDD__MSG__BODY_WAIT:
		return "WaitPopulated";
	case UFFDD__MSG__BODY_DIRTY_GET:
		return "DirtyGet";
	case UFFDD__MSG__BODY_PIN_REPORT:
		return "PinReport";
	case UFFDD__MSG__BODY_PIN_RELEASE:
		return "PinRelease";
	case UFFDD__MSG__BODY_STATS_GET:
		return "StatsGet";
	case UFFDD__MSG__BODY_LIST_GET:
		return "ListGet";
	case UFFDD__MSG__BODY_GOODBYE:
		return "Goodbye";
	case UFFDD__MSG__BODY_WORKING_SET_GET:
		return "WorkingSetGet";
	case UFFDD__MSG__BODY_REPLAY:
		return "Replay";
	default:
		return "?";
	}
}

static bool page_aligned(uint64_t x)
{
	return !(x & ((uint64_t)sysconf(_SC_PAGESIZE) - 1));
}

static void dispatch_stale(struct pin_client *c, const Uffdd__StaleNotice *n)
{
	pin_log(PIN_LOG_DEBUG, "uffdd: stale pin %#llx [%#llx, %#llx) event %u",
		(unsigned long long)n->cookie, (unsigned long long)n->range->addr,
		(unsigned long long)(n->range->addr + n->range->len), n->event);
	if (c->ctx)
		pin_ctx_invalidate(c->ctx, (const void *)(uintptr_t)n->range->addr,
				   (size_t)n->range->len);
	if (c->stale_fn)
		c->stale_fn(c, n->cookie, n->range->addr, n->range->len, n->event, c->stale_data);
}

/*
 * Handle one message that is not the reply we wait for.  Returns 1 for a
 * notice, 0 for something consumed or skipped.
 */
static int dispatch(struct pin_client *c, Uffdd__Msg *m, size_t nfds, int *fds)
{
	for (size_t i = 0; i < nfds; i++)
		close(fds[i]);
	switch (m->body_case) {
	case UFFDD__MSG__BODY_STALE:
		dispatch_stale(c, m->stale);
		return 1;
	case UFFDD__MSG__BODY_RESUME:
		/* Nothing was outstanding: nothing to send again. */
		pin_log(PIN_LOG_INFO,
			"uffdd: the daemon restarted and kept this connection (its last request "
			"done: seq %llu); no request was waiting",
			(unsigned long long)m->resume->last_seq);
		return 0;
	case UFFDD__MSG__BODY_REPLY:
		/* A request sent again after a restart may be answered twice. */
		pin_log(m->seq && m->seq <= c->seq ? PIN_LOG_DEBUG : PIN_LOG_WARN,
			"uffdd: skipped a Reply to seq %llu", (unsigned long long)m->seq);
		return 0;
	default:
		pin_log(PIN_LOG_WARN, "uffdd: skipped an unexpected message (seq %llu)",
			(unsigned long long)m->seq);
		return 0;
	}
}

static bool connection_lost(int r)
{
	return r == -ECONNRESET || r == -EPIPE;
}

/* What pin_proto_recv() rejects and the connection survives. */
static bool malformed(int r)
{
	return r == -EBADMSG || r == -EBADF || r == -EINVAL || r == -EOVERFLOW;
}

/*
 * r from a send or a receive.  At the end of the connection the daemon is
 * gone for good (a restarted one keeps the connection: it waits in the fd
 * store), so every request fails at once with -ECONNRESET from now on.
 */
static int check_lost(struct pin_client *c, int r)
{
	if (!connection_lost(r))
		return r;
	c->lost = true;
	return -ECONNRESET;
}

/*
 * The daemon refuses a connection over its uid's limits with a Reply of seq 0
 * before it closes it (uffdd(8), LIMITS): its error (said), or 0 when m is no
 * refusal.
 */
static int refused(const Uffdd__Msg *m)
{
	if (m->body_case != UFFDD__MSG__BODY_REPLY || m->seq || m->reply->error >= 0)
		return 0;
	pin_log(PIN_LOG_ERR, "uffdd: connection refused: %s (%s)", strerror(-m->reply->error),
		m->reply->text ? m->reply->text : "");
	return m->reply->error;
}

/* After a Hello that found the connection ended: the refusal that may wait
 * on the socket, or 0. */
static int refusal_waiting(const struct pin_client *c)
{
	struct pollfd p = { .fd = c->sock, .events = POLLIN };
	int fds[PIN_PROTO_MAX_FDS];
	size_t nfds;
	Uffdd__Msg *m;

	if (poll(&p, 1, 0) != 1 || pin_proto_recv(c->sock, &m, fds, &nfds) < 0)
		return 0;
	for (size_t i = 0; i < nfds; i++)
		close(fds[i]);
	int r = refused(m);
	pin_proto_free(m);
	return r;
}

/*
 * Dispatch the messages already queued, without blocking, adding the notices
 * to *n: 0, or -errno (-ECONNRESET at the end of the connection, the
 * daemon's error when it refused the connection).
 */
static int drain(struct pin_client *c, int *n)
{
	for (;;) {
		struct pollfd p = { .fd = c->sock, .events = POLLIN };
		int fds[PIN_PROTO_MAX_FDS];
		size_t nfds;
		Uffdd__Msg *m;
		int r = poll(&p, 1, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			r = -errno;
			pin_log(PIN_LOG_ERR, "uffdd: poll: %s", strerror(-r));
			return r;
		}
		if (!r)
			return 0;
		r = pin_proto_recv(c->sock, &m, fds, &nfds);
		if (malformed(r)) {
			pin_log(PIN_LOG_WARN, "uffdd: skipped a malformed message: %s",
				strerror(-r));
			continue;
		}
		if (r < 0) {
			pin_log(connection_lost(r) ? PIN_LOG_WARN : PIN_LOG_ERR,
				"uffdd: reading the connection: %s", strerror(-r));
			return check_lost(c, r);
		}
		/* Before the first request, a Reply of seq 0 is the refusal. */
		r = c->seq ? 0 : refused(m);
		if (r < 0) {
			for (size_t i = 0; i < nfds; i++)
				close(fds[i]);
			pin_proto_free(m);
			return r;
		}
		*n += dispatch(c, m, nfds, fds);
		pin_proto_free(m);
	}
}

static int send_request(struct pin_client *c, const Uffdd__Msg *req, const int *fds, size_t nfds)
{
	int r = pin_proto_send(c->sock, req, fds, nfds);

	if (r < 0)
		pin_log(connection_lost(r) ? PIN_LOG_WARN : PIN_LOG_ERR,
			"uffdd: sending %s (seq %llu): %s", body_name(req->body_case),
			(unsigned long long)req->seq, strerror(-r));
	return check_lost(c, r);
}

/*
 * A restarted daemon took the connection over while req was outstanding.
 * When req is the last request it found done, its committed reply follows;
 * else req is sent again, the same seq and the same descriptors (the caller
 * still holds them), and the daemon, which never does a request twice,
 * answers it.
 */
static int resume(struct pin_client *c, const Uffdd__Msg *req, const int *fds, size_t nfds,
		  uint64_t last)
{
	bool done = last == req->seq;

	pin_log(PIN_LOG_INFO,
		"uffdd: the daemon restarted and kept this connection (its last request done: "
		"seq %llu); %s %s (seq %llu)",
		(unsigned long long)last, done ? "waiting for the reply to" : "sending again",
		body_name(req->body_case), (unsigned long long)req->seq);
	return done ? 0 : send_request(c, req, fds, nfds);
}

/*
 * Send req and wait for its Reply, dispatching notices meanwhile.  A Reply
 * with seq 0 answers a request the daemon could not decode: as ours is the
 * only one outstanding, it is ours.  Returns the Reply's error, with
 * *ret_msg (when asked for) holding the message on success.
 */
static int request_once(struct pin_client *c, Uffdd__Msg *req, const int *fds, size_t nfds,
			Uffdd__Msg **ret_msg)
{
	int n = 0, r;

	if (c->lost)
		return -ECONNRESET;
	if (c->sock < 0)
		return -ENOTCONN;
	/* What came while nothing was outstanding (a Resume then is not about
	 * req, a Reply with seq 0 not to it), and the end of the connection. */
	r = drain(c, &n);
	if (r < 0)
		return r;
	req->has_seq = 1;
	req->seq = ++c->seq;
	r = send_request(c, req, fds, nfds);
	if (r < 0)
		return r;
	for (;;) {
		int in_fds[PIN_PROTO_MAX_FDS];
		size_t in_nfds;
		Uffdd__Msg *m;

		r = pin_proto_recv(c->sock, &m, in_fds, &in_nfds);
		if (malformed(r)) {
			pin_log(PIN_LOG_WARN, "uffdd: skipped a malformed message: %s",
				strerror(-r));
			continue;
		}
		if (r < 0) {
			pin_log(connection_lost(r) ? PIN_LOG_WARN : PIN_LOG_ERR,
				"uffdd: waiting for the reply to %s (seq %llu): %s",
				body_name(req->body_case), (unsigned long long)req->seq,
				strerror(-r));
			return check_lost(c, r);
		}
		if (m->body_case == UFFDD__MSG__BODY_RESUME) {
			r = resume(c, req, fds, nfds, m->resume->last_seq);
			pin_proto_free(m);
			if (r < 0)
				return r;
			continue;
		}
		if (m->body_case != UFFDD__MSG__BODY_REPLY || (m->seq != req->seq && m->seq != 0)) {
			dispatch(c, m, in_nfds, in_fds);
			pin_proto_free(m);
			continue;
		}
		r = m->reply->error;
		if (r < 0)
			pin_log(PIN_LOG_ERR, "uffdd: %s: %s (%s)", body_name(req->body_case),
				strerror(-r), m->reply->text ? m->reply->text : "");
		if (r == 0 && ret_msg)
			*ret_msg = m;
		else
			pin_proto_free(m);
		return r;
	}
}

static int reconnect_locked(struct pin_client *c);

static int request(struct pin_client *c, Uffdd__Msg *req, const int *fds, size_t nfds,
		   Uffdd__Msg **ret_msg)
{
	int r = request_once(c, req, fds, nfds, ret_msg);

	/* -ENOTCONN (after goodbye) is the caller's choice, not a lost link. */
	if (r != -ECONNRESET || !(c->flags & PIN_CLIENT_RECONNECT))
		return r;
	r = reconnect_locked(c);
	if (r < 0)
		return r;
	return request_once(c, req, fds, nfds, ret_msg);
}

int pin_client_request(struct pin_client *c, Uffdd__Msg *req, Uffdd__Msg **ret_msg)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = request(c, req, NULL, 0, ret_msg);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int connect_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	do
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

static int say_hello(struct pin_client *c)
{
	Uffdd__Hello hello = UFFDD__HELLO__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	Uffdd__Msg *rep = NULL;
	int r;

	hello.version = PIN_PROTO_VERSION;
	hello.name = c->name;
	hello.has_inspect = hello.inspect = !!(c->flags & PIN_CLIENT_INSPECT);
	req.body_case = UFFDD__MSG__BODY_HELLO;
	req.hello = &hello;
	r = request_once(c, &req, NULL, 0, &rep);
	if (r == -ECONNRESET) {
		int e = refusal_waiting(c);
		if (e < 0)
			return e;
	}
	if (r < 0)
		return r;
	if (!rep->reply->has_version || rep->reply->version != PIN_PROTO_VERSION) {
		pin_log(PIN_LOG_ERR, "uffdd: Hello: the daemon speaks version %u, we %u",
			rep->reply->version, PIN_PROTO_VERSION);
		pin_proto_free(rep);
		return -EPROTONOSUPPORT;
	}
	c->session = rep->reply->session;
	pin_proto_free(rep);
	return 0;
}

static int send_handover(struct pin_client *c, bool takeover)
{
	Uffdd__UffdHandover h = UFFDD__UFFD_HANDOVER__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	int fds[3] = { c->uffd };
	size_t nfds = 1;

	if (c->pagemap >= 0)
		fds[nfds++] = c->pagemap;
	if (c->evlog_fd >= 0)
		fds[nfds++] = c->evlog_fd;
	h.features = c->features;
	h.has_takeover = takeover;
	h.takeover = takeover;
	h.has_pagemap = h.pagemap = c->pagemap >= 0;
	h.has_evlog = h.evlog = c->evlog_fd >= 0;
	req.body_case = UFFDD__MSG__BODY_UFFD;
	req.uffd = &h;
	return request_once(c, &req, fds, nfds, NULL);
}

/* A WP region of a WP_ASYNC userfaultfd is tracked without faults: the
 * daemon is told so (it checks that the two agree). */
static bool wp_async(const struct pin_client *c, unsigned int mode)
{
	return (mode & PIN_UFFD_REGISTER_WP) && (c->features & PIN_UFFD_FEATURE_WP_ASYNC);
}

/* A duplicate of fd, one reference: NULL with errno set on failure. */
static struct client_src *src_new(int fd)
{
	struct client_src *src = malloc(sizeof(*src));

	if (!src)
		return NULL;
	src->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (src->fd < 0) {
		int err = errno;
		free(src);
		errno = err;
		return NULL;
	}
	src->refs = 1;
	return src;
}

static struct client_src *src_ref(struct client_src *src)
{
	if (src)
		src->refs++;
	return src;
}

static void src_unref(struct client_src *src)
{
	if (!src || --src->refs)
		return;
	close(src->fd);
	free(src);
}

static Uffdd__SourceKind source_kind(const struct client_region *cr)
{
	if (!cr->src)
		return UFFDD__SOURCE_KIND__SOURCE_ZERO;
	return cr->ps ? UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER : UFFDD__SOURCE_KIND__SOURCE_FD;
}

/* retry: allowed to reconnect (not while reconnecting). */
static int send_region_add(struct pin_client *c, const struct client_region *cr, bool registered,
			   bool retry)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__RegionAdd ra = UFFDD__REGION_ADD__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	range.addr = cr->addr;
	range.len = cr->len;
	ra.range = &range;
	ra.mode = cr->mode;
	ra.source = source_kind(cr);
	ra.has_task = cr->ps;
	ra.task = cr->task;
	ra.has_offset = cr->src != NULL;
	ra.offset = cr->offset;
	ra.has_push = 1;
	ra.push = cr->push;
	ra.has_registered = 1;
	ra.registered = registered;
	ra.has_wp_async = ra.wp_async = wp_async(c, cr->mode);
	req.body_case = UFFDD__MSG__BODY_REGION_ADD;
	req.region_add = &ra;
	if (retry)
		return request(c, &req, cr->src ? &cr->src->fd : NULL, cr->src != NULL, NULL);
	return request_once(c, &req, cr->src ? &cr->src->fd : NULL, cr->src != NULL, NULL);
}

static int send_pin_report(struct pin_client *c, const struct client_pin *p, bool retry)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__PinReport pr = UFFDD__PIN_REPORT__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	range.addr = p->addr;
	range.len = p->len;
	pr.range = &range;
	pr.cookie = p->cookie;
	req.body_case = UFFDD__MSG__BODY_PIN_REPORT;
	req.pin_report = &pr;
	if (retry)
		return request(c, &req, NULL, 0, NULL);
	return request_once(c, &req, NULL, 0, NULL);
}

/* Connect, retrying while a restarting daemon's socket refuses or is gone;
 * *waited counts the time spent across calls. */
static int connect_retry(struct pin_client *c, unsigned int *waited)
{
	for (;;) {
		int fd = connect_socket(c->path);

		if (fd >= 0 || (fd != -ECONNREFUSED && fd != -ENOENT && fd != -EAGAIN) ||
		    *waited >= c->reconnect_ms)
			return fd;
		nanosleep(&(struct timespec){ .tv_nsec = RECONNECT_STEP_MS * 1000000L }, NULL);
		*waited += RECONNECT_STEP_MS;
	}
}

static int reconnect_once(struct pin_client *c, unsigned int *waited)
{
	int fd, r;

	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
	/* Until a new connection is there: the next request tries again. */
	c->lost = true;
	fd = connect_retry(c, waited);
	if (fd < 0) {
		pin_log(PIN_LOG_ERR, "uffdd: reconnecting to %s: %s", c->path, strerror(-fd));
		return fd;
	}
	c->sock = fd;
	c->lost = false;
	r = say_hello(c);
	if (r < 0)
		return r;
	if (c->uffd < 0)
		return 0;
	r = send_handover(c, true);
	if (r < 0)
		return r;
	/* Registrations belong to the userfaultfd and outlived the daemon. */
	for (size_t i = 0; i < c->nr_regions; i++) {
		r = send_region_add(c, &c->regions[i], true, false);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < c->nr_pins; i++) {
		r = send_pin_report(c, &c->pins[i], false);
		if (r < 0)
			return r;
	}
	pin_log(PIN_LOG_INFO, "uffdd: reconnected as session %llu: %zu regions, %zu pins",
		(unsigned long long)c->session, c->nr_regions, c->nr_pins);
	return 0;
}

/* A daemon killed with a request in flight resets that connection before it
 * closes its listening socket: a reconnect can land in the dying daemon's
 * backlog and be reset too.  That is the same as a refusal: try again. */
static int reconnect_locked(struct pin_client *c)
{
	unsigned int waited = 0;
	int r;

	while (connection_lost(r = reconnect_once(c, &waited)) && waited < c->reconnect_ms) {
		nanosleep(&(struct timespec){ .tv_nsec = RECONNECT_STEP_MS * 1000000L }, NULL);
		waited += RECONNECT_STEP_MS;
	}
	return r;
}

static const char *socket_path(const struct pin_client_opts *opts)
{
	const char *env;

	if (opts->socket)
		return opts->socket;
	env = secure_getenv("UFFDD_SOCKET");
	if (env && *env)
		return env;
	return PIN_CLIENT_SOCKET_DEFAULT;
}

PIN_EXPORT int pin_client_connect(const struct pin_client_opts *user_opts, struct pin_client **ret)
{
	struct pin_client_opts o = { .sz = sizeof(o) }, *opts = &o;
	struct pin_client *c;
	int r;

	if (!ret)
		return -EINVAL;
	r = pin_opts_copy(&o, sizeof(o), user_opts);
	if (r < 0)
		return r;
	if (o.flags & ~(PIN_CLIENT_RECONNECT | PIN_CLIENT_INSPECT))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	c->sock = -1;
	c->uffd = -1;
	c->pagemap = -1;
	c->evlog_fd = -1;
	c->path = strdup(socket_path(opts));
	c->name = strdup(opts->name ? opts->name : program_invocation_short_name);
	if (!c->path || !c->name) {
		r = -ENOMEM;
		goto fail;
	}
	c->flags = opts->flags;
	c->reconnect_ms = opts->reconnect_ms;
	c->stale_fn = opts->stale_fn;
	c->stale_data = opts->stale_data;
	c->ctx = opts->ctx;
	if (!c->reconnect_ms)
		c->reconnect_ms = RECONNECT_MS_DEFAULT;

	c->sock = connect_socket(c->path);
	if (c->sock < 0) {
		r = c->sock;
		pin_log(PIN_LOG_ERR, "uffdd: connect(%s): %s", c->path, strerror(-r));
		goto fail;
	}
	/* A daemon killed after it accepted the connection and before its
	 * store kept it resets it unanswered: that session never was, and the
	 * next daemon accepts a new one. */
	unsigned int waited = 0;
	while (connection_lost(r = say_hello(c)) && waited < c->reconnect_ms) {
		pin_log(PIN_LOG_INFO, "uffdd: Hello: %s; connecting again", strerror(-r));
		close(c->sock);
		c->lost = false;
		nanosleep(&(struct timespec){ .tv_nsec = RECONNECT_STEP_MS * 1000000L }, NULL);
		waited += RECONNECT_STEP_MS;
		c->sock = connect_retry(c, &waited);
		if (c->sock < 0) {
			r = c->sock;
			pin_log(PIN_LOG_ERR, "uffdd: connect(%s): %s", c->path, strerror(-r));
			goto fail;
		}
	}
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	pin_client_free(c);
	return r;
}

PIN_EXPORT int pin_client_reconnect(struct pin_client *c)
{
	int r;

	if (!c)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	r = reconnect_locked(c);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/*
 * The event log for c->ctx (struct pin_evlog): a memfd of one page, sealed
 * against any change of size (the daemon maps it: a shrink would cost it a
 * SIGBUS), mapped read-only here.
 */
static int evlog_open(struct pin_client *c)
{
	int fd = memfd_create("uffdd-evlog", MFD_CLOEXEC | MFD_ALLOW_SEALING), r;

	if (fd < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "memfd_create(event log): %s", strerror(-r));
		return r;
	}
	if (ftruncate(fd, PIN_EVLOG_SIZE) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "event log memfd (ftruncate %d, seals): %s", PIN_EVLOG_SIZE,
			strerror(-r));
		close(fd);
		return r;
	}
	void *m = mmap(NULL, PIN_EVLOG_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "mmap(event log): %s", strerror(-r));
		close(fd);
		return r;
	}
	c->evlog_fd = fd;
	c->evlog = m;
	return 0;
}

static void evlog_close(struct pin_client *c)
{
	if (c->evlog)
		munmap((void *)c->evlog, PIN_EVLOG_SIZE);
	c->evlog = NULL;
	if (c->evlog_fd >= 0)
		close(c->evlog_fd);
	c->evlog_fd = -1;
}

/* The state a reconnect would hand over, dropped: the session is gone. */
static void forget_all(struct pin_client *c)
{
	for (size_t i = 0; i < c->nr_regions; i++)
		src_unref(c->regions[i].src);
	free(c->regions);
	c->regions = NULL;
	c->nr_regions = c->cap_regions = 0;
	free(c->pins);
	c->pins = NULL;
	c->nr_pins = 0;
	if (c->uffd >= 0)
		close(c->uffd);
	c->uffd = -1;
	if (c->pagemap >= 0)
		close(c->pagemap);
	c->pagemap = -1;
	/* The mapping stays: a session that finishes still logs. */
	if (c->evlog_fd >= 0)
		close(c->evlog_fd);
	c->evlog_fd = -1;
}

static void copy_stats(struct pin_client_stats *d, const Uffdd__Stats *s);

/* Goodbye; with wait, the reply comes when the session ended, with its
 * counters in *ret_stats (when not NULL). */
static int goodbye(struct pin_client *c, bool wait, struct pin_client_stats *ret_stats)
{
	Uffdd__Goodbye bye = UFFDD__GOODBYE__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	Uffdd__Msg *rep = NULL;
	int r;

	if (!c)
		return -EINVAL;
	bye.has_wait = wait;
	bye.wait = wait;
	req.body_case = UFFDD__MSG__BODY_GOODBYE;
	req.goodbye = &bye;
	pthread_mutex_lock(&c->lock);
	r = request_once(c, &req, NULL, 0, ret_stats ? &rep : NULL);
	if (rep) {
		copy_stats(ret_stats, rep->reply->stats);
		pin_proto_free(rep);
	}
	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
	c->lost = false;
	forget_all(c);
	pthread_mutex_unlock(&c->lock);
	return r;
}

PIN_EXPORT int pin_client_goodbye(struct pin_client *c)
{
	return goodbye(c, false, NULL);
}

PIN_EXPORT int pin_client_finish(struct pin_client *c, struct pin_client_stats *ret_stats)
{
	return goodbye(c, true, ret_stats);
}

PIN_EXPORT void pin_client_free(struct pin_client *c)
{
	if (!c)
		return;
	if (c->populates)
		pin_ctx_set_populate(c->ctx, NULL, c);
	if (c->evlog)
		pin_ctx_set_evlog(c->ctx, NULL, c);
	evlog_close(c);
	if (c->sock >= 0)
		close(c->sock);
	forget_all(c);
	pthread_mutex_destroy(&c->lock);
	free(c->path);
	free(c->name);
	free(c);
}

PIN_EXPORT int pin_client_fd(const struct pin_client *c)
{
	if (!c)
		return -EINVAL;
	return c->sock >= 0 ? c->sock : -ENOTCONN;
}

PIN_EXPORT uint64_t pin_client_session(const struct pin_client *c)
{
	return c ? c->session : 0;
}

PIN_EXPORT int pin_client_process(struct pin_client *c)
{
	int n = 0, r;

	if (!c)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	r = c->lost ? -ECONNRESET : c->sock < 0 ? 0 : drain(c, &n);
	/* Once a call, as a request: a daemon that ends every connection it
	 * accepts is not reconnected to forever. */
	if (r == -ECONNRESET && (c->flags & PIN_CLIENT_RECONNECT)) {
		r = reconnect_locked(c);
		if (!r)
			r = drain(c, &n);
	}
	pthread_mutex_unlock(&c->lock);
	return r < 0 ? r : n;
}

static bool overlaps_region(const struct pin_client *c, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < c->nr_regions; i++)
		if (c->regions[i].addr < end && c->regions[i].addr + c->regions[i].len > start)
			return true;
	return false;
}

/*
 * Issue 18: a miss of the client's registration cache on [start, end)
 * (pin_ctx_set_populate()), when our userfaultfd is this process's: one
 * Replay of the range, which the daemon places at once and ahead of its
 * background push, a COPY per run of missing pages, and answers once they
 * are in; the pin then finds every page in place instead of faulting each
 * through the daemon.  Memory no region of ours covers costs no request.
 */
static void populate_for_pin(void *arg, uintptr_t start, uintptr_t end)
{
	struct pin_client *c = arg;
	Uffdd__Range range = UFFDD__RANGE__INIT, *pv = &range;
	Uffdd__Replay rp = UFFDD__REPLAY__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	pthread_mutex_lock(&c->lock);
	bool ours = overlaps_region(c, start, end);
	pthread_mutex_unlock(&c->lock);
	if (!ours)
		return;
	range.addr = start;
	range.len = end - start;
	rp.n_ranges = 1;
	rp.ranges = &pv;
	req.body_case = UFFDD__MSG__BODY_REPLAY;
	req.replay = &rp;
	int r = pin_client_request(c, &req, NULL);
	/* After Goodbye the daemon places everything anyway. */
	if (r < 0 && r != -ENOTCONN)
		pin_log(PIN_LOG_WARN,
			"uffdd: Replay of [%#lx, %#lx) before pinning it: %s; its pages fault in "
			"one by one instead",
			(unsigned long)start, (unsigned long)end, strerror(-r));
}

PIN_EXPORT int pin_client_handover(struct pin_client *c, const struct pin_uffd *u)
{
	int r;

	if (!c || !u)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (c->uffd >= 0) {
		r = -EALREADY;
		goto out;
	}
	c->uffd = fcntl(pin_uffd_fd(u), F_DUPFD_CLOEXEC, 3);
	if (c->uffd < 0) {
		r = -errno;
		goto out;
	}
	c->features = pin_uffd_features(u);
	c->uffd_own = pin_uffd_own(u);
	/* Our own memory only: another process's userfaultfd (a restore
	 * tool's) is tracked through that process's pagemap, not ours. */
	if ((c->features & PIN_UFFD_FEATURE_WP_ASYNC) && c->uffd_own) {
		c->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		if (c->pagemap < 0) {
			r = -errno;
			pin_log(PIN_LOG_ERR, "open /proc/self/pagemap: %s", strerror(-r));
			close(c->uffd);
			c->uffd = -1;
			goto out;
		}
	}
	/* Our cache's pins of our memory learn of its changes from the log. */
	if (c->ctx && c->uffd_own) {
		r = evlog_open(c);
		if (r < 0) {
			close(c->uffd);
			c->uffd = -1;
			if (c->pagemap >= 0)
				close(c->pagemap);
			c->pagemap = -1;
			goto out;
		}
	}
	r = send_handover(c, false);
	if (r == -ECONNRESET && (c->flags & PIN_CLIENT_RECONNECT))
		r = reconnect_locked(c); /* which hands it over */
	if (r < 0) {
		close(c->uffd);
		c->uffd = -1;
		if (c->pagemap >= 0)
			close(c->pagemap);
		c->pagemap = -1;
		evlog_close(c);
	} else if (c->ctx && c->uffd_own) {
		/* Lock order: the client's, then the context's.  The log is
		 * new: the context reads it from its first entry. */
		pin_ctx_set_evlog(c->ctx, c->evlog, c);
		pin_ctx_set_populate(c->ctx, populate_for_pin, c);
		c->populates = true;
	}
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Keep cr (and its reference on its source); the table grows by doubling. */
static int remember_region(struct pin_client *c, const struct client_region *cr)
{
	if (c->nr_regions == c->cap_regions) {
		size_t cap = c->cap_regions ? 2 * c->cap_regions : 16;
		struct client_region *n = reallocarray(c->regions, cap, sizeof(*n));

		if (!n)
			return -ENOMEM;
		c->regions = n;
		c->cap_regions = cap;
	}
	c->regions[c->nr_regions++] = *cr;
	return 0;
}

#define REGION_FLAGS                                                                               \
	(PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER | PIN_CLIENT_REGION_REGISTERED |   \
	 PIN_CLIENT_REGION_PAGE_SERVER)

/* Check a caller's region and make what the client remembers of it, with a
 * reference on *src: the client's duplicate of the region's fd, made on the
 * first use (the caller's reference; its regions all have that fd).
 * *ret_flags: its flags; *ret_registered: the daemon is to leave the
 * registration alone. */
static int region_take(const struct pin_client_region *user_r, struct client_region *ret,
		       struct client_src **src, unsigned int *ret_flags, bool *ret_registered)
{
	struct pin_client_region reg = { .sz = sizeof(reg) }, *r = &reg;
	int err = pin_opts_copy(&reg, sizeof(reg), user_r);

	if (err < 0)
		return err;
	err = pin_proto_check_range((uintptr_t)r->addr, r->len);
	if (err < 0)
		return err;
	if (!pin_region_mode_valid(r->mode) || (r->flags & ~REGION_FLAGS) ||
	    !page_aligned(r->offset) || ((r->mode & PIN_UFFD_REGISTER_MINOR) && r->fd < 0))
		return -EINVAL;
	if ((r->flags & PIN_CLIENT_REGION_REGISTER) && (r->flags & PIN_CLIENT_REGION_REGISTERED))
		return -EINVAL;
	if (r->fd < -1 || (r->fd < 0 && (r->flags & PIN_CLIENT_REGION_PAGE_SERVER)))
		return -EBADF;
	*ret = (struct client_region){
		.addr = (uintptr_t)r->addr,
		.len = r->len,
		.mode = r->mode,
		.push = !(r->flags & PIN_CLIENT_REGION_NO_PUSH),
		.offset = r->fd >= 0 ? r->offset : 0,
		.ps = r->fd >= 0 && (r->flags & PIN_CLIENT_REGION_PAGE_SERVER),
		.task = r->task,
	};
	*ret_flags = r->flags;
	*ret_registered = !(r->flags & PIN_CLIENT_REGION_REGISTER);
	if (r->fd >= 0) {
		if (!*src && !(*src = src_new(r->fd)))
			return -errno;
		ret->src = src_ref(*src);
	}
	return 0;
}

/* The names of mode's faults, for a message. */
static const char *mode_text(uint32_t mode)
{
	if (mode & PIN_UFFD_REGISTER_MINOR)
		return "MISSING and MINOR";
	switch (mode & (PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP)) {
	case PIN_UFFD_REGISTER_MISSING:
		return "MISSING";
	case PIN_UFFD_REGISTER_WP:
		return "WP";
	default:
		return "MISSING and WP";
	}
}

/*
 * Before the daemon is asked to serve cr: register it with the handed-over
 * userfaultfd (a no-op where it is registered so already), or with
 * PIN_CLIENT_REGION_REGISTERED check that it is, or with
 * PIN_CLIENT_REGION_REGISTER leave it to the daemon.  A range nobody
 * registered would fault as zero pages, never reaching the daemon.
 */
static int region_claim(const struct pin_client *c, const struct client_region *cr,
			unsigned int flags)
{
	uintptr_t gap;

	if (flags & PIN_CLIENT_REGION_REGISTER)
		return 0;
	if (!(flags & PIN_CLIENT_REGION_REGISTERED))
		/* Without a userfaultfd handed over the daemon refuses it. */
		return c->uffd < 0 ? 0 : pin_uffd_register_fd(c->uffd, cr->addr, cr->len, cr->mode);
	/* Another process's memory (pin_uffd_from_fd()): its word is taken. */
	if (c->uffd >= 0 && !c->uffd_own)
		return 0;
	int r = pin_uffd_covers(cr->addr, cr->len, cr->mode, &gap);
	if (r)
		return r < 0 ? r : 0;
	pin_log(PIN_LOG_ERR,
		"RegionAdd [%#llx, +%#llx): PIN_CLIENT_REGION_REGISTERED, but %#lx is not "
		"registered with a userfaultfd for %s faults (/proc/self/smaps)",
		(unsigned long long)cr->addr, (unsigned long long)cr->len, (unsigned long)gap,
		mode_text(cr->mode));
	return -EINVAL;
}

PIN_EXPORT int pin_client_region_add(struct pin_client *c, const struct pin_client_region *user_r)
{
	struct client_region cr = { 0 };
	struct client_src *src = NULL;
	unsigned int flags;
	bool registered;
	int err;

	if (!c || !user_r)
		return -EINVAL;
	err = region_take(user_r, &cr, &src, &flags, &registered);
	if (err == 0) {
		pthread_mutex_lock(&c->lock);
		err = region_claim(c, &cr, flags);
		if (err == 0)
			err = send_region_add(c, &cr, registered, true);
		if (err == 0)
			err = remember_region(c, &cr);
		if (err < 0)
			src_unref(cr.src);
		src_unref(src);
		pthread_mutex_unlock(&c->lock);
	}
	return err;
}

/* Regions per RegionAddBatch: some 40 bytes each encoded, so a batch is
 * far inside one datagram (PIN_PROTO_MAX_MSG). */
#define BATCH_MAX 2048

static void region_add_fill(const struct pin_client *c, Uffdd__RegionAdd *ra, Uffdd__Range *range,
			    const struct client_region *cr, bool registered)
{
	range->addr = cr->addr;
	range->len = cr->len;
	ra->range = range;
	ra->mode = cr->mode;
	ra->source = source_kind(cr);
	ra->has_task = cr->ps;
	ra->task = cr->task;
	ra->has_offset = cr->src != NULL;
	ra->offset = cr->offset;
	ra->has_push = 1;
	ra->push = cr->push;
	ra->has_registered = 1;
	ra->registered = registered;
	ra->has_wp_async = ra->wp_async = wp_async(c, cr->mode);
}

/* One RegionAddBatch of v[0, n), the source fd (or -1) attached. */
static int send_batch(struct pin_client *c, const struct client_region *v, const bool *registered,
		      size_t n, int fd)
{
	Uffdd__RegionAdd *ra = calloc(n, sizeof(*ra));
	Uffdd__RegionAdd **ptrs = calloc(n, sizeof(*ptrs));
	Uffdd__Range *ranges = calloc(n, sizeof(*ranges));
	Uffdd__RegionAddBatch b = UFFDD__REGION_ADD_BATCH__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	int r = -ENOMEM;

	if (ra && ptrs && ranges) {
		for (size_t i = 0; i < n; i++) {
			uffdd__region_add__init(&ra[i]);
			uffdd__range__init(&ranges[i]);
			region_add_fill(c, &ra[i], &ranges[i], &v[i], registered[i]);
			ptrs[i] = &ra[i];
		}
		b.n_regions = n;
		b.regions = ptrs;
		req.body_case = UFFDD__MSG__BODY_REGION_ADD_BATCH;
		req.region_add_batch = &b;
		r = request(c, &req, &fd, fd >= 0, NULL);
	}
	free(ra);
	free(ptrs);
	free(ranges);
	return r;
}

/* v[0, n) in one batch, or one by one when the daemon has no batches (it
 * rejects the unknown body with -EBADMSG), then remembered. */
static int add_chunk(struct pin_client *c, struct client_region *v, const bool *registered,
		     size_t n)
{
	int fd = -1, r;

	for (size_t i = 0; i < n && fd < 0; i++)
		fd = v[i].src ? v[i].src->fd : -1;
	r = send_batch(c, v, registered, n, fd);
	for (size_t i = 0; r == -EBADMSG && i < n; i++)
		r = send_region_add(c, &v[i], registered[i], true);
	for (size_t i = 0; r == 0 && i < n; i++) {
		r = remember_region(c, &v[i]);
		if (r == 0)
			v[i].src = NULL; /* the client's now */
	}
	return r;
}

int pin_client_region_add_many(struct pin_client *c, const struct pin_client_region *v, size_t n)
{
	struct client_region *cr = calloc(n ? n : 1, sizeof(*cr));
	bool *registered = calloc(n ? n : 1, sizeof(*registered));
	unsigned int *flags = calloc(n ? n : 1, sizeof(*flags));
	struct client_src *src = NULL;
	size_t taken = 0;
	unsigned int ps = 0;
	int err = !c || !v || !cr || !registered || !flags ? -ENOMEM : 0, fd = -1;

	if (!c || !v)
		err = -EINVAL;
	/* One descriptor travels with a batch: every source is that file. */
	for (size_t i = 0; !err && i < n; i++) {
		if (v[i].fd >= 0 && fd >= 0 && v[i].fd != fd)
			err = -EINVAL;
		/* ... and one kind: a file, or a page server for one task. */
		if (v[i].fd >= 0 && fd >= 0 && ((v[i].flags ^ ps) & PIN_CLIENT_REGION_PAGE_SERVER))
			err = -EINVAL;
		if (v[i].fd >= 0 && fd < 0)
			ps = v[i].flags & PIN_CLIENT_REGION_PAGE_SERVER;
		fd = v[i].fd >= 0 ? v[i].fd : fd;
	}
	for (; !err && taken < n; taken++) {
		err = region_take(&v[taken], &cr[taken], &src, &flags[taken], &registered[taken]);
		if (err)
			break;
	}
	if (c)
		pthread_mutex_lock(&c->lock);
	for (size_t i = 0; !err && i < n; i++)
		err = region_claim(c, &cr[i], flags[i]);
	for (size_t i = 0; !err && i < n; i += BATCH_MAX)
		err = add_chunk(c, &cr[i], &registered[i], n - i < BATCH_MAX ? n - i : BATCH_MAX);
	/* What was not remembered (on failure) is not kept. */
	for (size_t i = 0; i < taken; i++)
		src_unref(cr[i].src);
	src_unref(src);
	if (c)
		pthread_mutex_unlock(&c->lock);
	free(cr);
	free(registered);
	free(flags);
	return err;
}

/* Cut [a, e) out of the remembered regions, splitting one that spans it. */
static int forget_region_range(struct pin_client *c, uint64_t a, uint64_t e)
{
	for (size_t i = 0; i < c->nr_regions;) {
		struct client_region *cr = &c->regions[i];
		uint64_t ce = cr->addr + cr->len;

		if (ce <= a || cr->addr >= e) {
			i++;
			continue;
		}
		if (cr->addr < a && ce > e) {
			struct client_region tail = *cr;

			tail.offset += e - cr->addr;
			tail.addr = e;
			tail.len = ce - e;
			cr->len = a - cr->addr;
			if (remember_region(c, &tail) < 0)
				return -ENOMEM;
			src_ref(tail.src);
			return 0;
		}
		if (cr->addr < a) {
			cr->len = a - cr->addr;
		} else if (ce > e) {
			cr->offset += e - cr->addr;
			cr->len = ce - e;
			cr->addr = e;
		} else {
			src_unref(cr->src);
			*cr = c->regions[--c->nr_regions];
			continue;
		}
		i++;
	}
	return 0;
}

static int simple_range_request(struct pin_client *c, Uffdd__Msg *req, Uffdd__Range *range,
				void *addr, size_t len)
{
	int r;

	if (!c)
		return -EINVAL;
	r = pin_proto_check_range((uintptr_t)addr, len);
	if (r < 0)
		return r;
	range->addr = (uintptr_t)addr;
	range->len = len;
	pthread_mutex_lock(&c->lock);
	r = request(c, req, NULL, 0, NULL);
	if (r == 0 && req->body_case == UFFDD__MSG__BODY_REGION_REMOVE)
		r = forget_region_range(c, range->addr, range->addr + range->len);
	pthread_mutex_unlock(&c->lock);
	return r;
}

PIN_EXPORT int pin_client_region_remove(struct pin_client *c, void *addr, size_t len)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__RegionRemove rr = UFFDD__REGION_REMOVE__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	rr.range = &range;
	req.body_case = UFFDD__MSG__BODY_REGION_REMOVE;
	req.region_remove = &rr;
	return simple_range_request(c, &req, &range, addr, len);
}

PIN_EXPORT int pin_client_prefetch(struct pin_client *c, void *addr, size_t len)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__Prefetch pf = UFFDD__PREFETCH__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	pf.range = &range;
	req.body_case = UFFDD__MSG__BODY_PREFETCH;
	req.prefetch = &pf;
	return simple_range_request(c, &req, &range, addr, len);
}

PIN_EXPORT int pin_client_wait_populated(struct pin_client *c, void *addr, size_t len,
					 unsigned int timeout_ms)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__WaitPopulated w = UFFDD__WAIT_POPULATED__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	w.range = &range;
	w.has_timeout_ms = timeout_ms != 0;
	w.timeout_ms = timeout_ms;
	req.body_case = UFFDD__MSG__BODY_WAIT;
	req.wait = &w;
	return simple_range_request(c, &req, &range, addr, len);
}

PIN_EXPORT int pin_client_dirty_get(struct pin_client *c, void *addr, size_t len,
				    unsigned int flags, uint8_t *bitmap, size_t bitmap_len)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__DirtyGet dg = UFFDD__DIRTY_GET__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	Uffdd__Msg *rep = NULL;
	const ProtobufCBinaryData *bits;
	size_t pages, need;
	int r, dirty = 0;

	if (!c || !bitmap || (flags & ~PIN_CLIENT_DIRTY_RESET))
		return -EINVAL;
	r = pin_proto_check_range((uintptr_t)addr, len);
	if (r < 0)
		return r;
	pages = len / (size_t)sysconf(_SC_PAGESIZE);
	need = (pages + 7) / 8;
	if (bitmap_len < need || pages > INT32_MAX)
		return -EINVAL;
	range.addr = (uintptr_t)addr;
	range.len = len;
	dg.range = &range;
	dg.has_reset = 1;
	dg.reset = !!(flags & PIN_CLIENT_DIRTY_RESET);
	req.body_case = UFFDD__MSG__BODY_DIRTY_GET;
	req.dirty_get = &dg;
	pthread_mutex_lock(&c->lock);
	r = request(c, &req, NULL, 0, &rep);
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		return r;
	bits = &rep->reply->bitmap;
	if (bits->len > need) {
		pin_log(PIN_LOG_ERR,
			"uffdd: DirtyGet [%#llx, %#llx): %zu bitmap bytes for %zu pages",
			(unsigned long long)range.addr, (unsigned long long)(range.addr + len),
			bits->len, pages);
		pin_proto_free(rep);
		return -EPROTO;
	}
	memset(bitmap, 0, need);
	if (bits->len)
		memcpy(bitmap, bits->data, bits->len);
	/* Bits past the last page mean nothing. */
	if (pages % 8)
		bitmap[need - 1] &= (uint8_t)((1u << (pages % 8)) - 1);
	for (size_t i = 0; i < need; i++)
		dirty += __builtin_popcount(bitmap[i]);
	pin_proto_free(rep);
	return dirty;
}

PIN_EXPORT int pin_client_pin_report(struct pin_client *c, void *addr, size_t len, uint64_t cookie)
{
	uint64_t mask = (uint64_t)sysconf(_SC_PAGESIZE) - 1;
	uint64_t a = (uintptr_t)addr, e = a + len;
	struct client_pin p;
	struct client_pin *n;
	int r;

	if (!c || !len || e < a || e + mask < e)
		return -EINVAL;
	/* Pins hold whole pages; so does the daemon's bookkeeping. */
	p = (struct client_pin){ .addr = a & ~mask,
				 .len = ((e + mask) & ~mask) - (a & ~mask),
				 .cookie = cookie };
	r = pin_proto_check_range(p.addr, p.len);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	n = reallocarray(c->pins, c->nr_pins + 1, sizeof(*n));
	if (!n) {
		r = -ENOMEM;
		goto out;
	}
	c->pins = n;
	r = send_pin_report(c, &p, true);
	if (r == 0)
		c->pins[c->nr_pins++] = p;
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

PIN_EXPORT int pin_client_pin_release(struct pin_client *c, uint64_t cookie)
{
	Uffdd__PinRelease pr = UFFDD__PIN_RELEASE__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	int r;

	if (!c)
		return -EINVAL;
	pr.cookie = cookie;
	req.body_case = UFFDD__MSG__BODY_PIN_RELEASE;
	req.pin_release = &pr;
	pthread_mutex_lock(&c->lock);
	r = request(c, &req, NULL, 0, NULL);
	for (size_t i = 0; r == 0 && i < c->nr_pins; i++) {
		if (c->pins[i].cookie == cookie) {
			c->pins[i] = c->pins[--c->nr_pins];
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

static void copy_stats(struct pin_client_stats *d, const Uffdd__Stats *s)
{
	size_t n;

	memset(d, 0, sizeof(*d));
	if (!s)
		return;
	d->faults = s->faults;
	d->wp_faults = s->wp_faults;
	d->pages_copied = s->pages_copied;
	d->pages_zeroed = s->pages_zeroed;
	d->bytes_copied = s->bytes_copied;
	d->pages_pushed = s->pages_pushed;
	d->eagain = s->eagain;
	d->eexist = s->eexist;
	d->pages_total = s->pages_total;
	d->pages_populated = s->pages_populated;
	n = s->n_latency_us_log2;
	/* A daemon with more buckets than we have: fold the rest into the last. */
	for (size_t i = 0; i < n; i++)
		d->latency_us_log2[i < PIN_CLIENT_LATENCY_BUCKETS
					   ? i
					   : PIN_CLIENT_LATENCY_BUCKETS - 1] +=
			s->latency_us_log2[i];
}

PIN_EXPORT int pin_client_stats(struct pin_client *c, uint64_t session,
				struct pin_client_stats *ret)
{
	Uffdd__StatsGet sg = UFFDD__STATS_GET__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	Uffdd__Msg *rep = NULL;
	int r;

	if (!c || !ret)
		return -EINVAL;
	if (session == PIN_CLIENT_SESSION_ALL) {
		sg.has_all = 1;
		sg.all = 1;
	} else {
		sg.has_session = session != 0;
		sg.session = session;
	}
	req.body_case = UFFDD__MSG__BODY_STATS_GET;
	req.stats_get = &sg;
	pthread_mutex_lock(&c->lock);
	r = request(c, &req, NULL, 0, &rep);
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		return r;
	copy_stats(ret, rep->reply->stats);
	pin_proto_free(rep);
	return 0;
}

/* Copies entries [0, n) of a ListGet reply to v[at, at + n). */
typedef void (*list_copy_fn)(void *v, size_t at, const Uffdd__Reply *rep, size_t n);

/*
 * ListGet, page after page until the daemon says there is no more, into a
 * zeroed array of elem-sized entries that copy fills.  Each page must begin
 * after the one before (a daemon that goes back, or sends an empty page that
 * is not the last, gets -EPROTO): the walk ends.  A daemon without pages
 * answers everything in one reply without next_cursor.
 */
static int list_fetch(struct pin_client *c, Uffdd__ListGet__What what, uint64_t session,
		      size_t elem, list_copy_fn copy, void **ret_arr, size_t *ret_nr)
{
	Uffdd__ListGet lg = UFFDD__LIST_GET__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	uint8_t *arr = NULL;
	size_t total = 0;
	int r = 0;

	/* PIN_CLIENT_SESSION_ALL, as for pin_client_stats(): every session. */
	if (session == PIN_CLIENT_SESSION_ALL)
		session = 0;
	lg.what = what;
	lg.has_session = session != 0;
	lg.session = session;
	lg.has_cursor = lg.has_cursor_key = true;
	req.body_case = UFFDD__MSG__BODY_LIST_GET;
	req.list_get = &lg;
	for (;;) {
		Uffdd__Msg *rep = NULL;

		pthread_mutex_lock(&c->lock);
		r = request(c, &req, NULL, 0, &rep);
		pthread_mutex_unlock(&c->lock);
		if (r < 0)
			break;
		const Uffdd__Reply *p = rep->reply;
		size_t n = what == UFFDD__LIST_GET__WHAT__CLIENTS   ? p->n_clients
			   : what == UFFDD__LIST_GET__WHAT__REGIONS ? p->n_regions
								    : p->n_pins;
		bool more = p->has_next_cursor && p->next_cursor;
		uint64_t next_key = p->has_next_key ? p->next_key : 0;
		if (more && (!n || p->next_cursor < lg.cursor ||
			     (p->next_cursor == lg.cursor && next_key <= lg.cursor_key))) {
			pin_log(PIN_LOG_ERR, "uffdd: ListGet: a page that does not go on");
			pin_proto_free(rep);
			r = -EPROTO;
			break;
		}
		uint8_t *v = n > SIZE_MAX / elem - total - 1 ? NULL
							     : realloc(arr, (total + n + 1) * elem);
		if (!v) {
			pin_proto_free(rep);
			r = -ENOMEM;
			break;
		}
		arr = v;
		memset(arr + total * elem, 0, (n + 1) * elem);
		copy(arr, total, p, n);
		total += n;
		lg.cursor = p->next_cursor;
		lg.cursor_key = next_key;
		pin_proto_free(rep);
		if (!more)
			break;
	}
	if (r < 0) {
		free(arr);
		return r;
	}
	*ret_arr = arr;
	*ret_nr = total;
	return 0;
}

static void copy_clients(void *arr, size_t at, const Uffdd__Reply *rep, size_t n)
{
	struct pin_client_info *v = (struct pin_client_info *)arr + at;

	for (size_t i = 0; i < n; i++) {
		const Uffdd__ClientInfo *ci = rep->clients[i];

		v[i].session = ci->session;
		v[i].pid = ci->pid;
		v[i].uid = ci->uid;
		snprintf(v[i].name, sizeof(v[i].name), "%s", ci->name ? ci->name : "");
		v[i].regions = ci->regions;
		v[i].pinned_bytes = ci->pinned_bytes;
		copy_stats(&v[i].stats, ci->stats);
	}
}

static void copy_regions(void *arr, size_t at, const Uffdd__Reply *rep, size_t n)
{
	struct pin_client_region_info *v = (struct pin_client_region_info *)arr + at;

	for (size_t i = 0; i < n; i++) {
		const Uffdd__RegionInfo *ri = rep->regions[i];

		v[i].session = ri->session;
		v[i].addr = ri->range->addr;
		v[i].len = ri->range->len;
		v[i].mode = ri->mode;
		v[i].source = ri->source;
		v[i].pages_populated = ri->pages_populated;
		v[i].pages_dirty = ri->pages_dirty;
	}
}

static void copy_pins(void *arr, size_t at, const Uffdd__Reply *rep, size_t n)
{
	struct pin_client_pin_info *v = (struct pin_client_pin_info *)arr + at;

	for (size_t i = 0; i < n; i++) {
		const Uffdd__PinInfo *pi = rep->pins[i];

		v[i].session = pi->session;
		v[i].addr = pi->range->addr;
		v[i].len = pi->range->len;
		v[i].cookie = pi->cookie;
	}
}

PIN_EXPORT int pin_client_list_clients(struct pin_client *c, struct pin_client_info **ret,
				       size_t *ret_nr)
{
	if (!c || !ret || !ret_nr)
		return -EINVAL;
	return list_fetch(c, UFFDD__LIST_GET__WHAT__CLIENTS, 0, sizeof(**ret), copy_clients,
			  (void **)ret, ret_nr);
}

PIN_EXPORT int pin_client_list_regions(struct pin_client *c, uint64_t session,
				       struct pin_client_region_info **ret, size_t *ret_nr)
{
	if (!c || !ret || !ret_nr)
		return -EINVAL;
	return list_fetch(c, UFFDD__LIST_GET__WHAT__REGIONS, session, sizeof(**ret), copy_regions,
			  (void **)ret, ret_nr);
}

PIN_EXPORT int pin_client_list_pins(struct pin_client *c, uint64_t session,
				    struct pin_client_pin_info **ret, size_t *ret_nr)
{
	if (!c || !ret || !ret_nr)
		return -EINVAL;
	return list_fetch(c, UFFDD__LIST_GET__WHAT__PINS, session, sizeof(**ret), copy_pins,
			  (void **)ret, ret_nr);
}
