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
 * A chunk's read is IORING_OP_MADVISE(MADV_POPULATE_READ) of its part of
 * the window's mapping, which io_uring always runs in its io-wq: the page
 * cache's own readahead (the device's read_ahead_kb, large folios) reads
 * it, its pages are mapped for the copies to come, and its completion says
 * it landed.  (POSIX_FADV_WILLNEED in 2 MiB pieces was slower: a cold
 * 256 MiB took 250 to 330 ms where read(2) took 190 to 220 and a populate
 * 160 to 230.)  The worker only queues the reads, a batch per submit, and
 * never waits for the disk: a copy from a chunk in flight is -EINPROGRESS
 * (the fault waits, the worker serves what has landed meanwhile), and the
 * worker's eventfd, registered with its ring, wakes it when a read lands
 * (source_reads_landed()).  A read that fails lands all the same: the copy
 * then reads the page again and fails, and place.c poisons it.  Each worker
 * thread has one ring of its own (source_thread_start()); a thread without
 * one (io_uring refused or disabled) copies as before, reading at the
 * kernel's pace, said once.  A window is read ahead by the first thread
 * that asks for it, whose ring says when its reads land; another thread's
 * copies wait for the disk.  The mapping is the readahead's once it has
 * one: a window freed while its reads are in flight stays mapped (a
 * reference per read) until they land, so that a populate never meets
 * another mapping at its address.  Files in memory (tmpfs, memfd) have
 * nothing to read ahead; a file that may block is read by a reader
 * (reader.c), never mapped.  It calls log.c.
 */
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "source-internal.h"

/* The piece of the file read at once, aligned in the file (a huge page's
 * size): large enough that the disk streams. */
#define RA_CHUNK (2ull << 20)
/* Chunks in flight while the window streams: 32 MiB, several times what a
 * disk needs queued to stream, a small part of the memory of a restore. */
#define RA_FLY_MAX 16
/* Chunks asked for one after the other that make a sequential stream. */
#define RA_SEQ_CHUNKS 2
/* Chunks asked for at random that make a dense pattern: this share of the
 * window's chunks with data (1/32), and at least RA_DENSE_MIN. */
#define RA_DENSE_SHARE 32
#define RA_DENSE_MIN   4
/* A window of more chunks (2 TiB) gets no readahead: its bitmap would cost
 * more than the reads save. */
#define RA_CHUNKS_MAX (1u << 20)
/* A thread's ring: room for the chunks in flight and the ones asked for. */
#define RA_RING_ENTRIES 64
/* The io-wq threads a ring's reads may have at once (each is a task of the
 * daemon's, under the unit's TasksMax=): a populate waits in one for its
 * chunk, and the page cache's readahead reads ahead of it, so a few keep
 * the disk streaming. */
#define RA_IOWQ_MAX 4
/* Chunks a stream looks at per note, at most: in a warm file each is only
 * a mincore(), but a note must not walk a large file's every chunk. */
#define RA_SCAN_MAX 64

struct ra {
	pthread_mutex_t lock;
	_Atomic unsigned int refs; /* the window's, and one per read in flight */
	const void *owner;	   /* the ring of the thread that reads it ahead */
	uint64_t lo, hi;	   /* the window */
	const uint8_t *map; /* mapped at lo, maplen bytes: unmapped with the last reference */
	size_t maplen;
	uint64_t base;	     /* lo rounded down to a chunk */
	size_t nchunks;	     /* chunks from base that the window touches */
	uint64_t *done;	     /* per chunk: read asked, or without data */
	uint64_t *landed;    /* per chunk: read done, or without data */
	size_t left;	     /* chunks with data not asked for yet */
	size_t dense;	     /* chunks asked for that make the pattern dense */
	size_t asked;	     /* distinct chunks asked for on demand */
	size_t last;	     /* the last chunk asked for */
	unsigned int streak; /* chunks asked for in a row, one after the other */
	bool stream;	     /* the whole window is wanted: read it ahead */
	size_t cursor;	     /* where the stream looks for the next chunk */
	unsigned int nfly;   /* streamed chunks in flight */
};

/* A chunk's read in flight: what its completion names. */
struct ra_op {
	struct ra *ra;
	size_t k;
	bool fly; /* streamed (counted in nfly) */
};

/* ---- the thread's ring ---- */

struct ring {
	struct io_uring u;
	unsigned int inflight; /* reads not landed yet */
	bool landed;	       /* some landed since source_reads_landed() */
};

static pthread_key_t ring_key;
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;
static bool ring_key_ok;
static _Atomic bool ring_said;
/* The thread's ring; NULL: none (not a worker, or io_uring refused). */
static __thread struct ring *ring;

static void ra_put(struct ra *ra)
{
	if (atomic_fetch_sub(&ra->refs, 1) != 1)
		return;
	pthread_mutex_destroy(&ra->lock);
	munmap((void *)ra->map, ra->maplen);
	free(ra->done);
	free(ra->landed);
	free(ra);
}

