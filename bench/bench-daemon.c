// SPDX-License-Identifier: MIT
/*
 * uffdd against its baselines, measured in the same run:
 *  - random 4 KiB faults served by uffdd (another process) vs the raw
 *    in-process busy-polling single-thread handler;
 *  - a sequential touch of 256 MiB served by uffdd vs one bulk UFFDIO_COPY;
 *  - fault latency with 1,000 regions vs 1, and with 16 clients vs 1: all
 *    faulting at once (the CPU queue), and taking faults in turn.
 * The daemon is $UFFDD, else the uffdd built next to this benchmark.  With
 * --smoke: one-page regions, 1 MiB sequential, one fault per client, one round.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin-private.h"

/* 1,000 regions of 16 pages, or one of them all: 62.5 MiB. */
#define NREGIONS	1000
#define REGION_PAGES	16
#define REGION_BYTES	((size_t)NREGIONS * sz.region_pages * page)
#define RANDOM_FAULTS	4096
#define SEQ_BYTES	(256ull << 20)
#define NCLIENTS	16
#define ROUNDS		5
#define SMOKE_SEQ_BYTES (1ull << 20)

/* How much one run measures: the figures, or the smoke test's (bench_smoke()),
 * which still has 1,000 regions and a fault for each of 16 clients in turn. */
struct sizes {
	size_t region_pages, random_faults;
	uint64_t seq_bytes;
	int rounds;
};
static struct sizes sz = { REGION_PAGES, RANDOM_FAULTS, SEQ_BYTES, ROUNDS };
static const struct sizes smoke = { 1, NCLIENTS, SMOKE_SEQ_BYTES, 1 };

static size_t page;
static struct bench_uffdd ud;

