// SPDX-License-Identifier: MIT
/*
 * Area latency (suite daemon): uffdd's fault latency histogram counts each
 * fault once, from the read(2) that returned it to the moment the daemon
 * finished it, so that a wait behind a slow source or a missing region is
 * in it.  The waits are made by the test (a FUSE source whose reads wait
 * until the test answers them, tests/stuck-fuse.c; a fault that waits for
 * its region), begin after the userfaultfd's fdinfo shows every fault read
 * by the daemon and last at least STALL_MS: each fault must land in a
 * bucket of at least STALL_MS, whatever the machine's load.  The client is
 * a child process (its threads fault, its main thread makes them wait): the
 * FUSE server is a thread of the test's, and a process that exits with the
 * file open waits in its FLUSH for the server, which must not be itself.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "libpin-private.h"
#include "stuck-fuse.h"
#include "test-common.h"
#include "uffdd-harness.h"

static size_t page;

/* The wait the test makes, ms, and the lowest bucket it puts a fault in:
 * bucket b holds [2^b, 2^(b+1)) us, and 2^15 us <= 64 ms < 2^16 us. */
#define STALL_MS     64
#define STALL_BUCKET 15
#define FUSE_PAGES   16
/* Threads that fault at once, each on its own page (every other page: no
 * fault looks sequential, so each has a run of its own), and one more on
 * the first page: the daemon keeps that page's two faults as one, and
 * counts both. */
#define WAITERS 4
/* Polls of the fdinfo, POLL_MS apart, before giving up (times the
 * valgrind scale). */
#define POLL_MS 10
#define POLLS	1000

struct conn {
	struct pin_client *c;
	struct pin_uffd *u;
	uint8_t *base;
};

/* A session whose userfaultfd has [base, +n pages) registered; its region
 * is to be added. */
static int conn_open(const struct test_daemon *d, struct conn *k, size_t n)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMAP | PIN_UFFD_FEATURE_EVENT_REMOVE |
			    PIN_UFFD_FEATURE_EVENT_UNMAP,
	};
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "latency" };
	void *p = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	REQUIRE(p != MAP_FAILED);
	k->base = p;
	/* A partly filled range must not become a huge page: see uffdd(8). */
	REQUIRE(madvise(p, n * page, MADV_NOHUGEPAGE) == 0);
	REQUIRE(pin_uffd_new(&uo, &k->u) == 0);
	REQUIRE(pin_uffd_register(k->u, p, n * page, PIN_UFFD_REGISTER_MISSING, NULL) == 0);
	REQUIRE(pin_client_connect(&co, &k->c) == 0);
	REQUIRE(pin_client_handover(k->c, k->u) == 0);
	return 0;
}

/* Hand over [base, +n pages) with source fd (no push). */
static int add_region(struct conn *k, size_t n, int fd)
{
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = k->base,
		.len = n * page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH,
		.fd = fd,
	};

	return pin_client_region_add(k->c, &r);
}

/* The userfaultfd's fdinfo: faults not read yet, and all waiting. */
static int uffd_queue(struct pin_uffd *u, unsigned long *ret_pending, unsigned long *ret_total)
{
	char path[64], line[128];

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pin_uffd_fd(u));
	FILE *f = fopen(path, "r");
	REQUIRE(f);
	*ret_pending = *ret_total = ULONG_MAX;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "pending: %lu", ret_pending);
		sscanf(line, "total: %lu", ret_total);
	}
	fclose(f);
	REQUIRE(*ret_pending != ULONG_MAX && *ret_total != ULONG_MAX);
	return 0;
}

/* Wait until the daemon has read n faults of u that wait: from here on,
 * each fault's read is in the past. */
static int await_read(struct pin_uffd *u, unsigned long n)
{
	unsigned long pending = 0, total = 0;

	for (int i = 0; i < POLLS; i++) {
		REQUIRE(uffd_queue(u, &pending, &total) == 0);
		if (!pending && total == n)
			return 0;
		test_sleep_ms(POLL_MS * test_time_scale());
	}
	fprintf(stderr, "client: the daemon read %lu of %lu faults waiting (%lu unread)\n",
		total - pending, n, pending);
	return 1;
}

