// SPDX-License-Identifier: MIT
/*
 * Writing checkpoint images (uffdd-image(5)) from a live process's memory:
 * a full image, or an incremental one that holds only the pages changed
 * since its parent (the written pages the kernel's async write-protect
 * record or the caller names, and the pages that read zero now); and a
 * chain squashed into one full image.  Takes the mappings from image-maps.c,
 * what to hold from image-held.c, the parent from image-chain.c.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "libpin-private.h"

#define MANIFEST     PIN_IMAGE_MANIFEST
#define MANIFEST_TMP "manifest.tmp"
#define PAGES	     PIN_IMAGE_PAGES
/* process_vm_readv() granule: large enough to amortize the syscall. */
#define COPY_CHUNK (1u << 20)
/* Ranges per process_vm_readv(): IOV_MAX, the most the kernel takes. */
#define COPY_IOVS 1024

int pin_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static bool page_is_zero(const unsigned char *p, size_t page)
{
	return p[0] == 0 && !memcmp(p, p + 1, page - 1);
}

/* Write the non-zero pages of buf (len a page multiple) at off; zero pages
 * stay holes of the sparse file. */
static int write_nonzero(int fd, const unsigned char *buf, size_t len, uint64_t off)
{
	size_t page = page_size();

	for (size_t i = 0; i < len;) {
		size_t j;
		int r;

		if (page_is_zero(buf + i, page)) {
			i += page;
			continue;
		}
		for (j = i + page; j < len && !page_is_zero(buf + j, page); j += page)
			;
		r = pin_pwrite_all(fd, buf + i, j - i, off + i);
		if (r < 0) {
			pin_log(PIN_LOG_ERR,
				"pwrite of the pages file at offset %" PRIu64 " (%zu bytes): %s",
				off + i, j - i, strerror(-r));
			return r;
		}
		i = j;
	}
	return 0;
}

/* Where a copy is in the list of held ranges. */
struct cursor {
	const struct pin_pagemap_range *v;
	size_t n, i;
	uint64_t in; /* bytes of v[i] done */
};

static void cursor_advance(struct cursor *c, uint64_t bytes)
{
	while (bytes) {
		uint64_t take = c->v[c->i].len - c->in < bytes ? c->v[c->i].len - c->in : bytes;

		c->in += take;
		bytes -= take;
		if (c->in == c->v[c->i].len) {
			c->i++;
			c->in = 0;
		}
	}
}

/* The next ranges from c, up to COPY_CHUNK bytes and COPY_IOVS of them. */
static size_t gather(const struct cursor *c, struct iovec *remote, size_t *ret_k)
{
	size_t k = 0, want = 0, i = c->i;
	uint64_t in = c->in;

	while (i < c->n && k < COPY_IOVS && want < COPY_CHUNK) {
		uint64_t left = c->v[i].len - in;
		size_t take = left < COPY_CHUNK - want ? (size_t)left : COPY_CHUNK - want;

		remote[k++] = (struct iovec){ (void *)(uintptr_t)(c->v[i].addr + in), take };
		want += take;
		in += take;
		if (in == c->v[i].len) {
			i++;
			in = 0;
		}
	}
	*ret_k = k;
	return want;
}

/*
 * Copy the n held ranges v of pid's memory one after the other into the
 * pages file from offset 0, many ranges a process_vm_readv(2): an
 * incremental checkpoint's pages are scattered, its pages file dense.
 */
static int copy_held(int pid, int fd, unsigned char *buf, const struct pin_pagemap_range *v,
		     size_t n)
{
	struct cursor c = { .v = v, .n = n };
	size_t page = page_size();
	uint64_t off = 0;

	while (c.i < c.n) {
		struct iovec remote[COPY_IOVS], local = { .iov_base = buf };
		size_t k, got_pages;
		ssize_t got;
		int r;

		local.iov_len = gather(&c, remote, &k);
		got = process_vm_readv(pid, &local, 1, remote, k, 0);
		if (got < 0 && errno == EINTR)
			continue;
		got_pages = got < 0 ? 0 : (size_t)got / page * page;
		if (!got_pages) {
			r = got < 0 ? -errno : -EFAULT;
			pin_log(PIN_LOG_ERR,
				"process_vm_readv of pid %d at 0x%" PRIx64 "-0x%" PRIx64
				": %s (did the mapping change?)",
				pid, (uint64_t)(uintptr_t)remote[0].iov_base,
				(uint64_t)(uintptr_t)remote[0].iov_base + remote[0].iov_len,
				strerror(-r));
			return r;
		}
		r = write_nonzero(fd, buf, got_pages, off);
		if (r < 0)
			return r;
		off += got_pages;
		cursor_advance(&c, got_pages);
	}
	return 0;
}

