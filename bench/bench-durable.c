// SPDX-License-Identifier: MIT
/*
 * What a kill -9 of uffdd costs a client (issue 11).  uffdd runs under the
 * fake systemd 252 of tests/manager.c (socket activation, the fd store),
 * which restarts it at once: no RestartSec= delay.  This process is the
 * client: a region served from a memfd, nothing pushed.  Each round stops
 * the daemon (SIGSTOP), has a thread fault on a page it has not placed, and
 * once that thread sleeps in the fault kills the daemon with SIGKILL:
 *  - restart_gap_ms: from the SIGKILL to the fault served by the new
 *    daemon (the faulting thread returns), median of the rounds;
 *  - restart_ready_ms: from the SIGKILL to the new daemon's READY=1;
 *  - restart_gap_supervised_ms: restart_gap_ms of `uffdd --socket PATH`,
 *    whose own supervisor keeps the store and restarts its serving child;
 *    five rounds at most (its give-up rule: a sixth death within 10 s).
 * Rounds: argv[1] (default 21); with --smoke, 3.  The daemon is $UFFDD,
 * else the uffdd built next to this benchmark.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin.h"
#include "manager.h"

#define DEFAULT_ROUNDS 21
#define SMOKE_ROUNDS   3
#define MAX_ROUNDS     1000
/* uffdd's supervisor gives up at the sixth death within 10 s (systemd's
 * StartLimitBurst=5 in StartLimitIntervalSec=10s): at most five kills there. */
#define SUPERVISED_ROUNDS 5
/* A daemon start, or a fault once a daemon runs, takes far less. */
#define WAIT_MS 10000
/* Far above what one session stores. */
#define STORE_MAX 64
/* Polling a thread's wchan while it goes to sleep in its fault. */
#define WCHAN_POLL_NS 100000L
#define WCHAN_FAULT   "handle_userfault"
#define PAGE_BYTE(i)  ((int)((i) % 255) + 1)
/* The source is written this much at a time (a page is a multiple of it). */
#define FILL_CHUNK 4096

static size_t page;
static struct manager *mgr;
static char dir[] = "/tmp/bench-durable-XXXXXX";
static struct bench_uffdd ud;
static pid_t victim; /* the supervisor's serving child, maybe stopped */

/* Say why, and leave nothing behind: the daemons, the sockets, the directory. */
static void die(const char *what, int err)
{
	fprintf(stderr, "bench-durable: %s: %s\n", what, strerror(err < 0 ? -err : err));
	manager_free(mgr);
	rmdir(dir);
	if (victim > 0)
		kill(victim, SIGKILL);
	if (ud.pid > 0)
		bench_uffdd_stop(&ud);
	exit(1);
}

struct toucher {
	pthread_t thread;
	_Atomic pid_t tid;
	const volatile uint8_t *addr;
	int want;
	_Atomic uint64_t done_ns; /* when the read returned */
};

static void *touch(void *arg)
{
	struct toucher *t = arg;

	t->tid = (pid_t)syscall(SYS_gettid);
	int got = *t->addr;
	t->done_ns = bench_now_ns();
	return got == t->want ? NULL : (void *)1;
}

/* Until thread tid sleeps in a fault. */
static void wait_in_fault(pid_t tid)
{
	char path[64], buf[64];
	struct timespec pause = { 0, WCHAN_POLL_NS };
	uint64_t end = bench_now_ns() + WAIT_MS * 1000000ull;

	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", (int)tid);
	for (;;) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			die(path, errno);
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		if (!strcmp(buf, WCHAN_FAULT))
			return;
		if (bench_now_ns() > end)
			die("the faulting thread never slept in its fault", ETIMEDOUT);
		nanosleep(&pause, NULL);
	}
}

/* Join within WAIT_MS of the restart: the fault must be served by then. */
static void join_served(struct toucher *t)
{
	struct timespec ts;
	void *ret;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WAIT_MS / 1000;
	int r = pthread_timedjoin_np(t->thread, &ret, &ts);
	if (r)
		die("the fault pending at the kill was not served by the new daemon", r);
	if (ret)
		die("the page read back wrong", EIO);
}

/* A client of the daemon on sock: a region of npages, page i all PAGE_BYTE(i). */
struct client {
	struct pin_client *c;
	struct pin_uffd *u;
	uint8_t *base;
	size_t len;
	int src;
};

static void client_open(struct client *k, const char *sock, size_t npages)
{
	uint8_t buf[FILL_CHUNK];
	int r;

	k->len = npages * page;
	k->src = memfd_create("bench-durable", MFD_CLOEXEC);
	if (k->src < 0 || ftruncate(k->src, (off_t)k->len) < 0)
		die("memfd", errno);
	for (size_t i = 0; i < npages; i++) {
		memset(buf, PAGE_BYTE(i), sizeof(buf));
		for (size_t off = 0; off < page; off += sizeof(buf))
			if (pwrite(k->src, buf, sizeof(buf), (off_t)(i * page + off)) !=
			    sizeof(buf))
				die("pwrite", errno);
	}
	k->base = mmap(NULL, k->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (k->base == MAP_FAILED || madvise(k->base, k->len, MADV_NOHUGEPAGE) < 0)
		die("mmap", errno);
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = sock, .name = "bench-durable" };
	struct pin_client_region reg = { .sz = sizeof(reg),
					 .addr = k->base,
					 .len = k->len,
					 .mode = PIN_UFFD_REGISTER_MISSING,
					 .flags = PIN_CLIENT_REGION_NO_PUSH |
						  PIN_CLIENT_REGION_REGISTER,
					 .fd = k->src };
	if ((r = pin_uffd_new(&uo, &k->u)) < 0 || (r = pin_client_connect(&co, &k->c)) < 0 ||
	    (r = pin_client_handover(k->c, k->u)) < 0 ||
	    (r = pin_client_region_add(k->c, &reg)) < 0)
		die("the client", r);
}

