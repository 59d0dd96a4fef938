// SPDX-License-Identifier: MIT
/*
 * Page sources: zero, or a file descriptor the client sent.  A regular file
 * is mapped read-only and UFFDIO_COPY reads the page cache through that
 * mapping: one copy, and a file truncated under us fails the ioctl with
 * EFAULT instead of raising SIGBUS in the daemon, since only the kernel
 * touches the mapping.  The data extents (SEEK_DATA/SEEK_HOLE) of a file are
 * listed once per session, however many regions use it: a source must not
 * change while it is served.  It uses util.c's page size and calls no other file.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <linux/fs.h>

#include "uffdd.h"

/* Past this many extents the rest of the file counts as data. */
#define MAX_EXTENTS (1u << 20)
/* Populated when the region is added, at most: a worker spends some 20 ms
 * on it, while its other sessions wait. */
#define POPULATE_MAX (256ull << 20)

struct extent {
	uint64_t start, end; /* page aligned: data pages */
};

/* The data extents of one file; immutable once listed. */
struct extents {
	_Atomic unsigned int refs;
	dev_t dev;
	ino_t ino;
	uint64_t size;
	struct extent *v;
	size_t n;
};

struct source {
	_Atomic unsigned int refs;
	int fd;		    /* -1: zero source */
	uint64_t size;	    /* bytes; pages past it read as zero */
	uint64_t lo, hi;    /* the window in use, which the mapping covers */
	const uint8_t *map; /* the window mapped at lo; NULL: read with pread */
	size_t maplen;
	struct extents *ext; /* NULL: no data (a zero source, an empty window) */
};

static uint64_t page_up(uint64_t x)
{
	return (x + uffdd_page - 1) & ~(uint64_t)(uffdd_page - 1);
}

static int add_extent(struct extents *x, uint64_t start, uint64_t end)
{
	if (x->n % 64 == 0) {
		struct extent *e = realloc(x->v, (x->n + 64) * sizeof(*e));
		if (!e)
			return -ENOMEM;
		x->v = e;
	}
	x->v[x->n++] = (struct extent){ start & ~(uint64_t)(uffdd_page - 1), page_up(end) };
	return 0;
}

static void extents_unref(struct extents *x)
{
	if (!x || atomic_fetch_sub(&x->refs, 1) != 1)
		return;
	free(x->v);
	free(x);
}

/* List the data extents of the whole file: a SEEK_HOLE walks the file up to
 * the next hole, so listing a window costs as much as the rest of the file.
 * A file system without SEEK_DATA is all data. */
static int scan_extents(struct extents *x, int fd)
{
	uint64_t pos = 0;

	while (pos < x->size) {
		off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
		if (data < 0)
			return errno == ENXIO ? 0 : add_extent(x, pos, x->size);
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || x->n + 1 >= MAX_EXTENTS)
			hole = (off_t)x->size;
		int r = add_extent(x, (uint64_t)data, (uint64_t)hole);
		if (r < 0)
			return r;
		pos = (uint64_t)hole;
	}
	return 0;
}

/* The extents of the file behind fd: from the session's cache, or listed
 * and added to it.  A block device is data throughout. */
static int extents_get(struct source_cache *c, int fd, const struct stat *st, uint64_t size,
		       struct extents **ret)
{
	bool blk = S_ISBLK(st->st_mode);

	for (size_t i = 0; !blk && i < c->n; i++) {
		struct extents *x = c->v[i];
		if (x->dev == st->st_dev && x->ino == st->st_ino && x->size == size) {
			atomic_fetch_add(&x->refs, 1);
			*ret = x;
			return 0;
		}
	}
	struct extents *x = calloc(1, sizeof(*x));
	struct extents **v = blk ? NULL : realloc(c->v, (c->n + 1) * sizeof(*v));
	if (!x || (!blk && !v)) {
		free(x);
		return -ENOMEM;
	}
	atomic_init(&x->refs, 1);
	x->dev = st->st_dev;
	x->ino = st->st_ino;
	x->size = size;
	int r = blk ? add_extent(x, 0, size) : scan_extents(x, fd);
	if (r < 0) {
		extents_unref(x);
		if (v)
			c->v = v;
		return r;
	}
	if (!blk) {
		c->v = v;
		c->v[c->n++] = x;
		atomic_fetch_add(&x->refs, 1);
	}
	*ret = x;
	return 0;
}

