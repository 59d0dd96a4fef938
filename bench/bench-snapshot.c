// SPDX-License-Identifier: MIT
/*
 * Shared snapshots (issue 14, item 2): N = 8 restores of one 256 MiB image
 * at once, each a child process that maps the image's region, hands it to
 * uffdd, waits until all are ready, then reads one word of every page in a
 * random order of its own and stays alive until the memory is measured.
 *  - copy: the image's pages file as each restore's source (UFFDIO_COPY:
 *    every restore its own copy);
 *  - snapshot: the image loaded once into a sealed memfd
 *    (pin_image_snapshot(); each restore takes the loader's memfd), mapped
 *    MAP_PRIVATE, served with UFFDIO_CONTINUE.
 * Memory, once every restore has read every page: the sum over the
 * restores of their PSS (/proc/PID/smaps_rollup) without its shmem part,
 * plus the memfd's pages once (the shmem pages are the memfd's, which PSS
 * splits among the restores that map them); ÷ the image.
 * The literal sum of PSS plus the memfd, which counts the memfd's mapped
 * pages twice, is printed too.  run_ms: each restore's time from the go to
 * its last page read (resume to all read); total_ms: that plus its own
 * setup (image opened, region mapped, handed over, added); each the median
 * over the restores of every round.  Each round has one restore alone (1x),
 * then 8 at once (8x), in each mode; argv[1] rounds (default 3); --smoke:
 * one round, 2 restores of 1 MiB (the names keep "256m").  The daemon is $UFFDD,
 * else the uffdd built next to this benchmark.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin.h"

#define STATE_ADDR	  0x500000000000ull
#define STATE_BYTES	  (256ull << 20)
#define RESTORES	  8
#define SMOKE_RESTORES	  2
#define SMOKE_STATE_BYTES (1ull << 20)
#define DEFAULT_ROUNDS	  3
#define MAX_ROUNDS	  32

enum mode { COPY, SNAPSHOT, MODES };

static const char *const mode_name[MODES] = { "copy", "snapshot" };

struct result {
	double run_ms, total_ms;
	uint64_t bad;
};

struct child {
	pid_t pid;
	int to, from; /* pipes: go / exit, and ready / result */
};

static size_t page, npages;
static uint64_t state_bytes = STATE_BYTES;
static unsigned int restores = RESTORES;
static char ck[96];
static struct bench_uffdd ud;
static int snap = -1; /* the loader's memfd */

static uint64_t word_of(uint64_t i)
{
	return bench_state_word(STATE_ADDR + i * page);
}

static void put(int fd, const void *buf, size_t len)
{
	if (write(fd, buf, len) != (ssize_t)len)
		bench_die("write to a pipe", errno ? errno : EIO);
}

static void get(int fd, void *buf, size_t len)
{
	if (read(fd, buf, len) != (ssize_t)len)
		bench_die("read from a pipe", errno ? errno : EIO);
}

