// SPDX-License-Identifier: MIT
/*
 * Suite pin, area pin-ring: the io_uring backend pins into a ring of the
 * caller's (issue 16, item 6), given by its descriptor with a range of slots
 * of the sparse buffer table the caller registered.  The caller's own
 * READ_FIXED through the index libpin chose lands in the pinned pages; the
 * kernel's pin counters move by the pages exactly; an unpinned or stale
 * pin's slot is empty again (a READ_FIXED on it fails with the kernel's
 * EFAULT, io_uring/rsrc.c io_import_reg_buf); a full range, a bad descriptor,
 * a ring without a table and the rest fail with the kernel's errno.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin.h"
#include "test-common.h"
#include "test-pin-util.h"

#define MiB (1ul << 20)
#define LEN (4 * MiB)
/* The caller's table: slot CALLER_SLOT holds a buffer of its own, libpin
 * gets [FIRST, FIRST + NSLOTS). */
#define TABLE	    16u
#define CALLER_SLOT 1u
#define FIRST	    8u
#define NSLOTS	    4u
#define ENTRIES	    8u
#define SEED	    41
#define SEED_OWN    42

static size_t page;

static void setup(void)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
}

/* The caller's ring with a sparse table of TABLE slots (0: none). */
static void ring_new(struct io_uring *ring, unsigned int table, unsigned int flags)
{
	ck_assert_int_eq(io_uring_queue_init(ENTRIES, ring, flags), 0);
	if (table)
		ck_assert_int_eq(io_uring_register_buffers_sparse(ring, table), 0);
}

static int ctx_new(int ring_fd, unsigned int first, unsigned int nslots, int backend,
		   struct pin_ctx **ret)
{
	struct pin_ctx_opts o = {
		.sz = sizeof(o),
		.backend = backend,
		.ring_fd = ring_fd,
		.ring_first_slot = first,
		.ring_nslots = nslots,
	};

	return pin_ctx_new(&o, ret);
}

static struct pin_ctx *ctx_of(struct io_uring *ring)
{
	struct pin_ctx *ctx = NULL;

	ck_assert_int_eq(ctx_new(ring->ring_fd, FIRST, NSLOTS, PIN_BACKEND_IO_URING, &ctx), 0);
	return ctx;
}

/* The usual start: a ring with a TABLE-slot sparse table, a context pinning
 * into its slots, and LEN bytes of small pages at *ret_p. */
static struct pin_ctx *ring_ctx_map(struct io_uring *ring, char **ret_p)
{
	ring_new(ring, TABLE, 0);
	*ret_p = test_map_small(NULL, LEN);
	return ctx_of(ring);
}

/* One READ_FIXED of len bytes at offset 0 of fd into buf, on the caller's
 * ring, with buffer index; returns cqe->res, or INT_MIN when the ring fails. */
static int read_fixed_raw(struct io_uring *ring, int fd, void *buf, size_t len, int index)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;

	if (!sqe)
		return INT_MIN;
	io_uring_prep_read_fixed(sqe, fd, buf, (unsigned int)len, 0, index);
	if (io_uring_submit(ring) != 1 || io_uring_wait_cqe(ring, &cqe) != 0)
		return INT_MIN;
	int res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return res;
}

static int read_fixed(struct io_uring *ring, int fd, void *buf, size_t len, int index)
{
	int res = read_fixed_raw(ring, fd, buf, len, index);

	ck_assert_int_ne(res, INT_MIN);
	return res;
}

/* The READ_FIXED the caller issues with libpin's index: the process reads the
 * file's bytes; the caller's own buffer in its own slot is left alone. */
