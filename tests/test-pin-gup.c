// SPDX-License-Identifier: MIT
/*
 * Area pin-gup (suite pin): each kind of memory pin_user_pages() pins
 * (Documentation/core-api/pin_user_pages.rst, mm/gup.c), through the
 * io_uring backend, with the kernel's own counters and the bytes the process
 * sees; test-pin-refused.c has what it refuses.
 *
 * A FOLL_PIN of a small page counts 1; a large folio (THP, hugetlb) counts
 * each page pinned, and io_uring, which keeps one buffer vector per huge page
 * (coalescing), gives back all pins of a folio but one at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hugetlb.h"
#include "pin-internal.h"
#include "test-common.h"
#include "test-pin-util.h"

#define MiB	 (1ul << 20)
#define HUGE_2M	 (2ul << 20)
#define LEN	 (4 * MiB) /* two huge pages */
#define SEED_IN	 21
#define SEED_OUT 22
/* 2 MiB hugetlb pages the hugetlb tcase reserves: LEN for each of its cases. */
#define HUGETLB_PAGES 4
/* Pages in LEN at the smallest page size: arrays of page frames on the stack
 * (a forked child leaves with _exit(), and heap blocks would count as lost). */
#define LEN_PAGES_MAX (LEN / 4096)
/* /proc/self/pagemap: bit 63 present, bits 0-54 the page frame (root only). */
#define PM_PRESENT (1ull << 63)
#define PM_PFN	   ((1ull << 55) - 1)
/* /proc/kpageflags, a word per page frame: bit 4 is KPF_DIRTY. */
#define KPF_DIRTY 4

static size_t page;

static void setup(void)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
}

/* A huge page counts a pin per small page, and io_uring keeps one of them. */
static void assert_huge_pins(struct pin_ctx *ctx, void *p, size_t len)
{
	const size_t folios = len / HUGE_2M;
	const struct test_deltas want = { len / page, len / page - folios, 0, folios };
	struct test_deltas got;

	ck_assert_int_eq(test_pin_counted(ctx, p, len, &want, &got), 0);
	test_assert_deltas(&got, &want);
}

/*
 * Pin [p, p + len), write the pattern into it through the pin (the
 * "device" is io_uring's READ_FIXED), and check that the process reads it.
 */
static void device_write(struct pin_ctx *ctx, char *p, size_t len, uint64_t seed)
{
	int fd = test_pattern_file(len, seed);
	long pin0 = test_status_kb("VmPin");
	struct pin_range *r;

	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	ck_assert_int_eq(test_status_kb("VmPin") - pin0, (long)(len / 1024));
	int index = pin_range_buf_index(r, p, len);
	ck_assert_int_ge(index, 0);
	ck_assert_int_eq(test_io_fixed(ctx, false, fd, p, len, index), (int)len);
	test_assert_pattern(p, len, seed);
	pin_range_put(r);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, len), 1);
	ck_assert_int_eq(test_status_kb("VmPin"), pin0);
	close(fd);
}

static char *map_anon(size_t len, int prot, int advice)
{
	char *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_eq(madvise(p, len, advice), 0);
	return p;
}

/* The page frame behind each page of [p, p + n pages), 0 where none is. */
static void page_frames(const char *p, size_t n, uint64_t *pfn)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	for (size_t i = 0; i < n; i++) {
		uint64_t e;
		off_t at = (off_t)((uintptr_t)p / page + i) * (off_t)sizeof(e);
		ck_assert_int_eq(pread(fd, &e, sizeof(e), at), (ssize_t)sizeof(e));
		pfn[i] = e & PM_PRESENT ? e & PM_PFN : 0;
	}
	close(fd);
}

/* How many pages of [p, p + n pages) are dirty; each must be present. */
static size_t dirty_pages(const char *p, size_t n)
{
	uint64_t pfn[LEN_PAGES_MAX], flags;
	int fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	size_t dirty = 0;

	ck_assert_int_ge(fd, 0);
	page_frames(p, n, pfn);
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_ne(pfn[i], 0);
		ck_assert_int_eq(pread(fd, &flags, sizeof(flags), (off_t)(pfn[i] * sizeof(flags))),
				 (ssize_t)sizeof(flags));
		dirty += (flags >> KPF_DIRTY) & 1;
	}
	close(fd);
	return dirty;
}

