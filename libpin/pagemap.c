// SPDX-License-Identifier: MIT
/*
 * Written-page tracking through the PAGEMAP_SCAN ioctl of a /proc/PID/pagemap
 * descriptor (Linux 6.7): the pages of a range registered write-protect with
 * a UFFD_FEATURE_WP_ASYNC userfaultfd that were written since they were last
 * protected, as address ranges, and optionally protected again in the same
 * walk.  The kernel checks access (PTRACE_MODE_READ) when the file is opened
 * and binds it to that process's memory: whoever holds the descriptor may
 * scan, which is how a daemon scans a client that handed its own over.
 * Also the pages of any range by their categories (present, zero page,
 * async write-protect allowed, written), for incremental checkpoints.
 * Calls only the ioctl helper and the log.
 */
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "libpin-private.h"

/*
 * The PAGEMAP_SCAN ABI from include/uapi/linux/fs.h (Linux 6.7); Debian 12's
 * linux-libc-dev (6.1) lacks it.  Fixed values, never changed.
 */
#define PIN_PM_SCAN_WP_MATCHING	  (1ull << 0)
#define PIN_PM_SCAN_CHECK_WPASYNC (1ull << 1)

struct pin_page_region {
	uint64_t start;
	uint64_t end;
	uint64_t categories;
};

struct pin_pm_scan_arg {
	uint64_t size;
	uint64_t flags;
	uint64_t start;
	uint64_t end;
	uint64_t walk_end;
	uint64_t vec;
	uint64_t vec_len;
	uint64_t max_pages;
	uint64_t category_inverted;
	uint64_t category_mask;
	uint64_t category_anyof_mask;
	uint64_t return_mask;
};

#define PIN_PAGEMAP_SCAN _IOWR('f', 16, struct pin_pm_scan_arg)

/* Ranges asked of the kernel per ioctl: the stack buffer the results are
 * copied through (24 bytes each), enough that a scattered 1 GiB takes few
 * calls. */
#define SCAN_BATCH 256

static int scan_error(uint64_t addr, uint64_t len, int err)
{
	if (err == -ENOTTY) {
		pin_log(PIN_LOG_ERR,
			"PAGEMAP_SCAN [%#" PRIx64 ", +%#" PRIx64 "): not in this kernel "
			"(Linux 6.7 or later)",
			addr, len);
		return -EOPNOTSUPP;
	}
	if (err == -EPERM)
		pin_log(PIN_LOG_ERR,
			"PAGEMAP_SCAN [%#" PRIx64 ", +%#" PRIx64 "): not all of it is "
			"registered write-protect with a WP_ASYNC userfaultfd (anonymous "
			"memory needs WP_UNPOPULATED too)",
			addr, len);
	else
		pin_log(PIN_LOG_ERR, "PAGEMAP_SCAN [%#" PRIx64 ", +%#" PRIx64 "): %s", addr, len,
			strerror(-err));
	return err;
}

