// SPDX-License-Identifier: MIT
/*
 * Page sources: zero, or a window of a file a client sent.  Every source
 * file is held once, however many regions and sessions read it: a global
 * table keyed by device and inode keeps one descriptor per file, with an id
 * (from 1, never reused) under which the descriptor sits in the fd store as
 * f<id>, so that a restarted daemon takes it back (source_file_adopt()).  A
 * window (struct source) holds a reference on its file and maps its part of
 * it read-only: UFFDIO_COPY reads the page cache through that mapping, one
 * copy, and a file truncated under us fails the ioctl with EFAULT instead of
 * raising SIGBUS in the daemon, since only the kernel touches the mapping.
 * A shared snapshot's window (source_new_unmapped()) is not mapped: its
 * pages go to the process by UFFDIO_CONTINUE from its own mapping.
 * That holds for a file whose reads wait for memory or a local disk only: a
 * file a server answers for (FUSE, NFS) or a block device may never answer,
 * so it is not mapped, and a session's reader (reader.c), a process of its
 * own, preads it.  The data extents (SEEK_DATA/SEEK_HOLE) of a file are
 * listed once and shared by its windows while the file's size and times stay
 * as they were: a source must not change while it is served.  A file's
 * descriptor is closed through closer.c: a FUSE file's close() waits for its
 * server.  A source may be a page server's instead (source-remote.c), which
 * it holds and frees.  It calls source-remote.c, closer.c, store.c (the fd
 * store), log.c and util.c (the page size).
 */
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <linux/fs.h>
#include <linux/magic.h>

#include "uffdd.h"

/* Past this many extents the rest of the file counts as data. */
#define MAX_EXTENTS (1u << 20)
/* Populated when the region is added, at most: a worker spends some 20 ms
 * on it, while its other sessions wait. */
#define POPULATE_MAX (256ull << 20)
/* Extents populated when the region is added, at most: one madvise() each,
 * a few us, so a file of many small extents costs a few ms too. */
#define POPULATE_RUNS_MAX 1024
/* The table's first number of buckets; it doubles when it holds as many
 * files, so that a lookup stays short however many files clients send. */
#define FILES_BUCKETS_MIN 64
/* The largest file id taken back at start: counting on from it never wraps
 * to 0, which names the zero source. */
#define FILE_ID_MAX (UINT64_MAX / 2)

struct extent {
	uint64_t start, end; /* page aligned: data pages */
};

/* The data extents of a file as it was when listed; immutable. */
struct extents {
	_Atomic unsigned int refs;
	uint64_t size;
	struct timespec mtime, ctime;
	struct extent *v;
	size_t n;
	bool guessed; /* the last extent is the rest of the file, not listed */
};

/* A source file, in the table once (fields under files_lock but fd, dev,
 * ino, blk and id, fixed when it is added). */
struct srcfile {
	uint64_t id;
	int fd;
	dev_t dev;
	ino_t ino;
	bool blk;    /* a block device (else a regular file) */
	bool memory; /* shmem or hugetlbfs: its pages are in memory */
	/* Its reads wait at most for memory or a local disk: the workers read
	 * it.  Else (a block device, a file system of no device of its own:
	 * FUSE, NFS, ...) a read may wait for a server forever: a session's
	 * reader reads it (reader.c), never a worker. */
	bool direct;
	uid_t uid;	     /* who sent it: its close is charged to that uid (closer.c) */
	unsigned int refs;   /* its windows, and one while adopted */
	bool adopted;	     /* taken back at start, not yet claimed or released */
	bool storing;	     /* just added: store_put() under way */
	struct extents *ext; /* the newest listing; NULL: none yet */
	struct srcfile *next_ino, *next_id; /* the table's chains */
};

struct source {
	_Atomic unsigned int refs;
	struct srcfile *file; /* NULL: zero source */
	uint64_t lo, hi;      /* the window in use, which the mapping covers */
	const uint8_t *map;   /* the window mapped at lo; NULL: read with pread */
	size_t maplen;
	struct extents *ext;   /* NULL: no data (a zero source, an empty window) */
	struct remote *remote; /* a page server's: every page is data, asked */
};

static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
/* A file's store_put() is done: a window on it may be recorded. */
static pthread_cond_t files_stored = PTHREAD_COND_INITIALIZER;
static struct srcfile **by_ino, **by_id; /* nbuckets chains each */
static size_t nbuckets, nfiles;
static uint64_t next_file_id = 1;

