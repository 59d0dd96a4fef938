// SPDX-License-Identifier: MIT
/*
 * A Firecracker restore of 256 MiB of guest memory (issue 15): the bench
 * process plays Firecracker (tests/test-firecracker.c's fake VMM: a
 * userfaultfd with EVENT_REMOVE, anonymous private guest memory registered
 * MISSING, the JSON handshake with the userfaultfd), then reads one word of
 * every guest page in a random order, as one vCPU would, each checked.
 * Served by:
 *  - uffdd --firecracker-socket (batched faults, readahead, push);
 *  - example: a handler written to Firecracker's example handlers'
 *    behaviour (src/firecracker/examples/uffd/on_demand_handler.rs): one
 *    process that accepts the connection, maps the memory file MAP_PRIVATE,
 *    reads the userfaultfd's events one read() each and places one page
 *    per fault with UFFDIO_COPY.
 * Each time runs from the VMM's connect() to its last page read.  Medians of
 * argv[1] runs of each (default 5, interleaved); with --smoke, one run of
 * each over 8 MiB (the metric names keep "256m").  The daemon is $UFFDD,
 * else the uffdd built next to this benchmark.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-common.h"
#include "fc-uffd.h"
#include "libpin.h"

#define MEM_BYTES    (256ull << 20)
#define SMOKE_BYTES  (8ull << 20)
#define MAX_RUNS     64
#define DEFAULT_RUNS 5
/* How long uffdd or the example handler may take to listen (10 ms polls). */
#define UP_POLLS   1000
#define UP_POLL_US 10000
/* Room for the handshake the example handler reads (Firecracker's own read 1 KiB). */
#define HANDSHAKE_MAX 1024

static size_t page, mem_bytes;
static char dir[64], mem[96], fcsock[96], ctlsock[96];
static uint32_t *order; /* a random permutation of the pages */

static uint64_t word_of(uint64_t i)
{
	return i * 0x9e3779b97f4a7c15ull + 1;
}

/* The memory file: page i starts with word_of(i), the rest of it zero. */
static void make_mem(void)
{
	int fd = open(mem, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)mem_bytes) < 0)
		bench_die("memory file", errno);
	for (uint64_t i = 0; i < mem_bytes / page; i++) {
		uint64_t w = word_of(i);
		if (pwrite(fd, &w, sizeof(w), (off_t)(i * page)) != sizeof(w))
			bench_die("pwrite", errno);
	}
	close(fd);
}

/* ---- the VMM (Firecracker's side) ---- */

/* Restore through the handler on fcsock: ms from connect() to the last
 * page read; exits on a wrong word. */
static double vmm_restore(void)
{
	int uffd = fc_uffd_open();
	if (uffd < 0)
		bench_die("userfaultfd", uffd);
	uint8_t *g = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (g == MAP_FAILED)
		bench_die("mmap guest memory", errno);
	struct uffdio_register reg = { .range = { (uintptr_t)g, mem_bytes },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		bench_die("UFFDIO_REGISTER", errno);
	char json[256];
	int n = snprintf(json, sizeof(json),
			 "[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":0,"
			 "\"page_size\":%zu,\"page_size_kib\":%zu}]",
			 (uint64_t)(uintptr_t)g, mem_bytes, page, page);
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cm = { 0 };
	struct iovec iov = { json, (size_t)n };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cm.b,
			     .msg_controllen = sizeof(cm.b) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &uffd, sizeof(int));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fcsock);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	uint64_t t0 = bench_now_ns();
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		bench_die("connect", errno);
	if (sendmsg(s, &mh, MSG_NOSIGNAL) != n)
		bench_die("sendmsg", errno);
	for (size_t i = 0; i < mem_bytes / page; i++) {
		uint64_t w;
		memcpy(&w, g + (size_t)order[i] * page, sizeof(w));
		if (w != word_of(order[i])) {
			fprintf(stderr, "bench-firecracker: page %u holds %#" PRIx64 "\n", order[i],
				w);
			exit(1);
		}
	}
	uint64_t t1 = bench_now_ns();
	close(s);
	close(uffd);
	munmap(g, mem_bytes);
	return (double)(t1 - t0) / 1e6;
}

/* ---- the example handler (Firecracker's on_demand_handler, in C) ---- */

