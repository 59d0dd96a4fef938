// SPDX-License-Identifier: MIT
/*
 * Issue 18: pinning memory that is still being restored lazily.  A 256 MiB
 * anonymous region is served by uffdd from a memfd (background push on, as
 * in a restore), and pinned through the io_uring backend the moment it is
 * handed over (lazy); the same 256 MiB read into place first is the
 * baseline (resident).  The pin's context is the client's (pin_client_opts
 * ctx), so that a miss may ask uffdd to place the pages first.
 * pin_256m_lazy_vs_resident_x is lazy / resident, medians of argv[1] rounds
 * (default 5); the session's faults during the lazy pin go with it.  The
 * floor of any userfaultfd restore is one UFFDIO_COPY of the whole range
 * from the mapped source, then the pin (bulk): pin_256m_lazy_vs_bulk_x.  With
 * --smoke, one round over 64 MiB (the metric names keep "256m").
 * pin_256m_zero_fill is the floor of any restore at all, data or not: the
 * pin of 256 MiB of fresh anonymous memory, whose pages the kernel allocates
 * and zeroes as it pins (no byte of data, no userfaultfd); its ratio to the
 * resident pin, pin_256m_zero_fill_vs_resident_x, is the least that
 * pin_256m_lazy_vs_resident_x can be on this machine.
 * pin_256m_hit_session is a cache hit (get and put) of the whole range while
 * the session serves it (its event log read first), pin_256m_hit the same of
 * resident memory no session serves; pin_hit_session_vs_plain_x their ratio.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin.h"

#define BYTES	       (256ull << 20)
#define SMOKE_BYTES    (64ull << 20)
#define MAX_ROUNDS     64
#define DEFAULT_ROUNDS 5
/* Hits timed per round (tens of ms): enough for a stable mean. */
#define HIT_LOOPS 200000

static size_t page;
static uint64_t bytes = BYTES;
static struct bench_uffdd ud;

static uint64_t word_of(uint64_t i)
{
	return i * 0x9e3779b97f4a7c15ull | 1;
}

/* The pages' source: every page different, none zero. */
static int make_source(void)
{
	int fd = memfd_create("bench-pinlazy", MFD_CLOEXEC);

	if (fd < 0 || ftruncate(fd, (off_t)bytes) < 0)
		bench_die("memfd", errno);
	uint64_t *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		bench_die("mmap of the source", errno);
	for (uint64_t i = 0; i < bytes / 8; i++)
		p[i] = word_of(i);
	munmap(p, bytes);
	return fd;
}

/* The pages whose first word is not the source's. */
static uint64_t check(const uint64_t *p)
{
	uint64_t bad = 0;

	for (uint64_t i = 0; i < bytes / 8; i += page / 8)
		bad += p[i] != word_of(i);
	return bad;
}

static double pin_once(struct pin_ctx *ctx, void *p)
{
	struct pin_range *r;
	uint64_t t0 = bench_now_ns();
	int err = pin_range_get(ctx, p, bytes, &r);

	if (err < 0)
		bench_die("pin_range_get", err);
	double ms = (double)(bench_now_ns() - t0) / 1e6;
	pin_range_put(r);
	/* The next round pins anew. */
	if ((err = pin_ctx_invalidate(ctx, p, bytes)) != 1)
		bench_die("pin_ctx_invalidate", err < 0 ? err : EPROTO);
	return ms;
}

static uint64_t hits_of(struct pin_ctx *ctx)
{
	struct pin_ctx_stats st = { .sz = sizeof(st) };
	int err = pin_ctx_stats(ctx, &st);

	if (err < 0)
		bench_die("pin_ctx_stats", err);
	return st.hits;
}

/* Cache hits over the whole range at p, every one a hit: mean ns of a get
 * and its put. */
static double hits(struct pin_ctx *ctx, void *p)
{
	struct pin_range *r;
	int err = pin_range_get(ctx, p, bytes, &r);

	if (err < 0)
		bench_die("pin_range_get", err);
	pin_range_put(r);
	uint64_t h0 = hits_of(ctx), t0 = bench_now_ns();
	for (int i = 0; i < HIT_LOOPS; i++) {
		if ((err = pin_range_get(ctx, p, bytes, &r)) < 0)
			bench_die("pin_range_get (hit)", err);
		pin_range_put(r);
	}
	double ns = (double)(bench_now_ns() - t0) / HIT_LOOPS;
	if (hits_of(ctx) - h0 != HIT_LOOPS)
		bench_die("a look-up that should hit missed", EPROTO);
	if ((err = pin_ctx_invalidate(ctx, p, bytes)) != 1)
		bench_die("pin_ctx_invalidate", err < 0 ? err : EPROTO);
	return ns;
}

static double round_resident(struct pin_ctx *ctx, int src, double *ret_hit_ns)
{
	char *p = bench_map_anon(bytes);

	for (uint64_t off = 0; off < bytes;) {
		ssize_t n = pread(src, p + off, bytes - off, (off_t)off);
		if (n <= 0)
			bench_die("pread", n < 0 ? errno : EIO);
		off += (uint64_t)n;
	}
	double ms = pin_once(ctx, p);
	if (check((const uint64_t *)p))
		bench_die("resident pages", EIO);
	*ret_hit_ns = hits(ctx, p);
	munmap(p, bytes);
	return ms;
}

