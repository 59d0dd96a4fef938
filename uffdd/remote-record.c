// SPDX-License-Identifier: MIT
/*
 * The durable record of one page-server connection (remote-conn.c's), a
 * memfd mapped and changed in place, kept in the fd store as r<id>.state
 * beside the socket itself (r<id>.sock): its sources (id and task), and a
 * ring of the last RREC_RING GETs, each journaled before a byte
 * of it goes out, and its reply's size and place in the stream journaled
 * once its header is whole in the socket, before a byte of it is read
 * (libpin's pin_ps_gets journal).  Each entry is published by one store
 * made last (a GET's seq, a reply's page count), so that a death at any
 * instruction leaves every entry whole or absent.  The kernel counts the
 * rest: the bytes the daemon read off the stream (TCP_INFO's bytes_received
 * less SIOCINQ) and wrote to it (bytes_acked plus SIOCOUTQ), so a successor
 * knows where the stream stands at every point a death can hit: a GET
 * journaled, not a byte out (sent again); half out (its rest sent); out, not
 * answered (its reply read as it comes); its reply's header journaled, not
 * read (peeked again); the header or some pages read (the rest of the reply
 * dropped, exactly: its pages are asked again when wanted, the same GET gets
 * the same answer); the reply read, its pages not placed, or placed and not
 * marked (asked again; placing a page that is there fails EEXIST: nothing
 * changes); PS_IOV_CLOSE under way (the connection is cut).  A record is
 * untrusted input: rrec_plan() refuses one that does not hold together or
 * does not match its socket's counts, and the connection's sources are then
 * lost (their pages poisoned), never placed from a guess.  It calls log.c
 * and util.c.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "uffdd.h"

#define RREC_MAGIC   0x3143455244464655ull /* "UFFDREC1" */
#define RREC_VERSION 2
/* GETs the ring holds: twice those in flight at once, so that the last
 * reply read whole, which says where the next one starts, is still in it
 * when every GET after it is in flight (with as many slots as GETs in
 * flight, the newest of them took its slot: a record refused that held
 * together). */
#define RREC_RING (2 * PIN_PS_GETS_IN_FLIGHT)
/* Pages one GET asks for at most (libpin splits larger ones). */
#define RREC_GET_PAGES 256
/* include/net/tcp_states.h: not in the uapi headers. */
#define TCP_STATE_ESTABLISHED 1
/* A stream offset a record may hold: far past any restore, short of
 * overflowing what is added to it. */
#define RREC_OFF_MAX (1ull << 60)
/* Times the socket's counts are taken again while the stream moves. */
#define RREC_COUNTS_TRIES 1000

struct rrec_src {
	uint64_t id; /* 0: free; published last */
	uint64_t task;
};

struct rrec_get {
	uint64_t seq1; /* seq + 1; 0: being written; published last */
	uint64_t src, task, addr, nr;
	uint64_t rd;  /* where its reply starts among the bytes read */
	uint64_t rnr; /* its reply's pages; 0: not journaled; published last */
};

struct rrec {
	uint64_t magic;
	uint32_t version, size;
	uint64_t id, uid, page;
	uint64_t rd0, wr0; /* the socket's counts when the daemon took it */
	uint64_t ending;   /* its end (PS_IOV_CLOSE) began */
	struct rrec_src src[RREC_SOURCES];
	struct rrec_get get[RREC_RING];
};

size_t rrec_bytes(void)
{
	return sizeof(struct rrec);
}

/* fd's TCP_INFO, whole: 0, or -errno. */
static int tcp_info_of(int fd, struct tcp_info *ti)
{
	socklen_t len = sizeof(*ti);

	memset(ti, 0, sizeof(*ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) < 0)
		return -errno;
	/* An older kernel's, without the byte counts. */
	if (len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti->tcpi_bytes_received))
		return -EOPNOTSUPP;
	return 0;
}

int rrec_counts(int fd, uint64_t *ret_rd, uint64_t *ret_wr)
{
	struct tcp_info ti, after;
	int inq, outq, r;

	/*
	 * TCP_INFO and SIOCINQ (SIOCOUTQ) are calls apart, and the server's
	 * bytes and ACKs come meanwhile: a segment between them is counted
	 * unread but not received (an ACK, acked but not unacked), and the
	 * bytes read (written) come out short.  The counts taken again after
	 * the ioctls are the same only when nothing came between (they only
	 * grow): else taken again, as many times as the stream moves (it
	 * stops: nothing reads what comes, nothing writes more).
	 */
	for (int tries = 0;; tries++) {
		r = tcp_info_of(fd, &ti);
		if (r < 0)
			return r;
		if (ioctl(fd, SIOCINQ, &inq) < 0 || ioctl(fd, SIOCOUTQ, &outq) < 0)
			return -errno;
		r = tcp_info_of(fd, &after);
		if (r < 0)
			return r;
		if (after.tcpi_bytes_received == ti.tcpi_bytes_received &&
		    after.tcpi_bytes_acked == ti.tcpi_bytes_acked &&
		    after.tcpi_state == ti.tcpi_state)
			break;
		if (tries == RREC_COUNTS_TRIES)
			return -EAGAIN;
	}
	/* A stream whose server hung up: its FIN counts as a byte read. */
	if (ti.tcpi_state != TCP_STATE_ESTABLISHED)
		return -ENOTCONN;
	*ret_rd = ti.tcpi_bytes_received - (uint64_t)inq;
	*ret_wr = ti.tcpi_bytes_acked + (uint64_t)outq;
	return 0;
}

