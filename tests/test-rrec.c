// SPDX-License-Identifier: MIT
/*
 * Suite unit, area rrec: uffdd/remote-record.c, the durable record of a
 * page-server connection, on real memfds.  For each point of the stream a
 * daemon can die at (a GET journaled, half out, out; its reply journaled,
 * half read, read whole), where rrec_plan() says the stream stands, given
 * the bytes the socket says were read and written; and records that do not
 * hold together or do not match those counts, each refused with -EBADMSG.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

/* Before Check's header, whose fail() macro would rename uffdd.h's fail(). */
#include <linux/userfaultfd.h>

#include "uffdd.h"
#include "test-common.h"

#define PAGE ((uint64_t)uffdd_page)
#define GETB ((uint64_t)PIN_PS_IOV_BYTES)
/* The socket's counts when the daemon took it: not zero, so that a record
 * read against the counts from 0 is caught. */
#define RD0  1000u
#define WR0  64u
#define SRC  (REMOTE_ID_BIT | 7)
#define TASK 4242
#define ADDR 0x7f0000000000ull

struct rec {
	struct rrec *r;
	int fd;
};

static void rec_new(struct rec *x)
{
	ck_assert_int_eq(rrec_new(5, 1000, RD0, WR0, &x->r, &x->fd), 0);
}

static void rec_free(struct rec *x)
{
	rrec_unmap(x->r);
	close(x->fd);
}

/* GET seq of nr pages at ADDR + seq pages' worth. */
static struct pin_ps_noted get_n(uint64_t seq, uint64_t nr)
{
	return (struct pin_ps_noted){
		.seq = seq, .dst_id = TASK, .addr = ADDR + seq * 256 * PAGE, .nr_pages = nr
	};
}

/* GETs seq from up to to (not included) of nr pages each, journaled for SRC. */
static void get_seqs(struct rec *x, uint64_t from, uint64_t to, uint64_t nr)
{
	for (uint64_t k = from; k < to; k++) {
		struct pin_ps_noted g = get_n(k, nr);

		rrec_get(x->r, SRC, &g);
	}
}

/* A record with GET 0 of nr pages journaled for SRC. */
static void rec_one_get(struct rec *x, uint64_t nr)
{
	rec_new(x);
	get_seqs(x, 0, 1, nr);
}

/* Its reply of rnr pages, at rd bytes read. */
static void reply(struct rec *x, uint64_t seq, uint64_t rnr, uint64_t rd)
{
	struct pin_ps_noted n = get_n(seq, rnr);

	n.rd = rd;
	rrec_reply(x->r, &n);
}

static int plan(struct rec *x, uint64_t rd, uint64_t wr, struct rrec_plan *p)
{
	char why[160];

	return rrec_plan(x->r, RD0 + rd, WR0 + wr, p, why, sizeof(why));
}

/* Nothing asked yet: nothing in flight; any byte moved is refused. */
START_TEST(fresh)
{
	struct rrec_plan p;
	struct rec x;

	rec_new(&x);
	ck_assert_int_eq(plan(&x, 0, 0, &p), 0);
	ck_assert_uint_eq(p.n, 0);
	ck_assert_uint_eq(p.seq, 0);
	ck_assert_uint_eq(p.skip, 0);
	ck_assert_uint_eq(p.out, 0);
	ck_assert_int_eq(plan(&x, 1, 0, &p), -EBADMSG);
	ck_assert_int_eq(plan(&x, 0, 1, &p), -EBADMSG);
	/* Counts below the record's: another socket's. */
	char why[160];
	ck_assert_int_eq(rrec_plan(x.r, RD0 - 1, WR0, &p, why, sizeof(why)), -EBADMSG);
	rec_free(&x);
}
END_TEST

/* A GET journaled: not out, half out, out whole, more: as many bytes out
 * as the socket says, past its GET refused. */
