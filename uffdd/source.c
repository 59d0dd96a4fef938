// SPDX-License-Identifier: MIT
/*
 * Page sources: zero, or a window of a file a client sent (its file held
 * once in source-file.c's table).  A window (struct source) holds a reference
 * on its file and maps its part of it read-only: UFFDIO_COPY reads the page
 * cache through that mapping, one copy, and a file truncated under us fails
 * the ioctl with EFAULT instead of raising SIGBUS in the daemon, since only
 * the kernel touches the mapping.  So does a window restored after a restart
 * over a file that reached its region's end when the region was added and
 * has shrunk since: the pages it lost are gone (poisoned), not holes.  A
 * shared snapshot's window (source_new_unmapped()) is not mapped: its pages
 * go to the process by UFFDIO_CONTINUE from its own mapping.  That holds for a file whose reads
 * wait for memory or a local disk only: a file a server answers for (FUSE,
 * NFS) or a block device may never answer, so it is not mapped, and a
 * session's reader (reader.c), a process of its own, preads it.  A window
 * shares its file's listing of data extents.  A source may be a page server's
 * instead (source-remote.c), which it holds and frees.  A mapped window of a
 * file on disk reads ahead (source-ra.c) what its copies will need.  It calls
 * source-file.c (the table of files), source-ra.c, source-remote.c,
 * closer.c, log.c and util.c (the page size).
 */
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>

#include "source-internal.h"

/* Populated when the region is added, at most: a worker spends some 20 ms
 * on it, while its other sessions wait. */
#define POPULATE_MAX (256ull << 20)
/* Extents populated when the region is added, at most: one madvise() each,
 * a few us, so a file of many small extents costs a few ms too. */
#define POPULATE_RUNS_MAX 1024

struct source {
	_Atomic unsigned int refs;
	/* Beside refs, in its padding: a region adds a window each (2^18 of
	 * them per uid), so the struct does not grow. */
	/* The file reached the window's end when it was made (or, restored,
	 * when its region was added: STATE_R_COVERED). */
	bool covers;
	/* A restored window whose file has shrunk since its region was added:
	 * from window_cut() to hi is data the file lost, not a hole. */
	bool shrunk;
	struct srcfile *file; /* NULL: zero source */
	uint64_t lo, hi;      /* the window in use, which the mapping covers */
	const uint8_t *map;   /* the window mapped at lo; NULL: read with pread */
	size_t maplen;
	struct extents *ext;   /* NULL: no data (a zero source, an empty window) */
	struct ra *ra;	       /* a mapped file on disk: its readahead */
	struct remote *remote; /* a page server's: every page is data, asked */
};

/* ---- windows ---- */

/* Where a shrunk window's file ended when it was listed: what it lost since
 * begins there. */
static uint64_t window_cut(const struct source *s)
{
	uint64_t end = page_up(s->ext->size);

	return end > s->lo ? end : s->lo;
}