START_TEST(read_fixed_in_callers_ring)
{
	struct io_uring ring;
	struct pin_range *r;

	ring_new(&ring, TABLE, 0);
	char *own = test_map_small(NULL, page);
	struct iovec iov = { own, page };
	__u64 tag = 0;
	ck_assert_int_eq(io_uring_register_buffers_update_tag(&ring, CALLER_SLOT, &iov, &tag, 1),
			 1);
	struct pin_ctx *ctx = ctx_of(&ring);
	ck_assert_int_eq(pin_ctx_backend(ctx), PIN_BACKEND_IO_URING);
	ck_assert_ptr_null(pin_ctx_io_uring(ctx));
	ck_assert_int_ge(pin_ctx_ring_fd(ctx), 0);
	ck_assert_int_ne(pin_ctx_ring_fd(ctx), ring.ring_fd);

	char *p = test_map_small(NULL, LEN);
	int fd = test_pattern_file(LEN, SEED);
	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &r), 0);
	int index = pin_range_buf_index(r, p, LEN);
	/* The lowest free slot of the range goes first. */
	ck_assert_int_eq(index, FIRST);
	ck_assert_int_eq(read_fixed(&ring, fd, p, LEN, index), (int)LEN);
	test_assert_pattern(p, LEN, SEED);

	int own_fd = test_pattern_file(page, SEED_OWN);
	ck_assert_int_eq(read_fixed(&ring, own_fd, own, page, CALLER_SLOT), (int)page);
	test_assert_pattern(own, page, SEED_OWN);

	/* Unpinned: the slot is empty, and the kernel says so. */
	pin_range_put(r);
	ck_assert_int_eq(pin_ctx_invalidate(ctx, p, LEN), 1);
	ck_assert_int_eq(read_fixed(&ring, fd, p, LEN, index), -EFAULT);
	ck_assert_int_eq(read_fixed(&ring, own_fd, own, page, CALLER_SLOT), (int)page);
	pin_ctx_free(ctx);
	io_uring_queue_exit(&ring);
	close(own_fd);
	close(fd);
	munmap(p, LEN);
	munmap(own, page);
}
END_TEST

/* 4 MiB of small pages: 1024 pins acquired, 1024 released at the unpin. */
START_TEST(pin_counters_exact)
{
	struct io_uring ring;
	char *p;

	struct pin_ctx *ctx = ring_ctx_map(&ring, &p);

	test_assert_small_pins(ctx, p, LEN);
	pin_ctx_free(ctx);
	io_uring_queue_exit(&ring);
	munmap(p, LEN);
}
END_TEST

/* NSLOTS held pins fill the range: the next fails with ENOSPC, until a pin
 * goes idle and makes room. */
START_TEST(range_full)
{
	struct pin_range *r[NSLOTS + 1];
	struct io_uring ring;

	ring_new(&ring, TABLE, 0);
	struct pin_ctx *ctx = ctx_of(&ring);
	char *p = test_map_small(NULL, (NSLOTS + 1) * 2 * page);

	for (unsigned int i = 0; i < NSLOTS; i++) {
		ck_assert_int_eq(pin_range_get(ctx, p + i * 2 * page, page, &r[i]), 0);
		ck_assert_int_eq(pin_range_buf_index(r[i], p + i * 2 * page, page), FIRST + i);
	}
	ck_assert_int_eq(pin_range_get(ctx, p + NSLOTS * 2 * page, page, &r[NSLOTS]), -ENOSPC);
	pin_range_put(r[0]);
	ck_assert_int_eq(pin_range_get(ctx, p + NSLOTS * 2 * page, page, &r[NSLOTS]), 0);
	ck_assert_int_eq(pin_range_buf_index(r[NSLOTS], p + NSLOTS * 2 * page, page), FIRST);
	ck_assert_uint_eq(test_pin_stats(ctx).evictions, 1);
	for (unsigned int i = 1; i <= NSLOTS; i++)
		pin_range_put(r[i]);
	pin_ctx_free(ctx);
	io_uring_queue_exit(&ring);
	munmap(p, (NSLOTS + 1) * 2 * page);
}
END_TEST

/* A discard makes the pins of its range stale.  An idle one leaves its slot
 * at the next call on the context; a held one keeps it (with the old pages)
 * until its last put, and a new look-up takes another slot. */
START_TEST(stale_pin_slot_replaced)
{
	struct pin_range *held, *fresh;
	struct io_uring ring;
	char *p;

	struct pin_ctx *ctx = ring_ctx_map(&ring, &p);
	int fd = test_pattern_file(LEN, SEED);

	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &held), 0);
	int index = pin_range_buf_index(held, p, LEN);
	pin_range_put(held);
	ck_assert_int_eq(madvise(p, page, MADV_DONTNEED), 0);
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_ranges, 0);
	ck_assert_int_eq(read_fixed(&ring, fd, p, LEN, index), -EFAULT);

	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &held), 0);
	index = pin_range_buf_index(held, p, LEN);
	ck_assert_int_eq(madvise(p, page, MADV_DONTNEED), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &fresh), 0);
	ck_assert_int_eq(pin_range_stale(held), 1);
	int fresh_index = pin_range_buf_index(fresh, p, LEN);
	ck_assert_int_ne(fresh_index, index);
	ck_assert_int_eq(read_fixed(&ring, fd, p, LEN, fresh_index), (int)LEN);
	test_assert_pattern(p, LEN, SEED);
	pin_range_put(held);
	ck_assert_int_eq(read_fixed(&ring, fd, p, LEN, index), -EFAULT);
	pin_range_put(fresh);
	pin_ctx_free(ctx);
	io_uring_queue_exit(&ring);
	close(fd);
	munmap(p, LEN);
}
END_TEST

