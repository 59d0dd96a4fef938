// SPDX-License-Identifier: MIT
/*
 * The RDMA backend: ibv_reg_mr on the first device, in one protection
 * domain per context.  Registration pins the pages with FOLL_LONGTERM and
 * gives the lkey/rkey a work request names.
 *
 * libibverbs is loaded when a context first asks for this backend
 * (dlopen), not linked: a program on libpin needs rdma-core only on a
 * machine that pins for RDMA.  Its header gives the types; the functions
 * are taken by name and symbol version, the ABI libibverbs.so.1 keeps.
 */
#include <dlfcn.h>
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "pin-internal.h"

#define IBVERBS_SONAME	"libibverbs.so.1"
#define IBVERBS_VERSION "IBVERBS_1.1"

/* libibverbs' functions, once loaded (never unloaded: providers keep
 * threads and state of their own). */
static struct {
	struct ibv_device **(*get_device_list)(int *num_devices);
	void (*free_device_list)(struct ibv_device **list);
	const char *(*get_device_name)(struct ibv_device *device);
	struct ibv_context *(*open_device)(struct ibv_device *device);
	int (*close_device)(struct ibv_context *context);
	struct ibv_pd *(*alloc_pd)(struct ibv_context *context);
	int (*dealloc_pd)(struct ibv_pd *pd);
	struct ibv_mr *(*reg_mr)(struct ibv_pd *pd, void *addr, size_t length, int access);
	int (*dereg_mr)(struct ibv_mr *mr);
} ibv;
static pthread_once_t ibv_once = PTHREAD_ONCE_INIT;
static char ibv_error[256]; /* why loading failed; empty: loaded */

static void *ibv_sym(void *h, const char *name)
{
	void *f = dlvsym(h, name, IBVERBS_VERSION);

	if (!f && !ibv_error[0])
		snprintf(ibv_error, sizeof(ibv_error), "%s: no %s@%s", IBVERBS_SONAME, name,
			 IBVERBS_VERSION);
	return f;
}

static void ibv_load(void)
{
	void *h = dlopen(IBVERBS_SONAME, RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		snprintf(ibv_error, sizeof(ibv_error), "dlopen(%s): %s", IBVERBS_SONAME, dlerror());
		return;
	}
	ibv.get_device_list = ibv_sym(h, "ibv_get_device_list");
	ibv.free_device_list = ibv_sym(h, "ibv_free_device_list");
	ibv.get_device_name = ibv_sym(h, "ibv_get_device_name");
	ibv.open_device = ibv_sym(h, "ibv_open_device");
	ibv.close_device = ibv_sym(h, "ibv_close_device");
	ibv.alloc_pd = ibv_sym(h, "ibv_alloc_pd");
	ibv.dealloc_pd = ibv_sym(h, "ibv_dealloc_pd");
	ibv.reg_mr = ibv_sym(h, "ibv_reg_mr");
	ibv.dereg_mr = ibv_sym(h, "ibv_dereg_mr");
}

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

	pthread_once(&ibv_once, ibv_load);
	if (ibv_error[0]) {
		/* Choosing automatically, io_uring takes over: no error then. */
		pin_log(ctx->autoselect ? PIN_LOG_DEBUG : PIN_LOG_ERR,
			"no RDMA device: %s (rdma-core's libibverbs1 is not installed?)",
			ibv_error);
		return -ENODEV;
	}
	list = ibv.get_device_list(&n);
	/* ENOSYS: the kernel has no RDMA stack at all (no uverbs). */
	if (!list && errno != ENOSYS) {
		err = -errno;
		pin_log(PIN_LOG_ERR, "ibv_get_device_list: %s", strerror(-err));
		return err;
	}
	if (!list || n == 0) {
		if (list)
			ibv.free_device_list(list);
		/* Choosing automatically, io_uring takes over: no error then. */
		pin_log(ctx->autoselect ? PIN_LOG_DEBUG : PIN_LOG_ERR,
			"no RDMA device (ibv_get_device_list found none)");
		return -ENODEV;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		ibv.free_device_list(list);
		return -ENOMEM;
	}
	d->dev = ibv.open_device(list[0]);
	err = d->dev ? 0 : -errno;
	if (err < 0)
		pin_log(PIN_LOG_ERR, "ibv_open_device(%s): %s", ibv.get_device_name(list[0]),
			strerror(-err));
	ibv.free_device_list(list);
	if (!err) {
		d->pd = ibv.alloc_pd(d->dev);
		if (!d->pd) {
			err = -errno;
			pin_log(PIN_LOG_ERR, "ibv_alloc_pd: %s", strerror(-err));
			ibv.close_device(d->dev);
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

	ibv.dealloc_pd(d->pd);
	ibv.close_device(d->dev);
	free(d);
}

/* The protection domain and the device are the parent's: a dealloc here
 * would end the parent's registrations. */
static void rdma_forget(struct pin_ctx *ctx)
{
	free(ctx->be_data);
}

static unsigned int rdma_nbufs(size_t len)
{
	return 0;
}

static int rdma_pin(struct pin_ctx *ctx, struct pin_range *r)
{
	struct rdma *d = ctx->be_data;
	int access = ctx->rdma_access ? (int)ctx->rdma_access : DEFAULT_ACCESS;
	struct ibv_mr *mr = ibv.reg_mr(d->pd, (void *)r->start, r->end - r->start, access);

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
	int err = ibv.dereg_mr(r->mr);

	if (err)
		pin_log(PIN_LOG_ERR, "ibv_dereg_mr [%#lx, +%#lx): %s", (unsigned long)r->start,
			(unsigned long)(r->end - r->start), strerror(err));
	r->mr = NULL;
}

const struct pin_backend_ops pin_backend_rdma = {
	.name = "rdma",
	.open = rdma_open,
	.close = rdma_close,
	.forget = rdma_forget,
	.nbufs = rdma_nbufs,
	.pin = rdma_pin,
	.unpin = rdma_unpin,
	/* The provider frees its own memory in ibv_dereg_mr. */
	.unpin_on_monitor = false,
};
