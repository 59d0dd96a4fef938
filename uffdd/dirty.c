// SPDX-License-Identifier: MIT
/*
 * wp-async regions: WP regions of a userfaultfd opened with WP_ASYNC, whose
 * writes raise no fault.  Checks the client's pagemap descriptor (which
 * comes with the userfaultfd and sits in the fd store as s<id>.pagemap) and
 * owns DirtyGet's scan of such a region (PAGEMAP_SCAN through it) into the
 * region's dirty bitmap, which then answers exactly as for a synchronous WP
 * region.  The kernel checked the client's access to its own memory when
 * the client opened the file; the daemon opens no path.  Calls libpin and
 * the bitmaps; called by control.c and control-region.c (requests),
 * fault.c (discards) and takeover.c (restart).
 */
#include <inttypes.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "uffdd.h"

/* Written ranges taken per PAGEMAP_SCAN: 4 KiB of stack. */
#define SCAN_RANGES 256

bool dirty_is_pagemap(int fd)
{
	char path[64], link[64];
	struct statfs sf;
	static const char tail[] = "/pagemap";

	if (fstatfs(fd, &sf) < 0 || sf.f_type != PROC_SUPER_MAGIC)
		return false;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n < (ssize_t)sizeof(tail))
		return false;
	link[n] = '\0';
	return !strcmp(link + n - (sizeof(tail) - 1), tail);
}

bool dirty_async(const struct session *s, const struct region *r)
{
	return (r->mode & PIN_UFFD_REGISTER_WP) && s->uffd &&
	       (pin_uffd_features(s->uffd) & PIN_UFFD_FEATURE_WP_ASYNC);
}

void dirty_mark(struct region *r, uint64_t first, uint64_t n)
{
	uint64_t had = bm_count(r->dirty, first, n);

	bm_assign(r->dirty, first, n, true);
	STAT_ADD(r->n_dirty, n - had);
}

int dirty_scan(struct session *s, struct region *r, uint64_t addr, uint64_t len, bool reset,
	       char *why, size_t whylen)
{
	struct pin_pagemap_range out[SCAN_RANGES];
	uint64_t at = addr, end = addr + len;

	if (s->pagemap < 0) {
		snprintf(why, whylen,
			 "no pagemap of the client's: hand it over with the userfaultfd (a fork "
			 "child's session has none)");
		return -EBADFD;
	}
	while (at < end) {
		uint64_t from = at;
		int n = pin_pagemap_scan_written(s->pagemap, from, end - from, 0, out, SCAN_RANGES,
						 &at);
		if (n < 0) {
			snprintf(why, whylen, "PAGEMAP_SCAN [%#" PRIx64 ", +%#" PRIx64 "): %s",
				 from, end - from, strerror(-n));
			return n;
		}
		for (int i = 0; i < n; i++)
			dirty_mark(r, (out[i].addr - r->start) >> uffdd_page_shift,
				   out[i].len >> uffdd_page_shift);
		/* Protected again only once their bits are in the record:
		 * PAGEMAP_SCAN's own re-protection would clear the kernel's
		 * mark before the record has it. */
		for (int i = 0; reset && i < n; i++) {
			int e = pin_uffd_writeprotect(s->uffd, (void *)(uintptr_t)out[i].addr,
						      out[i].len, PIN_UFFD_WP);
			if (e < 0) {
				snprintf(why, whylen,
					 "UFFDIO_WRITEPROTECT [%#" PRIx64 ", +%#" PRIx64 "): %s",
					 out[i].addr, out[i].len, strerror(-e));
				return e;
			}
		}
	}
	return 0;
}
