// SPDX-License-Identifier: MIT
/*
 * Lazy restore of a checkpoint image: the restored process maps a region where
 * it was and registers it (pin_image_map_region), and whoever holds the
 * connection to uffdd describes where its pages come from
 * (pin_client_add_image_region).  They are two calls because with CRIU the
 * two sides are different processes.  Once pages are in, the restored
 * process turns whole 2 MiB runs of a region back into huge pages
 * (pin_image_collapse_region).
 */
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>

#include "libpin-private.h"

/* include/uapi/asm-generic/mman-common.h, since Linux 6.1; glibc 2.36 lacks it. */
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
/* A PMD-sized transparent huge page of x86-64, arm64 with 4 KiB pages, and
 * the other architectures with 4 KiB pages: what MADV_COLLAPSE builds. */
#define HUGE_RUN (2ull << 20)

/* A page server the PE_LAZY pages are asked of: a connected socket, and
 * the task id its GETs carry. */
struct remote_pages {
	int fd;
	uint64_t task;
};

static const struct pin_image_region *region_at(const struct pin_image *img, size_t i)
{
	const struct pin_image_region *g = pin_image_region(img, i);

	if (!g)
		pin_log(PIN_LOG_ERR, "image region %zu: no such region (%zu in the image)", i,
			pin_image_nr_regions(img));
	return g;
}

PIN_EXPORT int pin_image_map_region(const struct pin_image *img, size_t i, struct pin_uffd *u)
{
	const struct pin_image_region *g;
	void *want, *p;

	if (!img || !u)
		return -EINVAL;
	g = region_at(img, i);
	if (!g)
		return -ENOENT;
	want = (void *)(uintptr_t)g->addr;
	int snap = pin_image_snapshot_fd(img);
	unsigned int mode = PIN_UFFD_REGISTER_MISSING;
	if (snap >= 0) {
		/* The snapshot's pages fault MINOR, its holes MISSING. */
		if (!(pin_uffd_features(u) & PIN_UFFD_FEATURE_MINOR_SHMEM)) {
			pin_log(PIN_LOG_ERR,
				"image region %zu of a snapshot: the userfaultfd "
				"lacks UFFD_FEATURE_MINOR_SHMEM",
				i);
			return -EOPNOTSUPP;
		}
		mode |= PIN_UFFD_REGISTER_MINOR;
	}
	/* NOREPLACE: MAP_FIXED over a mapping would silently drop it, and with
	 * it any userfaultfd registration it had.  A snapshot's region maps
	 * the memfd privately: its pages are shared until written. */
	p = mmap(want, g->len, (int)g->prot,
		 MAP_PRIVATE | MAP_FIXED_NOREPLACE | (snap >= 0 ? 0 : MAP_ANONYMOUS), snap,
		 snap >= 0 ? (off_t)pin_image_snapshot_offset(img, i) : 0);
	if (p == MAP_FAILED) {
		int err = errno;
		pin_log(PIN_LOG_ERR, "mmap [%#llx, +%#llx) for image region %zu: %s",
			(unsigned long long)g->addr, (unsigned long long)g->len, i, strerror(err));
		return -err;
	}
	if (p != want) {
		/* Kernels before 4.17 ignore MAP_FIXED_NOREPLACE. */
		munmap(p, g->len);
		pin_log(PIN_LOG_ERR, "mmap [%#llx, +%#llx): placed elsewhere",
			(unsigned long long)g->addr, (unsigned long long)g->len);
		return -EEXIST;
	}
	/* A huge page would be filled whole on the first fault, hiding every
	 * other page of its 2 MiB from the daemon. */
	if (madvise(p, g->len, MADV_NOHUGEPAGE) < 0) {
		int err = errno;
		munmap(p, g->len);
		pin_log(PIN_LOG_ERR, "madvise(MADV_NOHUGEPAGE) [%p, +%#llx): %s", p,
			(unsigned long long)g->len, strerror(err));
		return -err;
	}
	int r = pin_uffd_register(u, p, g->len, mode, NULL);
	if (r < 0)
		munmap(p, g->len);
	return r;
}

/*
 * Whether segment b continues the run that ends with a: the next addresses,
 * and either both zero or both data with the next bytes of the pages file.
 * CRIU writes a mapping's pages in address order, cutting its pagemap in
 * entries of a few MiB: a mapping dumped whole is one run.
 */