struct toucher {
	pthread_t th;
	const uint8_t *p;
	uint64_t word; /* the first word read there */
};

static void *touch(void *arg)
{
	struct toucher *t = arg;

	memcpy(&t->word, t->p, sizeof(t->word));
	return NULL;
}

/* The session's faults and histogram: faults == want, all in the
 * histogram, none below bucket lowest. */
static int check_stats(struct conn *k, uint64_t want, int lowest)
{
	struct pin_client_stats st;
	uint64_t sum = 0, low = 0;

	REQUIRE(pin_client_stats(k->c, 0, &st) == 0);
	for (int b = 0; b < PIN_CLIENT_LATENCY_BUCKETS; b++) {
		sum += st.latency_us_log2[b];
		if (b < lowest)
			low += st.latency_us_log2[b];
	}
	if (st.faults != want || sum != want || low) {
		fprintf(stderr,
			"client: %" PRIu64 " faults, %" PRIu64 " in the histogram, %" PRIu64
			" below %u us; want %" PRIu64 ", none below (the wait was %u ms)\n",
			st.faults, sum, low, 1u << lowest, want, STALL_MS);
		return 1;
	}
	return 0;
}

/* The test's side: a daemon, a FUSE file system (its server a thread of
 * this process), a pipe on which the client asks for the answers. */
struct lat {
	struct test_daemon d;
	struct stuck_fuse *f;
	char dir[128], path[192];
	int ask[2];
};

static void lat_start(struct lat *l, bool fuse)
{
	test_daemon_start(&l->d, NULL);
	ck_assert_int_eq(pipe2(l->ask, O_CLOEXEC), 0);
	l->f = NULL;
	if (!fuse)
		return;
	snprintf(l->dir, sizeof(l->dir), "%s/fuse", l->d.dir);
	ck_assert_int_eq(mkdir(l->dir, 0755), 0);
	ck_assert_int_eq(stuck_fuse_new(l->dir, FUSE_PAGES * page, &l->f), 0);
	snprintf(l->path, sizeof(l->path), "%s/" STUCK_FUSE_NAME, l->dir);
}

typedef int (*client_fn)(struct lat *l);

/* Run fn in a child; answer the FUSE reads when it asks; 0 when it passed. */
static void lat_run(struct lat *l, client_fn fn)
{
	pid_t pid = fork();
	char c;
	int st;

	ck_assert_int_ge(pid, 0);
	if (!pid) {
		close(l->ask[0]);
		/* The server's process holds the only connection: its death
		 * aborts it, and the client's reads fail instead of hanging. */
		if (l->f)
			stuck_fuse_forget(l->f);
		_exit(fn(l));
	}
	close(l->ask[1]);
	if (read(l->ask[0], &c, 1) == 1)
		stuck_fuse_answer(l->f);
	pid_t got = waitpid(pid, &st, 0);
	close(l->ask[0]);
	/* A client that failed may have left it stopped. */
	kill(l->d.pid, SIGCONT);
	/* Gone before any assert: a failed case leaves no mount and no daemon. */
	if (l->f) {
		stuck_fuse_free(l->f);
		ck_assert_int_eq(rmdir(l->dir), 0);
	}
	test_daemon_stop(&l->d);
	ck_assert_int_eq(got, pid);
	ck_assert_msg(WIFEXITED(st) && !WEXITSTATUS(st), "the client failed (status %#x)", st);
}

/* The client: the server answers from now on. */
static int ask_answer(struct lat *l)
{
	REQUIRE(write(l->ask[1], "a", 1) == 1);
	return 0;
}

