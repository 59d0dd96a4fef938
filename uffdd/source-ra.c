// SPDX-License-Identifier: MIT
/*
 * Readahead of a window of a source file on disk (source.c maps the window;
 * UFFDIO_COPY reads the page cache through that mapping).  Cold, each page
 * the copy finds missing is read then and there, by the worker, one
 * read-around of the device's read_ahead_kb at a time, and a random toucher
 * reads the file in small pieces out of order.  Here the window's reads go
 * out ahead through io_uring, in chunks of RA_CHUNK bytes aligned in the
 * file, sized from the pattern of the pages asked for:
 *  - a chunk asked for is read whole (one large aligned read, not a page);
 *  - once the pattern shows that the whole window will be wanted (chunks
 *    asked for in address order, as a push or a sequential toucher does, or
 *    RA_DENSE_SHARE of the window's chunks asked for at random), the rest is
 *    streamed, every chunk once, RA_FLY_MAX chunks in flight.
 * Each read is IORING_OP_FADVISE(POSIX_FADV_WILLNEED), which io_uring always
 * runs in its io-wq: the worker only queues it, a batch per submit, and
 * never waits for the disk there (the copy waits for the page it needs, as
 * it did).  A chunk is in flight until its last page is in the page cache
 * (mincore() on the window's mapping).  Each worker thread has one ring of
 * its own, made at its first use; a thread that cannot have one (io_uring
 * refused or disabled) reads as before, at the kernel's pace, said once.
 * A read that fails is not seen here: the copy reads the page again and
 * fails (place.c poisons it).  Files in memory (tmpfs, memfd) have nothing
 * to read ahead; a file that may block is read by a reader (reader.c), not
 * mapped.  It calls log.c.
 */
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "source-internal.h"

/* The piece of the file read at once: large enough that the disk streams,
 * a huge page's size (read whole even when the window starts within it). */
#define RA_CHUNK (2ull << 20)
/* Chunks in flight while the window streams: 32 MiB, several times what a
 * disk needs queued to stream, a small part of the memory of a restore. */
#define RA_FLY_MAX 16
/* Chunks asked for one after the other that make a sequential stream. */
#define RA_SEQ_CHUNKS 2
/* Chunks asked for at random that make a dense pattern: this share of the
 * window's chunks with data (1/16), and at least RA_DENSE_MIN. */
#define RA_DENSE_SHARE 16
#define RA_DENSE_MIN   4
/* A window of more chunks (2 TiB) gets no readahead: its bitmap would cost
 * more than the reads save. */
#define RA_CHUNKS_MAX (1u << 20)
/* Notes a chunk may stay in flight before it counts as read all the same:
 * its last page may have been read and evicted already, under memory
 * pressure, and the stream must not wait for it forever. */
#define RA_STALE_NOTES 4096
/* A thread's ring: room for the chunks in flight and the ones asked for. */
#define RA_RING_ENTRIES 64

struct ra {
	pthread_mutex_t lock;
	int fd;
	uint64_t lo, hi; /* the window, mapped at map */
	const uint8_t *map;
	uint64_t base;		/* lo rounded down to a chunk */
	size_t nchunks;		/* chunks from base that the window touches */
	uint64_t *done;		/* per chunk: read, or without data */
	size_t left;		/* chunks with data not read yet */
	size_t dense;		/* chunks asked for that make the pattern dense */
	size_t asked;		/* distinct chunks asked for (read on demand) */
	size_t last;		/* the last chunk asked for */
	unsigned streak;	/* chunks asked for in a row, one after the other */
	bool stream;		/* the whole window is wanted: read it ahead */
	size_t cursor;		/* where the stream looks for the next chunk */
	size_t fly[RA_FLY_MAX]; /* streamed chunks in flight, oldest first */
	unsigned int head, nfly, stale;
};

/* ---- the thread's ring ---- */

static pthread_key_t ring_key;
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;
static bool ring_key_ok;
static _Atomic bool ring_said;
/* The thread's ring; NULL before its first use, or (RING_NONE) when it has
 * none. */
static __thread struct io_uring *ring;
static struct io_uring ring_none;
#define RING_NONE (&ring_none)

