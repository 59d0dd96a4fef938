// SPDX-License-Identifier: MIT
/*
 * Suite unit, area state: uffdd/state.c, the durable record of a session, on
 * real memfds.  What a commit makes durable and what it does not, the reply's
 * double buffer, bitmaps changed in place, the arena's reuse after a commit,
 * a table grown past its first block, the working set, and memfds corrupted
 * field by field (each refused with -EBADMSG and the line naming it).  A
 * successor daemon is played by state_open() on a dup of the memfd.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Before Check's header, whose fail() macro would rename uffdd.h's fail(). */
#include <linux/userfaultfd.h>

#include "uffdd.h"
#include "test-common.h"

/* The memfd's size: the fixed parts (some 16.5 MiB, sparse) and an arena. */
#define MAX_BYTES (32ull << 20)
#define PAGE	  ((uint64_t)uffdd_page)

/*
 * The file format of state.c, version 1, as a successor reads it: the tests
 * that corrupt a field find it here.  Changing the format means changing
 * this and the version.
 */
struct fmt_slot {
	uint64_t txn, seq;
	uint32_t reply_area, reply_len;
	uint64_t table_off, table_cap;
	struct state_meta meta;
};

struct fmt_hdr {
	char magic[8];
	uint32_t version;
	uint8_t cur, pad[3];
	uint64_t max_bytes;
	struct state_ident ident;
	uint64_t wset_n;
	struct fmt_slot slot[2];
	uint64_t making[2];
	uint32_t events_applied, pad2;
	struct uffd_msg events[STATE_EVENTS_MAX];
};

struct fmt_entry {
	struct state_rec rec;
	uint64_t born, died;
};

#define FMT_WSET_OFF  (4096 + 2 * (uint64_t)PIN_PROTO_MAX_MSG)
#define FMT_ARENA_OFF (FMT_WSET_OFF + (uint64_t)UFFDD_WSET_MAX * 16)

static const struct state_ident ident = {
	.id = 7, .parent = 3, .uid = 1000, .token = { 0x1122334455667788ull, 42 }
};

static struct state *new_state(void)
{
	struct state *st = NULL;

	ck_assert_int_eq(state_new(&ident, MAX_BYTES, &st), 0);
	ck_assert_ptr_nonnull(st);
	return st;
}

/* A successor's view: state_open() on a dup of st's memfd. */
static struct state *reopen(struct state *st)
{
	struct state *again = NULL;
	char why[256] = "";
	int fd = fcntl(state_fd(st), F_DUPFD_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	int r = state_open(fd, MAX_BYTES, &again, why, sizeof(why));

	ck_assert_msg(r == 0, "state_open: %d (%s)", r, why);
	return again;
}

/* A region of npages at start with its populated bitmap. */
/* The last reply st holds is seq's, its bytes want's; returns where they are. */
static const void *last_is(struct state *st, uint64_t seq, const char *want)
{
	const void *p;
	size_t len;

	ck_assert_uint_eq(state_last(st, &p, &len), seq);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert_mem_eq(p, want, len);
	return p;
}

static struct state_rec region(struct state *st, uint64_t start, uint64_t npages)
{
	uint64_t *bm = state_bm_new(st, npages);

	ck_assert_ptr_nonnull(bm);
	return (struct state_rec){ .kind = STATE_REGION,
				   .mode = PIN_UFFD_REGISTER_MISSING,
				   .flags = STATE_R_PUSH,
				   .start = start,
				   .len = npages * PAGE,
				   .offset = 0x10000,
				   .src = 5,
				   .populated = state_bm_off(st, bm) };
}

static uint32_t add(struct state *st, const struct state_rec *rec)
{
	uint32_t slot = UINT32_MAX;

	ck_assert_int_eq(state_add(st, rec, &slot), 0);
	return slot;
}

/* What state_foreach() visits: up to 16 records, in order. */
struct seen {
	struct state_rec rec[16];
	uint32_t slot[16];
	size_t n;
};

static int collect(const struct state_rec *rec, uint32_t slot, void *data)
{
	struct seen *s = data;

	if (s->n < 16) {
		s->rec[s->n] = *rec;
		s->slot[s->n] = slot;
	}
	s->n++;
	return 0;
}

static struct seen seen_of(struct state *st)
{
	struct seen s = { .n = 0 };

