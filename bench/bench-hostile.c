// SPDX-License-Identifier: MIT
/*
 * An honest restore beside an attacker (issue 12): for each attack class,
 * hostile_<class>_neighbor_x is the honest client's restore time (HONEST_BYTES
 * over a patterned file, faulted in random order) beside the attacker
 * divided by the same restore alone, both measured in this run (median of
 * the rounds; the goal is 1.5 or less, printed, not asserted).
 * reference_cpu_hog_neighbor_x is the same beside a process that only keeps
 * a CPU busy, never talking to uffdd: the CPU scheduler's share and this
 * machine's noise, which no daemon undoes for an attacker that keeps a CPU
 * busy too.  The attacker is a child process; as root it becomes uid
 * ATTACKER_UID first, so that per-uid limits do not charge the honest client
 * for it.  The daemon is $UFFDD, else the uffdd built next to this benchmark.
 * With --smoke: 1 MiB restores, one round.  Classes named as arguments
 * (replay_present cpu_hog ...) are the only ones run.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin-private.h"
#include "stuck-fuse.h"

#define HONEST_BYTES	   (16u << 20)
#define SMOKE_HONEST_BYTES (1u << 20)
#define HONEST_THREADS	   4
/* An honest restore takes some 10 to 30 ms, about one time slice of another
 * process on 2 CPUs: the median of 15 pairs (alone, beside) stands still
 * where that of 5 swung with whatever else ran. */
#define ROUNDS	     15
#define ATTACKER_UID 65534
/* Attack sizes: a fork client's regions, waiters, threads outside regions,
 * the pages a Replay finds already there. */
#define FORK_REGIONS  256
#define WAITERS	      64
#define OUT_THREADS   64
#define PRESENT_BYTES (64u << 20)
#define BAD_PAGES     256
#define WAIT_BYTES    (1ull << 40)
#define RAW_SEQ0      (1ull << 32)
/* The CPU hog's spins between looks at its stop pipe (some 100 us). */
#define HOG_SPINS (1u << 16)

static size_t page, honest_bytes = HONEST_BYTES;
static int rounds = ROUNDS;
static struct bench_uffdd ud;
static int src; /* the honest client's source */

/* In a child: report and exit 1. */
#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "bench-hostile: %s:%d: %s failed\n", __FILE__, __LINE__,   \
				#c);                                                               \
			_exit(1);                                                                  \
		}                                                                                  \
	} while (0)

static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED);
	CHECK(madvise(p, len, MADV_NOHUGEPAGE) == 0);
	return p;
}

static struct pin_uffd *uffd_new(void)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_FORK,
		.optional = PIN_UFFD_FEATURE_POISON,
	};
	struct pin_uffd *u;

	CHECK(pin_uffd_new(&uo, &u) == 0);
	return u;
}

static struct pin_client *connect_as(const char *name, struct pin_uffd *u)
{
	struct pin_client_opts co = { .sz = sizeof(co), .socket = ud.sock, .name = name };
	struct pin_client *c;

	CHECK(pin_client_connect(&co, &c) == 0);
	if (u)
		CHECK(pin_client_handover(c, u) == 0);
	return c;
}

static void region(struct pin_client *c, struct pin_uffd *u, void *addr, size_t len, int fd,
		   bool reg)
{
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = addr,
		.len = len,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH,
		.fd = fd,
	};

	if (reg)
		CHECK(pin_uffd_register(u, addr, len, PIN_UFFD_REGISTER_MISSING, NULL) == 0);
	CHECK(pin_client_region_add(c, &r) == 0);
}

/* ---- the honest restore ---- */

struct honest {
	const uint8_t *base;
	size_t npages, *order;
	_Atomic unsigned int next;
	_Atomic int bad;
};

static uint64_t pattern(uint64_t off)
{
	return off ^ 0x9e3779b97f4a7c15ull;
}