static bool continues(const struct pin_image_segment *a, const struct pin_image_segment *b,
		      const struct remote_pages *rp)
{
	bool data = a->flags & PIN_IMAGE_SEG_DATA;
	bool lazy = rp && (a->flags & PIN_IMAGE_SEG_LAZY);

	if (a->addr + a->len != b->addr || data != !!(b->flags & PIN_IMAGE_SEG_DATA) ||
	    (rp && lazy != !!(b->flags & PIN_IMAGE_SEG_LAZY)))
		return false;
	/* A page server's offsets are the task's addresses. */
	return !data || lazy || (a->source == b->source && a->offset + a->len == b->offset);
}

/*
 * The runs of segments of region i as regions at v + n (room for every
 * segment), flags each: the new count.  With rp, the PE_LAZY runs are asked
 * of its page server.  One uffdd region per run: each
 * region costs the daemon a record and bitmaps, and the restore waits for
 * them (issue 13).
 */
static size_t runs_of(const struct pin_image *img, size_t i, unsigned int flags,
		      const struct remote_pages *rp, struct pin_client_region *v, size_t n)
{
	const struct pin_image_region *g = pin_image_region(img, i);
	int snap = pin_image_snapshot_fd(img);

	/* A snapshot's region is one run: the memfd's holes are its zero
	 * pages, and the kernel tells them apart (MISSING, not MINOR). */
	if (snap >= 0) {
		v[n++] = (struct pin_client_region){
			.sz = sizeof(v[0]),
			.addr = (void *)(uintptr_t)g->addr,
			.len = g->len,
			.mode = PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_MINOR,
			.flags = flags,
			.fd = snap,
			.offset = pin_image_snapshot_offset(img, i),
		};
		return n;
	}
	for (size_t k = 0; k < g->nr_segments; k++) {
		const struct pin_image_segment *sg = &g->segments[k];
		bool data = sg->flags & PIN_IMAGE_SEG_DATA;

		if (k && continues(&g->segments[k - 1], sg, rp)) {
			v[n - 1].len += sg->len;
			continue;
		}
		v[n++] = (struct pin_client_region){
			.sz = sizeof(v[0]),
			.addr = (void *)(uintptr_t)sg->addr,
			.len = sg->len,
			.mode = PIN_UFFD_REGISTER_MISSING,
			.flags = flags,
			.fd = data ? pin_image_segment_fd(img, sg) : -1,
			.offset = data ? sg->offset : 0,
		};
		if (data && rp && (sg->flags & PIN_IMAGE_SEG_LAZY)) {
			v[n - 1].flags |= PIN_CLIENT_REGION_PAGE_SERVER;
			v[n - 1].fd = rp->fd;
			v[n - 1].offset = sg->addr;
			v[n - 1].task = rp->task;
		}
	}
	return n;
}

/*
 * One request for all the runs of each pages file, the zero runs with the
 * first (with the page server's runs when there are some): a restore of many
 * mappings starts no later for their number (issue 13), and a request carries
 * one descriptor.  A chain's image has one pages file per image that holds
 * some of its pages; a snapshot has its memfd only.  The restorer's first
 * touches (rseq's area, written by the kernel at its registration) come
 * before the regions do and wait for them: a remote restore's zero runs in
 * a second request made it wait one more round trip to uffdd.
 */
static int add_by_source(struct pin_client *c, const struct pin_image *img,
			 const struct pin_client_region *v, size_t n)
{
	if (pin_image_snapshot_fd(img) >= 0)
		return pin_client_region_add_many(c, v, n);

	_cleanup_free_ struct pin_client_region *batch = calloc(n ? n : 1, sizeof(*batch));
	int r = 0;

	if (!batch)
		return -ENOMEM;
	/* The page server's runs and the zero runs: one batch, one descriptor. */
	size_t nps = 0;
	bool ps = false;
	for (size_t i = 0; i < n; i++)
		ps |= v[i].flags & PIN_CLIENT_REGION_PAGE_SERVER;
	for (size_t i = 0; ps && i < n; i++)
		if ((v[i].flags & PIN_CLIENT_REGION_PAGE_SERVER) || v[i].fd < 0)
			batch[nps++] = v[i];
	if (nps)
		r = pin_client_region_add_many(c, batch, nps);
	for (uint32_t source = 0; !r && source <= img->nr_parents; source++) {
		int fd = pin_image_source_fd(img, source);
		size_t k = 0;

		for (size_t i = 0; i < n; i++)
			if (!(v[i].flags & PIN_CLIENT_REGION_PAGE_SERVER) &&
			    (v[i].fd < 0 ? !source && !ps : v[i].fd == fd))
				batch[k++] = v[i];
		if (k)
			r = pin_client_region_add_many(c, batch, k);
	}
	return r;
}