START_TEST(never_written)
{
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = map_anon(LEN, PROT_READ | PROT_WRITE, MADV_NOHUGEPAGE);

	/* Pinning for writing faults every page in, one pin each. */
	test_assert_small_pins(ctx, p, LEN);
	char *q = map_anon(LEN, PROT_READ | PROT_WRITE, MADV_NOHUGEPAGE);
	device_write(ctx, q, LEN, SEED_IN);
	pin_ctx_free(ctx);
	munmap(p, LEN);
	munmap(q, LEN);
}
END_TEST

START_TEST(zero_page_unshared)
{
	const size_t n = LEN / page;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = map_anon(LEN, PROT_READ | PROT_WRITE, MADV_NOHUGEPAGE);
	uint64_t before[LEN_PAGES_MAX], after[LEN_PAGES_MAX];
	struct pin_range *r;

	/* Read, never written: every page is the shared zero page. */
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(((volatile char *)p)[i * page], 0);
	page_frames(p, n, before);
	ck_assert_uint_ne(before[0], 0);
	for (size_t i = 1; i < n; i++)
		ck_assert_uint_eq(before[i], before[0]);
	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &r), 0);
	/* The pin unshared each page: private frames, none of them the zero page. */
	page_frames(p, n, after);
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_ne(after[i], 0);
		ck_assert_uint_ne(after[i], before[0]);
		if (i)
			ck_assert_uint_ne(after[i], after[i - 1]);
	}
	pin_range_put(r);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, LEN), 1);
	/* Private now: the pin counts as on any written page, and I/O lands. */
	test_assert_small_pins(ctx, p, LEN);
	device_write(ctx, p, LEN, SEED_IN);
	pin_ctx_free(ctx);
	munmap(p, LEN);
}
END_TEST

/* LEN bytes aligned to a huge page, out of a larger mapping (unmapped on exit). */
static char *map_aligned(size_t *ret_total, char **ret_base)
{
	*ret_total = LEN + HUGE_2M;
	*ret_base =
		mmap(NULL, *ret_total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(*ret_base, MAP_FAILED);
	return (char *)(((uintptr_t)*ret_base + HUGE_2M - 1) & ~(HUGE_2M - 1));
}

/* AnonHugePages of /proc/self/smaps for the mapping that starts at p, in kB. */
static long anon_huge_kb(const char *p)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[256];
	unsigned long start, end;
	long kb = -1;
	bool in = false;

	ck_assert_ptr_nonnull(f);
	while (kb < 0 && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' '))
			in = start <= (uintptr_t)p && (uintptr_t)p < end;
		else if (in)
			sscanf(line, "AnonHugePages: %ld kB", &kb);
	}
	fclose(f);
	return kb;
}

START_TEST(thp)
{
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	size_t total;
	char *base, *p = map_aligned(&total, &base);

	ck_assert_int_eq(madvise(p, LEN, MADV_HUGEPAGE), 0);
	memset(p, 0x5a, LEN);
	ck_assert_int_eq(anon_huge_kb(p), (long)(LEN / 1024));
	assert_huge_pins(ctx, p, LEN);
	device_write(ctx, p, LEN, SEED_IN);
	/* Still huge pages: nothing split them. */
	ck_assert_int_eq(anon_huge_kb(p), (long)(LEN / 1024));
	pin_ctx_free(ctx);
	munmap(base, total);
}
END_TEST