static void *honest_thread(void *arg)
{
	struct honest *o = arg;
	unsigned int t = atomic_fetch_add(&o->next, 1);

	for (size_t k = t; k < o->npages; k += HONEST_THREADS) {
		size_t i = o->order[k];
		const uint64_t *w = (const uint64_t *)(o->base + i * page);
		for (size_t j = 0; j < page / 8; j++)
			if (w[j] != pattern(i * page + j * 8))
				atomic_fetch_add(&o->bad, 1);
	}
	return NULL;
}

/* In a child: restore honest_bytes, every byte checked; write the time it
 * took (ns, from the region's add to the last page read) to out. */
static void honest_child(int out)
{
	struct honest o = { .npages = honest_bytes / page };
	pthread_t th[HONEST_THREADS];
	struct pin_uffd *u = uffd_new();
	struct pin_client *c = connect_as("honest", u);
	uint8_t *base = map_anon(honest_bytes);
	uint64_t s = 0x2545f4914f6cdd1dull;

	o.base = base;
	o.order = malloc(o.npages * sizeof(*o.order));
	CHECK(o.order);
	for (size_t i = 0; i < o.npages; i++)
		o.order[i] = i;
	for (size_t i = o.npages; i > 1; i--) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		size_t j = (size_t)(s % i), t = o.order[i - 1];
		o.order[i - 1] = o.order[j];
		o.order[j] = t;
	}
	uint64_t t0 = bench_now_ns();
	region(c, u, base, honest_bytes, src, true);
	for (int i = 0; i < HONEST_THREADS; i++)
		CHECK(pthread_create(&th[i], NULL, honest_thread, &o) == 0);
	for (int i = 0; i < HONEST_THREADS; i++)
		CHECK(pthread_join(th[i], NULL) == 0);
	uint64_t ns = bench_now_ns() - t0;
	CHECK(o.bad == 0);
	CHECK(write(out, &ns, sizeof(ns)) == sizeof(ns));
	_exit(0);
}

static void reap_ok(pid_t pid, const char *who)
{
	int st;

	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		bench_die(who, EPROTO);
}

/* One honest restore, in seconds. */
static double honest_once(void)
{
	int p[2];
	uint64_t ns;

	if (pipe2(p, O_CLOEXEC) < 0)
		bench_die("pipe2", errno);
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork", errno);
	if (pid == 0)
		honest_child(p[1]);
	close(p[1]);
	ssize_t n = read(p[0], &ns, sizeof(ns));
	close(p[0]);
	reap_ok(pid, "the honest restore failed");
	if (n != sizeof(ns))
		bench_die("the honest restore's time", EPROTO);
	return (double)ns / 1e9;
}

/* ---- attackers: each sets its attack up, says so on ready, and keeps at
 * it until stop is readable ---- */

struct attack {
	const char *name;
	void (*fn)(struct pin_uffd *u, int ready, int stop);
	/* Not an attack on uffdd: its figure is reference_<name>_neighbor_x. */
	bool reference;
	/* As root, before it becomes ATTACKER_UID (NULL: nothing); the class
	 * is left out when not root. */
	void (*setup)(struct pin_uffd *u);
};

static bool stopped(int stop)
{
	struct pollfd p = { .fd = stop, .events = POLLIN };

	return poll(&p, 1, 0) != 0;
}

static void say_ready(int ready)
{
	CHECK(write(ready, "r", 1) == 1);
}

/* Row 1: forks of a client of FORK_REGIONS regions, and listings of every
 * session's regions. */
static void attack_fork(struct pin_uffd *u, int ready, int stop)
{
	struct pin_client *c = connect_as("forker", u), *insp = connect_as("inspector", NULL);
	uint8_t *base = map_anon(FORK_REGIONS * page);

	for (size_t i = 0; i < FORK_REGIONS; i++)
		region(c, u, base + i * page, page, -1, true);
	say_ready(ready);
	while (!stopped(stop)) {
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0)
			_exit(0);
		int st;
		CHECK(waitpid(pid, &st, 0) == pid);
		struct pin_client_region_info *v;
		size_t n;
		CHECK(pin_client_list_regions(insp, PIN_CLIENT_SESSION_ALL, &v, &n) == 0);
		free(v);
	}
	_exit(0);
}

