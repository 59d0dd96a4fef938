// SPDX-License-Identifier: MIT
/*
 * GETs streamed over a connection to CRIU's page server (struct
 * pin_ps_gets): queued, sent and answered without ever blocking (every send
 * and recv is MSG_DONTWAIT), each reply checked against its GET, the rest
 * of a short reply asked again; pin_ps_fetch() on it.  With a journal
 * (uffdd's record of the stream) each step is told as it is taken, a
 * reply's header peeked whole before a byte of it is read, so that another
 * process that knows how many bytes were read and written can go on with
 * the stream (pin_ps_gets_resume()).  It calls pageserver.c and the log.
 */
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "pageserver-internal.h"

/* Pages asked for by one GET, at most: CRIU tees the pages through a pipe
 * it sizes to about 800 pages, the pages before them in their run
 * included; 1 MiB stays well inside it. */
#define GET_PAGES_MAX 256
/* GETs in flight at once, at most: enough to keep the server's replies
 * back to back, few enough that their 32-byte headers never fill the
 * socket buffer toward it. */
#define GETS_IN_FLIGHT PIN_PS_GETS_IN_FLIGHT

/* One GET: what it asks for and where the pages go. */
struct get {
	uint64_t dst_id, addr, nr;
	unsigned char *buf;
	void *tag; /* the caller's, told to done with the reply */
};

/* GETs under way on a connection: gets[done, sent) are in flight,
 * gets[sent, n) wait to go. */
struct pin_ps_gets {
	struct pin_ps *ps;
	uint64_t dst_id;
	struct get *gets;
	size_t n, cap, done, sent;
	/* the reply being read: its header, then its pages */
	struct ps_iov reply;
	size_t got; /* bytes of it read, header included */
	/* the GET being written: bytes of its header out */
	size_t put;
	/* the seq of gets[done]; bytes read since the stream was taken; bytes
	 * of a reply a predecessor half read, to drop first */
	uint64_t seq, rd, skip;
	pin_ps_note_fn note;
	void *note_arg;
	/* the GET the last failure hit, and what it was */
	struct get failed;
	char why[160];
};

int pin_ps_gets_new(struct pin_ps *ps, uint64_t dst_id, struct pin_ps_gets **ret)
{
	struct pin_ps_gets *g;

	if (!ps || !ret)
		return -EINVAL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->ps = ps;
	g->dst_id = dst_id;
	*ret = g;
	return 0;
}

void pin_ps_gets_free(struct pin_ps_gets *g)
{
	if (!g)
		return;
	free(g->gets);
	free(g);
}

/* Queue a GET; the array grows when a short reply leaves a rest to ask,
 * and starts over from its head once every GET is answered. */
static int queue(struct pin_ps_gets *f, const struct get *q)
{
	if (f->done == f->n)
		f->n = f->done = f->sent = 0;
	if (f->n == f->cap && f->done) {
		memmove(f->gets, f->gets + f->done, (f->n - f->done) * sizeof(*f->gets));
		f->n -= f->done;
		f->sent -= f->done;
		f->done = 0;
	}
	if (f->n == f->cap) {
		size_t cap = f->cap ? 2 * f->cap : 64;
		struct get *g = reallocarray(f->gets, cap, sizeof(*g));

		if (!g)
			return -ENOMEM;
		f->gets = g;
		f->cap = cap;
	}
	f->gets[f->n++] = *q;
	return 0;
}

int pin_ps_gets_add_task(struct pin_ps_gets *g, uint64_t dst_id, uint64_t addr, uint64_t nr_pages,
			 void *buf, void *tag)
{
	uint64_t page = page_size();

	if (!g || !nr_pages || !buf)
		return -EINVAL;
	for (uint64_t k = 0; k < nr_pages; k += GET_PAGES_MAX) {
		uint64_t nr = nr_pages - k;
		struct get q = { .dst_id = dst_id,
				 .addr = addr + k * page,
				 .nr = nr < GET_PAGES_MAX ? nr : GET_PAGES_MAX,
				 .buf = (unsigned char *)buf + k * page,
				 .tag = tag };
		int r = queue(g, &q);

		if (r < 0)
			return r;
	}
	return 0;
}

int pin_ps_gets_add(struct pin_ps_gets *g, uint64_t addr, uint64_t nr_pages, void *buf)
{
	return g ? pin_ps_gets_add_task(g, g->dst_id, addr, nr_pages, buf, NULL) : -EINVAL;
}

/* Say what failed, with the GET it hit, and return -err. */
static int failed(struct pin_ps_gets *f, const struct get *g, const char *what, int err)
{
	f->failed = *g;
	snprintf(f->why, sizeof(f->why), "%s%s%s", what, err ? ": " : "", err ? strerror(err) : "");
	pin_log(PIN_LOG_ERR,
		"page server %s: GET task %" PRIu64 " [0x%" PRIx64 ", 0x%" PRIx64 "): %s",
		f->ps->peer, g->dst_id, g->addr, g->addr + g->nr * page_size(), f->why);
	return -(err ? err : EBADMSG);
}