START_TEST(get_journaled_then_sent)
{
	struct rrec_plan p;
	struct rec x;

	rec_one_get(&x, 256);
	for (uint64_t out = 0; out <= GETB; out++) {
		ck_assert_int_eq(plan(&x, 0, out, &p), 0);
		ck_assert_uint_eq(p.n, 1);
		ck_assert_uint_eq(p.seq, 0);
		ck_assert_uint_eq(p.out, out);
		ck_assert_uint_eq(p.v[0].src, SRC);
		ck_assert_uint_eq(p.v[0].task, TASK);
		ck_assert_uint_eq(p.v[0].addr, ADDR);
		ck_assert_uint_eq(p.v[0].nr, 256);
	}
	ck_assert_int_eq(plan(&x, 0, GETB + 1, &p), -EBADMSG);
	/* No reply journaled: not a byte may have been read. */
	ck_assert_int_eq(plan(&x, 1, GETB, &p), -EBADMSG);
	rec_free(&x);
}
END_TEST

/*
 * Its reply (3 of 4 pages, short) journaled: not read (peeked again), its
 * header or some pages read (the rest dropped, exactly), read whole
 * (nothing in flight), read past its end (refused).
 */
START_TEST(reply_journaled_then_read)
{
	uint64_t whole = GETB + 3 * PAGE;
	struct rrec_plan p;
	struct rec x;

	rec_one_get(&x, 4);
	reply(&x, 0, 3, 0);
	ck_assert_int_eq(plan(&x, 0, GETB, &p), 0);
	ck_assert_uint_eq(p.n, 1);
	ck_assert_uint_eq(p.seq, 0);
	ck_assert_uint_eq(p.skip, 0);
	for (uint64_t rd = 1; rd < whole; rd += rd < GETB ? 1 : PAGE / 2) {
		ck_assert_int_eq(plan(&x, rd, GETB, &p), 0);
		ck_assert_uint_eq(p.n, 0);
		ck_assert_uint_eq(p.seq, 1);
		ck_assert_uint_eq(p.skip, whole - rd);
		ck_assert_uint_eq(p.rd, rd);
	}
	ck_assert_int_eq(plan(&x, whole, GETB, &p), 0);
	ck_assert_uint_eq(p.n, 0);
	ck_assert_uint_eq(p.seq, 1);
	ck_assert_uint_eq(p.skip, 0);
	ck_assert_int_eq(plan(&x, whole + 1, GETB, &p), -EBADMSG);
	/* Its reply read, its GET not wholly out: refused. */
	ck_assert_int_eq(plan(&x, whole, GETB - 1, &p), -EBADMSG);
	rec_free(&x);
}
END_TEST

/*
 * 100 GETs, each answered whole in turn (the ring wraps), then 3 more out:
 * the first of them answered half.  The two behind it stay in flight, in
 * their order.
 */
START_TEST(ring_wraps)
{
	uint64_t rd = 0, n = 100;
	struct rrec_plan p;
	struct rec x;

	rec_new(&x);
	for (uint64_t k = 0; k < n; k++) {
		struct pin_ps_noted g = get_n(k, 1);
		rrec_get(x.r, SRC, &g);
		reply(&x, k, 1, rd);
		rd += GETB + PAGE;
	}
	ck_assert_int_eq(plan(&x, rd, n * GETB, &p), 0);
	ck_assert_uint_eq(p.n, 0);
	ck_assert_uint_eq(p.seq, n);
	get_seqs(&x, n, n + 3, 2);
	reply(&x, n, 2, rd);
	ck_assert_int_eq(plan(&x, rd + GETB, (n + 3) * GETB, &p), 0);
	ck_assert_uint_eq(p.skip, 2 * PAGE);
	ck_assert_uint_eq(p.seq, n + 1);
	ck_assert_uint_eq(p.n, 2);
	ck_assert_uint_eq(p.out, 2 * GETB);
	ck_assert_uint_eq(p.v[0].addr, ADDR + (n + 1) * 256 * PAGE);
	ck_assert_uint_eq(p.v[1].addr, ADDR + (n + 2) * 256 * PAGE);
	/* A reply journaled behind one not read whole: refused. */
	reply(&x, n + 1, 2, rd + 2 * GETB + 2 * PAGE);
	ck_assert_int_eq(plan(&x, rd + GETB, (n + 3) * GETB, &p), -EBADMSG);
	rec_free(&x);
}
END_TEST

