// SPDX-License-Identifier: MIT
/*
 * CRIU's images read into a pin_image: the private anonymous VMAs of
 * mm-PID.img, cut into segments by the entries of pagemap-PID.img whose
 * pages sit in pages-<pages_id>.img.  The facts (magic numbers, message
 * fields, flag bits) are CRIU's public image format; see proto/criu.proto.
 * With a page server, the pages file is the one criu-remote.c fills.
 */
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "criu-internal.h"

/* VmaEntry.status bits, criu/include/image.h */
#define VMA_AREA_REGULAR  (1u << 0)
#define VMA_AREA_STACK	  (1u << 1)
#define VMA_AREA_VSYSCALL (1u << 2)
#define VMA_AREA_VDSO	  (1u << 3)
#define VMA_AREA_HEAP	  (1u << 5)
#define VMA_ANON_PRIVATE  (1u << 9)
#define VMA_AREA_VVAR	  (1u << 12)
#define VMA_AREA_GUARD	  (1u << 16)
#define VMA_AREA_UPROBES  (1u << 17)

struct vma {
	uint64_t start, end;
	uint32_t prot, flags, status;
};

static uint64_t page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

/* The VMAs of mm-PID.img in address order, CRIU's fake guard VMAs left out. */
static int read_vmas(int dfd, int pid, struct vma **ret, size_t *ret_n)
{
	Criu__MmEntry *mm = NULL, *extra;
	struct vma *v = NULL;
	struct pin_criu_img f;
	size_t off, n = 0;
	char name[64];
	int r;

	snprintf(name, sizeof(name), "mm-%d.img", pid);
	r = pin_criu_img_load_first(dfd, name, CRIU_MM_MAGIC, &criu__mm_entry__descriptor, &f,
				    (void **)&mm);
	if (r < 0)
		return r;
	r = pin_criu_img_next(&f, &criu__mm_entry__descriptor, (void **)&extra, &off);
	if (r > 0) {
		protobuf_c_message_free_unpacked(&extra->base, NULL);
		pin_log(PIN_LOG_ERR, "%s offset %zu: a second MmEntry", name, off);
		r = -EBADMSG;
	}
	if (r < 0)
		goto out;
	v = calloc(mm->n_vmas ? mm->n_vmas : 1, sizeof(*v));
	if (!v) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const Criu__VmaEntry *ve = mm->vmas[i];

		if (ve->status & VMA_AREA_GUARD)
			continue;
		if (ve->start >= ve->end || ve->start % page_size() || ve->end % page_size() ||
		    (n && ve->start < v[n - 1].end)) {
			pin_log(PIN_LOG_ERR,
				"%s: VMA %zu (0x%" PRIx64 "-0x%" PRIx64
				") is empty, unaligned or out of order",
				name, i, ve->start, ve->end);
			r = -EBADMSG;
			goto out;
		}
		v[n++] = (struct vma){ .start = ve->start,
				       .end = ve->end,
				       .prot = ve->prot,
				       .flags = ve->flags,
				       .status = ve->status };
	}
	*ret = v;
	*ret_n = n;
	v = NULL;
out:
	free(v);
	if (mm)
		protobuf_c_message_free_unpacked(&mm->base, NULL);
	pin_criu_img_release(&f);
	return r;
}

/* Every page of every entry lies in a VMA, and its pages in its dump's
 * pages file. */
