// SPDX-License-Identifier: MIT
/*
 * Fault latency as the faulting thread sees it (issue 14): clock_gettime()
 * around each first touch of a page, and the p50, p99 and p99.9 of those
 * times, for three orders:
 *  - seq: one thread reads a region's pages in address order;
 *  - random: one thread reads them in a random order;
 *  - clients64: 64 threads, each with its own session and region, all
 *    reading their pages in a random order at once (a restore of 64
 *    processes at a time, on a machine of a few CPUs).
 * Each order is served by uffdd, and by the baseline measured in the same
 * run: a raw single-thread handler in this process (one thread blocking in
 * poll(2) over every userfaultfd, one UFFDIO_COPY of a page per fault).
 * A touch uffdd's readahead placed before it counts too: it is what the
 * thread sees.  For random and clients64 also the p99 that uffdd's own
 * histogram shows (the upper bound of its bucket): every touch there is a
 * fault.  With --smoke: a few pages per region.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin-private.h"

/* Pages of the one thread's region (64 MiB), and of each client's (2 MiB:
 * 128 MiB for all 64). */
#define ONE_PAGES    16384
#define CLIENT_PAGES 512
#define NCLIENTS     64
/* Messages the raw handler takes per read(2). */
#define RAW_BATCH 16

struct sizes {
	size_t one_pages, client_pages;
};
static struct sizes sz = { ONE_PAGES, CLIENT_PAGES };
static const struct sizes smoke = { 64, 4 };

static size_t page;
static struct bench_uffdd ud;

/* The byte page i of the source is filled with (bench_memfd_source()). */
static uint8_t fill_of(size_t i)
{
	return (uint8_t)(i | 1);
}

/* ---- a client: its userfaultfd, region and touches ---- */

struct client {
	struct pin_uffd *u;
	struct pin_client *c; /* NULL: the raw handler serves u */
	uint8_t *base;
	size_t npages;
	uint32_t *order; /* NULL: address order */
	double *lat;	 /* us, one per touch */
	pthread_barrier_t *go;
	pthread_t th;
};

static void client_open(struct client *k, int fd, bool raw)
{
	size_t len = k->npages * page;

	k->u = bench_uffd_new();
	k->base = bench_map_anon(len);
	int r = pin_uffd_register(k->u, k->base, len, PIN_UFFD_REGISTER_MISSING, NULL);
	if (r < 0)
		bench_die("register", r);
	if (raw) {
		int fl = fcntl(pin_uffd_fd(k->u), F_GETFL);
		if (fl < 0 || fcntl(pin_uffd_fd(k->u), F_SETFL, fl | O_NONBLOCK) < 0)
			bench_die("fcntl", errno);
		k->c = NULL;
		return;
	}
	struct pin_client_opts co = { .sz = sizeof(co), .socket = ud.sock, .name = "bench-touch" };
	struct pin_client_region rg = {
		.sz = sizeof(rg),
		.addr = k->base,
		.len = len,
		.mode = PIN_UFFD_REGISTER_MISSING,
		/* Faults only: a push would place pages the raw handler must
		 * fault for. */
		.flags = PIN_CLIENT_REGION_NO_PUSH,
		.fd = fd,
	};
	if ((r = pin_client_connect(&co, &k->c)) < 0 || (r = pin_client_handover(k->c, k->u)) < 0 ||
	    (r = pin_client_region_add(k->c, &rg)) < 0)
		bench_die("connect, handover or region", r);
}

static void client_close(struct client *k)
{
	pin_client_free(k->c);
	pin_uffd_free(k->u);
	munmap(k->base, k->npages * page);
	free(k->order);
}

/* Read the first byte of every page, each read timed. */
static void *client_touch(void *arg)
{
	struct client *k = arg;

	if (k->go)
		pthread_barrier_wait(k->go);
	for (size_t i = 0; i < k->npages; i++) {
		size_t p = k->order ? k->order[i] : i;
		uint64_t t0 = bench_now_ns();
		uint8_t v = *(const volatile uint8_t *)(k->base + p * page);
		k->lat[i] = (double)(bench_now_ns() - t0) / 1000.0;
		if (v != fill_of(p))
			bench_die("a page read wrong", EIO);
	}
	return NULL;
}

/* ---- the raw handler: one thread, poll(2) over every userfaultfd ---- */

struct raw {
	struct client *k;
	int n;
	const uint8_t *src;
	int stop; /* eventfd */
};

static void raw_serve(const struct raw *r, const struct client *k)
{
	struct uffd_msg msg[RAW_BATCH];
	ssize_t got;

	while ((got = read(pin_uffd_fd(k->u), msg, sizeof(msg))) > 0) {
		for (size_t i = 0; i < (size_t)got / sizeof(*msg); i++) {
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uintptr_t a =
				(uintptr_t)msg[i].arg.pagefault.address & ~(uintptr_t)(page - 1);
			int ret = pin_uffd_copy(k->u, (void *)a, r->src + (a - (uintptr_t)k->base),
						page, 0, NULL);
			if (ret < 0 && ret != -EEXIST)
				bench_die("raw UFFDIO_COPY", ret);
		}
	}
	if (got < 0 && errno != EAGAIN)
		bench_die("raw read", errno);
}

