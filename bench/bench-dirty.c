// SPDX-License-Identifier: MIT
/*
 * Dirty tracking (issue 17), 1 GiB of anonymous memory in small pages
 * (MADV_NOHUGEPAGE: tracking is per 4 KiB page), all of it populated first:
 *  - dirty_track_write_overhead_x: random 4 KiB writes (as many as there
 *    are pages, the same sequence each time) under uffdd's wp-async
 *    tracking ÷ the same writes untracked; and _syncwp_x: under uffdd's
 *    synchronous WP mode, each first write a fault the daemon serves.
 *    Every round starts with all pages protected (a DirtyGet with reset).
 *    dirty_bare_fault_write_overhead_x: the floor, the same writes where
 *    each first write takes the kernel's bare write fault (the page
 *    write-protected by a fork whose child exited: do_wp_page() reuses it,
 *    the path a wp-async fault takes after clearing the uffd-wp bit).  The
 *    three run interleaved in each round, over their own 1 GiB each, and a
 *    "# round" line gives each round's figures.  The minor faults each took
 *    (getrusage) are counted: one per first write, or the kernel took a
 *    slower path.  _first_write_us: what tracking adds per first write to
 *    a page (the writes to pages written before in the round cost the same
 *    tracked or not), the 1.5 us (async) against 25 us (a
 *    synchronous fault), beside the bare fault's.
 *  - dirty_scan_vs_softdirty_x: finding the pages written since the last
 *    look (5 % of them, random) and arming for the next: PAGEMAP_SCAN with
 *    its own re-protection (pin_pagemap_scan_written(), PIN_PAGEMAP_RESET)
 *    ÷ CRIU's soft-dirty method (read /proc/self/pagemap for bit 55, then
 *    clear_refs 4).  A kernel built without CONFIG_MEM_SOFT_DIRTY still
 *    walks the page tables for both, but sets no bit, protects no page and
 *    flushes no TLB: the figure is then a lower bound of the method's cost,
 *    the ratio an upper bound (dirty_softdirty_in_kernel 0 says so).
 *  - dirty_get_wpasync_ms: uffdd's DirtyGet with reset of the same 5 %,
 *    which records before it re-protects (one UFFDIO_WRITEPROTECT a run).
 * Medians of ROUNDS rounds; --smoke: 256 MiB, one round.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin.h"

#define BYTES	    (1ull << 30)
#define SMOKE_BYTES (256ull << 20)
#define ROUNDS	    5
/* Of the pages, the share written between two scans. */
#define SCAN_WRITTEN_PCT 5
/* /proc/PID/pagemap: the soft-dirty bit (Documentation/admin-guide/mm/soft-dirty.rst). */
#define PM_SOFT_DIRTY (1ull << 55)
/* Pagemap entries read per pread(2): 512 KiB. */
#define PM_CHUNK 65536
/* Written ranges taken per PAGEMAP_SCAN call. */
#define SCAN_RANGES 4096

static size_t page, npages;
static uint64_t bytes = BYTES;
static unsigned int rounds = ROUNDS;
static uint32_t *order; /* the random pages written, in order */
static struct bench_uffdd ud;

/* bytes of anonymous memory in small pages, every page populated. */
static uint8_t *map_populated(void)
{
	uint8_t *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		bench_die("mmap", errno);
	if (madvise(p, bytes, MADV_NOHUGEPAGE) < 0)
		bench_die("madvise(MADV_NOHUGEPAGE)", errno);
	memset(p, 1, bytes);
	return p;
}

/* The write workload: a 4 KiB page written at each index of order; ms. */
static double write_all(uint8_t *p, uint8_t value)
{
	uint64_t t0 = bench_now_ns();

	for (size_t i = 0; i < npages; i++)
		memset(p + (size_t)order[i] * page, value, page);
	return (double)(bench_now_ns() - t0) / 1e6;
}

struct tracked {
	struct pin_uffd *u;
	struct pin_client *c;
	uint8_t *bm;
};

/* p handed to our uffdd as one WP region, tracked async or through faults. */
static struct tracked track(uint8_t *p, bool async)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = async ? PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_UNPOPULATED
				  : PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP,
	};
	struct pin_client_opts co = { .sz = sizeof(co), .socket = ud.sock, .name = "bench-dirty" };
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = p,
		.len = bytes,
		.mode = PIN_UFFD_REGISTER_WP,
		.flags = PIN_CLIENT_REGION_NO_PUSH,
		.fd = -1,
	};
	struct tracked t = { .bm = malloc(npages / 8) };
	int e;

	if (!t.bm)
		bench_die("malloc", ENOMEM);
	if ((e = pin_uffd_new(&uo, &t.u)) < 0 || (e = pin_client_connect(&co, &t.c)) < 0 ||
	    (e = pin_client_handover(t.c, t.u)) < 0 || (e = pin_client_region_add(t.c, &r)) < 0)
		bench_die(async ? "wp-async region" : "WP region", e);
	return t;
}