/* Write what can go of the next GETs; 0, or -errno. */
static int send_gets(struct pin_ps_gets *f)
{
	while (f->sent < f->n && f->sent - f->done < GETS_IN_FLIGHT) {
		const struct get *g = &f->gets[f->sent];
		struct ps_iov iov = ps_iov(PS_IOV_GET, g->nr, g->addr, g->dst_id);
		struct pin_ps_noted nd = {
			f->seq + (f->sent - f->done), g->dst_id, g->addr, g->nr, f->rd, g->tag
		};

		/* Journaled before a byte of it goes out. */
		if (!f->put && f->note)
			f->note(f->note_arg, PIN_PS_NOTE_GET, &nd);
		ssize_t n = send(f->ps->fd, (char *)&iov + f->put, sizeof(iov) - f->put,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0)
			return failed(f, g, "send", errno);
		f->put += (size_t)n;
		if (f->put == sizeof(iov)) {
			f->put = 0;
			f->sent++;
			if (f->note)
				f->note(f->note_arg, PIN_PS_NOTE_SENT, &nd);
		}
	}
	return 0;
}

/* A reply's header against the GET it answers; 0 or -EBADMSG. */
static int check_reply(struct pin_ps_gets *f, const struct get *g)
{
	const struct ps_iov *r = &f->reply;
	uint32_t cmd = r->cmd & PS_CMD_MASK, flags = r->cmd >> PS_CMD_BITS;
	char what[160];

	if (!((cmd == PS_IOV_ADD_F && flags == PIN_CRIU_PE_PRESENT) || r->cmd == PS_IOV_ADD) ||
	    r->dst_id != g->dst_id || r->vaddr != g->addr || !r->nr_pages || r->nr_pages > g->nr) {
		snprintf(what, sizeof(what),
			 "answered cmd 0x%" PRIx32 " task %" PRIu64 " 0x%" PRIx64 " %" PRIu64
			 " pages",
			 r->cmd, r->dst_id, r->vaddr, r->nr_pages);
		return failed(f, g, what, 0);
	}
	return 0;
}

/* What a recv() for g's reply that got nothing (n <= 0, not EINTR) means:
 * 0 while nothing has come yet (EAGAIN), else the failure. */
static int recv_none(struct pin_ps_gets *f, const struct get *g, ssize_t n)
{
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n < 0)
		return failed(f, g, "recv", errno);
	return failed(f, g,
		      "the server closed the connection before answering (it does so for "
		      "pages it holds no lazy copy of)",
		      ECONNRESET);
}

/* With a journal, a reply's header is read only once it is whole in the
 * socket, checked and journaled: 1 then, 0 while it is not whole, or
 * -errno. */
