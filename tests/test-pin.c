// SPDX-License-Identifier: MIT
/*
 * Suite pin: real pins, checked against the kernel's own counters, and the
 * registration cache's promise that it never returns a stale pin.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <valgrind/valgrind.h>

#include "pin-internal.h"
#include "test-common.h"
#include "test-pin-util.h"

#define MiB (1ul << 20)
#define GiB (1ul << 30)

static size_t page;

static void setup(void)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
	test_pin_log_capture(PIN_LOG_WARN);
}

/* Read the pattern file into [p, p + len) through the pin's buffer. */
static void read_into(struct pin_ctx *ctx, struct pin_range *r, char *p, size_t len, int fd)
{
	int index = pin_range_buf_index(r, p, len);

	ck_assert_int_ge(index, 0);
	ck_assert_int_eq(test_io_fixed(ctx, false, fd, p, len, index), (int)len);
}

START_TEST(counters_exact)
{
	const size_t len = 16 * MiB, pages = len / page;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = test_map_small(NULL, len);
	uint64_t a0, r0, a1, r1, a2, r2;
	struct pin_range *r;
	bool exact = false;

	/* The counters are system-wide and other processes may pin meanwhile:
	 * retry until one round sees only our pins. */
	for (int round = 0; round < 20 && !exact; round++) {
		long pin0 = test_status_kb("VmPin");
		test_foll_pins(&a0, &r0);
		ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
		test_foll_pins(&a1, &r1);
		ck_assert_int_eq(test_status_kb("VmPin") - pin0, (long)(len / 1024));
		pin_range_put(r);
		/* Cached: still pinned until it is dropped. */
		ck_assert_int_eq(test_status_kb("VmPin") - pin0, (long)(len / 1024));
		ck_assert_int_eq(pin_ctx_invalidate(ctx, p, len), 1);
		test_foll_pins(&a2, &r2);
		ck_assert_int_eq(test_status_kb("VmPin"), pin0);
		exact = a1 - a0 == pages && r1 - r0 == 0 && a2 - a1 == 0 && r2 - r1 == pages;
	}
	ck_assert_msg(exact, "pin: +%lu acquired +%lu released; unpin: +%lu +%lu; want %zu",
		      a1 - a0, r1 - r0, a2 - a1, r2 - r1, pages);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, 0);
	pin_ctx_free(ctx);
	munmap(p, len);
}
END_TEST

START_TEST(cache_hits_and_limits)
{
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = PIN_BACKEND_IO_URING, .max_idle = 2 };
	struct pin_range *r[4];
	struct pin_ctx *ctx;
	char *p = test_map_small(NULL, 5 * MiB);

	ck_assert_int_eq(pin_ctx_new(&o, &ctx), 0);
	ck_assert_str_eq(pin_ctx_backend_name(ctx), "io_uring");
	ck_assert_int_eq(pin_ctx_backend(ctx), PIN_BACKEND_IO_URING);
	ck_assert_int_eq(pin_range_get(ctx, p + 10, MiB, &r[0]), 0);
	ck_assert_ptr_eq(pin_range_addr(r[0]), p);
	ck_assert_uint_eq(pin_range_len(r[0]), MiB + page);
	/* Inside the first pin: the same handle, one more reference. */
	ck_assert_int_eq(pin_range_get(ctx, p + page, 100, &r[1]), 0);
	ck_assert_ptr_eq(r[1], r[0]);
	pin_range_put(r[1]);
	pin_range_put(r[0]);
	ck_assert_int_eq(pin_range_get(ctx, p + MiB, page, &r[0]), 0);
	ck_assert_int_eq(pin_range_stale(r[0]), 0);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.hits, 2);
	ck_assert_uint_eq(s.misses, 1);
	ck_assert_uint_eq(s.idle_ranges, 0);
	pin_range_put(r[0]);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(pin_range_get(ctx, p + (size_t)(i + 2) * MiB, page, &r[i]), 0);
	for (int i = 0; i < 3; i++)
		pin_range_put(r[i]);
	s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.misses, 4);
	ck_assert_uint_eq(s.evictions, 2);
	ck_assert_uint_eq(s.idle_ranges, 2);
	ck_assert_uint_eq(s.idle_bytes, 2 * page);
	ck_assert_uint_eq(s.pinned_bytes, 2 * page);
	ck_assert_uint_eq(s.pinned_ranges, 2);
	ck_assert_uint_eq(s.unwatched, 0);
	/* Bad arguments. */
	ck_assert_int_eq(pin_range_get(ctx, p, 0, &r[0]), -EINVAL);
	ck_assert_int_eq(pin_range_get(ctx, (void *)(UINTPTR_MAX - 10), 100, &r[0]), -EOVERFLOW);
	ck_assert_int_eq(pin_range_rdma_keys(r[2], NULL, NULL), -EOPNOTSUPP);
	struct {
		struct pin_ctx_opts o;
		uint64_t future;
	} big = { .o = { .sz = sizeof(big) }, .future = 1 };
	ck_assert_int_eq(pin_ctx_new(&big.o, &ctx), -E2BIG);
	o.backend = PIN_BACKEND_MLOCK + 1;
	ck_assert_int_eq(pin_ctx_new(&o, &ctx), -EINVAL);
	pin_ctx_free(ctx);
	munmap(p, 5 * MiB);
}
END_TEST