/* DirtyGet with reset of the whole region: the pages it found; ms in *ret_ms. */
static int dirty_reset(struct tracked *t, uint8_t *p, double *ret_ms)
{
	uint64_t t0 = bench_now_ns();
	int n = pin_client_dirty_get(t->c, p, bytes, PIN_CLIENT_DIRTY_RESET, t->bm, npages / 8);

	if (n < 0)
		bench_die("pin_client_dirty_get", n);
	if (ret_ms)
		*ret_ms = (double)(bench_now_ns() - t0) / 1e6;
	return n;
}

static void untrack(struct tracked *t)
{
	pin_client_free(t->c);
	pin_uffd_free(t->u);
	free(t->bm);
}

/* Minor faults of this process so far. */
static long minflt(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		bench_die("getrusage", errno);
	return ru.ru_minflt;
}

/* Every page of this process not MADV_DONTFORK write-protected the way
 * fork(2) leaves them: a child that exits at once.  The first write to
 * each then takes the kernel's bare write fault, the page reused (its only
 * user), not copied: do_wp_page()'s path that wp-async takes too. */
static void cow_arm(void)
{
	pid_t c = fork();
	int st;

	if (c < 0)
		bench_die("fork", errno);
	if (c == 0)
		_exit(0);
	if (waitpid(c, &st, 0) != c)
		bench_die("waitpid", errno);
}

/* The write workload over p: ms, and the minor faults it took in *faults. */
static double timed_writes(uint8_t *p, uint8_t value, double *faults)
{
	long f0 = minflt();
	double ms = write_all(p, value);

	*faults = (double)(minflt() - f0);
	return ms;
}

/* Median ms of the write workload over p, tracked by t. */
static double writes_ms(uint8_t *p, struct tracked *t)
{
	double ms[ROUNDS];

	for (unsigned int r = 0; r < rounds; r++) {
		dirty_reset(t, p, NULL);
		ms[r] = write_all(p, (uint8_t)(r + 2));
	}
	return bench_median(ms, rounds);
}

/* The distinct pages among the first n of order. */
static size_t distinct(size_t n)
{
	uint8_t *seen = calloc(npages, 1);
	size_t k = 0;

	if (!seen)
		bench_die("calloc", ENOMEM);
	for (size_t i = 0; i < n; i++)
		k += !seen[order[i]]++;
	free(seen);
	return k;
}

/* map_populated(), kept out of the children cow_arm() makes (its pages
 * stay writable). */
static uint8_t *map_unforked(void)
{
	uint8_t *p = map_populated();

	if (madvise(p, bytes, MADV_DONTFORK) < 0)
		bench_die("madvise(MADV_DONTFORK)", errno);
	return p;
}

/* The three workloads of a round, the one to run k-th: rotating, so that
 * none is always the first after the re-arming. */
enum { UNTRACKED, WPASYNC, BARE, KINDS };

/*
 * Untracked, wp-async and bare-fault writes interleaved in each round, each
 * over its own populated 1 GiB: the ratios are of the same moments of this
 * loaded machine.  Then synchronous WP, slower by far.
 */
