// SPDX-License-Identifier: MIT
/*
 * The io_uring backend: each pin is one or more registered buffers in a
 * sparse table (IORING_REGISTER_BUFFERS2 with IORING_RSRC_REGISTER_SPARSE,
 * filled and emptied slot by slot with IORING_REGISTER_BUFFERS_UPDATE).
 * Registering a buffer pins its pages with FOLL_PIN | FOLL_LONGTERM; the
 * kernel caps a buffer at 1 GiB, so larger ranges take several slots.
 *
 * Updates carry tag 0: a tag would post a CQE when the kernel drops the old
 * buffer, and that CQE would land in the caller's completion queue, since
 * the caller issues READ_FIXED/WRITE_FIXED on this very ring.  With no
 * request in flight the kernel unpins during the update itself.
 */
#include <liburing.h>
#include <string.h>

#include "pin-internal.h"

struct iouring {
	struct io_uring ring;
	uint32_t nfree;
	uint32_t free_slots[PIN_IOURING_SLOTS]; /* a stack of empty slots */
};

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
	r = io_uring_register_buffers_sparse(&u->ring, PIN_IOURING_SLOTS);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "io_uring_register_buffers_sparse(%u): %s", PIN_IOURING_SLOTS,
			strerror(-r));
		io_uring_queue_exit(&u->ring);
		free(u);
		return r;
	}
	/* Hand out low indexes first. */
	for (uint32_t i = 0; i < PIN_IOURING_SLOTS; i++)
		u->free_slots[i] = PIN_IOURING_SLOTS - 1 - i;
	u->nfree = PIN_IOURING_SLOTS;
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

	if (u->nfree < r->nbufs) {
		pin_log(PIN_LOG_DEBUG, "io_uring buffer table full: %u slots free, %u needed",
			u->nfree, r->nbufs);
		return -ENOSPC;
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
