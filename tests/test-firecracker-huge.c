// SPDX-License-Identifier: MIT
/*
 * A Firecracker guest whose memory is hugetlbfs's 2 MiB pages (its
 * machine-config huge_pages "2M"), against the fake VMM of fc-vmm.c: its
 * regions mapped MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, page_size
 * 2097152 in the handshake; uffdd places each huge page whole, and so does
 * a successor that takes the VM's session over.  The pool
 * grows by the guest's pages around the tcase (hugetlb.c), which is left
 * out, saying why, when it cannot.
 */
#include <check.h>
#include <linux/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fc-vmm.h"
#include "hugetlb.h"
#include "manager.h"
#include "test-common.h"

#define CASE_TIMEOUT_S 120
#define HUGE	       (2 * MIB)
/* The pool's growth: the guest's huge pages, the whole memory file. */
#define GUEST_HUGE (MEM_MIB * MIB / HUGE)
/* Region 1's huge pages the balloon takes: one never touched, one placed. */
#define BALLOON_UNTOUCHED 2
#define BALLOON_PLACED	  0

static size_t page;

/*
 * The guest: region 0 of 2 MiB at 6 MiB of the memory file, region 1 of
 * 6 MiB at 0 (out of the file's order), as Firecracker maps a guest of huge
 * pages, but without MAP_NORESERVE: the pages are reserved at mmap(), so
 * that no other process takes the pool's pages before uffdd places them.
 */
static void huge_memory(struct fc *f)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB;

	vmm_map(f, 0, 2 * MIB, 6 * MIB, flags, HUGE);
	vmm_map(f, 1, 6 * MIB, 0, flags, HUGE);
}

static uint64_t next(uint64_t *seed)
{
	*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
	return *seed >> 33;
}

/* Every huge page of region r in a shuffled order, each touched first at a
 * page of it chosen at random (its fault is not at the huge page's start),
 * then checked whole, byte for byte: huge page zero_at reads as zero. */
static void touch_huge(const struct fc *f, int r, size_t zero_at, uint64_t seed)
{
	size_t n = f->len[r] / HUGE, per = HUGE / page, order[GUEST_HUGE];

	ck_assert_uint_le(n, GUEST_HUGE);
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	for (size_t i = n; i > 1; i--) {
		size_t j = next(&seed) % i, t = order[i - 1];
		order[i - 1] = order[j];
		order[j] = t;
	}
	for (size_t i = 0; i < n; i++) {
		size_t h = order[i], first = (size_t)(next(&seed) % per);
		volatile uint8_t *p = f->reg[r] + h * HUGE + first * page;
		(void)*p;
		for (size_t k = 0; k < per; k++)
			vmm_check_page(f, r, h * per + k, h == zero_at);
	}
}

/* Every byte of a guest of huge pages from the memory file; the balloon's
 * huge pages, placed or not, read as zero, and keep what is written then. */
START_TEST(hugetlb_every_byte)
{
	struct fc f = { 0 };

	fc_up(&f);
	huge_memory(&f);
	vmm_handshake(&f);
	ck_assert_int_eq(madvise(f.reg[1] + BALLOON_UNTOUCHED * HUGE, HUGE, MADV_DONTNEED), 0);
	touch_huge(&f, 0, SIZE_MAX, test_seed());
	touch_huge(&f, 1, BALLOON_UNTOUCHED, test_seed() + 1);
	ck_assert_int_eq(madvise(f.reg[1] + BALLOON_PLACED * HUGE, HUGE, MADV_DONTNEED), 0);
	for (size_t i = 0; i < f.len[1] / page; i++) {
		size_t h = i / (HUGE / page);
		vmm_check_page(&f, 1, i, h == BALLOON_UNTOUCHED || h == BALLOON_PLACED);
	}
	f.reg[1][BALLOON_PLACED * HUGE + HUGE - 1] = 0x5a;
	ck_assert_uint_eq(f.reg[1][BALLOON_PLACED * HUGE + HUGE - 1], 0x5a);
	ck_assert_uint_eq(f.reg[1][BALLOON_PLACED * HUGE], 0);
	fc_down(&f);
}
END_TEST

/*
 * uffdd killed (-9) after region 0 is in place and started again by its
 * service manager: the successor takes the session over with its regions of
 * huge pages, serves region 1 whole huge pages at a time, and the refault of
 * a huge page the balloon takes from then on as zero.
 */
START_TEST(hugetlb_kill9_mid_restore)
{
	struct fc f = { 0 };
	struct manager *mgr = fc_managed(&f, NULL);

	huge_memory(&f);
	vmm_handshake(&f);
	touch_huge(&f, 0, SIZE_MAX, test_seed());
	ck_assert_int_eq(manager_freeze(mgr), 0);
	ck_assert_int_eq(manager_kill9_restart(mgr), 0);
	/* The VM's connection, userfaultfd and record, kept and taken over. */
	ck_assert_uint_eq(manager_count(mgr, "s[0-9]*"), 3);
	touch_huge(&f, 1, SIZE_MAX, test_seed() + 1);
	ck_assert_int_eq(madvise(f.reg[1] + BALLOON_PLACED * HUGE, HUGE, MADV_DONTNEED), 0);
	touch_huge(&f, 1, BALLOON_PLACED, test_seed() + 2);
	touch_huge(&f, 0, SIZE_MAX, test_seed() + 3);
	fc_vm_exits(&f, mgr);
	fc_managed_down(&f, mgr);
}
END_TEST

/* NULL when the pool can grow by the guest's pages (given back at once). */
static const char *hugetlb_unmet(void)
{
	static char why[160];
	long got = hugetlb_reserve(GUEST_HUGE);

	if (got == GUEST_HUGE) {
		hugetlb_release(GUEST_HUGE);
		return NULL;
	}
	snprintf(why, sizeof(why), "could reserve %ld of %llu 2 MiB hugetlb pages (%s)", got,
		 GUEST_HUGE, NR_HUGEPAGES);
	return why;
}

/* In the runner's process: the pool grows around the tcase. */
static void pool_grow(void)
{
	ck_assert_int_eq(hugetlb_reserve(GUEST_HUGE), GUEST_HUGE);
}

static void pool_shrink(void)
{
	hugetlb_release(GUEST_HUGE);
}

Suite *test_suite(void)
{
	static const struct test_needs needs = { .what = TEST_NEED_ROOT | TEST_NEED_UFFD,
						 .check = hugetlb_unmet };
	Suite *s = test_suite_new("firecracker-huge");
	TCase *tc = test_tcase(s, "hugetlb", &needs);

	page = (size_t)sysconf(_SC_PAGESIZE);
	tcase_set_timeout(tc, CASE_TIMEOUT_S);
	tcase_add_unchecked_fixture(tc, pool_grow, pool_shrink);
	tcase_add_test(tc, hugetlb_every_byte);
	tcase_add_test(tc, hugetlb_kill9_mid_restore);
	return s;
}

const char *test_skip_reason(void)
{
	return fc_skip_reason(
		"the page size is not 4096: uffdd's huge pages are 2 MiB beside 4 KiB");
}
