// SPDX-License-Identifier: MIT
/*
 * Below every other file of the daemon: its settings (filled by main.c), the
 * page size, the monotonic clock, fstat_cached(), the bitmaps of one bit per
 * page and the points where a test holds the daemon to kill it.  It calls
 * nothing else of uffdd.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "uffdd.h"

/* A session's record, at most: its bitmaps cost two or three bits per page,
 * so 1 GiB covers 16 TiB of regions (virtual room only until used). */
/* The per-uid defaults leave room for a few large restores and their fork
 * children, far below what would exhaust the daemon (see uffdd(8)). */
/* Regions: four processes at the kernel's default vm.max_map_count (65530
 * mappings each; a CRIU restore registers one region per mapping at most).
 * A region costs uffdd some 220 bytes of heap (struct region, its slot in the
 * session's table, its record's index), which no other cap counts, and some
 * 220 bytes of record (counted as bytes); measured at 2^18 one-page regions
 * (hostile:regions_capped_by_default): 58 MiB of heap, 55 MiB of record. */
#define MAX_REGIONS_PER_UID (1u << 18)

struct uffdd_config uffdd_cfg = {
	.max_state_bytes = 1ull << 30,
	.max_regions_per_uid = MAX_REGIONS_PER_UID,
	.max_sessions_per_uid = 1024,
	.max_connections_per_uid = 256,
	.max_fds_per_uid = 4096,
	.max_bytes_per_uid = 4ull << 30,
	.admin_gid = UFFDD_NO_GROUP,
};
size_t uffdd_page;
unsigned int uffdd_page_shift;

void uffdd_page_init(void)
{
	uffdd_page = (size_t)sysconf(_SC_PAGESIZE);
	uffdd_page_shift = (unsigned int)__builtin_ctzl(uffdd_page);
}

int fstat_cached(int fd, struct stat *st)
{
	struct statx x;

	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &x) < 0)
		return -errno;
	memset(st, 0, sizeof(*st));
	st->st_dev = makedev(x.stx_dev_major, x.stx_dev_minor);
	st->st_ino = x.stx_ino;
	st->st_mode = x.stx_mode;
	st->st_nlink = x.stx_nlink;
	st->st_uid = x.stx_uid;
	st->st_gid = x.stx_gid;
	st->st_rdev = makedev(x.stx_rdev_major, x.stx_rdev_minor);
	st->st_size = (off_t)x.stx_size;
	st->st_blksize = (blksize_t)x.stx_blksize;
	st->st_blocks = (blkcnt_t)x.stx_blocks;
	st->st_atim = (struct timespec){ x.stx_atime.tv_sec, x.stx_atime.tv_nsec };
	st->st_mtim = (struct timespec){ x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec };
	st->st_ctim = (struct timespec){ x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec };
	return 0;
}

uint64_t uffdd_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- bitmaps ---- */

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

uint64_t bm_first_unset(const uint64_t *a, const uint64_t *b, uint64_t from, uint64_t to,
			uint64_t *budget)
{
	uint64_t i = from;

	while (i < to && *budget) {
		if (i % 64 == 0 && to - i >= 64 && *budget >= 64) {
			if (~(a[i / 64] | b[i / 64]))
				return i + (uint64_t)__builtin_ctzll(~(a[i / 64] | b[i / 64]));
			i += 64;
			*budget -= 64;
			continue;
		}
		if (!bm_test(a, i) && !bm_test(b, i))
			return i;
		i++;
		(*budget)--;
	}
	return i;
}

void bm_copy(uint64_t *dst, const uint64_t *src, uint64_t from, uint64_t n)
{
	uint64_t w = from / 64, sh = from % 64, i = 0;

	/* A word at a time: a fork copies every region's bitmaps while the
	 * child's userfaultfd waits to be stored. */
	for (; i + 64 <= n; i += 64, w++)
		dst[i / 64] = sh ? src[w] >> sh | src[w + 1] << (64 - sh) : src[w];
	for (; i < n; i++) {
		if (bm_test(src, from + i))
			bm_set(dst, i);
		else
			bm_clear(dst, i);
	}
}

void uffdd_hold(const char *point)
{
	const char *e = getenv(UFFDD_HOLD_ENV);
	size_t len = strlen(point);

	if (e && !strncmp(e, point, len) && (e[len] == ',' || !e[len]))
		raise(SIGSTOP);
}

void uffdd_hold_next(void)
{
	const char *hold = getenv(UFFDD_HOLD_ENV), *next = hold ? strchr(hold, ',') : NULL;
	char *rest = next ? strdup(next + 1) : NULL;

	if (!rest || setenv(UFFDD_HOLD_ENV, rest, 1) < 0)
		unsetenv(UFFDD_HOLD_ENV);
	free(rest);
}
