// SPDX-License-Identifier: MIT
/*
 * CRIU pre-dump chains made from a real CRIU dump, for machines where CRIU
 * cannot make them (no soft-dirty: `criu pre-dump` fails there).  The
 * chain is what CRIU writes (criu/mem.c, criu/page-xfer.c, CRIU 4.2) when
 * `criu pre-dump -D out/<n-1>`, then `criu pre-dump --prev-images-dir
 * ../<n-1> -D out/<n-2>` and so on, then `criu dump --prev-images-dir ../1
 * -D out/0`, see a task that writes some of its pages again between them:
 *
 * - Every dump has the source dump's other images (mm-PID.img, pstree.img,
 *   core, ..., other tasks' pagemaps and pages files) copied unchanged, and
 *   its own pagemap-PID.img and pages-<id>.img for the task, id 100 + k in
 *   dump k (the source's pages file of the task is not copied).
 * - The first pre-dump (out/<n-1>) holds every page of the source's
 *   pagemap entries.  A later dump k holds a page when the task wrote it
 *   since dump k + 1 (rewritten(), a fixed hash of the page and k).
 * - Dump k's pagemap: a head with pages_id, then in address order one entry
 *   per run of held pages with the source entry's flags (PE_LAZY|PE_PRESENT,
 *   or PE_PRESENT for what CRIU restores eagerly), their bytes appended to
 *   pages-<id>.img in order; and one entry per run of pages not written
 *   since the parent with flags PE_PARENT only and no bytes (CRIU's
 *   page_xfer_dump_hole()).  Runs are cut at the source entries' ends.
 *   Entries are written as CRIU 4.2 writes them: vaddr, compat_nr_pages 0,
 *   flags, nr_pages (fields 1, 2, 4, 5 of images/pagemap.proto).
 * - The newest copy of a page holds the source's bytes; an older copy
 *   holds them with every word XORed with stale_mask(k) (what the pre-dump
 *   saw before the task wrote the page again): a restore that takes a page
 *   from any dump but the newest one holding it shows a wrong byte.
 * - Dump k < n - 1 names its parent with the symlink out/k/parent ->
 *   ../<k+1>, as --prev-images-dir makes it (relative to the dump).
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "criu-split.h"
#include "libpin-private.h"

/* criu/include/magic.h */
#define IMG_COMMON_MAGIC 0x54564319u
#define PAGEMAP_MAGIC	 0x56084025u
/* Dump k's pages file is pages-<PAGES_ID_BASE + k>.img. */
#define PAGES_ID_BASE 100u
/* Protobuf wire format: field number << 3 | wire type 0 (varint). */
#define PB_VARINT(field) ((uint8_t)((field) << 3))

struct writer {
	int pagemap, pages;
	uint64_t pagemap_off, pages_off; /* where each is written next */
};

/* Whether the task wrote page vaddr again after dump k + 1 (so dump k
 * holds it): about 3 pages in 8, in runs of every length. */
static bool rewritten(uint64_t vaddr, unsigned int k)
{
	/* splitmix64's finaliser of the page number and k. */
	uint64_t x = vaddr / 4096 + 0x9e3779b97f4a7c15ull * (k + 1);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	x ^= x >> 31;
	return (x >> 61) < 3;
}

static uint64_t stale_mask(unsigned int k)
{
	return 0x5a5a5a5a5a5a5a5aull ^ ((uint64_t)k + 1);
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	do {
		p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return n;
}

/* len bytes at the end of w's pagemap. */
static int put_pagemap(struct writer *w, const void *buf, size_t len)
{
	int r = pin_pwrite_all(w->pagemap, buf, len, w->pagemap_off);

	if (r == 0)
		w->pagemap_off += len;
	return r;
}

/* One (u32 length, message) entry of fields (number, value) pairs. */
static int put_entry(struct writer *w, const uint64_t (*fields)[2], size_t n)
{
	uint8_t buf[4 + 4 * 11];
	size_t len = 4;
	uint32_t le;

	for (size_t i = 0; i < n; i++) {
		buf[len++] = PB_VARINT(fields[i][0]);
		len += put_varint(buf + len, fields[i][1]);
	}
	le = htole32((uint32_t)(len - 4));
	memcpy(buf, &le, sizeof(le));
	return put_pagemap(w, buf, len);
}

static int put_pagemap_entry(struct writer *w, uint64_t vaddr, uint64_t nr, uint32_t flags)
{
	const uint64_t f[][2] = { { 1, vaddr }, { 2, 0 }, { 4, flags }, { 5, nr } };

	return put_entry(w, f, PIN_ARRAY_SIZE(f));
}

/* Copy the file name of the directory src into dst. */
static int copy_file(int src, int dst, const char *name)
{
	int in = openat(src, name, O_RDONLY | O_CLOEXEC), out, r = 0;
	char buf[65536];
	uint64_t off = 0;
	ssize_t n;

	if (in < 0)
		return -errno;
	out = openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		r = -errno;
		close(in);
		return r;
	}
	while (!r && (n = read(in, buf, sizeof(buf))) != 0) {
		r = n < 0 ? -errno : pin_pwrite_all(out, buf, (size_t)n, off);
		off += (uint64_t)n;
	}
	close(in);
	close(out);
	return r;
}

/* Every image of src but the task's pagemap and pages file, into dst. */
static int copy_others(int src, int dst, int pid, uint32_t pages_id)
{
	char skip[64], skip_pages[64];
	struct dirent *de;
	DIR *d;
	int fd = openat(src, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -ENOMEM;
	}
	snprintf(skip, sizeof(skip), "pagemap-%d.img", pid);
	snprintf(skip_pages, sizeof(skip_pages), "pages-%" PRIu32 ".img", pages_id);
	while (!r && (de = readdir(d)))
		if (de->d_type == DT_REG && strcmp(de->d_name, skip) &&
		    strcmp(de->d_name, skip_pages))
			r = copy_file(src, dst, de->d_name);
	closedir(d);
	return r;
}