static void bit_set(uint64_t *v, size_t k)
{
	v[k / 64] |= 1ull << (k % 64);
}

static bool bit_test(const uint64_t *v, size_t k)
{
	return v[k / 64] >> (k % 64) & 1;
}

/* Take the completions: each one's chunk has landed. */
static void ring_reap(struct ring *rg)
{
	struct io_uring_cqe *cqes[RA_RING_ENTRIES];
	unsigned int n;

	while ((n = io_uring_peek_batch_cqe(&rg->u, cqes, RA_RING_ENTRIES)) > 0) {
		for (unsigned int i = 0; i < n; i++) {
			struct ra_op *op = io_uring_cqe_get_data(cqes[i]);
			if (!op)
				continue;
			pthread_mutex_lock(&op->ra->lock);
			bit_set(op->ra->landed, op->k);
			op->ra->nfly -= op->fly;
			pthread_mutex_unlock(&op->ra->lock);
			ra_put(op->ra);
			free(op);
			rg->inflight--;
			rg->landed = true;
		}
		io_uring_cq_advance(&rg->u, n);
	}
}

/* At the thread's end: its reads land first (a local disk's: soon), so
 * that their windows are freed. */
static void ring_free(void *p)
{
	struct ring *rg = p;
	struct io_uring_cqe *cqe;

	while (rg->inflight && io_uring_wait_cqe(&rg->u, &cqe) == 0)
		ring_reap(rg);
	io_uring_queue_exit(&rg->u);
	free(rg);
}

static void ring_key_make(void)
{
	ring_key_ok = pthread_key_create(&ring_key, ring_free) == 0;
}

void source_thread_start(int efd)
{
	pthread_once(&ring_once, ring_key_make);
	struct ring *rg = calloc(1, sizeof(*rg));
	const char *call = "calloc";
	bool made = false;
	int err = rg ? 0 : -ENOMEM;

	if (!err && !ring_key_ok) {
		call = "pthread_key_create";
		err = -EAGAIN;
	}
	if (!err && (err = io_uring_queue_init(RA_RING_ENTRIES, &rg->u, 0)) < 0)
		call = "io_uring_queue_init";
	made = !err;
	if (!err && (err = io_uring_register_eventfd(&rg->u, efd)) < 0)
		call = "io_uring_register_eventfd";
	/* Before Linux 5.15 (EINVAL): no cap but the io-wq's own, a few per
	 * CPU; the ring reads all the same. */
	unsigned int iowq[2] = { RA_IOWQ_MAX, 0 };
	if (!err)
		io_uring_register_iowq_max_workers(&rg->u, iowq);
	if (!err && (err = -pthread_setspecific(ring_key, rg)) < 0)
		call = "pthread_setspecific";
	if (err < 0) {
		if (made)
			io_uring_queue_exit(&rg->u);
		free(rg);
		if (!atomic_exchange(&ring_said, true))
			ulog(LOG_WARNING,
			     "%s: %s; cold source files are read at the kernel's readahead "
			     "pace, as copies need their pages",
			     call, strerror(-err));
		return;
	}
	ring = rg;
}

/* Submit what is queued; whether all went (else io_uring_submit() failed,
 * out of memory say: the reads queued go with a later call). */
static bool ring_flush(struct ring *rg)
{
	if (io_uring_sq_ready(&rg->u))
		io_uring_submit(&rg->u);
	return !io_uring_sq_ready(&rg->u);
}

bool source_reads_landed(void)
{
	if (!ring)
		return false;
	ring_reap(ring);
	/* Reads not submitted land never: the faults that wait for them
	 * ask again, and their copies read the pages themselves. */
	bool r = ring->landed || !ring_flush(ring);
	ring->landed = false;
	return r;
}

/* ---- chunks ---- */

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

/* Whether chunk k is in the page cache already (its last page is): a warm
 * file is read nothing ahead, and its copies never wait. */
static bool chunk_cached(const struct ra *ra, size_t k)
{
	uint64_t a, b;
	unsigned char v;

	chunk_range(ra, k, &a, &b);
	uint64_t tail = (b - 1) & ~(uint64_t)(uffdd_page - 1);
	return mincore((void *)(ra->map + (tail - ra->lo)), uffdd_page, &v) == 0 && (v & 1);
}

/* Queue the read of chunk k (not asked for yet), or nothing when it is
 * cached.  False when the ring has no room or no memory. */