static void publish(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

int rrec_new(uint64_t id, uid_t uid, uint64_t rd0, uint64_t wr0, struct rrec **ret, int *ret_fd)
{
	int fd = memfd_create("uffdd-remote", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, sizeof(struct rrec)) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	struct rrec *r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (r == MAP_FAILED) {
		int err = errno;
		close(fd);
		return -err;
	}
	*r = (struct rrec){ .version = RREC_VERSION,
			    .size = sizeof(*r),
			    .id = id,
			    .uid = uid,
			    .page = uffdd_page,
			    .rd0 = rd0,
			    .wr0 = wr0 };
	publish(&r->magic, RREC_MAGIC);
	*ret = r;
	*ret_fd = fd;
	return 0;
}

int rrec_map(int fd, uint64_t id, struct rrec **ret, char *why, size_t len)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != sizeof(struct rrec)) {
		snprintf(why, len, "a record of %lld bytes, not %zu", (long long)st.st_size,
			 sizeof(struct rrec));
		return -EBADMSG;
	}
	struct rrec *r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (r == MAP_FAILED)
		return -errno;
	if (r->magic != RREC_MAGIC || r->version != RREC_VERSION || r->size != sizeof(*r) ||
	    r->id != id || r->page != uffdd_page || r->rd0 > RREC_OFF_MAX ||
	    r->wr0 > RREC_OFF_MAX || r->uid > UINT32_MAX) {
		snprintf(why, len, "not a record of connection r%" PRIu64, id);
		munmap(r, sizeof(*r));
		return -EBADMSG;
	}
	*ret = r;
	return 0;
}

void rrec_unmap(struct rrec *r)
{
	if (r)
		munmap(r, sizeof(*r));
}

void rrec_base(const struct rrec *r, uint64_t *ret_rd0, uint64_t *ret_wr0)
{
	*ret_rd0 = r->rd0;
	*ret_wr0 = r->wr0;
}

uint64_t rrec_id(const struct rrec *r)
{
	return r->id;
}

uid_t rrec_uid(const struct rrec *r)
{
	return (uid_t)r->uid;
}

bool rrec_src_at(const struct rrec *r, size_t i, uint64_t *ret_id, uint64_t *ret_task)
{
	*ret_id = r->src[i].id;
	*ret_task = r->src[i].task;
	return (*ret_id & REMOTE_ID_BIT) && *ret_id != REMOTE_ID_BIT;
}

int rrec_src_add(struct rrec *r, uint64_t id, uint64_t task)
{
	for (size_t i = 0; i < RREC_SOURCES; i++) {
		if (r->src[i].id)
			continue;
		r->src[i].task = task;
		publish(&r->src[i].id, id);
		return 0;
	}
	return -ENOSPC;
}

void rrec_src_del(struct rrec *r, uint64_t id)
{
	for (size_t i = 0; i < RREC_SOURCES; i++)
		if (r->src[i].id == id)
			publish(&r->src[i].id, 0);
}

void rrec_get(struct rrec *r, uint64_t src, const struct pin_ps_noted *n)
{
	struct rrec_get *g = &r->get[n->seq % RREC_RING];

	publish(&g->seq1, 0);
	g->src = src;
	g->task = n->dst_id;
	g->addr = n->addr;
	g->nr = n->nr_pages;
	g->rd = 0;
	g->rnr = 0;
	publish(&g->seq1, n->seq + 1);
}

void rrec_reply(struct rrec *r, const struct pin_ps_noted *n)
{
	struct rrec_get *g = &r->get[n->seq % RREC_RING];

	g->rd = n->rd;
	publish(&g->rnr, n->nr_pages);
}

void rrec_ending(struct rrec *r)
{
	publish(&r->ending, 1);
}

/* The bytes of g's reply. */
static uint64_t reply_bytes(const struct rrec_get *g)
{
	return PIN_PS_IOV_BYTES + (g->rnr << uffdd_page_shift);
}

/* The end of g's pages (gets_of() checked it does not overflow). */
static uint64_t get_end(const struct rrec_get *g)
{
	return g->addr + (g->nr << uffdd_page_shift);
}

static int cmp_seq(const void *a, const void *b)
{
	const struct rrec_get *x = a, *y = b;

	return (x->seq1 > y->seq1) - (x->seq1 < y->seq1);
}