static void prot_letters(uint32_t prot, char out[4])
{
	out[0] = prot & PROT_READ ? 'r' : '-';
	out[1] = prot & PROT_WRITE ? 'w' : '-';
	out[2] = prot & PROT_EXEC ? 'x' : '-';
	out[3] = '\0';
}

/* Who the image is: its id, and with a parent the parent's and the way to
 * it from the image's directory. */
struct identity {
	char id[PIN_IMAGE_ID_LEN + 1];
	char parent_id[PIN_IMAGE_ID_LEN + 1];
	char *parent_path; /* NULL: a full image */
};

/* A full image's regions and an incremental one's held lines give the
 * offset in the pages file, where the held pages follow one another. */
static void print_manifest(FILE *f, const struct pin_image_mapping *maps, size_t n,
			   const struct identity *who)
{
	uint64_t off = 0;

	fprintf(f, "%s\npage-size %zu\nid %s\n",
		who->parent_path ? PIN_IMAGE_HEADER_INCR : PIN_IMAGE_HEADER_FULL, page_size(),
		who->id);
	if (who->parent_path)
		fprintf(f, "parent %s %s\n", who->parent_id, who->parent_path);
	for (size_t i = 0; i < n; i++) {
		char prot[4];

		prot_letters(maps[i].prot, prot);
		fprintf(f,
			"region 0x%" PRIx64 " 0x%" PRIx64 " %s 0x%" PRIx32 " 0x%" PRIx64 "%s%s\n",
			maps[i].start, maps[i].end - maps[i].start, prot, maps[i].flags,
			who->parent_path ? 0 : off, maps[i].name[0] ? " " : "", maps[i].name);
		for (size_t k = 0; k < maps[i].nr_held; k++) {
			if (who->parent_path)
				fprintf(f, "held 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 "\n",
					maps[i].held[k].addr, maps[i].held[k].len, off);
			off += maps[i].held[k].len;
		}
	}
	fprintf(f, "end %zu\n", n);
}

/* The manifest goes to a temporary name first so that a reader never sees
 * one that describes a pages file still being written. */
static int write_manifest(int dfd, const struct pin_image_mapping *maps, size_t n,
			  const struct identity *who)
{
	int fd = openat(dfd, MANIFEST_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f;
	int r = 0;

	if (fd < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s: %s", MANIFEST_TMP, strerror(errno));
		return r;
	}
	f = fdopen(fd, "w");
	if (!f) {
		r = -errno;
		close(fd);
		return r;
	}
	print_manifest(f, maps, n, who);
	if (fflush(f) || ferror(f))
		r = -errno ?: -EIO;
	if (fclose(f) && !r)
		r = -errno;
	if (!r && renameat(dfd, MANIFEST_TMP, dfd, MANIFEST) < 0)
		r = -errno;
	if (r < 0)
		pin_log(PIN_LOG_ERR, "write %s: %s", MANIFEST, strerror(-r));
	return r;
}

/* The pages file of the image in dir (dfd), opened for writing, made if it
 * is not there, with flags besides; the fd or -errno. */
static int create_pages(int dfd, const char *dir, int flags)
{
	int fd = openat(dfd, PAGES, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0600);

	if (fd < 0) {
		int r = -errno;

		pin_log(PIN_LOG_ERR, "open %s/%s: %s", dir, PAGES, strerror(-r));
		return r;
	}
	return fd;
}

/* The pages file sized to hold every held page (zero pages stay holes),
 * they copied in, then the manifest.  An old manifest goes first: it must
 * not describe the pages file being rewritten. */
static int write_image(int pid, int dfd, const char *dir, const struct pin_image_mapping *maps,
		       size_t n, const struct identity *who)
{
	_cleanup_free_ unsigned char *buf = aligned_alloc(page_size(), COPY_CHUNK);
	_cleanup_free_ struct pin_pagemap_range *all = NULL;
	_cleanup_close_ int fd = -1;
	uint64_t total = 0;
	size_t nall = 0;
	int r;

	for (size_t i = 0; i < n; i++)
		nall += maps[i].nr_held;
	all = calloc(nall ? nall : 1, sizeof(*all));
	if (!buf || !all)
		return -ENOMEM;
	nall = 0;
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < maps[i].nr_held; k++) {
			all[nall++] = maps[i].held[k];
			total += maps[i].held[k].len;
		}
	if (unlinkat(dfd, MANIFEST, 0) < 0 && errno != ENOENT) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "unlink %s/%s: %s", dir, MANIFEST, strerror(errno));
		return r;
	}
	fd = create_pages(dfd, dir, O_TRUNC);
	if (fd < 0)
		return fd;
	if (ftruncate(fd, (off_t)total) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "ftruncate %s/%s to %" PRIu64 ": %s", dir, PAGES, total,
			strerror(errno));
		return r;
	}
	r = copy_held(pid, fd, buf, all, nall);
	return r < 0 ? r : write_manifest(dfd, maps, n, who);
}