static void client_close(struct client *k)
{
	pin_client_free(k->c);
	pin_uffd_free(k->u);
	close(k->src);
	munmap(k->base, k->len);
}

/* The serving child of uffdd's supervisor sup, but not gone (the one killed). */
static pid_t serving_child(pid_t sup, pid_t gone)
{
	uint64_t end = bench_now_ns() + WAIT_MS * 1000000ull;
	struct timespec pause = { 0, WCHAN_POLL_NS };

	for (;;) {
		DIR *d = opendir("/proc");
		if (!d)
			die("/proc", errno);
		for (struct dirent *e; (e = readdir(d));) {
			char path[64], line[256];
			pid_t pid = (pid_t)atoi(e->d_name);
			if (pid <= 0 || pid == gone)
				continue;
			snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
			FILE *f = fopen(path, "re");
			if (!f)
				continue;
			char *ok = fgets(line, sizeof(line), f);
			fclose(f);
			const char *p = ok ? strrchr(line, ')') : NULL;
			int ppid;
			if (p && sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == sup) {
				closedir(d);
				return pid;
			}
		}
		closedir(d);
		if (bench_now_ns() > end)
			die("uffdd's supervisor has no serving child", ESRCH);
		nanosleep(&pause, NULL);
	}
}

/*
 * Round i: stop the daemon, fault on page pg, kill the daemon once the
 * thread sleeps in the fault; *ret_gap: kill to the fault served.  Under the
 * manager it restarts the daemon (*ret_ready: kill to READY=1); under uffdd's
 * supervisor (sup) the victim is its serving child, which it restarts.
 */
static void round_once(struct client *k, size_t pg, pid_t sup, double *ret_gap, double *ret_ready)
{
	struct toucher t = { .addr = k->base + pg * page, .want = PAGE_BYTE(pg) };
	int r;

	if (sup)
		victim = serving_child(sup, victim);
	r = sup ? manager_freeze_pid(victim, WAIT_MS) : manager_freeze(mgr);
	if (r < 0)
		die("SIGSTOP of uffdd", r);
	if ((r = -pthread_create(&t.thread, NULL, touch, &t)) < 0)
		die("pthread_create", r);
	while (!t.tid)
		sched_yield();
	wait_in_fault(t.tid);
	uint64_t t0 = bench_now_ns();
	if (sup && kill(victim, SIGKILL) < 0)
		die("kill -9 of the serving child", errno);
	if (!sup && (r = manager_kill9_restart(mgr)) < 0)
		die("kill -9 and restart", r);
	if (ret_ready)
		*ret_ready = (double)(bench_now_ns() - t0) / 1e6;
	join_served(&t);
	*ret_gap = (double)(t.done_ns - t0) / 1e6;
}

int main(int argc, char **argv)
{
	bool smoke = bench_smoke(argc, argv);
	unsigned int rounds = smoke ? SMOKE_ROUNDS : DEFAULT_ROUNDS;
	static const char *const args[] = { "--workers", "2", NULL };
	double gap[MAX_ROUNDS], ready[MAX_ROUNDS];
	char exe[BENCH_PATH_MAX];
	struct client k;
	int r;

	if (!smoke && argc > 1)
		rounds = (unsigned int)strtoul(argv[1], NULL, 10);
	if (!rounds || rounds > MAX_ROUNDS)
		die("rounds: 1 to 1000", EINVAL);
	page = (size_t)sysconf(_SC_PAGESIZE);
	bench_uffdd_exe(exe, sizeof(exe));
	if (!mkdtemp(dir))
		die("mkdtemp", errno);
	struct manager_opts o = {
		.dir = dir, .exe = exe, .args = args, .store_max = STORE_MAX, .ready_ms = WAIT_MS
	};
	if ((r = manager_new(&o, &mgr)) < 0 || (r = manager_start(mgr)) < 0)
		die("uffdd under the manager", r);
	client_open(&k, manager_socket(mgr), rounds);
	/* Backwards, one page a round: no readahead placed it before. */
	for (unsigned int i = 0; i < rounds; i++)
		round_once(&k, rounds - 1 - i, 0, &gap[i], &ready[i]);
	bench_metric("restart_gap_ms", bench_median(gap, rounds), "ms");
	bench_metric("restart_ready_ms", bench_median(ready, rounds), "ms");
	client_close(&k);
	if ((r = manager_stop(mgr)) < 0)
		die("stopping uffdd", r);
	manager_free(mgr);
	mgr = NULL;
	if (rmdir(dir) < 0)
		die(dir, errno);

	/* uffdd --socket PATH: its own supervisor keeps the store. */
	unsigned int sr = rounds < SUPERVISED_ROUNDS ? rounds : SUPERVISED_ROUNDS;
	bench_uffdd_start(&ud);
	client_open(&k, ud.sock, sr);
	for (unsigned int i = 0; i < sr; i++)
		round_once(&k, sr - 1 - i, ud.pid, &gap[i], NULL);
	bench_metric("restart_gap_supervised_ms", bench_median(gap, sr), "ms");
	client_close(&k);
	bench_uffdd_stop(&ud);
	ud.pid = 0;
	return 0;
}