START_TEST(split_past_1g)
{
	const size_t len = GiB + 2 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = test_map_small(NULL, len);
	int fd = test_pattern_file(64 * 1024, 7);
	struct pin_range *r;

	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	ck_assert_int_eq(pin_range_buf_count(r), 2);
	int first = pin_range_buf_index(r, p, GiB);
	int second = pin_range_buf_index(r, p + GiB, 2 * MiB);
	ck_assert_int_ge(first, 0);
	ck_assert_int_ge(second, 0);
	ck_assert_int_ne(first, second);
	ck_assert_int_eq(pin_range_buf_index(r, p + GiB - page, 2 * page), -ERANGE);
	ck_assert_int_eq(pin_range_buf_index(r, p + len, 1), -ERANGE);
	ck_assert_int_eq(pin_range_buf_index(r, p - 1, 1), -ERANGE);
	/* A read into the second buffer lands past 1 GiB, and nowhere else. */
	char *dst = p + GiB + 4 * page;
	read_into(ctx, r, dst, 64 * 1024, fd);
	test_assert_pattern(dst, 64 * 1024, 7);
	ck_assert_int_eq(dst[-1], 0x5a);
	ck_assert_int_eq(dst[64 * 1024], 0x5a);
	ck_assert_int_eq(p[4 * page], 0x5a);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, len);
	pin_range_put(r);
	pin_ctx_free(ctx);
	close(fd);
	munmap(p, len);
}
END_TEST

START_TEST(table_full)
{
	const size_t n = PIN_IOURING_SLOTS + 1;
	struct pin_ctx_opts o = { .sz = sizeof(o),
				  .backend = PIN_BACKEND_IO_URING,
				  .flags = PIN_CTX_NO_MONITOR,
				  .max_idle = n };
	struct pin_range **r = calloc(n, sizeof(*r));
	char *p = test_map_small(NULL, n * page);
	struct pin_ctx *ctx;

	ck_assert_int_eq(pin_ctx_new(&o, &ctx), 0);
	for (size_t i = 0; i < n - 1; i++)
		ck_assert_int_eq(pin_range_get(ctx, p + i * page, page, &r[i]), 0);
	ck_assert_int_eq(pin_range_get(ctx, p + (n - 1) * page, page, &r[n - 1]), -ENOSPC);
	/* An idle pin gives its slot up. */
	pin_range_put(r[5]);
	ck_assert_int_eq(pin_range_get(ctx, p + (n - 1) * page, page, &r[n - 1]), 0);
	ck_assert_int_eq(pin_range_buf_index(r[n - 1], p + (n - 1) * page, page),
			 pin_range_buf_index(r[0], p, page) + 5);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.evictions, 1);
	ck_assert_uint_eq(s.pinned_ranges, PIN_IOURING_SLOTS);
	for (size_t i = 0; i < n; i++)
		if (i != 5)
			pin_range_put(r[i]);
	pin_ctx_free(ctx);
	free(r);
	munmap(p, n * page);
}
END_TEST

static int drop_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data) < 0)
		return -errno;
	data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
	data[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
	return syscall(SYS_capset, &hdr, data) < 0 ? -errno : 0;
}