static void send_raw(struct pin_client *c, Uffdd__Msg *m, uint64_t *seq)
{
	m->has_seq = true;
	m->seq = ++*seq;
	CHECK(pin_proto_send(pin_client_fd(c), m, NULL, 0) == 0);
}

/* Row 3: WAITERS WaitPopulated requests on a region that never fills. */
static void attack_waiters(struct pin_uffd *u, int ready, int stop)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__WaitPopulated w = UFFDD__WAIT_POPULATED__INIT;
	Uffdd__Range range = UFFDD__RANGE__INIT;
	struct pin_client *c = connect_as("waiter", u);
	uint64_t seq = RAW_SEQ0;
	void *base = mmap(NULL, WAIT_BYTES, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	CHECK(base != MAP_FAILED);
	region(c, u, base, WAIT_BYTES, -1, true);
	range.addr = (uintptr_t)base;
	range.len = WAIT_BYTES;
	w.range = &range;
	m.body_case = UFFDD__MSG__BODY_WAIT;
	m.wait = &w;
	for (int i = 0; i < WAITERS; i++)
		send_raw(c, &m, &seq);
	say_ready(ready);
	char b;
	CHECK(read(stop, &b, 1) >= 0);
	_exit(0);
}

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* Row 6: a source cut to nothing once added: every page touched is
 * poisoned (SIGBUS); the region is added again once all were. */
static void attack_bad_source(struct pin_uffd *u, int ready, int stop)
{
	struct pin_client *c = connect_as("bad-source", u);
	uint8_t *base = map_anon(BAD_PAGES * page), *data = map_anon(BAD_PAGES * page);
	struct sigaction sa = { .sa_handler = on_sigbus };
	int mfd = memfd_create("bad", MFD_CLOEXEC);

	CHECK(mfd >= 0);
	memset(data, 0xa5, BAD_PAGES * page);
	CHECK(sigaction(SIGBUS, &sa, NULL) == 0);
	CHECK(pin_uffd_register(u, base, BAD_PAGES * page, PIN_UFFD_REGISTER_MISSING, NULL) == 0);
	say_ready(ready);
	while (!stopped(stop)) {
		CHECK(pwrite(mfd, data, BAD_PAGES * page, 0) == (ssize_t)(BAD_PAGES * page));
		region(c, u, base, BAD_PAGES * page, mfd, false);
		CHECK(ftruncate(mfd, 0) == 0);
		for (volatile size_t i = 0; i < BAD_PAGES && !stopped(stop); i++)
			if (!sigsetjmp(bus_jmp, 1))
				(void)*(volatile uint8_t *)(base + i * page);
		CHECK(pin_client_region_remove(c, base, BAD_PAGES * page) == 0);
		/* The poisoned entries go; the range faults again. */
		CHECK(madvise(base, BAD_PAGES * page, MADV_DONTNEED) == 0);
	}
	_exit(0);
}

/* Row 7: Replay over pages already there, again and again. */
static void attack_replay(struct pin_uffd *u, int ready, int stop)
{
	Uffdd__Msg m = UFFDD__MSG__INIT, *rep;
	Uffdd__Replay rp = UFFDD__REPLAY__INIT;
	Uffdd__Range range = UFFDD__RANGE__INIT, *ranges[] = { &range };
	struct pin_client *c = connect_as("replayer", u);
	uint8_t *base = map_anon(PRESENT_BYTES);
	uint64_t seq = RAW_SEQ0;
	int fds[PIN_PROTO_MAX_FDS];
	size_t nfds;

	CHECK(madvise(base, PRESENT_BYTES, MADV_POPULATE_READ) == 0);
	region(c, u, base, PRESENT_BYTES, -1, true);
	range.addr = (uintptr_t)base;
	range.len = PRESENT_BYTES;
	rp.n_ranges = 1;
	rp.ranges = ranges;
	m.body_case = UFFDD__MSG__BODY_REPLAY;
	m.replay = &rp;
	say_ready(ready);
	while (!stopped(stop)) {
		send_raw(c, &m, &seq);
		CHECK(pin_proto_recv(pin_client_fd(c), &rep, fds, &nfds) == 0);
		CHECK(rep->body_case == UFFDD__MSG__BODY_REPLY && rep->reply->error == 0);
		CHECK(rep->reply->pages_placed == 0);
		pin_proto_free(rep);
	}
	_exit(0);
}

