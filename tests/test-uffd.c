// SPDX-License-Identifier: MIT
/* Suite uffd: libpin's userfaultfd calls against the real kernel. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"

static size_t page;

static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	return p;
}

START_TEST(copy_then_eexist)
{
	struct pin_uffd *u;
	unsigned char *dst = map_anon(2 * page), *src = map_anon(page);
	int64_t done;

	ck_assert_int_eq(pin_uffd_new(NULL, &u), 0);
	ck_assert_int_eq(pin_uffd_register(u, dst, 2 * page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	memset(src, 0xa5, page);
	ck_assert_int_eq(pin_uffd_copy(u, dst, src, page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	ck_assert_int_eq(dst[0], 0xa5);
	ck_assert_int_eq(dst[page - 1], 0xa5);
	ck_assert_int_eq(pin_uffd_copy(u, dst, src, page, 0, &done), -EEXIST);
	ck_assert_int_eq(done, -EEXIST);
	pin_uffd_free(u);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("uffd");
	TCase *tc = tcase_create("anon");

	page = (size_t)sysconf(_SC_PAGESIZE);
	tcase_add_test(tc, copy_then_eexist);
	suite_add_tcase(s, tc);
	return s;
}

const char *test_skip_reason(void)
{
	struct pin_uffd *u;

	if (pin_uffd_open(PIN_UFFD_CLOEXEC, &u) < 0)
		return "userfaultfd is not available to this user (needs /dev/userfaultfd "
		       "access or CAP_SYS_PTRACE)";
	pin_uffd_free(u);
	return NULL;
}