void source_cache_release(struct source_cache *c)
{
	for (size_t i = 0; i < c->n; i++)
		extents_unref(c->v[i]);
	free(c->v);
	c->v = NULL;
	c->n = 0;
}

/*
 * A copy from a page the daemon has not mapped yet first faults it in, which
 * costs a quarter of the copy.  When the pages are in memory anyway (tmpfs,
 * memfd), map the first part of the window now: no I/O, only page tables.
 * A file on disk stays lazy: populating it would read it all.
 */
static void populate(const struct source *s)
{
	struct statfs fs;

	if (!s->map || fstatfs(s->fd, &fs) < 0 || fs.f_type != TMPFS_MAGIC)
		return;
	size_t len = s->maplen < POPULATE_MAX ? s->maplen : POPULATE_MAX;
	/* Before Linux 5.14 (EINVAL) the pages fault in as they are copied. */
	madvise((void *)s->map, len, MADV_POPULATE_READ);
}

static int source_open_fd(struct source *s, struct source_cache *cache)
{
	struct stat st;
	int fl = fcntl(s->fd, F_GETFL);

	if (fl < 0)
		return -errno;
	/* A source the daemon cannot read would fail every fault, forever:
	 * refuse it now (-EBADF), as read(2) would. */
	if ((fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY)
		return -EBADF;
	if (fstat(s->fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(s->fd, BLKGETSIZE64, &s->size) < 0)
			return -errno;
	} else if (S_ISREG(st.st_mode)) {
		s->size = (uint64_t)st.st_size;
	} else {
		return -EINVAL;
	}
	if (s->hi > s->size)
		s->hi = s->size;
	if (s->lo >= s->hi)
		return 0;
	int r = extents_get(cache, s->fd, &st, s->size, &s->ext);
	if (r < 0 || S_ISBLK(st.st_mode))
		return r;
	s->maplen = page_up(s->hi) - s->lo;
	void *m = mmap(NULL, s->maplen, PROT_READ, MAP_SHARED, s->fd, (off_t)s->lo);
	/* Not mappable (a file system without mmap): pread it. */
	s->map = m == MAP_FAILED ? NULL : m;
	populate(s);
	return 0;
}

int source_new(int fd, uint64_t off, uint64_t len, struct source_cache *cache, struct source **ret)
{
	struct source *s = calloc(1, sizeof(*s));

	if (!s) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	atomic_init(&s->refs, 1);
	s->fd = fd;
	s->lo = off;
	s->hi = off + len;
	if (fd >= 0) {
		int r = source_open_fd(s, cache);
		if (r < 0) {
			source_unref(s);
			return r;
		}
	}
	*ret = s;
	return 0;
}

struct source *source_ref(struct source *s)
{
	atomic_fetch_add(&s->refs, 1);
	return s;
}

void source_unref(struct source *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	if (s->map)
		munmap((void *)s->map, s->maplen);
	if (s->fd >= 0)
		close(s->fd);
	extents_unref(s->ext);
	free(s);
}

bool source_is_zero(const struct source *s)
{
	return s->fd < 0;
}

uint64_t source_extent(const struct source *s, uint64_t off, uint64_t n, bool *ret_data)
{
	uint64_t len = n << uffdd_page_shift, end = off + len;
	const struct extent *v = s->ext ? s->ext->v : NULL;
	size_t lo = 0, hi = s->ext ? s->ext->n : 0, nr = hi;

	/* The first extent that ends after off. */
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (v[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == nr || v[lo].start >= end) {
		*ret_data = false;
		return n;
	}
	const struct extent *e = &v[lo];
	if (e->start > off) {
		*ret_data = false;
		return (e->start - off) >> uffdd_page_shift;
	}
	*ret_data = true;
	return ((e->end < end ? e->end : end) - off) >> uffdd_page_shift;
}

int source_data(const struct source *s, uint64_t off, size_t len, void *buf, const void **ret)
{
	if (s->map && off >= s->lo && off + len - s->lo <= s->maplen) {
		*ret = s->map + (off - s->lo);
		return 0;
	}
	size_t got = 0;
	while (got < len) {
		ssize_t k = pread(s->fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			break;
		got += (size_t)k;
	}
	/* The file shrank: what is gone reads as zero, like a hole. */
	memset((uint8_t *)buf + got, 0, len - got);
	*ret = buf;
	return 0;
}
