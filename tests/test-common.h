/* SPDX-License-Identifier: MIT */
/* What every tests/test-<area>.c provides to, and takes from, test-main.c. */
#ifndef TEST_COMMON_H
#define TEST_COMMON_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/* The area's suite. */
Suite *test_suite(void);

/* NULL when the area can run here; else why not (the binary exits 77). */
const char *test_skip_reason(void);

/* The 64-bit word stored at virtual address a in a patterned page. */
static inline uint64_t test_pattern(uintptr_t a, uint64_t seed)
{
	return (uint64_t)a ^ 0x9e3779b97f4a7c15ull ^ seed;
}

/* Write len bytes at offset 0 of fd: the word at offset o is test_pattern(o, seed). */
void test_pattern_write(int fd, size_t len, uint64_t seed);

#endif /* TEST_COMMON_H */
