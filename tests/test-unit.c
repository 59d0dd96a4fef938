// SPDX-License-Identifier: MIT
/* Suite unit: what libpin decides without asking the kernel. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "libpin-private.h"
#include "test-common.h"

START_TEST(feature_names)
{
	ck_assert_str_eq(pin_uffd_feature_name(PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP),
			 "PAGEFAULT_FLAG_WP");
	ck_assert_str_eq(pin_uffd_feature_name(PIN_UFFD_FEATURE_MOVE), "MOVE");
	ck_assert_str_eq(pin_uffd_feature_name(PIN_UFFD_FEATURE_THREAD_ID), "THREAD_ID");
	ck_assert_ptr_null(pin_uffd_feature_name(0));
	ck_assert_ptr_null(pin_uffd_feature_name(PIN_UFFD_FEATURE_MOVE << 1));
	ck_assert_ptr_null(pin_uffd_feature_name(PIN_UFFD_FEATURE_MOVE | PIN_UFFD_FEATURE_SIGBUS));
}
END_TEST

START_TEST(public_bits_match_kernel)
{
	ck_assert_uint_eq(PIN_UFFD_FEATURE_EVENT_UNMAP, UFFD_FEATURE_EVENT_UNMAP);
	ck_assert_uint_eq(PIN_UFFD_FEATURE_MOVE, UFFD_FEATURE_MOVE);
	ck_assert_uint_eq(PIN_UFFD_REGISTER_MINOR, UFFDIO_REGISTER_MODE_MINOR);
	ck_assert_uint_eq(PIN_UFFD_IOCTL_COPY, 1ull << _UFFDIO_COPY);
	ck_assert_uint_eq(PIN_UFFD_IOCTL_MOVE, 1ull << _UFFDIO_MOVE);
	ck_assert_uint_eq(PIN_UFFD_IOCTL_POISON, 1ull << _UFFDIO_POISON);
	ck_assert_uint_eq(PIN_UFFD_PF_MINOR, UFFD_PAGEFAULT_FLAG_MINOR);
	ck_assert_uint_eq(sizeof(struct uffdio_move), 40);
	ck_assert_uint_eq(sizeof(struct uffdio_poison), 32);
}
END_TEST

START_TEST(opts_tail_must_be_zero)
{
	struct {
		struct pin_uffd_opts o;
		uint64_t future;
	} big = { .o = { .sz = sizeof(big), .flags = PIN_UFFD_NONBLOCK } };
	struct pin_uffd_opts small = { .sz = offsetof(struct pin_uffd_opts, features),
				       .flags = PIN_UFFD_SYSCALL,
				       .features = 1 };
	struct pin_uffd_opts o = { .sz = 1, .features = 7 };
	struct pin_uffd *u = (struct pin_uffd *)0x1;

	ck_assert_int_eq(pin_opts_copy(&o, sizeof(o), &big), 0);
	ck_assert_uint_eq(o.sz, sizeof(o));
	ck_assert_uint_eq(o.flags, PIN_UFFD_NONBLOCK);
	ck_assert_uint_eq(o.features, 0);
	/* An older caller's struct: what it lacks keeps our default. */
	o.features = 7;
	ck_assert_int_eq(pin_opts_copy(&o, sizeof(o), &small), 0);
	ck_assert_uint_eq(o.flags, PIN_UFFD_SYSCALL);
	ck_assert_uint_eq(o.features, 7);
	ck_assert_int_eq(pin_opts_copy(&o, sizeof(o), NULL), 0);
	ck_assert_uint_eq(o.features, 7);
	big.future = 1;
	ck_assert_int_eq(pin_opts_copy(&o, sizeof(o), &big), -E2BIG);
	ck_assert_int_eq(pin_uffd_new(&big.o, &u), -E2BIG);
	ck_assert_ptr_eq(u, (struct pin_uffd *)0x1);
	big.o.sz = 4;
	ck_assert_int_eq(pin_opts_copy(&o, sizeof(o), &big), -EINVAL);
}
END_TEST

START_TEST(bad_arguments)
{
	struct pin_uffd *u = NULL;
	int64_t done = 7;

	ck_assert_int_eq(pin_uffd_open(0x100, &u), -EINVAL);
	ck_assert_ptr_null(u);
	ck_assert_int_eq(pin_uffd_open(0, NULL), -EINVAL);
	ck_assert_int_eq(pin_uffd_register(NULL, NULL, 4096, PIN_UFFD_REGISTER_MISSING, NULL),
			 -EINVAL);
	ck_assert_int_eq(pin_uffd_copy(NULL, NULL, NULL, 4096, 0, &done), -EINVAL);
	ck_assert_int_eq(pin_uffd_copy(NULL, NULL, NULL, 4096, PIN_UFFD_ALLOW_SRC_HOLES, &done),
			 -EINVAL);
	ck_assert_int_eq(done, 7);
	ck_assert_int_eq(pin_uffd_fd(NULL), -EINVAL);
	ck_assert_uint_eq(pin_uffd_features(NULL), 0);
	ck_assert_int_eq(pin_uffd_from_fd(-1, 0, &u), -EINVAL);
	pin_uffd_free(NULL);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("unit");
	TCase *tc = tcase_create("uffd");

	tcase_add_test(tc, feature_names);
	tcase_add_test(tc, public_bits_match_kernel);
	tcase_add_test(tc, opts_tail_must_be_zero);
	tcase_add_test(tc, bad_arguments);
	suite_add_tcase(s, tc);
	return s;
}

const char *test_skip_reason(void)
{
	return NULL;
}