static void ring_free(void *p)
{
	struct io_uring *r = p;

	io_uring_queue_exit(r);
	free(r);
}

static void ring_key_make(void)
{
	ring_key_ok = pthread_key_create(&ring_key, ring_free) == 0;
}

/* The calling thread's ring, made at its first call; NULL: none. */
static struct io_uring *ring_get(void)
{
	if (ring)
		return ring == RING_NONE ? NULL : ring;
	pthread_once(&ring_once, ring_key_make);
	struct io_uring *r = malloc(sizeof(*r));
	int err = r ? 0 : -ENOMEM;
	if (!err && !ring_key_ok)
		err = -EAGAIN;
	if (!err)
		err = io_uring_queue_init(RA_RING_ENTRIES, r, 0);
	if (!err && (err = -pthread_setspecific(ring_key, r)) < 0)
		io_uring_queue_exit(r);
	if (err < 0) {
		free(r);
		ring = RING_NONE;
		if (!atomic_exchange(&ring_said, true))
			ulog(LOG_WARNING,
			     "io_uring_queue_init (%d entries): %s; cold source files are read "
			     "at the kernel's readahead pace, page by page as copies need them",
			     RA_RING_ENTRIES, strerror(-err));
		return NULL;
	}
	ring = r;
	return r;
}

/* Completions say nothing the page cache does not: dropped. */
static void ring_reap(struct io_uring *r)
{
	struct io_uring_cqe *cqes[RA_RING_ENTRIES];
	unsigned int n = io_uring_peek_batch_cqe(r, cqes, RA_RING_ENTRIES);

	io_uring_cq_advance(r, n);
}

/* ---- chunks ---- */

static bool chunk_done(const struct ra *ra, size_t k)
{
	return ra->done[k / 64] >> (k % 64) & 1;
}

static void chunk_set_done(struct ra *ra, size_t k)
{
	ra->done[k / 64] |= 1ull << (k % 64);
}

static size_t chunk_of(const struct ra *ra, uint64_t off)
{
	return (size_t)((off - ra->base) / RA_CHUNK);
}

/* Chunk k's part of the window. */
static void chunk_range(const struct ra *ra, size_t k, uint64_t *a, uint64_t *b)
{
	uint64_t s = ra->base + k * RA_CHUNK;

	*a = s > ra->lo ? s : ra->lo;
	*b = s + RA_CHUNK < ra->hi ? s + RA_CHUNK : ra->hi;
}

/* Queue the read of chunk k (not read yet); false when the ring is full. */
static bool chunk_read(struct ra *ra, struct io_uring *r, size_t k)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(r);
	uint64_t a, b;

	if (!sqe) {
		/* Full of reads queued: they go, and make room. */
		if (io_uring_submit(r) < 0 || !(sqe = io_uring_get_sqe(r)))
			return false;
	}
	chunk_range(ra, k, &a, &b);
	io_uring_prep_fadvise(sqe, ra->fd, a, (off_t)(b - a), POSIX_FADV_WILLNEED);
	io_uring_sqe_set_data64(sqe, 0);
	chunk_set_done(ra, k);
	ra->left--;
	return true;
}

/* Whether chunk k is in the page cache: its last page is (the pages of a
 * chunk are read in order). */
static bool chunk_in(const struct ra *ra, size_t k)
{
	uint64_t a, b;
	unsigned char v;

	chunk_range(ra, k, &a, &b);
	uint64_t last = (b - 1 - ra->lo) & ~(uint64_t)(uffdd_page - 1);
	/* A file truncated since: no page there, nothing in flight. */
	if (mincore((void *)(ra->map + last), uffdd_page, &v) < 0)
		return true;
	return v & 1;
}

/* Forget the streamed chunks that are in the page cache now. */
static void fly_retire(struct ra *ra)
{
	while (ra->nfly) {
		if (!chunk_in(ra, ra->fly[ra->head]) && ++ra->stale < RA_STALE_NOTES)
			return;
		ra->stale = 0;
		ra->head = (ra->head + 1) % RA_FLY_MAX;
		ra->nfly--;
	}
}

