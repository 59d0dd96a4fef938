// SPDX-License-Identifier: MIT
/*
 * Incremental checkpoints (issue 17, item 2): a process with 1 GiB of
 * anonymous memory in small pages, every page written (non-zero) and
 * tracked by an async write-protect userfaultfd, is checkpointed whole
 * (pin_image_write() with PIN_IMAGE_WRITE_REARM), then writes 5 % of its
 * pages (random, the same each round) and is checkpointed again with the
 * first as its parent: only those pages are copied.
 *  - incr_ckpt_1g_5pct_vs_full_x: the incremental checkpoint's time ÷ the
 *    full one's, the same round; medians of ROUNDS rounds.  The incremental
 *    time includes reading the parent back (pin_image_open()) and the
 *    PAGEMAP_SCAN walks (what to hold, then re-arming).
 *  - incr_ckpt_1g_5pct_bytes_x: the bytes its pages file holds ÷ the full
 *    one's (st_blocks).
 *  - incr_ckpt_1g_unchanged_ms: one more incremental checkpoint with
 *    nothing written since: the fixed cost (the parent chain read back, the
 *    PAGEMAP_SCAN walks, the files).
 *  - chain_squash_1g_ms: uffdd-image squash's work (pin_image_save()) on
 *    that chain of two, for scale.
 * The images go to a temporary directory under /var/tmp, into the page
 * cache: a checkpoint's time ends with its last write, not on disk; before
 * each one (not timed) syncfs(2) writes back what the one before left dirty,
 * so that it does not pay for its predecessor's writeback.  --smoke: 64 MiB,
 * one round.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin-private.h"

#define BYTES	    (1ull << 30)
#define SMOKE_BYTES (64ull << 20)
#define ROUNDS	    3
/* Of the pages, the share written between the two checkpoints. */
#define WRITTEN_PCT 5

static size_t page, npages;
static uint64_t bytes = BYTES;
static unsigned int rounds = ROUNDS;

struct workload {
	pid_t pid;
	int cmd, ack;
	uint64_t addr;
};

/* The tracked process: every page non-zero, protected; on each command
 * byte it writes the 5 % (a new value each time) and answers. */
static void workload_main(int cmd, int ack, uint64_t *ret_addr)
{
	struct pin_uffd_opts o = { .sz = sizeof(o),
				   .flags = PIN_UFFD_CLOEXEC,
				   .features = PIN_UFFD_FEATURE_WP_ASYNC |
					       PIN_UFFD_FEATURE_WP_UNPOPULATED };
	size_t nwrite = npages * WRITTEN_PCT / 100;
	uint32_t *order = bench_shuffled(npages, 0x5eed);
	uint8_t *p = bench_map_anon(bytes);
	struct pin_uffd *u;
	uint8_t value = 2;
	char c;

	if (madvise(p, bytes, MADV_NOHUGEPAGE) < 0)
		bench_die("madvise(MADV_NOHUGEPAGE)", errno);
	memset(p, 1, bytes);
	if (pin_uffd_new(&o, &u) < 0 ||
	    pin_uffd_register(u, p, bytes, PIN_UFFD_REGISTER_WP, NULL) < 0 ||
	    pin_uffd_writeprotect(u, p, bytes, PIN_UFFD_WP) < 0)
		bench_die("async write-protect tracking", EOPNOTSUPP);
	*ret_addr = (uintptr_t)p;
	if (write(ack, ret_addr, sizeof(*ret_addr)) != sizeof(*ret_addr))
		_exit(1);
	while (read(cmd, &c, 1) == 1) {
		for (size_t i = 0; i < nwrite; i++)
			memset(p + (size_t)order[i] * page, value, page);
		value++;
		if (write(ack, &c, 1) != 1)
			_exit(1);
	}
	_exit(0);
}

static struct workload workload_start(void)
{
	struct workload w;
	int cmd[2], ack[2];

	if (pipe2(cmd, O_CLOEXEC) < 0 || pipe2(ack, O_CLOEXEC) < 0)
		bench_die("pipe2", errno);
	w.pid = fork();
	if (w.pid < 0)
		bench_die("fork", errno);
	if (!w.pid) {
		close(cmd[1]);
		close(ack[0]);
		workload_main(cmd[0], ack[1], &w.addr);
	}
	close(cmd[0]);
	close(ack[1]);
	w.cmd = cmd[1];
	w.ack = ack[0];
	if (read(w.ack, &w.addr, sizeof(w.addr)) != sizeof(w.addr))
		bench_die("the workload did not start", EIO);
	return w;
}

