// SPDX-License-Identifier: MIT
/*
 * The io_uring backend: each pin is one or more registered buffers in a
 * sparse table (IORING_REGISTER_BUFFERS2 with IORING_RSRC_REGISTER_SPARSE,
 * filled and emptied slot by slot with IORING_REGISTER_BUFFERS_UPDATE).
 * Registering a buffer pins its pages with FOLL_PIN | FOLL_LONGTERM; the
 * kernel caps a buffer at 1 GiB, so larger ranges take several slots.
 *
 * The table starts small and doubles when it fills, up to
 * PIN_IOURING_SLOTS: for each huge page a registration holds, the kernel
 * scans every slot of the table (io_uring/rsrc.c, headpage_already_acct),
 * which at 16384 slots cost more than the pin itself.  It grows with
 * IORING_REGISTER_CLONE_BUFFERS onto itself (IORING_REGISTER_DST_REPLACE):
 * one empty slot, always the last one, is cloned to the new last slot, and
 * every buffer keeps its index.  A kernel without that gets the whole table
 * at once.
 *
 * Updates carry tag 0: a tag would post a CQE when the kernel drops the old
 * buffer, and that CQE would land in the caller's completion queue, since
 * the caller issues READ_FIXED/WRITE_FIXED on this very ring.  With no
 * request in flight the kernel unpins during the update itself.
 */
#include <liburing.h>
#include <string.h>
#include <sys/syscall.h>

#include "pin-internal.h"

/* The table a context starts with; the probe of growth starts at half. */
#define INITIAL_SLOTS 64u

/* Kernel ABI newer than Debian 12's headers (include/uapi/linux/io_uring.h, 6.13). */
#define PIN_IORING_REGISTER_CLONE_BUFFERS 30
#define PIN_IORING_REGISTER_DST_REPLACE	  (1u << 1)
struct pin_io_uring_clone_buffers {
	uint32_t src_fd;
	uint32_t flags;
	uint32_t src_off;
	uint32_t dst_off;
	uint32_t nr;
	uint32_t pad[3];
};

struct iouring {
	struct io_uring ring;
	uint32_t size;	/* slots in the kernel's table */
	uint32_t nfree; /* below the last slot, which stays empty until full size */
	uint32_t free_slots[PIN_IOURING_SLOTS]; /* a stack of empty slots, the lowest on top */
};

/* Grow the kernel's table to size slots: clone the empty last slot onto the
 * new last one.  Returns 0 or -errno. */
static int clone_grow(struct iouring *u, uint32_t size)
{
	struct pin_io_uring_clone_buffers c = {
		.src_fd = (uint32_t)u->ring.ring_fd,
		.flags = PIN_IORING_REGISTER_DST_REPLACE,
		.src_off = u->size - 1,
		.dst_off = size - 1,
		.nr = 1,
	};

	if (syscall(SYS_io_uring_register, u->ring.ring_fd, PIN_IORING_REGISTER_CLONE_BUFFERS, &c,
		    1) < 0)
		return -errno;
	return 0;
}

/* Slots [from, to) are free now: under the ones free already, which are lower. */
static void add_free(struct iouring *u, uint32_t from, uint32_t to)
{
	uint32_t n = to - from;

	memmove(u->free_slots + n, u->free_slots, u->nfree * sizeof(u->free_slots[0]));
	for (uint32_t i = 0; i < n; i++)
		u->free_slots[i] = to - 1 - i;
	u->nfree += n;
}

/* Double the table (to full size at most); -ENOSPC when it is full size. */
static int grow(struct iouring *u)
{
	uint32_t size = u->size * 2 < PIN_IOURING_SLOTS ? u->size * 2 : PIN_IOURING_SLOTS;

	if (u->size == PIN_IOURING_SLOTS)
		return -ENOSPC;
	int r = clone_grow(u, size);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "io_uring buffer table: clone of slot %u to %u: %s",
			u->size - 1, size - 1, strerror(-r));
		return r;
	}
	/* The old last slot is free now; at full size the last one is too. */
	add_free(u, u->size - 1, size == PIN_IOURING_SLOTS ? size : size - 1);
	u->size = size;
	return 0;
}

