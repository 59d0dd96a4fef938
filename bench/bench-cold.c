// SPDX-License-Identifier: MIT
/*
 * Issue 14 item 5: a lazy restore of a 256 MiB checkpoint whose pages file
 * is cold (not in the page cache: fsync'd, then POSIX_FADV_DONTNEED, and
 * checked with mincore() before each run), against reading that file once,
 * sequentially, equally cold.  Each restore runs in a fresh child process
 * that maps the region where it was and reads one word of every page, in
 * address order (seq) or a random order (rand), while uffdd serves the
 * faults and pushes the rest; its time is from the start of the restore
 * until every page was read.  The three are interleaved round by round (the
 * machine's load and the disk's caches change under a run), each round's
 * figures printed as a comment, the metrics their medians:
 *  - cold_seq_read_256m: read(2) of the whole file in READ_CHUNK pieces;
 *  - cold_seq_restore_256m, cold_rand_restore_256m;
 *  - cold_rand_vs_sequential_read, cold_seq_vs_sequential_read: each
 *    restore over the read, the same round's (goal: rand <= 1.3).
 * Rounds: argv[1] (default 5); --smoke: one round over 1 MiB (the names keep
 * "256m").  The file is on the file system of /tmp (bench_uffdd_start()'s
 * directory), a disk's: a tmpfs has no cold pages, and the run says
 * `skip:` there.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "bench-common.h"
#include "libpin.h"

#define STATE_ADDR	  0x500000000000ull
#define STATE_BYTES	  (256ull << 20)
#define SMOKE_STATE_BYTES (1ull << 20)
#define DEFAULT_RUNS	  5
/* The sequential read's piece: large enough that the syscalls cost nothing
 * beside the disk, small enough to stay in the CPU's caches. */
#define READ_CHUNK (1u << 20)

struct result {
	double ms;
	uint64_t bad;
};

static size_t page, npages;
static uint64_t state_bytes = STATE_BYTES;
static uint32_t *order_rand; /* a random permutation of the pages */
static char ck[96], pages_path[128];
static struct bench_uffdd ud;

/* Read one word of every page, in order; returns the pages that were wrong. */
static uint64_t touch(bool rnd)
{
	const volatile uint64_t *p = (const uint64_t *)(uintptr_t)STATE_ADDR;
	uint64_t bad = 0;

	for (uint64_t k = 0; k < npages; k++) {
		uint64_t i = rnd ? order_rand[k] : k;
		bad += p[i * page / 8] != bench_state_word(STATE_ADDR + i * page);
	}
	return bad;
}

/* The pages of the file in the page cache (mincore() of a mapping of it). */
static size_t resident(int fd)
{
	size_t n = 0;
	unsigned char *vec = malloc(npages);
	void *m = mmap(NULL, state_bytes, PROT_READ, MAP_SHARED, fd, 0);

	if (!vec || m == MAP_FAILED || mincore(m, state_bytes, vec) < 0)
		bench_die("mmap/mincore of the pages file", vec ? errno : ENOMEM);
	for (size_t i = 0; i < npages; i++)
		n += vec[i] & 1;
	munmap(m, state_bytes);
	free(vec);
	return n;
}