/* k distinct random pages out of n. */
static size_t *random_pages(size_t n, size_t k, uint64_t seed)
{
	size_t *v = malloc(n * sizeof(*v));

	if (!v)
		bench_die("malloc", ENOMEM);
	for (size_t i = 0; i < n; i++)
		v[i] = i;
	for (size_t i = 0; i < k; i++) {
		size_t j = i + (size_t)(bench_rand(&seed) % (n - i)), t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
	return v;
}

/* Touch the pages, one read each; the median fault latency in us. */
static double touch_random(const uint8_t *base, const size_t *pages, size_t k)
{
	double *lat = malloc(k * sizeof(*lat));

	if (!lat)
		bench_die("malloc", ENOMEM);
	for (size_t i = 0; i < k; i++) {
		uint64_t t0 = bench_now_ns();
		if (!*(const volatile uint8_t *)(base + pages[i] * page))
			bench_die("a page read as zero", EIO);
		lat[i] = (double)(bench_now_ns() - t0) / 1000.0;
	}
	double m = bench_median(lat, (unsigned int)k);
	free(lat);
	return m;
}

/* ---- the raw handler: one thread busy-polling read() ---- */

struct raw {
	struct pin_uffd *u;
	const uint8_t *src;
	uintptr_t base;
	_Atomic bool stop;
};

static void *raw_handler(void *arg)
{
	struct raw *r = arg;
	int fd = pin_uffd_fd(r->u);
	struct uffd_msg msg;

	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		if (read(fd, &msg, sizeof(msg)) != sizeof(msg) || msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uintptr_t a = (uintptr_t)msg.arg.pagefault.address & ~(uintptr_t)(page - 1);
		pin_uffd_copy(r->u, (void *)a, r->src + (a - r->base), page, 0, NULL);
	}
	return NULL;
}

static double raw_random(const size_t *pages)
{
	struct raw r = { .u = bench_uffd_new() };
	pthread_t th;
	uint8_t *src = bench_map_anon(REGION_BYTES), *base = bench_map_anon(REGION_BYTES);

	for (size_t i = 0; i < REGION_BYTES; i += page)
		memset(src + i, (int)(i / page) | 1, page);
	int flags = fcntl(pin_uffd_fd(r.u), F_GETFL);
	fcntl(pin_uffd_fd(r.u), F_SETFL, flags | O_NONBLOCK);
	int ret = pin_uffd_register(r.u, base, REGION_BYTES, PIN_UFFD_REGISTER_MISSING, NULL);
	if (ret < 0)
		bench_die("register", ret);
	r.src = src;
	r.base = (uintptr_t)base;
	pthread_create(&th, NULL, raw_handler, &r);
	double m = touch_random(base, pages, sz.random_faults);
	atomic_store(&r.stop, true);
	pthread_join(th, NULL);
	pin_uffd_free(r.u);
	munmap(src, REGION_BYTES);
	munmap(base, REGION_BYTES);
	return m;
}

/* ---- uffdd ---- */

struct conn {
	struct pin_client *c;
	struct pin_uffd *u;
};

static void conn_open(struct conn *k)
{
	struct pin_client_opts co = { .sz = sizeof(co), .socket = ud.sock, .name = "bench" };
	int r;

	k->u = bench_uffd_new();
	if ((r = pin_client_connect(&co, &k->c)) < 0 || (r = pin_client_handover(k->c, k->u)) < 0)
		bench_die("connect/handover", r);
}

static void conn_close(struct conn *k)
{
	pin_client_free(k->c);
	pin_uffd_free(k->u);
}

/* n regions of len bytes each over consecutive offsets of fd, no push. */
static uint8_t *add_regions(struct conn *k, int fd, size_t n, size_t len)
{
	uint8_t *base = bench_map_anon(n * len);

	for (size_t i = 0; i < n; i++) {
		struct pin_client_region r = {
			.sz = sizeof(r),
			.addr = base + i * len,
			.len = len,
			.mode = PIN_UFFD_REGISTER_MISSING,
			.flags = PIN_CLIENT_REGION_NO_PUSH,
			.fd = fd,
			.offset = i * len,
		};
		int ret = pin_uffd_register(k->u, r.addr, len, r.mode, NULL);
		if (ret < 0 || (ret = pin_client_region_add(k->c, &r)) < 0)
			bench_die("region", ret);
	}
	return base;
}

static double uffdd_random(int fd, const size_t *pages, size_t nregions)
{
	struct conn k;

	conn_open(&k);
	uint8_t *base = add_regions(&k, fd, nregions, REGION_BYTES / nregions);
	double m = touch_random(base, pages, sz.random_faults);
	conn_close(&k);
	munmap(base, REGION_BYTES);
	return m;
}

/* nclients processes fault at once: the median of their median latencies,
 * and all their faults per second in *ret_rate. */
static double uffdd_clients(int fd, const size_t *pages, int nclients, double *ret_rate)
{
	double med[NCLIENTS];
	pid_t pids[NCLIENTS];
	int p[2];

	if (pipe(p) < 0)
		bench_die("pipe", errno);
	uint64_t t0 = bench_now_ns();
	for (int i = 0; i < nclients; i++) {
		pid_t pid = pids[i] = fork();
		if (pid < 0)
			bench_die("fork", errno);
		if (pid == 0) {
			double m = uffdd_random(fd, pages, 1);
			_exit(write(p[1], &m, sizeof(m)) == sizeof(m) ? 0 : 1);
		}
	}
	close(p[1]);
	for (int i = 0; i < nclients; i++)
		if (read(p[0], &med[i], sizeof(med[i])) != sizeof(med[i]))
			bench_die("a client failed", EIO);
	for (int i = 0, st; i < nclients; i++)
		if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st))
			bench_die("a client failed", EIO);
	/* Wall time includes each client's set-up: connect, handover, region. */
	*ret_rate =
		(double)nclients * (double)sz.random_faults * 1e9 / (double)(bench_now_ns() - t0);
	close(p[0]);
	return bench_median(med, (unsigned int)nclients);
}

/*
 * nclients processes, each with its session and region, take faults in turn:
 * a token goes round a ring of pipes and only its holder faults, once.  One
 * fault is outstanding at a time, so this is the service time with that
 * many sessions alive, without the CPU queue of uffdd_clients().  Only the
 * touch is timed; the median over every client's faults.
 */
