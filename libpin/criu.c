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

#include "libpin-private.h"
#include "criu.pb-c.h"

/* criu/include/magic.h */
#define IMG_COMMON_MAGIC 0x54564319u
#define PSTREE_MAGIC	 0x50273030u
#define MM_MAGIC	 0x57492820u
#define PAGEMAP_MAGIC	 0x56084025u

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

/* Metadata images are small; anything this large is not one of CRIU's. */
#define MAX_IMAGE (256u << 20)

struct img_file {
	char name[64];
	uint8_t *data;
	size_t size;
	size_t pos;
};

struct vma {
	uint64_t start, end;
	uint32_t prot, flags, status;
};

static uint64_t page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

static void img_release(struct img_file *f)
{
	free(f->data);
	f->data = NULL;
}

/* Read a whole image file and check its two magic numbers. */
static int img_load(int dfd, const char *name, uint32_t magic, struct img_file *f)
{
	_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	uint32_t m[2];
	struct stat st;
	int r;

	*f = (struct img_file){ 0 };
	snprintf(f->name, sizeof(f->name), "%s", name);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s: %s", name, strerror(errno));
		return r;
	}
	if ((uint64_t)st.st_size > MAX_IMAGE) {
		pin_log(PIN_LOG_ERR, "%s: %" PRIu64 " bytes, more than an image holds", name,
			(uint64_t)st.st_size);
		return -EFBIG;
	}
	f->size = (size_t)st.st_size;
	f->data = malloc(f->size ? f->size : 1);
	if (!f->data)
		return -ENOMEM;
	r = pin_pread_all(fd, f->data, f->size, 0);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "read %s: %s", name, strerror(r == -ENODATA ? EIO : -r));
		img_release(f);
		return r == -ENODATA ? -EIO : r;
	}
	if (f->size < sizeof(m)) {
		pin_log(PIN_LOG_ERR, "%s offset 0: %zu bytes, too short for the magic numbers",
			name, f->size);
		img_release(f);
		return -EBADMSG;
	}
	memcpy(m, f->data, sizeof(m));
	if (le32toh(m[0]) != IMG_COMMON_MAGIC || le32toh(m[1]) != magic) {
		pin_log(PIN_LOG_ERR,
			"%s offset 0: magic 0x%08" PRIx32 " 0x%08" PRIx32 ", expected 0x%08" PRIx32
			" 0x%08" PRIx32,
			name, le32toh(m[0]), le32toh(m[1]), IMG_COMMON_MAGIC, magic);
		img_release(f);
		return -EBADMSG;
	}
	f->pos = sizeof(m);
	return 0;
}

/*
 * The next (u32 length, message) entry decoded as desc.  Returns 1 with
 * *ret (free with protobuf_c_message_free_unpacked()) and the entry's file
 * offset, 0 at the end of the file, -EBADMSG on a damaged entry.
 */
static int img_next(struct img_file *f, const ProtobufCMessageDescriptor *desc, void **ret,
		    size_t *ret_off)
{
	size_t off = f->pos, left = f->size - f->pos;
	ProtobufCMessage *msg;
	uint32_t len;

	if (!left)
		return 0;
	if (left < sizeof(len)) {
		pin_log(PIN_LOG_ERR, "%s offset %zu: truncated entry, %zu bytes left", f->name, off,
			left);
		return -EBADMSG;
	}
	memcpy(&len, f->data + off, sizeof(len));
	len = le32toh(len);
	if (len > left - sizeof(len)) {
		pin_log(PIN_LOG_ERR,
			"%s offset %zu: entry length %" PRIu32
			" past the end of the file (%zu bytes)",
			f->name, off, len, f->size);
		return -EBADMSG;
	}
	msg = protobuf_c_message_unpack(desc, NULL, len, f->data + off + sizeof(len));
	if (!msg) {
		pin_log(PIN_LOG_ERR, "%s offset %zu: entry of %" PRIu32 " bytes is not a valid %s",
			f->name, off, len, desc->name);
		return -EBADMSG;
	}
	f->pos = off + sizeof(len) + len;
	*ret = msg;
	*ret_off = off;
	return 1;
}