/* The restored process: ready, go, read every page, result, wait. */
static void restore(enum mode m, unsigned int k, int in, int out)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP |
			    PIN_UFFD_FEATURE_EVENT_REMAP |
			    (m == SNAPSHOT ? PIN_UFFD_FEATURE_MINOR_SHMEM : 0),
	};
	struct pin_client_opts co = { .sz = sizeof(co), .socket = ud.sock, .name = "bench" };
	struct pin_image *img;
	struct pin_client *c;
	struct pin_uffd *u;
	struct result res = { 0 };
	uint32_t *order = bench_shuffled(npages, 0x5eed + k);
	char b = 0;
	int r;

	uint64_t start = bench_now_ns();
	if ((r = pin_image_open(ck, &img)) < 0 ||
	    (m == SNAPSHOT && (r = pin_image_snapshot(img, snap)) < 0) ||
	    (r = pin_uffd_new(&uo, &u)) < 0 || (r = pin_image_map_region(img, 0, u)) < 0 ||
	    (r = pin_client_connect(&co, &c)) < 0 || (r = pin_client_handover(c, u)) < 0 ||
	    (r = pin_client_add_image_region(c, img, 0, 0)) < 0)
		bench_die("restore", r);
	uint64_t ready = bench_now_ns();
	put(out, &b, 1);
	get(in, &b, 1);
	const volatile uint64_t *p = (const uint64_t *)(uintptr_t)STATE_ADDR;
	uint64_t t0 = bench_now_ns();
	for (uint64_t j = 0; j < npages; j++)
		res.bad += p[order[j] * page / 8] != word_of(order[j]);
	uint64_t t1 = bench_now_ns();
	res.run_ms = (double)(t1 - t0) / 1e6;
	/* Its own setup, then the read: the wait for the others left out. */
	res.total_ms = (double)(ready - start + t1 - t0) / 1e6;
	put(out, &res, sizeof(res));
	get(in, &b, 1);
	pin_client_free(c);
	pin_image_free(img);
	pin_uffd_free(u);
	free(order);
}

static void spawn(struct child *ch, enum mode m, unsigned int k)
{
	int down[2], up[2];
	pid_t parent = getpid();

	if (pipe2(down, O_CLOEXEC) < 0 || pipe2(up, O_CLOEXEC) < 0)
		bench_die("pipe2", errno);
	ch->pid = fork();
	if (ch->pid < 0)
		bench_die("fork", errno);
	if (ch->pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(1);
		close(down[1]);
		close(up[0]);
		restore(m, k, down[0], up[1]);
		_exit(0);
	}
	close(down[0]);
	close(up[1]);
	ch->to = down[1];
	ch->from = up[0];
}

/* A kB field of /proc/PID/smaps_rollup. */
static uint64_t rollup_kb(pid_t pid, const char *field)
{
	char path[64], line[256], name[64];
	unsigned long long v;
	uint64_t kb = 0;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		bench_die(path, errno);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%63[^:]: %llu kB", name, &v) == 2 && !strcmp(name, field))
			kb = v;
	fclose(f);
	return kb;
}

struct round {
	double run_ms[RESTORES], total_ms[RESTORES];
	uint64_t pss, pss_shmem; /* bytes, summed over the restores */
};

/* One round of n restores of mode m, all at once. */
static void run_round(enum mode m, unsigned int n, struct round *rd)
{
	struct child ch[RESTORES];
	char b = 0;

	for (unsigned int k = 0; k < n; k++)
		spawn(&ch[k], m, k);
	for (unsigned int k = 0; k < n; k++)
		get(ch[k].from, &b, 1);
	for (unsigned int k = 0; k < n; k++)
		put(ch[k].to, &b, 1);
	rd->pss = rd->pss_shmem = 0;
	for (unsigned int k = 0; k < n; k++) {
		struct result res;
		get(ch[k].from, &res, sizeof(res));
		if (res.bad)
			bench_die("a restore read pages that are not the image's", EIO);
		rd->run_ms[k] = res.run_ms;
		rd->total_ms[k] = res.total_ms;
	}
	/* Every restore read every page and is still there. */
	for (unsigned int k = 0; k < n; k++) {
		rd->pss += rollup_kb(ch[k].pid, "Pss") << 10;
		rd->pss_shmem += rollup_kb(ch[k].pid, "Pss_Shmem") << 10;
	}
	for (unsigned int k = 0; k < n; k++) {
		int st;
		put(ch[k].to, &b, 1);
		if (waitpid(ch[k].pid, &st, 0) != ch[k].pid || !WIFEXITED(st) ||
		    WEXITSTATUS(st) != 0)
			bench_die("a restore failed", EIO);
		close(ch[k].to);
		close(ch[k].from);
	}
}

