// SPDX-License-Identifier: MIT
/*
 * Suite pin: the RDMA backend, on a machine with an RDMA device.  Built only
 * with libibverbs; it skips only where there is no device.
 */
#include <errno.h>
#include <infiniband/verbs.h>
#include <string.h>
#include <sys/mman.h>

#include "libpin.h"
#include "test-common.h"

START_TEST(reg_mr)
{
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = PIN_BACKEND_RDMA };
	const size_t len = 1 << 20;
	struct pin_range *r, *again;
	struct pin_ctx *ctx;
	uint32_t lkey, rkey;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_eq(pin_ctx_new(&o, &ctx), 0);
	ck_assert_str_eq(pin_ctx_backend_name(ctx), "rdma");
	ck_assert_int_eq(pin_range_get(ctx, p, len, &r), 0);
	ck_assert_ptr_nonnull(pin_range_ibv_mr(r));
	ck_assert_int_eq(pin_range_rdma_keys(r, &lkey, &rkey), 0);
	ck_assert_int_eq(pin_range_buf_count(r), -EOPNOTSUPP);
	ck_assert_int_eq(pin_range_get(ctx, p + 4096, 4096, &again), 0);
	ck_assert_ptr_eq(again, r);
	pin_range_put(again);
	pin_range_put(r);
	ck_assert_int_eq(madvise(p, 4096, MADV_DONTNEED), 0);
	ck_assert_int_eq(pin_range_get(ctx, p, len, &again), 0);
	struct pin_ctx_stats s = { .sz = sizeof(s) };
	ck_assert_int_eq(pin_ctx_stats(ctx, &s), 0);
	ck_assert_uint_eq(s.misses, 2);
	ck_assert_uint_eq(s.invalidations, 1);
	pin_range_put(again);
	pin_ctx_free(ctx);
	munmap(p, len);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("pin-rdma");
	TCase *tc = tcase_create("rdma");

	tcase_add_test(tc, reg_mr);
	suite_add_tcase(s, tc);
	return s;
}

/* The devices ibv_get_device_list() finds; 0 also when the kernel has no
 * RDMA stack (ENOSYS), as libpin reads it; -errno on another error. */
static int rdma_devices(void)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);

	if (!list)
		return errno == ENOSYS ? 0 : -errno;
	ibv_free_device_list(list);
	return n;
}

/*
 * Skipped only when there is no device and libpin says so (-ENODEV).  Any
 * other outcome runs the cases: with a device they must pass, and a libpin
 * that fails to open one, or reports no device where there is one, fails.
 */
const char *test_skip_reason(void)
{
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = PIN_BACKEND_RDMA };
	struct pin_ctx *ctx;

	if (rdma_devices() != 0)
		return NULL;
	int r = pin_ctx_new(&o, &ctx);
	if (r == -ENODEV)
		return "no RDMA device (ibv_get_device_list found none)";
	if (r == 0)
		pin_ctx_free(ctx);
	return NULL;
}
