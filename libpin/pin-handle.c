// SPDX-License-Identifier: MIT
/*
 * What a context and a pin handle tell the caller: the backend, the pinned
 * range, whether it went stale, the io_uring buffer indexes and the RDMA
 * keys.  Each reads fields fixed when the context or the pin was made (the
 * stale flag atomically), so none takes the context's lock.
 */
#include "pin-internal.h"

PIN_EXPORT int pin_ctx_backend(const struct pin_ctx *ctx)
{
	return ctx ? ctx->backend : -EINVAL;
}

PIN_EXPORT const char *pin_ctx_backend_name(const struct pin_ctx *ctx)
{
	return ctx ? ctx->be->name : NULL;
}

PIN_EXPORT void *pin_range_addr(const struct pin_range *r)
{
	return r ? (void *)r->start : NULL;
}

PIN_EXPORT size_t pin_range_len(const struct pin_range *r)
{
	return r ? r->end - r->start : 0;
}

PIN_EXPORT int pin_range_stale(const struct pin_range *r)
{
	if (!r)
		return -EINVAL;
	return atomic_load(&((struct pin_range *)r)->stale) ? 1 : 0;
}

PIN_EXPORT int pin_range_buf_count(const struct pin_range *r)
{
	if (!r)
		return -EINVAL;
	return r->ctx->backend == PIN_BACKEND_IO_URING ? (int)r->nbufs : -EOPNOTSUPP;
}

PIN_EXPORT int pin_range_buf_index(const struct pin_range *r, const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;

	if (!r)
		return -EINVAL;
	if (r->ctx->backend != PIN_BACKEND_IO_URING)
		return -EOPNOTSUPP;
	if (a < r->start || a >= r->end || len > r->end - a)
		return -ERANGE;
	size_t i = (a - r->start) / PIN_IOURING_BUF_MAX;
	if (a + len > r->start + (i + 1) * PIN_IOURING_BUF_MAX)
		return -ERANGE;
	return (int)r->bufs[i];
}

PIN_EXPORT int pin_range_rdma_keys(const struct pin_range *r, uint32_t *ret_lkey,
				   uint32_t *ret_rkey)
{
	if (!r)
		return -EINVAL;
	if (r->ctx->backend != PIN_BACKEND_RDMA)
		return -EOPNOTSUPP;
	if (ret_lkey)
		*ret_lkey = r->lkey;
	if (ret_rkey)
		*ret_rkey = r->rkey;
	return 0;
}

PIN_EXPORT struct ibv_mr *pin_range_ibv_mr(const struct pin_range *r)
{
	return r ? r->mr : NULL;
}