/* What the kernel (and libpin, before it) answers for a ring it cannot use. */
START_TEST(bad_rings)
{
	struct pin_ctx *ctx = NULL;
	struct io_uring ring;

	test_pin_log_capture(PIN_LOG_ERR);
	int closed = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(closed, 0);
	close(closed);
	ck_assert_int_eq(ctx_new(closed, FIRST, NSLOTS, PIN_BACKEND_IO_URING, &ctx), -EBADF);
	ck_assert_int_eq(ctx_new(-1, FIRST, NSLOTS, PIN_BACKEND_AUTO, &ctx), -EBADF);
	int efd = eventfd(0, EFD_CLOEXEC);
	ck_assert_int_ge(efd, 0);
	ck_assert_int_eq(ctx_new(efd, FIRST, NSLOTS, PIN_BACKEND_IO_URING, &ctx), -EOPNOTSUPP);
	char want[256];
	snprintf(want, sizeof(want),
		 "io_uring ring fd %d: emptying slots [%u, +%u) (IORING_REGISTER_BUFFERS_UPDATE): "
		 "Operation not supported: not an io_uring",
		 efd, FIRST, NSLOTS);
	ck_assert_str_eq(test_pin_last_log, want);
	close(efd);

	ring_new(&ring, 0, 0);
	ck_assert_int_eq(ctx_new(ring.ring_fd, FIRST, NSLOTS, PIN_BACKEND_IO_URING, &ctx), -ENXIO);
	ck_assert_ptr_nonnull(strstr(test_pin_last_log, "register a sparse one first"));
	ck_assert_int_eq(io_uring_register_buffers_sparse(&ring, TABLE), 0);
	/* One slot past the table. */
	ck_assert_int_eq(
		ctx_new(ring.ring_fd, TABLE - NSLOTS + 1, NSLOTS, PIN_BACKEND_IO_URING, &ctx),
		-EINVAL);
	/* Past what any table may hold (IORING_MAX_REG_BUFFERS). */
	ck_assert_int_eq(ctx_new(ring.ring_fd, 16384, 1, PIN_BACKEND_IO_URING, &ctx), -EINVAL);
	ck_assert_int_eq(ctx_new(ring.ring_fd, FIRST, NSLOTS, PIN_BACKEND_MLOCK, &ctx), -EINVAL);
	ck_assert_ptr_null(ctx);
	/* The whole table is fine, through the automatic choice too. */
	ck_assert_int_eq(ctx_new(ring.ring_fd, 0, TABLE, PIN_BACKEND_AUTO, &ctx), 0);
	ck_assert_int_eq(pin_ctx_backend(ctx), PIN_BACKEND_IO_URING);
	pin_ctx_free(ctx);
	io_uring_queue_exit(&ring);
	pin_log_set(NULL, NULL);
}
END_TEST

/* The caller unregisters its table: a pin fails with the kernel's ENXIO. */
START_TEST(table_unregistered)
{
	struct io_uring ring;
	struct pin_range *r;
	char *p;

	struct pin_ctx *ctx = ring_ctx_map(&ring, &p);

	test_pin_log_capture(PIN_LOG_ERR);
	ck_assert_int_eq(io_uring_unregister_buffers(&ring), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &r), -ENXIO);
	ck_assert_ptr_nonnull(strstr(test_pin_last_log, "the ring has no buffer table"));
	ck_assert_uint_eq(test_pin_stats(ctx).pinned_ranges, 0);
	pin_ctx_free(ctx);
	pin_log_set(NULL, NULL);
	io_uring_queue_exit(&ring);
	munmap(p, LEN);
}
END_TEST

/* The caller closes its ring: libpin's duplicate keeps it, pins go on, and
 * the free empties the slots without an error. */