/* A reply journaled where the one before did not end: refused. */
START_TEST(replies_not_back_to_back)
{
	struct pin_ps_noted g0 = get_n(0, 1), g1 = get_n(1, 1);
	struct rrec_plan p;
	struct rec x;

	rec_new(&x);
	rrec_get(x.r, SRC, &g0);
	rrec_get(x.r, SRC, &g1);
	reply(&x, 0, 1, 0);
	reply(&x, 1, 1, GETB + PAGE + 8);
	ck_assert_int_eq(plan(&x, GETB + PAGE + 8, 2 * GETB, &p), -EBADMSG);
	rec_free(&x);
}
END_TEST

/* Its end began: a byte written past the last GET (PS_IOV_CLOSE under way)
 * is refused; none, and the end is told. */
START_TEST(ending)
{
	struct rrec_plan p;
	struct rec x;

	rec_one_get(&x, 1);
	rrec_ending(x.r);
	ck_assert_int_eq(plan(&x, 0, GETB, &p), 0);
	ck_assert(p.ending);
	ck_assert_int_eq(plan(&x, 0, GETB + 1, &p), -EBADMSG);
	rec_free(&x);
}
END_TEST

/* Sources: added and deleted in place, a full table refused. */
START_TEST(sources)
{
	uint64_t id, task;
	struct rec x;

	rec_new(&x);
	for (uint64_t k = 0; k < RREC_SOURCES; k++)
		ck_assert_int_eq(rrec_src_add(x.r, REMOTE_ID_BIT | (k + 1), k), 0);
	ck_assert_int_eq(rrec_src_add(x.r, REMOTE_ID_BIT | 5000, 1), -ENOSPC);
	rrec_src_del(x.r, REMOTE_ID_BIT | 3);
	size_t held = 0;
	for (size_t i = 0; i < RREC_SOURCES; i++) {
		if (!rrec_src_at(x.r, i, &id, &task))
			continue;
		held++;
		ck_assert_uint_eq(task, (id & ~REMOTE_ID_BIT) - 1);
	}
	ck_assert_uint_eq(held, RREC_SOURCES - 1);
	rec_free(&x);
}
END_TEST

/*
 * 64 GETs in flight, the most there are (the oldest not answered yet), past
 * one answered whole: the ring still says where the next reply starts.
 */
START_TEST(in_flight_fill_the_ring)
{
	uint64_t whole = GETB + PAGE, n = PIN_PS_GETS_IN_FLIGHT;
	struct pin_ps_noted g0 = get_n(0, 1);
	struct rrec_plan p;
	struct rec x;

	rec_new(&x);
	rrec_get(x.r, SRC, &g0);
	reply(&x, 0, 1, 0);
	get_seqs(&x, 1, n + 1, 1);
	ck_assert_int_eq(plan(&x, whole, (n + 1) * GETB, &p), 0);
	ck_assert_uint_eq(p.seq, 1);
	ck_assert_uint_eq(p.skip, 0);
	ck_assert_uint_eq(p.n, n);
	ck_assert_uint_eq(p.out, n * GETB);
	ck_assert_uint_eq(p.v[0].addr, ADDR + 256 * PAGE);
	ck_assert_uint_eq(p.v[n - 1].addr, ADDR + n * 256 * PAGE);
	/* Not a byte of reply 1 read: one byte more is refused. */
	ck_assert_int_eq(plan(&x, whole + 1, (n + 1) * GETB, &p), -EBADMSG);
	/* Its header journaled: read half, the rest dropped. */
	reply(&x, 1, 1, whole);
	ck_assert_int_eq(plan(&x, whole + 3, (n + 1) * GETB, &p), 0);
	ck_assert_uint_eq(p.seq, 2);
	ck_assert_uint_eq(p.skip, GETB + PAGE - 3);
	ck_assert_uint_eq(p.n, n - 1);
	rec_free(&x);
}
END_TEST

/* More GETs in flight than the daemon ever has at once: refused, whatever
 * the ring holds room for. */
START_TEST(too_many_in_flight)
{
	uint64_t n = PIN_PS_GETS_IN_FLIGHT + 1;
	struct rrec_plan p;
	struct rec x;

	rec_new(&x);
	get_seqs(&x, 0, n, 1);
	ck_assert_int_eq(plan(&x, 0, n * GETB, &p), -EBADMSG);
	rec_free(&x);
}
END_TEST

/* Two GETs in flight of one source over the same page: the reply to one
 * would be taken for the other's, whose buffer holds nothing.  Refused;
 * two sources asking the same page are not. */