static void ratio_metrics(const char *what, double run[MODES][MAX_ROUNDS * RESTORES],
			  unsigned int n)
{
	char name[96];
	double med[MODES];

	for (int m = 0; m < MODES; m++) {
		med[m] = bench_median(run[m], n);
		snprintf(name, sizeof(name), "snapshot_%s_%s_ms", what, mode_name[m]);
		bench_metric(name, med[m], "ms");
	}
	snprintf(name, sizeof(name), "snapshot_%s_vs_copy", what);
	bench_metric(name, med[SNAPSHOT] / med[COPY], "x");
}

int main(int argc, char **argv)
{
	unsigned int rounds = argc > 1 ? (unsigned int)atoi(argv[1]) : DEFAULT_ROUNDS;
	static double run[MODES][MAX_ROUNDS * RESTORES], total[MODES][MAX_ROUNDS * RESTORES];
	struct round last[MODES];
	struct pin_image *img;
	struct stat st;
	int r;

	if (bench_smoke(argc, argv)) {
		rounds = 1;
		restores = SMOKE_RESTORES;
		state_bytes = SMOKE_STATE_BYTES;
	}
	if (rounds < 1 || rounds > MAX_ROUNDS)
		rounds = DEFAULT_ROUNDS;
	page = (size_t)sysconf(_SC_PAGESIZE);
	npages = state_bytes / page;
	uint64_t f = 0;
	if (pin_uffd_probe(&f, NULL) < 0 || !(f & PIN_UFFD_FEATURE_MINOR_SHMEM)) {
		printf("skip: MINOR faults on shmem need UFFD_FEATURE_MINOR_SHMEM (Linux 5.14)\n");
		return 0;
	}
	snprintf(ck, sizeof(ck), "/tmp/bench-snapshot-XXXXXX");
	if (!mkdtemp(ck))
		bench_die("mkdtemp", errno);
	bench_checkpoint_state(ck, STATE_ADDR, state_bytes, page);
	/* The loader: the image into the page cache once. */
	if ((r = pin_image_open(ck, &img)) < 0 || (r = snap = pin_image_snapshot(img, -1)) < 0)
		bench_die("pin_image_snapshot", r);
	if (fstat(snap, &st) < 0)
		bench_die("fstat of the memfd", errno);
	uint64_t memfd_bytes = (uint64_t)st.st_blocks * 512;
	bench_uffdd_start(&ud);
	/* One restore alone, then all of them at once; the modes alternate. */
	static double one_run[MODES][MAX_ROUNDS * RESTORES];
	for (unsigned int i = 0; i < rounds; i++) {
		for (int m = 0; m < MODES; m++) {
			struct round one;
			run_round((enum mode)m, 1, &one);
			one_run[m][i] = one.run_ms[0];
			run_round((enum mode)m, restores, &last[m]);
			memcpy(&run[m][i * restores], last[m].run_ms, restores * sizeof(double));
			memcpy(&total[m][i * restores], last[m].total_ms,
			       restores * sizeof(double));
		}
	}
	bench_uffdd_stop(&ud);
	pin_image_free(img);
	bench_checkpoint_remove(ck);

	ratio_metrics("1x256m_rand_run", one_run, rounds);
	ratio_metrics("8x256m_rand_run", run, rounds * restores);
	ratio_metrics("8x256m_rand_total", total, rounds * restores);
	double image = (double)state_bytes;
	bench_metric("snapshot_8x256m_memory_vs_one_image",
		     (double)(last[SNAPSHOT].pss - last[SNAPSHOT].pss_shmem + memfd_bytes) / image,
		     "x");
	bench_metric("snapshot_8x256m_pss_plus_memfd_vs_one_image",
		     (double)(last[SNAPSHOT].pss + memfd_bytes) / image, "x");
	bench_metric("snapshot_8x256m_copy_memory_vs_one_image", (double)last[COPY].pss / image,
		     "x");
	bench_metric("snapshot_memfd_mib", (double)memfd_bytes / (1 << 20), "MiB");
	return 0;
}