	ck_assert_int_eq(state_foreach(st, collect, &s), 0);
	return s;
}

START_TEST(new_state_is_empty)
{
	struct state *st = new_state();
	const void *reply = (void *)1;
	size_t len = 7, n = 7;

	ck_assert_uint_eq(state_ident(st)->id, 7);
	ck_assert_uint_eq(state_ident(st)->token[0], 0x1122334455667788ull);
	ck_assert_uint_eq(state_last(st, &reply, &len), 0);
	ck_assert_ptr_null(reply);
	ck_assert_uint_eq(len, 0);
	state_wset(st, &n);
	ck_assert_uint_eq(n, 0);
	ck_assert_uint_eq(seen_of(st).n, 0);
	/* The first table block: 64 records of 88 bytes. */
	ck_assert_uint_eq(state_bytes(st), 64 * sizeof(struct fmt_entry));

	struct state *again = reopen(st);

	ck_assert_mem_eq(state_ident(again), &ident, sizeof(ident));
	ck_assert_uint_eq(state_bytes(again), state_bytes(st));
	ck_assert_uint_eq(seen_of(again).n, 0);
	state_free(again);
	state_free(st);
	state_free(NULL);
	/* Too small for the fixed parts. */
	ck_assert_int_eq(state_new(&ident, 1 << 20, &st), -EINVAL);
}
END_TEST

START_TEST(commit_atomicity)
{
	struct state *st = new_state(), *again;
	struct state_rec a = region(st, 0x10000000, 4);
	struct state_meta m = { .pid = 1234, .flags = STATE_HELLO, .features = 9, .name = "app" };
	uint32_t sa = add(st, &a);
	struct seen s;

	ck_assert_uint_eq(sa, 0);
	/* Not committed: a successor sees nothing, nor the metadata. */
	state_set_meta(st, &m);
	ck_assert_int_eq(state_meta(st)->pid, 0);
	again = reopen(st);
	ck_assert_uint_eq(seen_of(again).n, 0);
	ck_assert_int_eq(state_meta(again)->pid, 0);
	state_free(again);

	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	ck_assert_int_eq(state_meta(st)->pid, 1234);
	struct state_rec b = region(st, 0x20000000, 8);
	uint32_t sb = add(st, &b);

	ck_assert_uint_eq(sb, 1);
	state_del(st, sa);
	/* The owner too sees the committed records only. */
	s = seen_of(st);
	ck_assert_uint_eq(s.n, 1);
	ck_assert_mem_eq(&s.rec[0], &a, sizeof(a));
	again = reopen(st);
	s = seen_of(again);
	ck_assert_uint_eq(s.n, 1);
	ck_assert_uint_eq(s.slot[0], 0);
	ck_assert_mem_eq(&s.rec[0], &a, sizeof(a));
	ck_assert_int_eq(state_meta(again)->pid, 1234);
	ck_assert_uint_eq(state_meta(again)->flags, STATE_HELLO);
	ck_assert_uint_eq(state_meta(again)->features, 9);
	ck_assert_str_eq(state_meta(again)->name, "app");
	state_free(again);

	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	again = reopen(st);
	s = seen_of(again);
	ck_assert_uint_eq(s.n, 1);
	ck_assert_uint_eq(s.slot[0], 1);
	ck_assert_mem_eq(&s.rec[0], &b, sizeof(b));
	state_free(again);
	state_free(st);
}
END_TEST

/* A daemon killed before its commit: what it began is gone, and stays gone
 * after the successor's own commits. */
START_TEST(uncommitted_txn_discarded)
{
	struct state *st = new_state(), *again;
	struct state_rec a = region(st, 0x10000000, 4), b;
	uint32_t sa = add(st, &a);
	struct seen s;

	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	b = region(st, 0x20000000, 8);
	add(st, &b);
	state_del(st, sa);
	again = reopen(st);
	state_free(st); /* killed: never committed */

	ck_assert_int_eq(state_commit(again, 0, NULL, 0), 0);
	s = seen_of(again);
	ck_assert_uint_eq(s.n, 1);
	ck_assert_mem_eq(&s.rec[0], &a, sizeof(a));
	st = reopen(again);
	s = seen_of(st);
	ck_assert_uint_eq(s.n, 1);
	ck_assert_mem_eq(&s.rec[0], &a, sizeof(a));
	state_free(st);
	state_free(again);
}
END_TEST

static int stop_at_second(const struct state_rec *rec, uint32_t slot, void *data)
{
	return ++*(int *)data == 2 ? -ENOTRECOVERABLE : 0;
}

/* A table grown by a txn never committed: the successor keeps the committed
 * table, reuses the slots, and counts only what the commit named. */
START_TEST(uncommitted_growth_discarded)
{
	struct state *st = new_state(), *again;
	struct state_rec a = region(st, 0x10000000, 4);
	uint64_t committed;
	int calls = 0;

	ck_assert_uint_eq(add(st, &a), 0);
	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	committed = state_bytes(st);
	for (uint32_t i = 1; i < 200; i++) {
		struct state_rec r = region(st, 0x20000000 + i * 2 * PAGE, 1);

		ck_assert_uint_eq(add(st, &r), i);
	}
	state_del(st, 0);
	state_del(st, 0);
	state_del(st, 7777);
	again = reopen(st);
	state_free(st);
	ck_assert_uint_eq(state_bytes(again), committed);
	ck_assert_uint_eq(seen_of(again).n, 1);
	struct state_rec b = region(again, 0x30000000, 2);

	ck_assert_uint_eq(add(again, &b), 1);
	ck_assert_int_eq(state_commit(again, 0, NULL, 0), 0);
	ck_assert_uint_eq(seen_of(again).n, 2);
	ck_assert_int_eq(state_foreach(again, stop_at_second, &calls), -ENOTRECOVERABLE);
	ck_assert_int_eq(calls, 2);
	st = reopen(again);
	ck_assert_uint_eq(state_bytes(st), state_bytes(again));
	ck_assert_uint_eq(seen_of(st).n, 2);
	state_free(st);
	state_free(again);
}
END_TEST

START_TEST(reply_double_buffer)
{
	struct state *st = new_state(), *again;
	const void *p1, *p2, *p;
	size_t len;

	ck_assert_int_eq(state_commit(st, 1, "one", 3), 0);
	p1 = last_is(st, 1, "one");
	ck_assert_int_eq(state_commit(st, 2, "second", 6), 0);
	p2 = last_is(st, 2, "second");
	/* The next reply went to the other area: the committed one was never
	 * written over, so a commit cut short leaves it whole. */
	ck_assert_ptr_ne(p1, p2);
	ck_assert_mem_eq(p1, "one", 3);
	/* A commit of records only keeps the last reply. */
	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	ck_assert_uint_eq(state_last(st, &p, &len), 2);
	ck_assert_ptr_eq(p, p2);
	ck_assert_uint_eq(len, 6);
	ck_assert_int_eq(state_commit(st, 3, NULL, 0), 0);
	ck_assert_uint_eq(state_last(st, &p, &len), 3);
	ck_assert_uint_eq(len, 0);
	ck_assert_int_eq(state_commit(st, 4, "x", PIN_PROTO_MAX_MSG + 1), -EINVAL);
	ck_assert_uint_eq(state_last(st, &p, &len), 3);

	again = reopen(st);
	ck_assert_int_eq(state_commit(st, 4, "four", 4), 0);
	state_free(again);
	again = reopen(st);
	last_is(again, 4, "four");
	state_free(again);
	state_free(st);
}
END_TEST

START_TEST(bitmap_bits_in_place)
{
	struct state *st = new_state(), *again;
	struct state_rec a = region(st, 0x10000000, 130);
	uint64_t *pop = state_bm_at(st, a.populated, 130), *dirty = state_bm_new(st, 130);
	struct seen s;

	ck_assert_ptr_nonnull(pop);
	ck_assert_ptr_nonnull(dirty);
	a.mode |= PIN_UFFD_REGISTER_WP;
	a.dirty = state_bm_off(st, dirty);
	add(st, &a);
	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	/* Set after the commit: durable at once, no commit needed. */
	bm_set(pop, 0);
	bm_set(pop, 64);
	bm_set(pop, 129);
	bm_assign(dirty, 3, 70, true);
	bm_clear(dirty, 40);

	again = reopen(st);
	s = seen_of(again);
	ck_assert_uint_eq(s.n, 1);
	uint64_t *p2 = state_bm_at(again, s.rec[0].populated, 130);
	uint64_t *d2 = state_bm_at(again, s.rec[0].dirty, 130);

	ck_assert_ptr_nonnull(p2);
	ck_assert_ptr_nonnull(d2);
	ck_assert_uint_eq(p2[0], 1);
	ck_assert_uint_eq(p2[1], 1);
	ck_assert_uint_eq(p2[2], 2);
	ck_assert_uint_eq(bm_count(d2, 0, 130), 69);
	ck_assert(!bm_test(d2, 40) && bm_test(d2, 3) && bm_test(d2, 72) && !bm_test(d2, 73));
	/* Only a live record's bitmap, of its own size. */
	ck_assert_ptr_null(state_bm_at(again, s.rec[0].populated, 129));
	ck_assert_ptr_null(state_bm_at(again, s.rec[0].populated + 8, 130));
	ck_assert_ptr_null(state_bm_at(again, 0, 130));
	ck_assert_ptr_null(state_bm_at(again, 1ull << 62, 130));
	ck_assert_uint_eq(state_bytes(again), state_bytes(st));
	state_free(again);
	state_free(st);
}
END_TEST

START_TEST(allocator_reuse_after_commit)
{
	struct state *st = new_state();
	const uint64_t table = 64 * sizeof(struct fmt_entry), bm = 128; /* 1000 bits */
	uint64_t *a = state_bm_new(st, 1000), *b, *c;

	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq(state_bytes(st), table + bm);
	a[15] = ~0ull;
	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	state_bm_free(st, a, 1000);
	ck_assert_ptr_null(state_bm_at(st, state_bm_off(st, a), 1000));
	/* Freed in the open txn: its room is not given out before the commit. */
	b = state_bm_new(st, 1000);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_ne(a, b);
	ck_assert_uint_eq(state_bytes(st), table + 2 * bm);
	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	ck_assert_uint_eq(state_bytes(st), table + bm);
	c = state_bm_new(st, 1000);
	ck_assert_ptr_eq(c, a);
	/* Zeroed for its new owner. */
	ck_assert_uint_eq(bm_count(c, 0, 1000), 0);
	ck_assert_uint_eq(state_bytes(st), table + 2 * bm);
	/* max_bytes bounds the arena: EFBIG past its room, which is what the
	 * header, replies, working set and what is in use leave. */
	ck_assert_uint_eq(state_room(st), MAX_BYTES - FMT_ARENA_OFF - (table + 2 * bm));
	ck_assert_ptr_null(state_bm_new(st, (state_room(st) + 1) * 8));
	ck_assert_int_eq(errno, EFBIG);
	ck_assert_ptr_null(state_bm_new(st, MAX_BYTES * 8));
	ck_assert_int_eq(errno, EFBIG);
	ck_assert_ptr_null(state_bm_new(st, UINT64_MAX));
	ck_assert_int_eq(errno, EFBIG);
	ck_assert_ptr_null(state_bm_new(st, 0));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_uint_eq(state_bytes(st), table + 2 * bm);
	/* What room there is, taken whole. */
	ck_assert_ptr_nonnull(state_bm_new(st, state_room(st) * 8));
	ck_assert_uint_eq(state_room(st), 0);
	state_free(st);
}
END_TEST

/* Allocated blocks of the memfd, in bytes. */
static uint64_t file_bytes(struct state *st)
{
	struct stat sb;

	ck_assert_int_eq(fstat(state_fd(st), &sb), 0);
	return (uint64_t)sb.st_blocks * 512;
}

START_TEST(large_bitmap_sparse_and_zeroed)
{
	struct state *st = new_state();
	const uint64_t nbits = 64 * 8 * PAGE; /* 64 pages of bitmap */
	uint64_t before = file_bytes(st), *a, *b;

	a = state_bm_new(st, nbits);
	ck_assert_ptr_nonnull(a);
	/* Only the partial pages at its two ends were written. */
	ck_assert_uint_le(file_bytes(st) - before, 2 * PAGE);
	bm_assign(a, 0, nbits, true);
	ck_assert_uint_ge(file_bytes(st) - before, 64 * PAGE);
	state_bm_free(st, a, nbits);
	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	b = state_bm_new(st, nbits);
	ck_assert_ptr_eq(b, a);
	/* Punched out again (a read of them would fill shmem's holes). */
	ck_assert_uint_le(file_bytes(st) - before, 2 * PAGE);
	ck_assert_uint_eq(bm_count(b, 0, nbits), 0);
	state_free(st);
}
END_TEST

struct check_many {
	struct state *st;
	uint64_t n;
};

static int check_one(const struct state_rec *rec, uint32_t slot, void *data)
{
	struct check_many *c = data;
	uint64_t *bm = state_bm_at(c->st, rec->populated, 1);

	if (rec->start != 0x100000000ull + slot * 2 * PAGE || !bm || *bm != slot % 2)
		return -EIO;
	c->n++;
	return 0;
}

START_TEST(table_grows_past_first_block)
{
	const uint32_t n = 10000;
	struct state *st = new_state(), *again;
	struct check_many c = { 0 };

	for (uint32_t i = 0; i < n; i++) {
		struct state_rec r = region(st, 0x100000000ull + i * 2 * PAGE, 1);

		*state_bm_at(st, r.populated, 1) = i % 2;
		ck_assert_uint_eq(add(st, &r), i);
		if (i == n / 2)
			ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	}
	ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
	/* 16384 slots of 88 bytes, 10000 bitmaps of one unit each. */
	ck_assert_uint_eq(state_bytes(st), 16384 * sizeof(struct fmt_entry) + n * 64);
	again = reopen(st);
	c.st = again;
	ck_assert_int_eq(state_foreach(again, check_one, &c), 0);
	ck_assert_uint_eq(c.n, n);
	ck_assert_uint_eq(state_bytes(again), state_bytes(st));
	state_free(again);
	state_free(st);
}
END_TEST

START_TEST(wset_merge_and_cap)
{
	struct state *st = new_state(), *again;
	const struct state_range *w;
	size_t n;

	ck_assert_int_eq(state_wset_add(st, 0x1000, 0x2000), 0);
	ck_assert_int_eq(state_wset_add(st, 0x2000, 0x4000), 0);
	ck_assert_int_eq(state_wset_add(st, 0x8000, 0x9000), 0);
	ck_assert_int_eq(state_wset_add(st, 0x9000, 0x9000), -EINVAL);
	w = state_wset(st, &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(w[0].addr, 0x1000);
	ck_assert_uint_eq(w[0].end, 0x4000);
	ck_assert_uint_eq(w[1].addr, 0x8000);
	ck_assert_uint_eq(w[1].end, 0x9000);
	/* Durable without a commit. */
	again = reopen(st);
	w = state_wset(again, &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(w[0].end, 0x4000);
	state_free(again);

	for (uint64_t i = 2; i < UFFDD_WSET_MAX; i++)
		ck_assert_int_eq(state_wset_add(st, i * 0x10000, i * 0x10000 + 0x1000), 0);
	ck_assert_int_eq(state_wset_add(st, 1ull << 40, (1ull << 40) + 0x1000), -ENOSPC);
	/* The last run still grows. */
	uint64_t last = (UFFDD_WSET_MAX - 1) * 0x10000ull;

	ck_assert_int_eq(state_wset_add(st, last + 0x1000, last + 0x3000), 0);
	again = reopen(st);
	w = state_wset(again, &n);
	ck_assert_uint_eq(n, UFFDD_WSET_MAX);
	ck_assert_uint_eq(w[n - 1].addr, last);
	ck_assert_uint_eq(w[n - 1].end, last + 0x3000);
	state_free(again);
	state_free(st);
}
END_TEST

/* The fork children being made: durable without a commit, none at first,
 * exactly the ids set, none once cleared. */
START_TEST(making_in_place)
{
	struct state *st = new_state(), *again;

	ck_assert(!state_making(st, 0));
	ck_assert(!state_making(st, ident.id + 1));
	state_making_set(st, 12, 14);
	again = reopen(st);
	ck_assert(!state_making(again, 11));
	ck_assert(state_making(again, 12));
	ck_assert(state_making(again, 13));
	ck_assert(!state_making(again, 14));
	state_free(again);
	state_making_set(st, 0, 0);
	again = reopen(st);
	ck_assert(!state_making(again, 0));
	ck_assert(!state_making(again, 12));
	state_free(again);
	state_free(st);
}
END_TEST

static struct uffd_msg msg_range(uint8_t event, uint64_t a, uint64_t b, uint64_t c)
{
	struct uffd_msg m = { .event = event };

	if (event == UFFD_EVENT_REMAP) {
		m.arg.remap.from = a;
		m.arg.remap.to = c;
		m.arg.remap.len = b - a;
	} else if (event == UFFD_EVENT_PAGEFAULT) {
		m.arg.pagefault.address = a;
	} else {
		m.arg.remove.start = a;
		m.arg.remove.end = b;
	}
	return m;
}

/* A read's messages, as the kernel leaves them in the buffer: durable
 * without a commit, those not applied given back in order (page faults
 * never), with the FORKs before each, and cleared by the next read. */
START_TEST(events_in_place)
{
	struct state *st = new_state(), *again;
	const struct uffd_msg m[5] = {
		msg_range(UFFD_EVENT_PAGEFAULT, 0x5000, 0, 0),
		msg_range(UFFD_EVENT_REMAP, 0x10000, 0x20000, 0x80000),
		{ .event = UFFD_EVENT_FORK },
		msg_range(UFFD_EVENT_PAGEFAULT, 0x6000, 0, 0),
		msg_range(UFFD_EVENT_UNMAP, 0x80000, 0x81000, 0),
	};
	const struct pin_uffd_event *e;
	uint32_t at = 0, forks = 7;

	again = reopen(st);
	ck_assert_ptr_null(state_event_pending(again, &at, &forks));
	state_free(again);
	memcpy(state_events_buf(st), m, sizeof(m));
	state_events_applied(st, 2);
	again = reopen(st);
	e = state_event_pending(again, &at, &forks);
	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(e->type, PIN_UFFD_EVENT_FORK);
	ck_assert_uint_eq(at, 2);
	ck_assert_uint_eq(forks, 0);
	state_events_applied(again, ++at);
	e = state_event_pending(again, &at, &forks);
	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(e->type, PIN_UFFD_EVENT_UNMAP);
	ck_assert_uint_eq(e->arg.unmap.start, 0x80000);
	ck_assert_uint_eq(e->arg.unmap.end, 0x81000);
	ck_assert_uint_eq(at, 4);
	ck_assert_uint_eq(forks, 1);
	state_events_applied(again, ++at);
	ck_assert_ptr_null(state_event_pending(again, &at, &forks));
	state_free(again);
	/* The REMAP from the start, once nothing is marked applied. */
	state_events_applied(st, 0);
	again = reopen(st);
	at = 0;
	e = state_event_pending(again, &at, &forks);
	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(e->type, PIN_UFFD_EVENT_REMAP);
	ck_assert_uint_eq(e->arg.remap.from, 0x10000);
	ck_assert_uint_eq(e->arg.remap.to, 0x80000);
	ck_assert_uint_eq(e->arg.remap.len, 0x10000);
	ck_assert_uint_eq(at, 1);
	state_free(again);
	/* The next read's buffer: the last one's messages gone, none pending. */
	uint8_t *buf = state_events_buf(st);
	for (size_t i = 0; i < sizeof(m); i++)
		ck_assert_uint_eq(buf[i], 0);
	again = reopen(st);
	at = 0;
	ck_assert_ptr_null(state_event_pending(again, &at, &forks));
	state_free(again);
	state_free(st);
}
END_TEST

/* ---- hostile memfds ---- */

/* A committed state: regions at slots 0 and 1 (WP, with zero and dirty
 * bitmaps on the first), a pin at slot 2, a working set of one run.  Its
 * memfd, the state gone, and where its table is. */
static int hostile_base(uint64_t *ret_table)
{
	struct state *st = new_state();
	struct state_rec a = region(st, 0x10000000, 4), b = region(st, 0x20000000, 100);
	struct state_rec pin = { .kind = STATE_PIN, .start = 0x20000000, .len = PAGE, .offset = 9 };
	struct state_meta m = { .pid = 1, .name = "x" };
	struct fmt_hdr h;
	int fd;

	a.mode |= PIN_UFFD_REGISTER_WP;
	a.zero = state_bm_off(st, state_bm_new(st, 4));
	a.dirty = state_bm_off(st, state_bm_new(st, 4));
	add(st, &a);
	add(st, &b);
	add(st, &pin);
	state_set_meta(st, &m);
	ck_assert_int_eq(state_wset_add(st, 0x10000000, 0x10001000), 0);
	ck_assert_int_eq(state_commit(st, 5, "reply", 5), 0);
	fd = fcntl(state_fd(st), F_DUPFD_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	state_free(st);
	ck_assert_int_eq(pread(fd, &h, sizeof(h), 0), sizeof(h));
	*ret_table = h.slot[h.cur].table_off;
	return fd;
}

static void poke(int fd, uint64_t off, const void *p, size_t n)
{
	ck_assert_int_eq(pwrite(fd, p, n, (off_t)off), (ssize_t)n);
}

static void poke64(int fd, uint64_t off, uint64_t v)
{
	poke(fd, off, &v, sizeof(v));
}

/* Where field f of the committed slot, or of record i, is. */
#define SLOT_AT(fd, f)	    (slot_off(fd) + offsetof(struct fmt_slot, f))
#define REC_AT(tab, i, f)   ((tab) + (i) * sizeof(struct fmt_entry) + offsetof(struct state_rec, f))
#define ENTRY_AT(tab, i, f) ((tab) + (i) * sizeof(struct fmt_entry) + offsetof(struct fmt_entry, f))

static uint64_t slot_off(int fd)
{
	uint8_t cur;

	ck_assert_int_eq(pread(fd, &cur, 1, offsetof(struct fmt_hdr, cur)), 1);
	return offsetof(struct fmt_hdr, slot) + cur % 2 * sizeof(struct fmt_slot);
}

/* state_open() refuses fd with exactly why, and closes it. */
static void refused(int fd, uint64_t max_bytes, const char *want)
{
	struct state *st = (struct state *)0x1;
	char why[256] = "";

	int r = state_open(fd, max_bytes, &st, why, sizeof(why));

	ck_assert_msg(r == -EBADMSG, "state_open: %d, not -EBADMSG (want \"%s\")", r, want);
	ck_assert_str_eq(why, want);
	ck_assert_ptr_eq(st, (struct state *)0x1);
	ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
	ck_assert_int_eq(errno, EBADF);
}

START_TEST(hostile_file)
{
	uint64_t tab;
	char want[256];
	int fd, p[2];
	struct stat sb;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	ck_assert_int_eq(fstat(p[0], &sb), 0);
	snprintf(want, sizeof(want), "not a regular file (mode %#o)", (unsigned int)sb.st_mode);
	refused(p[0], MAX_BYTES, want);
	close(p[1]);

	fd = hostile_base(&tab);
	refused(fd, MAX_BYTES - 64,
		"size 33554432 (want a multiple of 64 in [17305664, 33554368])");
	fd = hostile_base(&tab);
	ck_assert_int_eq(ftruncate(fd, MAX_BYTES - 32), 0);
	refused(fd, MAX_BYTES, "size 33554400 (want a multiple of 64 in [17305664, 33554432])");
	fd = hostile_base(&tab);
	ck_assert_int_eq(ftruncate(fd, 4096), 0);
	refused(fd, MAX_BYTES, "size 4096 (want a multiple of 64 in [17305664, 33554432])");
	fd = hostile_base(&tab);
	ck_assert_int_eq(ftruncate(fd, MAX_BYTES - 64), 0);
	refused(fd, MAX_BYTES, "max_bytes 33554432 is not the file's size 33554368");
}
END_TEST

START_TEST(hostile_header)
{
	uint64_t tab;
	int fd;

	fd = hostile_base(&tab);
	poke(fd, 0, "UFFDDST2", 8);
	refused(fd, MAX_BYTES, "magic 5546464444535432 (want UFFDDST1)");
	fd = hostile_base(&tab);
	poke(fd, offsetof(struct fmt_hdr, version), &(uint32_t){ 2 }, 4);
	refused(fd, MAX_BYTES, "version 2 (want 1)");
	fd = hostile_base(&tab);
	poke64(fd, offsetof(struct fmt_hdr, max_bytes), 1ull << 40);
	refused(fd, MAX_BYTES, "max_bytes 1099511627776 is not the file's size 33554432");
	fd = hostile_base(&tab);
	poke(fd, offsetof(struct fmt_hdr, cur), &(uint8_t){ 2 }, 1);
	refused(fd, MAX_BYTES, "cur 2 (want 0 or 1)");
	fd = hostile_base(&tab);
	poke64(fd, SLOT_AT(fd, txn), UINT64_MAX);
	refused(fd, MAX_BYTES, "txn 18446744073709551615 (the last is 18446744073709551614)");
	fd = hostile_base(&tab);
	poke(fd, SLOT_AT(fd, reply_area), &(uint32_t){ 2 }, 4);
	refused(fd, MAX_BYTES, "reply_area 2 (want 0 or 1)");
	fd = hostile_base(&tab);
	poke(fd, SLOT_AT(fd, reply_len), &(uint32_t){ PIN_PROTO_MAX_MSG + 1 }, 4);
	refused(fd, MAX_BYTES, "reply_len 262145 (at most 262144)");
	fd = hostile_base(&tab);
	poke(fd, SLOT_AT(fd, meta.name),
	     "0123456789012345678901234567890123456789012345678901234567890123", STATE_NAME_MAX);
	refused(fd, MAX_BYTES, "meta.name is not terminated");
	fd = hostile_base(&tab);
	poke(fd, SLOT_AT(fd, meta.flags), &(uint32_t){ 0x100 }, 4);
	refused(fd, MAX_BYTES, "meta.flags 0x100");
	fd = hostile_base(&tab);
	poke64(fd, SLOT_AT(fd, table_off), MAX_BYTES - 64);
	refused(fd, MAX_BYTES,
		"table at 0x1ffffc0 of 64 records is outside the arena [0x1081000, 0x2000000)");
	fd = hostile_base(&tab);
	poke64(fd, SLOT_AT(fd, table_off), 4096);
	refused(fd, MAX_BYTES,
		"table at 0x1000 of 64 records is outside the arena [0x1081000, 0x2000000)");
	fd = hostile_base(&tab);
	poke64(fd, SLOT_AT(fd, table_off), tab + 8);
	refused(fd, MAX_BYTES,
		"table at 0x1081008 of 64 records is outside the arena [0x1081000, 0x2000000)");
	fd = hostile_base(&tab);
	poke64(fd, SLOT_AT(fd, table_cap), 0);
	refused(fd, MAX_BYTES,
		"table at 0x1081000 of 0 records is outside the arena [0x1081000, 0x2000000)");
	fd = hostile_base(&tab);
	poke64(fd, SLOT_AT(fd, table_cap), 1ull << 61);
	refused(fd, MAX_BYTES,
		"table at 0x1081000 of 2305843009213693952 records is outside the arena "
		"[0x1081000, 0x2000000)");
	fd = hostile_base(&tab);
	poke64(fd, offsetof(struct fmt_hdr, wset_n), UFFDD_WSET_MAX + 1);
	refused(fd, MAX_BYTES, "wset_n 1048577 (at most 1048576)");
	fd = hostile_base(&tab);
	poke64(fd, offsetof(struct fmt_hdr, wset_n), 2);
	refused(fd, MAX_BYTES, "wset run 1: [0, 0) is empty");
	fd = hostile_base(&tab);
	poke64(fd, FMT_WSET_OFF + 8, 0x10000000);
	refused(fd, MAX_BYTES, "wset run 0: [0x10000000, 0x10000000) is empty");
	fd = hostile_base(&tab);
	poke(fd, offsetof(struct fmt_hdr, events_applied), &(uint32_t){ STATE_EVENTS_MAX + 1 }, 4);
	refused(fd, MAX_BYTES, "events_applied 65 (at most 64)");
	fd = hostile_base(&tab);
	poke(fd, offsetof(struct fmt_hdr, events[0]), &(uint8_t){ 0x99 }, 1);
	refused(fd, MAX_BYTES, "event 0: no such message (0x99)");
	const struct {
		struct uffd_msg m;
		const char *want;
	} bad[] = {
		{ msg_range(UFFD_EVENT_UNMAP, 0x2000, 0x1000, 0),
		  "event 1: [0x2000, 0x1000) to 0 is not a range of pages" },
		{ msg_range(UFFD_EVENT_REMOVE, 0x1001, 0x2000, 0),
		  "event 1: [0x1001, 0x2000) to 0 is not a range of pages" },
		{ msg_range(UFFD_EVENT_REMAP, 0x1000, 0x3000, 0x10),
		  "event 1: [0x1000, 0x3000) to 0x10 is not a range of pages" },
		{ msg_range(UFFD_EVENT_REMAP, 0x1000, 0x3000, -0x1000ull),
		  "event 1: [0x1000, 0x3000) to 0xfffffffffffff000 is not a range of pages" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* Event 0 applied: only the others are checked as ranges. */
		struct uffd_msg two[2] = { msg_range(UFFD_EVENT_UNMAP, 0x2000, 0x1000, 0),
					   bad[i].m };
		fd = hostile_base(&tab);
		poke(fd, offsetof(struct fmt_hdr, events), two, sizeof(two));
		poke(fd, offsetof(struct fmt_hdr, events_applied), &(uint32_t){ 1 }, 4);
		refused(fd, MAX_BYTES, bad[i].want);
	}
}
END_TEST

/* A record at the last txn (forged: no daemon commits 2^64 times) is read,
 * and a commit there changes nothing a successor reads. */
START_TEST(last_txn_commit_refused)
{
	struct state *st = NULL, *again;
	char why[256] = "";
	uint64_t tab;
	int fd = hostile_base(&tab);

	poke64(fd, SLOT_AT(fd, txn), UINT64_MAX - 1);
	ck_assert_msg(state_open(fd, MAX_BYTES, &st, why, sizeof(why)) == 0, "state_open: %s", why);
	ck_assert_uint_eq(seen_of(st).n, 3);
	struct state_rec c = region(st, 0x30000000, 2);
	add(st, &c);
	ck_assert_int_eq(state_commit(st, 6, "later", 5), -EOVERFLOW);
	again = reopen(st);
	ck_assert_uint_eq(seen_of(again).n, 3);
	last_is(again, 5, "reply");
	state_free(again);
	state_free(st);
}
END_TEST

START_TEST(hostile_records)
{
	uint64_t tab;
	char want[256];
	int fd;

	ck_assert_uint_eq(FMT_ARENA_OFF, 0x1081000);
	fd = hostile_base(&tab);
	ck_assert_uint_eq(tab, FMT_ARENA_OFF);
	poke(fd, REC_AT(tab, 1, kind), &(uint32_t){ 3 }, 4);
	refused(fd, MAX_BYTES, "record 1: kind 3");
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 1, start), 0x20000001);
	refused(fd, MAX_BYTES, "record 1: range [0x20000001, +0x64000)");
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 2, len), 0);
	refused(fd, MAX_BYTES, "record 2: range [0x20000000, +0)");
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 1, start), (1ull << 57) - PAGE);
	snprintf(want, sizeof(want), "record 1: range [%#llx, +0x64000)",
		 (unsigned long long)((1ull << 57) - PAGE));
	refused(fd, MAX_BYTES, want);
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 0, len), -PAGE);
	snprintf(want, sizeof(want), "record 0: range [0x10000000, +%#llx)",
		 (unsigned long long)-PAGE);
	refused(fd, MAX_BYTES, want);
	fd = hostile_base(&tab);
	poke(fd, REC_AT(tab, 1, mode), &(uint32_t){ 0 }, 4);
	refused(fd, MAX_BYTES, "record 1: mode 0");
	fd = hostile_base(&tab);
	poke(fd, REC_AT(tab, 1, mode), &(uint32_t){ 9 }, 4);
	refused(fd, MAX_BYTES, "record 1: mode 0x9");
	/* MINOR only with MISSING (a shared snapshot's region), from a file. */
	fd = hostile_base(&tab);
	poke(fd, REC_AT(tab, 1, mode), &(uint32_t){ PIN_UFFD_REGISTER_MINOR }, 4);
	refused(fd, MAX_BYTES, "record 1: mode 0x4");
	fd = hostile_base(&tab);
	poke(fd, REC_AT(tab, 1, mode),
	     &(uint32_t){ PIN_UFFD_REGISTER_WP | PIN_UFFD_REGISTER_MINOR }, 4);
	refused(fd, MAX_BYTES, "record 1: mode 0x6");
	fd = hostile_base(&tab);
	poke(fd, REC_AT(tab, 1, mode),
	     &(uint32_t){ PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_MINOR }, 4);
	poke64(fd, REC_AT(tab, 1, src), 0);
	refused(fd, MAX_BYTES, "record 1: mode 0x5");
	fd = hostile_base(&tab);
	poke(fd, REC_AT(tab, 1, flags), &(uint32_t){ 0x100 }, 4);
	refused(fd, MAX_BYTES, "record 1: flags 0x100");
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 1, populated), 0);
	refused(fd, MAX_BYTES, "record 1: no populated bitmap");
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 1, populated), MAX_BYTES);
	refused(fd, MAX_BYTES,
		"record 1: populated bitmap at 0x2000000 of 16 bytes is outside the arena "
		"[0x1081000, 0x2000000)");
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 0, zero), 1ull << 63);
	refused(fd, MAX_BYTES,
		"record 0: zero bitmap at 0x8000000000000000 of 8 bytes is outside the arena "
		"[0x1081000, 0x2000000)");
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 0, dirty), FMT_ARENA_OFF + 0x2008);
	refused(fd, MAX_BYTES,
		"record 0: dirty bitmap at 0x1083008 of 8 bytes is outside the arena "
		"[0x1081000, 0x2000000)");
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 2, populated), FMT_ARENA_OFF + 0x4000);
	refused(fd, MAX_BYTES, "record 2: a pin with bitmaps");
	/* Region b moved onto a: overlap. */
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 1, start), 0x10000000 - PAGE);
	snprintf(want, sizeof(want), "regions [%#llx, +0x64000) and [0x10000000, +%#llx) overlap",
		 (unsigned long long)(0x10000000 - PAGE), (unsigned long long)(4 * PAGE));
	refused(fd, MAX_BYTES, want);
	/* One bitmap named by two records. */
	uint64_t pop0;

	fd = hostile_base(&tab);
	ck_assert_int_eq(pread(fd, &pop0, 8, (off_t)REC_AT(tab, 0, populated)), 8);
	poke64(fd, REC_AT(tab, 0, zero), pop0);
	snprintf(want, sizeof(want), "bitmap at %#llx named twice", (unsigned long long)pop0);
	refused(fd, MAX_BYTES, want);
	/* A bitmap inside the table block. */
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 0, dirty), tab + 64);
	snprintf(want, sizeof(want), "arena runs at %#llx and %#llx overlap",
		 (unsigned long long)tab, (unsigned long long)(tab + 64));
	refused(fd, MAX_BYTES, want);
	/* A bitmap running into the next one: b's, grown to 1000 pages,
	 * reaches a's zero bitmap (allocated after it). */
	fd = hostile_base(&tab);
	poke64(fd, REC_AT(tab, 1, len), 1000 * PAGE);
	snprintf(want, sizeof(want), "arena runs at %#llx and %#llx overlap",
		 (unsigned long long)(tab + 5696), (unsigned long long)(tab + 5760));
	refused(fd, MAX_BYTES, want);
	/* Records a txn never committed may hold anything: not read. */
	fd = hostile_base(&tab);
	poke64(fd, ENTRY_AT(tab, 5, born), 100);
	poke(fd, REC_AT(tab, 5, kind), &(uint32_t){ 77 }, 4);
	{
		struct state *st = NULL;
		char why[256] = "";

		ck_assert_int_eq(state_open(fd, MAX_BYTES, &st, why, sizeof(why)), 0);
		ck_assert_uint_eq(seen_of(st).n, 3);
		ck_assert_int_eq(state_commit(st, 0, NULL, 0), 0);
		ck_assert_uint_eq(seen_of(st).n, 3);
		state_free(st);
	}
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("state");

	uffdd_page_init();
	TEST_ADD_CASE(s, new_state_is_empty, 30);
	TEST_ADD_CASE(s, commit_atomicity, 30);
	TEST_ADD_CASE(s, uncommitted_txn_discarded, 30);
	TEST_ADD_CASE(s, uncommitted_growth_discarded, 30);
	TEST_ADD_CASE(s, reply_double_buffer, 30);
	TEST_ADD_CASE(s, bitmap_bits_in_place, 30);
	TEST_ADD_CASE(s, allocator_reuse_after_commit, 30);
	TEST_ADD_CASE(s, large_bitmap_sparse_and_zeroed, 30);
	TEST_ADD_CASE(s, table_grows_past_first_block, 60);
	TEST_ADD_CASE(s, wset_merge_and_cap, 60);
	TEST_ADD_CASE(s, making_in_place, 30);
	TEST_ADD_CASE(s, events_in_place, 30);
	TEST_ADD_CASE(s, hostile_file, 30);
	TEST_ADD_CASE(s, hostile_header, 30);
	TEST_ADD_CASE(s, last_txn_commit_refused, 30);
	TEST_ADD_CASE(s, hostile_records, 30);
	return s;
}

const char *test_skip_reason(void)
{
	return NULL;
}