/* In a child without CAP_IPC_LOCK under a 64 KiB RLIMIT_MEMLOCK: pinning
 * 1 MiB fails with ENOMEM and a message naming the limit and the sizes. */
static int memlock_child(int backend)
{
	struct rlimit rl = { .rlim_cur = 64 * 1024, .rlim_max = 64 * 1024 };
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = backend };
	struct pin_range *r;
	struct pin_ctx *ctx;
	char *p = test_map_small(NULL, MiB);

	if (drop_ipc_lock() < 0 || setrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		return 10;
	/* io_uring decides at ring creation whether to charge the limit. */
	if (pin_ctx_new(&o, &ctx) < 0)
		return 11;
	int err = pin_range_get(ctx, p, MiB, &r);
	if (err != -ENOMEM)
		return 12;
	if (!strstr(test_pin_last_log, "RLIMIT_MEMLOCK is 65536 bytes") ||
	    !strstr(test_pin_last_log, "asked for 1048576 more") ||
	    !strstr(test_pin_last_log, "CAP_IPC_LOCK"))
		return 13;
	if (test_pin_stats(ctx).pinned_bytes != 0)
		return 14;
	pin_ctx_free(ctx);
	return 0;
}

static void memlock_case(int backend)
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(memlock_child(backend));
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}

START_TEST(memlock_iouring)
{
	memlock_case(PIN_BACKEND_IO_URING);
}
END_TEST

START_TEST(memlock_mlock)
{
	memlock_case(PIN_BACKEND_MLOCK);
}
END_TEST

/* Pin 64 MiB and leave it cached; returns the mapping. */
static char *pin_cached(struct pin_ctx *ctx, size_t len)
{
	struct pin_range *r;
	char *p = test_map_small(NULL, len);

	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	pin_range_put(r);
	ck_assert_uint_eq(test_pin_stats(ctx).idle_ranges, 1);
	return p;
}

/* After the change: the lookup pins anew, the old pin is gone, and a
 * READ_FIXED through the new pin lands in what the process reads.  events:
 * the userfaultfd events the change sent the monitor (0: under valgrind the
 * monitor watches discards only, and pin_ctx_invalidate() reported it). */
static void assert_repinned(struct pin_ctx *ctx, char *p, size_t len, long pin0,
			    unsigned int events)
{
	int fd = test_pattern_file(page, 3);
	struct pin_range *r;

	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.misses, 2);
	ck_assert_uint_eq(s.hits, 0);
	ck_assert_uint_eq(s.invalidations, 1);
	ck_assert_uint_eq(s.events, events);
	ck_assert_uint_eq(s.pinned_ranges, 1);
	ck_assert_uint_eq(s.pinned_bytes, len);
	ck_assert_int_eq(test_status_kb("VmPin") - pin0, (long)(len / 1024));
	char *mid = p + len / 2;
	read_into(ctx, r, mid, page, fd);
	test_assert_pattern(mid, page, 3);
	pin_range_put(r);
	close(fd);
}

START_TEST(stale_dontneed)
{
	const size_t len = 64 * MiB;
	long pin0 = test_status_kb("VmPin");
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = pin_cached(ctx, len);

	ck_assert_int_eq(madvise(p + len / 2, page, MADV_DONTNEED), 0);
	ck_assert_int_eq(p[len / 2], 0);
	assert_repinned(ctx, p, len, pin0, 1); /* REMOVE */
	pin_ctx_free(ctx);
	munmap(p, len);
}
END_TEST

START_TEST(stale_dontneed_held)
{
	const size_t len = 8 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = test_map_small(NULL, len);
	struct pin_range *old, *cur;

	ck_assert_int_eq(pin_range_get(ctx, p, len, &old), 0);
	ck_assert_int_eq(madvise(p + page, page, MADV_DONTNEED), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, len, &cur), 0);
	ck_assert_ptr_ne(cur, old);
	ck_assert_int_eq(pin_range_stale(old), 1);
	ck_assert_int_eq(pin_range_stale(cur), 0);
	/* The stale pin holds its pages until its last handle goes. */
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, 2 * len);
	pin_range_put(old);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_bytes, len);
	pin_range_put(cur);
	pin_ctx_free(ctx);
	munmap(p, len);
}
END_TEST

