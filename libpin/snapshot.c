// SPDX-License-Identifier: MIT
/*
 * Shared snapshots: many restores of one image, one copy of it in memory.
 * pin_image_snapshot() puts the image's pages into a sealed memfd (shmem
 * page cache), its regions one after another (pin_image_snapshot_offset()),
 * each page where its address puts it and the image's zero pages left as
 * holes; or takes such a memfd that another process made.  The restore
 * calls (restore.c) then map each region MAP_PRIVATE from it and register it
 * MISSING and MINOR, and uffdd serves the image's pages with UFFDIO_CONTINUE
 * (shared until a process writes one) and the holes as zero pages.  The
 * loader fills the page cache once, before any restore: uffdd opens nothing
 * for a client, and a page cache that faults fill would cost each first
 * fault a read and make the daemon write a file every restore shares.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "libpin-private.h"

/* include/uapi/linux/memfd.h, since Linux 6.3: never executable, said so
 * (else the kernel warns once per boot). */
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008u
#endif

/* What makes the memfd an image: no byte of it changes, and its holes stay
 * holes (uffdd refuses a source without these, snapshot.c in the daemon). */
#define SEALS_NEEDED (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)

uint64_t pin_image_snapshot_offset(const struct pin_image *img, size_t i)
{
	uint64_t off = 0;

	for (size_t k = 0; k < i; k++)
		off += pin_image_region(img, k)->len;
	return off;
}

static int memfd_new(uint64_t size)
{
	int fd = memfd_create("pin-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);

	/* Before Linux 6.3. */
	if (fd < 0 && errno == EINVAL)
		fd = memfd_create("pin-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		int err = errno;
		pin_log(PIN_LOG_ERR, "memfd of %" PRIu64 " bytes for a snapshot: %s", size,
			strerror(err));
		if (fd >= 0)
			close(fd);
		return -err;
	}
	return fd;
}

/* The image's data pages into map (the memfd, mapped shared). */
static int fill(const struct pin_image *img, unsigned char *map)
{
	uint64_t base = 0;

	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);

		for (size_t k = 0; k < g->nr_segments; k++) {
			const struct pin_image_segment *sg = &g->segments[k];
			if (!(sg->flags & PIN_IMAGE_SEG_DATA))
				continue;
			/* A chain's segment is in the pages file of the image that holds it. */
			int r = pin_pread_all(pin_image_segment_fd(img, sg),
					      map + base + (sg->addr - g->addr), sg->len,
					      sg->offset);
			if (r < 0) {
				pin_log(PIN_LOG_ERR,
					"snapshot: read [%#" PRIx64 ", +%#" PRIx64 ") at %#" PRIx64
					" of the pages file: %s",
					sg->addr, sg->len, sg->offset,
					r == -ENODATA ? "past its end" : strerror(-r));
				return r;
			}
		}
		base += g->len;
	}
	return 0;
}

static int load(const struct pin_image *img, uint64_t size)
{
	_cleanup_close_ int fd = memfd_new(size);
	int r;

	if (fd < 0)
		return fd;
	if (size) {
		unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			r = -errno;
			pin_log(PIN_LOG_ERR, "mmap of a snapshot memfd of %" PRIu64 " bytes: %s",
				size, strerror(-r));
			return r;
		}
		r = fill(img, map);
		munmap(map, size);
		if (r < 0)
			return r;
	}
	if (fcntl(fd, F_ADD_SEALS, SEALS_NEEDED | F_SEAL_SEAL) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "F_ADD_SEALS on a snapshot memfd: %s", strerror(-r));
		return r;
	}
	r = fd;
	fd = -1;
	return r;
}

/* A memfd another process made for img: a copy, once checked. */
static int adopt(int fd, uint64_t size)
{
	struct stat st;
	int seals = fcntl(fd, F_GET_SEALS);

	if (seals < 0) {
		int err = errno;
		pin_log(PIN_LOG_ERR, "snapshot: fd %d is not a memfd (F_GET_SEALS: %s)", fd,
			strerror(err));
		return err == EBADF ? -EBADF : -EINVAL;
	}
	if ((seals & SEALS_NEEDED) != SEALS_NEEDED) {
		pin_log(PIN_LOG_ERR,
			"snapshot: memfd %d is not sealed against writes, growing and "
			"shrinking (seals %#x)",
			fd, (unsigned int)seals);
		return -EINVAL;
	}
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != size) {
		pin_log(PIN_LOG_ERR,
			"snapshot: memfd %d holds %lld bytes, the image's regions %" PRIu64, fd,
			(long long)st.st_size, size);
		return -EINVAL;
	}
	int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	return copy < 0 ? -errno : copy;
}

PIN_EXPORT int pin_image_snapshot(struct pin_image *img, int fd)
{
	if (!img || fd < -1)
		return -EINVAL;
	if (pin_image_snapshot_fd(img) >= 0)
		return -EBUSY;
	uint64_t size = pin_image_snapshot_offset(img, pin_image_nr_regions(img));
	int r = fd < 0 ? load(img, size) : adopt(fd, size);
	if (r < 0)
		return r;
	pin_image_snapshot_set(img, r);
	return r;
}