/* THP that transparent_hugepage/enabled allows to MADV_HUGEPAGE ranges. */
static const char *thp_unmet(void)
{
	static char why[160];
	char mode[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");

	if (!f)
		return "no transparent huge pages (/sys/kernel/mm/transparent_hugepage)";
	if (!fgets(mode, sizeof(mode), f))
		mode[0] = 0;
	fclose(f);
	if (!strstr(mode, "[never]"))
		return NULL;
	snprintf(why, sizeof(why), "transparent_hugepage/enabled is %s", strtok(mode, "\n"));
	return why;
}

static const char *hugetlb_unmet(void)
{
	static char why[160];
	long got = hugetlb_reserve(HUGETLB_PAGES);

	if (got == HUGETLB_PAGES) {
		hugetlb_release(HUGETLB_PAGES);
		return NULL;
	}
	snprintf(why, sizeof(why), "could reserve %ld of %d 2 MiB hugetlb pages (%s)", got,
		 HUGETLB_PAGES, NR_HUGEPAGES);
	return why;
}

/* The hugetlb tcase, in the runner's process: the pool lives around it. */
static void hugetlb_setup(void)
{
	ck_assert_int_eq(hugetlb_reserve(HUGETLB_PAGES), HUGETLB_PAGES);
}

static void hugetlb_teardown(void)
{
	hugetlb_release(HUGETLB_PAGES);
}

START_TEST(hugetlb_anon)
{
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
		       -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	assert_huge_pins(ctx, p, LEN);
	device_write(ctx, p, LEN, SEED_IN);
	pin_ctx_free(ctx);
	munmap(p, LEN);
}
END_TEST

/*
 * A memfd mapped MAP_SHARED: pinned, written through the pin, released, and
 * the data is in the file (pin_user_pages.rst: a page written by a device
 * must be dirty when its pin goes, or writeback may lose it).
 */
static void memfd_case(unsigned int flags, bool huge)
{
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	int fd = memfd_create("pinned", MFD_CLOEXEC | flags);
	uint64_t *back = malloc(LEN);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, LEN), 0);
	char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	/* Small pages stay small, whatever shmem_enabled says short of "force". */
	if (!huge)
		ck_assert_int_eq(madvise(p, LEN, MADV_NOHUGEPAGE), 0);
	if (huge)
		assert_huge_pins(ctx, p, LEN);
	else
		test_assert_small_pins(ctx, p, LEN);
	device_write(ctx, p, LEN, SEED_OUT);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, 0);
	ck_assert_int_eq(munmap(p, LEN), 0);
	ck_assert_int_eq(pread(fd, back, LEN, 0), (ssize_t)LEN);
	test_assert_pattern(back, LEN, SEED_OUT);
	free(back);
	close(fd);
	pin_ctx_free(ctx);
}

START_TEST(shmem_memfd)
{
	memfd_case(0, false);
}
END_TEST

/*
 * A shmem page that was only read when it was pinned: present, its page
 * table entry writable but clean.  The device writes it through the kernel's
 * mapping, which dirties nothing, and io_uring unpins without marking it
 * dirty (io_uring/rsrc.c: unpin_user_page()); reclaim would drop it as a
 * clean page and the memfd would read zeros.  libpin marks it dirty before
 * the release (pin-dirty.c), so MADV_PAGEOUT keeps the data.
 */
START_TEST(shmem_read_then_written)
{
	const size_t n = LEN / page;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	int fd = memfd_create("pinned", MFD_CLOEXEC), in = test_pattern_file(LEN, SEED_OUT);
	uint64_t *back = malloc(LEN);
	struct pin_range *r;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, LEN), 0);
	char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_eq(madvise(p, LEN, MADV_NOHUGEPAGE), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(((volatile char *)p)[i * page], 0);
	ck_assert_uint_eq(dirty_pages(p, n), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &r), 0);
	ck_assert_int_eq(test_io_fixed(ctx, false, in, p, LEN, pin_range_buf_index(r, p, LEN)),
			 (int)LEN);
	ck_assert_uint_eq(dirty_pages(p, n), 0);
	pin_range_put(r);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, LEN), 1);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, 0);
	ck_assert_uint_eq(dirty_pages(p, n), n);
	ck_assert_int_eq(madvise(p, LEN, MADV_PAGEOUT), 0);
	ck_assert_int_eq(pread(fd, back, LEN, 0), (ssize_t)LEN);
	test_assert_pattern(back, LEN, SEED_OUT);
	free(back);
	ck_assert_int_eq(munmap(p, LEN), 0);
	close(fd);
	close(in);
	pin_ctx_free(ctx);
}
END_TEST

