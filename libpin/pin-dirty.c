// SPDX-License-Identifier: MIT
/*
 * Marking shared pages dirty before an io_uring pin of them is released.
 * The kernel releases a registered buffer with unpin_user_page(), not
 * unpin_user_pages_dirty_lock() (io_uring/rsrc.c, io_release_ubuf), and what
 * a device or a READ_FIXED writes goes through the kernel's mapping of the
 * page, which leaves the process's page table entry clean.  A shmem page
 * that was present and clean when it was pinned (read, or written back)
 * stays clean, and reclaim drops a clean shmem page: the file then reads
 * zeros where the device wrote (pin_user_pages.rst, "a shmem page written
 * by DMA can be lost").  Anonymous private memory needs nothing: reclaim
 * writes every anonymous page out.  So each MAP_SHARED part of the range,
 * found with PROCMAP_QUERY on /proc/self/maps, gets MADV_POPULATE_WRITE,
 * which marks every page it walks dirty (mm/gup.c: FOLL_TOUCH | FOLL_WRITE
 * on a clean entry) and writes nothing.
 *
 * It owns no state: pin.c calls it for a pin whose range still maps the
 * pinned pages, before the backend releases them; it calls util.c.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pin-internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Kernel ABI newer than Debian 12's headers (include/uapi/linux/fs.h, 6.11). */
struct pin_procmap_query {
	uint64_t size;
	uint64_t query_flags;
	uint64_t query_addr;
	uint64_t vma_start;
	uint64_t vma_end;
	uint64_t vma_flags;
	uint64_t vma_page_size;
	uint64_t vma_offset;
	uint64_t inode;
	uint32_t dev_major;
	uint32_t dev_minor;
	uint32_t vma_name_size;
	uint32_t build_id_size;
	uint64_t vma_name_addr;
	uint64_t build_id_addr;
};
#define PIN_PROCMAP_QUERY		       _IOWR('f', 17, struct pin_procmap_query)
#define PIN_PROCMAP_QUERY_VMA_SHARED	       0x08
#define PIN_PROCMAP_QUERY_COVERING_OR_NEXT_VMA 0x10

static void dirty(uintptr_t start, uintptr_t end)
{
	if (madvise((void *)start, end - start, MADV_POPULATE_WRITE) == 0)
		return;
	int err = errno;
	pin_log(PIN_LOG_WARN,
		"madvise(MADV_POPULATE_WRITE) [%#lx, +%#lx) before releasing its pin: %s: what "
		"a device wrote there may be lost when the memory is reclaimed",
		(unsigned long)start, (unsigned long)(end - start), strerror(err));
}

void pin_dirty_shared(uintptr_t start, uintptr_t end)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	uintptr_t cur = start;

	if (fd < 0) {
		int err = errno;
		pin_log(PIN_LOG_WARN, "open /proc/self/maps: %s: [%#lx, +%#lx) is not marked dirty",
			strerror(err), (unsigned long)start, (unsigned long)(end - start));
		return;
	}
	while (cur < end) {
		struct pin_procmap_query q = {
			.size = sizeof(q),
			.query_flags = PIN_PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
			.query_addr = cur,
		};
		int r = pin_ioctl(fd, PIN_PROCMAP_QUERY, &q);
		/* ENOENT: nothing mapped from cur on. */
		if (r == -ENOENT || (r == 0 && q.vma_start >= end))
			break;
		if (r < 0) {
			/* A kernel without the query: every part, shared or not. */
			dirty(cur, end);
			break;
		}
		uintptr_t a = q.vma_start > cur ? q.vma_start : cur;
		uintptr_t b = q.vma_end < end ? q.vma_end : end;
		if (q.vma_flags & PIN_PROCMAP_QUERY_VMA_SHARED)
			dirty(a, b);
		cur = b;
	}
	close(fd);
}