static void *raw_handler(void *arg)
{
	struct raw *r = arg;
	struct pollfd p[NCLIENTS + 1];

	for (int i = 0; i < r->n; i++)
		p[i] = (struct pollfd){ .fd = pin_uffd_fd(r->k[i].u), .events = POLLIN };
	p[r->n] = (struct pollfd){ .fd = r->stop, .events = POLLIN };
	for (;;) {
		if (poll(p, (nfds_t)r->n + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			bench_die("poll", errno);
		}
		if (p[r->n].revents)
			return NULL;
		for (int i = 0; i < r->n; i++)
			if (p[i].revents)
				raw_serve(r, &r->k[i]);
	}
}

/* ---- one measurement ---- */

/* What the daemon's histograms of the sessions hold: summed counts. */
static uint64_t hist[PIN_CLIENT_LATENCY_BUCKETS];

/*
 * n clients of npages each touch every page (in a random order when
 * random), served by uffdd, or by the raw handler copying from src: the
 * n * npages touch times into lat.  uffdd's sessions' histograms are added
 * to hist.
 */
static void measure(int fd, const uint8_t *src, int n, size_t npages, bool random, bool raw,
		    double *lat)
{
	struct client k[NCLIENTS];
	pthread_barrier_t go;
	struct raw r = { .k = k, .n = n, .src = src, .stop = -1 };
	pthread_t rth;

	for (int i = 0; i < n; i++) {
		k[i] = (struct client){ .npages = npages, .lat = lat + (size_t)i * npages };
		k[i].order = random ? bench_shuffled(npages, 0x9e3779b9u + (uint64_t)i) : NULL;
		k[i].go = n > 1 ? &go : NULL;
		client_open(&k[i], fd, raw);
	}
	if (raw) {
		r.stop = eventfd(0, EFD_CLOEXEC);
		if (r.stop < 0 || pthread_create(&rth, NULL, raw_handler, &r))
			bench_die("raw handler", errno);
	}
	if (n == 1) {
		client_touch(&k[0]);
	} else {
		if (pthread_barrier_init(&go, NULL, (unsigned int)n))
			bench_die("pthread_barrier_init", EINVAL);
		for (int i = 0; i < n; i++)
			if (pthread_create(&k[i].th, NULL, client_touch, &k[i]))
				bench_die("pthread_create", EAGAIN);
		for (int i = 0; i < n; i++)
			pthread_join(k[i].th, NULL);
		pthread_barrier_destroy(&go);
	}
	if (raw) {
		uint64_t one = 1;
		if (write(r.stop, &one, sizeof(one)) != sizeof(one))
			bench_die("write eventfd", errno);
		pthread_join(rth, NULL);
		close(r.stop);
	}
	for (int i = 0; i < n; i++) {
		struct pin_client_stats st;
		if (!raw) {
			int ret = pin_client_stats(k[i].c, 0, &st);
			if (ret < 0)
				bench_die("pin_client_stats", ret);
			for (int b = 0; b < PIN_CLIENT_LATENCY_BUCKETS; b++)
				hist[b] += st.latency_us_log2[b];
		}
		client_close(&k[i]);
	}
}

/* The upper bound, us, of the histogram's bucket that holds its q-quantile. */
static double hist_percentile(double q)
{
	uint64_t total = 0, seen = 0;

	for (int b = 0; b < PIN_CLIENT_LATENCY_BUCKETS; b++)
		total += hist[b];
	for (int b = 0; b < PIN_CLIENT_LATENCY_BUCKETS; b++) {
		seen += hist[b];
		if ((double)seen >= q * (double)total)
			return (double)(2ull << b);
	}
	return 0;
}

/* An order measured raw, then by uffdd: its metric lines. */
static void order(const char *name, int fd, const uint8_t *src, int n, size_t npages, bool random)
{
	static const struct {
		const char *name;
		double q;
	} qs[] = { { "p50", 0.50 }, { "p99", 0.99 }, { "p999", 0.999 } };
	size_t total = (size_t)n * npages;
	double *raw = malloc(total * sizeof(*raw)), *served = malloc(total * sizeof(*served));
	char m[128];

	if (!raw || !served)
		bench_die("malloc", ENOMEM);
	memset(hist, 0, sizeof(hist));
	measure(fd, src, n, npages, random, true, raw);
	measure(fd, src, n, npages, random, false, served);
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		double r = bench_percentile(raw, total, qs[i].q);
		double u = bench_percentile(served, total, qs[i].q);
		snprintf(m, sizeof(m), "fault_touch_%s_%s_us", name, qs[i].name);
		bench_metric(m, u, "us");
		snprintf(m, sizeof(m), "fault_touch_%s_raw_%s_us", name, qs[i].name);
		bench_metric(m, r, "us");
		snprintf(m, sizeof(m), "fault_touch_%s_%s_vs_raw", name, qs[i].name);
		bench_metric(m, u / r, "x");
	}
	if (random) {
		snprintf(m, sizeof(m), "fault_touch_%s_histogram_p99_us", name);
		bench_metric(m, hist_percentile(0.99), "us");
	}
	free(raw);
	free(served);
}

int main(int argc, char **argv)
{
	if (bench_smoke(argc, argv))
		sz = smoke;
	page = (size_t)sysconf(_SC_PAGESIZE);
	signal(SIGPIPE, SIG_IGN);
	size_t npages = sz.one_pages > sz.client_pages ? sz.one_pages : sz.client_pages;
	int fd = bench_memfd_source(npages * page, page);
	const uint8_t *src = mmap(NULL, npages * page, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);

	if (src == MAP_FAILED)
		bench_die("mmap source", errno);
	bench_uffdd_start(&ud);
	order("seq", fd, src, 1, sz.one_pages, false);
	order("random", fd, src, 1, sz.one_pages, true);
	order("clients64", fd, src, NCLIENTS, sz.client_pages, true);
	bench_uffdd_stop(&ud);
	munmap((void *)src, npages * page);
	close(fd);
	return 0;
}
