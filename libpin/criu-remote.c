// SPDX-License-Identifier: MIT
/*
 * The pages of a CRIU dump's task when a page server holds them: its
 * PE_LAZY pages fetched from the server (pageserver.c), its other pages read
 * from pages-<id>.img, all placed one entry after the other in a memfd,
 * which is sealed and becomes the image's pages file.  The pagemap entries
 * are rewritten to point into it, so criu.c builds the image as for a local
 * dump.  A lazy dump (`criu dump --lazy-pages`) keeps no copy of the lazy
 * pages in pages-<id>.img; a dump served by `criu page-server --lazy-pages`
 * does, and they are fetched all the same: the restoring host needs the
 * metadata images only.  It calls pageserver.c and image.c.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "libpin-private.h"

/* What the memfd holds is final once filled: uffdd serves it as a file. */
#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

/* Lay the entries out in the new file: their offsets, its size. */
static int lay_out(struct pin_criu_pagemap_entry *e, size_t ne, uint64_t *ret_size,
		   size_t *ret_lazy, bool *ret_local)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), off = 0;

	*ret_lazy = 0;
	*ret_local = false;
	for (size_t i = 0; i < ne; i++) {
		if (e[i].flags & PIN_CRIU_PE_LAZY)
			(*ret_lazy)++;
		else if (e[i].flags & PIN_CRIU_PE_PRESENT)
			*ret_local = true;
		else
			continue; /* in a parent dump: criu.c refuses it */
		if (e[i].nr_pages > (UINT64_MAX - off) / page)
			return -EOVERFLOW;
		off += e[i].nr_pages * page;
	}
	*ret_size = off;
	return 0;
}

/* Fill map (the new file) from the page server and the local pages file;
 * rewrite the entries to point into it. */
static int fill(int dfd, const char *dir, int pid, uint32_t pages_id, struct pin_ps *ps,
		int timeout_ms, struct pin_criu_pagemap_entry *e, size_t ne, unsigned char *map,
		size_t nlazy, bool local)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), off = 0;
	_cleanup_free_ struct pin_ps_range *ranges = calloc(nlazy ? nlazy : 1, sizeof(*ranges));
	_cleanup_close_ int pfd = -1;
	size_t k = 0;
	char name[64];
	int r;

	if (!ranges)
		return -ENOMEM;
	snprintf(name, sizeof(name), "pages-%" PRIu32 ".img", pages_id);
	if (local) {
		pfd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
		if (pfd < 0) {
			r = -errno;
			pin_log(PIN_LOG_ERR, "open %s/%s: %s", dir, name, strerror(-r));
			return r;
		}
	}
	for (size_t i = 0; i < ne; i++) {
		uint64_t len = e[i].nr_pages * page;

		if (e[i].flags & PIN_CRIU_PE_LAZY) {
			ranges[k++] = (struct pin_ps_range){ e[i].vaddr, e[i].nr_pages, map + off };
		} else if (e[i].flags & PIN_CRIU_PE_PRESENT) {
			r = pin_pread_all(pfd, map + off, len, e[i].offset);
			if (r < 0) {
				pin_log(PIN_LOG_ERR,
					"pagemap-%d.img offset %" PRIu64 ": entry 0x%" PRIx64
					": read %" PRIu64 " bytes at offset %" PRIu64
					" of %s/%s: %s",
					pid, e[i].file_off, e[i].vaddr, len, e[i].offset, dir, name,
					strerror(-r));
				return r;
			}
		} else {
			continue;
		}
		e[i].offset = off;
		e[i].flags |= PIN_CRIU_PE_PRESENT;
		off += len;
	}
	/* Without ps they stay on the server: holes in the file. */
	return ps ? pin_ps_fetch(ps, (uint64_t)pid, ranges, k, timeout_ms) : 0;
}

int pin_criu_remote_pages(int dfd, const char *dir, int pid, uint32_t pages_id, struct pin_ps *ps,
			  int timeout_ms, struct pin_criu_pagemap_entry *e, size_t ne,
			  struct pin_image **ret, uint64_t *ret_size)
{
	_cleanup_close_ int fd = -1;
	unsigned char *map = NULL;
	uint64_t size;
	size_t nlazy;
	bool local;
	char name[32];
	int r = lay_out(e, ne, &size, &nlazy, &local);

	if (r < 0) {
		pin_log(PIN_LOG_ERR, "pagemap-%d.img: the pages add up past 2^64 bytes", pid);
		return r;
	}
	snprintf(name, sizeof(name), "criu-pages-%d", pid);
	fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "memfd of %" PRIu64 " bytes for task %d's pages: %s", size,
			pid, strerror(-r));
		return r;
	}
	if (size) {
		map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			r = -errno;
			pin_log(PIN_LOG_ERR, "mmap of %" PRIu64 " bytes for task %d's pages: %s",
				size, pid, strerror(-r));
			return r;
		}
		r = fill(dfd, dir, pid, pages_id, ps, timeout_ms, e, ne, map, nlazy, local);
		munmap(map, size);
		if (r < 0)
			return r;
	}
	if (fcntl(fd, F_ADD_SEALS, SEALS) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "F_ADD_SEALS on task %d's pages: %s", pid, strerror(-r));
		return r;
	}
	*ret = pin_image_new_fd(fd);
	if (!*ret)
		return -ENOMEM;
	fd = -1;
	*ret_size = size;
	return 0;
}
