// SPDX-License-Identifier: MIT
/* Suite unit: the interval map of the registration cache (libpin/range.c),
 * and its reader of a uffdd session's event log (libpin/pin-evlog.c). */
#include "pin-internal.h"
#include "test-common.h"

static char a, b, c;

struct gaps {
	uintptr_t v[8];
	unsigned int n;
};

static void note_gap(uintptr_t start, uintptr_t end, void *arg)
{
	struct gaps *g = arg;

	ck_assert_uint_lt(g->n, 8);
	g->v[g->n++] = start;
	g->v[g->n++] = end;
}

static void fill(struct pin_imap *m)
{
	pin_imap_init(m);
	ck_assert_int_eq(pin_imap_insert(m, 100, 200, &a), 0);
	ck_assert_int_eq(pin_imap_insert(m, 150, 400, &b), 0);
	ck_assert_int_eq(pin_imap_insert(m, 500, 510, &c), 0);
}

START_TEST(covering)
{
	struct pin_imap m;

	fill(&m);
	ck_assert_int_eq(pin_imap_insert(&m, 5, 5, &a), -EINVAL);
	ck_assert_ptr_eq(pin_imap_find_covering(&m, 100, 200), &a);
	ck_assert_ptr_eq(pin_imap_find_covering(&m, 160, 300), &b);
	ck_assert_ptr_eq(pin_imap_find_covering(&m, 399, 400), &b);
	ck_assert_ptr_eq(pin_imap_find_covering(&m, 500, 501), &c);
	ck_assert_ptr_null(pin_imap_find_covering(&m, 99, 150));
	ck_assert_ptr_null(pin_imap_find_covering(&m, 390, 401));
	ck_assert_ptr_null(pin_imap_find_covering(&m, 410, 420));
	ck_assert_ptr_null(pin_imap_find_covering(&m, 505, 511));
	ck_assert(pin_imap_remove(&m, 150, &b));
	ck_assert(!pin_imap_remove(&m, 150, &b));
	ck_assert(!pin_imap_remove(&m, 100, &c));
	ck_assert_ptr_null(pin_imap_find_covering(&m, 160, 300));
	ck_assert_uint_eq(m.n, 2);
	pin_imap_fini(&m);
}
END_TEST

START_TEST(take_overlap)
{
	struct pin_imap m;

	fill(&m);
	ck_assert_ptr_null(pin_imap_take_overlap(&m, 400, 500));
	ck_assert_ptr_null(pin_imap_take_overlap(&m, 0, 100));
	ck_assert_ptr_eq(pin_imap_take_overlap(&m, 399, 501), &b);
	ck_assert_ptr_eq(pin_imap_take_overlap(&m, 399, 501), &c);
	ck_assert_ptr_null(pin_imap_take_overlap(&m, 399, 501));
	ck_assert_ptr_eq(pin_imap_take_overlap(&m, 0, UINTPTR_MAX), &a);
	ck_assert_uint_eq(m.n, 0);
	pin_imap_fini(&m);
}
END_TEST

START_TEST(gaps)
{
	struct pin_imap m;
	struct gaps g = { .n = 0 };

	fill(&m);
	pin_imap_gaps(&m, 50, 600, note_gap, &g);
	ck_assert_uint_eq(g.n, 6);
	ck_assert_uint_eq(g.v[0], 50);
	ck_assert_uint_eq(g.v[1], 100);
	ck_assert_uint_eq(g.v[2], 400);
	ck_assert_uint_eq(g.v[3], 500);
	ck_assert_uint_eq(g.v[4], 510);
	ck_assert_uint_eq(g.v[5], 600);
	g.n = 0;
	pin_imap_gaps(&m, 120, 390, note_gap, &g);
	ck_assert_uint_eq(g.n, 0);
	pin_imap_gaps(&m, 505, 506, note_gap, &g);
	ck_assert_uint_eq(g.n, 0);
	pin_imap_gaps(&m, 300, 450, note_gap, &g);
	ck_assert_uint_eq(g.n, 2);
	ck_assert_uint_eq(g.v[0], 400);
	ck_assert_uint_eq(g.v[1], 450);
	pin_imap_fini(&m);
}
END_TEST