/* Pin 64 MiB and leave it cached, let replace() put new memory there, and
 * check the lookup that follows. */
static void check_replaced(void (*replace)(char *p, size_t len))
{
	const size_t len = 64 * MiB;
	long pin0 = test_status_kb("VmPin");
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = pin_cached(ctx, len);

	/* Valgrind would hang the unmap (see pin-monitor.c): say it ourselves. */
	if (RUNNING_ON_VALGRIND)
		ck_assert_int_eq(pin_ctx_invalidate(ctx, p, len), 1);
	replace(p, len);
	assert_repinned(ctx, p, len, pin0, RUNNING_ON_VALGRIND ? 0 : 1); /* UNMAP */
	pin_ctx_free(ctx);
	munmap(p, len);
}

static void unmap_map_again(char *p, size_t len)
{
	ck_assert_int_eq(munmap(p, len), 0);
	ck_assert_ptr_eq(test_map_small(p, len), p);
}

/* A new mapping on top unmaps the old one. */
static void map_over(char *p, size_t len)
{
	ck_assert_ptr_eq(mmap(p, len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
			 p);
	ck_assert_int_eq(madvise(p, len, MADV_NOHUGEPAGE), 0);
	ck_assert_int_eq(p[0], 0);
}

START_TEST(stale_munmap)
{
	check_replaced(unmap_map_again);
}
END_TEST

START_TEST(stale_map_fixed)
{
	check_replaced(map_over);
}
END_TEST

START_TEST(stale_munmap_one_page)
{
	const size_t len = 64 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = pin_cached(ctx, len);
	int fd = test_pattern_file(page, 4);
	struct pin_range *r;

	if (RUNNING_ON_VALGRIND)
		ck_assert_int_eq(pin_ctx_invalidate(ctx, p + len / 2, page), 1);
	ck_assert_int_eq(munmap(p + len / 2, page), 0);
	/* What is left mapped below the hole is pinned anew. */
	ck_assert_int_eq(pin_range_get(ctx, p, len / 2, &r), 0);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.misses, 2);
	ck_assert_uint_eq(s.invalidations, 1);
	ck_assert_uint_eq(s.pinned_bytes, len / 2);
	read_into(ctx, r, p + page, page, fd);
	test_assert_pattern(p + page, page, 4);
	pin_range_put(r);
	/* The hole cannot be pinned. */
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), -EFAULT);
	pin_ctx_free(ctx);
	close(fd);
	munmap(p, len);
}
END_TEST

START_TEST(stale_mremap)
{
	const size_t len = 64 * MiB;
	long pin0 = test_status_kb("VmPin");
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = pin_cached(ctx, len);
	char *q = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct pin_uffd *u;

	ck_assert_ptr_ne(q, MAP_FAILED);
	if (RUNNING_ON_VALGRIND)
		ck_assert_int_eq(pin_ctx_invalidate(ctx, p, len), 1);
	ck_assert_ptr_eq(mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, q), q);
	ck_assert_int_eq(q[0], 0x5a);
	ck_assert_ptr_eq(test_map_small(p, len), p);
	/* REMAP, then UNMAP of the range it left. */
	assert_repinned(ctx, p, len, pin0, RUNNING_ON_VALGRIND ? 0 : 2);
	/* The registration that moved along with the mapping was dropped: another
	 * userfaultfd may register there. */
	ck_assert_int_eq(pin_uffd_new(NULL, &u), 0);
	ck_assert_int_eq(pin_uffd_register(u, q, len, PIN_UFFD_REGISTER_WP, NULL), 0);
	pin_uffd_free(u);
	pin_ctx_free(ctx);
	munmap(p, len);
	munmap(q, len);
}
END_TEST