static int peek_reply(struct pin_ps_gets *f, const struct get *g)
{
	ssize_t n;
	int r;

	do
		n = recv(f->ps->fd, &f->reply, sizeof(f->reply), MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return recv_none(f, g, n);
	if ((size_t)n < sizeof(f->reply)) {
		/* Part of a header and the server gone: it never comes whole. */
		struct pollfd p = { .fd = f->ps->fd, .events = POLLRDHUP };

		if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
			return failed(f, g, "the server closed the connection inside a header",
				      ECONNRESET);
		return 0;
	}
	r = check_reply(f, g);
	if (r < 0)
		return r;
	struct pin_ps_noted nd = { f->seq, g->dst_id, g->addr, f->reply.nr_pages, f->rd, g->tag };

	f->note(f->note_arg, PIN_PS_NOTE_REPLY, &nd);
	return 1;
}

/* Read what has come of the replies, each whole one told to done; 0, or
 * -errno. */
static int recv_replies(struct pin_ps_gets *f, pin_ps_done_fn done, void *arg)
{
	uint64_t page = page_size();
	unsigned char drop[4096];

	/* The rest of a reply a predecessor half read: dropped, exactly (read
	 * into drop, not discarded with MSG_TRUNC and no buffer: memcheck
	 * takes that for a write through NULL). */
	while (f->skip) {
		size_t want = f->skip < sizeof(drop) ? (size_t)f->skip : sizeof(drop);
		ssize_t n = recv(f->ps->fd, drop, want, MSG_DONTWAIT);
		struct get none = { 0 };

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0)
			return failed(f, &none, n ? "recv" : "the server closed the connection",
				      n ? errno : ECONNRESET);
		f->skip -= (uint64_t)n;
		f->rd += (uint64_t)n;
	}
	/* Nothing asked: whatever comes is a lie, and EOF a hang-up. */
	if (f->done == f->sent) {
		ssize_t n = recv(f->ps->fd, drop, sizeof(drop), MSG_DONTWAIT);
		struct get none = { 0 };

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (n < 0)
			return failed(f, &none, "recv", errno);
		return failed(f, &none,
			      n ? "the server sent what no GET asked for"
				: "the server closed the connection",
			      n ? 0 : ECONNRESET);
	}
	while (f->done < f->sent) {
		struct get *g = &f->gets[f->done];
		size_t goal = sizeof(f->reply), hdr = sizeof(f->reply);
		unsigned char *dst = (unsigned char *)&f->reply + f->got;
		ssize_t n;
		int r;

		if (f->got >= hdr) {
			goal = hdr + f->reply.nr_pages * page;
			dst = g->buf + (f->got - hdr);
		} else if (f->note) {
			r = peek_reply(f, g);
			if (r <= 0)
				return r;
		}
		n = recv(f->ps->fd, dst, goal - f->got, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return recv_none(f, g, n);
		f->got += (size_t)n;
		f->rd += (uint64_t)n;
		if (f->got == hdr && f->note) {
			struct pin_ps_noted nd = { f->seq,	g->dst_id,
						   g->addr,	f->reply.nr_pages,
						   f->rd - hdr, g->tag };

			f->note(f->note_arg, PIN_PS_NOTE_TAKEN, &nd);
		} else if (f->got == hdr) {
			r = check_reply(f, g);
			if (r < 0)
				return r;
		}
		if (f->got < hdr || f->got < hdr + f->reply.nr_pages * page)
			continue;
		struct get whole = *g;
		uint64_t k = f->reply.nr_pages;

		f->got = 0;
		f->done++;
		f->seq++;
		/* The rest of a short answer is asked again. */
		if (k < whole.nr) {
			struct get rest = whole;

			rest.addr += k * page;
			rest.nr -= k;
			rest.buf += k * page;
			r = queue(f, &rest);
			if (r < 0)
				return r;
		}
		if (done)
			done(arg, whole.tag, whole.addr, k, whole.buf);
	}
	return 0;
}

int pin_ps_gets_pump(struct pin_ps_gets *g, pin_ps_done_fn done, void *arg)
{
	int r;

	if (!g)
		return -EINVAL;
	r = send_gets(g);
	if (!r)
		r = recv_replies(g, done, arg);
	/* Room for more GETs now that replies came. */
	if (!r)
		r = send_gets(g);
	return r;
}

uint64_t pin_ps_gets_read(const struct pin_ps_gets *g)
{
	return g->rd;
}

size_t pin_ps_gets_pending(const struct pin_ps_gets *g)
{
	return g->n - g->done + (g->skip ? 1 : 0);
}

void pin_ps_gets_journal(struct pin_ps_gets *g, pin_ps_note_fn fn, void *arg)
{
	g->note = fn;
	g->note_arg = arg;
}

int pin_ps_gets_resume(struct pin_ps_gets *g, uint64_t seq, uint64_t rd, uint64_t skip)
{
	if (!g || g->n)
		return -EINVAL;
	g->seq = seq;
	g->rd = rd;
	g->skip = skip;
	return 0;
}

int pin_ps_gets_gone_out(struct pin_ps_gets *g, uint64_t bytes)
{
	if (!g || g->sent != g->done || bytes > (g->n - g->done) * sizeof(struct ps_iov) ||
	    bytes / sizeof(struct ps_iov) > GETS_IN_FLIGHT)
		return -EINVAL;
	g->sent += bytes / sizeof(struct ps_iov);
	g->put = bytes % sizeof(struct ps_iov);
	return 0;
}

bool pin_ps_gets_sending(const struct pin_ps_gets *g)
{
	return g->sent < g->n && g->sent - g->done < GETS_IN_FLIGHT;
}

const char *pin_ps_gets_failure(const struct pin_ps_gets *g, uint64_t *ret_addr,
				uint64_t *ret_nr_pages)
{
	*ret_addr = g->failed.addr;
	*ret_nr_pages = g->failed.nr;
	return g->why;
}

int pin_ps_fetch(struct pin_ps *ps, uint64_t dst_id, const struct pin_ps_range *ranges, size_t n,
		 int timeout_ms)
{
	struct pin_ps_gets *f = NULL;
	int r;

	if (!ps || (!ranges && n) || timeout_ms <= 0)
		return -EINVAL;
	r = pin_ps_gets_new(ps, dst_id, &f);
	for (size_t i = 0; !r && i < n; i++)
		if (ranges[i].nr_pages)
			r = pin_ps_gets_add(f, ranges[i].addr, ranges[i].nr_pages, ranges[i].buf);
	while (!r && pin_ps_gets_pending(f)) {
		r = pin_ps_gets_pump(f, NULL, NULL);
		if (r || !pin_ps_gets_pending(f))
			break;
		r = ps_wait_for(ps, POLLIN | (pin_ps_gets_sending(f) ? POLLOUT : 0), timeout_ms);
		if (r == -ETIMEDOUT)
			failed(f, &f->gets[f->done], "no answer in time", ETIMEDOUT);
	}
	pin_ps_gets_free(f);
	return r;
}
