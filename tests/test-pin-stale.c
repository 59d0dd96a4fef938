// SPDX-License-Identifier: MIT
/*
 * Suite pin, area pin-stale: staleness does not depend on the cache (issue
 * 16, item 3).  A pin taken right after a discard of its range is kept out of
 * the cache (the discard may still be zapping the pages it pinned), yet a
 * later discard or unmap marks it stale like any other.  A look-up within a
 * held cached pin shares it; within a held uncached one it pins anew (the
 * held one may have raced the zap: tests/test-pin.c threads_never_see_stale).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <valgrind/valgrind.h>

#include "libpin.h"
#include "test-common.h"
#include "test-pin-util.h"

#define MiB (1ul << 20)

static size_t page;

/* A pin of [p, p + len) taken right after a discard in it: uncached. */
static struct pin_range *pin_after_discard(struct pin_ctx *ctx, char *p, size_t len)
{
	struct pin_range *first, *r;

	ck_assert_int_eq(pin_range_get(ctx, p, len, &first), 0);
	pin_range_put(first);
	ck_assert_int_eq(madvise(p + page, page, MADV_DONTNEED), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	ck_assert_int_eq(pin_range_stale(r), 0);
	ck_assert_uint_eq(test_pin_stats(ctx).idle_ranges, 0);
	return r;
}

/* Discarded again, then unmapped: each marks the uncached pin stale. */
START_TEST(uncached_pin_goes_stale)
{
	const size_t len = 8 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = test_map_small(NULL, len);
	struct pin_range *r = pin_after_discard(ctx, p, len);

	uint64_t inval = test_pin_stats(ctx).invalidations;
	ck_assert_int_eq(madvise(p + 2 * page, page, MADV_DONTNEED), 0);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.invalidations, inval + 1);
	ck_assert_int_eq(pin_range_stale(r), 1);
	/* Still held, still pinned, until its last handle goes. */
	ck_assert_uint_eq(s.pinned_bytes, len);
	pin_range_put(r);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, 0);

	r = pin_after_discard(ctx, p, len);
	/* Valgrind would hang the unmap (see pin-monitor.c): say it ourselves. */
	if (RUNNING_ON_VALGRIND)
		ck_assert_int_eq(pin_ctx_invalidate(ctx, p, len), 1);
	ck_assert_int_eq(munmap(p, len), 0);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_ranges, 1);
	ck_assert_int_eq(pin_range_stale(r), 1);
	pin_range_put(r);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, 0);
	pin_ctx_free(ctx);
}
END_TEST

/*
 * A sub-range of a held 64 MiB pin: the same handle, no second pin, when the
 * pin is cached; a new pin of the sub-range when it is not (taken right
 * after a discard), and a discard in the sub-range marks both stale.
 */
START_TEST(subrange_of_a_held_pin)
{
	const size_t len = 64 * MiB, sub_off = 3 * MiB, sub_len = 4 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = test_map_small(NULL, len);
	struct pin_range *big, *sub;

	ck_assert_int_eq(pin_range_get(ctx, p, len, &big), 0);
	uint64_t hits = test_pin_stats(ctx).hits;
	ck_assert_int_eq(pin_range_get(ctx, p + sub_off, sub_len, &sub), 0);
	ck_assert_ptr_eq(sub, big);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.hits, hits + 1);
	ck_assert_uint_eq(s.pinned_ranges, 1);
	ck_assert_uint_eq(s.pinned_bytes, len);
	pin_range_put(sub);
	pin_range_put(big);

	big = pin_after_discard(ctx, p, len);
	ck_assert_int_eq(pin_range_get(ctx, p + sub_off, sub_len, &sub), 0);
	ck_assert_ptr_ne(sub, big);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, len + sub_len);
	ck_assert_int_eq(madvise(p + sub_off, page, MADV_DONTNEED), 0);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_ranges, 2);
	ck_assert_int_eq(pin_range_stale(big), 1);
	ck_assert_int_eq(pin_range_stale(sub), 1);
	pin_range_put(sub);
	pin_range_put(big);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, 0);
	pin_ctx_free(ctx);
	munmap(p, len);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("pin-stale");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, uncached_pin_goes_stale, 120);
	TEST_ADD_CASE(s, subrange_of_a_held_pin, 120);
	return s;
}

const char *test_skip_reason(void)
{
	return test_pin_skip_reason();
}