static int check_entries(int pid, const struct pin_criu_chain *c, const struct vma *v, size_t nv)
{
	const struct pin_criu_pagemap_entry *e = c->e;
	uint64_t page = page_size();
	size_t k = 0;

	for (size_t i = 0; i < c->ne; i++) {
		uint64_t addr = e[i].vaddr, end = e[i].vaddr + e[i].nr_pages * page;
		uint32_t s = e[i].source;

		if (!(e[i].flags & PIN_CRIU_PE_PRESENT)) {
			pin_log(PIN_LOG_ERR,
				"%s/pagemap-%d.img offset %" PRIu64 ": entry 0x%" PRIx64
				" has flags 0x%" PRIx32 ": %s",
				c->dirs[0], pid, e[i].file_off, e[i].vaddr, e[i].flags,
				e[i].flags & PIN_CRIU_PE_PARENT
					? "pages in a parent dump are not served with a page server"
					: "its pages are in no pages file (on a page server? "
					  "uffdd-lazy-pages --page-server)");
			return -EOPNOTSUPP;
		}
		if (e[i].offset + (end - addr) > c->pages_sizes[s]) {
			pin_log(PIN_LOG_ERR,
				"%s/pagemap-%d.img offset %" PRIu64 ": entry 0x%" PRIx64
				" of %" PRIu64 " pages ends at byte %" PRIu64
				" of %s/pages-%" PRIu32 ".img, past its end (%" PRIu64 " bytes)",
				c->dirs[0], pid, e[i].file_off, e[i].vaddr, e[i].nr_pages,
				e[i].offset + (end - addr), c->dirs[s], c->pages_ids[s],
				c->pages_sizes[s]);
			return -EBADMSG;
		}
		while (addr < end) {
			while (k < nv && v[k].end <= addr)
				k++;
			if (k == nv || v[k].start > addr) {
				pin_log(PIN_LOG_ERR,
					"%s/pagemap-%d.img offset %" PRIu64 ": page 0x%" PRIx64
					" is in no VMA of mm-%d.img",
					c->dirs[0], pid, e[i].file_off, addr, pid);
				return -EBADMSG;
			}
			addr = end < v[k].end ? end : v[k].end;
		}
	}
	return 0;
}

/* Private anonymous memory is what a lazy restore serves; CRIU restores
 * file mappings and the vDSO itself. */
static bool vma_wanted(const struct vma *v)
{
	return (v->status & VMA_AREA_REGULAR) && (v->status & VMA_ANON_PRIVATE) &&
	       !(v->status &
		 (VMA_AREA_VSYSCALL | VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_UPROBES));
}

static const char *vma_name(const struct vma *v)
{
	if (v->status & VMA_AREA_HEAP)
		return "[heap]";
	if ((v->status & VMA_AREA_STACK) || (v->flags & MAP_GROWSDOWN))
		return "[stack]";
	return "";
}

/* One region for VMA v, its segments from the entries that overlap it:
 * data (lazy or not) where an entry is, zero between. */
static int add_vma(struct pin_image *img, const struct vma *v,
		   const struct pin_criu_pagemap_entry *e, size_t ne)
{
	uint64_t page = page_size(), pos = v->start;
	int r = pin_image_add_region(img, v->start, v->end - v->start, v->prot, v->flags,
				     vma_name(v));

	for (size_t i = 0; !r && i < ne && e[i].vaddr < v->end; i++) {
		uint64_t s = e[i].vaddr > v->start ? e[i].vaddr : v->start;
		uint64_t t = e[i].vaddr + e[i].nr_pages * page;
		uint32_t flags = PIN_IMAGE_SEG_DATA |
				 (e[i].flags & PIN_CRIU_PE_LAZY ? PIN_IMAGE_SEG_LAZY : 0);

		if (t > v->end)
			t = v->end;
		if (s > pos)
			r = pin_image_add_segment(img, s - pos, 0, 0);
		if (!r)
			r = pin_image_add_source_segment(img, t - s, e[i].offset + (s - e[i].vaddr),
							 flags, e[i].source);
		pos = t;
	}
	if (!r && pos < v->end)
		r = pin_image_add_segment(img, v->end - pos, 0, 0);
	return r;
}