static int client_slow_source(struct lat *l)
{
	struct toucher t[WAITERS + 1];
	struct conn k;
	int fd = open(l->path, O_RDONLY | O_CLOEXEC);

	REQUIRE(fd >= 0);
	REQUIRE(conn_open(&l->d, &k, FUSE_PAGES) == 0);
	REQUIRE(add_region(&k, FUSE_PAGES, fd) == 0);
	for (int i = 0; i <= WAITERS; i++) {
		t[i].p = k.base + 2 * (size_t)(i % WAITERS) * page;
		REQUIRE(pthread_create(&t[i].th, NULL, touch, &t[i]) == 0);
	}
	REQUIRE(await_read(k.u, WAITERS + 1) == 0);
	test_sleep_ms(STALL_MS);
	REQUIRE(ask_answer(l) == 0);
	for (int i = 0; i <= WAITERS; i++) {
		REQUIRE(pthread_join(t[i].th, NULL) == 0);
		REQUIRE(t[i].word == stuck_fuse_word(2 * (uint64_t)(i % WAITERS) * page));
	}
	return check_stats(&k, WAITERS + 1, STALL_BUCKET);
}

/*
 * WAITERS + 1 threads fault on WAITERS pages of a source whose reads wait (the
 * session's reader asks the FUSE server, which answers only when the
 * client says): they wait for the reader, then for each other's reads.
 * Once the daemon has read every fault, the server stays silent STALL_MS
 * more.  Each thread gets the file's bytes, and each fault is counted once,
 * in a bucket of STALL_MS or more.
 */
START_TEST(slow_source_wait_counted)
{
	struct lat l;

	lat_start(&l, true);
	lat_run(&l, client_slow_source);
}
END_TEST

/* A thread touching the first page of k's region; back STALL_MS after the
 * daemon read its fault. */
static int touch_stalled(struct toucher *t, struct conn *k)
{
	t->p = k->base;
	REQUIRE(pthread_create(&t->th, NULL, touch, t) == 0);
	REQUIRE(await_read(k->u, 1) == 0);
	test_sleep_ms(STALL_MS);
	return 0;
}

static int client_dropped(struct lat *l)
{
	struct toucher t = { 0 };
	struct conn k;
	int fd = open(l->path, O_RDONLY | O_CLOEXEC);

	REQUIRE(fd >= 0);
	REQUIRE(conn_open(&l->d, &k, FUSE_PAGES) == 0);
	REQUIRE(add_region(&k, FUSE_PAGES, fd) == 0);
	REQUIRE(touch_stalled(&t, &k) == 0);
	REQUIRE(pin_client_region_remove(k.c, k.base, FUSE_PAGES * page) == 0);
	/* Woken, it faults again: read by the daemon, outside every region. */
	REQUIRE(await_read(k.u, 1) == 0);
	REQUIRE(check_stats(&k, 1, STALL_BUCKET) == 0);
	REQUIRE(pin_uffd_unregister(k.u, k.base, FUSE_PAGES * page) == 0);
	REQUIRE(pthread_join(t.th, NULL) == 0);
	REQUIRE(t.word == 0);
	return 0;
}

/*
 * A fault dropped when its region is removed (as an UNMAP or REMAP drops
 * it): it waited for a read of the FUSE source STALL_MS, and is counted
 * then, once.  Its thread faults again where no region is (that fault
 * waits, unfinished, and is not counted), and is let go by unregistering.
 */
START_TEST(dropped_fault_counted)
{
	struct lat l;

	lat_start(&l, true);
	lat_run(&l, client_dropped);
}
END_TEST

static int client_wait_for_region(struct lat *l)
{
	struct toucher t = { 0 };
	struct conn k;

	REQUIRE(conn_open(&l->d, &k, 1) == 0);
	REQUIRE(touch_stalled(&t, &k) == 0);
	REQUIRE(add_region(&k, 1, -1) == 0);
	REQUIRE(pthread_join(t.th, NULL) == 0);
	REQUIRE(t.word == 0);
	return check_stats(&k, 1, STALL_BUCKET);
}

/*
 * A fault on a registered range no region covers yet waits in the daemon's
 * queue (a client that reconnects adds its regions after its threads
 * fault); the region comes STALL_MS after the daemon read it.  It is
 * counted once, from that read: in a bucket of STALL_MS or more.
 */
