// SPDX-License-Identifier: MIT
/* Suite pin: the RDMA backend, on a machine with an RDMA device. */
#include <errno.h>
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

const char *test_skip_reason(void)
{
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = PIN_BACKEND_RDMA };
	struct pin_ctx *ctx;
	int r = pin_ctx_new(&o, &ctx);

	if (r == -ENODEV)
		return "no RDMA device";
	if (r == -EOPNOTSUPP)
		return "built without libibverbs (meson -Drdma)";
	if (r < 0)
		return "the RDMA device cannot be opened";
	pin_ctx_free(ctx);
	return NULL;
}
