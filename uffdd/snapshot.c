// SPDX-License-Identifier: MIT
/*
 * Snapshot regions: many restores of one image share one copy of it in
 * memory.  The image sits in a sealed memfd (shmem page cache); each
 * restored process maps it MAP_PRIVATE and registers the range MISSING and
 * MINOR, and hands the same memfd as the region's source (source.c keeps one
 * descriptor per inode, however many sessions name it).  A page the image
 * has faults MINOR and is served with UFFDIO_CONTINUE: the process maps the
 * page cache's page, shared with every other restore, until it writes it
 * (then the kernel copies it, privately).  A page the image never had (a
 * hole of the memfd) faults MISSING and is served as any zero page: the
 * MISSING registration keeps the kernel from filling the hole in the shared
 * memfd.  After MADV_DONTNEED a page refaults as the image's page again
 * (MINOR), a hole as zero (MISSING): what the file mapping gives without a
 * userfaultfd, so a snapshot region never marks pages discarded.  Owns the
 * check of such a region; fault.c places its pages.  Calls libpin, source.c
 * and util.c.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "uffdd.h"

/* The image cannot change under the daemon: its data and its holes are what
 * the daemon was told when the region came (a hole filled later would be
 * placed as a zero page; a page cut off would fail every CONTINUE). */
#define SNAPSHOT_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)

int snapshot_check(const struct session *s, uint32_t mode, const struct source *src, char *why,
		   size_t whylen)
{
	if (!(mode & PIN_UFFD_REGISTER_MINOR))
		return 0;
	if (!(pin_uffd_features(s->uffd) & PIN_UFFD_FEATURE_MINOR_SHMEM)) {
		snprintf(why, whylen,
			 "MINOR: the userfaultfd was opened without UFFD_FEATURE_MINOR_SHMEM");
		return -EOPNOTSUPP;
	}
	int fd = source_fd(src);
	int seals = fd < 0 ? -1 : fcntl(fd, F_GET_SEALS);
	if (seals < 0) {
		snprintf(why, whylen, "MINOR: the source is not a memfd (F_GET_SEALS: %s)",
			 fd < 0 ? "no file" : strerror(errno));
		return -EINVAL;
	}
	if ((seals & SNAPSHOT_SEALS) != SNAPSHOT_SEALS) {
		snprintf(why, whylen,
			 "MINOR: the source memfd is not sealed against writes, growing and "
			 "shrinking (seals %#x)",
			 (unsigned int)seals);
		return -EINVAL;
	}
	return 0;
}
