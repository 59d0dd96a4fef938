// SPDX-License-Identifier: MIT
/*
 * Suite unit: a session's pins (uffdd/pins.c) against a sorted array of the
 * same cookies: found by cookie, walked in cookie order from any cookie,
 * across adds and deletes, the treap's links and priorities consistent.
 */
#include <stdlib.h>
#include <string.h>

#include "uffdd.h"
#include "test-common.h"
#include "uffdd-harness.h"

/* As many pins as a ListGet test of the daemon lists; under valgrind (a
 * time scale above 1) or ASan a tenth. */
#define MANY	    100000
#define MANY_TRACED 10000
/* Deletes and adds at random in between (each moves the sorted array). */
#define ROUNDS 2000
/* Cookies in ascending order, the shape a naive tree degenerates on: a
 * treap's depth stays near 3 log2(n) (about 50 here); one this deep has
 * a chance far below 2^-64. */
#define DEPTH_MAX 200

static uint64_t rng_state; /* test_rand()'s, from test_seed() */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The index of the first of want[0, n) at or above c. */
static size_t lower(const uint64_t *want, size_t n, uint64_t c)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (want[mid] < c)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Links both ways, cookies in order, priorities a heap; returns the depth. */
static size_t check_node(const struct pin_set *ps, uint32_t x, uint32_t up, uint64_t lo,
			 uint64_t hi, size_t *count)
{
	size_t depth = 0;

	if (!x)
		return 0;
	ck_assert_uint_le(x, ps->n);
	const struct pin_rec *p = &ps->v[x - 1];
	ck_assert_uint_eq(p->up, up);
	ck_assert_uint_ge(p->cookie, lo);
	ck_assert_uint_le(p->cookie, hi);
	if (up)
		ck_assert_uint_le(p->prio, ps->v[up - 1].prio);
	(*count)++;
	/* A child below or above leaves room for it: no bound wraps. */
	ck_assert(!p->kid[0] || p->cookie > lo);
	ck_assert(!p->kid[1] || p->cookie < hi);
	for (int d = 0; d < 2; d++) {
		size_t k = check_node(ps, p->kid[d], x, d ? p->cookie + 1 : lo,
				      d ? hi : p->cookie - 1, count);
		depth = k > depth ? k : depth;
	}
	return depth + 1;
}

/* The set holds want[0, n) exactly: each found where it is, walked in
 * order; returns the treap's depth. */
static size_t check_set(const struct pin_set *ps, const uint64_t *want, size_t n)
{
	size_t count = 0, depth = check_node(ps, ps->root, 0, 0, UINT64_MAX, &count);
	size_t k = 0;

	ck_assert_uint_eq(ps->n, n);
	ck_assert_uint_eq(count, n);
	for (ssize_t i = pins_from(ps, 0); i >= 0; i = pins_next(ps, (size_t)i), k++) {
		ck_assert_uint_lt(k, n);
		ck_assert_uint_eq(ps->v[i].cookie, want[k]);
		ck_assert_int_eq(pins_find(ps, want[k]), i);
		/* What the pin was added with, by its cookie. */
		ck_assert_uint_eq(ps->v[i].addr, want[k] << 12);
		ck_assert_uint_eq(ps->v[i].len, want[k] | 1);
		ck_assert_uint_eq(ps->v[i].slot, (uint32_t)want[k]);
	}
	ck_assert_uint_eq(k, n);
	return depth;
}

static void add(struct pin_set *ps, uint64_t cookie)
{
	ck_assert_int_eq(pins_reserve(ps), 0);
	pins_add(ps, cookie << 12, cookie | 1, cookie, (uint32_t)cookie);
}

/* Every page a cursor at c would read: from the first cookie at or above
 * c, the next ones in order, -1 after the last. */
static void check_from(const struct pin_set *ps, const uint64_t *want, size_t n, uint64_t c)
{
	size_t k = lower(want, n, c);
	ssize_t i = pins_from(ps, c);

	if (k == n) {
		ck_assert_int_eq(i, -1);
		return;
	}
	ck_assert_int_ge(i, 0);
	ck_assert_uint_eq(ps->v[i].cookie, want[k]);
	i = pins_next(ps, (size_t)i);
	if (k + 1 == n)
		ck_assert_int_eq(i, -1);
	else
		ck_assert_uint_eq(ps->v[i].cookie, want[k + 1]);
}