static int example_handler(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fcsock);
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 1) < 0)
		bench_die("example: bind", errno);
	int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		bench_die("example: accept", errno);
	int mfd = open(mem, O_RDONLY | O_CLOEXEC);
	const uint8_t *back = mmap(NULL, mem_bytes, PROT_READ, MAP_PRIVATE, mfd, 0);
	if (mfd < 0 || back == MAP_FAILED)
		bench_die("example: memory file", errno);
	char buf[HANDSHAKE_MAX + 1];
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec iov = { buf, HANDSHAKE_MAX };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cm.b,
			     .msg_controllen = sizeof(cm.b) };
	ssize_t n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	unsigned long long base, size, off;
	int uffd;
	if (n <= 0 || !c || c->cmsg_type != SCM_RIGHTS)
		bench_die("example: handshake", n < 0 ? errno : EBADMSG);
	buf[n] = '\0';
	memcpy(&uffd, CMSG_DATA(c), sizeof(int));
	if (sscanf(buf, "[{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":%llu", &base,
		   &size, &off) != 3)
		bench_die("example: mappings", EBADMSG);
	struct pollfd p[2] = { { uffd, POLLIN, 0 }, { s, POLLIN, 0 } };
	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			bench_die("example: poll", errno);
		/* The VMM closed its end: it is done. */
		if (p[1].revents & (POLLIN | POLLHUP))
			return 0;
		struct uffd_msg m;
		while (read(uffd, &m, sizeof(m)) == (ssize_t)sizeof(m)) {
			if (m.event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t a = m.arg.pagefault.address & ~(uint64_t)(page - 1);
			struct uffdio_copy cp = { .dst = a,
						  .src = (uintptr_t)(back + (a - base + off)),
						  .len = page };
			if (ioctl(uffd, UFFDIO_COPY, &cp) < 0 && errno != EEXIST)
				bench_die("example: UFFDIO_COPY", errno);
		}
	}
}

static double example_restore(void)
{
	unlink(fcsock);
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork", errno);
	if (!pid)
		_exit(example_handler());
	struct stat st;
	for (int i = 0; i < UP_POLLS && stat(fcsock, &st) < 0; i++)
		usleep(UP_POLL_US);
	/* Bound and listening a moment after the file appears. */
	usleep(UP_POLL_US);
	double ms = vmm_restore();
	int status;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		bench_die("the example handler failed", ECHILD);
	unlink(fcsock);
	return ms;
}

/* ---- uffdd ---- */

static double uffdd_restore(void)
{
	char bin[BENCH_PATH_MAX];
	struct pin_client_opts co = { .sz = sizeof(co), .socket = ctlsock };
	struct pin_client *cl;

	bench_uffdd_exe(bin, sizeof(bin));
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork", errno);
	if (!pid) {
		execl(bin, "uffdd", "--no-supervisor", "--socket", ctlsock, "--firecracker-socket",
		      fcsock, "--mem-file", mem, (char *)NULL);
		_exit(127);
	}
	/* Up once it answers a Hello: its Firecracker socket listens by then. */
	int i = 0;
	for (; i < UP_POLLS && pin_client_connect(&co, &cl) < 0; i++)
		usleep(UP_POLL_US);
	if (i == UP_POLLS)
		bench_die("uffdd did not start", ETIMEDOUT);
	pin_client_free(cl);
	double ms = vmm_restore();
	int status;
	kill(pid, SIGTERM);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		bench_die("uffdd did not exit 0", ECHILD);
	return ms;
}

int main(int argc, char **argv)
{
	bool smoke = bench_smoke(argc, argv);
	unsigned int runs = smoke ? 1 : DEFAULT_RUNS;
	double u[MAX_RUNS], e[MAX_RUNS];

	if (!smoke && argc > 1 && strcmp(argv[1], "--smoke"))
		runs = (unsigned int)strtoul(argv[1], NULL, 10);
	if (!runs || runs > MAX_RUNS)
		bench_die("runs: 1 to 64", EINVAL);
	page = (size_t)sysconf(_SC_PAGESIZE);
	mem_bytes = smoke ? SMOKE_BYTES : MEM_BYTES;
	snprintf(dir, sizeof(dir), "/tmp/bench-fc-XXXXXX");
	if (!mkdtemp(dir))
		bench_die("mkdtemp", errno);
	snprintf(mem, sizeof(mem), "%s/mem", dir);
	snprintf(fcsock, sizeof(fcsock), "%s/fc.sock", dir);
	snprintf(ctlsock, sizeof(ctlsock), "%s/sock", dir);
	make_mem();
	size_t np = mem_bytes / page;
	order = malloc(np * sizeof(*order));
	if (!order)
		bench_die("malloc", ENOMEM);
	uint64_t x = bench_now_ns() | 1;
	for (size_t i = 0; i < np; i++)
		order[i] = (uint32_t)i;
	for (size_t i = np; i > 1; i--) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t j = (size_t)(x % i);
		uint32_t t = order[i - 1];
		order[i - 1] = order[j];
		order[j] = t;
	}
	for (unsigned int r = 0; r < runs; r++) {
		u[r] = uffdd_restore();
		e[r] = example_restore();
	}
	double um = bench_median(u, runs), em = bench_median(e, runs);
	bench_metric("fc_256m_rand_uffdd_ms", um, "ms");
	bench_metric("fc_256m_rand_example_handler_ms", em, "ms");
	bench_metric("fc_256m_rand_vs_example_handler", um / em, "x");
	unlink(mem);
	unlink(fcsock);
	unlink(ctlsock);
	rmdir(dir);
	free(order);
	return 0;
}