static int add_image_regions(struct pin_client *c, const struct pin_image *img, const size_t *idx,
			     size_t nidx, unsigned int flags, const struct remote_pages *rp)
{
	size_t segments = 0, n = 0;

	if (!c || !img || (nidx && !idx) ||
	    (flags & ~(PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER |
		       PIN_CLIENT_REGION_REGISTERED)))
		return -EINVAL;
	for (size_t j = 0; j < nidx; j++) {
		const struct pin_image_region *g = region_at(img, idx[j]);
		if (!g)
			return -ENOENT;
		segments += g->nr_segments;
		if (g->nr_segments > INT_MAX || segments > INT_MAX)
			return -E2BIG;
	}
	_cleanup_free_ struct pin_client_region *v = calloc(segments ? segments : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t j = 0; j < nidx; j++)
		n = runs_of(img, idx[j], flags, rp, v, n);
	int r = add_by_source(c, img, v, n);
	return r < 0 ? r : (int)n;
}

int pin_client_add_image_regions(struct pin_client *c, const struct pin_image *img,
				 const size_t *idx, size_t nidx, unsigned int flags)
{
	return add_image_regions(c, img, idx, nidx, flags, NULL);
}

int pin_client_add_image_regions_remote(struct pin_client *c, const struct pin_image *img,
					const size_t *idx, size_t nidx, unsigned int flags,
					int ps_fd, uint64_t task)
{
	struct remote_pages rp = { ps_fd, task };

	return ps_fd < 0 ? -EBADF : add_image_regions(c, img, idx, nidx, flags, &rp);
}

PIN_EXPORT int pin_client_add_image_region(struct pin_client *c, const struct pin_image *img,
					   size_t i, unsigned int flags)
{
	return pin_client_add_image_regions(c, img, &i, 1, flags);
}

/*
 * One aligned 2 MiB run: 1 when it is a huge page now, 0 when the kernel
 * would not make it one yet, else -errno.  While the range is registered
 * MISSING, the kernel refuses a run with a page not in (EBUSY: it counts an
 * empty or zero-page PTE of an armed range as one it must not fill), so a run
 * is never completed with zeros behind the daemon's back.
 */
static int collapse_run(uint64_t a)
{
	void *p = (void *)(uintptr_t)a;
	int err;

	/* MADV_COLLAPSE refuses a VM_NOHUGEPAGE range (EINVAL). */
	if (madvise(p, HUGE_RUN, MADV_HUGEPAGE) < 0) {
		err = errno;
		pin_log(PIN_LOG_ERR, "madvise(MADV_HUGEPAGE) [%p, +%#llx): %s", p, HUGE_RUN,
			strerror(err));
		return -err;
	}
	if (madvise(p, HUGE_RUN, MADV_COLLAPSE) == 0)
		return 1;
	err = errno;
	/* Not whole yet: small pages again, as pin_image_map_region() left them. */
	if (madvise(p, HUGE_RUN, MADV_NOHUGEPAGE) < 0) {
		int e = errno;
		pin_log(PIN_LOG_ERR, "madvise(MADV_NOHUGEPAGE) [%p, +%#llx): %s", p, HUGE_RUN,
			strerror(e));
		return -e;
	}
	/* EBUSY: a page not in (or a cgroup charge failed); EAGAIN: a page
	 * briefly busy; ENOMEM: no huge page free.  A later call may do. */
	if (err == EBUSY || err == EAGAIN || err == ENOMEM)
		return 0;
	pin_log(PIN_LOG_ERR, "madvise(MADV_COLLAPSE) [%p, +%#llx): %s", p, HUGE_RUN, strerror(err));
	return -err;
}

PIN_EXPORT int pin_image_collapse_region(const struct pin_image *img, size_t i)
{
	const struct pin_image_region *g;
	uint64_t a, end;
	int n = 0;

	if (!img)
		return -EINVAL;
	g = region_at(img, i);
	if (!g)
		return -ENOENT;
	a = (g->addr + HUGE_RUN - 1) & ~(HUGE_RUN - 1);
	end = (g->addr + g->len) & ~(HUGE_RUN - 1);
	for (; a < end; a += HUGE_RUN) {
		int r = collapse_run(a);
		if (r < 0)
			return r;
		n += r;
	}
	return n;
}