START_TEST(fork_keeps_parent_coherent)
{
	const size_t len = 4 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = test_map_small(NULL, len);
	int in = test_pattern_file(page, 9);
	int out = memfd_create("out", MFD_CLOEXEC);
	struct pin_range *r;
	char back[256];
	int status;

	ck_assert_int_ge(out, 0);
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* The child writes its own copy of the pages. */
		memset(p, 0xcc, len);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(status, 0);
	ck_assert_int_eq(p[0], 0x5a);
	/* Parent writes after the fork go out through the pin... */
	memset(p, 0x77, sizeof(back));
	int index = pin_range_buf_index(r, p, sizeof(back));
	ck_assert_int_eq(test_io_fixed(ctx, true, out, p, sizeof(back), index), (int)sizeof(back));
	ck_assert_int_eq(pread(out, back, sizeof(back), 0), (ssize_t)sizeof(back));
	for (size_t i = 0; i < sizeof(back); i++)
		ck_assert_int_eq(back[i], 0x77);
	/* ...and reads through it land where the parent looks. */
	read_into(ctx, r, p + page, page, in);
	test_assert_pattern(p + page, page, 9);
	pin_range_put(r);
	pin_ctx_free(ctx);
	close(in);
	close(out);
	munmap(p, len);
}
END_TEST

/* The child's copy of a context refuses, and freeing it leaves the
 * parent's pins, ring buffers and monitor as they were.  The child reports
 * by exit status: the step that failed. */
static int child_refuses(struct pin_ctx *ctx, char *p, size_t len, struct pin_range *r)
{
	struct pin_ctx_stats st = { .sz = sizeof(st) };
	struct pin_range *again;

	if (pin_range_get(ctx, p, len, &again) != -ECHILD)
		return 1;
	if (pin_ctx_invalidate(ctx, p, len) != -ECHILD)
		return 2;
	if (pin_ctx_stats(ctx, &st) != -ECHILD)
		return 3;
	pin_range_put(r);
	pin_ctx_free(ctx);
	return 0;
}

START_TEST(fork_child_refused)
{
	const size_t len = 4 * MiB;
	long pin0 = test_status_kb("VmPin");
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = pin_cached(ctx, len);
	int in = test_pattern_file(page, 4);
	struct pin_range *r;
	int status;

	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(child_refuses(ctx, p, len, r));
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child step %d failed",
		      WEXITSTATUS(status));
	/* The parent's buffer is still registered in the shared ring... */
	read_into(ctx, r, p + page, page, in);
	test_assert_pattern(p + page, page, 4);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.hits, 1);
	ck_assert_uint_eq(s.pinned_ranges, 1);
	ck_assert_int_eq(test_status_kb("VmPin") - pin0, (long)(len / 1024));
	pin_range_put(r);
	/* ...and its monitor still sees a discard. */
	ck_assert_int_eq(madvise(p + len / 2, page, MADV_DONTNEED), 0);
	ck_assert_int_eq(p[len / 2], 0);
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.misses, 2);
	ck_assert_uint_eq(s.invalidations, 1);
	ck_assert_uint_eq(s.events, 1); /* REMOVE */
	ck_assert_uint_eq(s.pinned_ranges, 1);
	read_into(ctx, r, p + len / 2, page, in);
	test_assert_pattern(p + len / 2, page, 4);
	pin_range_put(r);
	pin_ctx_free(ctx);
	close(in);
	munmap(p, len);
}
END_TEST

START_TEST(watch_takes_no_fault)
{
	const size_t len = 4 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	/* Unpopulated and registered: reads see zeros, writes stick, and the
	 * monitor hears nothing. */
	ck_assert_int_eq(pin_monitor_watch(ctx->mon, (uintptr_t)p, (uintptr_t)p + len), 0);
	for (size_t off = 0; off < len; off += page)
		ck_assert_int_eq(p[off], 0);
	for (size_t off = 0; off < len; off += page)
		p[off + 1] = (char)(off / page);
	for (size_t off = 0; off < len; off += page)
		ck_assert_int_eq(p[off + 1], (char)(off / page));
	ck_assert_uint_eq(test_pin_stats(ctx).events, 0);
	ck_assert_uint_eq(pin_monitor_faults(ctx->mon), 0);
	/* Registered it is: a discard is reported. */
	ck_assert_int_eq(madvise(p, page, MADV_DONTNEED), 0);
	ck_assert_uint_eq(test_pin_stats(ctx).events, 1);
	pin_monitor_unwatch(ctx->mon, (uintptr_t)p, (uintptr_t)p + len);
	pin_ctx_free(ctx);
	munmap(p, len);
}
END_TEST