START_TEST(hugetlb_memfd)
{
	memfd_case(MFD_HUGETLB, true);
}
END_TEST

/* In the child: its pages hold the pattern of seed, page frame by page frame
 * none of the parent's (pfn); then it writes its own and reads them back. */
static int fork_child(char *p, const uint64_t *pfn, int go, int done)
{
	const size_t n = LEN / page;
	uint64_t mine[LEN_PAGES_MAX];
	char c;

	for (size_t i = 0; i < n; i++)
		if (!test_page_ok((uint8_t *)p, i, SEED_IN))
			return 10;
	if (write(done, "r", 1) != 1 || read(go, &c, 1) != 1)
		return 11;
	/* The parent wrote through its pin meanwhile: not into this copy. */
	for (size_t i = 0; i < n; i++)
		if (!test_page_ok((uint8_t *)p, i, SEED_IN))
			return 12;
	page_frames(p, n, mine);
	for (size_t i = 0; i < n; i++)
		if (!mine[i] || mine[i] == pfn[i])
			return 13;
	memset(p, 0xcc, LEN);
	for (size_t i = 0; i < LEN; i++)
		if ((unsigned char)p[i] != 0xcc)
			return 14;
	return 0;
}

START_TEST(fork_after_pin)
{
	const size_t n = LEN / page;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = map_anon(LEN, PROT_READ | PROT_WRITE, MADV_NOHUGEPAGE);
	uint64_t pfn[LEN_PAGES_MAX], now[LEN_PAGES_MAX];
	int in = test_pattern_file(LEN, SEED_IN), out = test_pattern_file(LEN, SEED_OUT);
	int go[2], done[2], status;
	struct pin_range *r;
	char c;

	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &r), 0);
	int index = pin_range_buf_index(r, p, LEN);
	ck_assert_int_ge(index, 0);
	ck_assert_int_eq(test_io_fixed(ctx, false, in, p, LEN, index), (int)LEN);
	page_frames(p, n, pfn);
	ck_assert_int_eq(pipe2(go, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(done, O_CLOEXEC), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(fork_child(p, pfn, go[0], done[1]));
	ck_assert_int_eq(read(done[0], &c, 1), 1);
	/* The parent keeps the pinned pages: the same frames, and a device
	 * write through the pin is what the parent reads. */
	page_frames(p, n, now);
	ck_assert_mem_eq(now, pfn, n * sizeof(pfn[0]));
	ck_assert_int_eq(test_io_fixed(ctx, false, out, p, LEN, index), (int)LEN);
	test_assert_pattern(p, LEN, SEED_OUT);
	ck_assert_int_eq(write(go[1], "g", 1), 1);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	/* The child's own writes stayed in its copy. */
	test_assert_pattern(p, LEN, SEED_OUT);
	pin_range_put(r);
	pin_ctx_free(ctx);
	for (int i = 0; i < 2; i++) {
		close(go[i]);
		close(done[i]);
	}
	close(in);
	close(out);
	munmap(p, LEN);
}
END_TEST

static const struct test_needs needs_none = { 0 };
static const struct test_needs needs_thp = { .check = thp_unmet };
static const struct test_needs needs_hugetlb = { .check = hugetlb_unmet };

Suite *test_suite(void)
{
	Suite *s = test_suite_new("pin-gup");
	TCase *small = test_pin_tcase(s, "small_pages", &needs_none, setup);
	TCase *huge = test_pin_tcase(s, "hugetlb", &needs_hugetlb, setup);

	tcase_add_test(small, never_written);
	tcase_add_test(small, zero_page_unshared);
	tcase_add_test(small, shmem_memfd);
	tcase_add_test(small, shmem_read_then_written);
	tcase_add_test(small, fork_after_pin);
	tcase_add_test(test_pin_tcase(s, "thp", &needs_thp, setup), thp);
	tcase_add_unchecked_fixture(huge, hugetlb_setup, hugetlb_teardown);
	tcase_add_test(huge, hugetlb_anon);
	tcase_add_test(huge, hugetlb_memfd);
	return s;
}

const char *test_skip_reason(void)
{
	return test_pin_skip_reason();
}