static void bench_write_overhead(void)
{
	uint8_t *mem[KINDS] = { map_unforked(), map_unforked(), map_populated() };
	double ms[KINDS][ROUNDS], faults[KINDS][ROUNDS], med[KINDS];
	struct tracked t = track(mem[WPASYNC], true);
	double first = (double)distinct(npages);

	for (unsigned int r = 0; r < rounds; r++) {
		dirty_reset(&t, mem[WPASYNC], NULL);
		cow_arm();
		for (unsigned int k = 0; k < KINDS; k++) {
			unsigned int w = (r + k) % KINDS;

			ms[w][r] = timed_writes(mem[w], (uint8_t)(r + 2), &faults[w][r]);
		}
		printf("# round %u: untracked %.1f ms (%.0f faults), wp-async %.1f ms (%.0f), "
		       "bare fault %.1f ms (%.0f): wp-async %.3fx, bare %.3fx; per first write "
		       "wp-async %.3f us, bare %.3f us\n",
		       r, ms[UNTRACKED][r], faults[UNTRACKED][r], ms[WPASYNC][r],
		       faults[WPASYNC][r], ms[BARE][r], faults[BARE][r],
		       ms[WPASYNC][r] / ms[UNTRACKED][r], ms[BARE][r] / ms[UNTRACKED][r],
		       (ms[WPASYNC][r] - ms[UNTRACKED][r]) * 1e3 / first,
		       (ms[BARE][r] - ms[UNTRACKED][r]) * 1e3 / first);
	}
	untrack(&t);
	for (unsigned int w = 0; w < KINDS; w++) {
		munmap(mem[w], bytes);
		med[w] = bench_median(ms[w], rounds);
	}
	uint8_t *p = map_populated();
	t = track(p, false);
	double sync = writes_ms(p, &t);
	untrack(&t);
	munmap(p, bytes);

	bench_metric("dirty_write_untracked_ms", med[UNTRACKED], "ms");
	bench_metric("dirty_write_wpasync_ms", med[WPASYNC], "ms");
	bench_metric("dirty_write_bare_fault_ms", med[BARE], "ms");
	bench_metric("dirty_write_syncwp_ms", sync, "ms");
	bench_metric("dirty_track_write_overhead_x", med[WPASYNC] / med[UNTRACKED], "x");
	/* The floor: the same first writes, each a bare kernel write fault. */
	bench_metric("dirty_bare_fault_write_overhead_x", med[BARE] / med[UNTRACKED], "x");
	bench_metric("dirty_track_write_overhead_syncwp_x", sync / med[UNTRACKED], "x");
	bench_metric("dirty_first_writes", first, "pages");
	bench_metric("dirty_write_faults_untracked", bench_median(faults[UNTRACKED], rounds),
		     "faults");
	bench_metric("dirty_write_faults_wpasync", bench_median(faults[WPASYNC], rounds), "faults");
	bench_metric("dirty_write_faults_bare", bench_median(faults[BARE], rounds), "faults");
	/* ms over first writes, in us. */
	bench_metric("dirty_first_write_wpasync_us", (med[WPASYNC] - med[UNTRACKED]) * 1e3 / first,
		     "us");
	bench_metric("dirty_first_write_bare_fault_us", (med[BARE] - med[UNTRACKED]) * 1e3 / first,
		     "us");
	bench_metric("dirty_first_write_syncwp_us", (sync - med[UNTRACKED]) * 1e3 / first, "us");
	/* 1: a wp-async first write costs what any write fault costs here. */
	bench_metric("dirty_first_write_wpasync_vs_bare_x",
		     (med[WPASYNC] - med[UNTRACKED]) / (med[BARE] - med[UNTRACKED]), "x");
}

/* Write the first SCAN_WRITTEN_PCT % of order's pages; how many. */
static size_t write_some(uint8_t *p, uint8_t value)
{
	size_t n = npages * SCAN_WRITTEN_PCT / 100;

	for (size_t i = 0; i < n; i++)
		p[(size_t)order[i] * page] = value;
	return n;
}

/* Pages written per PAGEMAP_SCAN with re-protection; ms. */
static double scan_pagemap(int pm, uint8_t *p, struct pin_pagemap_range *out, size_t want)
{
	uint64_t at = (uintptr_t)p, end = at + bytes, found = 0;
	uint64_t t0 = bench_now_ns();

	while (at < end) {
		int n = pin_pagemap_scan_written(pm, at, end - at, PIN_PAGEMAP_RESET, out,
						 SCAN_RANGES, &at);
		if (n < 0)
			bench_die("pin_pagemap_scan_written", n);
		for (int i = 0; i < n; i++)
			found += out[i].len / page;
	}
	double ms = (double)(bench_now_ns() - t0) / 1e6;
	if (found != want) {
		fprintf(stderr, "bench-dirty: PAGEMAP_SCAN found %ju pages, not %zu\n",
			(uintmax_t)found, want);
		exit(1);
	}
	return ms;
}

static void clear_refs(int fd)
{
	if (pwrite(fd, "4", 1, 0) != 1)
		bench_die("write 4 to /proc/self/clear_refs", errno);
}

/* Whether this kernel keeps soft-dirty bits: a page written after
 * clear_refs 4 has bit 55 in its pagemap entry. */
static bool softdirty_works(int pm, int refs)
{
	volatile uint8_t *p =
		mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t e = 0;

	if (p == MAP_FAILED)
		bench_die("mmap", errno);
	p[0] = 1;
	clear_refs(refs);
	p[0] = 2;
	if (pread(pm, &e, sizeof(e), (off_t)((uintptr_t)p / page * sizeof(e))) != sizeof(e))
		bench_die("pread /proc/self/pagemap", errno);
	munmap((void *)p, page);
	return e & PM_SOFT_DIRTY;
}

/* Soft-dirty pages per /proc/self/pagemap, then clear_refs 4; ms.  want 0:
 * not checked (no soft-dirty in this kernel). */
