// SPDX-License-Identifier: MIT
/*
 * The uffdd client's connection: connect and say Hello, a request that
 * reconnects when the connection ended (client-wire.c sends it), and what a
 * reconnect must hand over again (the userfaultfd, the regions, the pins) to
 * a daemon that was stopped and started anew; Goodbye, the end of the
 * client, and the notices read between requests.  Calls client-wire.c,
 * proto.c, util.c and pin_ctx_set_populate() and pin_ctx_set_evlog() only.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "client-internal.h"

#define RECONNECT_MS_DEFAULT 5000
#define RECONNECT_STEP_MS    20

int client_request(struct pin_client *c, Uffdd__Msg *req, const int *fds, size_t nfds,
		   Uffdd__Msg **ret_msg)
{
	int r = client_request_once(c, req, fds, nfds, ret_msg);

	/* -ENOTCONN (after goodbye) is the caller's choice, not a lost link. */
	if (r != -ECONNRESET || !(c->flags & PIN_CLIENT_RECONNECT))
		return r;
	r = client_reconnect_locked(c);
	if (r < 0)
		return r;
	return client_request_once(c, req, fds, nfds, ret_msg);
}

int pin_client_request(struct pin_client *c, Uffdd__Msg *req, Uffdd__Msg **ret_msg)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = client_request(c, req, NULL, 0, ret_msg);
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
	r = client_request_once(c, &req, NULL, 0, &rep);
	if (r == -ECONNRESET) {
		int e = client_refusal_waiting(c);
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

int client_send_handover(struct pin_client *c, bool takeover)
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
	return client_request_once(c, &req, fds, nfds, NULL);
}

/* A WP region of a WP_ASYNC userfaultfd is tracked without faults: the
 * daemon is told so (it checks that the two agree). */
bool client_wp_async(const struct pin_client *c, unsigned int mode)
{
	return (mode & PIN_UFFD_REGISTER_WP) && (c->features & PIN_UFFD_FEATURE_WP_ASYNC);
}

/* A duplicate of fd, one reference: NULL with errno set on failure. */
struct client_src *client_src_new(int fd)
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

struct client_src *client_src_ref(struct client_src *src)
{
	if (src)
		src->refs++;
	return src;
}

void client_src_unref(struct client_src *src)
{
	if (!src || --src->refs)
		return;
	close(src->fd);
	free(src);
}

Uffdd__SourceKind client_source_kind(const struct client_region *cr)
{
	if (!cr->src)
		return UFFDD__SOURCE_KIND__SOURCE_ZERO;
	return cr->ps ? UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER : UFFDD__SOURCE_KIND__SOURCE_FD;
}

/* retry: allowed to reconnect (not while reconnecting). */
int client_send_region_add(struct pin_client *c, const struct client_region *cr, bool registered,
			   bool retry)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__RegionAdd ra = UFFDD__REGION_ADD__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	range.addr = cr->addr;
	range.len = cr->len;
	ra.range = &range;
	ra.mode = cr->mode;
	ra.source = client_source_kind(cr);
	ra.has_task = cr->ps;
	ra.task = cr->task;
	ra.has_offset = cr->src != NULL;
	ra.offset = cr->offset;
	ra.has_push = 1;
	ra.push = cr->push;
	ra.has_registered = 1;
	ra.registered = registered;
	ra.has_wp_async = ra.wp_async = client_wp_async(c, cr->mode);
	req.body_case = UFFDD__MSG__BODY_REGION_ADD;
	req.region_add = &ra;
	if (retry)
		return client_request(c, &req, cr->src ? &cr->src->fd : NULL, cr->src != NULL,
				      NULL);
	return client_request_once(c, &req, cr->src ? &cr->src->fd : NULL, cr->src != NULL, NULL);
}

int client_send_pin_report(struct pin_client *c, const struct client_pin *p, bool retry)
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
		return client_request(c, &req, NULL, 0, NULL);
	return client_request_once(c, &req, NULL, 0, NULL);
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
	r = client_send_handover(c, true);
	if (r < 0)
		return r;
	/* Registrations belong to the userfaultfd and outlived the daemon. */
	for (size_t i = 0; i < c->nr_regions; i++) {
		r = client_send_region_add(c, &c->regions[i], true, false);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < c->nr_pins; i++) {
		r = client_send_pin_report(c, &c->pins[i], false);
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
int client_reconnect_locked(struct pin_client *c)
{
	unsigned int waited = 0;
	int r;

	while (client_connection_lost(r = reconnect_once(c, &waited)) && waited < c->reconnect_ms) {
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
	while (client_connection_lost(r = say_hello(c)) && waited < c->reconnect_ms) {
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
	r = client_reconnect_locked(c);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/*
 * The event log for c->ctx (struct pin_evlog): a memfd of one page, sealed
 * against any change of size (the daemon maps it: a shrink would cost it a
 * SIGBUS), mapped read-only here.
 */
int client_evlog_open(struct pin_client *c)
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

void client_evlog_close(struct pin_client *c)
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
		client_src_unref(c->regions[i].src);
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

/* Goodbye; with wait, the reply comes when the session ended, with its
 * counters in *ret_stats (when not NULL), however it ended: a process gone
 * before its pages were all in (-ESRCH) still had pages placed. */
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
	r = client_request_reply(c, &req, NULL, 0, ret_stats ? &rep : NULL);
	/* An error with counters is the session's end (-ESRCH and the like);
	 * one without them (a refused request) leaves *ret_stats alone. */
	if (rep && (r == 0 || rep->reply->stats))
		client_copy_stats(ret_stats, rep->reply->stats);
	pin_proto_free(rep);
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
	client_evlog_close(c);
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
	r = c->lost ? -ECONNRESET : c->sock < 0 ? 0 : client_drain(c, &n);
	/* Once a call, as a request: a daemon that ends every connection it
	 * accepts is not reconnected to forever. */
	if (r == -ECONNRESET && (c->flags & PIN_CLIENT_RECONNECT)) {
		r = client_reconnect_locked(c);
		if (!r)
			r = client_drain(c, &n);
	}
	pthread_mutex_unlock(&c->lock);
	return r < 0 ? r : n;
}

void client_copy_stats(struct pin_client_stats *d, const Uffdd__Stats *s)
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