START_TEST(wait_for_region_counted)
{
	struct lat l;

	lat_start(&l, false);
	lat_run(&l, client_wait_for_region);
}
END_TEST

/* Where a thread waits for its non-cooperative event (MADV_DONTNEED) to be
 * read. */
#define WCHAN_EVENT "userfaultfd_event_wait_completion"
/* uffdd's UFFDD_HOLD point: it stops itself once a read's events are
 * recorded, before it applies them or serves the read's faults. */
#define HOLD_EVENTS "events-read"

/* The start of a /proc file, NUL-terminated, into buf (size bytes). */
static int read_proc(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");

	REQUIRE(f);
	size_t n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = 0;
	return 0;
}

/* Wait until process pid is in state c ('T': stopped) per /proc/PID/stat. */
static int await_state(pid_t pid, char c)
{
	char path[64], buf[256];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < POLLS; i++) {
		REQUIRE(read_proc(path, buf, sizeof(buf)) == 0);
		/* "pid (comm) S ...": comm may hold spaces, not ") ". */
		const char *p = strstr(buf, ") ");
		REQUIRE(p);
		if (p[2] == c)
			return 0;
		test_sleep_ms(POLL_MS * test_time_scale());
	}
	fprintf(stderr, "client: process %d never in state %c\n", (int)pid, c);
	return 1;
}

/* Wait until thread tid of this process sleeps in kernel function fn. */
static int await_wchan(pid_t tid, const char *fn)
{
	char path[64], buf[128] = "";

	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", (int)tid);
	for (int i = 0; i < POLLS; i++) {
		REQUIRE(read_proc(path, buf, sizeof(buf)) == 0);
		if (!strcmp(buf, fn))
			return 0;
		test_sleep_ms(POLL_MS * test_time_scale());
	}
	fprintf(stderr, "client: thread %d sleeps in '%s', not in %s\n", (int)tid, buf, fn);
	return 1;
}

/* Wait until n faults of u are queued, none read. */
static int await_unread(struct pin_uffd *u, unsigned long n)
{
	unsigned long pending = 0, total = 0;

	for (int i = 0; i < POLLS; i++) {
		REQUIRE(uffd_queue(u, &pending, &total) == 0);
		if (pending == n && total == n)
			return 0;
		test_sleep_ms(POLL_MS * test_time_scale());
	}
	fprintf(stderr, "client: %lu faults unread of %lu, not %lu\n", pending, total, n);
	return 1;
}

/* A thread whose MADV_DONTNEED of a page waits until its REMOVE is read. */
struct discard {
	pthread_t th;
	uint8_t *p;
	_Atomic pid_t tid;
	int ret;
};

static void *discard_main(void *arg)
{
	struct discard *x = arg;

	x->tid = (pid_t)syscall(SYS_gettid);
	x->ret = madvise(x->p, page, MADV_DONTNEED);
	return NULL;
}

static int discard_start(struct discard *x, uint8_t *p)
{
	x->p = p;
	x->tid = 0;
	REQUIRE(pthread_create(&x->th, NULL, discard_main, x) == 0);
	for (int i = 0; i < POLLS && !x->tid; i++)
		test_sleep_ms(POLL_MS);
	REQUIRE(x->tid);
	return await_wchan(x->tid, WCHAN_EVENT);
}

static int discard_join(struct discard *x)
{
	REQUIRE(pthread_join(x->th, NULL) == 0);
	REQUIRE(x->ret == 0);
	return 0;
}