/* The GETs journaled, whole, sorted by seq: how many, or -EBADMSG. */
static int gets_of(const struct rrec *r, struct rrec_get *v, char *why, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < RREC_RING; i++) {
		struct rrec_get g = r->get[i];
		uint64_t seq = g.seq1 - 1;

		if (!g.seq1)
			continue;
		if (seq % RREC_RING != i || seq > RREC_OFF_MAX / PIN_PS_IOV_BYTES || !g.nr ||
		    g.nr > RREC_GET_PAGES || g.rnr > g.nr || (g.addr & (uffdd_page - 1)) ||
		    g.addr > UINT64_MAX - (g.nr << uffdd_page_shift) || !(g.src & REMOTE_ID_BIT) ||
		    g.src == REMOTE_ID_BIT || g.rd > RREC_OFF_MAX) {
			snprintf(why, len, "GET slot %zu does not hold together", i);
			return -EBADMSG;
		}
		v[n++] = g;
	}
	qsort(v, n, sizeof(*v), cmp_seq);
	for (size_t i = 1; i < n; i++) {
		if (v[i].seq1 != v[i - 1].seq1 + 1) {
			snprintf(why, len, "GETs %" PRIu64 " and %" PRIu64 " with none between",
				 v[i - 1].seq1 - 1, v[i].seq1 - 1);
			return -EBADMSG;
		}
	}
	return (int)n;
}

int rrec_plan(const struct rrec *r, uint64_t rd, uint64_t wr, struct rrec_plan *p, char *why,
	      size_t len)
{
	struct rrec_get v[RREC_RING];
	int k = gets_of(r, v, why, len);

	if (k < 0)
		return k;
	size_t n = (size_t)k, s = 0;
	if (rd < r->rd0 || wr < r->wr0 || rd - r->rd0 > RREC_OFF_MAX ||
	    wr - r->wr0 > RREC_OFF_MAX) {
		snprintf(why, len,
			 "the socket's counts (%" PRIu64 " read, %" PRIu64 " written) "
			 "are not past the record's",
			 rd, wr);
		return -EBADMSG;
	}
	uint64_t R = rd - r->rd0, W = wr - r->wr0;
	uint64_t top = n ? v[n - 1].seq1 : 0;
	/* The replies read whole: each where the one before ended. */
	while (s < n && v[s].rnr && v[s].rd + reply_bytes(&v[s]) <= R) {
		if (s && v[s].rd != v[s - 1].rd + reply_bytes(&v[s - 1]))
			break;
		s++;
	}
	/* Where the next reply starts: after the last one read whole. */
	uint64_t at = s ? v[s - 1].rd + reply_bytes(&v[s - 1]) : 0;
	*p = (struct rrec_plan){ .rd = R };
	if (s < n && v[s].rnr && v[s].rd != at && s) {
		snprintf(why, len, "reply %" PRIu64 " journaled at %" PRIu64 ", not at %" PRIu64,
			 v[s].seq1 - 1, v[s].rd, at);
		return -EBADMSG;
	}
	if (s < n && v[s].rnr)
		at = v[s].rd;
	size_t first = s;
	if (R >= at && s < n && v[s].rnr && R > at) {
		/* Half read: its rest is dropped, its pages asked again. */
		p->skip = v[s].rd + reply_bytes(&v[s]) - R;
		first = s + 1;
	} else if (R != at) {
		snprintf(why, len, "%" PRIu64 " bytes read, the record says %" PRIu64, R, at);
		return -EBADMSG;
	}
	for (size_t i = s + 1; i < n; i++) {
		if (v[i].rnr) {
			snprintf(why, len, "reply %" PRIu64 " journaled before the one ahead of it",
				 v[i].seq1 - 1);
			return -EBADMSG;
		}
	}
	p->seq = first < n ? v[first].seq1 - 1 : top;
	if (r->ending && W > top * PIN_PS_IOV_BYTES) {
		snprintf(why, len, "its end (PS_IOV_CLOSE) was under way");
		return -EBADMSG;
	}
	if (W < p->seq * PIN_PS_IOV_BYTES || W > top * PIN_PS_IOV_BYTES) {
		snprintf(why, len,
			 "%" PRIu64 " bytes written, GETs %" PRIu64 " to %" PRIu64 " journaled", W,
			 p->seq, top);
		return -EBADMSG;
	}
	/* More than the daemon sends at once: not its record. */
	if (n - first > PIN_PS_GETS_IN_FLIGHT) {
		snprintf(why, len, "%zu GETs in flight", n - first);
		return -EBADMSG;
	}
	/* A source never has two GETs of one page in flight (ask() asks what
	 * no GET holds): a reply to one would be taken for the other's, whose
	 * buffer holds nothing. */
	for (size_t i = first; i < n; i++) {
		for (size_t j = first; j < i; j++) {
			if (v[i].src == v[j].src && v[i].addr < get_end(&v[j]) &&
			    v[j].addr < get_end(&v[i])) {
				snprintf(why, len,
					 "GETs %" PRIu64 " and %" PRIu64 " of one source over the "
					 "same pages",
					 v[j].seq1 - 1, v[i].seq1 - 1);
				return -EBADMSG;
			}
		}
	}
	p->out = W - p->seq * PIN_PS_IOV_BYTES;
	p->n = n - first;
	for (size_t i = 0; i < p->n; i++) {
		const struct rrec_get *g = &v[first + i];
		p->v[i] = (struct rrec_planned){ g->src, g->task, g->addr, g->nr };
	}
	p->ending = r->ending;
	return 0;
}