static size_t many(void)
{
#ifdef __SANITIZE_ADDRESS__
	return MANY_TRACED;
#else
	return test_time_scale() > 1 ? MANY_TRACED : MANY;
#endif
}

/*
 * 100,000 random cookies added in random order, some deleted at random and
 * others added, then every one deleted: after each phase the set is
 * exactly the array, and a cursor at any cookie (present, just deleted,
 * between two) finds the right first one and the one after it.
 */
START_TEST(random_adds_and_deletes)
{
	struct pin_set ps = { 0 };
	uint64_t *want = malloc(MANY * sizeof(*want));
	size_t n = 0;

	ck_assert_ptr_nonnull(want);
	rng_state = test_seed();
	ck_assert_int_eq(pins_find(&ps, 1), -1);
	ck_assert_int_eq(pins_from(&ps, 0), -1);
	while (n < many()) {
		uint64_t c = test_rand(&rng_state);
		if (pins_find(&ps, c) >= 0)
			continue;
		add(&ps, c);
		want[n++] = c;
	}
	qsort(want, n, sizeof(*want), cmp_u64);
	check_set(&ps, want, n);
	for (size_t round = 0; round < ROUNDS; round++) {
		size_t k = test_rand(&rng_state) % n;
		uint64_t gone = want[k];
		ssize_t i = pins_find(&ps, gone);
		ck_assert_int_ge(i, 0);
		pins_del(&ps, (size_t)i);
		ck_assert_int_eq(pins_find(&ps, gone), -1);
		memmove(want + k, want + k + 1, (n - k - 1) * sizeof(*want));
		n--;
		check_from(&ps, want, n, gone);
		check_from(&ps, want, n, want[k == n ? 0 : k]);
		check_from(&ps, want, n, test_rand(&rng_state));
		uint64_t c = test_rand(&rng_state);
		if (pins_find(&ps, c) >= 0)
			continue;
		add(&ps, c);
		k = lower(want, n, c);
		memmove(want + k + 1, want + k, (n - k) * sizeof(*want));
		want[k] = c;
		n++;
	}
	check_set(&ps, want, n);
	/* In random order; the array's order matters no more. */
	while (n) {
		size_t k = test_rand(&rng_state) % n;
		pins_del(&ps, (size_t)pins_find(&ps, want[k]));
		want[k] = want[--n];
	}
	check_set(&ps, want, 0);
	ck_assert_uint_eq(ps.root, 0);
	pins_free(&ps);
	free(want);
}
END_TEST

/*
 * Cookies a client picks in ascending order, then deleted from the front
 * (the order a client releases them in): the treap stays shallow, and every
 * step of the walk is exact.  Cookie 0 and UINT64_MAX are pins like others.
 */
START_TEST(ascending_stays_shallow)
{
	struct pin_set ps = { 0 };
	uint64_t *want = malloc(MANY * sizeof(*want));
	size_t n = many();

	ck_assert_ptr_nonnull(want);
	for (size_t i = 0; i < n; i++) {
		want[i] = i == n - 1 ? UINT64_MAX : i;
		add(&ps, want[i]);
	}
	ck_assert_uint_le(check_set(&ps, want, n), DEPTH_MAX);
	check_from(&ps, want, n, UINT64_MAX);
	check_from(&ps, want, n, n);
	for (size_t i = 0; i < n / 2; i++)
		pins_del(&ps, (size_t)pins_find(&ps, want[i]));
	ck_assert_uint_le(check_set(&ps, want + n / 2, n - n / 2), DEPTH_MAX);
	check_from(&ps, want + n / 2, n - n / 2, 0);
	pins_free(&ps);
	ck_assert_ptr_null(ps.v);
	free(want);
}
END_TEST

/* A case's bound: valgrind runs these some 20 times slower. */
#define CASE_TIMEOUT_S 120

Suite *test_suite(void)
{
	Suite *s = test_suite_new("pins");

	TEST_ADD_CASE(s, random_adds_and_deletes, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, ascending_stays_shallow, CASE_TIMEOUT_S);
	return s;
}

const char *test_skip_reason(void)
{
	return NULL;
}
