// SPDX-License-Identifier: MIT
/* Helpers of the pin areas (see test-pin-util.h). */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "test-common.h"
#include "test-pin-util.h"

/* Seconds a pin case may take: pinning and unpinning a range round by round
 * until the system-wide counters hold still. */
#define PIN_TCASE_TIMEOUT 120

char test_pin_last_log[1024];

static void capture_log(enum pin_log_level level, const char *msg, void *userdata)
{
	const enum pin_log_level *max = userdata;

	if (level <= *max)
		snprintf(test_pin_last_log, sizeof(test_pin_last_log), "%s", msg);
}

void test_pin_log_capture(enum pin_log_level max)
{
	static enum pin_log_level capture_max;

	capture_max = max;
	test_pin_last_log[0] = 0;
	pin_log_set(capture_log, &capture_max);
}

char *test_map_small(void *hint, size_t len)
{
	char *p = mmap(hint, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (hint ? MAP_FIXED_NOREPLACE : 0), -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_eq(madvise(p, len, MADV_NOHUGEPAGE), 0);
	memset(p, 0x5a, len);
	return p;
}

struct pin_ctx *test_pin_ctx_new(int backend, unsigned int flags)
{
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = backend, .flags = flags };
	struct pin_ctx *ctx = NULL;

	ck_assert_int_eq(pin_ctx_new(&o, &ctx), 0);
	return ctx;
}

struct pin_ctx_stats test_pin_stats(struct pin_ctx *ctx)
{
	struct pin_ctx_stats s = { .sz = sizeof(s) };

	ck_assert_int_eq(pin_ctx_stats(ctx, &s), 0);
	return s;
}

TCase *test_pin_tcase(Suite *s, const char *name, const struct test_needs *needs,
		      void (*setup)(void))
{
	TCase *tc = test_tcase(s, name, needs);

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, PIN_TCASE_TIMEOUT);
	return tc;
}

void test_foll_pins(uint64_t *acquired, uint64_t *released)
{
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY | O_CLOEXEC);
	char line[128];

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "1", 1), 1);
	close(fd);
	FILE *f = fopen("/proc/vmstat", "re");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "nr_foll_pin_acquired %lu", acquired);
		sscanf(line, "nr_foll_pin_released %lu", released);
	}
	fclose(f);
}

int test_pattern_file(size_t len, uint64_t seed)
{
	int fd = memfd_create("pattern", MFD_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	test_pattern_write(fd, len, seed);
	return fd;
}

void test_assert_pattern(const void *p, size_t len, uint64_t seed)
{
	const uint64_t *w = p;

	for (size_t i = 0; i < len / 8; i++)
		ck_assert_uint_eq(w[i], test_pattern(i * 8, seed));
}

int test_io_fixed(struct pin_ctx *ctx, bool write, int fd, void *buf, size_t len, int index)
{
	struct io_uring *ring = pin_ctx_io_uring(ctx);
	struct io_uring_cqe *cqe;

	ck_assert_ptr_nonnull(ring);
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	ck_assert_ptr_nonnull(sqe);
	if (write)
		io_uring_prep_write_fixed(sqe, fd, buf, (unsigned int)len, 0, index);
	else
		io_uring_prep_read_fixed(sqe, fd, buf, (unsigned int)len, 0, index);
	ck_assert_int_eq(io_uring_submit(ring), 1);
	ck_assert_int_eq(io_uring_wait_cqe(ring, &cqe), 0);
	int res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return res;
}

/* Rounds test_pin_counted() may take before it gives up on a quiet machine. */
#define QUIET_ROUNDS 20

int test_pin_counted(struct pin_ctx *ctx, void *p, size_t len, const struct test_deltas *want,
		     struct test_deltas *got)
{
	uint64_t a0, r0, a1, r1, a2 = 0, r2 = 0;
	struct pin_range *r;
	int err = 0;

	for (int round = 0; round < QUIET_ROUNDS; round++) {
		test_foll_pins(&a0, &r0);
		err = pin_range_get(ctx, p, len, &r);
		test_foll_pins(&a1, &r1);
		if (err == 0) {
			pin_range_put(r);
			ck_assert_int_eq(pin_ctx_invalidate(ctx, p, len), 1);
		}
		test_foll_pins(&a2, &r2);
		*got = (struct test_deltas){ a1 - a0, r1 - r0, a2 - a1, r2 - r1 };
		if (!memcmp(got, want, sizeof(*got)))
			break;
	}
	return err;
}

void test_assert_deltas(const struct test_deltas *got, const struct test_deltas *want)
{
	ck_assert_msg(!memcmp(got, want, sizeof(*got)),
		      "pin: +%lu acquired +%lu released, unpin: +%lu +%lu; want +%lu +%lu, +%lu "
		      "+%lu",
		      got->pin_acquired, got->pin_released, got->unpin_acquired,
		      got->unpin_released, want->pin_acquired, want->pin_released,
		      want->unpin_acquired, want->unpin_released);
}

void test_assert_small_pins(struct pin_ctx *ctx, void *p, size_t len)
{
	const size_t pages = len / (size_t)sysconf(_SC_PAGESIZE);
	const struct test_deltas want = { pages, 0, 0, pages };
	struct test_deltas got;

	ck_assert_int_eq(test_pin_counted(ctx, p, len, &want, &got), 0);
	test_assert_deltas(&got, &want);
}

/* The smallest ring: test_pin_skip_reason() only asks whether io_uring exists. */
#define PROBE_RING_ENTRIES 1

/* kernel.io_uring_disabled: 0 allows io_uring to all, 1 to CAP_SYS_ADMIN and
 * kernel.io_uring_group only, 2 to nobody; -1 when the sysctl is absent. */
static int io_uring_disabled(void)
{
	int v = -1;
	FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "re");

	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

const char *test_pin_skip_reason(void)
{
	static char why[128];
	struct io_uring ring;

	if (geteuid() != 0)
		return "needs root (/proc/sys/vm/stat_refresh, /proc/self/pagemap, RLIMIT_MEMLOCK "
		       "for 1 GiB pins, nr_hugepages)";
	int r = io_uring_queue_init(PROBE_RING_ENTRIES, &ring, 0);
	if (r == 0) {
		io_uring_queue_exit(&ring);
		return NULL;
	}
	if (r == -ENOSYS)
		return "no io_uring in this kernel (io_uring_setup: ENOSYS)";
	int disabled = io_uring_disabled();
	if (r == -EPERM && disabled > 0) {
		snprintf(why, sizeof(why), "io_uring is disabled (kernel.io_uring_disabled = %d)",
			 disabled);
		return why;
	}
	return NULL;
}