static double scan_softdirty(int pm, int refs, uint8_t *p, uint64_t *buf, size_t want)
{
	uint64_t first = (uintptr_t)p / page, found = 0;
	uint64_t t0 = bench_now_ns();

	for (size_t i = 0; i < npages; i += PM_CHUNK) {
		size_t n = npages - i < PM_CHUNK ? npages - i : PM_CHUNK;
		ssize_t got = pread(pm, buf, n * 8, (off_t)((first + i) * 8));
		if (got != (ssize_t)(n * 8))
			bench_die("pread /proc/self/pagemap", got < 0 ? errno : EIO);
		for (size_t k = 0; k < n; k++)
			found += !!(buf[k] & PM_SOFT_DIRTY);
	}
	clear_refs(refs);
	double ms = (double)(bench_now_ns() - t0) / 1e6;
	if (want && found != want) {
		fprintf(stderr, "bench-dirty: soft-dirty found %ju pages, not %zu\n",
			(uintmax_t)found, want);
		exit(1);
	}
	return ms;
}

static void bench_scan(void)
{
	struct pin_pagemap_range *out = malloc(SCAN_RANGES * sizeof(*out));
	uint64_t *buf = malloc(PM_CHUNK * sizeof(*buf));
	double pm_ms[ROUNDS], sd_ms[ROUNDS], get_ms[ROUNDS];
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int refs = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	size_t want = distinct(npages * SCAN_WRITTEN_PCT / 100);

	if (!out || !buf)
		bench_die("malloc", ENOMEM);
	if (pm < 0 || refs < 0)
		bench_die("open /proc/self/pagemap, clear_refs", errno);

	/* Soft-dirty: populated memory, armed, then the rounds. */
	bool sd = softdirty_works(pm, refs);
	uint8_t *p = map_populated();
	clear_refs(refs);
	for (unsigned int r = 0; r < rounds; r++) {
		write_some(p, (uint8_t)(r + 2));
		sd_ms[r] = scan_softdirty(pm, refs, p, buf, sd ? want : 0);
	}
	munmap(p, bytes);

	/* PAGEMAP_SCAN: the same memory under wp-async, protected. */
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_UNPOPULATED,
	};
	struct pin_uffd *u;
	int e;
	p = map_populated();
	if ((e = pin_uffd_new(&uo, &u)) < 0 ||
	    (e = pin_uffd_register(u, p, bytes, PIN_UFFD_REGISTER_WP, NULL)) < 0 ||
	    (e = pin_uffd_writeprotect(u, p, bytes, PIN_UFFD_WP)) < 0)
		bench_die("wp-async registration", e);
	for (unsigned int r = 0; r < rounds; r++) {
		write_some(p, (uint8_t)(r + 2));
		pm_ms[r] = scan_pagemap(pm, p, out, want);
	}
	pin_uffd_free(u);
	munmap(p, bytes);

	/* uffdd's DirtyGet of a wp-async region. */
	p = map_populated();
	struct tracked t = track(p, true);
	dirty_reset(&t, p, NULL);
	for (unsigned int r = 0; r < rounds; r++) {
		write_some(p, (uint8_t)(r + 2));
		int n = dirty_reset(&t, p, &get_ms[r]);
		if ((size_t)n != want) {
			fprintf(stderr, "bench-dirty: DirtyGet found %d pages, not %zu\n", n, want);
			exit(1);
		}
	}
	untrack(&t);
	munmap(p, bytes);
	close(pm);
	close(refs);
	free(out);
	free(buf);

	double pmm = bench_median(pm_ms, rounds), sdm = bench_median(sd_ms, rounds);
	bench_metric("dirty_scan_pagemap_ms", pmm, "ms");
	bench_metric("dirty_scan_softdirty_ms", sdm, "ms");
	bench_metric("dirty_scan_vs_softdirty_x", pmm / sdm, "x");
	bench_metric("dirty_softdirty_in_kernel", sd, "bool");
	bench_metric("dirty_get_wpasync_ms", bench_median(get_ms, rounds), "ms");
}

int main(int argc, char **argv)
{
	uint64_t seed = 0x2545f4914f6cdd1dull;

	if (bench_smoke(argc, argv)) {
		bytes = SMOKE_BYTES;
		rounds = 1;
	}
	page = (size_t)sysconf(_SC_PAGESIZE);
	npages = bytes / page;
	order = malloc(npages * sizeof(*order));
	if (!order)
		bench_die("malloc", ENOMEM);
	for (size_t i = 0; i < npages; i++)
		order[i] = (uint32_t)(bench_rand(&seed) % npages);
	bench_uffdd_start(&ud);
	bench_write_overhead();
	bench_scan();
	bench_uffdd_stop(&ud);
	free(order);
	return 0;
}