PIN_EXPORT int pin_pagemap_scan_written(int pagemap_fd, uint64_t addr, uint64_t len,
					unsigned int flags, struct pin_pagemap_range *out,
					size_t max, uint64_t *ret_end)
{
	long page = sysconf(_SC_PAGESIZE);
	struct pin_page_region vec[SCAN_BATCH];
	uint64_t at = addr, end = addr + len;
	size_t n = 0;

	if (pagemap_fd < 0 || (flags & ~PIN_PAGEMAP_RESET) || !len || (addr | len) % page ||
	    end < addr || (max && !out) || (!max && !(flags & PIN_PAGEMAP_RESET)))
		return -EINVAL;
	while (at < end && (n < max || !max)) {
		size_t want = max ? max - n : 0;
		struct pin_pm_scan_arg arg = {
			.size = sizeof(arg),
			.flags = PIN_PM_SCAN_CHECK_WPASYNC |
				 ((flags & PIN_PAGEMAP_RESET) ? PIN_PM_SCAN_WP_MATCHING : 0),
			.start = at,
			.end = end,
			.vec = max ? (uintptr_t)vec : 0,
			.vec_len = want < SCAN_BATCH ? want : SCAN_BATCH,
			.category_mask = PIN_PAGE_IS_WRITTEN,
			.return_mask = PIN_PAGE_IS_WRITTEN,
		};
		int r;

		/* Valgrind does not know that the kernel fills vec (it takes
		 * the ioctl's argument for the only memory it writes): zeroed
		 * here, what the kernel writes over it counts as defined. */
		memset(vec, 0, arg.vec_len * sizeof(*vec));
		do
			r = ioctl(pagemap_fd, PIN_PAGEMAP_SCAN, &arg);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			return scan_error(at, end - at, -errno);
		for (int i = 0; i < r; i++) {
			/* A range the last batch ended with may go on in this one. */
			if (n && out[n - 1].addr + out[n - 1].len == vec[i].start)
				out[n - 1].len += vec[i].end - vec[i].start;
			else
				out[n++] = (struct pin_pagemap_range){ vec[i].start,
								       vec[i].end - vec[i].start };
		}
		if (arg.walk_end <= at)
			return scan_error(at, end - at, -EIO);
		at = arg.walk_end;
	}
	if (ret_end)
		*ret_end = at;
	return (int)n;
}

/* Append [start, end) of categories c, merged into the last run when it
 * continues it with the same categories. */
static int cat_push(struct pin_pagemap_cat **v, size_t *n, size_t *cap, uint64_t start,
		    uint64_t end, uint64_t c)
{
	if (*n && (*v)[*n - 1].addr + (*v)[*n - 1].len == start && (*v)[*n - 1].categories == c) {
		(*v)[*n - 1].len += end - start;
		return 0;
	}
	if (*n == *cap) {
		size_t nc = *cap ? 2 * *cap : 64;
		struct pin_pagemap_cat *nv = reallocarray(*v, nc, sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = (struct pin_pagemap_cat){ start, end - start, c };
	return 0;
}

int pin_pagemap_scan_categories(int pagemap_fd, uint64_t addr, uint64_t len, uint64_t mask,
				struct pin_pagemap_cat **ret, size_t *ret_n)
{
	struct page_region_batch {
		struct pin_page_region r[SCAN_BATCH];
	} *b = malloc(sizeof(*b));
	struct pin_pagemap_cat *v = NULL;
	uint64_t at = addr, end = addr + len;
	size_t n = 0, cap = 0;
	int r = b ? 0 : -ENOMEM;

	while (!r && at < end) {
		struct pin_pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = at,
			.end = end,
			.vec = (uintptr_t)b->r,
			.vec_len = SCAN_BATCH,
			.return_mask = mask,
		};
		int got;

		memset(b->r, 0, sizeof(b->r));
		do
			got = ioctl(pagemap_fd, PIN_PAGEMAP_SCAN, &arg);
		while (got < 0 && errno == EINTR);
		if (got < 0) {
			r = scan_error(at, end - at, -errno);
			break;
		}
		for (int i = 0; !r && i < got; i++)
			r = cat_push(&v, &n, &cap, b->r[i].start, b->r[i].end, b->r[i].categories);
		if (!r && arg.walk_end <= at)
			r = scan_error(at, end - at, -EIO);
		at = arg.walk_end;
	}
	free(b);
	if (r < 0) {
		free(v);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

bool pin_pagemap_scan_supported(int pagemap_fd)
{
	struct pin_pm_scan_arg arg = { .size = sizeof(arg) };
	int r;

	/* An empty range: 0 where the kernel has the ioctl, ENOTTY where not. */
	do
		r = ioctl(pagemap_fd, PIN_PAGEMAP_SCAN, &arg);
	while (r < 0 && errno == EINTR);
	return r >= 0 || errno != ENOTTY;
}