START_TEST(overlapping_gets)
{
	struct pin_ps_noted g0 = get_n(0, 4), g1 = get_n(1, 4);
	struct rrec_plan p;
	struct rec x;

	rec_new(&x);
	g1.addr = g0.addr + 3 * PAGE;
	rrec_get(x.r, SRC, &g0);
	rrec_get(x.r, SRC + 1, &g1);
	ck_assert_int_eq(plan(&x, 0, 2 * GETB, &p), 0);
	ck_assert_uint_eq(p.n, 2);
	rrec_get(x.r, SRC, &g1);
	ck_assert_int_eq(plan(&x, 0, 2 * GETB, &p), -EBADMSG);
	/* Back to back, not over each other: taken. */
	g1.addr = g0.addr + 4 * PAGE;
	rrec_get(x.r, SRC, &g1);
	ck_assert_int_eq(plan(&x, 0, 2 * GETB, &p), 0);
	ck_assert_uint_eq(p.n, 2);
	rec_free(&x);
}
END_TEST

/* The ring, last in the record: GET seq's slot, seven words, the first its
 * seq + 1 (remote-record.c). */
#define RING	   (2 * PIN_PS_GETS_IN_FLIGHT)
#define SLOT_BYTES (7 * sizeof(uint64_t))

/* What a death leaves while GET seq is written into fd's ring, its slot's
 * seq cleared first (rrec_get()): that slot not published. */
static void slot_cut(int fd, uint64_t seq)
{
	static const uint64_t zero;
	off_t at = (off_t)(rrec_bytes() - (RING - seq % RING) * SLOT_BYTES);

	ck_assert_int_eq(pwrite(fd, &zero, sizeof(zero), at), (ssize_t)sizeof(zero));
}

/*
 * GETs 0 and 1 answered whole, 2 and 3 out, 4 journaled and not out (its
 * send found no room): the next pump journals 4 again, and a death in
 * between leaves its slot cleared.  Planned, not refused: 4 is the newest
 * GET journaled, so the ring holds no gap, and not a byte of it went out.
 */
START_TEST(rejournal_cut_short)
{
	uint64_t whole = GETB + PAGE;
	struct rrec_plan p;
	struct rec x;

	rec_new(&x);
	get_seqs(&x, 0, 5, 1);
	reply(&x, 0, 1, 0);
	reply(&x, 1, 1, whole);
	slot_cut(x.fd, 4);
	ck_assert_int_eq(plan(&x, 2 * whole, 4 * GETB, &p), 0);
	ck_assert_uint_eq(p.seq, 2);
	ck_assert_uint_eq(p.skip, 0);
	ck_assert_uint_eq(p.n, 2);
	ck_assert_uint_eq(p.out, 2 * GETB);
	ck_assert_uint_eq(p.v[0].addr, ADDR + 2 * 256 * PAGE);
	ck_assert_uint_eq(p.v[1].addr, ADDR + 3 * 256 * PAGE);
	/* Journaled again whole: in flight, not a byte out. */
	struct pin_ps_noted g4 = get_n(4, 1);
	rrec_get(x.r, SRC, &g4);
	ck_assert_int_eq(plan(&x, 2 * whole, 4 * GETB, &p), 0);
	ck_assert_uint_eq(p.n, 3);
	ck_assert_uint_eq(p.out, 2 * GETB);
	ck_assert_uint_eq(p.v[2].addr, ADDR + 4 * 256 * PAGE);
	/* A slot cleared below a GET journaled: a gap, refused.  The daemon
	 * never leaves it (stream_rejournals_only_the_newest). */
	struct pin_ps_noted g5 = get_n(5, 1);
	rrec_get(x.r, SRC, &g5);
	slot_cut(x.fd, 4);
	ck_assert_int_eq(plan(&x, 2 * whole, 5 * GETB, &p), -EBADMSG);
	rec_free(&x);
}
END_TEST

/* A TCP pair over loopback: *ret_a and *ret_b, connected. */
static void tcp_pair(int *ret_a, int *ret_b)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(l, 0);
	ck_assert_int_eq(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(l, 1), 0);
	ck_assert_int_eq(getsockname(l, (struct sockaddr *)&sa, &len), 0);
	*ret_a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(*ret_a, 0);
	ck_assert_int_eq(connect(*ret_a, (struct sockaddr *)&sa, sizeof(sa)), 0);
	*ret_b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(*ret_b, 0);
	close(l);
}