/* The first of the n extents of v that ends after off. */
static size_t extent_after(const struct extent *v, size_t n, uint64_t off)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (v[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * A copy from a page the daemon has not mapped yet first faults it in, which
 * costs a quarter of the copy.  When the pages are in memory anyway (tmpfs,
 * memfd), map the first data of the window now: no I/O, only page tables.
 * Only the listed data extents: a read fault on a hole of tmpfs allocates a
 * page, and the daemon never allocates memory on a client's behalf (an
 * extent guessed to be data is left alone too).  A file on disk stays lazy:
 * populating it would read it all.
 */
static void populate(const struct source *s)
{
	struct statfs fs;

	/* Not fstatfs() first: FUSE asks its server, which may never answer. */
	if (!s->map || !s->ext || !s->file->memory || fstatfs(s->file->fd, &fs) < 0 ||
	    fs.f_type != TMPFS_MAGIC)
		return;
	const struct extents *x = s->ext;
	size_t n = x->guessed ? x->n - 1 : x->n;
	uint64_t end = s->lo + s->maplen, budget = POPULATE_MAX;
	unsigned int runs = 0;
	for (size_t i = extent_after(x->v, n, s->lo);
	     i < n && x->v[i].start < end && budget && runs < POPULATE_RUNS_MAX; i++, runs++) {
		uint64_t a = x->v[i].start > s->lo ? x->v[i].start : s->lo;
		uint64_t b = x->v[i].end < end ? x->v[i].end : end;
		if (b - a > budget)
			b = a + budget;
		budget -= b - a;
		/* Before Linux 5.14 (EINVAL), or a file truncated since it was
		 * listed (EFAULT): the pages fault in as they are copied. */
		if (madvise((void *)(s->map + (a - s->lo)), b - a, MADV_POPULATE_READ) < 0)
			return;
	}
}

/* The window's part of its file (st, size bytes now): listed, and with map
 * mapped. */
static int window_open(struct source *s, const struct stat *st, uint64_t size, bool map,
		       bool covered)
{
	/* Past the end of a file that covered the region once: pages lost,
	 * mapped all the same (UFFDIO_COPY fails there with EFAULT, and the
	 * pages are poisoned), never served as zero.  (A file read by a
	 * reader reads what it lost as zeros, as before a restart.) */
	if (s->hi > size && covered && map && s->file->direct && page_up(size) < s->hi) {
		s->shrunk = true;
	} else if (s->hi > size) {
		s->hi = size;
	}
	if (s->lo >= s->hi)
		return 0;
	int r = file_extents(s->file, st, size, &s->ext);
	/* A reader preads what a worker must not touch. */
	if (r < 0 || !s->file->direct || !map)
		return r;
	s->maplen = page_up(s->hi) - s->lo;
	void *m = mmap(NULL, s->maplen, PROT_READ, MAP_SHARED, s->file->fd, (off_t)s->lo);
	/* Not mappable (a file system without mmap): pread it. */
	s->map = m == MAP_FAILED ? NULL : m;
	populate(s);
	/* In memory already: nothing to read ahead. */
	if (s->map && !s->file->memory)
		s->ra = ra_new(s->lo, s->hi, s->ext, s->map, s->maplen);
	return 0;
}

/* A window [off, off + len) of f (NULL: zero), which takes over the caller's
 * reference on f; mapped when map says so and the file allows. */
static int window_new(struct srcfile *f, const struct stat *st, uint64_t size, uint64_t off,
		      uint64_t len, bool map, bool covered, struct source **ret)
{
	struct source *s = calloc(1, sizeof(*s));

	if (!s) {
		if (f)
			file_put(f);
		return -ENOMEM;
	}
	atomic_init(&s->refs, 1);
	s->file = f;
	s->lo = off;
	s->hi = off + len;
	if (f) {
		int r = window_open(s, st, size, map, covered);
		if (r < 0) {
			source_unref(s);
			return r;
		}
		s->covers = s->hi == off + len;
	}
	*ret = s;
	return 0;
}

static int new_window(int fd, uid_t uid, uint64_t off, uint64_t len, bool map, struct source **ret)
{
	struct srcfile *f = NULL;
	struct stat st = { 0 };
	uint64_t size = 0;

	if (fd >= 0) {
		int r = file_check(fd, &st, &size);
		/* Each such file's last close may hang: a uid whose closes
		 * wait already sends no more of them. */
		if (!r && closer_needed(fd, &st) && closer_pending(uid) >= CLOSES_PENDING_MAX)
			r = -EDQUOT;
		if (r < 0) {
			closer_close(fd, uid);
			return r;
		}
		r = file_get(fd, uid, &st, &f);
		if (r < 0)
			return r;
	}
	return window_new(f, &st, size, off, len, map, false, ret);
}

int source_new(int fd, uid_t uid, uint64_t off, uint64_t len, struct source **ret)
{
	return new_window(fd, uid, off, len, true, ret);
}

int source_new_unmapped(int fd, uid_t uid, uint64_t off, uint64_t len, struct source **ret)
{
	return new_window(fd, uid, off, len, false, ret);
}

int source_new_remote(struct remote *rm, struct source **ret)
{
	struct source *s = calloc(1, sizeof(*s));

	if (!s) {
		remote_free(rm);
		return -ENOMEM;
	}
	atomic_init(&s->refs, 1);
	s->remote = rm;
	*ret = s;
	return 0;
}

struct remote *source_remote(const struct source *s)
{
	return s->remote;
}

int source_new_from(uint64_t id, uid_t uid, uint64_t off, uint64_t len, bool covered,
		    struct source **ret)
{
	struct stat st = { 0 };
	uint64_t size = 0;

	if (id & REMOTE_ID_BIT) {
		struct remote *rm = remote_claim(id, uid);
		if (!rm)
			rm = remote_lost(id);
		return rm ? source_new_remote(rm, ret) : -ENOMEM;
	}
	if (!id)
		return window_new(NULL, &st, size, off, len, true, false, ret);
	pthread_mutex_lock(&files_lock);
	struct srcfile *f = file_by_id_locked(id);
	if (f) {
		f->refs++;
		/* Taken back at start: its close is charged to a session's uid
		 * from now on. */
		if (f->adopted)
			f->uid = uid;
	}
	pthread_mutex_unlock(&files_lock);
	if (!f)
		return -ENOENT;
	int r = file_stat(f->fd, &st, &size);
	if (r < 0) {
		file_put(f);
		return r;
	}
	return window_new(f, &st, size, off, len, true, covered, ret);
}

bool source_covers(const struct source *s)
{
	return s->covers;
}

uint64_t source_file_id(const struct source *s)
{
	if (s->remote)
		return remote_id(s->remote);
	return s->file ? s->file->id : 0;
}

int source_stat(const struct source *s, struct stat *st)
{
	if (!s->file)
		return -EINVAL;
	return fstat_cached(s->file->fd, st);
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
	/* The readahead's mapping goes with its last read. */
	if (s->ra)
		ra_free(s->ra);
	else if (s->map)
		munmap((void *)s->map, s->maplen);
	extents_unref(s->ext);
	if (s->file)
		file_put(s->file);
	remote_free(s->remote);
	free(s);
}

bool source_is_zero(const struct source *s)
{
	return !s->file && !s->remote;
}

uint64_t source_extent(const struct source *s, uint64_t off, uint64_t n, bool *ret_data)
{
	uint64_t len = n << uffdd_page_shift, end = off + len;
	const struct extent *v = s->ext ? s->ext->v : NULL;

	if (s->remote) {
		*ret_data = true;
		return n;
	}
	/* What the file lost since its region was added (source_new_from()). */
	uint64_t cut = s->shrunk ? window_cut(s) : UINT64_MAX;

	if (off >= cut) {
		*ret_data = true;
		return n;
	}
	if (end > cut) {
		end = cut;
		n = (end - off) >> uffdd_page_shift;
	}
	size_t nr = s->ext ? s->ext->n : 0, lo = extent_after(v, nr, off);

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

bool source_may_block(const struct source *s)
{
	return s->file && !s->file->direct;
}

int source_data(const struct source *s, uint64_t off, size_t len, void *buf, const void **ret)
{
	if (s->map && off >= s->lo && off + len - s->lo <= s->maplen) {
		/* Being read: the fault waits, not the worker. */
		if (!ra_note(s->ra, off, len))
			return -EINPROGRESS;
		*ret = s->map + (off - s->lo);
		return 0;
	}
	/* Not mapped: what the file lost would read as zeros. */
	if (s->shrunk && off + len > window_cut(s))
		return -EFAULT;
	int r = source_pread(s->file->fd, off, len, buf);
	if (r < 0)
		return r;
	*ret = buf;
	return 0;
}

int source_fd(const struct source *s)
{
	return s->file ? s->file->fd : -1;
}

int source_pread(int fd, uint64_t off, size_t len, void *buf)
{
	size_t got = 0;
	while (got < len) {
		ssize_t k = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));
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
	return 0;
}