static double uffdd_in_turn(int fd, const size_t *pages, int nclients)
{
	int ring[NCLIENTS][2], res[2];
	pid_t pids[NCLIENTS];
	size_t turns = sz.random_faults / (size_t)nclients;
	double *lat = malloc(sz.random_faults * sizeof(*lat));

	if (!lat || pipe(res) < 0)
		bench_die("pipe", errno);
	for (int i = 0; i < nclients; i++)
		if (pipe(ring[i]) < 0)
			bench_die("pipe", errno);
	for (int i = 0; i < nclients; i++) {
		pid_t pid = pids[i] = fork();
		if (pid < 0)
			bench_die("fork", errno);
		if (pid)
			continue;
		struct conn k;
		int next = ring[(i + 1) % nclients][1];
		char t;
		conn_open(&k);
		uint8_t *base = add_regions(&k, fd, 1, REGION_BYTES);
		for (size_t j = 0; j < turns; j++) {
			if (read(ring[i][0], &t, 1) != 1)
				_exit(1);
			uint64_t t0 = bench_now_ns();
			if (!*(const volatile uint8_t *)(base + pages[j * nclients + i] * page))
				_exit(1);
			lat[j] = (double)(bench_now_ns() - t0) / 1000.0;
			if (write(next, &t, 1) != 1)
				_exit(1);
		}
		ssize_t want = (ssize_t)(turns * sizeof(*lat));
		_exit(write(res[1], lat, (size_t)want) == want ? 0 : 1);
	}
	close(res[1]);
	/* Every client is connected once it waits for the token: start it. */
	if (write(ring[0][1], "t", 1) != 1)
		bench_die("write", errno);
	for (int i = 0; i < nclients; i++) {
		size_t want = turns * sizeof(*lat);
		if (read(res[0], lat + (size_t)i * turns, want) != (ssize_t)want)
			bench_die("a client failed", EIO);
	}
	for (int i = 0, st; i < nclients; i++)
		if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st))
			bench_die("a client failed", EIO);
	for (int i = 0; i < nclients; i++) {
		close(ring[i][0]);
		close(ring[i][1]);
	}
	close(res[0]);
	double m = bench_median(lat, (unsigned int)(turns * (size_t)nclients));
	free(lat);
	return m;
}

/* ---- sequential ---- */

/*
 * One UFFDIO_COPY of sz.seq_bytes into a fresh registered range: from the
 * source uffdd serves (fd >= 0, mapped and populated as uffdd maps an
 * in-memory source), or from anonymous memory (fd -1).
 */