/* The peer: reads all that comes and writes all it can, until the end. */
_Noreturn static void peer(int fd)
{
	static char buf[1 << 16];

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };
		if (poll(&p, 1, -1) < 0)
			_exit(1);
		if (p.revents & POLLIN) {
			ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			/* Closed with bytes unread: reset. */
			if (n == 0 || (n < 0 && errno == ECONNRESET))
				_exit(0);
			if (n < 0 && errno != EAGAIN)
				_exit(1);
		}
		if ((p.revents & POLLOUT) &&
		    send(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EAGAIN)
			_exit(errno == EPIPE || errno == ECONNRESET ? 0 : 1);
	}
}

/*
 * The counts read while the peer's bytes and ACKs come: each time exactly
 * the bytes this end read and wrote.  TCP_INFO and SIOCINQ (SIOCOUTQ) are
 * two calls: a segment between them took its bytes as read (its ACK as
 * unwritten), and a successor dropped bytes of the next reply.
 */
START_TEST(counts_while_the_stream_moves)
{
	static char buf[1 << 14];
	uint64_t rd0, wr0, rd, wr, got = 0, put = 0;
	int a, b;

	tcp_pair(&a, &b);
	ck_assert_int_eq(rrec_counts(a, &rd0, &wr0), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(a);
		peer(b);
	}
	close(b);
	for (int k = 0; k < 20000; k++) {
		ssize_t n = recv(a, buf, (size_t)(k % 7 + 1) * 1000, MSG_DONTWAIT);
		if (n > 0)
			got += (uint64_t)n;
		n = send(a, buf, (size_t)(k % 5 + 1) * 1000, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0)
			put += (uint64_t)n;
		ck_assert_int_eq(rrec_counts(a, &rd, &wr), 0);
		ck_assert_uint_eq(rd - rd0, got);
		ck_assert_uint_eq(wr - wr0, put);
	}
	close(a);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

/* A stream's journal watched: each GET journaled must be new or the newest
 * again, and a death as it is written must leave a record planned. */
struct jwatch {
	struct rec x;
	int fd;		    /* the daemon's end of the stream */
	uint64_t top;	    /* the seq of the next GET new to the journal */
	unsigned int again; /* GETs journaled again (their send found no room) */
};

static void watch_note(void *arg, enum pin_ps_note what, const struct pin_ps_noted *n)
{
	struct jwatch *w = arg;
	struct rrec_plan p;
	uint64_t rd, wr;
	char why[160];

	if (what != PIN_PS_NOTE_GET)
		return;
	ck_assert(n->seq == w->top || n->seq + 1 == w->top);
	w->again += n->seq + 1 == w->top;
	/* Killed as its slot is written: every GET before it out, none
	 * answered, not a byte of it out. */
	slot_cut(w->x.fd, n->seq);
	ck_assert_int_eq(rrec_counts(w->fd, &rd, &wr), 0);
	ck_assert_int_eq(rrec_plan(w->x.r, rd, wr, &p, why, sizeof(why)), 0);
	ck_assert_uint_eq(p.seq, 0);
	ck_assert_uint_eq(p.n, n->seq);
	ck_assert_uint_eq(p.out, n->seq * GETB);
	rrec_get(w->x.r, SRC, n);
	w->top = n->seq + 1;
}

/*
 * libpin's GETs over a real stream whose send buffer is full (the peer
 * reads a little at a time): a GET whose send finds no room is journaled
 * again at the next pump, and it is always the newest journaled (a GET is
 * journaled only once every one before it is wholly out), so that a death
 * while it is written again leaves no gap in the ring.
 */
START_TEST(stream_rejournals_only_the_newest)
{
	static char junk[1 << 16];
	uint64_t n = PIN_PS_GETS_IN_FLIGHT, rd0, wr0;
	struct jwatch w = { .again = 0 };
	struct pin_ps_gets *g;
	struct pin_ps *ps;
	int a, b, small = 4096;

	tcp_pair(&a, &b);
	ck_assert_int_eq(setsockopt(a, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	/* Filled: the first GET finds no room. */
	while (send(a, junk, sizeof(junk), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
		;
	ck_assert_int_eq(errno, EAGAIN);
	ck_assert_int_eq(rrec_counts(a, &rd0, &wr0), 0);
	ck_assert_int_eq(rrec_new(5, 1000, rd0, wr0, &w.x.r, &w.x.fd), 0);
	w.fd = a;
	int dup = fcntl(a, F_DUPFD_CLOEXEC, 3);
	ck_assert_int_ge(dup, 0);
	ck_assert_int_eq(pin_ps_wrap(dup, "rrec", &ps), 0);
	ck_assert_int_eq(pin_ps_gets_new(ps, TASK, &g), 0);
	pin_ps_gets_journal(g, watch_note, &w);
	uint8_t *buf = aligned_alloc(PAGE, n * PAGE);
	ck_assert_ptr_nonnull(buf);
	for (uint64_t k = 0; k < n; k++)
		ck_assert_int_eq(pin_ps_gets_add(g, ADDR + 2 * k * PAGE, 1, buf + k * PAGE), 0);
	for (;;) {
		struct pollfd pf[2] = { { .fd = a, .events = POLLOUT },
					{ .fd = b, .events = POLLIN } };
		ck_assert_int_eq(pin_ps_gets_pump(g, NULL, NULL), 0);
		if (!pin_ps_gets_sending(g))
			break;
		ck_assert_int_gt(poll(pf, 2, -1), 0);
		if (pf[1].revents & POLLIN)
			ck_assert_int_gt(recv(b, junk, 4096, MSG_DONTWAIT), 0);
	}
	ck_assert_uint_eq(w.top, n);
	ck_assert_uint_ge(w.again, 1);
	pin_ps_gets_free(g);
	pin_ps_free(ps);
	free(buf);
	close(a);
	close(b);
	rec_free(&w.x);
}
END_TEST

/* The file itself: another connection's, another size, a slot of garbage. */
START_TEST(hostile_file)
{
	static const uint8_t ff[64] = { [0 ... 63] = 0xff };
	struct rrec_plan p;
	struct rrec *r;
	struct rec x;
	char why[160];

	rec_one_get(&x, 1);
	ck_assert_int_eq(rrec_map(x.fd, 6, &r, why, sizeof(why)), -EBADMSG);
	ck_assert_int_eq(rrec_map(x.fd, 5, &r, why, sizeof(why)), 0);
	rrec_unmap(r);
	/* The last ring slot's seq made garbage. */
	ck_assert_int_eq(pwrite(x.fd, ff, 8, (off_t)rrec_bytes() - 56), 8);
	ck_assert_int_eq(plan(&x, 0, GETB, &p), -EBADMSG);
	ck_assert_int_eq(ftruncate(x.fd, (off_t)rrec_bytes() + 1), 0);
	ck_assert_int_eq(rrec_map(x.fd, 5, &r, why, sizeof(why)), -EBADMSG);
	ck_assert_int_eq(pwrite(x.fd, ff, 8, 0), 8);
	ck_assert_int_eq(ftruncate(x.fd, (off_t)rrec_bytes()), 0);
	ck_assert_int_eq(rrec_map(x.fd, 5, &r, why, sizeof(why)), -EBADMSG);
	rec_free(&x);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("rrec");

	uffdd_page_init();
	TEST_ADD_CASE(s, fresh, 30);
	TEST_ADD_CASE(s, get_journaled_then_sent, 30);
	TEST_ADD_CASE(s, reply_journaled_then_read, 30);
	TEST_ADD_CASE(s, ring_wraps, 30);
	TEST_ADD_CASE(s, replies_not_back_to_back, 30);
	TEST_ADD_CASE(s, ending, 30);
	TEST_ADD_CASE(s, sources, 30);
	TEST_ADD_CASE(s, in_flight_fill_the_ring, 30);
	TEST_ADD_CASE(s, too_many_in_flight, 30);
	TEST_ADD_CASE(s, overlapping_gets, 30);
	TEST_ADD_CASE(s, rejournal_cut_short, 30);
	TEST_ADD_CASE(s, stream_rejournals_only_the_newest, 60);
	TEST_ADD_CASE(s, hostile_file, 30);
	TEST_ADD_CASE(s, counts_while_the_stream_moves, 120);
	return s;
}

const char *test_skip_reason(void)
{
	return NULL;
}