START_TEST(punch)
{
	struct pin_imap m;

	pin_imap_init(&m);
	ck_assert_int_eq(pin_imap_insert(&m, 100, 200, NULL), 0);
	ck_assert_int_eq(pin_imap_insert(&m, 300, 400, NULL), 0);
	m.cap = m.n; /* no room: a split must fail, not allocate */
	ck_assert_int_eq(pin_imap_punch(&m, 120, 130), -ENOSPC);
	ck_assert_int_eq(pin_imap_reserve(&m, 1), 0);
	ck_assert_int_eq(pin_imap_punch(&m, 120, 130), 0);
	ck_assert_uint_eq(m.n, 3);
	ck_assert_uint_eq(m.items[0].end, 120);
	ck_assert_uint_eq(m.items[1].start, 130);
	ck_assert_uint_eq(m.items[1].end, 200);
	/* Trims one end, drops what it covers, trims the other start. */
	ck_assert_int_eq(pin_imap_punch(&m, 110, 350), 0);
	ck_assert_uint_eq(m.n, 2);
	ck_assert_uint_eq(m.items[0].start, 100);
	ck_assert_uint_eq(m.items[0].end, 110);
	ck_assert_uint_eq(m.items[1].start, 350);
	ck_assert_uint_eq(m.items[1].end, 400);
	ck_assert_int_eq(pin_imap_punch(&m, 0, 1000), 0);
	ck_assert_uint_eq(m.n, 0);
	pin_imap_fini(&m);
}
END_TEST

START_TEST(many)
{
	struct pin_imap m;

	pin_imap_init(&m);
	for (uintptr_t i = 1000; i > 0; i--)
		ck_assert_int_eq(pin_imap_insert(&m, i * 10, i * 10 + 5, (void *)i), 0);
	for (uintptr_t i = 1; i <= 1000; i++) {
		ck_assert_ptr_eq(pin_imap_find_covering(&m, i * 10 + 1, i * 10 + 5), (void *)i);
		ck_assert_ptr_null(pin_imap_find_covering(&m, i * 10 + 4, i * 10 + 6));
	}
	ck_assert_uint_eq(m.n, 1000);
	pin_imap_fini(&m);
}
END_TEST

/* One entry as uffdd's evlog.c writes it: the slot, then head. */
static void log_put(struct pin_evlog *log, uint32_t type, uint64_t start, uint64_t end, uint64_t to)
{
	uint64_t h = atomic_load(&log->head);
	struct pin_evlog_entry *e = &log->ent[h % PIN_EVLOG_ENTRIES];

	atomic_store(&e->start, start);
	atomic_store(&e->end, end);
	atomic_store(&e->to, to);
	atomic_store(&e->type, type);
	atomic_store(&log->head, h + 1);
}

static void assert_next(struct pin_evlog *log, uint64_t *tail, uint32_t type, uintptr_t start,
			uintptr_t end, uintptr_t to)
{
	struct pin_evlog_change ch;

	ck_assert_int_eq(pin_evlog_next(log, tail, &ch), 1);
	ck_assert_uint_eq(ch.type, type);
	ck_assert_uint_eq(ch.start, start);
	ck_assert_uint_eq(ch.end, end);
	ck_assert_uint_eq(ch.to, to);
}

/* Entries come back in order, exactly; a range that wraps stands for all
 * of memory. */
