// SPDX-License-Identifier: MIT
/*
 * The RDMA backend: ibv_reg_mr on the first device, in one protection
 * domain per context.  Registration pins the pages with FOLL_LONGTERM and
 * gives the lkey/rkey a work request names.
 */
#include <infiniband/verbs.h>
#include <string.h>

#include "pin-internal.h"

struct rdma {
	struct ibv_context *dev;
	struct ibv_pd *pd;
};

#define DEFAULT_ACCESS (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE)

static int rdma_open(struct pin_ctx *ctx)
{
	struct ibv_device **list;
	struct rdma *d;
	int n, err;

	list = ibv_get_device_list(&n);
	/* ENOSYS: the kernel has no RDMA stack at all (no uverbs). */
	if (!list && errno != ENOSYS) {
		err = -errno;
		pin_log(PIN_LOG_ERR, "ibv_get_device_list: %s", strerror(-err));
		return err;
	}
	if (!list || n == 0) {
		if (list)
			ibv_free_device_list(list);
		/* Choosing automatically, io_uring takes over: no error then. */
		pin_log(ctx->autoselect ? PIN_LOG_DEBUG : PIN_LOG_ERR,
			"no RDMA device (ibv_get_device_list found none)");
		return -ENODEV;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		ibv_free_device_list(list);
		return -ENOMEM;
	}
	d->dev = ibv_open_device(list[0]);
	err = d->dev ? 0 : -errno;
	if (err < 0)
		pin_log(PIN_LOG_ERR, "ibv_open_device(%s): %s", ibv_get_device_name(list[0]),
			strerror(-err));
	ibv_free_device_list(list);
	if (!err) {
		d->pd = ibv_alloc_pd(d->dev);
		if (!d->pd) {
			err = -errno;
			pin_log(PIN_LOG_ERR, "ibv_alloc_pd: %s", strerror(-err));
			ibv_close_device(d->dev);
		}
	}
	if (err < 0) {
		free(d);
		return err;
	}
	ctx->be_data = d;
	return 0;
}

static void rdma_close(struct pin_ctx *ctx)
{
	struct rdma *d = ctx->be_data;

	ibv_dealloc_pd(d->pd);
	ibv_close_device(d->dev);
	free(d);
}

static unsigned int rdma_nbufs(size_t len)
{
	return 0;
}

static int rdma_pin(struct pin_ctx *ctx, struct pin_range *r)
{
	struct rdma *d = ctx->be_data;
	int access = ctx->rdma_access ? (int)ctx->rdma_access : DEFAULT_ACCESS;
	struct ibv_mr *mr = ibv_reg_mr(d->pd, (void *)r->start, r->end - r->start, access);

	if (!mr) {
		int err = -errno;
		pin_log_pin_error(ctx, "ibv_reg_mr", r, err);
		return err;
	}
	r->mr = mr;
	r->lkey = mr->lkey;
	r->rkey = mr->rkey;
	return 0;
}

static void rdma_unpin(struct pin_ctx *ctx, struct pin_range *r)
{
	int err = ibv_dereg_mr(r->mr);

	if (err)
		pin_log(PIN_LOG_ERR, "ibv_dereg_mr [%#lx, +%#lx): %s", (unsigned long)r->start,
			(unsigned long)(r->end - r->start), strerror(err));
	r->mr = NULL;
}

const struct pin_backend_ops pin_backend_rdma = {
	.name = "rdma",
	.open = rdma_open,
	.close = rdma_close,
	.nbufs = rdma_nbufs,
	.pin = rdma_pin,
	.unpin = rdma_unpin,
	/* The provider frees its own memory in ibv_dereg_mr. */
	.unpin_on_monitor = false,
};