static uint64_t page_up(uint64_t x)
{
	return (x + uffdd_page - 1) & ~(uint64_t)(uffdd_page - 1);
}

/* ---- the table of files ---- */

/* splitmix64's finaliser: every bit of x moves every bit of the result. */
static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* The buckets of a table of n (a power of two) chains. */
static size_t ino_bucket(dev_t dev, ino_t ino, size_t n)
{
	return (size_t)mix((uint64_t)dev ^ mix((uint64_t)ino)) & (n - 1);
}

static size_t id_bucket(uint64_t id, size_t n)
{
	return (size_t)mix(id) & (n - 1);
}

static struct srcfile *file_by_ino_locked(dev_t dev, ino_t ino)
{
	if (!nbuckets)
		return NULL;
	for (struct srcfile *f = by_ino[ino_bucket(dev, ino, nbuckets)]; f; f = f->next_ino)
		if (f->dev == dev && f->ino == ino)
			return f;
	return NULL;
}

static struct srcfile *file_by_id_locked(uint64_t id)
{
	if (!nbuckets)
		return NULL;
	for (struct srcfile *f = by_id[id_bucket(id, nbuckets)]; f; f = f->next_id)
		if (f->id == id)
			return f;
	return NULL;
}

/* Room for one more file: double the buckets when they are as many as the
 * files.  Without memory the chains grow longer; only a first table fails. */
static int files_grow_locked(void)
{
	if (nfiles < nbuckets)
		return 0;
	size_t n = nbuckets ? nbuckets * 2 : FILES_BUCKETS_MIN;
	struct srcfile **ino = calloc(n, sizeof(*ino)), **id = calloc(n, sizeof(*id));
	if (!ino || !id) {
		free(ino);
		free(id);
		return nbuckets ? 0 : -ENOMEM;
	}
	for (size_t b = 0; b < nbuckets; b++) {
		for (struct srcfile *f = by_ino[b], *next; f; f = next) {
			size_t k = ino_bucket(f->dev, f->ino, n);
			next = f->next_ino;
			f->next_ino = ino[k];
			ino[k] = f;
		}
		for (struct srcfile *f = by_id[b], *next; f; f = next) {
			size_t k = id_bucket(f->id, n);
			next = f->next_id;
			f->next_id = id[k];
			id[k] = f;
		}
	}
	free(by_ino);
	free(by_id);
	by_ino = ino;
	by_id = id;
	nbuckets = n;
	return 0;
}

/* After files_grow_locked(). */
static void file_link_locked(struct srcfile *f)
{
	size_t bi = ino_bucket(f->dev, f->ino, nbuckets), bd = id_bucket(f->id, nbuckets);

	f->next_ino = by_ino[bi];
	by_ino[bi] = f;
	f->next_id = by_id[bd];
	by_id[bd] = f;
	nfiles++;
}

static void file_unlink_locked(struct srcfile *f)
{
	struct srcfile **p = &by_ino[ino_bucket(f->dev, f->ino, nbuckets)];

	while (*p != f)
		p = &(*p)->next_ino;
	*p = f->next_ino;
	for (p = &by_id[id_bucket(f->id, nbuckets)]; *p != f; p = &(*p)->next_id)
		;
	*p = f->next_id;
	nfiles--;
}

static void extents_unref(struct extents *x)
{
	if (!x || atomic_fetch_sub(&x->refs, 1) != 1)
		return;
	free(x->v);
	free(x);
}

/* Out of the table already: out of the store, closed. */
static void file_destroy(struct srcfile *f)
{
	store_remove("f%" PRIu64, f->id);
	closer_close(f->fd, f->uid);
	extents_unref(f->ext);
	free(f);
}

static void file_put(struct srcfile *f)
{
	pthread_mutex_lock(&files_lock);
	bool last = --f->refs == 0;
	if (last)
		file_unlink_locked(f);
	pthread_mutex_unlock(&files_lock);
	if (last)
		file_destroy(f);
}

/* What the file behind fd is and its size in bytes: -EINVAL unless a regular
 * file or a block device. */
static int file_stat(int fd, struct stat *st, uint64_t *ret_size)
{
	int r = fstat_cached(fd, st);

	if (r < 0)
		return r;
	if (S_ISBLK(st->st_mode))
		return ioctl(fd, BLKGETSIZE64, ret_size) < 0 ? -errno : 0;
	if (!S_ISREG(st->st_mode))
		return -EINVAL;
	*ret_size = (uint64_t)st->st_size;
	return 0;
}

