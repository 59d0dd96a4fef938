// SPDX-License-Identifier: MIT
/*
 * Source files: every source file is held once, however many regions and
 * sessions read it: a global table keyed by device and inode keeps one
 * descriptor per file, with an id (from 1, never reused) under which the
 * descriptor sits in the fd store as f<id>, so that a restarted daemon takes
 * it back (source_file_adopt()).  The data extents (SEEK_DATA/SEEK_HOLE) of
 * a file are listed once and shared by its windows (source.c) while the
 * file's size and times stay as they were: a source must not change while
 * it is served.  A file's descriptor is closed through closer.c: a FUSE
 * file's close() waits for its server.  It calls closer.c, store.c (the fd
 * store), log.c and util.c (the page size).
 */
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <linux/fs.h>

#include "source-internal.h"

/* Past this many extents the rest of the file counts as data. */
#define MAX_EXTENTS (1u << 20)
/* The table's first number of buckets; it doubles when it holds as many
 * files, so that a lookup stays short however many files clients send. */
#define FILES_BUCKETS_MIN 64
/* The largest file id taken back at start: counting on from it never wraps
 * to 0, which names the zero source. */
#define FILE_ID_MAX (UINT64_MAX / 2)

pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
/* A file's store_put() is done: a window on it may be recorded. */
static pthread_cond_t files_stored = PTHREAD_COND_INITIALIZER;
static struct srcfile **by_ino, **by_id; /* nbuckets chains each */
static size_t nbuckets, nfiles;
static uint64_t next_file_id = 1;

uint64_t page_up(uint64_t x)
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

struct srcfile *file_by_id_locked(uint64_t id)
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

void extents_unref(struct extents *x)
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

void file_put(struct srcfile *f)
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
int file_stat(int fd, struct stat *st, uint64_t *ret_size)
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
int file_check(int fd, struct stat *st, uint64_t *ret_size)
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
int file_get(int fd, uid_t uid, const struct stat *st, struct srcfile **ret)
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
int file_extents(struct srcfile *f, const struct stat *st, uint64_t size, struct extents **ret)
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
