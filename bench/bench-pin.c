// SPDX-License-Identifier: MIT
/*
 * Pinning: pin + unpin of 1 GiB through libpin against raw
 * io_uring_register_buffers of the same memory in the same run, mlock of it,
 * the cache-hit lookup, and how long after madvise(MADV_DONTNEED) returns the
 * monitor has dropped the stale pin.  Then 1 GiB backed by huge pages (THP,
 * and 2 MiB hugetlb pages where the pool can be grown by 1 GiB; given back
 * after) against 1 GiB of 4 KiB pages, same run: a huge page is pinned as
 * one folio and io_uring keeps one buffer vector for it (issue 19).
 * With --smoke: 2 MiB, one round each.
 */
#include <liburing.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench-common.h"
#include "hugetlb.h"
#include "pin-internal.h"

#define GiB    (1ul << 30)
#define ROUNDS 7
/* Huge against small pages: a ratio of two medians, the small one noisy on a
 * shared machine (15 to 30 ms a round here), so more rounds. */
#define HUGE_ROUNDS 21
#define HIT_LOOPS   2000000
#define INVAL_LOOPS 200
/* Gets in a row before their puts, for the lookup alone. */
#define HIT_BATCH 1000
/* The smoke test's pin: a huge page's worth, the io_uring path all the same. */
#define SMOKE_PIN_BYTES (2ul << 20)
#define HUGE_2M		(2ul << 20)

/* How much one run measures: the figures, or the smoke test's (bench_smoke()). */
struct sizes {
	size_t pin_bytes;
	int rounds, huge_rounds, hit_loops, inval_loops;
};
static struct sizes sz = { GiB, ROUNDS, HUGE_ROUNDS, HIT_LOOPS, INVAL_LOOPS };
static const struct sizes smoke = { SMOKE_PIN_BYTES, 1, 1, HIT_BATCH, 1 };

static double ms_since(uint64_t t0)
{
	return (double)(bench_now_ns() - t0) / 1e6;
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "bench-pin: %s: %s\n", what, strerror(-err));
	return 1;
}

/* One pin + unpin of [p, p + len) through the cache, in ms. */
static double libpin_round(struct pin_ctx *ctx, char *p, size_t len)
{
	struct pin_range *r;
	uint64_t t0 = bench_now_ns();

	if (pin_range_get(ctx, p, len, &r) < 0)
		return -1;
	pin_range_put(r);
	/* Put leaves it cached; the unpin is the invalidation. */
	pin_ctx_invalidate(ctx, p, len);
	return ms_since(t0);
}

/*
 * Wait until the monitor thread has unregistered what the last round left
 * (in ms): that work is off the caller's path, but it must not run into the
 * next measurement.
 */
static double unwatch_wait(struct pin_ctx *ctx)
{
	uint64_t t0 = bench_now_ns();

	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		bool done = !ctx->unreg.n && !ctx->unreg_busy_end;
		pthread_mutex_unlock(&ctx->lock);
		if (done)
			return ms_since(t0);
		usleep(50);
	}
}

static double raw_round(struct io_uring *ring, char *p, size_t len)
{
	struct iovec iov = { .iov_base = p, .iov_len = len };
	uint64_t t0 = bench_now_ns();

	if (io_uring_register_buffers(ring, &iov, 1) < 0)
		return -1;
	io_uring_unregister_buffers(ring);
	return ms_since(t0);
}

static double mlock_round(char *p, size_t len)
{
	uint64_t t0 = bench_now_ns();

	if (mlock(p, len) < 0)
		return -1;
	munlock(p, len);
	return ms_since(t0);
}

