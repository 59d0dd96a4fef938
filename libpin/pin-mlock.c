// SPDX-License-Identifier: MIT
/*
 * The mlock backend, the weak fallback: mlock(2) keeps the pages resident
 * but takes no FOLL_PIN reference, so the kernel may still migrate them
 * (compaction, NUMA balancing) and a device must not DMA to them.  It needs
 * neither io_uring nor RDMA, and counts against RLIMIT_MEMLOCK.
 *
 * Locks do not nest: munlock of one pin would unlock the pages of another
 * that overlaps it, so a release unlocks only what no live pin covers.
 *
 * Raw syscalls: AddressSanitizer replaces mlock/munlock with no-ops.
 *
 * It owns nothing but its ops.  It calls util.c and, for what the cache still
 * covers, pin.c, and for error messages pin-refusal.c, through pin-internal.h.
 */
#include <string.h>
#include <sys/syscall.h>

#include "pin-internal.h"

static int mlock_open(struct pin_ctx *ctx)
{
	return 0;
}

static void mlock_close(struct pin_ctx *ctx)
{
}

static unsigned int mlock_nbufs(size_t len)
{
	return 0;
}

static int mlock_pin(struct pin_ctx *ctx, struct pin_range *r)
{
	if (syscall(SYS_mlock, r->start, r->end - r->start) < 0) {
		int err = -errno;
		pin_log_pin_error(ctx, "mlock", r, err);
		return err;
	}
	return 0;
}

static void unlock_gap(uintptr_t start, uintptr_t end, void *arg)
{
	/* ENOMEM: the range was unmapped meanwhile, nothing is locked there. */
	if (syscall(SYS_munlock, start, end - start) < 0 && errno != ENOMEM)
		pin_log(PIN_LOG_ERR, "munlock [%#lx, +%#lx): %s", (unsigned long)start,
			(unsigned long)(end - start), strerror(errno));
}

static void mlock_unpin(struct pin_ctx *ctx, struct pin_range *r)
{
	pin_ctx_uncovered(ctx, r->start, r->end, unlock_gap, NULL);
}

const struct pin_backend_ops pin_backend_mlock = {
	.name = "mlock",
	.open = mlock_open,
	.close = mlock_close,
	.nbufs = mlock_nbufs,
	.pin = mlock_pin,
	.unpin = mlock_unpin,
	.unpin_on_monitor = true,
};