static int client_eagain(struct lat *l)
{
	struct toucher t = { 0 };
	struct discard a, c;
	struct pin_client_stats st;
	struct conn k;
	pid_t d = l->d.pid;

	REQUIRE(conn_open(&l->d, &k, 3) == 0);
	REQUIRE(add_region(&k, 3, -1) == 0);
	/* Stopped while idle: what comes now is read at once when it goes on. */
	REQUIRE(kill(d, SIGSTOP) == 0);
	REQUIRE(await_state(d, 'T') == 0);
	t.p = k.base + page;
	REQUIRE(pthread_create(&t.th, NULL, touch, &t) == 0);
	REQUIRE(await_unread(k.u, 1) == 0);
	REQUIRE(discard_start(&a, k.base) == 0);
	/* It reads the fault and the first REMOVE, and stops itself once it
	 * has recorded that. */
	REQUIRE(kill(d, SIGCONT) == 0);
	REQUIRE(discard_join(&a) == 0);
	REQUIRE(await_state(d, 'T') == 0);
	/* A second REMOVE, unread: any UFFDIO_ZEROPAGE meets EAGAIN. */
	REQUIRE(discard_start(&c, k.base + 2 * page) == 0);
	test_sleep_ms(STALL_MS);
	/* It serves the fault (EAGAIN: kept), reads the second REMOVE, and
	 * stops again once it has recorded it; then serves the fault. */
	REQUIRE(kill(d, SIGCONT) == 0);
	REQUIRE(discard_join(&c) == 0);
	REQUIRE(await_state(d, 'T') == 0);
	REQUIRE(kill(d, SIGCONT) == 0);
	REQUIRE(pthread_join(t.th, NULL) == 0);
	REQUIRE(t.word == 0);
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.eagain == 1);
	return check_stats(&k, 1, STALL_BUCKET);
}

/*
 * A fault deferred by EAGAIN: read with a REMOVE event, it meets a second
 * REMOVE not read yet when it is served (uffdd stops itself after recording
 * each read's events, UFFDD_HOLD=events-read, and the test makes the
 * second event then), keeps waiting STALL_MS, and is served after the
 * second event is read.  EAGAIN was seen once, and the fault is counted
 * once, in a bucket of STALL_MS or more.
 */
START_TEST(eagain_wait_counted)
{
	struct lat l;

	ck_assert_int_eq(setenv("UFFDD_HOLD", HOLD_EVENTS, 1), 0);
	lat_start(&l, false);
	ck_assert_int_eq(unsetenv("UFFDD_HOLD"), 0);
	lat_run(&l, client_eagain);
}
END_TEST

const char *test_skip_reason(void)
{
	if (!getenv("UFFDD"))
		return "UFFDD (the daemon to test) is not set; run through meson test";
	return NULL;
}

/* A case's bound: a daemon, a FUSE mount and a wait of STALL_MS: natively
 * well under a second, under valgrind several times that. */
#define CASE_TIMEOUT_S 120

/*
 * Valgrind runs one thread of a process at a time, and a thread blocked in
 * a fault never gives that turn back: the client's main thread, which makes
 * the wait and ends it, would never run again (the examples suite is left
 * out of the valgrind setup for the same reason).  The plain and ASan runs
 * have these cases.
 */
static const char *not_under_valgrind(void)
{
	return RUNNING_ON_VALGRIND ? "a thread blocked in a fault holds valgrind's one-thread turn"
				   : NULL;
}

Suite *test_suite(void)
{
	Suite *s = test_suite_new("latency");
	/* The FUSE mount and stopping the daemon need root; the daemon takes
	 * kernel-mode faults. */
	const struct test_needs root = { .what = TEST_NEED_ROOT | TEST_NEED_UFFD,
					 .check = not_under_valgrind };
	const struct test_needs uffd = { .what = TEST_NEED_UFFD, .check = not_under_valgrind };
	const struct {
		const char *name;
		const TTest *t;
		const struct test_needs *needs;
	} cases[] = {
		{ "slow_source_wait_counted", slow_source_wait_counted, &root },
		{ "dropped_fault_counted", dropped_fault_counted, &root },
		{ "wait_for_region_counted", wait_for_region_counted, &uffd },
		{ "eagain_wait_counted", eagain_wait_counted, &root },
	};

	page = (size_t)sysconf(_SC_PAGESIZE);
	for (size_t i = 0; i < PIN_ARRAY_SIZE(cases); i++) {
		TCase *tc = test_tcase(s, cases[i].name, cases[i].needs);

		tcase_set_timeout(tc, CASE_TIMEOUT_S);
		tcase_add_test(tc, cases[i].t);
	}
	return s;
}