static void *outside_thread(void *arg)
{
	(void)*(volatile uint8_t *)arg;
	return NULL;
}

/* Row 8: OUT_THREADS faults outside every region, kept waiting. */
static void attack_outside(struct pin_uffd *u, int ready, int stop)
{
	struct pin_client *c = connect_as("outside", u);
	uint8_t *base = map_anon(OUT_THREADS * page);
	pthread_t th;

	CHECK(pin_uffd_register(u, base, OUT_THREADS * page, PIN_UFFD_REGISTER_MISSING, NULL) == 0);
	for (int i = 0; i < OUT_THREADS; i++)
		CHECK(pthread_create(&th, NULL, outside_thread, base + i * page) == 0);
	(void)c;
	say_ready(ready);
	char b;
	CHECK(read(stop, &b, 1) >= 0);
	_exit(0);
}

/* The reference: a process that only keeps a CPU busy, never talking to
 * uffdd. */
static void attack_cpu_hog(struct pin_uffd *u, int ready, int stop)
{
	(void)u;
	say_ready(ready);
	while (!stopped(stop))
		for (volatile unsigned int i = 0; i < HOG_SPINS; i++)
			;
	_exit(0);
}

/*
 * Row 9: STUCK_SESSIONS sessions (a worker's share at least) whose source is
 * a FUSE file that never answers a READ (tests/stuck-fuse.c), each with a
 * thread waiting on a page of it.  The attacker mounts its file system as
 * root in a mount namespace of its own, before it becomes ATTACKER_UID: when
 * it exits, the connection is aborted (the reads it left stuck fail) and the
 * mount goes with the namespace.
 */
#define STUCK_SESSIONS 4
#define STUCK_PAGES    16

static char stuck_dir[160];
static struct stuck_fuse *stuck_fs;
static int stuck_fd = -1;
static struct pin_uffd *stuck_u[STUCK_SESSIONS];

static void setup_stuck(struct pin_uffd *u)
{
	char path[192];

	CHECK(unshare(CLONE_NEWNS) == 0);
	CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
	CHECK(stuck_fuse_new(stuck_dir, STUCK_PAGES * page, &stuck_fs) == 0);
	snprintf(path, sizeof(path), "%s/" STUCK_FUSE_NAME, stuck_dir);
	stuck_fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(stuck_fd >= 0);
	stuck_u[0] = u;
	for (int i = 1; i < STUCK_SESSIONS; i++)
		stuck_u[i] = uffd_new();
}

static void *touch(void *arg)
{
	(void)*(volatile uint8_t *)arg;
	return NULL;
}

static void attack_stuck(struct pin_uffd *u, int ready, int stop)
{
	struct pin_client *c[STUCK_SESSIONS];
	uint8_t *base[STUCK_SESSIONS];
	pthread_t th[STUCK_SESSIONS];
	char b;

	(void)u;
	for (int i = 0; i < STUCK_SESSIONS; i++) {
		c[i] = connect_as("stuck", stuck_u[i]);
		base[i] = map_anon(STUCK_PAGES * page);
		region(c[i], stuck_u[i], base[i], STUCK_PAGES * page, stuck_fd, true);
		CHECK(pthread_create(&th[i], NULL, touch, base[i]) == 0);
	}
	/* Closed while the server answers: a close of a FUSE file waits for
	 * its FLUSH. */
	close(stuck_fd);
	say_ready(ready);
	CHECK(read(stop, &b, 1) >= 0);
	for (int i = 0; i < STUCK_SESSIONS; i++) {
		pin_client_free(c[i]);
		CHECK(pin_uffd_unregister(stuck_u[i], base[i], STUCK_PAGES * page) == 0);
		CHECK(pthread_join(th[i], NULL) == 0);
	}
	_exit(0);
}

