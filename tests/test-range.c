// SPDX-License-Identifier: MIT
/* Suite unit: the interval map of the registration cache (libpin/range.c). */
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

Suite *test_suite(void)
{
	Suite *s = suite_create("range");
	TCase *tc = tcase_create("imap");

	tcase_add_test(tc, covering);
	tcase_add_test(tc, take_overlap);
	tcase_add_test(tc, gaps);
	tcase_add_test(tc, punch);
	tcase_add_test(tc, many);
	suite_add_tcase(s, tc);
	return s;
}

const char *test_skip_reason(void)
{
	return NULL;
}