static int bench_1g(struct pin_ctx *ctx)
{
	double lib[ROUNDS], raw[ROUNDS], lck[ROUNDS], bg[ROUNDS];
	struct io_uring ring;
	char *p = mmap(NULL, sz.pin_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		       0);
	int r;

	if (p == MAP_FAILED)
		return fail("mmap 1 GiB", -errno);
	memset(p, 1, sz.pin_bytes);
	r = io_uring_queue_init(8, &ring, 0);
	if (r < 0)
		return fail("io_uring_queue_init", r);
	/* Interleaved, so that both see the same state of the machine. */
	for (int i = 0; i < sz.rounds; i++) {
		lib[i] = libpin_round(ctx, p, sz.pin_bytes);
		bg[i] = unwatch_wait(ctx);
		raw[i] = raw_round(&ring, p, sz.pin_bytes);
		lck[i] = mlock_round(p, sz.pin_bytes);
		if (lib[i] < 0 || raw[i] < 0 || lck[i] < 0)
			return fail("pin 1 GiB (RLIMIT_MEMLOCK?)", -ENOMEM);
	}
	double ml = bench_median(lib, sz.rounds), mr = bench_median(raw, sz.rounds);
	bench_metric("pin_1g_libpin", ml, "ms");
	bench_metric("pin_1g_raw", mr, "ms");
	bench_metric("pin_1g_ratio", ml / mr, "x");
	bench_metric("pin_1g_unwatch_background", bench_median(bg, sz.rounds), "ms");
	bench_metric("pin_1g_mlock", bench_median(lck, sz.rounds), "ms");
	io_uring_queue_exit(&ring);
	munmap(p, sz.pin_bytes);
	return 0;
}

/* len bytes of private anonymous memory aligned to a huge page, written, with
 * advice; the mapping starts at *ret_base and is len + HUGE_2M long. */
static char *map_written(size_t len, int advice, char **ret_base)
{
	char *base = mmap(NULL, len + HUGE_2M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);

	if (base == MAP_FAILED)
		return NULL;
	char *p = (char *)(((uintptr_t)base + HUGE_2M - 1) & ~(HUGE_2M - 1));
	madvise(p, len, advice);
	memset(p, 1, len);
	*ret_base = base;
	return p;
}

/* Median pin + unpin of huge against small, interleaved rounds: the ratio. */
static double huge_vs_small(struct pin_ctx *ctx, char *huge, char *small, const char *name)
{
	double h[HUGE_ROUNDS], s[HUGE_ROUNDS];
	char metric[64];

	for (int i = 0; i < sz.huge_rounds; i++) {
		h[i] = libpin_round(ctx, huge, sz.pin_bytes);
		unwatch_wait(ctx);
		s[i] = libpin_round(ctx, small, sz.pin_bytes);
		unwatch_wait(ctx);
		if (h[i] < 0 || s[i] < 0)
			return -1;
	}
	double mh = bench_median(h, sz.huge_rounds), ms = bench_median(s, sz.huge_rounds);
	snprintf(metric, sizeof(metric), "pin_1g_%s", name);
	bench_metric(metric, mh, "ms");
	snprintf(metric, sizeof(metric), "pin_1g_%s_vs_4k_x", name);
	bench_metric(metric, mh / ms, "x");
	return mh / ms;
}

static int bench_huge(struct pin_ctx *ctx)
{
	const size_t len = sz.pin_bytes, npages = len / HUGE_2M;
	char *small_base, *thp_base;
	char *small = map_written(len, MADV_NOHUGEPAGE, &small_base);
	char *thp = map_written(len, MADV_HUGEPAGE, &thp_base);
	int err = 0;

	if (!small || !thp)
		return fail("mmap 1 GiB", -errno);
	bench_metric("pin_1g_4k", libpin_round(ctx, small, len), "ms");
	unwatch_wait(ctx);
	if (huge_vs_small(ctx, thp, small, "thp") < 0)
		err = fail("pin 1 GiB of THP", -ENOMEM);
	munmap(thp_base, len + HUGE_2M);
	if (!err && hugetlb_reserve((long)npages) == (long)npages) {
		char *h = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (h == MAP_FAILED) {
			err = fail("mmap 1 GiB MAP_HUGETLB", -errno);
		} else {
			memset(h, 1, len);
			if (huge_vs_small(ctx, h, small, "hugetlb") < 0)
				err = fail("pin 1 GiB of hugetlb", -ENOMEM);
			munmap(h, len);
		}
		hugetlb_release((long)npages);
	} else if (!err) {
		fprintf(stderr, "bench-pin: no pin_1g_hugetlb_vs_4k_x: %s could not grow by %zu\n",
			NR_HUGEPAGES, npages);
	}
	munmap(small_base, len + HUGE_2M);
	return err;
}