/* A descriptor a client (or the store) gave: one the daemon can read. */
static int file_check(int fd, struct stat *st, uint64_t *ret_size)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	/* A source the daemon cannot read would fail every fault, forever:
	 * refuse it now (-EBADF), as read(2) would. */
	if ((fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY)
		return -EBADF;
	return file_stat(fd, st, ret_size);
}

static struct srcfile *file_alloc(uint64_t id, int fd, uid_t uid, const struct stat *st)
{
	struct srcfile *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->id = id;
	f->fd = fd;
	f->uid = uid;
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->blk = S_ISBLK(st->st_mode);
	/* Without a request to the file system, which may never answer:
	 * seals are shmem's and hugetlbfs's, and a file system on a block
	 * device has a device number of a real major. */
	f->memory = fcntl(fd, F_GET_SEALS) >= 0;
	f->direct = f->memory || (!f->blk && major(st->st_dev) != 0);
	f->refs = 1;
	return f;
}

/*
 * The table's file for fd (checked), with a reference: the one already
 * there (fd is closed), or fd as a new file, handed to the store as f<id>
 * first.  fd is the table's or closed, whatever the result.
 */
static int file_get(int fd, uid_t uid, const struct stat *st, struct srcfile **ret)
{
	struct srcfile *f = file_alloc(0, fd, uid, st);

	if (!f) {
		closer_close(fd, uid);
		return -ENOMEM;
	}
	pthread_mutex_lock(&files_lock);
	struct srcfile *g = file_by_ino_locked(st->st_dev, st->st_ino);
	if (g) {
		g->refs++;
		/* A region recorded before its file is in the store would not
		 * survive the daemon: wait for the store_put() under way. */
		while (g->storing)
			pthread_cond_wait(&files_stored, &files_lock);
		pthread_mutex_unlock(&files_lock);
		free(f);
		closer_close(fd, uid);
		*ret = g;
		return 0;
	}
	if (files_grow_locked() < 0) {
		pthread_mutex_unlock(&files_lock);
		free(f);
		closer_close(fd, uid);
		return -ENOMEM;
	}
	f->id = next_file_id++;
	f->storing = true;
	file_link_locked(f);
	pthread_mutex_unlock(&files_lock);

	int r = store_put(fd, "f%" PRIu64, f->id);
	if (r < 0)
		ulog(LOG_WARNING,
		     "source file %" PRIu64 " (dev %#jx, inode %ju): store_put f%" PRIu64
		     ": %s; its sessions will not survive a restart",
		     f->id, (uintmax_t)f->dev, (uintmax_t)f->ino, f->id, strerror(-r));
	pthread_mutex_lock(&files_lock);
	f->storing = false;
	pthread_cond_broadcast(&files_stored);
	pthread_mutex_unlock(&files_lock);
	*ret = f;
	return 0;
}

/* ---- extents ---- */

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

/* List the data extents of the whole file: a SEEK_HOLE walks the file up to
 * the next hole, so listing a window costs as much as the rest of the file.
 * A file system without SEEK_DATA is all data. */
static int scan_extents(struct extents *x, int fd)
{
	uint64_t pos = 0;

	while (pos < x->size) {
		off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			return 0;
		if (data < 0) {
			x->guessed = true;
			return add_extent(x, pos, x->size);
		}
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || x->n + 1 >= MAX_EXTENTS) {
			x->guessed = true;
			hole = (off_t)x->size;
		}
		int r = add_extent(x, (uint64_t)data, (uint64_t)hole);
		if (r < 0)
			return r;
		pos = (uint64_t)hole;
	}
	return 0;
}