/* img_load(), then the first entry, which must be there, as desc. */
static int img_load_first(int dfd, const char *name, uint32_t magic,
			  const ProtobufCMessageDescriptor *desc, struct img_file *f, void **ret)
{
	size_t off;
	int r = img_load(dfd, name, magic, f);

	if (r < 0)
		return r;
	r = img_next(f, desc, ret, &off);
	if (r == 0) {
		pin_log(PIN_LOG_ERR, "%s offset %zu: no %s", name, f->pos, desc->name);
		r = -EBADMSG;
	}
	if (r < 0) {
		img_release(f);
		return r;
	}
	return 0;
}

static int pagemap_entry(const struct img_file *f, size_t off, const Criu__PagemapEntry *pe,
			 uint64_t *present, struct pin_criu_pagemap_entry *e)
{
	uint64_t page = page_size(), nr = pe->has_nr_pages ? pe->nr_pages : pe->compat_nr_pages;
	uint32_t flags = pe->has_flags ? pe->flags
				       : (pe->has_in_parent && pe->in_parent ? PIN_CRIU_PE_PARENT
									     : PIN_CRIU_PE_PRESENT);

	if (pe->vaddr % page || !nr || nr > (UINT64_MAX - pe->vaddr) / page ||
	    nr > (UINT64_MAX - *present) / page) {
		pin_log(PIN_LOG_ERR,
			"%s offset %zu: entry 0x%" PRIx64 " of %" PRIu64
			" pages is not a page range",
			f->name, off, pe->vaddr, nr);
		return -EBADMSG;
	}
	*e = (struct pin_criu_pagemap_entry){
		.vaddr = pe->vaddr,
		.nr_pages = nr,
		.offset = flags & PIN_CRIU_PE_PRESENT ? *present : 0,
		.file_off = off,
		.flags = flags,
	};
	if (flags & PIN_CRIU_PE_PRESENT)
		*present += nr * page;
	return 0;
}

int pin_criu_pagemap_read(int dirfd, int pid, uint32_t *ret_pages_id,
			  struct pin_criu_pagemap_entry **ret_entries, size_t *ret_nr)
{
	struct pin_criu_pagemap_entry *es = NULL;
	size_t n = 0, cap = 0, off;
	uint64_t present = 0, prev_end = 0;
	Criu__PagemapHead *head = NULL;
	Criu__PagemapEntry *pe;
	struct img_file f;
	char name[64];
	uint32_t pages_id;
	int r;

	snprintf(name, sizeof(name), "pagemap-%d.img", pid);
	r = img_load_first(dirfd, name, PAGEMAP_MAGIC, &criu__pagemap_head__descriptor, &f,
			   (void **)&head);
	if (r < 0)
		return r;
	pages_id = head->pages_id;
	protobuf_c_message_free_unpacked(&head->base, NULL);
	while ((r = img_next(&f, &criu__pagemap_entry__descriptor, (void **)&pe, &off)) > 0) {
		struct pin_criu_pagemap_entry e;

		r = pagemap_entry(&f, off, pe, &present, &e);
		protobuf_c_message_free_unpacked(&pe->base, NULL);
		if (r < 0)
			break;
		if (e.vaddr < prev_end) {
			pin_log(PIN_LOG_ERR,
				"%s offset %zu: entry 0x%" PRIx64
				" overlaps or precedes the entry before (ending at 0x%" PRIx64 ")",
				name, off, e.vaddr, prev_end);
			r = -EBADMSG;
			break;
		}
		prev_end = e.vaddr + e.nr_pages * page_size();
		if (n == cap) {
			size_t c = cap ? 2 * cap : 64;
			struct pin_criu_pagemap_entry *ne = reallocarray(es, c, sizeof(*ne));

			if (!ne) {
				r = -ENOMEM;
				break;
			}
			es = ne;
			cap = c;
		}
		es[n++] = e;
	}
	if (r < 0)
		goto out;
	*ret_pages_id = pages_id;
	*ret_entries = es;
	*ret_nr = n;
	es = NULL;
out:
	free(es);
	img_release(&f);
	return r;
}

/* The VMAs of mm-PID.img in address order, CRIU's fake guard VMAs left out. */
static int read_vmas(int dfd, int pid, struct vma **ret, size_t *ret_n)
{
	Criu__MmEntry *mm = NULL, *extra;
	struct vma *v = NULL;
	struct img_file f;
	size_t off, n = 0;
	char name[64];
	int r;

	snprintf(name, sizeof(name), "mm-%d.img", pid);
	r = img_load_first(dfd, name, MM_MAGIC, &criu__mm_entry__descriptor, &f, (void **)&mm);
	if (r < 0)
		return r;
	r = img_next(&f, &criu__mm_entry__descriptor, (void **)&extra, &off);
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
	img_release(&f);
	return r;
}