/* How to reach `to` from directory `from`, both absolute and canonical:
 * "../" for each component of from past their common ones, then the rest
 * of to. */
static char *relative_path(const char *from, const char *to)
{
	size_t i = 0, ups = 0;
	const char *rest;
	char *out, *p;

	while (from[i] && from[i] == to[i])
		i++;
	/* Back to the end of the last component both share. */
	if (!((from[i] == '\0' || from[i] == '/') && (to[i] == '\0' || to[i] == '/')))
		while (i > 0 && from[i - 1] != '/')
			i--;
	for (const char *c = from + i; *c; c++)
		if (*c != '/' && (c == from + i || c[-1] == '/'))
			ups++;
	rest = to + i;
	while (*rest == '/')
		rest++;
	out = malloc(3 * ups + strlen(rest) + 2);
	if (!out)
		return NULL;
	p = out;
	for (size_t k = 0; k < ups; k++)
		p = stpcpy(p, "../");
	if (*rest)
		strcpy(p, rest);
	else if (ups)
		p[-1] = '\0';
	else
		strcpy(p, ".");
	return out;
}

/* -EINVAL when dir (open as dfd) is one of the images of chain v: writing
 * it would destroy what the new image stands on. */
static int not_in_chain(const struct pin_image_link *v, size_t n, const char *dir, int dfd)
{
	struct stat a, b;

	if (fstat(dfd, &a) < 0)
		return -errno;
	for (size_t i = 0; i < n; i++)
		if (!stat(v[i].dir, &b) && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
			pin_log(PIN_LOG_ERR,
				"%s: an image cannot be its own parent (it is %s of the chain)",
				dir, v[i].dir);
			return -EINVAL;
		}
	return 0;
}

/* The parent (read and checked whole, chain and all), its id and the way
 * to it from dir; refused when dir is one of its chain. */
static int open_parent(const char *parent, const char *dir, int dfd, struct pin_image **ret,
		       struct identity *who)
{
	char *from = realpath(dir, NULL), *to = realpath(parent, NULL);
	struct pin_image_link *v;
	size_t n;
	int r = 0;

	if (!from || !to) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "realpath %s: %s", from ? parent : dir, strerror(errno));
	}
	if (!r)
		r = pin_image_chain_open(parent, &v, &n);
	if (!r) {
		r = not_in_chain(v, n, dir, dfd);
		if (r < 0)
			pin_image_chain_free(v, n);
		else
			r = pin_image_chain_flatten(v, n, ret);
	}
	if (!r) {
		memcpy(who->parent_id, (*ret)->id, sizeof(who->parent_id));
		who->parent_path = relative_path(from, to);
		if (!who->parent_path)
			r = -ENOMEM;
		else if (!who->parent_id[0]) {
			pin_log(PIN_LOG_ERR, "%s/%s has no id line: it cannot be a parent", parent,
				MANIFEST);
			r = -EINVAL;
		}
		if (r < 0)
			pin_image_free(*ret);
	}
	free(from);
	free(to);
	return r;
}

static int open_pagemap(int pid)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fd = -errno;
		pin_log(PIN_LOG_ERR, "open %s: %s", path, strerror(errno));
	}
	return fd;
}

/* Which pages of each mapping the image holds. */
static int choose_held(int pmfd, const struct pin_image *parent, struct pin_image_mapping *maps,
		       size_t n, const struct pin_image_write_opts *o)
{
	for (size_t i = 0; i < n; i++) {
		int r = pin_image_held(pmfd, parent, maps[i].start, maps[i].end,
				       maps[i].flags & MAP_ANONYMOUS, o->written, o->nr_written,
				       &maps[i].held, &maps[i].nr_held);

		if (r < 0)
			return r;
	}
	return 0;
}

static int rearm(int pmfd, const struct pin_image_mapping *maps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r = pin_image_rearm(pmfd, maps[i].start, maps[i].end);

		if (r < 0)
			return r;
	}
	return 0;
}

static int check_opts(int pid, const char *dir, const struct pin_image_write_opts *o)
{
	if (pid < 0 || !dir ||
	    o->flags & ~(PIN_IMAGE_WRITE_READONLY | PIN_IMAGE_WRITE_FILE | PIN_IMAGE_WRITE_REARM) ||
	    o->addr + o->len < o->addr || (o->written && !o->parent) ||
	    (!o->written && o->nr_written))
		return -EINVAL;
	for (size_t i = 0; i < o->nr_written; i++)
		if (!o->written[i].len || (o->written[i].addr | o->written[i].len) % page_size() ||
		    (i && o->written[i].addr < o->written[i - 1].addr + o->written[i - 1].len))
			return -EINVAL;
	return 0;
}

