// SPDX-License-Identifier: MIT
/*
 * Remote pages (issue 13): a process whose 256 MiB come from a page server
 * of CRIU's protocol on loopback (a child of this benchmark that answers
 * every PS_IOV_GET at once, 1 MiB at most per answer, as CRIU's does), read
 * one word of every page in a random order, each restore in a fresh child:
 *  - lazy: the connected socket handed to uffdd as the region's source
 *    (SOURCE_PAGE_SERVER): faults and the push ask for the pages;
 *  - eager: what uffdd-lazy-pages --page-server did before: every page
 *    fetched first (pin_ps_fetch(), 64 GETs in flight) into a memfd, which
 *    then becomes the region's source as a file.
 * "done" is from the start (connect) until the process has read every page.
 * remote_256m_rand_lazy_vs_eager_x is eager done / lazy done (above 1: the
 * lazy restore has read everything sooner).  Medians of argv[1] runs
 * (default 5); with --smoke, one run over 1 MiB (names keep "256m").
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin-private.h"
#include "loopback.h"

#define REMOTE_BASE  0x7f3400000000ull
#define TASK	     77
#define BYTES	     (256ull << 20)
#define SMOKE_BYTES  (1ull << 20)
#define DEFAULT_RUNS 5
#define TIMEOUT_MS   30000
/* criu/page-xfer.c */
#define PS_IOV_ADD_F 6
#define PS_IOV_GET   7
#define PS_IOV_CLOSE 0x1023
#define PE_PRESENT   4
/* CRIU answers 1 MiB at most. */
#define ANSWER_PAGES 256

struct iov {
	uint32_t cmd;
	uint64_t nr_pages, vaddr, dst_id;
};

struct result {
	double done_ms;
	uint64_t bad;
};

static size_t page, npages;
static uint64_t bytes = BYTES;
static uint32_t *order;
static uint16_t port;
static struct bench_uffdd ud;

static uint64_t word_of(uint64_t vaddr)
{
	return vaddr * 0x9e3779b97f4a7c15ull | 1;
}

static bool io_all(int fd, void *buf, size_t len, bool out)
{
	for (size_t k = 0; k < len;) {
		ssize_t n = out ? send(fd, (char *)buf + k, len - k, MSG_NOSIGNAL)
				: recv(fd, (char *)buf + k, len - k, 0);
		if (n <= 0)
			return false;
		k += (size_t)n;
	}
	return true;
}

/* One connection: every GET answered at once, pages patterned by address. */
static void serve(int sk)
{
	uint64_t *buf = malloc(ANSWER_PAGES * page);
	struct iov q;

	while (buf && io_all(sk, &q, sizeof(q), false)) {
		if (q.cmd == PS_IOV_CLOSE) {
			int32_t status = 0;
			io_all(sk, &status, sizeof(status), true);
			break;
		}
		uint64_t nr = q.nr_pages < ANSWER_PAGES ? q.nr_pages : ANSWER_PAGES;
		for (uint64_t i = 0; i < nr; i++)
			for (size_t w = 0; w < page / 8; w++)
				buf[i * page / 8 + w] = word_of(q.vaddr + i * page) + w;
		struct iov a;
		/* Its padding too: what goes on the wire is all defined. */
		memset(&a, 0, sizeof(a));
		a.cmd = PS_IOV_ADD_F | PE_PRESENT << 16;
		a.nr_pages = nr;
		a.vaddr = q.vaddr;
		a.dst_id = q.dst_id;
		if (!io_all(sk, &a, sizeof(a), true) || !io_all(sk, buf, nr * page, true))
			break;
	}
	free(buf);
	close(sk);
}