START_TEST(unwatch_in_background)
{
	const size_t len = 8 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = pin_cached(ctx, len);
	struct pin_range *r;
	struct pin_uffd *u;
	int err = -EBUSY;

	/* Dropped, then taken back at once: still watched, the discard is seen. */
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, len), 1);
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	pin_range_put(r);
	ck_assert_int_eq(madvise(p + page, page, MADV_DONTNEED), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	pin_range_put(r);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.misses, 3);
	ck_assert_uint_eq(s.invalidations, 2);
	ck_assert_uint_eq(s.unwatched, 0);
	/* Pinned right after the discard, the last pin was never cached: its
	 * put dropped it for good.  The monitor thread unregisters the range,
	 * after which another userfaultfd may take it. */
	ck_assert_uint_eq(s.pinned_ranges, 0);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, len), 0);
	ck_assert_int_eq(pin_uffd_new(NULL, &u), 0);
	for (int i = 0; i < 10000 && err == -EBUSY; i++) {
		err = pin_uffd_register(u, p, len, PIN_UFFD_REGISTER_WP, NULL);
		if (err == -EBUSY)
			usleep(1000);
	}
	ck_assert_int_eq(err, 0);
	pin_uffd_free(u);
	pin_ctx_free(ctx);
	munmap(p, len);
}
END_TEST

#define LOOKERS 2
/* Discards (each followed by a checked lookup) while the lookers run. */
#define STRESS_DISCARDS 300
/* Polls, 1 ms apart, for every looker to have done a lookup. */
#define START_TRIES 10000

struct stress {
	struct pin_ctx *ctx;
	char *p;
	size_t pages;
	atomic_bool stop;
	atomic_uint started; /* lookers past their first lookup (or failed) */
};

/* A lookup thread: what it did, and its first failure. */
struct looker {
	pthread_t thread;
	struct stress *st;
	unsigned long lookups;
	int err; /* 0, or what pin_range_get() returned for [first, +n) pages */
	size_t first, n;
};

static void *lookup_loop(void *arg)
{
	struct looker *lk = arg;
	struct stress *st = lk->st;
	unsigned int seed = (unsigned int)(uintptr_t)&seed;

	while (!atomic_load(&st->stop)) {
		size_t first = (size_t)rand_r(&seed) % st->pages;
		size_t n = 1 + (size_t)rand_r(&seed) % (st->pages - first);
		struct pin_range *r;
		int ret = pin_range_get(st->ctx, st->p + first * page, n * page, &r);
		if (ret < 0) {
			lk->err = ret;
			lk->first = first;
			lk->n = n;
			break;
		}
		pin_range_put(r);
		if (!lk->lookups++)
			atomic_fetch_add(&st->started, 1);
	}
	if (!lk->lookups)
		atomic_fetch_add(&st->started, 1);
	return NULL;
}

START_TEST(threads_never_see_stale)
{
	struct stress st = { .ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0), .pages = 64 };
	int fd = test_pattern_file(page, 5);
	struct looker lk[LOOKERS] = { 0 };
	unsigned int seed = 1;

	st.p = test_map_small(NULL, st.pages * page);
	for (int i = 0; i < LOOKERS; i++) {
		lk[i].st = &st;
		ck_assert_int_eq(pthread_create(&lk[i].thread, NULL, lookup_loop, &lk[i]), 0);
	}
	/* The discards below must race the lookers' lookups. */
	for (int i = 0; i < START_TRIES && atomic_load(&st.started) < LOOKERS; i++)
		usleep(1000);
	ck_assert_msg(atomic_load(&st.started) == LOOKERS, "%u of %d lookup threads started",
		      atomic_load(&st.started), LOOKERS);
	/* Each discard in this thread is followed by a lookup here: it must pin
	 * the new page, which a READ_FIXED through it proves. */
	for (int i = 0; i < STRESS_DISCARDS; i++) {
		char *x = st.p + (size_t)rand_r(&seed) % st.pages * page;
		struct pin_range *r;
		ck_assert_int_eq(madvise(x, page, MADV_DONTNEED), 0);
		ck_assert_int_eq(pin_range_get(st.ctx, x, page, &r), 0);
		read_into(st.ctx, r, x, page, fd);
		test_assert_pattern(x, page, 5);
		pin_range_put(r);
	}
	atomic_store(&st.stop, true);
	for (int i = 0; i < LOOKERS; i++) {
		ck_assert_int_eq(pthread_join(lk[i].thread, NULL), 0);
		ck_assert_msg(lk[i].err == 0,
			      "lookup thread %d, after %lu lookups: pin_range_get of pages "
			      "[%zu, +%zu): %s",
			      i, lk[i].lookups, lk[i].first, lk[i].n, strerror(-lk[i].err));
	}
	struct pin_ctx_stats s = test_pin_stats(st.ctx);
	/* Every handle is put: what is still pinned is idle in the cache. */
	ck_assert_uint_eq(s.pinned_ranges, s.idle_ranges);
	ck_assert_uint_eq(s.pinned_bytes, s.idle_bytes);
	pin_ctx_free(st.ctx);
	close(fd);
	munmap(st.p, st.pages * page);
}
END_TEST

