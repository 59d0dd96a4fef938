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