static pid_t server_start(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int lsk = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (lsk < 0 || bind(lsk, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lsk, 8) < 0 ||
	    getsockname(lsk, (struct sockaddr *)&sa, &len) < 0)
		bench_die("the page server's socket", errno);
	port = ntohs(sa.sin_port);
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork", errno);
	if (pid == 0) {
		for (;;) {
			int one = 1, sk = accept4(lsk, NULL, NULL, SOCK_CLOEXEC);
			/* As CRIU's: no Nagle wait between an answer's parts. */
			if (sk >= 0 &&
			    setsockopt(sk, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0)
				serve(sk);
		}
	}
	close(lsk);
	return pid;
}

/* Read one word of every page in the random order: the pages wrong. */
static uint64_t touch(const uint8_t *base)
{
	uint64_t bad = 0;

	for (size_t k = 0; k < npages; k++) {
		size_t i = order[k];
		bad += *(const volatile uint64_t *)(base + i * page) !=
		       word_of(REMOTE_BASE + i * page);
	}
	return bad;
}

/* The restored process: its region from the socket (lazy) or from a memfd
 * of every page fetched first (eager). */
static void restore(const void *arg, void *out)
{
	bool lazy = *(const bool *)arg;
	struct result *res = out;
	struct pin_client_opts co = { .sz = sizeof(co), .socket = ud.sock, .name = "bench" };
	struct pin_client *c;
	struct pin_uffd *u;
	uint64_t t0 = bench_now_ns();
	int sk = loopback_connect(port), fd = sk, r;
	uint8_t *base = bench_map_anon(bytes);

	if (sk < 0)
		bench_die("connect to the page server", sk);

	if (!lazy) {
		struct pin_ps *ps;
		fd = memfd_create("bench-remote", MFD_CLOEXEC);
		void *m = fd < 0 || ftruncate(fd, (off_t)bytes) < 0
				  ? MAP_FAILED
				  : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			bench_die("the memfd", errno);
		struct pin_ps_range rg = { REMOTE_BASE, npages, m };
		if ((r = pin_ps_from_fd(sk, "bench", &ps)) < 0 ||
		    (r = pin_ps_fetch(ps, TASK, &rg, 1, TIMEOUT_MS)) < 0 ||
		    (r = pin_ps_close(ps, TIMEOUT_MS)) < 0)
			bench_die("the eager fetch", r);
		pin_ps_free(ps);
		munmap(m, bytes);
	}
	struct pin_client_region rg = {
		.sz = sizeof(rg),
		.addr = base,
		.len = bytes,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = lazy ? PIN_CLIENT_REGION_PAGE_SERVER : 0,
		.fd = fd,
		.offset = lazy ? REMOTE_BASE : 0,
		.task = TASK,
	};
	u = bench_uffd_new();
	if ((r = pin_client_connect(&co, &c)) < 0 || (r = pin_client_handover(c, u)) < 0 ||
	    (r = pin_uffd_register(u, base, bytes, PIN_UFFD_REGISTER_MISSING, NULL)) < 0 ||
	    (r = pin_client_region_add(c, &rg)) < 0)
		bench_die("the region", r);
	close(fd);
	res->bad = touch(base);
	res->done_ms = (double)(bench_now_ns() - t0) / 1e6;
	pin_client_free(c);
	pin_uffd_free(u);
}

static double measure(bool lazy, unsigned int runs)
{
	double v[BENCH_MAX_RUNS];

	for (unsigned int i = 0; i < runs; i++) {
		struct result res;
		int r = bench_in_child(restore, &lazy, &res, sizeof(res));
		if (r < 0)
			bench_die(lazy ? "a lazy restore" : "an eager restore", r);
		if (res.bad)
			bench_die("pages read wrong", EIO);
		v[i] = res.done_ms;
	}
	return bench_median(v, runs);
}

int main(int argc, char **argv)
{
	unsigned int runs = bench_runs(argc, argv, DEFAULT_RUNS, &bytes, SMOKE_BYTES);

	page = (size_t)sysconf(_SC_PAGESIZE);
	npages = bytes / page;
	order = bench_shuffled(npages, 0x9e3779b97f4a7c15ull);
	pid_t server = server_start();
	bench_uffdd_start(&ud);
	/* Interleaved, so that a slow moment of the machine hits both alike. */
	double lazy[BENCH_MAX_RUNS], eager[BENCH_MAX_RUNS];
	for (unsigned int i = 0; i < runs; i++) {
		lazy[i] = measure(true, 1);
		eager[i] = measure(false, 1);
	}
	double l = bench_median(lazy, runs), e = bench_median(eager, runs);
	bench_metric("remote_256m_rand_lazy_done", l, "ms");
	bench_metric("remote_256m_rand_eager_done", e, "ms");
	bench_metric("remote_256m_rand_lazy_vs_eager_x", e / l, "x");
	bench_uffdd_stop(&ud);
	kill(server, SIGTERM);
	waitpid(server, NULL, 0);
	free(order);
	return 0;
}