START_TEST(busy_range_falls_back)
{
	const size_t len = 2 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, 0);
	char *p = test_map_small(NULL, len);
	struct pin_range *r;
	struct pin_uffd *u;

	/* The application's own userfaultfd holds the range (populated first:
	 * its MISSING faults would have no handler here). */
	ck_assert_int_eq(pin_uffd_new(NULL, &u), 0);
	ck_assert_int_eq(pin_uffd_register(u, p, len, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	ck_assert_ptr_nonnull(strstr(test_pin_last_log, "pin_ctx_invalidate()"));
	pin_range_put(r);
	ck_assert_uint_eq(test_pin_stats(ctx).unwatched, 1);
	ck_assert_int_eq(madvise(p, page, MADV_DONTNEED), 0);
	/* Unseen by the monitor: only the explicit call drops the pin. */
	ck_assert_uint_eq(test_pin_stats(ctx).events, 0);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p + page, 1), 1);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, len), 0);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.invalidations, 1);
	ck_assert_uint_eq(s.unwatched, 0);
	ck_assert_uint_eq(s.pinned_bytes, 0);
	pin_ctx_free(ctx);
	pin_uffd_free(u);
	munmap(p, len);
}
END_TEST

START_TEST(no_monitor_needs_invalidate)
{
	const size_t len = 2 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_IO_URING, PIN_CTX_NO_MONITOR);
	char *p = pin_cached(ctx, len);
	struct pin_range *r;

	ck_assert_int_eq(madvise(p, page, MADV_DONTNEED), 0);
	/* Without the monitor nobody saw it: the stale pin is still cached. */
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	pin_range_put(r);
	ck_assert_uint_eq(test_pin_stats(ctx).hits, 1);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, page), 1);
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	pin_range_put(r);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.misses, 2);
	ck_assert_uint_eq(s.events, 0);
	pin_ctx_free(ctx);
	munmap(p, len);
}
END_TEST

START_TEST(mlock_is_not_foll_pin)
{
	const size_t len = 4 * MiB;
	struct pin_ctx *ctx = test_pin_ctx_new(PIN_BACKEND_MLOCK, 0);
	char *p = test_map_small(NULL, len);
	long lck0 = test_status_kb("VmLck"), pin0 = test_status_kb("VmPin");
	struct pin_range *a, *b;

	ck_assert_str_eq(pin_ctx_backend_name(ctx), "mlock");
	ck_assert_int_eq(pin_range_get(ctx, p, 2 * MiB, &a), 0);
	ck_assert_int_eq(pin_range_get(ctx, p + MiB, 2 * MiB, &b), 0);
	ck_assert_int_eq(test_status_kb("VmLck") - lck0, 3 * 1024);
	ck_assert_int_eq(test_status_kb("VmPin"), pin0);
	ck_assert_int_eq(pin_range_buf_count(a), -EOPNOTSUPP);
	ck_assert_ptr_null(pin_ctx_io_uring(ctx));
	ck_assert_int_eq(pin_ctx_ring_fd(ctx), -EOPNOTSUPP);
	/* Dropping one keeps what the other covers locked. */
	pin_range_put(a);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, page), 1);
	ck_assert_int_eq(test_status_kb("VmLck") - lck0, 2 * 1024);
	pin_range_put(b);
	pin_ctx_free(ctx);
	ck_assert_int_eq(test_status_kb("VmLck"), lck0);
	munmap(p, len);
}
END_TEST

