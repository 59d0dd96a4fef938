// SPDX-License-Identifier: MIT
/*
 * The replies and notices a session's client is sent: a request's Reply,
 * the replies and stale-pin notices that notify.c delivers, Resume after a
 * takeover, and the queue that keeps them, in order, while the client's
 * socket has no room.  It may call session.c, state.c, log.c and util.c.
 */
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "uffdd.h"

/* Watch the session's socket for room (EPOLLOUT, requests left unread)
 * or for requests (EPOLLIN). */
void watch_for(struct session *s, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = &s->wsock };

	/* Not watched yet (a session being taken over): its first request
	 * flushes the queue. */
	if (s->w && epoll_ctl(s->w->ep, EPOLL_CTL_MOD, s->sock, &ev) < 0) {
		int err = errno;
		slog(s, LOG_ERR, "epoll_ctl(MOD, its socket): %s", strerror(err));
		session_kill(s, "its socket cannot be watched");
	}
}

/* Keep a copy of the message until the socket has room. */
static int enqueue(struct session *s, const void *buf, size_t len)
{
	if (s->outq_n == UFFDD_OUTQ_MAX) {
		slog(s, LOG_WARNING, "%u messages wait for room in its socket",
		     (unsigned int)UFFDD_OUTQ_MAX);
		session_kill(s, "does not read its replies");
		return -EAGAIN;
	}
	uint8_t *copy = malloc(len);
	if (!s->outq)
		s->outq = calloc(UFFDD_OUTQ_MAX, sizeof(*s->outq));
	if (!copy || !s->outq) {
		free(copy);
		/* A reply lost would leave its client waiting forever. */
		session_kill(s, "no memory for its replies");
		return -ENOMEM;
	}
	memcpy(copy, buf, len);
	s->outq[(s->outq_head + s->outq_n++) % UFFDD_OUTQ_MAX] = (struct out_msg){ copy, len };
	if (s->outq_n == 1)
		watch_for(s, EPOLLOUT);
	return 0;
}

/* The client is gone: so is its session, unless it said Goodbye (then the
 * daemon finishes it without the connection). */
void hung_up(struct session *s, const char *why)
{
	if (s->finishing)
		session_detach(s);
	else
		session_kill(s, why);
}

static int sent(struct session *s, int r)
{
	if (r < 0 && r != -EMSGSIZE) {
		slog(s, LOG_WARNING, "send: %s", strerror(-r));
		hung_up(s, "hung up");
	}
	return r;
}

/*
 * Send an encoded message, in order after those waiting: a socket without
 * room (the client sends requests faster than it reads the replies) keeps
 * it in the queue, and its requests are left unread until the queue is
 * sent, so that a pipelining client is slowed down, not cut off.
 */
int reply_out(struct session *s, const void *buf, size_t len)
{
	if (s->sock < 0 || s->dead)
		return -ENOTCONN;
	/* A Firecracker VM reads nothing from its connection. */
	if (s->fc)
		return 0;
	if (s->outq_n)
		return enqueue(s, buf, len);
	int r = pin_proto_send_raw(s->sock, buf, len, NULL, 0);
	return r == -EAGAIN ? enqueue(s, buf, len) : sent(s, r);
}

/* Send what waits while the socket has room: true when nothing is left. */
bool flush(struct session *s)
{
	while (s->outq_n && !s->dead && s->sock >= 0) {
		struct out_msg *m = &s->outq[s->outq_head];
		int r = pin_proto_send_raw(s->sock, m->buf, m->len, NULL, 0);
		if (r == -EAGAIN)
			return false;
		free(m->buf);
		s->outq_head = (s->outq_head + 1) % UFFDD_OUTQ_MAX;
		s->outq_n--;
		if (sent(s, r) < 0 && r != -EMSGSIZE)
			return false;
		if (!s->outq_n)
			watch_for(s, s->paused ? 0 : EPOLLIN);
	}
	return !s->dead && s->sock >= 0;
}

