// SPDX-License-Identifier: MIT
/*
 * Area pin-refused (suite pin): the memory pin_user_pages() refuses to pin
 * long-term (mm/gup.c): memfd_secret, a MAP_SHARED file on a filesystem
 * with dirty tracking, PROT_NONE, no PROT_WRITE, a hole.  Each refusal is
 * -EFAULT with exact counter deltas, and libpin's log names the call, the
 * errno, the range and the cause it read from /proc/self/maps.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <valgrind/valgrind.h>

#include "pin-internal.h"
#include "test-common.h"
#include "test-pin-util.h"

#define MiB (1ul << 20)
#define LEN (4 * MiB)
#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif

static size_t page;

static void setup(void)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
	test_pin_log_capture(PIN_LOG_ERR);
}

/*
 * A refusal: pin_range_get() fails with -EFAULT, the counters move by want
 * (pages pinned before the refusal are given back), nothing stays pinned,
 * and the log names the call, the errno, the range and why ("[a, b) cause").
 */
static void assert_refused(void *p, size_t len, const struct test_deltas *want, const char *at,
			   size_t at_len, const char *cause)
{
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char head[128], part[128];
	struct test_deltas got;

	ck_assert_int_eq(test_pin_counted(ctx, p, len, want, &got), -EFAULT);
	test_assert_deltas(&got, want);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, 0);
	snprintf(head, sizeof(head), "io_uring buffer registration [%p, +%#zx): Bad address: ", p,
		 len);
	snprintf(part, sizeof(part), "[%p, %p) ", at, at + at_len);
	ck_assert_msg(!strncmp(test_pin_last_log, head, strlen(head)), "log: %s",
		      test_pin_last_log);
	ck_assert_msg(strstr(test_pin_last_log, part) && strstr(test_pin_last_log, cause),
		      "log: %s; want %s%s", test_pin_last_log, part, cause);
	pin_ctx_free(ctx);
}

/* The fast path grabs the first present page before it sees the mapping's
 * kind, and gives that pin back; a page not yet there costs nothing. */
static const struct test_deltas none = { 0, 0, 0, 0 };
static const struct test_deltas first_page = { 1, 1, 0, 0 };

static int secretmem(void)
{
	return (int)syscall(SYS_memfd_secret, 0);
}

static const char *secretmem_unmet(void)
{
	static char why[160];
	int fd = secretmem();

	if (fd >= 0) {
		close(fd);
		return NULL;
	}
	snprintf(why, sizeof(why), "memfd_secret: %s (secretmem.enable=0 or not built%s)",
		 strerror(errno), RUNNING_ON_VALGRIND ? ", or valgrind" : "");
	return why;
}

START_TEST(refused_secretmem)
{
	int fd = secretmem();

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, LEN), 0);
	char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	assert_refused(p, LEN, &none, p, LEN, "is memfd_secret memory");
	memset(p, 0x5a, LEN);
	assert_refused(p, LEN, &first_page, p, LEN, "is memfd_secret memory");
	/* mlock(2) cannot populate it either. */
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = PIN_BACKEND_MLOCK };
	struct pin_ctx *ctx;
	struct pin_range *r;
	char want[160];
	ck_assert_int_eq(pin_ctx_new(&o, &ctx), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &r), -ENOMEM);
	snprintf(want, sizeof(want), "mlock [%p, +%#zx): %s: [%p, %p) is memfd_secret memory", p,
		 LEN, strerror(ENOMEM), p, p + LEN);
	ck_assert_msg(!strncmp(test_pin_last_log, want, strlen(want)), "log: %s; want %s",
		      test_pin_last_log, want);
	pin_ctx_free(ctx);
	munmap(p, LEN);
	close(fd);
}
END_TEST

/* A file in the working directory (meson's build directory). */
static int cwd_file(char *path, size_t len)
{
	snprintf(path, len, "pin-gup-XXXXXX");
	int fd = mkostemp(path, O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, LEN), 0);
	return fd;
}

static const char *cwd_unmet(void)
{
	static char why[160];
	struct statfs fs;

	if (statfs(".", &fs) < 0) {
		snprintf(why, sizeof(why), "statfs of the working directory: %s", strerror(errno));
		return why;
	}
	if (fs.f_type != TMPFS_MAGIC && fs.f_type != HUGETLBFS_MAGIC)
		return NULL;
	return "the working directory is on tmpfs or hugetlbfs, whose pages can be pinned: run "
	       "from a disk filesystem";
}