/* Every page of every entry lies in a VMA, and its pages in the pages file. */
static int check_entries(int pid, uint32_t pages_id, uint64_t pages_size,
			 const struct pin_criu_pagemap_entry *e, size_t ne, const struct vma *v,
			 size_t nv)
{
	uint64_t page = page_size();
	size_t k = 0;

	for (size_t i = 0; i < ne; i++) {
		uint64_t addr = e[i].vaddr, end = e[i].vaddr + e[i].nr_pages * page;

		if (!(e[i].flags & PIN_CRIU_PE_PRESENT)) {
			pin_log(PIN_LOG_ERR,
				"pagemap-%d.img offset %" PRIu64 ": entry 0x%" PRIx64
				" has flags 0x%" PRIx32 ": pages in a parent dump, or on a page "
				"server (uffdd-lazy-pages --page-server), are not supported here",
				pid, e[i].file_off, e[i].vaddr, e[i].flags);
			return -EOPNOTSUPP;
		}
		if (e[i].offset + (end - addr) > pages_size) {
			pin_log(PIN_LOG_ERR,
				"pagemap-%d.img offset %" PRIu64 ": entry 0x%" PRIx64 " of %" PRIu64
				" pages ends at byte %" PRIu64 " of pages-%" PRIu32
				".img, past its end (%" PRIu64 " bytes)",
				pid, e[i].file_off, e[i].vaddr, e[i].nr_pages,
				e[i].offset + (end - addr), pages_id, pages_size);
			return -EBADMSG;
		}
		while (addr < end) {
			while (k < nv && v[k].end <= addr)
				k++;
			if (k == nv || v[k].start > addr) {
				pin_log(PIN_LOG_ERR,
					"pagemap-%d.img offset %" PRIu64 ": page 0x%" PRIx64
					" is in no VMA of mm-%d.img",
					pid, e[i].file_off, addr, pid);
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
			r = pin_image_add_segment(img, t - s, e[i].offset + (s - e[i].vaddr),
						  flags);
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

/* A task's image, its pages from the dump's pages file, or with ps from
 * the page server (criu-remote.c). */
static int open_criu(const char *dir, int pid, bool remote, struct pin_ps *ps, int timeout_ms,
		     struct pin_image **ret)
{
	_cleanup_close_ int dfd = -1;
	struct pin_criu_pagemap_entry *e = NULL;
	struct pin_image *img = NULL;
	struct vma *v = NULL;
	size_t ne = 0, nv = 0;
	uint64_t pages_size;
	uint32_t pages_id;
	char name[64];
	int r;

	if (!dir || pid <= 0 || !ret)
		return -EINVAL;
	dfd = pin_image_open_dir(dir);
	if (dfd < 0)
		return dfd;
	r = pin_criu_pagemap_read(dfd, pid, &pages_id, &e, &ne);
	if (r < 0)
		return r;
	r = read_vmas(dfd, pid, &v, &nv);
	if (r < 0)
		goto out;
	snprintf(name, sizeof(name), "pages-%" PRIu32 ".img", pages_id);
	if (remote)
		r = pin_criu_remote_pages(dfd, dir, pid, pages_id, ps, timeout_ms, e, ne, &img,
					  &pages_size);
	else
		r = pin_image_new_at(dfd, dir, name, &img, &pages_size);
	if (r < 0)
		goto out;
	r = check_entries(pid, pages_id, pages_size, e, ne, v, nv);
	if (!r)
		r = build(img, v, nv, e, ne);
	if (r < 0)
		goto out;
	*ret = img;
	img = NULL;
out:
	pin_image_free(img);
	free(v);
	free(e);
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
	struct img_file f;
	size_t off, n = 0;
	int r;

	if (!dir || (!pids && max))
		return -EINVAL;
	dfd = pin_image_open_dir(dir);
	if (dfd < 0)
		return dfd;
	r = img_load(dfd, "pstree.img", PSTREE_MAGIC, &f);
	if (r < 0)
		return r;
	while ((r = img_next(&f, &criu__pstree_entry__descriptor, (void **)&ps, &off)) > 0) {
		if (n < max)
			pids[n] = (int)ps->pid;
		n++;
		protobuf_c_message_free_unpacked(&ps->base, NULL);
	}
	img_release(&f);
	return r < 0 ? r : (int)n;
}