static int send_msg(struct session *s, Uffdd__Msg *m)
{
	size_t len = uffdd__msg__get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);

	if (!buf)
		return -ENOMEM;
	uffdd__msg__pack(m, buf);
	int r = reply_out(s, buf, len);
	free(buf);
	return r;
}

int pack_reply(uint64_t seq, Uffdd__Reply *rep, struct packed *p)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Reply small = UFFDD__REPLY__INIT;

	m.has_seq = true;
	m.seq = seq;
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = rep;
	p->len = uffdd__msg__get_packed_size(&m);
	if (p->len > PIN_PROTO_MAX_MSG) {
		small.error = -EMSGSIZE;
		small.text = "the reply does not fit in one message; ask for less";
		m.reply = &small;
		p->len = uffdd__msg__get_packed_size(&m);
	}
	p->buf = malloc(p->len);
	if (!p->buf)
		return -ENOMEM;
	uffdd__msg__pack(&m, p->buf);
	return 0;
}

static int send_reply(struct session *s, uint64_t seq, Uffdd__Reply *rep)
{
	struct packed p;

	if (s->sock < 0 || s->dead)
		return -ENOTCONN;
	int r = pack_reply(seq, rep, &p);
	if (r < 0)
		return r;
	r = reply_out(s, p.buf, p.len);
	free(p.buf);
	return r;
}

int control_reply(struct session *s, uint64_t seq, int error, const char *text)
{
	Uffdd__Reply rep = UFFDD__REPLY__INIT;

	rep.error = error;
	rep.text = (char *)text;
	return send_reply(s, seq, &rep);
}

void control_replayed(struct session *s, uint64_t seq, int error, uint64_t placed)
{
	Uffdd__Reply rep = UFFDD__REPLY__INIT;

	/* A VM's replay (firecracker.c) is nobody's request: the VM reads
	 * nothing from its connection. */
	if (s->fc) {
		slog(s, error ? LOG_WARNING : LOG_INFO,
		     "Firecracker VM (pid %d): working set replayed: %" PRIu64 " pages placed%s%s",
		     (int)s->pid, placed, error ? ", then " : "", error ? strerror(-error) : "");
		return;
	}
	rep.error = error;
	rep.text = error ? "replay failed" : "replayed";
	rep.has_pages_placed = !error;
	rep.pages_placed = placed;
	send_reply(s, seq, &rep);
}

void control_ended(struct session *s, uint64_t seq, int error, const char *text)
{
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Stats st = UFFDD__STATS__INIT;
	uint64_t lat[UFFDD_LAT_BUCKETS] = { 0 };

	session_stats_fill(s, &st, lat);
	st.n_latency_us_log2 = UFFDD_LAT_BUCKETS;
	st.latency_us_log2 = lat;
	rep.error = error;
	rep.text = (char *)text;
	rep.stats = &st;
	send_reply(s, seq, &rep);
}

void control_resume(struct session *s)
{
	Uffdd__Resume resume = UFFDD__RESUME__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	const void *reply;
	size_t len;

	resume.last_seq = state_last(s->st, &reply, &len);
	m.body_case = UFFDD__MSG__BODY_RESUME;
	m.resume = &resume;
	if (send_msg(s, &m) == 0 && resume.last_seq && len)
		reply_out(s, reply, len);
}

void control_stale(struct session *s, uint64_t start, uint64_t end, uint32_t event)
{
	for (size_t i = 0; i < s->pins.n && s->sock >= 0 && !s->dead; i++) {
		const struct pin_rec *p = &s->pins.v[i];
		uint64_t a = p->addr > start ? p->addr : start;
		uint64_t b = p->addr + p->len < end ? p->addr + p->len : end;
		if (a >= b)
			continue;
		Uffdd__Range range = UFFDD__RANGE__INIT;
		Uffdd__StaleNotice n = UFFDD__STALE_NOTICE__INIT;
		Uffdd__Msg m = UFFDD__MSG__INIT;
		range.addr = a;
		range.len = b - a;
		n.cookie = p->cookie;
		n.range = &range;
		n.event = event;
		m.body_case = UFFDD__MSG__BODY_STALE;
		m.stale = &n;
		send_msg(s, &m);
	}
}