/* Stream: queue the next chunks not read yet, up to RA_FLY_MAX in flight. */
static bool fly_fill(struct ra *ra, struct io_uring *r)
{
	bool queued = false;

	while (ra->left && ra->nfly < RA_FLY_MAX) {
		while (chunk_done(ra, ra->cursor))
			ra->cursor = (ra->cursor + 1) % ra->nchunks;
		if (!chunk_read(ra, r, ra->cursor))
			break;
		ra->fly[(ra->head + ra->nfly++) % RA_FLY_MAX] = ra->cursor;
		queued = true;
	}
	return queued;
}

/* The pattern after chunks [c, e) were asked for: whether the window
 * streams now, and from where. */
static void pattern(struct ra *ra, size_t c, size_t e)
{
	if (c == ra->last + 1)
		ra->streak++;
	else if (c != ra->last)
		ra->streak = 0;
	ra->last = e - 1;
	if (ra->stream)
		return;
	if (ra->streak >= RA_SEQ_CHUNKS) {
		/* On from here, as the pages are asked for. */
		ra->stream = true;
		ra->cursor = e % ra->nchunks;
	} else if (ra->asked >= ra->dense) {
		/* From the start, where a push begins. */
		ra->stream = true;
		ra->cursor = 0;
	}
}

void ra_note(struct ra *ra, uint64_t off, size_t len)
{
	/* Another thread reads ahead on this window already: enough. */
	if (!ra || pthread_mutex_trylock(&ra->lock))
		return;
	struct io_uring *r = ring_get();
	if (!r) {
		pthread_mutex_unlock(&ra->lock);
		return;
	}
	ring_reap(r);
	bool queued = false;
	size_t c = chunk_of(ra, off), e = chunk_of(ra, off + len - 1) + 1;
	for (size_t k = c; k < e; k++) {
		if (chunk_done(ra, k))
			continue;
		if (!chunk_read(ra, r, k))
			break;
		ra->asked++;
		queued = true;
	}
	pattern(ra, c, e);
	if (ra->stream) {
		fly_retire(ra);
		queued |= fly_fill(ra, r);
	}
	/* Not submitted: the copy reads the pages itself, as without a ring. */
	if (queued)
		io_uring_submit(r);
	pthread_mutex_unlock(&ra->lock);
}

/* Mark the chunks with data (per ext) as not done. */
static void mark_data(struct ra *ra, const struct extents *ext)
{
	for (size_t i = 0; i < ext->n; i++) {
		uint64_t a = ext->v[i].start > ra->lo ? ext->v[i].start : ra->lo;
		uint64_t b = ext->v[i].end < ra->hi ? ext->v[i].end : ra->hi;
		if (a >= b)
			continue;
		for (size_t k = chunk_of(ra, a); k <= chunk_of(ra, b - 1); k++) {
			if (!chunk_done(ra, k))
				continue;
			ra->done[k / 64] &= ~(1ull << (k % 64));
			ra->left++;
		}
	}
}

struct ra *ra_new(int fd, uint64_t lo, uint64_t hi, const struct extents *ext, const uint8_t *map)
{
	uint64_t base = lo & ~(RA_CHUNK - 1);
	uint64_t n = (hi - base + RA_CHUNK - 1) / RA_CHUNK;

	if (lo >= hi || n > RA_CHUNKS_MAX)
		return NULL;
	struct ra *ra = calloc(1, sizeof(*ra));
	size_t words = ((size_t)n + 63) / 64;
	uint64_t *done = malloc(words * sizeof(*done));
	if (!ra || !done) {
		free(ra);
		free(done);
		return NULL;
	}
	memset(done, 0xff, words * sizeof(*done));
	pthread_mutex_init(&ra->lock, NULL);
	ra->fd = fd;
	ra->lo = lo;
	ra->hi = hi;
	ra->map = map;
	ra->base = base;
	ra->nchunks = (size_t)n;
	ra->done = done;
	ra->last = SIZE_MAX - 1;
	mark_data(ra, ext);
	ra->dense =
		ra->left / RA_DENSE_SHARE > RA_DENSE_MIN ? ra->left / RA_DENSE_SHARE : RA_DENSE_MIN;
	return ra;
}

void ra_free(struct ra *ra)
{
	if (!ra)
		return;
	pthread_mutex_destroy(&ra->lock);
	free(ra->done);
	free(ra);
}
