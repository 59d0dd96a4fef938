// SPDX-License-Identifier: MIT
/*
 * Suite restore: huge pages back after a lazy restore (issue 14, item 3).
 * A 32 MiB region on a 2 MiB boundary is checkpointed, mapped again by
 * pin_image_map_region() (small pages, MADV_NOHUGEPAGE), served by a real
 * uffdd, and collapsed by pin_image_collapse_region(): every run whose pages
 * are all in becomes a huge page (AnonHugePages in /proc/self/smaps), a run
 * with one page missing does not, and every byte is what was checkpointed
 * before and after.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

#define REGION_ADDR  0x520000000000ull /* 2 MiB aligned; below ASan's allocator (0x600000000000) */
#define RUN_BYTES    (2ull << 20)      /* a PMD huge page of x86-64 */
#define RUNS	     16
#define REGION_BYTES (RUNS * RUN_BYTES)
#define PAGE	     4096ull
#define PAGES	     (REGION_BYTES / PAGE)
#define RUN_KB	     (RUN_BYTES >> 10)
/* Coprime with PAGES: touching page k * STRIDE % PAGES reads every page once
 * in an order where no page follows the one before. */
#define STRIDE 7919
/* The page left out in the partial case: in run 5, not its first. */
#define MISSING_PAGE (5 * (RUN_BYTES / PAGE) + 77)

struct restored {
	struct test_daemon d;
	char ck[64];
	uint64_t seed;
	struct pin_image *img;
	struct pin_uffd *u;
	struct pin_client *c;
};

static volatile uint64_t *word(uint64_t a)
{
	return (volatile uint64_t *)(uintptr_t)a;
}

/* The region as it was: every word its own, none zero (no zero pages). */
static void checkpoint(struct restored *rs)
{
	test_map_fixed(REGION_ADDR, REGION_BYTES);
	for (uint64_t a = REGION_ADDR; a < REGION_ADDR + REGION_BYTES; a += 8)
		*word(a) = test_pattern(a, rs->seed) | 1;
	test_checkpoint_region(rs->ck, sizeof(rs->ck), "collapse", REGION_ADDR, REGION_BYTES);
}

/* Map it again and hand it to a uffdd that pushes nothing by itself. */
static void restore_start(struct restored *rs)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .name = "collapse" };

	rs->seed = test_seed();
	checkpoint(rs);
	test_daemon_start(&rs->d, NULL);
	co.socket = rs->d.sock;
	ck_assert_int_eq(pin_image_open(rs->ck, &rs->img), 0);
	ck_assert_int_eq(pin_image_nr_regions(rs->img), 1);
	ck_assert_int_eq(pin_uffd_new(&uo, &rs->u), 0);
	ck_assert_int_eq(pin_image_map_region(rs->img, 0, rs->u), 0);
	ck_assert_int_eq(pin_client_connect(&co, &rs->c), 0);
	ck_assert_int_eq(pin_client_handover(rs->c, rs->u), 0);
	ck_assert_int_eq(pin_client_add_image_region(rs->c, rs->img, 0, PIN_CLIENT_REGION_NO_PUSH),
			 1);
}

static void restore_end(struct restored *rs)
{
	char p[128];

	pin_client_free(rs->c);
	pin_uffd_free(rs->u);
	pin_image_free(rs->img);
	test_daemon_stop(&rs->d);
	for (const char *f = "manifest\0pages\0"; *f; f += strlen(f) + 1) {
		snprintf(p, sizeof(p), "%s/%s", rs->ck, f);
		unlink(p);
	}
	rmdir(rs->ck);
}

/* Every word of the region is the checkpoint's (reading faults in what is
 * not there yet). */
static void assert_every_byte(const struct restored *rs)
{
	for (uint64_t a = REGION_ADDR; a < REGION_ADDR + REGION_BYTES; a += 8)
		if (*word(a) != (test_pattern(a, rs->seed) | 1))
			ck_abort_msg("word at %#llx: %#llx, checkpointed %#llx",
				     (unsigned long long)a, (unsigned long long)*word(a),
				     (unsigned long long)(test_pattern(a, rs->seed) | 1));
}