static int bench_hit(struct pin_ctx *ctx)
{
	static struct pin_range *held[HIT_BATCH];
	const size_t len = 1 << 20;
	struct pin_range *r;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return fail("mmap", -errno);
	int err = pin_range_get(ctx, p, len, &r);
	if (err < 0)
		return fail("pin_range_get", err);
	pin_range_put(r);
	uint64_t t0 = bench_now_ns();
	for (int i = 0; i < sz.hit_loops; i++) {
		pin_range_get(ctx, p + 4096, 8192, &r);
		pin_range_put(r);
	}
	bench_metric("pin_hit_get_put", (double)(bench_now_ns() - t0) / sz.hit_loops, "ns");
	/* The lookup alone: gets in a row, the puts outside the clock. */
	uint64_t total = 0;
	for (int k = 0; k < sz.hit_loops / HIT_BATCH; k++) {
		uint64_t t1 = bench_now_ns();
		for (int i = 0; i < HIT_BATCH; i++)
			pin_range_get(ctx, p + 4096, 8192, &held[i]);
		total += bench_now_ns() - t1;
		for (int i = 0; i < HIT_BATCH; i++)
			pin_range_put(held[i]);
	}
	bench_metric("pin_hit_lookup", (double)total / sz.hit_loops, "ns");
	pin_ctx_invalidate(ctx, p, len);
	munmap(p, len);
	return 0;
}

static int bench_invalidate(struct pin_ctx *ctx)
{
	double gone[INVAL_LOOPS], call[INVAL_LOOPS], plain[INVAL_LOOPS];
	const size_t len = 64 * 1024, total = (size_t)(sz.inval_loops + 1) * len;
	char *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *q = base + (size_t)sz.inval_loops * len;

	if (base == MAP_FAILED)
		return fail("mmap", -errno);
	memset(base, 1, total);
	/* A range of its own each round: a pin of a range discarded a moment
	 * ago is not cached (PIN_REMOVE_RACE_NS). */
	for (int i = 0; i < sz.inval_loops; i++) {
		char *p = base + (size_t)i * len;
		struct pin_range *r;
		int err = pin_range_get(ctx, p, len, &r);
		if (err < 0)
			return fail("pin_range_get", err);
		if (r->uncached)
			return fail("a fresh range was not cached", -EAGAIN);
		uint64_t t0 = bench_now_ns();
		madvise(p + 4096, 4096, MADV_DONTNEED);
		uint64_t t1 = bench_now_ns();
		/* The handle held keeps the entry readable: the monitor thread
		 * marks it stale when it applies the event. */
		while (!pin_range_stale(r))
			;
		uint64_t t2 = bench_now_ns();
		pin_range_put(r);
		q[0] = 1;
		uint64_t t3 = bench_now_ns();
		madvise(q, 4096, MADV_DONTNEED);
		plain[i] = (double)(bench_now_ns() - t3) / 1e3;
		call[i] = (double)(t1 - t0) / 1e3;
		gone[i] = (double)(t2 - t1) / 1e3;
	}
	bench_metric("pin_invalidate_after_madvise", bench_median(gone, sz.inval_loops), "us");
	bench_metric("madvise_dontneed_watched", bench_median(call, sz.inval_loops), "us");
	bench_metric("madvise_dontneed_unwatched", bench_median(plain, sz.inval_loops), "us");
	munmap(base, total);
	return 0;
}

int main(int argc, char **argv)
{
	struct pin_ctx_opts o = { .sz = sizeof(o), .backend = PIN_BACKEND_IO_URING };
	struct pin_ctx *ctx;
	int err;

	if (bench_smoke(argc, argv))
		sz = smoke;
	err = pin_ctx_new(&o, &ctx);

	if (err < 0)
		return fail("pin_ctx_new", err);
	int status = bench_1g(ctx) || bench_huge(ctx) || bench_hit(ctx) || bench_invalidate(ctx);
	pin_ctx_free(ctx);
	return status;
}