static double bulk_copy_gbps(int fd)
{
	struct pin_uffd *u = bench_uffd_new();
	uint8_t *src, *dst = bench_map_anon(sz.seq_bytes);

	if (fd >= 0) {
		src = mmap(NULL, sz.seq_bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
		if (src == MAP_FAILED)
			bench_die("mmap source", errno);
	} else {
		src = bench_map_anon(sz.seq_bytes);
		memset(src, 0x5a, sz.seq_bytes);
	}
	int r = pin_uffd_register(u, dst, sz.seq_bytes, PIN_UFFD_REGISTER_MISSING, NULL);
	if (r < 0)
		bench_die("register", r);
	uint64_t t0 = bench_now_ns();
	r = pin_uffd_copy(u, dst, src, sz.seq_bytes, 0, NULL);
	uint64_t t = bench_now_ns() - t0;
	if (r < 0)
		bench_die("UFFDIO_COPY", r);
	pin_uffd_free(u);
	munmap(src, sz.seq_bytes);
	munmap(dst, sz.seq_bytes);
	return (double)sz.seq_bytes / (double)t;
}

static double uffdd_seq_gbps(int fd)
{
	struct conn k;

	conn_open(&k);
	uint8_t *base = add_regions(&k, fd, 1, sz.seq_bytes);
	uint64_t t0 = bench_now_ns();
	for (size_t i = 0; i < sz.seq_bytes; i += page)
		if (!*(volatile uint8_t *)(base + i))
			bench_die("a page read as zero", EIO);
	uint64_t t = bench_now_ns() - t0;
	conn_close(&k);
	munmap(base, sz.seq_bytes);
	return (double)sz.seq_bytes / (double)t;
}

int main(int argc, char **argv)
{
	if (bench_smoke(argc, argv))
		sz = smoke;
	page = (size_t)sysconf(_SC_PAGESIZE);
	signal(SIGPIPE, SIG_IGN);
	size_t *pages = random_pages(REGION_BYTES / page, sz.random_faults, 0x1234567);
	int src = bench_memfd_source(REGION_BYTES, page),
	    seq = bench_memfd_source(sz.seq_bytes, page);

	bench_uffdd_start(&ud);
	/* Each pair is measured back to back, sz.rounds times: the medians, and
	 * the median of the pairs' ratios (a pair shares the machine's mood). */
	double raw[ROUNDS], one[ROUNDS], many[ROUNDS], bulk[ROUNDS], anon[ROUNDS], served[ROUNDS];
	double rr[ROUNDS], rm[ROUNDS], rs[ROUNDS];
	for (int r = 0; r < sz.rounds; r++) {
		raw[r] = raw_random(pages);
		one[r] = uffdd_random(src, pages, 1);
		many[r] = uffdd_random(src, pages, NREGIONS);
		rr[r] = one[r] / raw[r];
		rm[r] = many[r] / one[r];
	}
	for (int r = 0; r < sz.rounds; r++) {
		bulk[r] = bulk_copy_gbps(seq);
		anon[r] = bulk_copy_gbps(-1);
		served[r] = uffdd_seq_gbps(seq);
		rs[r] = served[r] / bulk[r];
	}
	bench_metric("fault_random_raw_median", bench_median(raw, sz.rounds), "us");
	bench_metric("fault_random_uffdd_median", bench_median(one, sz.rounds), "us");
	bench_metric("fault_random_uffdd_vs_raw", bench_median(rr, sz.rounds), "x");
	bench_metric("fault_random_1000_regions_median", bench_median(many, sz.rounds), "us");
	bench_metric("fault_random_1000_regions_vs_1", bench_median(rm, sz.rounds), "x");
	/* The baseline copies the same 256 MiB from the same source. */
	bench_metric("seq_256m_bulk_copy", bench_median(bulk, sz.rounds), "GB/s");
	bench_metric("seq_256m_bulk_copy_from_anon", bench_median(anon, sz.rounds), "GB/s");
	bench_metric("seq_256m_uffdd", bench_median(served, sz.rounds), "GB/s");
	bench_metric("seq_256m_uffdd_vs_bulk", bench_median(rs, sz.rounds), "x");

	/* One client process, then 16 at once: the median latency grows with
	 * the queue (16 faults wait for 2 workers); the throughput should not
	 * drop. */
	double rate1, rate16;
	double lat1 = uffdd_clients(src, pages, 1, &rate1);
	double lat16 = uffdd_clients(src, pages, NCLIENTS, &rate16);
	bench_metric("fault_random_1_client_process_median", lat1, "us");
	bench_metric("fault_random_16_clients_median", lat16, "us");
	bench_metric("fault_random_16_clients_vs_1", lat16 / lat1, "x");
	bench_metric("fault_random_1_client_rate", rate1, "faults/s");
	bench_metric("fault_random_16_clients_rate", rate16, "faults/s");
	bench_metric("fault_random_16_clients_rate_vs_1", rate16 / rate1, "x");

	/* The same with one fault outstanding at a time: what 16 live sessions
	 * cost a fault, without the CPU queue. */
	double turn1[ROUNDS], turn16[ROUNDS], rt[ROUNDS];
	for (int r = 0; r < sz.rounds; r++) {
		turn1[r] = uffdd_in_turn(src, pages, 1);
		turn16[r] = uffdd_in_turn(src, pages, NCLIENTS);
		rt[r] = turn16[r] / turn1[r];
	}
	bench_metric("fault_random_in_turn_1_session_median", bench_median(turn1, sz.rounds), "us");
	bench_metric("fault_random_in_turn_16_sessions_median", bench_median(turn16, sz.rounds),
		     "us");
	bench_metric("fault_random_in_turn_16_sessions_vs_1", bench_median(rt, sz.rounds), "x");
	bench_uffdd_stop(&ud);
	free(pages);
	return 0;
}