START_TEST(ring_closed_by_caller)
{
	struct io_uring ring;
	struct pin_range *r;
	char *p;

	struct pin_ctx *ctx = ring_ctx_map(&ring, &p);

	test_pin_log_capture(PIN_LOG_ERR);
	io_uring_queue_exit(&ring);
	test_assert_small_pins(ctx, p, LEN);
	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &r), 0);
	ck_assert_int_eq(pin_range_buf_index(r, p, LEN), FIRST);
	pin_range_put(r);
	pin_ctx_free(ctx);
	ck_assert_str_eq(test_pin_last_log, "");
	pin_log_set(NULL, NULL);
	munmap(p, LEN);
}
END_TEST

/* After fork() the ring and its table are the parent's too: a READ_FIXED the
 * child issues with a pin's index fills the parent's pinned pages, while the
 * child's own copies of them keep what they held at the fork. */
START_TEST(fork_child_reads_into_parent)
{
	struct io_uring ring;
	struct pin_range *r;
	char *p;

	struct pin_ctx *ctx = ring_ctx_map(&ring, &p);
	int fd = test_pattern_file(LEN, SEED);
	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &r), 0);
	int index = pin_range_buf_index(r, p, LEN);

	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* No Check calls here: the parent judges by the exit status. */
		int res = read_fixed_raw(&ring, fd, p, LEN, index);
		_exit(res != (int)LEN ? 1 : p[0] != 0x5a || p[LEN - 1] != 0x5a ? 2 : 0);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	test_assert_pattern(p, LEN, SEED);
	pin_range_put(r);
	pin_ctx_free(ctx);
	io_uring_queue_exit(&ring);
	close(fd);
	munmap(p, LEN);
}
END_TEST

struct other_thread {
	int ring_fd;
	int err;
};

static void *ctx_from_other_thread(void *arg)
{
	struct other_thread *t = arg;
	struct pin_ctx *ctx = NULL;

	t->err = ctx_new(t->ring_fd, FIRST, NSLOTS, PIN_BACKEND_IO_URING, &ctx);
	pin_ctx_free(ctx);
	return NULL;
}

/* IORING_SETUP_SINGLE_ISSUER: only the submitter thread may register (EEXIST
 * from others).  The monitor thread never touches the ring: a stale idle
 * pin's slot is emptied by the submitter's next call, without an error. */
START_TEST(single_issuer_ring)
{
	struct io_uring ring;
	struct pin_range *r;
	pthread_t thread;

	ring_new(&ring, TABLE, IORING_SETUP_SINGLE_ISSUER);
	struct other_thread t = { ring.ring_fd, 0 };
	ck_assert_int_eq(pthread_create(&thread, NULL, ctx_from_other_thread, &t), 0);
	ck_assert_int_eq(pthread_join(thread, NULL), 0);
	ck_assert_int_eq(t.err, -EEXIST);

	struct pin_ctx *ctx = ctx_of(&ring);
	char *p = test_map_small(NULL, LEN);
	int fd = test_pattern_file(LEN, SEED);
	test_pin_log_capture(PIN_LOG_ERR);
	ck_assert_int_eq(pin_range_get(ctx, p, LEN, &r), 0);
	int index = pin_range_buf_index(r, p, LEN);
	pin_range_put(r);
	ck_assert_int_eq(madvise(p, page, MADV_DONTNEED), 0);
	struct pin_ctx_stats s = test_pin_stats(ctx);
	ck_assert_uint_eq(s.invalidations, 1);
	ck_assert_uint_eq(s.pinned_ranges, 0);
	ck_assert_int_eq(read_fixed(&ring, fd, p, LEN, index), -EFAULT);
	ck_assert_str_eq(test_pin_last_log, "");
	pin_ctx_free(ctx);
	pin_log_set(NULL, NULL);
	io_uring_queue_exit(&ring);
	close(fd);
	munmap(p, LEN);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = test_suite_new("pin-ring");
	const struct test_needs root = { .what = TEST_NEED_ROOT };
	TCase *tc = test_pin_tcase(s, "ring", &root, setup);

	tcase_add_test(tc, read_fixed_in_callers_ring);
	tcase_add_test(tc, pin_counters_exact);
	tcase_add_test(tc, range_full);
	tcase_add_test(tc, stale_pin_slot_replaced);
	tcase_add_test(tc, bad_rings);
	tcase_add_test(tc, table_unregistered);
	tcase_add_test(tc, ring_closed_by_caller);
	tcase_add_test(tc, single_issuer_ring);
	tcase_add_test(tc, fork_child_reads_into_parent);
	return s;
}

const char *test_skip_reason(void)
{
	return test_pin_skip_reason();
}
