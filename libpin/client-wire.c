// SPDX-License-Identifier: MIT
/*
 * One request on the uffdd client's connection: send it, wait for its Reply,
 * dispatching what else comes meanwhile (stale-pin notices, Replies to a
 * request sent twice); a daemon's restart that keeps the connection (a
 * Resume names the last request the new daemon found done, and the one
 * outstanding is sent again unless that was it); the end of the connection,
 * after which every request fails at once.  Calls proto.c, util.c and
 * pin_ctx_invalidate() only.
 */
#include <poll.h>
#include <string.h>

#include "client-internal.h"

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

bool client_connection_lost(int r)
{
	return r == -ECONNRESET || r == -EPIPE;
}

/* What pin_proto_recv() rejects and the connection survives. */
static bool malformed(int r)
{
	return r == -EBADMSG || r == -EBADF || r == -EINVAL;
}

/*
 * r from a send or a receive.  At the end of the connection the daemon is
 * gone for good (a restarted one keeps the connection: it waits in the fd
 * store), so every request fails at once with -ECONNRESET from now on.
 */
static int check_lost(struct pin_client *c, int r)
{
	if (!client_connection_lost(r))
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
int client_refusal_waiting(const struct pin_client *c)
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
int client_drain(struct pin_client *c, int *n)
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
			pin_log(client_connection_lost(r) ? PIN_LOG_WARN : PIN_LOG_ERR,
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
		pin_log(client_connection_lost(r) ? PIN_LOG_WARN : PIN_LOG_ERR,
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
 * *ret_msg (when asked for) holding the Reply whenever one came (an error's
 * too: a Goodbye's end carries the session's counters either way).
 */
int client_request_reply(struct pin_client *c, Uffdd__Msg *req, const int *fds, size_t nfds,
			 Uffdd__Msg **ret_msg)
{
	int n = 0, r;

	if (c->lost)
		return -ECONNRESET;
	if (c->sock < 0)
		return -ENOTCONN;
	/* What came while nothing was outstanding (a Resume then is not about
	 * req, a Reply with seq 0 not to it), and the end of the connection. */
	r = client_drain(c, &n);
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
			pin_log(client_connection_lost(r) ? PIN_LOG_WARN : PIN_LOG_ERR,
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
		if (ret_msg)
			*ret_msg = m;
		else
			pin_proto_free(m);
		return r;
	}
}

int client_request_once(struct pin_client *c, Uffdd__Msg *req, const int *fds, size_t nfds,
			Uffdd__Msg **ret_msg)
{
	Uffdd__Msg *m = NULL;
	int r = client_request_reply(c, req, fds, nfds, ret_msg ? &m : NULL);

	if (r == 0 && ret_msg)
		*ret_msg = m;
	else
		pin_proto_free(m);
	return r;
}
