// SPDX-License-Identifier: MIT
/* Helpers that tests of several areas share (see test-common.h). */
#include <stdlib.h>
#include <unistd.h>

#include "test-common.h"

void test_pattern_write(int fd, size_t len, uint64_t seed)
{
	uint64_t *buf = malloc(len);

	ck_assert_ptr_nonnull(buf);
	for (size_t i = 0; i < len / 8; i++)
		buf[i] = test_pattern(i * 8, seed);
	ck_assert_int_eq(pwrite(fd, buf, len, 0), (ssize_t)len);
	free(buf);
}

bool test_page_ok(const uint8_t *base, size_t i, uint64_t seed)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const uint64_t *w = (const uint64_t *)(base + i * page);

	for (size_t j = 0; j < page / 8; j++)
		if (w[j] != test_pattern(i * page + j * 8, seed))
			return false;
	return true;
}

bool test_page_zero(const uint8_t *base, size_t i)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const uint64_t *w = (const uint64_t *)(base + i * page);

	for (size_t j = 0; j < page / 8; j++)
		if (w[j])
			return false;
	return true;
}