/* Page vaddr of src (at offset off of its pages file) into dump k of n. */
static int put_page(struct writer *w, int src_pages, uint64_t off, uint64_t vaddr, unsigned int k,
		    unsigned int n)
{
	uint64_t buf[4096 / 8], mask = criu_split_stale(vaddr, k, n);
	int r = pin_pread_all(src_pages, buf, sizeof(buf), off);

	if (r < 0)
		return r;
	for (size_t i = 0; i < PIN_ARRAY_SIZE(buf); i++)
		buf[i] ^= mask;
	r = pin_pwrite_all(w->pages, buf, sizeof(buf), w->pages_off);
	if (r < 0)
		return r;
	w->pages_off += sizeof(buf);
	return 0;
}

/* Whether dump k of n holds page vaddr. */
static bool holds(uint64_t vaddr, unsigned int k, unsigned int n)
{
	return k == n - 1 || rewritten(vaddr, k);
}

unsigned int criu_split_newest(uint64_t vaddr, unsigned int n)
{
	unsigned int k = 0;

	while (!holds(vaddr, k, n))
		k++;
	return k;
}

uint64_t criu_split_stale(uint64_t vaddr, unsigned int k, unsigned int n)
{
	return criu_split_newest(vaddr, n) == k ? 0 : stale_mask(k);
}

/* Dump k's entries for source entry e: runs of held pages, runs left to
 * the parent. */
static int put_entries(struct writer *w, int src_pages, const struct pin_criu_pagemap_entry *e,
		       unsigned int k, unsigned int n, struct criu_split *st)
{
	uint64_t run = e->vaddr, end = e->vaddr + e->nr_pages * 4096;

	for (uint64_t a = e->vaddr; a < end; a += 4096) {
		bool h = holds(a, k, n);
		bool last = a + 4096 == end || holds(a + 4096, k, n) != h;
		int r = 0;

		if (h) {
			r = put_page(w, src_pages, e->offset + (a - e->vaddr), a, k, n);
			st->held[k]++;
			st->newest[k] += criu_split_newest(a, n) == k;
		}
		if (!r && last)
			r = put_pagemap_entry(w, run, (a + 4096 - run) / 4096,
					      h ? e->flags : PIN_CRIU_PE_PARENT);
		if (r < 0)
			return r;
		if (last)
			run = a + 4096;
	}
	return 0;
}

/* Dump k of n into dst; the source's pages in pages-<src_id>.img. */
static int write_dump(int src, int src_pages, uint32_t src_id, int pid,
		      const struct pin_criu_pagemap_entry *e, size_t ne, int dst, unsigned int k,
		      unsigned int n, struct criu_split *st)
{
	const uint32_t magic[2] = { htole32(IMG_COMMON_MAGIC), htole32(PAGEMAP_MAGIC) };
	const uint64_t head[][2] = { { 1, PAGES_ID_BASE + k } };
	struct writer w = { .pagemap = -1, .pages = -1 };
	char name[64];
	int r = copy_others(src, dst, pid, src_id);

	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "pagemap-%d.img", pid);
	w.pagemap = openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	snprintf(name, sizeof(name), "pages-%u.img", PAGES_ID_BASE + k);
	w.pages = openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w.pagemap < 0 || w.pages < 0)
		r = -errno;
	if (!r)
		r = put_pagemap(&w, magic, sizeof(magic));
	if (!r)
		r = put_entry(&w, head, PIN_ARRAY_SIZE(head));
	for (size_t i = 0; !r && i < ne; i++)
		r = put_entries(&w, src_pages, &e[i], k, n, st);
	if (!r && k + 1 < n) {
		snprintf(name, sizeof(name), "../%u", k + 1);
		r = symlinkat(name, dst, "parent") < 0 ? -errno : 0;
	}
	if (w.pagemap >= 0)
		close(w.pagemap);
	if (w.pages >= 0)
		close(w.pages);
	return r;
}

int criu_split(const char *src, int pid, const char *out, unsigned int n, struct criu_split *ret)
{
	struct pin_criu_pagemap_entry *e = NULL;
	int sfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC), pfd = -1, r;
	char name[64], path[512];
	uint32_t pages_id;
	size_t ne;

	*ret = (struct criu_split){ 0 };
	if (sfd < 0)
		return -errno;
	if (!n || n > CRIU_SPLIT_MAX || sysconf(_SC_PAGESIZE) != 4096) {
		close(sfd);
		return -EINVAL;
	}
	r = pin_criu_pagemap_read(sfd, pid, &pages_id, &e, &ne);
	if (!r) {
		snprintf(name, sizeof(name), "pages-%" PRIu32 ".img", pages_id);
		pfd = openat(sfd, name, O_RDONLY | O_CLOEXEC);
		r = pfd < 0 ? -errno : 0;
	}
	for (unsigned int k = 0; !r && k < n; k++) {
		int dfd;

		snprintf(path, sizeof(path), "%s/%u", out, k);
		if (mkdir(path, 0700) < 0 || (dfd = open(path, O_RDONLY | O_DIRECTORY)) < 0) {
			r = -errno;
			break;
		}
		r = write_dump(sfd, pfd, pages_id, pid, e, ne, dfd, k, n, ret);
		close(dfd);
	}
	free(e);
	if (pfd >= 0)
		close(pfd);
	close(sfd);
	return r;
}
