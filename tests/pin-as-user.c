// SPDX-License-Identifier: MIT
/*
 * The io_uring pin backend for a user the kernel refuses a userfaultfd that
 * sees kernel faults (issue 16, item 6): run by tests/unprivileged.sh as uid
 * 65534.  The context opens (its monitor's userfaultfd is user-mode only),
 * a pin faults its pages in, a READ_FIXED through it lands where it should,
 * and a discard marks the pin stale and a look-up pins anew.  The same user
 * pins into a ring of its own (a sparse table of CALLER_SLOTS) and reads
 * through it.  Exit 0, 1 with what failed, or 77 when io_uring itself is
 * closed to this user.
 */
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libpin.h"

#define LEN	  (1ul << 20)
#define AT_PAGE	  5
#define FILL	  'Q'
#define EXIT_SKIP 77
/* The caller's ring: a table of CALLER_SLOTS, all of them libpin's. */
#define CALLER_SLOTS   4
#define CALLER_ENTRIES 4

static int failed(const char *what, int err)
{
	printf("FAIL: %s: %s\n", what, strerror(-err));
	return 1;
}

static void log_stdout(enum pin_log_level level, const char *msg, void *userdata)
{
	if (level <= PIN_LOG_WARN)
		printf("libpin: %s\n", msg);
}

/* One READ_FIXED of a page of FILL into p, on ring, through buffer index. */
static int read_fixed(struct io_uring *ring, char *p, size_t page, int index)
{
	struct io_uring_cqe *cqe;
	char buf[4096];
	int fd = memfd_create("pin-as-user", MFD_CLOEXEC);

	if (fd < 0 || page > sizeof(buf))
		return -EINVAL;
	memset(buf, FILL, page);
	if (write(fd, buf, page) != (ssize_t)page) {
		close(fd);
		return -EIO;
	}
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	io_uring_prep_read_fixed(sqe, fd, p, (unsigned int)page, 0, index);
	int r = io_uring_submit_and_wait(ring, 1);
	if (r >= 0)
		r = io_uring_wait_cqe(ring, &cqe);
	if (r >= 0) {
		r = cqe->res;
		io_uring_cqe_seen(ring, cqe);
	}
	close(fd);
	return r;
}

/* Pin [p, p + LEN) into a ring of the caller's and read a page through it. */
static int callers_ring(char *p, size_t page)
{
	struct io_uring ring;
	struct pin_ctx *ctx;
	struct pin_range *r;
	int e = io_uring_queue_init(CALLER_ENTRIES, &ring, 0);

	if (e < 0)
		return failed("io_uring_queue_init", e);
	e = io_uring_register_buffers_sparse(&ring, CALLER_SLOTS);
	if (e < 0)
		return failed("io_uring_register_buffers_sparse", e);
	struct pin_ctx_opts o = { .sz = sizeof(o),
				  .backend = PIN_BACKEND_IO_URING,
				  .ring_fd = ring.ring_fd,
				  .ring_nslots = CALLER_SLOTS };
	e = pin_ctx_new(&o, &ctx);
	if (e < 0)
		return failed("pin_ctx_new(the caller's ring)", e);
	e = pin_range_get(ctx, p, LEN, &r);
	if (e < 0)
		return failed("pin_range_get(the caller's ring)", e);
	memset(p, 0, LEN);
	e = read_fixed(&ring, p, page, pin_range_buf_index(r, p, page));
	if (e != (int)page || p[0] != FILL || p[page - 1] != FILL) {
		printf("FAIL: READ_FIXED on the caller's ring: %d, byte %#x\n", e, p[0]);
		return 1;
	}
	pin_range_put(r);
	pin_ctx_free(ctx);
	io_uring_queue_exit(&ring);
	return 0;
}

int main(void)
{
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = PIN_BACKEND_IO_URING };
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct pin_range *r, *again;
	struct pin_ctx *ctx;
	struct io_uring probe;

	/* io_uring closed to this user (kernel.io_uring_disabled): not ours. */
	int e = io_uring_queue_init(1, &probe, 0);
	if (e == -EPERM || e == -ENOSYS) {
		printf("SKIP: io_uring: %s\n", strerror(-e));
		return EXIT_SKIP;
	}
	if (e == 0)
		io_uring_queue_exit(&probe);
	pin_log_set(log_stdout, NULL);
	e = pin_ctx_new(&o, &ctx);
	if (e < 0)
		return failed("pin_ctx_new(PIN_BACKEND_IO_URING)", e);
	char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return failed("mmap", -errno);
	e = pin_range_get(ctx, p, LEN, &r);
	if (e < 0)
		return failed("pin_range_get", e);
	char *at = p + AT_PAGE * page;
	e = read_fixed(pin_ctx_io_uring(ctx), at, page, pin_range_buf_index(r, at, page));
	if (e != (int)page || at[0] != FILL || at[page - 1] != FILL) {
		printf("FAIL: READ_FIXED through the pin: %d, byte %#x\n", e, at[0]);
		return 1;
	}
	if (madvise(p + page, page, MADV_DONTNEED) < 0)
		return failed("madvise", -errno);
	e = pin_range_get(ctx, p, LEN, &again);
	if (e < 0)
		return failed("pin_range_get after the discard", e);
	if (again == r || pin_range_stale(r) != 1 || pin_range_stale(again) != 0) {
		printf("FAIL: after a discard: the same pin %d, stale %d and %d\n", again == r,
		       pin_range_stale(r), pin_range_stale(again));
		return 1;
	}
	pin_range_put(again);
	pin_range_put(r);
	pin_ctx_free(ctx);
	e = callers_ring(p, page);
	if (e)
		return e;
	munmap(p, LEN);
	printf("ok: io_uring pins, a READ_FIXED through one, a discard seen, the caller's ring\n");
	return 0;
}