static void workload_write(const struct workload *w)
{
	char c = 'w';

	if (write(w->cmd, &c, 1) != 1 || read(w->ack, &c, 1) != 1)
		bench_die("the workload's writes", EIO);
}

static void workload_stop(struct workload *w)
{
	int st;

	close(w->cmd);
	close(w->ack);
	if (waitpid(w->pid, &st, 0) != w->pid || st)
		bench_die("the workload failed", EIO);
}

static int tmp_fd = -1;

/* One checkpoint of the workload's region into dir (parent: NULL for a full
 * one), after a syncfs(2) of the file system it goes to; ms. */
static double checkpoint(const struct workload *w, const char *dir, const char *parent)
{
	struct pin_image_write_opts o = { .sz = sizeof(o),
					  .flags = PIN_IMAGE_WRITE_REARM,
					  .addr = w->addr,
					  .len = bytes,
					  .parent = parent };
	uint64_t t0;
	int r;

	if (syncfs(tmp_fd) < 0)
		bench_die("syncfs", errno);
	t0 = bench_now_ns();
	r = pin_image_write(w->pid, dir, &o);

	if (r != 1)
		bench_die("pin_image_write", r < 0 ? -r : EIO);
	return (double)(bench_now_ns() - t0) / 1e6;
}

static double blocks(const char *dir)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/pages", dir);
	if (stat(path, &st) < 0)
		bench_die("stat of a pages file", errno);
	return (double)st.st_blocks * 512;
}

int main(int argc, char **argv)
{
	double full[ROUNDS], incr[ROUNDS], ratio[ROUNDS], same[ROUNDS], squash = 0, bytes_x = 0;
	char tmp[] = "/var/tmp/bench-ckpt-XXXXXX", a[64], b[64], c[64], s[64];
	struct workload w;

	if (bench_smoke(argc, argv)) {
		bytes = SMOKE_BYTES;
		rounds = 1;
	}
	page = (size_t)sysconf(_SC_PAGESIZE);
	npages = bytes / page;
	if (!mkdtemp(tmp))
		bench_die("mkdtemp", errno);
	tmp_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (tmp_fd < 0)
		bench_die("open of the temporary directory", errno);
	snprintf(a, sizeof(a), "%s/full", tmp);
	snprintf(b, sizeof(b), "%s/incr", tmp);
	snprintf(c, sizeof(c), "%s/unchanged", tmp);
	snprintf(s, sizeof(s), "%s/squashed", tmp);
	w = workload_start();
	for (unsigned int i = 0; i < rounds; i++) {
		full[i] = checkpoint(&w, a, NULL);
		workload_write(&w);
		incr[i] = checkpoint(&w, b, a);
		ratio[i] = incr[i] / full[i];
		same[i] = checkpoint(&w, c, b);
		bench_checkpoint_remove(c);
		if (!i) {
			struct pin_image *img;
			uint64_t t0;
			int r;

			if (syncfs(tmp_fd) < 0)
				bench_die("syncfs", errno);
			t0 = bench_now_ns();
			r = pin_image_open(b, &img);

			if (r < 0 || (r = pin_image_save(img, s)) < 0)
				bench_die("squash", -r);
			squash = (double)(bench_now_ns() - t0) / 1e6;
			pin_image_free(img);
			bytes_x = blocks(b) / blocks(a);
			bench_checkpoint_remove(s);
		}
		bench_checkpoint_remove(b);
		bench_checkpoint_remove(a);
	}
	workload_stop(&w);
	close(tmp_fd);
	rmdir(tmp);
	bench_metric("full_ckpt_1g_ms", bench_median(full, rounds), "ms");
	bench_metric("incr_ckpt_1g_5pct_ms", bench_median(incr, rounds), "ms");
	bench_metric("incr_ckpt_1g_5pct_vs_full_x", bench_median(ratio, rounds), "x");
	bench_metric("incr_ckpt_1g_5pct_bytes_x", bytes_x, "x");
	bench_metric("incr_ckpt_1g_unchanged_ms", bench_median(same, rounds), "ms");
	bench_metric("chain_squash_1g_ms", squash, "ms");
	return 0;
}