/* Drop the pages file from the page cache, and check that it is gone. */
static void make_cold(void)
{
	int fd = open(pages_path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		bench_die(pages_path, errno);
	/* Dirty pages are not dropped: written back first. */
	if (fsync(fd) < 0)
		bench_die("fsync of the pages file", errno);
	int r = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	if (r)
		bench_die("posix_fadvise DONTNEED of the pages file", r);
	size_t left = resident(fd);
	close(fd);
	if (left) {
		fprintf(stderr, "bench-cold: %zu of %zu pages still cached after DONTNEED\n", left,
			npages);
		bench_die("the pages file is not cold", EBUSY);
	}
}

static double ms(uint64_t a, uint64_t b)
{
	return (double)(b - a) / 1e6;
}

/* The baseline: read the file once from start to end. */
static double seq_read(void)
{
	static char buf[READ_CHUNK];
	int fd = open(pages_path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		bench_die(pages_path, errno);
	uint64_t t0 = bench_now_ns(), got = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			bench_die("read of the pages file", errno);
		if (n == 0)
			break;
		got += (uint64_t)n;
	}
	uint64_t t1 = bench_now_ns();
	close(fd);
	if (got != state_bytes)
		bench_die("the pages file is short", EIO);
	return ms(t0, t1);
}

/* In the child: a lazy restore through uffdd, pushed, touched in order. */
static void restore(const void *arg, void *out)
{
	bool rnd = *(const bool *)arg;
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP |
			    PIN_UFFD_FEATURE_EVENT_REMAP,
	};
	struct result *res = out;
	struct pin_image *img;
	struct pin_client *c;
	struct pin_uffd *u;

	uint64_t t0 = bench_now_ns();
	bench_restore_start(ck, ud.sock, &uo, 0, &img, &u, &c);
	res->bad = touch(rnd);
	res->ms = ms(t0, bench_now_ns());
	pin_client_free(c);
	pin_image_free(img);
	pin_uffd_free(u);
}

static double restore_cold(bool rnd)
{
	struct result res = { 0 };

	make_cold();
	int r = bench_in_child(restore, &rnd, &res, sizeof(res));
	if (r < 0)
		bench_die("a restore failed", r);
	if (res.bad)
		bench_die("a restored page was wrong", EIO);
	return res.ms;
}

int main(int argc, char **argv)
{
	unsigned int runs = bench_runs(argc, argv, DEFAULT_RUNS, &state_bytes, SMOKE_STATE_BYTES);
	double rd[BENCH_MAX_RUNS], seq[BENCH_MAX_RUNS], rnd[BENCH_MAX_RUNS];
	double seq_x[BENCH_MAX_RUNS], rnd_x[BENCH_MAX_RUNS];
	struct statfs fs;

	page = (size_t)sysconf(_SC_PAGESIZE);
	npages = state_bytes / page;
	order_rand = bench_shuffled(npages, 0x9e3779b97f4a7c15ull);
	bench_uffdd_start(&ud);
	if (statfs(ud.dir, &fs) < 0)
		bench_die("statfs", errno);
	if (fs.f_type == TMPFS_MAGIC) {
		printf("skip: %s is on a tmpfs: nothing is cold there\n", ud.dir);
		bench_uffdd_stop(&ud);
		free(order_rand);
		return 0;
	}
	snprintf(ck, sizeof(ck), "%s/ck", ud.dir);
	snprintf(pages_path, sizeof(pages_path), "%s/pages", ck);
	bench_checkpoint_state(ck, STATE_ADDR, state_bytes, page);

	for (unsigned int i = 0; i < runs; i++) {
		make_cold();
		rd[i] = seq_read();
		seq[i] = restore_cold(false);
		rnd[i] = restore_cold(true);
		seq_x[i] = seq[i] / rd[i];
		rnd_x[i] = rnd[i] / rd[i];
		printf("# round %u: read %.1f ms, seq restore %.1f ms (%.2fx), "
		       "rand restore %.1f ms (%.2fx)\n",
		       i, rd[i], seq[i], seq_x[i], rnd[i], rnd_x[i]);
	}
	bench_metric("cold_seq_read_256m", bench_median(rd, runs), "ms");
	bench_metric("cold_seq_restore_256m", bench_median(seq, runs), "ms");
	bench_metric("cold_rand_restore_256m", bench_median(rnd, runs), "ms");
	bench_metric("cold_seq_vs_sequential_read", bench_median(seq_x, runs), "x");
	bench_metric("cold_rand_vs_sequential_read", bench_median(rnd_x, runs), "x");
	bench_checkpoint_remove(ck);
	bench_uffdd_stop(&ud);
	free(order_rand);
	return 0;
}