static bool same_time(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* Whether listing x still describes the file as st shows it. */
static bool extents_current(const struct extents *x, const struct stat *st, uint64_t size)
{
	return x && x->size == size && same_time(&x->mtime, &st->st_mtim) &&
	       same_time(&x->ctime, &st->st_ctim);
}

/* A block device is data throughout, and so is a file that may block. */
static int extents_list(const struct srcfile *f, const struct stat *st, uint64_t size,
			struct extents **ret)
{
	struct extents *x = calloc(1, sizeof(*x));

	if (!x)
		return -ENOMEM;
	atomic_init(&x->refs, 1);
	x->size = size;
	x->mtime = st->st_mtim;
	x->ctime = st->st_ctim;
	/* SEEK_DATA asks a FUSE server, which may never answer: a file that
	 * may block is read whole, its holes as data (zeroes all the same). */
	int r = !f->direct ? add_extent(x, 0, size) : scan_extents(x, f->fd);
	if (r < 0) {
		extents_unref(x);
		return r;
	}
	*ret = x;
	return 0;
}

/* The listing of f as st shows it, with a reference: f's newest when the
 * file has not changed since, else a new one, which becomes f's newest
 * (listed without the lock: it may read the whole file's layout). */
static int file_extents(struct srcfile *f, const struct stat *st, uint64_t size,
			struct extents **ret)
{
	pthread_mutex_lock(&files_lock);
	struct extents *x = f->ext;
	if (extents_current(x, st, size)) {
		atomic_fetch_add(&x->refs, 1);
		pthread_mutex_unlock(&files_lock);
		*ret = x;
		return 0;
	}
	pthread_mutex_unlock(&files_lock);

	int r = extents_list(f, st, size, &x);
	if (r < 0)
		return r;
	atomic_fetch_add(&x->refs, 1);
	pthread_mutex_lock(&files_lock);
	struct extents *old = f->ext;
	f->ext = x;
	pthread_mutex_unlock(&files_lock);
	extents_unref(old);
	*ret = x;
	return 0;
}

/* ---- windows ---- */

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
static int window_open(struct source *s, const struct stat *st, uint64_t size, bool map)
{
	if (s->hi > size)
		s->hi = size;
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
	return 0;
}

/* A window [off, off + len) of f (NULL: zero), which takes over the caller's
 * reference on f; mapped when map says so and the file allows. */
static int window_new(struct srcfile *f, const struct stat *st, uint64_t size, uint64_t off,
		      uint64_t len, bool map, struct source **ret)
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
		int r = window_open(s, st, size, map);
		if (r < 0) {
			source_unref(s);
			return r;
		}
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
	return window_new(f, &st, size, off, len, map, ret);
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

int source_new_from(uint64_t id, uid_t uid, uint64_t off, uint64_t len, struct source **ret)
{
	struct stat st = { 0 };
	uint64_t size = 0;

	if (id & REMOTE_ID_BIT) {
		struct remote *rm = remote_lost(id);
		return rm ? source_new_remote(rm, ret) : -ENOMEM;
	}
	if (!id)
		return window_new(NULL, &st, size, off, len, true, ret);
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
	return window_new(f, &st, size, off, len, true, ret);
}

/* Already in the store as f<id>: not handed to it again. */
int source_file_adopt(uint64_t id, int fd)
{
	struct srcfile *f = NULL;
	struct stat st;
	uint64_t size;
	int r = id && id <= FILE_ID_MAX ? file_check(fd, &st, &size) : -EINVAL;

	/* Root's until a session claims it (source_new_from()). */
	if (r >= 0 && !(f = file_alloc(id, fd, 0, &st)))
		r = -ENOMEM;
	if (r >= 0) {
		pthread_mutex_lock(&files_lock);
		if (file_by_id_locked(id))
			r = -EEXIST;
		else
			r = files_grow_locked();
		if (r >= 0) {
			/* A second id for a file already here (the store kept
			 * an f<id> whose removal a crash cut short) is kept as
			 * a file of its own: regions may name either. */
			f->adopted = true;
			file_link_locked(f);
			if (id >= next_file_id)
				next_file_id = id + 1;
		}
		pthread_mutex_unlock(&files_lock);
	}
	if (r < 0) {
		free(f);
		closer_close(fd, 0);
	}
	return r;
}

void source_files_unadopted_release(void)
{
	struct srcfile *dead = NULL;

	pthread_mutex_lock(&files_lock);
	for (size_t b = 0; b < nbuckets; b++) {
		for (struct srcfile *f = by_id[b], *next; f; f = next) {
			next = f->next_id;
			if (!f->adopted)
				continue;
			f->adopted = false;
			if (--f->refs)
				continue;
			file_unlink_locked(f);
			/* Out of the table: its chain link lists the dead. */
			f->next_id = dead;
			dead = f;
		}
	}
	pthread_mutex_unlock(&files_lock);
	while (dead) {
		struct srcfile *f = dead;
		dead = f->next_id;
		file_destroy(f);
	}
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
	if (s->map)
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
		*ret = s->map + (off - s->lo);
		return 0;
	}
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
