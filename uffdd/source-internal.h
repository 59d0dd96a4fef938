/* SPDX-License-Identifier: MIT */
/*
 * Page sources' files, private to source.c (windows of them),
 * source-file.c (the table of files and their listings of data extents) and
 * source-ra.c (a window's readahead).
 */
#ifndef UFFDD_SOURCE_INTERNAL_H
#define UFFDD_SOURCE_INTERNAL_H

#include "uffdd.h"

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

/* Guards the table of files and each file's fields but its fixed ones. */
extern pthread_mutex_t files_lock;

/* x rounded up to a page. */
uint64_t page_up(uint64_t x);
/* The table's file of that id, NULL when none; under files_lock. */
struct srcfile *file_by_id_locked(uint64_t id);
/* Drop a reference on f: the last takes it out of the table, the store and
 * closes it. */
void file_put(struct srcfile *f);
/* What the file behind fd is and its size in bytes: -EINVAL unless a regular
 * file or a block device. */
int file_stat(int fd, struct stat *st, uint64_t *ret_size);
/* file_stat() of a descriptor a client (or the store) gave, -EBADF when the
 * daemon cannot read it. */
int file_check(int fd, struct stat *st, uint64_t *ret_size);
/* The table's file for fd (checked), with a reference; fd is the table's or
 * closed, whatever the result. */
int file_get(int fd, uid_t uid, const struct stat *st, struct srcfile **ret);
/* The listing of f's data extents as st shows it, with a reference. */
int file_extents(struct srcfile *f, const struct stat *st, uint64_t size, struct extents **ret);
void extents_unref(struct extents *x);

/* ---- source-ra.c: readahead of a window on disk, through io_uring ---- */

struct ra;
/* Readahead over the window [lo, hi) mapped at map (maplen bytes, which it
 * takes over: unmapped by the last ra_free() or read), whose data extents
 * ext lists; NULL when the window is too large to track or memory is short
 * (then the copies read as they go, and the caller keeps the mapping). */
struct ra *ra_new(uint64_t lo, uint64_t hi, const struct extents *ext, const uint8_t *map,
		  size_t maplen);
/*
 * [off, off + len) of the window is about to be copied: ask for its reads,
 * and for what the pattern so far says will be wanted, ahead; never waits
 * for the disk.  Whether it is in the page cache (true too when this thread
 * reads nothing ahead, or cannot ask: the copy reads it).  Accepts NULL.
 */
bool ra_note(struct ra *ra, uint64_t off, size_t len);
/* Accepts NULL; its reads in flight hold it (and its mapping) until they
 * land. */
void ra_free(struct ra *ra);

#endif