static double round_lazy(struct pin_ctx *ctx, int src, uint64_t *ret_faults, double *ret_hit_ns)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = {
		.sz = sizeof(co), .socket = ud.sock, .name = "bench-pinlazy", .ctx = ctx
	};
	struct pin_client_stats st;
	struct pin_client *c;
	struct pin_uffd *u;
	char *p = bench_map_anon(bytes);
	int r;

	struct pin_client_region reg = {
		.sz = sizeof(reg),
		.addr = p,
		.len = bytes,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.fd = src,
	};
	if ((r = pin_uffd_new(&uo, &u)) < 0 || (r = pin_client_connect(&co, &c)) < 0 ||
	    (r = pin_client_handover(c, u)) < 0 || (r = pin_client_region_add(c, &reg)) < 0)
		bench_die("restore", r);
	double ms = pin_once(ctx, p);
	if ((r = pin_client_stats(c, 0, &st)) < 0)
		bench_die("pin_client_stats", r);
	*ret_faults = st.faults;
	if (check((const uint64_t *)p))
		bench_die("lazy pages", EIO);
	*ret_hit_ns = hits(ctx, p);
	if ((r = pin_client_goodbye(c)) < 0)
		bench_die("pin_client_goodbye", r);
	pin_client_free(c);
	pin_uffd_free(u);
	munmap(p, bytes);
	return ms;
}

static double round_bulk(struct pin_ctx *ctx, int src)
{
	struct pin_uffd *u;
	char *p = bench_map_anon(bytes);
	int r;

	const void *from = mmap(NULL, bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, src, 0);
	if (from == MAP_FAILED)
		bench_die("mmap of the source", errno);
	if ((r = pin_uffd_new(NULL, &u)) < 0 ||
	    (r = pin_uffd_register(u, p, bytes, PIN_UFFD_REGISTER_MISSING, NULL)) < 0)
		bench_die("userfaultfd", r);
	uint64_t t0 = bench_now_ns();
	if ((r = pin_uffd_copy(u, p, from, bytes, 0, NULL)) < 0)
		bench_die("UFFDIO_COPY", r);
	double ms = (double)(bench_now_ns() - t0) / 1e6 + pin_once(ctx, p);
	if (check((const uint64_t *)p))
		bench_die("bulk pages", EIO);
	pin_uffd_free(u);
	munmap((void *)from, bytes);
	munmap(p, bytes);
	return ms;
}

/* The floor: pin memory no page of which exists yet. */
static double round_zero_fill(struct pin_ctx *ctx)
{
	char *p = bench_map_anon(bytes);
	double ms = pin_once(ctx, p);

	for (uint64_t off = 0; off < bytes; off += page)
		if (p[off])
			bench_die("fresh pages", EIO);
	munmap(p, bytes);
	return ms;
}

int main(int argc, char **argv)
{
	unsigned int rounds = DEFAULT_ROUNDS;
	double lazy[MAX_ROUNDS], res[MAX_ROUNDS], bulk[MAX_ROUNDS], faults[MAX_ROUNDS];
	double hit_session[MAX_ROUNDS], hit[MAX_ROUNDS], zero[MAX_ROUNDS];
	struct pin_ctx_opts po = {
		.sz = sizeof(po),
		.backend = PIN_BACKEND_IO_URING,
		/* The region is uffdd's: the client's stale notices stand in. */
		.flags = PIN_CTX_NO_MONITOR,
	};
	struct pin_ctx *ctx;
	int r;

	page = (size_t)sysconf(_SC_PAGESIZE);
	if (bench_smoke(argc, argv)) {
		rounds = 1;
		bytes = SMOKE_BYTES;
	} else if (argc > 1) {
		rounds = (unsigned int)atoi(argv[1]);
		if (rounds < 1 || rounds > MAX_ROUNDS)
			bench_die("rounds (1 to 64)", EINVAL);
	}
	if ((r = pin_ctx_new(&po, &ctx)) < 0)
		bench_die("pin_ctx_new (io_uring)", r);
	int src = make_source();
	bench_uffdd_start(&ud);
	for (unsigned int i = 0; i < rounds; i++) {
		uint64_t f;
		res[i] = round_resident(ctx, src, &hit[i]);
		bulk[i] = round_bulk(ctx, src);
		zero[i] = round_zero_fill(ctx);
		lazy[i] = round_lazy(ctx, src, &f, &hit_session[i]);
		faults[i] = (double)f;
	}
	bench_uffdd_stop(&ud);
	double l = bench_median(lazy, rounds), s = bench_median(res, rounds),
	       b = bench_median(bulk, rounds), z = bench_median(zero, rounds);
	bench_metric("pin_256m_lazy", l, "ms");
	bench_metric("pin_256m_resident", s, "ms");
	bench_metric("pin_256m_bulk", b, "ms");
	bench_metric("pin_256m_zero_fill", z, "ms");
	bench_metric("pin_256m_zero_fill_vs_resident_x", z / s, "x");
	bench_metric("pin_256m_lazy_vs_zero_fill_x", l / z, "x");
	bench_metric("pin_256m_lazy_vs_resident_x", l / s, "x");
	bench_metric("pin_256m_lazy_vs_bulk_x", l / b, "x");
	bench_metric("pin_256m_lazy_faults", bench_median(faults, rounds), "faults");
	double hs = bench_median(hit_session, rounds), hp = bench_median(hit, rounds);
	bench_metric("pin_256m_hit_session", hs, "ns");
	bench_metric("pin_256m_hit", hp, "ns");
	bench_metric("pin_hit_session_vs_plain_x", hs / hp, "x");
	pin_ctx_free(ctx);
	close(src);
	return 0;
}