START_TEST(refused_shared_file)
{
	char name[64], cause[512];
	int fd = cwd_file(name, sizeof(name));
	char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	char *priv = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	char cwd[256];

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_ptr_ne(priv, MAP_FAILED);
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	ck_assert_int_eq(unlink(name), 0);
	snprintf(cause, sizeof(cause), "is a MAP_SHARED mapping of the file %s/%s (deleted)", cwd,
		 name);
	assert_refused(p, LEN, &none, p, LEN, cause);
	memset(p, 0x5a, LEN);
	assert_refused(p, LEN, &first_page, p, LEN, cause);
	/* MAP_PRIVATE: the pin breaks COW into anonymous pages, which it may hold. */
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	test_assert_small_pins(ctx, priv, LEN);
	pin_ctx_free(ctx);
	munmap(p, LEN);
	munmap(priv, LEN);
	close(fd);
}
END_TEST

START_TEST(refused_prot)
{
	char *p = mmap(NULL, 2 * LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	const struct test_deltas half = { LEN / page, LEN / page, 0, 0 };
	const struct test_deltas one = { 1, 1, 0, 0 };

	ck_assert_ptr_ne(p, MAP_FAILED);
	/* Small pages: one pin each. */
	ck_assert_int_eq(madvise(p, 2 * LEN, MADV_NOHUGEPAGE), 0);
	memset(p, 0x5a, 2 * LEN);
	ck_assert_int_eq(mprotect(p + LEN, LEN, PROT_NONE), 0);
	assert_refused(p + LEN, LEN, &none, p + LEN, LEN, "is PROT_NONE");
	/* The first half is pinned, and given back when the second refuses. */
	assert_refused(p, 2 * LEN, &half, p + LEN, LEN, "is PROT_NONE");
	ck_assert_int_eq(mprotect(p + LEN, LEN, PROT_READ), 0);
	assert_refused(p + LEN, LEN, &none, p + LEN, LEN,
		       "is mapped without PROT_WRITE, and pins are taken for writing");
	/* A hole after the first page. */
	ck_assert_int_eq(munmap(p + page, LEN - page), 0);
	assert_refused(p, 2 * page, &one, p + page, page, "is not mapped");
	munmap(p, page);
	munmap(p + LEN, LEN);
}
END_TEST

/* mlock(2) fails with ENOMEM where it cannot populate: the log names the
 * part (PROT_NONE, a hole), not RLIMIT_MEMLOCK.  A read-only mapping it locks. */
START_TEST(mlock_refused)
{
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = PIN_BACKEND_MLOCK };
	char *p = mmap(NULL, 3 * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct pin_range *r;
	struct pin_ctx *ctx;
	char want[160];

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_eq(pin_ctx_new(&o, &ctx), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, 3 * page, &r), 0);
	pin_range_put(r);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, 3 * page), 1);
	ck_assert_int_eq(mprotect(p + page, page, PROT_NONE), 0);
	ck_assert_int_eq(munmap(p + 2 * page, page), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, 2 * page, &r), -ENOMEM);
	snprintf(want, sizeof(want), "mlock [%p, +%#zx): %s: [%p, %p) is PROT_NONE", p, 2 * page,
		 strerror(ENOMEM), p + page, p + 2 * page);
	ck_assert_str_eq(test_pin_last_log, want);
	ck_assert_int_eq(mprotect(p + page, page, PROT_READ), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, 3 * page, &r), -ENOMEM);
	snprintf(want, sizeof(want), "mlock [%p, +%#zx): %s: [%p, %p) is not mapped", p, 3 * page,
		 strerror(ENOMEM), p + 2 * page, p + 3 * page);
	ck_assert_str_eq(test_pin_last_log, want);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, 0);
	pin_ctx_free(ctx);
	munmap(p, 2 * page);
}
END_TEST

static const struct test_needs needs_none = { 0 };
static const struct test_needs needs_secretmem = { .check = secretmem_unmet };
static const struct test_needs needs_disk = { .check = cwd_unmet };

Suite *test_suite(void)
{
	Suite *s = test_suite_new("pin-refused");
	TCase *prot = test_pin_tcase(s, "prot", &needs_none, setup);

	tcase_add_test(prot, refused_prot);
	tcase_add_test(prot, mlock_refused);
	tcase_add_test(test_pin_tcase(s, "secretmem", &needs_secretmem, setup), refused_secretmem);
	tcase_add_test(test_pin_tcase(s, "shared_file", &needs_disk, setup), refused_shared_file);
	return s;
}

const char *test_skip_reason(void)
{
	return test_pin_skip_reason();
}