/* Make the directory dir (one that is there already is taken only when
 * may_exist), open it and draw the new image's id into who; returns the
 * directory's fd or -errno. */
static int make_image_dir(const char *dir, bool may_exist, struct identity *who)
{
	int dfd, r;

	/* A process's memory may hold secrets: only the owner reads it. */
	if (mkdir(dir, 0700) < 0 && (errno != EEXIST || !may_exist)) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "mkdir %s: %s", dir, strerror(errno));
		return r;
	}
	dfd = pin_image_open_dir(dir);
	if (dfd < 0)
		return dfd;
	r = pin_image_new_id(who->id);
	if (r < 0) {
		close(dfd);
		return r;
	}
	return dfd;
}

PIN_EXPORT int pin_image_write(int pid, const char *dir, const struct pin_image_write_opts *opts)
{
	struct pin_image_write_opts o = { .sz = sizeof(o) };
	struct identity who = { .parent_path = NULL };
	_cleanup_close_ int dfd = -1;
	_cleanup_close_ int pmfd = -1;
	struct pin_image *parent = NULL;
	struct pin_image_mapping *maps = NULL;
	size_t n = 0;
	int r;

	r = pin_opts_copy(&o, sizeof(o), opts);
	if (r < 0)
		return r;
	r = check_opts(pid, dir, &o);
	if (r < 0)
		return r;
	if (!pid)
		pid = getpid();
	dfd = make_image_dir(dir, true, &who);
	if (dfd < 0)
		return dfd;
	if (o.parent || (o.flags & PIN_IMAGE_WRITE_REARM)) {
		pmfd = open_pagemap(pid);
		r = pmfd < 0 ? pmfd : 0;
	}
	if (!r && o.parent)
		r = open_parent(o.parent, dir, dfd, &parent, &who);
	if (!r)
		r = pin_image_read_maps(pid, &o, &maps, &n);
	if (!r)
		r = choose_held(pmfd, parent, maps, n, &o);
	if (!r)
		r = write_image(pid, dfd, dir, maps, n, &who);
	if (!r && (o.flags & PIN_IMAGE_WRITE_REARM))
		r = rearm(pmfd, maps, n);
	pin_image_free_mappings(maps, n);
	pin_image_free(parent);
	free(who.parent_path);
	return r < 0 ? r : (int)n;
}

/* ---- a chain squashed -------------------------------------------------- */

int pin_image_save(const struct pin_image *img, const char *dir)
{
	size_t n = pin_image_nr_regions(img), page = page_size();
	_cleanup_free_ unsigned char *buf = aligned_alloc(page, COPY_CHUNK);
	struct identity who = { .parent_path = NULL };
	_cleanup_close_ int dfd = -1, fd = -1;
	_cleanup_free_ struct pin_image_mapping *maps = calloc(n ? n : 1, sizeof(*maps));
	/* Every region held whole: the full image's layout. */
	_cleanup_free_ struct pin_pagemap_range *whole = calloc(n ? n : 1, sizeof(*whole));
	uint64_t total = 0;
	int r;

	if (!buf || !maps || !whole)
		return -ENOMEM;
	dfd = make_image_dir(dir, false, &who);
	if (dfd < 0)
		return dfd;
	fd = create_pages(dfd, dir, O_EXCL);
	if (fd < 0)
		return fd;
	for (size_t i = 0; i < n; i++) {
		const struct pin_image_region *g = pin_image_region(img, i);

		maps[i] = (struct pin_image_mapping){ .start = g->addr,
						      .end = g->addr + g->len,
						      .prot = g->prot,
						      .flags = g->flags,
						      .name = (char *)g->name,
						      .held = &whole[i],
						      .nr_held = 1 };
		whole[i] = (struct pin_pagemap_range){ g->addr, g->len };
		total += g->len;
	}
	if (ftruncate(fd, (off_t)total) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "ftruncate %s/%s: %s", dir, PAGES, strerror(errno));
		return r;
	}
	total = 0;
	for (size_t i = 0; i < n; i++) {
		for (uint64_t a = maps[i].start; a < maps[i].end;) {
			size_t k = maps[i].end - a < COPY_CHUNK ? maps[i].end - a : COPY_CHUNK;

			r = pin_image_read(img, a, buf, k);
			if (!r)
				r = write_nonzero(fd, buf, k, total + a - maps[i].start);
			if (r < 0)
				return r;
			a += k;
		}
		total += maps[i].end - maps[i].start;
	}
	return write_manifest(dfd, maps, n, &who);
}