/* Every page through a fault served by uffdd, no page right after the one
 * before; then every run collapses, and the bytes stay. */
START_TEST(restored_region_collapses_whole)
{
	struct restored rs;

	restore_start(&rs);
	for (uint64_t k = 0; k < PAGES; k++)
		(void)*word(REGION_ADDR + k * STRIDE % PAGES * PAGE);
	ck_assert_int_eq(
		pin_client_wait_populated(rs.c, (void *)(uintptr_t)REGION_ADDR, REGION_BYTES, 0),
		0);
	ck_assert_int_eq(test_anon_huge_kb(REGION_ADDR, REGION_BYTES), 0);
	ck_assert_int_eq(pin_image_collapse_region(rs.img, 0), RUNS);
	ck_assert_int_eq(test_anon_huge_kb(REGION_ADDR, REGION_BYTES), RUNS * RUN_KB);
	assert_every_byte(&rs);
	/* Collapsed already: the same count, nothing undone. */
	ck_assert_int_eq(pin_image_collapse_region(rs.img, 0), RUNS);
	ck_assert_int_eq(test_anon_huge_kb(REGION_ADDR, REGION_BYTES), RUNS * RUN_KB);
	restore_end(&rs);
}
END_TEST

/* All pages but one placed by prefetch: that page's run stays small pages,
 * its page still comes from uffdd when read, and then the run collapses. */
START_TEST(run_with_a_page_missing_is_not_collapsed)
{
	struct restored rs;
	uint64_t miss = REGION_ADDR + MISSING_PAGE * PAGE;
	void *base = (void *)(uintptr_t)REGION_ADDR, *after = (void *)(uintptr_t)(miss + PAGE);
	size_t before_len = miss - REGION_ADDR,
	       after_len = REGION_ADDR + REGION_BYTES - miss - PAGE;
	unsigned char vec;

	restore_start(&rs);
	ck_assert_int_eq(pin_client_prefetch(rs.c, base, before_len), 0);
	ck_assert_int_eq(pin_client_prefetch(rs.c, after, after_len), 0);
	ck_assert_int_eq(pin_client_wait_populated(rs.c, base, before_len, 0), 0);
	ck_assert_int_eq(pin_client_wait_populated(rs.c, after, after_len, 0), 0);
	ck_assert_int_eq(mincore((void *)(uintptr_t)miss, PAGE, &vec), 0);
	ck_assert_int_eq(vec & 1, 0);
	ck_assert_int_eq(pin_image_collapse_region(rs.img, 0), RUNS - 1);
	ck_assert_int_eq(test_anon_huge_kb(REGION_ADDR, REGION_BYTES), (RUNS - 1) * RUN_KB);
	/* Not filled behind uffdd's back: still missing, and then its own. */
	ck_assert_int_eq(mincore((void *)(uintptr_t)miss, PAGE, &vec), 0);
	ck_assert_int_eq(vec & 1, 0);
	assert_every_byte(&rs);
	ck_assert_int_eq(pin_image_collapse_region(rs.img, 0), RUNS);
	ck_assert_int_eq(test_anon_huge_kb(REGION_ADDR, REGION_BYTES), RUNS * RUN_KB);
	assert_every_byte(&rs);
	restore_end(&rs);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("collapse");

	TEST_ADD_CASE(s, restored_region_collapses_whole, 120);
	TEST_ADD_CASE(s, run_with_a_page_missing_is_not_collapsed, 120);
	return s;
}

const char *test_skip_reason(void)
{
	const char *why = test_thp_skip_reason();

	if (sysconf(_SC_PAGESIZE) != PAGE)
		return "2 MiB runs of 4 KiB pages: needs 4 KiB pages";
	return why ? why : test_uffd_skip_reason();
}