/* A small table that grows, else (no clone in this kernel) the whole one. */
static int register_table(struct iouring *u)
{
	int r = io_uring_register_buffers_sparse(&u->ring, INITIAL_SLOTS / 2);

	if (r < 0) {
		pin_log(PIN_LOG_ERR, "io_uring_register_buffers_sparse(%u): %s", INITIAL_SLOTS / 2,
			strerror(-r));
		return r;
	}
	u->size = INITIAL_SLOTS / 2;
	if (clone_grow(u, INITIAL_SLOTS) == 0) {
		u->size = INITIAL_SLOTS;
		add_free(u, 0, INITIAL_SLOTS - 1);
		return 0;
	}
	pin_log(PIN_LOG_DEBUG, "io_uring: no IORING_REGISTER_CLONE_BUFFERS with offsets: a "
			       "full buffer table from the start");
	r = io_uring_unregister_buffers(&u->ring);
	if (r == 0)
		r = io_uring_register_buffers_sparse(&u->ring, PIN_IOURING_SLOTS);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "io_uring_register_buffers_sparse(%u): %s", PIN_IOURING_SLOTS,
			strerror(-r));
		return r;
	}
	u->size = PIN_IOURING_SLOTS;
	add_free(u, 0, PIN_IOURING_SLOTS);
	return 0;
}

static int iouring_open(struct pin_ctx *ctx)
{
	struct iouring *u = calloc(1, sizeof(*u));
	int r;

	if (!u)
		return -ENOMEM;
	r = io_uring_queue_init(ctx->ring_entries, &u->ring, 0);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "io_uring_queue_init(%u): %s", ctx->ring_entries,
			strerror(-r));
		free(u);
		return r;
	}
	r = register_table(u);
	if (r < 0) {
		io_uring_queue_exit(&u->ring);
		free(u);
		return r;
	}
	ctx->be_data = u;
	return 0;
}

static void iouring_close(struct pin_ctx *ctx)
{
	struct iouring *u = ctx->be_data;

	io_uring_queue_exit(&u->ring);
	free(u);
}

static unsigned int iouring_nbufs(size_t len)
{
	return (unsigned int)((len + PIN_IOURING_BUF_MAX - 1) / PIN_IOURING_BUF_MAX);
}

static int update_slot(struct iouring *u, uint32_t slot, uintptr_t addr, size_t len)
{
	struct iovec iov = { .iov_base = (void *)addr, .iov_len = len };
	__u64 tag = 0;
	int r = io_uring_register_buffers_update_tag(&u->ring, slot, &iov, &tag, 1);

	return r < 0 ? r : 0;
}

static void release_slots(struct iouring *u, struct pin_range *r, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		int err = update_slot(u, r->bufs[i], 0, 0);
		if (err < 0)
			pin_log(PIN_LOG_ERR, "io_uring buffer update (empty slot %u): %s",
				r->bufs[i], strerror(-err));
		u->free_slots[u->nfree++] = r->bufs[i];
	}
}

static int iouring_pin(struct pin_ctx *ctx, struct pin_range *r)
{
	struct iouring *u = ctx->be_data;

	while (u->nfree < r->nbufs) {
		int err = grow(u);
		if (err == -ENOSPC)
			pin_log(PIN_LOG_DEBUG,
				"io_uring buffer table full: %u slots free, %u needed", u->nfree,
				r->nbufs);
		if (err < 0)
			return err;
	}
	for (unsigned int i = 0; i < r->nbufs; i++) {
		uintptr_t addr = r->start + (uintptr_t)i * PIN_IOURING_BUF_MAX;
		size_t len =
			r->end - addr < PIN_IOURING_BUF_MAX ? r->end - addr : PIN_IOURING_BUF_MAX;
		uint32_t slot = u->free_slots[--u->nfree];
		int err = update_slot(u, slot, addr, len);
		if (err < 0) {
			u->free_slots[u->nfree++] = slot;
			release_slots(u, r, i);
			pin_log_pin_error(ctx, "io_uring buffer registration", r, err);
			return err;
		}
		r->bufs[i] = slot;
	}
	return 0;
}

static void iouring_unpin(struct pin_ctx *ctx, struct pin_range *r)
{
	release_slots(ctx->be_data, r, r->nbufs);
}

const struct pin_backend_ops pin_backend_iouring = {
	.name = "io_uring",
	.open = iouring_open,
	.close = iouring_close,
	.nbufs = iouring_nbufs,
	.pin = iouring_pin,
	.unpin = iouring_unpin,
	.unpin_on_monitor = true,
};

PIN_EXPORT struct io_uring *pin_ctx_io_uring(struct pin_ctx *ctx)
{
	if (!ctx || ctx->be != &pin_backend_iouring)
		return NULL;
	return &((struct iouring *)ctx->be_data)->ring;
}

PIN_EXPORT int pin_ctx_ring_fd(const struct pin_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	if (ctx->be != &pin_backend_iouring)
		return -EOPNOTSUPP;
	return ((const struct iouring *)ctx->be_data)->ring.ring_fd;
}
