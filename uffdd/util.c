// SPDX-License-Identifier: MIT
/*
 * Below every other file of the daemon: its settings (filled by main.c), the
 * page size, the monotonic clock and the bitmaps of one bit per page.  It
 * calls nothing else of uffdd.
 */
#include <time.h>
#include <unistd.h>

#include "uffdd.h"

struct uffdd_config uffdd_cfg;
size_t uffdd_page;
unsigned int uffdd_page_shift;

void uffdd_page_init(void)
{
	uffdd_page = (size_t)sysconf(_SC_PAGESIZE);
	uffdd_page_shift = (unsigned int)__builtin_ctzl(uffdd_page);
}

uint64_t uffdd_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- bitmaps ---- */

uint64_t *bm_new(uint64_t nbits)
{
	return calloc((nbits + 63) / 64 ? (nbits + 63) / 64 : 1, sizeof(uint64_t));
}

void bm_assign(uint64_t *bm, uint64_t from, uint64_t n, bool value)
{
	for (uint64_t i = from; i < from + n;) {
		if (i % 64 == 0 && from + n - i >= 64) {
			bm[i / 64] = value ? ~0ull : 0;
			i += 64;
			continue;
		}
		if (value)
			bm_set(bm, i);
		else
			bm_clear(bm, i);
		i++;
	}
}

uint64_t bm_count(const uint64_t *bm, uint64_t from, uint64_t n)
{
	uint64_t c = 0;

	for (uint64_t i = from; i < from + n;) {
		if (i % 64 == 0 && from + n - i >= 64) {
			c += (uint64_t)__builtin_popcountll(bm[i / 64]);
			i += 64;
			continue;
		}
		c += bm_test(bm, i);
		i++;
	}
	return c;
}

uint64_t *bm_slice(const uint64_t *src, uint64_t from, uint64_t n)
{
	uint64_t *bm = bm_new(n);

	if (!bm || !src)
		return bm;
	for (uint64_t i = 0; i < n; i++)
		if (bm_test(src, from + i))
			bm_set(bm, i);
	return bm;
}