static const struct attack attacks[] = {
	{ "fork_inspect", attack_fork, false, NULL },
	{ "waiters", attack_waiters, false, NULL },
	{ "bad_source", attack_bad_source, false, NULL },
	{ "replay_present", attack_replay, false, NULL },
	{ "outside_faults", attack_outside, false, NULL },
	{ "stuck_source", attack_stuck, false, setup_stuck },
	{ "cpu_hog", attack_cpu_hog, true, NULL },
};

/* The honest restore beside a, in seconds. */
static double beside(const struct attack *a)
{
	int ready[2], stop[2];
	char b;

	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(stop, O_CLOEXEC) < 0)
		bench_die("pipe2", errno);
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork", errno);
	if (pid == 0) {
		gid_t g = ATTACKER_UID;
		close(ready[0]);
		close(stop[1]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Opening a userfaultfd needs root here; using it does not. */
		struct pin_uffd *u = uffd_new();
		if (a->setup)
			a->setup(u);
		if (geteuid() == 0) {
			CHECK(setgroups(1, &g) == 0);
			CHECK(setresgid(ATTACKER_UID, ATTACKER_UID, ATTACKER_UID) == 0);
			CHECK(setresuid(ATTACKER_UID, ATTACKER_UID, ATTACKER_UID) == 0);
			CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0);
		}
		a->fn(u, ready[1], stop[0]);
	}
	close(ready[1]);
	close(stop[0]);
	if (read(ready[0], &b, 1) != 1)
		bench_die(a->name, EPROTO);
	double t = honest_once();
	if (write(stop[1], "s", 1) != 1)
		bench_die("write", errno);
	close(stop[1]);
	close(ready[0]);
	reap_ok(pid, a->name);
	return t;
}

/* Whether the arguments leave class name to run: none but --smoke, or it. */
static bool chosen(int argc, char **argv, const char *name)
{
	bool any = false;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--smoke"))
			continue;
		if (!strcmp(argv[i], name))
			return true;
		any = true;
	}
	return !any;
}

int main(int argc, char **argv)
{
	char path[128];

	page = (size_t)sysconf(_SC_PAGESIZE);
	if (bench_smoke(argc, argv)) {
		honest_bytes = SMOKE_HONEST_BYTES;
		rounds = 1;
	}
	bench_uffdd_start(&ud);
	/* The attacker's uid reaches the socket through its mode. */
	if (chmod(ud.dir, 0711) < 0 || chmod(ud.sock, 0666) < 0)
		bench_die("chmod", errno);
	snprintf(path, sizeof(path), "%s/src", ud.dir);
	src = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (src < 0 || unlink(path) < 0)
		bench_die("the source", errno);
	uint64_t *buf = malloc(honest_bytes);
	if (!buf)
		bench_die("malloc", ENOMEM);
	for (size_t i = 0; i < honest_bytes / 8; i++)
		buf[i] = pattern(i * 8);
	if (pwrite(src, buf, honest_bytes, 0) != (ssize_t)honest_bytes)
		bench_die("pwrite", errno);
	free(buf);
	snprintf(stuck_dir, sizeof(stuck_dir), "%s/stuck", ud.dir);
	if (mkdir(stuck_dir, 0755) < 0)
		bench_die("mkdir", errno);
	for (size_t k = 0; k < sizeof(attacks) / sizeof(attacks[0]); k++) {
		double alone[ROUNDS], with[ROUNDS];
		char name[96];
		if (!chosen(argc, argv, attacks[k].name))
			continue;
		if (attacks[k].setup && (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) < 0)) {
			printf("# hostile_%s: left out (needs root and /dev/fuse)\n",
			       attacks[k].name);
			continue;
		}
		for (int r = 0; r < rounds; r++) {
			alone[r] = honest_once();
			with[r] = beside(&attacks[k]);
		}
		snprintf(name, sizeof(name), "%s_%s_neighbor_x",
			 attacks[k].reference ? "reference" : "hostile", attacks[k].name);
		bench_metric(name, bench_median(with, rounds) / bench_median(alone, rounds), "x");
	}
	close(src);
	if (rmdir(stuck_dir) < 0)
		bench_die("rmdir", errno);
	bench_uffdd_stop(&ud);
	return 0;
}
