// SPDX-License-Identifier: MIT
/*
 * Making a pin context: the options checked, the backend chosen (with
 * PIN_BACKEND_AUTO, RDMA when a device exists, else io_uring; a ring the
 * caller gives chooses io_uring) and opened, the context put on pin-fork.c's
 * list and, unless PIN_CTX_NO_MONITOR, its monitor started through pin.c,
 * which owns everything the context holds from then on, pin_ctx_free()
 * included.
 */
#include "pin-internal.h"

#define DEFAULT_MAX_IDLE       256
#define DEFAULT_MAX_IDLE_BYTES (1ul << 30)
#define DEFAULT_RING_ENTRIES   64

static const struct pin_backend_ops *backend_of(const struct pin_ctx *ctx, int backend)
{
	switch (backend) {
	case PIN_BACKEND_IO_URING:
		return ctx->ring_nslots ? &pin_backend_iouring_caller : &pin_backend_iouring;
	case PIN_BACKEND_MLOCK:
		return &pin_backend_mlock;
#ifdef HAVE_RDMA
	case PIN_BACKEND_RDMA:
		return &pin_backend_rdma;
#endif
	}
	return NULL;
}

static int open_backend(struct pin_ctx *ctx, int backend)
{
	/* A ring the caller gave chooses io_uring. */
	if (backend == PIN_BACKEND_AUTO && ctx->ring_nslots)
		backend = PIN_BACKEND_IO_URING;
	if (backend == PIN_BACKEND_AUTO) {
		ctx->autoselect = true;
#ifdef HAVE_RDMA
		ctx->be = &pin_backend_rdma;
		ctx->backend = PIN_BACKEND_RDMA;
		int r = ctx->be->open(ctx);
		if (r != -ENODEV)
			return r;
#endif
		backend = PIN_BACKEND_IO_URING;
	}
	ctx->be = backend_of(ctx, backend);
	if (!ctx->be) {
		pin_log(PIN_LOG_ERR, "pin backend %d is not built in (meson -Drdma)", backend);
		return -EOPNOTSUPP;
	}
	ctx->backend = backend;
	return ctx->be->open(ctx);
}

PIN_EXPORT int pin_ctx_new(const struct pin_ctx_opts *opts, struct pin_ctx **ret)
{
	struct pin_ctx_opts o = { .sz = sizeof(o) };
	struct pin_ctx *ctx;
	int r;

	if (!ret)
		return -EINVAL;
	r = pin_opts_copy(&o, sizeof(o), opts);
	if (r < 0)
		return r;
	if (o.backend < PIN_BACKEND_AUTO || o.backend > PIN_BACKEND_MLOCK ||
	    (o.flags & ~PIN_CTX_NO_MONITOR))
		return -EINVAL;
	if (o.ring_nslots && o.backend != PIN_BACKEND_AUTO && o.backend != PIN_BACKEND_IO_URING) {
		pin_log(PIN_LOG_ERR,
			"pin_ctx_new: a caller's ring (ring_nslots %u) needs the io_uring "
			"backend, not %d",
			o.ring_nslots, o.backend);
		return -EINVAL;
	}
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_cond_init(&ctx->unreg_done, NULL);
	pin_imap_init(&ctx->map);
	pin_imap_init(&ctx->held);
	pin_imap_init(&ctx->unreg);
	r = pin_fork_track(ctx);
	if (r < 0) {
		pin_ctx_free(ctx);
		return r;
	}
	ctx->page = (uintptr_t)sysconf(_SC_PAGESIZE);
	ctx->flags = o.flags;
	ctx->max_idle = o.max_idle ? o.max_idle : DEFAULT_MAX_IDLE;
	ctx->max_idle_bytes = o.max_idle_bytes ? o.max_idle_bytes : DEFAULT_MAX_IDLE_BYTES;
	ctx->ring_entries = o.ring_entries ? o.ring_entries : DEFAULT_RING_ENTRIES;
	ctx->rdma_access = o.rdma_access;
	ctx->ring_fd = o.ring_fd;
	ctx->ring_first_slot = o.ring_first_slot;
	ctx->ring_nslots = o.ring_nslots;
	r = open_backend(ctx, o.backend);
	if (r < 0) {
		ctx->be = NULL;
		pin_ctx_free(ctx);
		return r;
	}
	if (!(o.flags & PIN_CTX_NO_MONITOR)) {
		r = pin_ctx_watch_start(ctx);
		if (r < 0) {
			pin_ctx_free(ctx);
			return r;
		}
	}
	pin_log(PIN_LOG_DEBUG, "pin context: %s backend%s", ctx->be->name,
		ctx->mon ? ", monitored by userfaultfd" : "");
	*ret = ctx;
	return 0;
}