static int build(struct pin_image *img, const struct vma *v, size_t nv,
		 const struct pin_criu_pagemap_entry *e, size_t ne)
{
	uint64_t page = page_size();
	size_t j = 0;

	for (size_t i = 0; i < nv; i++) {
		int r;

		while (j < ne && e[j].vaddr + e[j].nr_pages * page <= v[i].start)
			j++;
		if (!vma_wanted(&v[i]))
			continue;
		/* e is NULL when the pagemap has no entries: NULL + 0 is undefined. */
		r = add_vma(img, &v[i], j < ne ? e + j : NULL, ne - j);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Task pid's pagemap with its pages from the page server ps, read into a
 * memfd that is *ret's pages file (criu-remote.c): a chain of one. */
static int open_remote(int dfd, const char *dir, int pid, struct pin_ps *ps, int timeout_ms,
		       struct pin_criu_chain *c, struct pin_image **ret)
{
	int r;

	c->n = 1;
	c->dirs = calloc(1, sizeof(*c->dirs));
	c->pages_ids = calloc(1, sizeof(*c->pages_ids));
	c->pages_fds = malloc(sizeof(*c->pages_fds));
	c->pages_sizes = calloc(1, sizeof(*c->pages_sizes));
	if (!c->dirs || !c->pages_ids || !c->pages_fds || !c->pages_sizes)
		return -ENOMEM;
	c->pages_fds[0] = -1;
	c->dirs[0] = strdup(dir);
	if (!c->dirs[0])
		return -ENOMEM;
	r = pin_criu_pagemap_read(dfd, pid, &c->pages_ids[0], &c->e, &c->ne);
	if (r < 0)
		return r;
	return pin_criu_remote_pages(dfd, dir, pid, c->pages_ids[0], ps, timeout_ms, c->e, c->ne,
				     ret, &c->pages_sizes[0]);
}

/* Task pid's pagemap through its chain of parents (criu-chain.c), as an
 * image whose segment source k is the k-th dump's pages file. */
static int open_chain(int dfd, const char *dir, int pid, struct pin_criu_chain *c,
		      struct pin_image **ret)
{
	struct pin_image *img;
	int r = pin_criu_chain_open(dfd, dir, pid, c);

	if (r < 0)
		return r;
	img = pin_image_new_fd(c->pages_fds[0]);
	if (!img)
		return -ENOMEM;
	c->pages_fds[0] = -1;
	if (c->n > 1) {
		img->parent_fds = malloc((c->n - 1) * sizeof(*img->parent_fds));
		if (!img->parent_fds) {
			pin_image_free(img);
			return -ENOMEM;
		}
		for (size_t k = 1; k < c->n; k++) {
			img->parent_fds[k - 1] = c->pages_fds[k];
			c->pages_fds[k] = -1;
		}
		img->nr_parents = c->n - 1;
	}
	*ret = img;
	return 0;
}

/* A task's image, its pages from the dump's pages file and its parents',
 * or, remote, from the page server ps (criu-remote.c; ps NULL: its lazy
 * pages left to the page server, for uffdd to ask). */
static int open_criu(const char *dir, int pid, bool remote, struct pin_ps *ps, int timeout_ms,
		     struct pin_image **ret)
{
	_cleanup_close_ int dfd = -1;
	struct pin_criu_chain c = { 0 };
	struct pin_image *img = NULL;
	struct vma *v = NULL;
	size_t nv = 0;
	int r;

	if (!dir || pid <= 0 || !ret)
		return -EINVAL;
	dfd = pin_image_open_dir(dir);
	if (dfd < 0)
		return dfd;
	r = read_vmas(dfd, pid, &v, &nv);
	if (!r && remote)
		r = open_remote(dfd, dir, pid, ps, timeout_ms, &c, &img);
	else if (!r)
		r = open_chain(dfd, dir, pid, &c, &img);
	if (!r)
		r = check_entries(pid, &c, v, nv);
	if (!r)
		r = build(img, v, nv, c.e, c.ne);
	if (r < 0)
		goto out;
	*ret = img;
	img = NULL;
out:
	pin_image_free(img);
	free(v);
	pin_criu_chain_free(&c);
	return r;
}

PIN_EXPORT int pin_image_open_criu(const char *dir, int pid, struct pin_image **ret)
{
	return open_criu(dir, pid, false, NULL, 0, ret);
}

int pin_image_open_criu_remote(const char *dir, int pid, struct pin_ps *ps, int timeout_ms,
			       struct pin_image **ret)
{
	if (!ps || timeout_ms <= 0)
		return -EINVAL;
	return open_criu(dir, pid, true, ps, timeout_ms, ret);
}

int pin_image_open_criu_lazy(const char *dir, int pid, struct pin_image **ret)
{
	return open_criu(dir, pid, true, NULL, 0, ret);
}

PIN_EXPORT int pin_image_criu_pids(const char *dir, int *pids, size_t max)
{
	_cleanup_close_ int dfd = -1;
	Criu__PstreeEntry *ps;
	struct pin_criu_img f;
	size_t off, n = 0;
	int r;

	if (!dir || (!pids && max))
		return -EINVAL;
	dfd = pin_image_open_dir(dir);
	if (dfd < 0)
		return dfd;
	r = pin_criu_img_load(dfd, "pstree.img", CRIU_PSTREE_MAGIC, &f);
	if (r < 0)
		return r;
	while ((r = pin_criu_img_next(&f, &criu__pstree_entry__descriptor, (void **)&ps, &off)) >
	       0) {
		if (n < max)
			pids[n] = (int)ps->pid;
		n++;
		protobuf_c_message_free_unpacked(&ps->base, NULL);
	}
	pin_criu_img_release(&f);
	return r < 0 ? r : (int)n;
}