static bool chunk_read(struct ra *ra, struct ring *rg, size_t k, bool fly)
{
	struct io_uring_sqe *sqe;
	struct ra_op *op;
	uint64_t a, b;

	if (chunk_cached(ra, k)) {
		bit_set(ra->done, k);
		bit_set(ra->landed, k);
		ra->left--;
		return true;
	}
	if (!(op = malloc(sizeof(*op))))
		return false;
	/* Full of reads queued: they go, and make room. */
	if (!(sqe = io_uring_get_sqe(&rg->u)) &&
	    (io_uring_submit(&rg->u) < 0 || !(sqe = io_uring_get_sqe(&rg->u)))) {
		free(op);
		return false;
	}
	chunk_range(ra, k, &a, &b);
	io_uring_prep_madvise(sqe, (void *)(ra->map + (a - ra->lo)), (off_t)(b - a),
			      MADV_POPULATE_READ);
	*op = (struct ra_op){ ra, k, fly };
	io_uring_sqe_set_data(sqe, op);
	atomic_fetch_add(&ra->refs, 1);
	bit_set(ra->done, k);
	ra->left--;
	ra->nfly += fly;
	rg->inflight++;
	return true;
}

/* Stream: queue the next chunks not asked for yet, RA_FLY_MAX in flight. */
static void fly_fill(struct ra *ra, struct ring *rg)
{
	for (unsigned int n = 0; ra->left && ra->nfly < RA_FLY_MAX && n < RA_SCAN_MAX; n++) {
		while (bit_test(ra->done, ra->cursor))
			ra->cursor = (ra->cursor + 1) % ra->nchunks;
		if (!chunk_read(ra, rg, ra->cursor, true))
			break;
	}
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

bool ra_note(struct ra *ra, uint64_t off, size_t len)
{
	struct ring *rg = ring;

	if (!ra || !rg)
		return true;
	ring_reap(rg);
	/* Another thread reads ahead on this window (its ring would say when
	 * a read lands, not this one's): the copy waits. */
	if (pthread_mutex_trylock(&ra->lock))
		return true;
	if (!ra->owner)
		ra->owner = rg;
	if (ra->owner != rg) {
		pthread_mutex_unlock(&ra->lock);
		return true;
	}
	bool in = true, room = true;
	size_t c = chunk_of(ra, off), e = chunk_of(ra, off + len - 1) + 1;
	for (size_t k = c; k < e; k++) {
		if (!bit_test(ra->done, k)) {
			/* No room to ask: the copy reads it. */
			if (!room || !chunk_read(ra, rg, k, false)) {
				room = false;
				continue;
			}
			ra->asked++;
		}
		in &= bit_test(ra->landed, k);
	}
	pattern(ra, c, e);
	if (ra->stream)
		fly_fill(ra, rg);
	/* Reads that could not be submitted: the copy reads the pages. */
	bool sent = ring_flush(rg);
	pthread_mutex_unlock(&ra->lock);
	return in || !room || !sent;
}

/* Mark the chunks with data (per ext) as not asked for, not landed. */
static void mark_data(struct ra *ra, const struct extents *ext)
{
	for (size_t i = 0; i < ext->n; i++) {
		uint64_t a = ext->v[i].start > ra->lo ? ext->v[i].start : ra->lo;
		uint64_t b = ext->v[i].end < ra->hi ? ext->v[i].end : ra->hi;
		if (a >= b)
			continue;
		for (size_t k = chunk_of(ra, a); k <= chunk_of(ra, b - 1); k++) {
			if (!bit_test(ra->done, k))
				continue;
			ra->done[k / 64] &= ~(1ull << (k % 64));
			ra->landed[k / 64] &= ~(1ull << (k % 64));
			ra->left++;
		}
	}
}

struct ra *ra_new(uint64_t lo, uint64_t hi, const struct extents *ext, const uint8_t *map,
		  size_t maplen)
{
	uint64_t base = lo & ~(RA_CHUNK - 1);
	uint64_t n = (hi - base + RA_CHUNK - 1) / RA_CHUNK;

	if (lo >= hi || n > RA_CHUNKS_MAX)
		return NULL;
	struct ra *ra = calloc(1, sizeof(*ra));
	size_t words = ((size_t)n + 63) / 64;
	uint64_t *done = malloc(words * sizeof(*done)), *landed = malloc(words * sizeof(*landed));
	if (!ra || !done || !landed) {
		free(ra);
		free(done);
		free(landed);
		return NULL;
	}
	memset(done, 0xff, words * sizeof(*done));
	memset(landed, 0xff, words * sizeof(*landed));
	pthread_mutex_init(&ra->lock, NULL);
	atomic_init(&ra->refs, 1);
	ra->lo = lo;
	ra->hi = hi;
	ra->map = map;
	ra->maplen = maplen;
	ra->base = base;
	ra->nchunks = (size_t)n;
	ra->done = done;
	ra->landed = landed;
	ra->last = SIZE_MAX - 1;
	mark_data(ra, ext);
	ra->dense =
		ra->left / RA_DENSE_SHARE > RA_DENSE_MIN ? ra->left / RA_DENSE_SHARE : RA_DENSE_MIN;
	return ra;
}

void ra_free(struct ra *ra)
{
	if (ra)
		ra_put(ra);
}
