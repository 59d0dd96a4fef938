// SPDX-License-Identifier: MIT
/* The hugetlb pool around a test or a benchmark (hugetlb.h). */
#include <stdbool.h>
#include <stdio.h>

#include "hugetlb.h"

static long read_long(const char *path)
{
	long v = -1;
	FILE *f = fopen(path, "re");

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static bool write_long(const char *path, long v)
{
	FILE *f = fopen(path, "we");

	if (!f)
		return false;
	bool ok = fprintf(f, "%ld", v) > 0;
	return fclose(f) == 0 && ok;
}

long hugetlb_reserve(long n)
{
	long old = read_long(NR_HUGEPAGES);

	if (old < 0 || !write_long(NR_HUGEPAGES, old + n))
		return 0;
	long got = read_long(NR_HUGEPAGES) - old;
	if (got == n)
		return n;
	write_long(NR_HUGEPAGES, old);
	return got;
}

void hugetlb_release(long n)
{
	write_long(NR_HUGEPAGES, read_long(NR_HUGEPAGES) - n);
}
