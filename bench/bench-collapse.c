// SPDX-License-Identifier: MIT
/*
 * Huge pages back after a lazy restore (issue 14, item 3): a random-access
 * pass over a 1 GiB region (one word of every page, in a random order) in a
 * process restored through uffdd and then collapsed
 * (pin_image_collapse_region()), against the same pass in a process that
 * was never restored (the region MADV_HUGEPAGE and written in place, with
 * the huge pages the kernel gave it), and in a restored process left with the small pages of
 * the restore (the figure before collapse existed).  Each process runs
 * PASSES passes; a figure is their median.  Ratios above 1: slower than the
 * never-restored process.  With --smoke, 256 MiB and one pass.  The daemon
 * is $UFFDD, else the uffdd built next to this benchmark.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin.h"

#define STATE_ADDR	  0x540000000000ull /* 2 MiB aligned */
#define STATE_BYTES	  (1ull << 30)
#define SMOKE_STATE_BYTES (256ull << 20)
#define PASSES		  8
#define PAGE		  4096ull
#define HUGE_KB		  2048 /* a PMD huge page of x86-64 */

enum kind { NATIVE, RESTORED_COLLAPSED, RESTORED_SMALL };

struct result {
	double pass_ms;	 /* median of the passes */
	double huge_pct; /* of the region, AnonHugePages */
	uint64_t bad;	 /* words not what was checkpointed */
	int collapsed;	 /* runs pin_image_collapse_region() made huge */
};

static uint64_t state_bytes = STATE_BYTES, npages;
static unsigned int passes = PASSES;
static uint32_t *order; /* a random permutation of the pages */
static char ck[96];
static struct bench_uffdd ud;

static uint64_t word_of(uint64_t a)
{
	return a * 0x9e3779b97f4a7c15ull | 1;
}

/* Map the region, THP eligible (MADV_HUGEPAGE: under transparent_hugepage
 * "madvise" nothing else is), and write every word of it: what a
 * never-restored process has, and what the checkpoint holds. */
static uint64_t *map_written(void)
{
	void *want = (void *)(uintptr_t)STATE_ADDR;
	uint64_t *p = mmap(want, state_bytes, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (p == MAP_FAILED || (void *)p != want)
		bench_die("mmap of the state", p == MAP_FAILED ? errno : EEXIST);
	if (madvise(p, state_bytes, MADV_HUGEPAGE) < 0)
		bench_die("madvise(MADV_HUGEPAGE)", errno);
	for (uint64_t i = 0; i < state_bytes / 8; i++)
		p[i] = word_of(STATE_ADDR + i * 8);
	return p;
}

static void make_checkpoint(void)
{
	uint64_t *p = map_written();
	struct pin_image_write_opts o = { .sz = sizeof(o), .addr = STATE_ADDR, .len = state_bytes };
	int r = pin_image_write(0, ck, &o);

	if (r < 0)
		bench_die("pin_image_write", r);
	munmap(p, state_bytes);
}

/* AnonHugePages of the region in /proc/self/smaps, as a share of it. */
static double huge_pct(void)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool inside = false;
	long kb = 0, v;

	if (!f)
		bench_die("/proc/self/smaps", errno);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long start, end;

		if (sscanf(line, "%llx-%llx ", &start, &end) == 2)
			inside = start >= STATE_ADDR && end <= STATE_ADDR + state_bytes;
		else if (inside && sscanf(line, "AnonHugePages: %ld kB", &v) == 1)
			kb += v;
	}
	fclose(f);
	return 100.0 * (double)kb / (double)(state_bytes >> 10);
}

/*
 * The passes: one word of every page, in the random order, each read's
 * address depending on the word read before (plus its difference from what
 * it should be, 0), so that the reads go one after the other and every one
 * pays its TLB miss: what huge pages save.
 */
static void passes_over(struct result *res)
{
	const volatile uint64_t *p = (const uint64_t *)(uintptr_t)STATE_ADDR;
	double t[PASSES];
	uint64_t diff = 0;

	for (unsigned int k = 0; k < passes; k++) {
		uint64_t t0 = bench_now_ns();
		for (uint64_t n = 0; n < npages; n++) {
			uint64_t i = (order[n] + diff) % npages, a = STATE_ADDR + i * PAGE;

			diff = p[i * PAGE / 8] ^ word_of(a);
			res->bad += diff != 0;
		}
		t[k] = (double)(bench_now_ns() - t0) / 1e6;
	}
	res->pass_ms = bench_median(t, passes);
}

/* A restore through uffdd (faults and push), complete before the passes. */
static void restore(bool collapse, struct result *res)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_image *img;
	struct pin_client *c;
	struct pin_uffd *u;

	bench_restore_start(ck, ud.sock, &uo, 0, &img, &u, &c);
	int r = pin_client_wait_populated(c, (void *)(uintptr_t)STATE_ADDR, state_bytes, 0);
	if (r < 0)
		bench_die("pin_client_wait_populated", r);
	if (collapse && (res->collapsed = pin_image_collapse_region(img, 0)) < 0)
		bench_die("pin_image_collapse_region", res->collapsed);
	pin_client_free(c);
	pin_image_free(img);
	pin_uffd_free(u);
}

/* In the child: the process of the kind, and its passes. */
static void measured(const void *arg, void *out)
{
	enum kind k = *(const enum kind *)arg;
	struct result *res = out;

	if (k == NATIVE)
		map_written();
	else
		restore(k == RESTORED_COLLAPSED, res);
	res->huge_pct = huge_pct();
	passes_over(res);
}

/* One process of the kind, fresh, as the restored process would be. */
static struct result run_one(enum kind k)
{
	struct result res = { 0 };
	int r = bench_in_child(measured, &k, &res, sizeof(res));

	if (r < 0)
		bench_die("a measured process failed", r);
	if (res.bad)
		bench_die("a word was not what was checkpointed", EIO);
	return res;
}

int main(int argc, char **argv)
{
	if (bench_smoke(argc, argv)) {
		state_bytes = SMOKE_STATE_BYTES;
		passes = 1;
	}
	npages = state_bytes / PAGE;
	order = bench_shuffled(npages, 0x9e3779b97f4a7c15ull);
	bench_uffdd_start(&ud);
	snprintf(ck, sizeof(ck), "%s/ck", ud.dir);
	make_checkpoint();

	struct result native = run_one(NATIVE), huge = run_one(RESTORED_COLLAPSED);
	struct result small = run_one(RESTORED_SMALL);

	bench_metric("post_restore_native_pass", native.pass_ms, "ms");
	bench_metric("post_restore_native_anon_huge", native.huge_pct, "%");
	bench_metric("post_restore_collapsed_pass", huge.pass_ms, "ms");
	bench_metric("post_restore_collapsed_anon_huge", huge.huge_pct, "%");
	bench_metric("post_restore_collapsed_runs", huge.collapsed, "runs");
	bench_metric("post_restore_small_pass", small.pass_ms, "ms");
	bench_metric("post_restore_small_anon_huge", small.huge_pct, "%");
	/* The goal (issue 14): at most 1.1. */
	bench_metric("post_restore_access_vs_native", huge.pass_ms / native.pass_ms, "x");
	bench_metric("post_restore_access_small_pages_vs_native", small.pass_ms / native.pass_ms,
		     "x");

	bench_checkpoint_remove(ck);
	bench_uffdd_stop(&ud);
	free(order);
	return 0;
}