START_TEST(evlog_in_order)
{
	static struct pin_evlog log;
	struct pin_evlog_change ch;
	uint64_t tail = 0;

	ck_assert_int_eq(pin_evlog_next(&log, &tail, &ch), 0);
	/* Twice round the ring, a third of it at a time. */
	for (uint64_t i = 0; i < 2 * PIN_EVLOG_ENTRIES; i += PIN_EVLOG_ENTRIES / 3) {
		for (uint64_t k = i; k < i + PIN_EVLOG_ENTRIES / 3; k++)
			log_put(&log, PIN_UFFD_EVENT_REMAP, k << 12, (k + 1) << 12, (k + 7) << 20);
		for (uint64_t k = i; k < i + PIN_EVLOG_ENTRIES / 3; k++)
			assert_next(&log, &tail, PIN_UFFD_EVENT_REMAP, k << 12, (k + 1) << 12,
				    (k + 7) << 20);
		ck_assert_int_eq(pin_evlog_next(&log, &tail, &ch), 0);
	}
	log_put(&log, PIN_UFFD_EVENT_REMOVE, 8192, 4096, 0);
	assert_next(&log, &tail, PIN_UFFD_EVENT_UNMAP, 0, UINTPTR_MAX, 0);
	log_put(&log, PIN_UFFD_EVENT_REMAP, 0, 8192, UINTPTR_MAX - 4095);
	assert_next(&log, &tail, PIN_UFFD_EVENT_UNMAP, 0, UINTPTR_MAX, 0);
	ck_assert_uint_eq(tail, atomic_load(&log.head));
}
END_TEST

/* A lap behind, the slot of the oldest unread entry may be half rewritten:
 * a reader that far behind is told it lost entries, once, and goes on from
 * the head. */
START_TEST(evlog_overrun)
{
	static struct pin_evlog log;
	struct pin_evlog_change ch;
	uint64_t tail = 0;

	for (uint64_t k = 0; k < PIN_EVLOG_ENTRIES - 1; k++)
		log_put(&log, PIN_UFFD_EVENT_REMOVE, k << 12, (k + 1) << 12, 0);
	for (uint64_t k = 0; k < PIN_EVLOG_ENTRIES - 1; k++)
		assert_next(&log, &tail, PIN_UFFD_EVENT_REMOVE, k << 12, (k + 1) << 12, 0);
	for (uint64_t k = 0; k < PIN_EVLOG_ENTRIES; k++)
		log_put(&log, PIN_UFFD_EVENT_UNMAP, k << 12, (k + 1) << 12, 0);
	ck_assert_int_eq(pin_evlog_next(&log, &tail, &ch), -ENOSPC);
	ck_assert_uint_eq(tail, 2 * PIN_EVLOG_ENTRIES - 1);
	ck_assert_int_eq(pin_evlog_next(&log, &tail, &ch), 0);
	log_put(&log, PIN_UFFD_EVENT_UNMAP, 1 << 20, 2 << 20, 0);
	assert_next(&log, &tail, PIN_UFFD_EVENT_UNMAP, 1 << 20, 2 << 20, 0);
}
END_TEST

/* Even: nothing to wait for.  Odd and never changed: given up on (after
 * 50 ms). */
START_TEST(evlog_settle)
{
	static struct pin_evlog log;

	atomic_store(&log.busy, 6);
	ck_assert(pin_evlog_settle(&log));
	atomic_store(&log.busy, 7);
	ck_assert(!pin_evlog_settle(&log));
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("range");
	TCase *tc = tcase_create("imap");
	TCase *tl = tcase_create("evlog");

	tcase_add_test(tc, covering);
	tcase_add_test(tc, take_overlap);
	tcase_add_test(tc, gaps);
	tcase_add_test(tc, punch);
	tcase_add_test(tc, many);
	suite_add_tcase(s, tc);
	tcase_add_test(tl, evlog_in_order);
	tcase_add_test(tl, evlog_overrun);
	tcase_add_test(tl, evlog_settle);
	suite_add_tcase(s, tl);
	return s;
}

const char *test_skip_reason(void)
{
	return NULL;
}