/* Whether the kernel has an RDMA device with a verbs interface: what
 * libibverbs lists (/sys/class/infiniband_verbs/uverbsN). */
static bool rdma_device(void)
{
	DIR *dir = opendir("/sys/class/infiniband_verbs");
	bool found = false;

	if (!dir) {
		ck_assert_int_eq(errno, ENOENT);
		return false;
	}
	for (struct dirent *e; !found && (e = readdir(dir));)
		found = !strncmp(e->d_name, "uverbs", strlen("uverbs"));
	closedir(dir);
	return found;
}

/* The RDMA backend as this build and machine allow: built without
 * libibverbs, -EOPNOTSUPP; no device, -ENODEV; a device, a context on it
 * (test-pin-rdma goes further).  Chosen automatically, RDMA when it can. */
START_TEST(rdma_backend_as_the_machine_allows)
{
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = PIN_BACKEND_RDMA };
	struct pin_ctx *ctx = (struct pin_ctx *)&o;
	int want_auto = PIN_BACKEND_IO_URING;
	int r = pin_ctx_new(&o, &ctx);

#ifdef HAVE_RDMA
	if (rdma_device()) {
		ck_assert_msg(r == 0, "an RDMA device is listed, but pin_ctx_new: %s (%s)",
			      strerror(-r), test_pin_last_log);
		ck_assert_str_eq(pin_ctx_backend_name(ctx), "rdma");
		pin_ctx_free(ctx);
		want_auto = PIN_BACKEND_RDMA;
	} else {
		ck_assert_int_eq(r, -ENODEV);
		ck_assert_ptr_nonnull(strstr(test_pin_last_log, "no RDMA device"));
	}
#else
	ck_assert_int_eq(r, -EOPNOTSUPP);
#endif
	/* Untouched on failure. */
	if (r < 0)
		ck_assert_ptr_eq(ctx, (struct pin_ctx *)&o);
	ctx = test_pin_ctx_new(PIN_BACKEND_AUTO, 0);
	ck_assert_int_eq(pin_ctx_backend(ctx), want_auto);
	pin_ctx_free(ctx);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("pin");
	TCase *io = tcase_create("io_uring");
	TCase *stale = tcase_create("stale");
	TCase *other = tcase_create("other");
	/* Alone in its tcase: scripts/mutate runs it (CK_RUN_CASE). */
	TCase *forked = tcase_create("fork_child_refused");

	tcase_add_checked_fixture(io, setup, NULL);
	tcase_add_checked_fixture(stale, setup, NULL);
	tcase_add_checked_fixture(other, setup, NULL);
	tcase_add_checked_fixture(forked, setup, NULL);
	tcase_set_timeout(io, 600);
	tcase_set_timeout(stale, 600);
	tcase_set_timeout(other, 600);
	tcase_add_test(io, counters_exact);
	tcase_add_test(io, cache_hits_and_limits);
	tcase_add_test(io, split_past_1g);
	tcase_add_test(io, table_full);
	tcase_add_test(io, memlock_iouring);
	tcase_add_test(stale, stale_dontneed);
	tcase_add_test(stale, stale_dontneed_held);
	tcase_add_test(stale, stale_munmap);
	tcase_add_test(stale, stale_map_fixed);
	tcase_add_test(stale, stale_munmap_one_page);
	tcase_add_test(stale, stale_mremap);
	tcase_add_test(stale, fork_keeps_parent_coherent);
	tcase_add_test(stale, watch_takes_no_fault);
	tcase_add_test(stale, unwatch_in_background);
	tcase_add_test(stale, threads_never_see_stale);
	tcase_add_test(stale, busy_range_falls_back);
	tcase_add_test(stale, no_monitor_needs_invalidate);
	tcase_add_test(other, mlock_is_not_foll_pin);
	tcase_add_test(other, memlock_mlock);
	tcase_add_test(other, rdma_backend_as_the_machine_allows);
	tcase_add_test(forked, fork_child_refused);
	suite_add_tcase(s, io);
	suite_add_tcase(s, stale);
	suite_add_tcase(s, other);
	suite_add_tcase(s, forked);
	return s;
}

const char *test_skip_reason(void)
{
	return test_pin_skip_reason();
}
