// SPDX-License-Identifier: MIT
/*
 * Suite durable: kill -9 of uffdd loses nothing (issue 11).  uffdd ($UFFDD
 * --no-supervisor) runs under the fake systemd 252 of manager.c, which keeps
 * the descriptors uffdd stores and restarts it with them at once.  Clients are
 * child processes using libpin as an application would: no reconnect flag,
 * no thread watching the socket.  Each case kills the daemon at its worst
 * moment, most of them with the daemon stopped (SIGSTOP) first so that the
 * moment is exact: threads blocked in faults, a fork, a DONTNEED or an
 * mremap waiting for their event to be read, a request sent and not read.
 * Afterwards every byte is checked against the source's pattern (the word
 * at file offset o is test_pattern(o, seed)), every thread must finish
 * within a bound, and the store must hold no session's descriptor once the
 * clients are gone.  kill_loop does the same at random moments of a mixed
 * workload, $DURABLE_KILLS times.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "libpin-private.h"
#include "manager.h"
#include "stuck-fuse.h"
#include "test-common.h"
#include "uffdd-harness.h"

static size_t page;

/* Far above anything the store ever needs here; the unit's FileDescriptorStoreMax= is the
 * real bound. */
#define STORE_MAX 4096
/* A bounded wait, natively: uffdd's start to READY=1, a client's next step, a
 * thread to finish once its fault can be served, a process to exit.  Times
 * test_time_scale(). */
#define WAIT_MS 10000
/* A client's exit is awaited this many times the bound: its own bounded
 * waits (joins, its fork child) end first, so that its message says what hung. */
#define REAP_BOUNDS 4
/* While waiting for a client's step, whether it exited is checked this often. */
#define ALIVE_SLICE_MS 10
/* Polling /proc for a thread's wchan. */
#define WCHAN_POLL_NS 1000000L
/* Where a thread sleeps: in a fault, waiting for its non-cooperative event
 * (fork, mremap, MADV_DONTNEED) to be read. */
#define WCHAN_FAULT "handle_userfault"
#define WCHAN_EVENT "userfaultfd_event_wait_completion"

/*
 * The bound in ms.  Taken once, in the test process (up() asks first):
 * test_time_scale() checks $TEST_TIME_SCALE with a Check assert, whose
 * report would go, in a client, down whatever descriptor took the number of
 * Check's pipe (a client closes what it does not use).
 */
static unsigned int wait_ms(void)
{
	static unsigned int ms;

	if (!ms)
		ms = WAIT_MS * test_time_scale();
	return ms;
}

/* ---- the daemon under the manager ---- */

static struct manager *mgr;
static char dir[64];
/* What the store held when the daemon first said READY=1, before any client. */
static size_t idle_store;

/* Under the manager, with WatchdogSec= of watchdog_usec (0: none). */
static void up_watched(unsigned int watchdog_usec)
{
	const char *tmp = getenv("TMPDIR");
	static const char *const args[] = { "--workers", "2", NULL };

	if ((size_t)snprintf(dir, sizeof(dir), "%s/uffdd-durable-XXXXXX",
			     tmp && *tmp ? tmp : "/tmp") >= sizeof(dir))
		snprintf(dir, sizeof(dir), "/tmp/uffdd-durable-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	struct manager_opts o = { .dir = dir,
				  .exe = getenv("UFFDD"),
				  .args = args,
				  .store_max = STORE_MAX,
				  .ready_ms = wait_ms(),
				  .watchdog_usec = watchdog_usec };
	ck_assert_int_eq(manager_new(&o, &mgr), 0);
	ck_assert_msg(manager_start(mgr) == 0, "uffdd did not start under the manager");
	idle_store = manager_count(mgr, "*");
}

static void up(void)
{
	up_watched(0);
}

static void kill9_restart(void)
{
	ck_assert_msg(manager_kill9_restart(mgr) == 0, "kill -9 and restart of uffdd failed");
}

static void freeze(void)
{
	ck_assert_int_eq(manager_freeze(mgr), 0);
}

/* What the store holds, checked exactly. */
static void store_is(const char *glob, size_t want)
{
	size_t n = manager_count(mgr, glob);
	char names[1024];

	if (n != want) {
		manager_names(mgr, names, sizeof(names));
		ck_abort_msg("%zu stored fd(s) named %s, not %zu; the store: %s", n, glob, want,
			     names);
	}
}

/* Once the clients are gone: no session's descriptor, no source file, and
 * nothing else either (a name left out is stored as "stored"). */
static void store_baseline(void)
{
	ck_assert_int_eq(manager_wait_count(mgr, "s[0-9]*", 0, wait_ms()), 0);
	ck_assert_int_eq(manager_wait_count(mgr, "f[0-9]*", 0, wait_ms()), 0);
	store_is("*", idle_store);
}

static void down(void)
{
	struct manager_stats st;

	manager_stats(mgr, &st);
	ck_assert_uint_eq(st.foreign, 0);
	ck_assert_uint_eq(st.refused, 0);
	ck_assert_int_eq(manager_stop(mgr), 0);
	manager_free(mgr);
	mgr = NULL;
	ck_assert_int_eq(rmdir(dir), 0);
}

/* ---- the manager itself ---- */

/* What fake-uffdd reports of its two starts (tests/fake-uffdd.c): the
 * listening socket alone, then it and the store newest first. */
#define FAKE_FIRST "pid ok fds 1 names uffdd.socket fd3 listening-seqpacket 3 next closed\n"
#define FAKE_AGAIN                                                                                 \
	"pid ok fds 6 names uffdd.socket:s5.uffd:stored:s2.peer:s2.conn:s1.state fd3 "             \
	"listening-seqpacket 3 4 5 6 7 8 next closed\n"
#define FAKE_STORE   "s1.state s2.conn s2.peer stored s5.uffd"
#define FAKE_STORED  8 /* every fd added, dropped ones included */
#define FAKE_DUPS    2 /* s1.state again, and a dup of it as s9.state */
#define FAKE_RESTORE 5 /* the second start hands its five back: duplicates */

/* The manager does what systemd 252 does with what fake-uffdd sends: one
 * entry per open file, FDSTOREREMOVE, an invalid name stored as "stored",
 * EPOLLHUP (a peer gone) and EPOLLERR (a blocking userfaultfd) drop the fd,
 * a message too long and one from another pid are ignored, and the next
 * start gets the listening socket then the store newest first, named. */
START_TEST(manager_plays_systemd)
{
	char report[128], got[2 * sizeof(FAKE_AGAIN)] = "", names[256];
	struct manager_stats st;

	ck_assert_ptr_nonnull(mkdtemp(strcpy(dir, "/tmp/uffdd-manager-XXXXXX")));
	snprintf(report, sizeof(report), "%s/report", dir);
	ck_assert_int_eq(setenv("FAKE_REPORT", report, 1), 0);
	struct manager_opts o = { .dir = dir,
				  .exe = getenv("FAKE_UFFDD"),
				  .store_max = STORE_MAX,
				  .ready_ms = wait_ms() };
	ck_assert_int_eq(manager_new(&o, &mgr), 0);
	ck_assert_int_eq(manager_start(mgr), 0);
	ck_assert_int_eq(manager_wait_count(mgr, "s1.conn", 0, wait_ms()), 0);
	ck_assert_int_eq(manager_wait_count(mgr, "s4.uffd", 0, wait_ms()), 0);
	manager_names(mgr, names, sizeof(names));
	ck_assert_str_eq(names, FAKE_STORE);
	manager_stats(mgr, &st);
	ck_assert_uint_eq(st.stored, FAKE_STORED);
	ck_assert_uint_eq(st.dups, FAKE_DUPS);
	ck_assert_uint_eq(st.removed, 1);
	ck_assert_uint_eq(st.hangups, 2);
	ck_assert_uint_eq(st.refused, 2);
	ck_assert_uint_eq(st.foreign, 1);

	kill9_restart();
	manager_stats(mgr, &st);
	ck_assert_uint_eq(st.stored, FAKE_STORED);
	ck_assert_uint_eq(st.dups, FAKE_DUPS + FAKE_RESTORE);
	ck_assert_uint_eq(st.starts, 2);
	manager_names(mgr, names, sizeof(names));
	ck_assert_str_eq(names, FAKE_STORE);
	int fd = open(report, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_ge(read(fd, got, sizeof(got) - 1), 0);
	close(fd);
	ck_assert_str_eq(got, FAKE_FIRST FAKE_AGAIN);

	/* A stop empties the store, as systemd 252's does. */
	ck_assert_int_eq(manager_stop(mgr), 0);
	store_is("*", 0);
	manager_free(mgr);
	mgr = NULL;
	ck_assert_int_eq(unlink(report), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* ---- clients ---- */

struct client {
	pid_t pid;
	int up[2];   /* client -> test: a step reached */
	int down[2]; /* test -> client: go on */
};

typedef int (*client_fn)(struct client *cl, void *arg);

/* In a child: close every descriptor but stdio and keep[] (n of them); 0 or -1. */
static int close_except(int *keep, size_t n)
{
	unsigned int from = STDERR_FILENO + 1;

	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
			int t = keep[j];
			keep[j] = keep[j - 1];
			keep[j - 1] = t;
		}
	for (size_t i = 0; i < n; i++) {
		if (keep[i] < (int)from)
			continue;
		if ((unsigned int)keep[i] > from &&
		    close_range(from, (unsigned int)keep[i] - 1, 0) < 0)
			return -1;
		from = (unsigned int)keep[i] + 1;
	}
	return close_range(from, ~0u, 0);
}

/* What libpin warns of in a client: on stderr, for a failure. */
static void client_log(enum pin_log_level level, const char *msg, void *data)
{
	(void)data;
	if (level <= PIN_LOG_WARN)
		fprintf(stderr, "client %d: libpin: %s\n", (int)getpid(), msg);
}

/* Descriptors a client keeps besides its pipes. */
#define KEEP_MAX 8

static void spawn(struct client *cl, client_fn fn, void *arg, const int *keep, size_t nkeep)
{
	int k[KEEP_MAX + 2];

	ck_assert_uint_le(nkeep, KEEP_MAX);
	ck_assert_int_eq(pipe2(cl->up, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(cl->down, O_CLOEXEC), 0);
	pid_t parent = getpid();
	cl->pid = fork();
	ck_assert_int_ge(cl->pid, 0);
	if (cl->pid == 0) {
		/* Never left behind by a test that failed. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(126);
		if (nkeep)
			memcpy(k, keep, nkeep * sizeof(int));
		k[nkeep] = cl->up[1];
		k[nkeep + 1] = cl->down[0];
		if (close_except(k, nkeep + 2) < 0)
			_exit(126);
		pin_log_set(client_log, NULL);
		_exit(fn(cl, arg));
	}
	close(cl->up[1]);
	close(cl->down[0]);
}

/* Wait for POLLIN on fd while child pid runs, within the bound: 1 when
 * readable, 0 when pid exited first, -1 at the bound. */
static int poll_while_alive(int fd, pid_t pid)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	for (unsigned int waited = 0; waited < wait_ms(); waited += ALIVE_SLICE_MS) {
		if (poll(&p, 1, ALIVE_SLICE_MS) == 1)
			return 1;
		if (manager_pid_exited(pid))
			return poll(&p, 1, 0) == 1 ? 1 : 0;
	}
	return -1;
}

/* The client reached its next step; fails at once when it exited first. */
static void await_step(struct client *cl, const char *step)
{
	int r = poll_while_alive(cl->up[0], cl->pid);
	char c;

	ck_assert_msg(r >= 0, "client %d: no '%s' in %u ms", (int)cl->pid, step, wait_ms());
	ck_assert_msg(r == 1, "client %d exited before '%s' (its error is above)", (int)cl->pid,
		      step);
	ck_assert_int_eq(read(cl->up[0], &c, 1), 1);
}

static void go(struct client *cl)
{
	ck_assert_int_eq(write(cl->down[1], "g", 1), 1);
}

/* The exit code of pid, within the bound; a hung process is killed and fails. */
static int reap_pid(pid_t pid, const char *what)
{
	int st;

	if (manager_wait_pid(pid, REAP_BOUNDS * wait_ms(), &st) < 0) {
		kill(pid, SIGKILL);
		ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
		ck_abort_msg("%s %d still ran %u ms after the test was done with it: hung", what,
			     (int)pid, REAP_BOUNDS * wait_ms());
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int reap(struct client *cl)
{
	close(cl->up[0]);
	close(cl->down[1]);
	return reap_pid(cl->pid, "client");
}

/* The end of a test of one client: it exited 0, the store is back to its
 * idle names, the client's source is closed and uffdd stopped. */
static void client_done(struct client *cl, int src)
{
	ck_assert_int_eq(reap(cl), 0);
	store_baseline();
	close(src);
	down();
}

/*
 * A thread of the client sleeps in kernel function fn.  Seen from here, not
 * by the client: valgrind runs a client's fork() and mremap() holding its
 * lock, so no other thread of the client runs until they return.
 */
static void await_wchan(struct client *cl, const char *fn)
{
	char path[64], wchan[128];
	struct timespec pause = { 0, WCHAN_POLL_NS };
	uint64_t tries = (uint64_t)wait_ms() * 1000000 / WCHAN_POLL_NS;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)cl->pid);
	for (uint64_t i = 0;; i++) {
		DIR *d = opendir(path);
		ck_assert_msg(d != NULL, "client %d is gone: %s", (int)cl->pid, strerror(errno));
		bool found = false;
		for (struct dirent *e; !found && (e = readdir(d));) {
			if (e->d_name[0] == '.')
				continue;
			char w[sizeof(path) + sizeof(e->d_name) + sizeof("/wchan")];
			snprintf(w, sizeof(w), "%s/%s/wchan", path, e->d_name);
			int fd = open(w, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue; /* a thread that just exited */
			ssize_t n = read(fd, wchan, sizeof(wchan) - 1);
			close(fd);
			wchan[n > 0 ? n : 0] = '\0';
			found = !strcmp(wchan, fn);
		}
		closedir(d);
		if (found)
			return;
		ck_assert_msg(!manager_pid_exited(cl->pid),
			      "client %d exited before a thread slept in %s (its error is above)",
			      (int)cl->pid, fn);
		ck_assert_msg(i < tries, "no thread of client %d sleeps in %s after %u ms",
			      (int)cl->pid, fn, wait_ms());
		nanosleep(&pause, NULL);
	}
}

/* Client side of the steps. */
static int tell(struct client *cl)
{
	return write(cl->up[1], "s", 1) == 1 ? 0 : -1;
}

static int hear(struct client *cl)
{
	char c;

	return read(cl->down[0], &c, 1) == 1 ? 0 : -1;
}

/* A source of npages patterned pages (seed), a memfd. */
static int make_source(size_t npages, uint64_t seed)
{
	int fd = memfd_create("durable-src", MFD_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	test_pattern_write(fd, npages * page, seed);
	return fd;
}

/* The page at p holds page file_page of a source of that seed. */
static bool src_page_ok(const uint8_t *p, uint64_t file_page, uint64_t seed)
{
	for (size_t j = 0; j < page; j += 8) {
		uint64_t w;
		memcpy(&w, p + j, 8);
		if (w != test_pattern(file_page * page + j, seed))
			return false;
	}
	return true;
}

static bool zero_page(const uint8_t *p)
{
	for (size_t j = 0; j < page; j++)
		if (p[j])
			return false;
	return true;
}

struct conn {
	struct pin_client *c;
	struct pin_uffd *u;
};

/* A userfaultfd with the events every case uses, and a plain connection:
 * no PIN_CLIENT_RECONNECT, no watcher; with ctx, that pin cache's. */
static int conn_connect_cached(struct conn *k, struct pin_ctx *ctx)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_FORK | PIN_UFFD_FEATURE_EVENT_REMAP |
			    PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP |
			    PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP,
		.optional = PIN_UFFD_FEATURE_THREAD_ID,
	};
	struct pin_client_opts co = {
		.sz = sizeof(co), .socket = manager_socket(mgr), .name = "test-durable", .ctx = ctx
	};

	REQUIRE(pin_uffd_new(&uo, &k->u) == 0);
	REQUIRE_EQ(pin_client_connect(&co, &k->c), 0);
	return 0;
}

static int conn_connect(struct conn *k)
{
	return conn_connect_cached(k, NULL);
}

/* conn_connect(), and the userfaultfd handed over. */
static int conn_open(struct conn *k)
{
	REQUIRE(conn_connect(k) == 0);
	REQUIRE_EQ(pin_client_handover(k->c, k->u), 0);
	return 0;
}

static void conn_close(struct conn *k)
{
	pin_client_free(k->c);
	pin_uffd_free(k->u);
}

static void *map_pages(size_t npages)
{
	void *p = mmap(NULL, npages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		       0);

	if (p == MAP_FAILED)
		return NULL;
	/* A partly filled range must not become a huge page: see uffdd(8). */
	if (madvise(p, npages * page, MADV_NOHUGEPAGE) < 0)
		return NULL;
	return p;
}

/* A region the daemon serves from fd at offset (in pages), registered by us
 * (flags without PIN_CLIENT_REGION_REGISTER) or by the daemon. */
static int add_region(struct conn *k, void *addr, size_t npages, unsigned int mode, int fd,
		      uint64_t offset_pages, unsigned int flags)
{
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = addr,
		.len = npages * page,
		.mode = mode,
		.flags = flags,
		.fd = fd,
		.offset = offset_pages * page,
	};

	if (!(flags & PIN_CLIENT_REGION_REGISTER))
		REQUIRE(pin_uffd_register(k->u, addr, npages * page, mode, NULL) == 0);
	REQUIRE_EQ(pin_client_region_add(k->c, &r), 0);
	return 0;
}

/* Connect and add npages of new anonymous memory as a region served from
 * src, not pushed: the client's usual start.  *ret_base is the memory. */
static int open_region(struct conn *k, size_t npages, int src, uint8_t **ret_base)
{
	REQUIRE(conn_open(k) == 0);
	uint8_t *base = map_pages(npages);
	REQUIRE(base);
	REQUIRE(add_region(k, base, npages, PIN_UFFD_REGISTER_MISSING, src, 0,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	*ret_base = base;
	return 0;
}

/* A request's reply comes after the daemon handled every event it read
 * before it: a point where what the process did is recorded. */
static int sync_daemon(struct conn *k)
{
	struct pin_client_stats st;

	REQUIRE_EQ(pin_client_stats(k->c, 0, &st), 0);
	return 0;
}

/* Thread tid of this process sleeps in kernel function fn, within the bound. */
static int wait_wchan(pid_t tid, const char *fn)
{
	char path[64], buf[128] = "";
	struct timespec pause = { 0, WCHAN_POLL_NS };
	uint64_t tries = (uint64_t)wait_ms() * 1000000 / WCHAN_POLL_NS;

	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", (int)tid);
	for (uint64_t i = 0; i < tries; i++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -1;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		if (!strcmp(buf, fn))
			return 0;
		nanosleep(&pause, NULL);
	}
	fprintf(stderr, "client %d: thread %d sleeps in '%s', not in %s\n", (int)getpid(), (int)tid,
		buf, fn);
	return -1;
}

/* Something a thread does that blocks until the daemon acts. */
struct inflight {
	pthread_t thread;
	_Atomic pid_t tid;
	int (*fn)(struct inflight *f);
	void *arg;
	int ret;
};

static void *inflight_main(void *arg)
{
	struct inflight *f = arg;

	f->tid = (pid_t)syscall(SYS_gettid);
	f->ret = f->fn(f);
	return NULL;
}

/* Start fn in a thread. */
static int inflight_spawn(struct inflight *f)
{
	f->tid = 0;
	REQUIRE(pthread_create(&f->thread, NULL, inflight_main, f) == 0);
	return 0;
}

/* Start fn in a thread; 0 once it sleeps in the kernel in wchan. */
static int inflight_start(struct inflight *f, const char *wchan)
{
	struct timespec pause = { 0, WCHAN_POLL_NS };

	f->tid = 0;
	REQUIRE(pthread_create(&f->thread, NULL, inflight_main, f) == 0);
	while (!f->tid)
		nanosleep(&pause, NULL);
	return wait_wchan(f->tid, wchan);
}

/* The bound from now, for pthread_timedjoin_np(). */
static struct timespec join_deadline(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += wait_ms() / 1000;
	return ts;
}

/* Join the thread by the deadline: -1 when it is still blocked. */
static int join_by(pthread_t th, const struct timespec *dl, const char *what)
{
	int r = pthread_timedjoin_np(th, NULL, dl);
	if (r == ETIMEDOUT)
		fprintf(stderr, "client %d: a thread is still blocked after %u ms: %s\n",
			(int)getpid(), wait_ms(), what);
	return r == 0 ? 0 : -1;
}

static int join_bounded(pthread_t th, const char *what)
{
	struct timespec dl = join_deadline();

	return join_by(th, &dl, what);
}

static int inflight_join(struct inflight *f, const char *what)
{
	REQUIRE(join_bounded(f->thread, what) == 0);
	return f->ret;
}

/* Read page p through a syscall: the kernel takes the fault, and valgrind
 * lets the client's other threads run meanwhile.  out: page bytes. */
static int read_via_kernel(const uint8_t *p, uint8_t *out)
{
	_cleanup_close_ int fd = memfd_create("durable-touch", MFD_CLOEXEC);

	if (fd < 0 || pwrite(fd, p, page, 0) != (ssize_t)page ||
	    pread(fd, out, page, 0) != (ssize_t)page)
		return -1;
	return 0;
}

/* ---- a fork child mid-restore ---- */

#define FK_PAGES   64
#define FK_PARENT  16 /* the parent read pages 0 to 15 before the fork */
#define FK_CHILD   24 /* the child read pages 16 to 23 before the kill */
#define FK_SEED	   0xf0c4
#define FK_FORKING 1 /* the daemon is stopped while fork() waits for its event */

struct fk {
	int src;
	int mode; /* 0 or FK_FORKING */
};

static int fork_child(struct client *cl, const uint8_t *base, bool tell_mid)
{
	/* Downwards: no readahead places what the child must fault itself. */
	for (size_t i = FK_CHILD; i-- > FK_PARENT;)
		REQUIRE(src_page_ok(base + i * page, i, FK_SEED));
	if (tell_mid) {
		REQUIRE(tell(cl) == 0);
		REQUIRE(hear(cl) == 0);
	}
	for (size_t i = FK_PAGES; i-- > 0;)
		REQUIRE(src_page_ok(base + i * page, i, FK_SEED));
	return 0;
}

/* Wait for pid within the bound; its exit code. */
static int wait_child(pid_t pid)
{
	int st;

	if (manager_wait_pid(pid, wait_ms(), &st) < 0) {
		fprintf(stderr, "client %d: its child %d hangs\n", (int)getpid(), (int)pid);
		kill(pid, SIGKILL);
		REQUIRE(waitpid(pid, &st, 0) == pid);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct fk_fork {
	struct client *cl;
	const uint8_t *base;
};

/* Fork, and wait for the child: in a thread that lives as long as the child
 * (PR_SET_PDEATHSIG follows the thread that forked). */
static int fork_and_wait(struct inflight *f)
{
	struct fk_fork *a = f->arg;
	pid_t parent = getpid(), pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(126);
		_exit(fork_child(a->cl, a->base, false));
	}
	return wait_child(pid);
}

static int client_fork(struct client *cl, void *arg)
{
	struct fk *fk = arg;
	struct conn k;
	uint8_t *base;

	REQUIRE(open_region(&k, FK_PAGES, fk->src, &base) == 0);
	for (size_t i = FK_PARENT; i-- > 0;)
		REQUIRE(src_page_ok(base + i * page, i, FK_SEED));
	struct fk_fork fa = { cl, base };
	struct inflight f = { .fn = fork_and_wait, .arg = &fa };
	if (fk->mode == FK_FORKING) {
		/* fork() returns once the daemon read the FORK event: the new
		 * one.  The test sees the thread wait for it. */
		REQUIRE(tell(cl) == 0);
		REQUIRE(hear(cl) == 0);
		REQUIRE(inflight_spawn(&f) == 0);
		REQUIRE(hear(cl) == 0);
	} else {
		pid_t parent = getpid(), child = fork();
		REQUIRE(child >= 0);
		if (child == 0) {
			if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
				_exit(126);
			_exit(fork_child(cl, base, true));
		}
		REQUIRE(hear(cl) == 0);
		f.ret = wait_child(child);
	}
	/* The parent's own missing pages too, from its own session. */
	for (size_t i = FK_PAGES; i-- > FK_PARENT;)
		REQUIRE(src_page_ok(base + i * page, i, FK_SEED));
	if (fk->mode == FK_FORKING)
		REQUIRE(inflight_join(&f, "fork() never returned, or its child hangs") == 0);
	REQUIRE(f.ret == 0);
	conn_close(&k);
	return 0;
}

/* The fork child had faulted some pages through its own session (its
 * userfaultfd came with the FORK event: only the daemon and the store hold
 * it) when the daemon is killed: the child's other pages arrive exact
 * after the restart, not as zeros. */
START_TEST(fork_child_mid_restore)
{
	struct fk fk = { .mode = 0 };
	struct client cl;

	up();
	fk.src = make_source(FK_PAGES, FK_SEED);
	spawn(&cl, client_fork, &fk, &fk.src, 1);
	await_step(&cl, "the child is mid-restore");
	/* Two sessions (the child's has no connection), one source file; the
	 * child's userfaultfd is named after its parent. */
	store_is("s*.conn", 1);
	store_is("s*.uffd", 1);
	store_is("s*.fork1", 1);
	store_is("s*.state", 2);
	store_is("f[0-9]*", 1);
	kill9_restart();
	go(&cl); /* the child */
	go(&cl); /* the parent */
	client_done(&cl, fk.src);
}
END_TEST

/* The daemon is stopped and the process forks: fork() waits for the FORK
 * event to be read when the daemon dies; the new daemon reads it, and the
 * child is served exact. */
START_TEST(fork_while_daemon_dies)
{
	struct fk fk = { .mode = FK_FORKING };
	struct client cl;

	up();
	fk.src = make_source(FK_PAGES, FK_SEED);
	spawn(&cl, client_fork, &fk, &fk.src, 1);
	await_step(&cl, "ready to fork");
	freeze();
	go(&cl);
	await_wchan(&cl, WCHAN_EVENT);
	kill9_restart();
	go(&cl);
	client_done(&cl, fk.src);
}
END_TEST

/* ---- a fork child made again from its parent's record ---- */

/* uffdd's UFFDD_HOLD_ENV: it stops itself at the point named. */
#define HOLD_ENV "UFFDD_HOLD"

/* Start uffdd told to stop itself at the point named (the daemons it is
 * restarted as later are not). */
static void up_held(const char *at)
{
	ck_assert_int_eq(setenv(HOLD_ENV, at, 1), 0);
	up();
	ck_assert_int_eq(unsetenv(HOLD_ENV), 0);
}

/* uffdd reached the point up_held() named and stopped there. */
static void await_held(const char *at)
{
	ck_assert_msg(manager_wait_stopped(mgr) == 0, "uffdd did not hold at %s", at);
}

/*
 * uffdd killed -9 where it held at the point at, and restarted, while a
 * client fn (its arg a source of npages from seed) waits: the client says
 * step and is let go, which brings the daemon to at.  Then the client
 * finishes, and must exit 0.
 */
static void die_held(const char *at, client_fn fn, size_t npages, uint64_t seed, const char *step)
{
	struct client cl;

	up_held(at);
	int src = make_source(npages, seed);
	spawn(&cl, fn, &src, &src, 1);
	await_step(&cl, step);
	go(&cl);
	await_held(at);
	kill9_restart();
	client_done(&cl, src);
}
/* The parent's session is s1, its fork child's s2. */
#define MA_CHILD_FORK  "s2.fork1"
#define MA_CHILD_STATE "s2.state"

/*
 * Reads pages 0 to 15, forks (the daemon holds at "fork-stored"); the child
 * reads 23 to 16, says so, and waits for its parent; then it reads 0 to 23
 * again (its own, in place) and page 63, which it does not have and which
 * must raise SIGBUS.  The parent reads 24 to 63 when told, says so, and
 * lets the child go on when told.  Exits with the child's status.
 */
static int client_made_again(struct client *cl, void *arg)
{
	int src = *(int *)arg, go_child[2];
	struct conn k;
	uint8_t *base;

	REQUIRE(open_region(&k, FK_PAGES, src, &base) == 0);
	for (size_t i = FK_PARENT; i-- > 0;)
		REQUIRE(src_page_ok(base + i * page, i, FK_SEED));
	REQUIRE(pipe2(go_child, O_CLOEXEC) == 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	pid_t parent = getpid(), child = fork();
	REQUIRE(child >= 0);
	if (child == 0) {
		char c;
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(126);
		for (size_t i = FK_CHILD; i-- > FK_PARENT;)
			REQUIRE(src_page_ok(base + i * page, i, FK_SEED));
		REQUIRE(tell(cl) == 0);
		REQUIRE(read(go_child[0], &c, 1) == 1);
		for (size_t i = FK_CHILD; i-- > 0;)
			REQUIRE(src_page_ok(base + i * page, i, FK_SEED));
		REQUIRE(test_read_bus(base + (FK_PAGES - 1) * page));
		_exit(0);
	}
	/* Pages the child does not have: only the parent's session places them. */
	REQUIRE(hear(cl) == 0);
	for (size_t i = FK_CHILD; i < FK_PAGES; i++)
		REQUIRE(src_page_ok(base + i * page, i, FK_SEED));
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	REQUIRE(write(go_child[1], "g", 1) == 1);
	int st = wait_child(child);
	conn_close(&k);
	return st;
}

/*
 * The daemon dies after it stored a fork child's userfaultfd and before the
 * child's record (held there by UFFDD_HOLD), and the next one dies as soon
 * as it is ready: the child is made again from its parent's record once,
 * and reads exact.  Then its parent reads pages the child does not have,
 * and the child's record is lost (as a full store would lose it): the
 * parent's record no longer is the fork's, so the child is not made again
 * from it (its missing pages would read as zeros): its pages are there, and
 * a page it does not have raises SIGBUS.
 */
START_TEST(fork_child_made_again)
{
	struct client cl;

	up_held("fork-stored");
	int src = make_source(FK_PAGES, FK_SEED);
	spawn(&cl, client_made_again, &src, &src, 1);
	await_step(&cl, "ready to fork");
	go(&cl);
	await_held("fork-stored");
	store_is(MA_CHILD_FORK, 1);
	store_is(MA_CHILD_STATE, 0);
	kill9_restart();
	kill9_restart();
	store_is(MA_CHILD_FORK, 1);
	store_is(MA_CHILD_STATE, 1);
	await_step(&cl, "the child read its pages 16 to 23");
	go(&cl);
	await_step(&cl, "the parent read its pages 24 to 63");
	freeze();
	ck_assert_uint_eq(manager_lose(mgr, MA_CHILD_STATE), 1);
	kill9_restart();
	go(&cl);
	client_done(&cl, src);
}
END_TEST

/* ---- a connection accepted by a daemon that dies ---- */

#define CA_PAGES 16
#define CA_SEED	 0xacce

/* Connects, hands over, adds a region and reads it all. */
static int client_connect_once(struct client *cl, void *arg)
{
	int src = *(int *)arg;
	struct conn k;
	uint8_t *base;

	(void)cl;
	REQUIRE(open_region(&k, CA_PAGES, src, &base) == 0);
	for (size_t i = 0; i < CA_PAGES; i++)
		REQUIRE(src_page_ok(base + i * page, i, CA_SEED));
	conn_close(&k);
	return 0;
}

/*
 * The daemon dies after it accepted a connection and before its store kept
 * it (held there by UFFDD_HOLD): the connection ends with the Hello
 * unanswered, and pin_client_connect() connects again to the next daemon
 * instead of failing with ECONNRESET (found by the kill loop: a kill at its
 * first step).
 */
START_TEST(connect_while_daemon_dies)
{
	struct client cl;

	up_held("conn-accepted");
	int src = make_source(CA_PAGES, CA_SEED);
	spawn(&cl, client_connect_once, &src, &src, 1);
	await_held("conn-accepted");
	store_is("s*", 0);
	kill9_restart();
	client_done(&cl, src);
}
END_TEST

/* ---- MADV_DONTNEED ---- */

#define DN_PAGES 64
#define DN_READ	 48 /* pages 0 to 47 read first, 48 to 63 never before the discards */
#define DN_A	 8  /* discarded and acknowledged before the kill: 8 to 15 */
#define DN_A_LEN 8
#define DN_B	 40 /* discarded while the daemon dies: 40 to 51 (48 to 51 never read) */
#define DN_B_LEN 12
#define DN_SEED	 0xd0e

static bool dn_zero(size_t i, bool b_too)
{
	return (i >= DN_A && i < DN_A + DN_A_LEN) || (b_too && i >= DN_B && i < DN_B + DN_B_LEN);
}

static int dn_check(const uint8_t *base, bool b_too)
{
	for (size_t i = DN_PAGES; i-- > 0;) {
		bool ok = dn_zero(i, b_too) ? zero_page(base + i * page)
					    : src_page_ok(base + i * page, i, DN_SEED);
		if (!ok)
			fprintf(stderr, "client: page %zu is not %s\n", i,
				dn_zero(i, b_too) ? "zero (it was discarded)" : "the source's");
		REQUIRE(ok);
	}
	return 0;
}

static int discard_b(struct inflight *f)
{
	return madvise((uint8_t *)f->arg + DN_B * page, DN_B_LEN * page, MADV_DONTNEED);
}

static int client_dontneed(struct client *cl, void *arg)
{
	int src = *(int *)arg;
	struct conn k;
	uint8_t *base;

	REQUIRE(open_region(&k, DN_PAGES, src, &base) == 0);
	for (size_t i = 0; i < DN_READ; i++)
		REQUIRE(src_page_ok(base + i * page, i, DN_SEED));
	REQUIRE(madvise(base + DN_A * page, DN_A_LEN * page, MADV_DONTNEED) == 0);
	REQUIRE(sync_daemon(&k) == 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	/* Killed and back: the discarded pages read as zero, not as checkpoint data. */
	REQUIRE(dn_check(base, false) == 0);

	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	struct inflight f = { .fn = discard_b, .arg = base };
	REQUIRE(inflight_start(&f, WCHAN_EVENT) == 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(inflight_join(&f, "MADV_DONTNEED never returned") == 0);
	REQUIRE(dn_check(base, true) == 0);
	conn_close(&k);
	return 0;
}

/* Pages discarded before a kill, and pages discarded while the daemon dies
 * (its REMOVE event unread), read as zero afterwards; the rest, read before
 * or never, is the source's. */
START_TEST(dontneed_then_restart)
{
	struct client cl;

	up();
	int src = make_source(DN_PAGES, DN_SEED);
	spawn(&cl, client_dontneed, &src, &src, 1);
	await_step(&cl, "discarded");
	kill9_restart();
	go(&cl);
	await_step(&cl, "checked");
	freeze();
	go(&cl);
	await_step(&cl, "MADV_DONTNEED waits for its event");
	kill9_restart();
	client_done(&cl, src);
}
END_TEST

/* ---- write-protect: the dirty bitmap ---- */

#define WP_PAGES    32
#define WP_WRITTEN  10 /* pages 0, 3, 6, ... 27 written before the kill */
#define WP_STRIDE   3
#define WP_LATE	    31 /* written while the daemon dies */
#define WP_AFTER_A  1  /* after a reset: two more writes */
#define WP_AFTER_B  2
#define WP_BYTE	    0xa5
#define WP_LEN	    64 /* bytes written at the start of a page */
#define WP_SEED	    0x3a9
#define WP_BM_BYTES (WP_PAGES / 8)

static int wp_dirty_is(struct conn *k, uint8_t *base, const bool *want, unsigned int flags)
{
	uint8_t bm[WP_BM_BYTES];
	int n = 0;

	for (size_t i = 0; i < WP_PAGES; i++)
		n += want[i];
	int got = pin_client_dirty_get(k->c, base, WP_PAGES * page, flags, bm, sizeof(bm));
	if (got != n)
		fprintf(stderr, "client: DirtyGet says %d dirty pages, not %d\n", got, n);
	REQUIRE(got == n);
	for (size_t i = 0; i < WP_PAGES; i++)
		REQUIRE(((bm[i / 8] >> (i % 8)) & 1) == want[i]);
	return 0;
}

/* The writes before the kill: WP_LEN bytes of every WP_STRIDE-th page,
 * WP_WRITTEN of them, marked in want. */
static void wp_write_first(uint8_t *base, bool *want)
{
	for (size_t i = 0; i < WP_WRITTEN; i++) {
		memset(base + i * WP_STRIDE * page, WP_BYTE, WP_LEN);
		want[i * WP_STRIDE] = true;
	}
}

/* DirtyGet with a reset answers want; then no page is dirty, and the two
 * pages written after it are, they alone.  want is left as they are. */
static int wp_reset_then_two(struct conn *k, uint8_t *base, bool *want)
{
	REQUIRE(wp_dirty_is(k, base, want, PIN_CLIENT_DIRTY_RESET) == 0);
	memset(want, 0, WP_PAGES * sizeof(*want));
	REQUIRE(wp_dirty_is(k, base, want, 0) == 0);
	base[WP_AFTER_A * page] = WP_BYTE;
	base[WP_AFTER_B * page] = WP_BYTE;
	want[WP_AFTER_A] = want[WP_AFTER_B] = true;
	REQUIRE(wp_dirty_is(k, base, want, 0) == 0);
	return 0;
}

/* Write WP_BYTE over the first bytes of the page through the kernel
 * (pread into it): a WP fault that valgrind does not serialise. */
static int write_late(struct inflight *f)
{
	uint8_t bytes[WP_LEN];
	_cleanup_close_ int fd = memfd_create("durable-wp", MFD_CLOEXEC);

	memset(bytes, WP_BYTE, sizeof(bytes));
	if (fd < 0 || pwrite(fd, bytes, sizeof(bytes), 0) != (ssize_t)sizeof(bytes))
		return -1;
	return pread(fd, f->arg, sizeof(bytes), 0) == (ssize_t)sizeof(bytes) ? 0 : -1;
}

static int wp_content_ok(const uint8_t *base, const bool *written)
{
	for (size_t i = 0; i < WP_PAGES; i++) {
		const uint8_t *p = base + i * page;
		if (!written[i]) {
			REQUIRE(src_page_ok(p, i, WP_SEED));
			continue;
		}
		for (size_t j = 0; j < WP_LEN; j++)
			REQUIRE(p[j] == WP_BYTE);
		/* The rest of a written page is still the source's. */
		for (size_t j = WP_LEN; j < page; j += 8) {
			uint64_t w;
			memcpy(&w, p + j, 8);
			REQUIRE(w == test_pattern(i * page + j, WP_SEED));
		}
	}
	return 0;
}

static int client_wp(struct client *cl, void *arg)
{
	int src = *(int *)arg;
	bool want[WP_PAGES] = { false };
	struct conn k;

	REQUIRE(conn_open(&k) == 0);
	uint8_t *base = map_pages(WP_PAGES);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, WP_PAGES, PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP,
			   src, 0, PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER) == 0);
	for (size_t i = 0; i < WP_PAGES; i++)
		REQUIRE(src_page_ok(base + i * page, i, WP_SEED));
	wp_write_first(base, want);
	REQUIRE(sync_daemon(&k) == 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	/* Exactly the pages written before the kill, 10 of 10. */
	REQUIRE(wp_dirty_is(&k, base, want, 0) == 0);
	REQUIRE(wp_content_ok(base, want) == 0);

	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	struct inflight f = { .fn = write_late, .arg = base + WP_LATE * page };
	REQUIRE(inflight_start(&f, WCHAN_FAULT) == 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(inflight_join(&f, "a write-protect fault was never served") == 0);
	want[WP_LATE] = true;
	REQUIRE(wp_content_ok(base, want) == 0);
	/* The write the daemon died under counts too; a reset then starts over. */
	REQUIRE(wp_reset_then_two(&k, base, want) == 0);
	conn_close(&k);
	return 0;
}

/* Dirty bits set before a kill survive it (issue 11 found 10 become 1), and
 * a write whose WP fault the dying daemon never served is served by the new
 * one and counted: DirtyGet is exact. */
START_TEST(wp_dirty_then_restart)
{
	struct client cl;

	up();
	int src = make_source(WP_PAGES, WP_SEED);
	spawn(&cl, client_wp, &src, &src, 1);
	await_step(&cl, "written");
	kill9_restart();
	go(&cl);
	await_step(&cl, "checked");
	freeze();
	go(&cl);
	await_step(&cl, "a write waits in its WP fault");
	kill9_restart();
	client_done(&cl, src);
}
END_TEST

/* The same pages under wp-async tracking (issue 17): writes the kernel
 * keeps, found by PAGEMAP_SCAN through the pagemap in the store. */
static int client_wp_async(struct client *cl, void *arg)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_UNPOPULATED,
	};
	struct pin_client_opts co = { .sz = sizeof(co),
				      .socket = manager_socket(mgr),
				      .name = "test-durable" };
	bool want[WP_PAGES] = { false };
	struct conn k;

	(void)arg;
	REQUIRE(pin_uffd_new(&uo, &k.u) == 0);
	REQUIRE_EQ(pin_client_connect(&co, &k.c), 0);
	REQUIRE_EQ(pin_client_handover(k.c, k.u), 0);
	uint8_t *base = map_pages(WP_PAGES);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, WP_PAGES, PIN_UFFD_REGISTER_WP, -1, 0,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	wp_write_first(base, want);
	/* These bits go into the record... */
	REQUIRE(wp_dirty_is(&k, base, want, 0) == 0);
	/* ...this write stays the kernel's alone. */
	base[WP_LATE * page] = WP_BYTE;
	want[WP_LATE] = true;
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	REQUIRE(wp_reset_then_two(&k, base, want) == 0);
	conn_close(&k);
	return 0;
}

/* A restarted daemon takes the client's pagemap back from the store: the
 * bits the dead one recorded and the writes it never scanned, both exact. */
START_TEST(wp_async_dirty_then_restart)
{
	struct client cl;

	up();
	spawn(&cl, client_wp_async, NULL, NULL, 0);
	await_step(&cl, "written");
	store_is("s*.pagemap", 1);
	kill9_restart();
	store_is("s*.pagemap", 1);
	go(&cl);
	client_done(&cl, -1);
}
END_TEST

/* ---- threads blocked in faults ---- */

#define BF_PAGES   1024
#define BF_THREADS 4
#define BF_SEED	   0xb10c

struct bf {
	const uint8_t *base;
	const size_t *order;
	unsigned int t;
	_Atomic pid_t tid;
	_Atomic unsigned int bad;
};

static void *bf_thread(void *arg)
{
	struct bf *b = arg;
	uint8_t *out = malloc(page);

	b->tid = (pid_t)syscall(SYS_gettid);
	for (size_t k = b->t; out && k < BF_PAGES; k += BF_THREADS) {
		size_t i = b->order[k];
		if (read_via_kernel(b->base + i * page, out) < 0 || !src_page_ok(out, i, BF_SEED))
			b->bad++;
	}
	free(out);
	return out ? NULL : (void *)1;
}

static int client_blocked(struct client *cl, void *arg)
{
	int src = *(int *)arg;
	struct bf b[BF_THREADS];
	pthread_t th[BF_THREADS];
	size_t *order = malloc(BF_PAGES * sizeof(*order));
	struct pin_client_stats st;
	struct conn k;
	uint8_t *base;
	int bad = 0;

	REQUIRE(order);
	test_permutation(order, BF_PAGES, BF_SEED);
	REQUIRE(open_region(&k, BF_PAGES, src, &base) == 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	for (unsigned int t = 0; t < BF_THREADS; t++) {
		b[t] = (struct bf){ .base = base, .order = order, .t = t };
		REQUIRE(pthread_create(&th[t], NULL, bf_thread, &b[t]) == 0);
	}
	for (unsigned int t = 0; t < BF_THREADS; t++) {
		struct timespec pause = { 0, WCHAN_POLL_NS };
		while (!b[t].tid)
			nanosleep(&pause, NULL);
		REQUIRE(wait_wchan(b[t].tid, WCHAN_FAULT) == 0);
	}
	/* Every thread waits in a fault as the daemon dies. */
	REQUIRE(tell(cl) == 0);
	struct timespec dl = join_deadline();
	for (unsigned int t = 0; t < BF_THREADS; t++) {
		REQUIRE(join_by(th[t], &dl, "a thread that faulted under the old daemon") == 0);
		bad += (int)b[t].bad;
	}
	if (bad)
		fprintf(stderr, "client: %d page(s) not the source's\n", bad);
	REQUIRE(bad == 0);
	REQUIRE_EQ(pin_client_stats(k.c, 0, &st), 0);
	REQUIRE_EQ(st.pages_total, BF_PAGES);
	REQUIRE_EQ(st.pages_populated, BF_PAGES);
	free(order);
	conn_close(&k);
	return 0;
}

/* Threads blocked in faults when the daemon is killed all finish, every
 * page exact: the new daemon WAKEs them and serves their faults again. */
START_TEST(threads_blocked_in_faults)
{
	struct client cl;

	up();
	int src = make_source(BF_PAGES, BF_SEED);
	spawn(&cl, client_blocked, &src, &src, 1);
	await_step(&cl, "ready");
	freeze();
	go(&cl);
	await_step(&cl, "every thread blocked in a fault");
	kill9_restart();
	client_done(&cl, src);
}
END_TEST

/* ---- a read under way when the daemon dies ---- */

#define RF_PAGES   16
#define RF_POLL_MS 10

struct rf {
	const uint8_t *base;
	_Atomic pid_t tid;
	unsigned int bad; /* words not the file's */
};

static void *rf_thread(void *arg)
{
	struct rf *r = arg;

	r->tid = (pid_t)syscall(SYS_gettid);
	for (size_t off = 0; off < RF_PAGES * page; off += 8) {
		uint64_t v;
		memcpy(&v, r->base + off, sizeof(v));
		r->bad += v != stuck_fuse_word(off);
	}
	return NULL;
}

static int client_read_in_flight(struct client *cl, void *arg)
{
	int src = *(int *)arg;
	struct rf r = { 0 };
	struct conn k;
	pthread_t th;

	REQUIRE(conn_open(&k) == 0);
	uint8_t *base = map_pages(RF_PAGES);
	REQUIRE(base);
	r.base = base;
	REQUIRE(add_region(&k, base, RF_PAGES, PIN_UFFD_REGISTER_MISSING, src, 0,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(pthread_create(&th, NULL, rf_thread, &r) == 0);
	struct timespec pause = { 0, WCHAN_POLL_NS };
	while (!r.tid)
		nanosleep(&pause, NULL);
	REQUIRE(wait_wchan(r.tid, WCHAN_FAULT) == 0);
	REQUIRE(tell(cl) == 0);
	struct timespec dl = join_deadline();
	REQUIRE(join_by(th, &dl, "a thread whose page was being read as the daemon died") == 0);
	REQUIRE_EQ(r.bad, 0);
	conn_close(&k);
	return 0;
}

/*
 * A source that stops answering (a FUSE file, tests/stuck-fuse.c) while a
 * thread waits for a page of it; the daemon dies with its reader's read
 * under way.  The next daemon WAKEs the thread and reads the page again;
 * when the server comes back, the thread gets the file's bytes, exactly.
 */
START_TEST(read_in_flight_at_kill)
{
	char fdir[128], path[160];
	struct stuck_fuse *f;
	struct client cl;

	up();
	snprintf(fdir, sizeof(fdir), "%s/fuse", dir);
	ck_assert_int_eq(mkdir(fdir, 0755), 0);
	ck_assert_int_eq(stuck_fuse_new(fdir, RF_PAGES * page, &f), 0);
	snprintf(path, sizeof(path), "%s/" STUCK_FUSE_NAME, fdir);
	int src = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(src, 0);
	spawn(&cl, client_read_in_flight, &src, &src, 1);
	await_step(&cl, "its thread waits in a fault");
	/* The daemon's reader asked; the server does not answer. */
	for (unsigned int t = 0; t < wait_ms() && !stuck_fuse_reads(f); t += RF_POLL_MS)
		test_sleep_ms(RF_POLL_MS);
	ck_assert_uint_ge(stuck_fuse_reads(f), 1);
	kill9_restart();
	stuck_fuse_answer(f);
	ck_assert_int_eq(reap(&cl), 0);
	store_baseline();
	close(src);
	stuck_fuse_free(f);
	ck_assert_int_eq(rmdir(fdir), 0);
	down();
}
END_TEST

/* ---- a client with no thread of its own: examples/restore-workload ---- */

#define RW_MIB	 8
#define RW_PAGES (RW_MIB * 256)
/* The workload's pause halfway, ms: it prints paused_at_page first. */
#define RW_PAUSE "1"
#define RW_OUT	 8192

/* Run restore-workload with args; its stdout is *ret_out, stderr a memfd. */
static pid_t workload_start(const char *const *args, int *ret_out, int *ret_err)
{
	const char *argv[16] = { "restore-workload" };
	int out[2], n = 1;

	for (; args[n - 1]; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
	*ret_err = memfd_create("workload-stderr", MFD_CLOEXEC);
	ck_assert_int_ge(*ret_err, 0);
	pid_t parent = getpid(), pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(126);
		dup2(out[1], STDOUT_FILENO);
		dup2(*ret_err, STDERR_FILENO);
		execv(getenv("RESTORE_WORKLOAD"), (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	*ret_out = out[0];
	return pid;
}

/* Read fd into buf from *len until want appears in it (want NULL: until
 * EOF), within the bound. */
static void read_until(int fd, char *buf, size_t cap, size_t *len, const char *want)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	while (!want || !strstr(buf, want)) {
		ck_assert_msg(poll(&p, 1, (int)wait_ms()) == 1,
			      "restore-workload printed nothing for %u ms; so far:\n%s", wait_ms(),
			      buf);
		ssize_t n = read(fd, buf + *len, cap - 1 - *len);
		ck_assert_int_ge(n, 0);
		if (n == 0) {
			ck_assert_msg(!want, "restore-workload ended without '%s':\n%s", want, buf);
			return;
		}
		*len += (size_t)n;
		buf[*len] = '\0';
	}
}

static uint64_t figure(const char *out, const char *err, const char *name)
{
	size_t len = strlen(name);

	for (const char *p = out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, name, len) && p[len] == ' ')
			return strtoull(p + len + 1, NULL, 10);
	ck_abort_msg("no %s in the output:\n%s\n%s", name, out, err);
	return 0;
}

/* restore-workload calls into libpin and touches memory, nothing else: no
 * thread watching the socket.  Killed halfway through its touch, with the
 * background push going and its WaitPopulated coming: it never hangs and
 * every byte it checks is right. */
START_TEST(client_without_thread)
{
	char ck[128], out[RW_OUT] = "", err[RW_OUT] = "";
	size_t len = 0;
	int fd, efd;

	up();
	snprintf(ck, sizeof(ck), "%s/checkpoint", dir);
	ck_assert_int_eq(mkdir(ck, 0700), 0);
	const char *cargs[] = { "checkpoint", ck, "--mib", "8", NULL };
	pid_t pid = workload_start(cargs, &fd, &efd);
	read_until(fd, out, sizeof(out), &len, NULL);
	ck_assert_int_eq(reap_pid(pid, "restore-workload checkpoint"), 0);
	close(fd);
	close(efd);

	const char *rargs[] = { "restore",	     ck,	"--socket",
				manager_socket(mgr), "--touch", "random",
				"--pause-ms",	     RW_PAUSE,	NULL };
	len = 0;
	out[0] = '\0';
	pid = workload_start(rargs, &fd, &efd);
	read_until(fd, out, sizeof(out), &len, "paused_at_page");
	kill9_restart();
	read_until(fd, out, sizeof(out), &len, NULL);
	int status = reap_pid(pid, "restore-workload");
	ssize_t n = pread(efd, err, sizeof(err) - 1, 0);
	err[n > 0 ? n : 0] = '\0';
	ck_assert_msg(status == 0, "restore-workload exited %d:\n%s\n%s", status, out, err);
	ck_assert_uint_eq(figure(out, err, "bad_pages"), 0);
	ck_assert_uint_eq(figure(out, err, "lookups_missing"), 0);
	ck_assert_uint_eq(figure(out, err, "pages_checked"), RW_PAGES);
	ck_assert_uint_eq(figure(out, err, "pages_total"), RW_PAGES);
	ck_assert_uint_eq(figure(out, err, "pages_populated"), RW_PAGES);
	ck_assert_msg(strstr(out, "verified ok\n"), "%s", out);
	close(fd);
	close(efd);
	store_baseline();
	for (const char *f = "manifest\0pages\0"; *f; f += strlen(f) + 1) {
		char p[160];
		snprintf(p, sizeof(p), "%s/%s", ck, f);
		ck_assert_int_eq(unlink(p), 0);
	}
	ck_assert_int_eq(rmdir(ck), 0);
	down();
}
END_TEST

/* ---- mremap ---- */

#define MR_PAGES 64
#define MR_SEED	 0x3e3a

struct mr_move {
	uint8_t *from, *to;
};

static int move_region(struct inflight *f)
{
	struct mr_move *m = f->arg;
	void *p = mremap(m->from, MR_PAGES * page, MR_PAGES * page, MREMAP_MAYMOVE | MREMAP_FIXED,
			 m->to);

	return p == m->to ? 0 : -1;
}

static int mr_check(const uint8_t *base)
{
	for (size_t i = MR_PAGES; i-- > 0;)
		REQUIRE(src_page_ok(base + i * page, i, MR_SEED));
	return 0;
}

static int client_mremap(struct client *cl, void *arg)
{
	int src = *(int *)arg;
	struct conn k;

	REQUIRE(conn_open(&k) == 0);
	uint8_t *base = map_pages(MR_PAGES);
	uint8_t *spot1 = mmap(NULL, MR_PAGES * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *spot2 = mmap(NULL, MR_PAGES * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(base && spot1 != MAP_FAILED && spot2 != MAP_FAILED);
	REQUIRE(add_region(&k, base, MR_PAGES, PIN_UFFD_REGISTER_MISSING, src, 0,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	/* Every other page of the first half, so that each fault brings one. */
	for (size_t i = 0; i < MR_PAGES / 2; i += 2)
		REQUIRE(src_page_ok(base + i * page, i, MR_SEED));
	REQUIRE(mremap(base, MR_PAGES * page, MR_PAGES * page, MREMAP_MAYMOVE | MREMAP_FIXED,
		       spot1) == spot1);
	REQUIRE(sync_daemon(&k) == 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	/* The other pages of the first half, at the new address. */
	for (size_t i = 1; i < MR_PAGES / 2; i += 2)
		REQUIRE(src_page_ok(spot1 + i * page, i, MR_SEED));

	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	struct mr_move mv = { spot1, spot2 };
	struct inflight f = { .fn = move_region, .arg = &mv };
	/* The test sees the thread wait for its event. */
	REQUIRE(inflight_spawn(&f) == 0);
	REQUIRE(inflight_join(&f, "mremap never returned") == 0);
	REQUIRE(mr_check(spot2) == 0);
	conn_close(&k);
	return 0;
}

/* A range moved before a kill, and one moved while the daemon dies (its
 * REMAP event unread): the moved pages arrive exact at the new address
 * (issue 11 found them hanging for ever). */
START_TEST(mremap_then_restart)
{
	struct client cl;

	up();
	int src = make_source(MR_PAGES, MR_SEED);
	spawn(&cl, client_mremap, &src, &src, 1);
	await_step(&cl, "moved");
	kill9_restart();
	go(&cl);
	await_step(&cl, "checked");
	freeze();
	go(&cl);
	await_wchan(&cl, WCHAN_EVENT);
	kill9_restart();
	client_done(&cl, src);
}
END_TEST

/* Reads every other page of the first half, says so, waits; then moves the
 * range (the daemon reads the REMAP and is killed before it applies it) and
 * reads it all at the new address. */
static int client_mremap_read(struct client *cl, void *arg)
{
	int src = *(int *)arg;
	struct conn k;

	REQUIRE(conn_open(&k) == 0);
	uint8_t *base = map_pages(MR_PAGES);
	uint8_t *spot = mmap(NULL, MR_PAGES * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(base && spot != MAP_FAILED);
	REQUIRE(add_region(&k, base, MR_PAGES, PIN_UFFD_REGISTER_MISSING, src, 0,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < MR_PAGES / 2; i += 2)
		REQUIRE(src_page_ok(base + i * page, i, MR_SEED));
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	REQUIRE(mremap(base, MR_PAGES * page, MR_PAGES * page, MREMAP_MAYMOVE | MREMAP_FIXED,
		       spot) == spot);
	/* Answered by the next daemon: the region is where it went. */
	struct pin_client_region_info *ri = NULL;
	size_t n = 0;
	REQUIRE_EQ(pin_client_list_regions(k.c, 0, &ri, &n), 0);
	REQUIRE_EQ(n, 1);
	REQUIRE_EQ(ri[0].addr, (uintptr_t)spot);
	REQUIRE_EQ(ri[0].len, MR_PAGES * page);
	free(ri);
	REQUIRE(mr_check(spot) == 0);
	conn_close(&k);
	return 0;
}

/* A REMAP the daemon read, killed before it applied it (held there by
 * UFFDD_HOLD): the read left it in the record, the next daemon applies it,
 * and the moved pages arrive exact at the new address (the kill loop found
 * this window: the range hung for ever, faulting where no region was). */
START_TEST(mremap_read_when_daemon_dies)
{
	die_held("events-read", client_mremap_read, MR_PAGES, MR_SEED, "read the first pages");
}
END_TEST

/* ---- pages placed, not yet recorded, when the daemon dies ---- */

#define PL_PAGES 64
#define PL_SEED	 0x91ac

/* Every one of the npages pages at base exact (seed), WaitPopulated of
 * them returns, and the stats count each in; then closes k. */
static int all_placed(struct conn *k, uint8_t *base, size_t npages, uint64_t seed)
{
	struct pin_client_stats st;

	for (size_t i = 0; i < npages; i++)
		REQUIRE(src_page_ok(base + i * page, i, seed));
	REQUIRE_EQ(pin_client_wait_populated(k->c, base, npages * page, wait_ms()), 0);
	REQUIRE_EQ(pin_client_stats(k->c, 0, &st), 0);
	REQUIRE_EQ(st.pages_total, npages);
	REQUIRE_EQ(st.pages_populated, npages);
	conn_close(k);
	return 0;
}

/*
 * Touches page 0 of a region no push serves (the daemon places a run from
 * it and holds before it records it, is killed and restarted), then reads
 * every page: each exact, and WaitPopulated of the whole region returns, as
 * the stats say every page is in.  Pages the dead daemon placed but did not
 * record never fault again: without a look at them, the wait never ends.
 */
static int client_placed(struct client *cl, void *arg)
{
	int src = *(int *)arg;
	struct conn k;
	uint8_t *base;

	REQUIRE(open_region(&k, PL_PAGES, src, &base) == 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	REQUIRE(src_page_ok(base, 0, PL_SEED));
	return all_placed(&k, base, PL_PAGES, PL_SEED);
}

START_TEST(placed_when_daemon_dies)
{
	die_held("placed", client_placed, PL_PAGES, PL_SEED, "region added");
}
END_TEST

/* A Prefetch of this many pages goes in runs of UFFDD_PUSH_MAX x 2 pages,
 * each cut into pieces that the worker and its placer place at once (uffdd
 * --workers 2: one placer, uffdd/crew.c). */
#define PW_PAGES 4096
#define PW_SEED	 0x3e1d

/*
 * The same with a Prefetch of the whole region: the daemon holds once the
 * pieces of its first run are placed (two ioctls in flight until then, the
 * worker's and the placer's), none of them recorded.  The record's placing
 * range must cover every piece: a page of one it left out is never looked
 * at again (no fault, no push), and the wait never ends.
 */
static int client_placed_wide(struct client *cl, void *arg)
{
	int src = *(int *)arg;
	struct conn k;
	uint8_t *base;

	REQUIRE(open_region(&k, PW_PAGES, src, &base) == 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	REQUIRE_EQ(pin_client_prefetch(k.c, base, PW_PAGES * page), 0);
	return all_placed(&k, base, PW_PAGES, PW_SEED);
}

START_TEST(placed_by_two_when_daemon_dies)
{
	die_held("placed", client_placed_wide, PW_PAGES, PW_SEED, "region added");
}
END_TEST

/* ---- the pin cache's event log across a restart ---- */

#define EL_PAGES 16
#define EL_SEED	 0xe1

/*
 * A pin of the restoring region, cached (mlock: no kernel pin counter
 * moves); after the daemon's kill and restart, the range unmapped and mapped
 * anew under it (an mlocked range cannot be discarded): the look-up right
 * after gives a new pin, the old one stale, so the next daemon took the
 * event log over and writes the events it reads there.
 */
static int client_evlog(struct client *cl, void *arg)
{
	struct pin_ctx_opts po = { .sz = sizeof(po),
				   .backend = PIN_BACKEND_MLOCK,
				   .flags = PIN_CTX_NO_MONITOR };
	struct pin_range *r, *r2;
	struct pin_ctx *ctx;
	struct conn k;

	REQUIRE_EQ(pin_ctx_new(&po, &ctx), 0);
	REQUIRE(conn_connect_cached(&k, ctx) == 0);
	REQUIRE_EQ(pin_client_handover(k.c, k.u), 0);
	uint8_t *base = map_pages(EL_PAGES);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, EL_PAGES, PIN_UFFD_REGISTER_MISSING, *(int *)arg, 0,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE_EQ(pin_range_get(ctx, base, EL_PAGES * page, &r), 0);
	pin_range_put(r);
	REQUIRE_EQ(pin_range_get(ctx, base, EL_PAGES * page, &r), 0);
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	REQUIRE_EQ(munmap(base, EL_PAGES * page), 0);
	REQUIRE(mmap(base, EL_PAGES * page, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == base);
	memset(base, 0x5a, EL_PAGES * page);
	REQUIRE_EQ(pin_range_get(ctx, base, EL_PAGES * page, &r2), 0);
	REQUIRE(r2 != r);
	REQUIRE_EQ(pin_range_stale(r), 1);
	REQUIRE_EQ(pin_range_stale(r2), 0);
	pin_range_put(r2);
	pin_range_put(r);
	conn_close(&k);
	pin_ctx_free(ctx);
	return 0;
}

START_TEST(evlog_taken_over)
{
	struct client cl;

	up();
	int src = make_source(EL_PAGES, EL_SEED);
	spawn(&cl, client_evlog, &src, &src, 1);
	await_step(&cl, "pinned and cached");
	store_is("s*.evlog", 1);
	kill9_restart();
	go(&cl);
	client_done(&cl, src);
}
END_TEST

/* ---- a request in flight ---- */

#define RQ_PAGES 16
#define RQ_SEED	 0x4e9

struct rq {
	struct conn *k;
	uint8_t *base;
	int src;
};

static int region_add_request(struct inflight *f)
{
	struct rq *q = f->arg;
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = q->base,
		.len = RQ_PAGES * page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER,
		.fd = q->src,
	};

	return pin_client_region_add(q->k->c, &r);
}

static int client_request(struct client *cl, void *arg)
{
	struct rq q = { .src = *(int *)arg };
	struct pin_client_region_info *ri = NULL;
	struct pin_client_stats st;
	struct conn k;
	size_t n = 0;

	REQUIRE(conn_open(&k) == 0);
	q.k = &k;
	q.base = map_pages(RQ_PAGES);
	REQUIRE(q.base);
	REQUIRE(tell(cl) == 0);
	REQUIRE(hear(cl) == 0);
	struct inflight f = { .fn = region_add_request, .arg = &q };
	REQUIRE(pthread_create(&f.thread, NULL, inflight_main, &f) == 0);
	/* The test sees the request arrive on the daemon's end. */
	REQUIRE(hear(cl) == 0);
	REQUIRE_EQ(inflight_join(&f, "RegionAdd never returned"), 0);
	/* One region, registered once, each page copied once. */
	REQUIRE_EQ(pin_client_list_regions(k.c, 0, &ri, &n), 0);
	REQUIRE_EQ(n, 1);
	REQUIRE_EQ(ri[0].addr, (uintptr_t)q.base);
	REQUIRE_EQ(ri[0].len, RQ_PAGES * page);
	free(ri);
	for (size_t i = RQ_PAGES; i-- > 0;)
		REQUIRE(src_page_ok(q.base + i * page, i, RQ_SEED));
	REQUIRE_EQ(pin_client_stats(k.c, 0, &st), 0);
	REQUIRE_EQ(st.pages_total, RQ_PAGES);
	REQUIRE_EQ(st.pages_populated, RQ_PAGES);
	REQUIRE_EQ(st.pages_copied, RQ_PAGES);
	REQUIRE_EQ(st.bytes_copied, RQ_PAGES * page);
	REQUIRE_EQ(st.eexist, 0);
	conn_close(&k);
	return 0;
}

/* Wait until a request sits unread on a session's stored connection. */
static void await_queued(void)
{
	struct timespec pause = { 0, WCHAN_POLL_NS };
	uint64_t tries = (uint64_t)wait_ms() * 1000000 / WCHAN_POLL_NS;

	for (uint64_t i = 0; manager_queued(mgr, "s*.conn") == 0; i++) {
		ck_assert_msg(i < tries, "no request reached the daemon's end in %u ms", wait_ms());
		nanosleep(&pause, NULL);
	}
}

/* A RegionAdd (the daemon registers the range) sent to a daemon that dies
 * before it reads it: the call returns 0, and the region is there once. */
START_TEST(request_in_flight)
{
	struct client cl;

	up();
	int src = make_source(RQ_PAGES, RQ_SEED);
	spawn(&cl, client_request, &src, &src, 1);
	await_step(&cl, "handed over");
	freeze();
	go(&cl);
	await_queued();
	kill9_restart();
	go(&cl);
	client_done(&cl, src);
}
END_TEST

/* ---- kill -9 at random moments ---- */

/* Default kills of kill_loop: CI stays quick; $DURABLE_KILLS for more. */
#define KILLS_ENV     "DURABLE_KILLS"
#define KILLS_DEFAULT 5
/* The case's bound: a base, and this much per kill (s). */
#define KILL_BASE_S 60
#define KILL_EACH_S 2

/* One source, sliced: R (readers), M (mremap), D (DONTNEED), W (WP). */
#define KL_R	    512
#define KL_M	    32
#define KL_D	    32
#define KL_W	    32
#define KL_OFF_M    KL_R
#define KL_OFF_D    (KL_OFF_M + KL_M)
#define KL_OFF_W    (KL_OFF_D + KL_D)
#define KL_PAGES    (KL_OFF_W + KL_W)
#define KL_THREADS  4
#define KL_FORKED   16 /* pages the fork child reads */
#define KL_DISC	    4  /* D: pages 4 to 11 discarded */
#define KL_DISC_N   8
#define KL_WRITES   10 /* W: every third page written */
#define KL_W_STRIDE 3
/* Steps besides the readers' pages: fork, mremap, its check, DONTNEED, its
 * check, the WP writes, DirtyGet. */
#define KL_OPS 7
/* Steps around them: before connecting, Hello, the handover and R's
 * RegionAdd answered; the connection closed. */
#define KL_SETUP 4
#define KL_END	 1
#define KL_STEPS (KL_SETUP + KL_R + KL_OPS + KL_END)
/* One round in this many kills twice in a row. */
#define TWICE_EVERY 4

struct kl_shared {
	_Atomic uint64_t progress;
	uint64_t target; /* the step after which the daemon is killed */
	int efd;	 /* written once progress reaches target */
	int src;	 /* the source, kept open in the client */
	_Atomic unsigned int wrong_pages, hung_threads, errors;
	uint64_t seed;
};

struct kl_reader {
	struct kl_shared *sh;
	const uint8_t *base;
	const size_t *order;
	unsigned int t;
};

static void kl_step(struct kl_shared *sh)
{
	uint64_t one = 1;

	if (atomic_fetch_add(&sh->progress, 1) + 1 == sh->target &&
	    write(sh->efd, &one, sizeof(one)) != sizeof(one))
		sh->errors++;
}

/* Page i of what, at p, is wrong: said with whether it reads as zeros. */
static void kl_wrong(struct kl_shared *sh, const char *what, size_t i, const uint8_t *p)
{
	fprintf(stderr, "client %d: %s: page %zu is wrong%s\n", (int)getpid(), what, i,
		zero_page(p) ? " (zeros)" : "");
	sh->wrong_pages++;
}

static void *kl_read(void *arg)
{
	struct kl_reader *r = arg;

	for (size_t k = r->t; k < KL_R; k += KL_THREADS) {
		size_t i = r->order[k];
		if (!src_page_ok(r->base + i * page, i, r->sh->seed))
			kl_wrong(r->sh, "R", i, r->base + i * page);
		kl_step(r->sh);
	}
	return NULL;
}

static int kl_ops(struct kl_shared *sh, struct conn *k, uint8_t *r, int src)
{
	uint64_t seed = sh->seed;

	/* A fork child reads pages of R, missing ones through its own session. */
	pid_t parent = getpid(), pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(126);
		for (size_t j = 0; j < KL_FORKED; j++) {
			size_t i = (size_t)(test_rand(&seed) % KL_R);
			if (!src_page_ok(r + i * page, i, sh->seed))
				kl_wrong(sh, "fork child", i, r + i * page);
		}
		_exit(0);
	}
	REQUIRE(wait_child(pid) == 0);
	kl_step(sh);

	/* M: half read, moved, all read at the new address. */
	uint8_t *m = map_pages(KL_M);
	uint8_t *spot = mmap(NULL, KL_M * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(m && spot != MAP_FAILED);
	REQUIRE(add_region(k, m, KL_M, PIN_UFFD_REGISTER_MISSING, src, KL_OFF_M,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < KL_M; i += 2)
		if (!src_page_ok(m + i * page, KL_OFF_M + i, sh->seed))
			kl_wrong(sh, "M", i, m + i * page);
	REQUIRE(mremap(m, KL_M * page, KL_M * page, MREMAP_MAYMOVE | MREMAP_FIXED, spot) == spot);
	kl_step(sh);
	for (size_t i = KL_M; i-- > 0;)
		if (!src_page_ok(spot + i * page, KL_OFF_M + i, sh->seed))
			kl_wrong(sh, "M moved", i, spot + i * page);
	kl_step(sh);

	/* D: read, part discarded: zero there, the source's elsewhere. */
	uint8_t *d = map_pages(KL_D);
	REQUIRE(d);
	REQUIRE(add_region(k, d, KL_D, PIN_UFFD_REGISTER_MISSING, src, KL_OFF_D,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < KL_D; i++)
		if (!src_page_ok(d + i * page, KL_OFF_D + i, sh->seed))
			kl_wrong(sh, "D", i, d + i * page);
	REQUIRE(madvise(d + KL_DISC * page, KL_DISC_N * page, MADV_DONTNEED) == 0);
	kl_step(sh);
	for (size_t i = 0; i < KL_D; i++) {
		bool disc = i >= KL_DISC && i < KL_DISC + KL_DISC_N;
		if (disc ? !zero_page(d + i * page)
			 : !src_page_ok(d + i * page, KL_OFF_D + i, sh->seed))
			kl_wrong(sh, disc ? "D discarded" : "D kept", i, d + i * page);
	}
	kl_step(sh);

	/* W: write-protected, written, the dirty bitmap exact. */
	uint8_t *w = map_pages(KL_W), bm[KL_W / 8];
	REQUIRE(w);
	REQUIRE(add_region(k, w, KL_W, PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP, src,
			   KL_OFF_W, PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER) == 0);
	for (size_t i = 0; i < KL_WRITES; i++)
		w[i * KL_W_STRIDE * page] = WP_BYTE;
	kl_step(sh);
	int n = pin_client_dirty_get(k->c, w, KL_W * page, 0, bm, sizeof(bm));
	if (n != KL_WRITES)
		fprintf(stderr, "client %d: DirtyGet says %d dirty pages, not %d\n", (int)getpid(),
			n, KL_WRITES);
	REQUIRE(n == KL_WRITES);
	for (size_t i = 0; i < KL_W; i++)
		REQUIRE(((bm[i / 8] >> (i % 8)) & 1) ==
			(i % KL_W_STRIDE == 0 && i / KL_W_STRIDE < KL_WRITES));
	kl_step(sh);
	return 0;
}

static int client_loop(struct client *cl, void *arg)
{
	struct kl_shared *sh = arg;
	int src = sh->src;
	struct kl_reader rd[KL_THREADS];
	pthread_t th[KL_THREADS];
	size_t *order = malloc(KL_R * sizeof(*order));
	struct conn k;

	REQUIRE(order);
	test_permutation(order, KL_R, sh->seed);
	/* A kill after a step meets the next request on its way; the first,
	 * the connection and its Hello. */
	kl_step(sh);
	REQUIRE(conn_connect(&k) == 0);
	kl_step(sh);
	REQUIRE_EQ(pin_client_handover(k.c, k.u), 0);
	kl_step(sh);
	uint8_t *r = map_pages(KL_R);
	REQUIRE(r);
	/* With the background push: a push may be under way at the kill. */
	REQUIRE(add_region(&k, r, KL_R, PIN_UFFD_REGISTER_MISSING, src, 0, 0) == 0);
	kl_step(sh);
	for (unsigned int t = 0; t < KL_THREADS; t++) {
		rd[t] = (struct kl_reader){ sh, r, order, t };
		REQUIRE(pthread_create(&th[t], NULL, kl_read, &rd[t]) == 0);
	}
	int ops = kl_ops(sh, &k, r, src);
	struct timespec dl = join_deadline();
	for (unsigned int t = 0; t < KL_THREADS; t++)
		if (join_by(th[t], &dl, "a reader of R") < 0)
			sh->hung_threads++;
	REQUIRE(sh->hung_threads == 0);
	REQUIRE(ops == 0);
	for (size_t i = 0; i < KL_R; i++)
		if (!src_page_ok(r + i * page, i, sh->seed))
			kl_wrong(sh, "R at the end", i, r + i * page);
	free(order);
	conn_close(&k);
	/* A kill now meets the end of the session. */
	kl_step(sh);
	return 0;
}

static unsigned int kills(void)
{
	const char *e = getenv(KILLS_ENV);

	return e && *e ? (unsigned int)strtoul(e, NULL, 10) : KILLS_DEFAULT;
}

/*
 * A uffd-stress-like restore (threads reading in random order, a fork, an
 * mremap, a DONTNEED, WP writes and DirtyGet), one kill -9 and restart at a
 * random step of it per round (some rounds a second kill as soon as the
 * new daemon is ready), $DURABLE_KILLS kills in all: 0 wrong pages, 0 hung
 * threads, the store back to no session after each round.  A round takes a second
 * or so (uffdd notices a fork child gone within its 1 s probe); 1,000 kills:
 *   DURABLE_KILLS=1000 meson test -C build durable -t 20
 */
START_TEST(kill_loop)
{
	struct kl_shared *sh =
		mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t seed = test_seed();
	unsigned int n = kills();

	ck_assert_ptr_ne(sh, MAP_FAILED);
	up();
	sh->efd = eventfd(0, EFD_CLOEXEC);
	ck_assert_int_ge(sh->efd, 0);
	unsigned int done = 0;
	for (unsigned int round = 0; done < n; round++) {
		struct client cl;
		uint64_t v;

		sh->progress = 0;
		sh->wrong_pages = sh->hung_threads = sh->errors = 0;
		sh->seed = test_rand(&seed) | 1;
		sh->target = 1 + test_rand(&seed) % KL_STEPS;
		sh->src = make_source(KL_PAGES, sh->seed);
		int keep[] = { sh->src, sh->efd };
		spawn(&cl, client_loop, sh, keep, 2);
		int r = poll_while_alive(sh->efd, cl.pid);
		ck_assert_msg(r >= 0,
			      "round %u: step %" PRIu64 " not reached in %u ms (at %" PRIu64 ")",
			      round, sh->target, wait_ms(), (uint64_t)sh->progress);
		ck_assert_msg(r == 1,
			      "round %u: the client exited before step %" PRIu64 " (at %" PRIu64
			      ")",
			      round, sh->target, (uint64_t)sh->progress);
		ck_assert_int_eq(read(sh->efd, &v, sizeof(v)), sizeof(v));
		kill9_restart();
		/* Some rounds kill the new daemon again as soon as it is ready:
		 * a restart storm, the takeover's own work under way. */
		bool twice = done + 1 < n && test_rand(&seed) % TWICE_EVERY == 0;
		if (twice)
			kill9_restart();
		done += 1 + twice;
		int st = reap(&cl);
		ck_assert_msg(st == 0 && !sh->wrong_pages && !sh->hung_threads && !sh->errors,
			      "round %u, killed after step %" PRIu64 " of %d%s (seed %" PRIu64
			      "): exit %d, %u wrong page(s), %u hung thread(s), %u error(s)",
			      round, sh->target, KL_STEPS, twice ? ", twice" : "", sh->seed, st,
			      sh->wrong_pages, sh->hung_threads, sh->errors);
		store_baseline();
		close(sh->src);
	}
	fprintf(stderr, "kill_loop: %u kill(s), 0 wrong pages, 0 hung threads\n", n);
	close(sh->efd);
	munmap(sh, sizeof(*sh));
	down();
}
END_TEST

/* ---- the watchdog ---- */

/* WatchdogSec= here: short, so that WATCHDOG=1 comes often. */
#define WD_USEC 200000u
/* WATCHDOG=1 messages seen before the test believes they keep coming. */
#define WD_PETS	   3
#define WD_POLL_MS 10
/* Intervals to wait for one without WATCHDOG=1, at most. */
#define WD_SETTLE 10

static unsigned long pets(void)
{
	struct manager_stats st;

	manager_stats(mgr, &st);
	return st.watchdog;
}

/* Wait until more than n WATCHDOG=1 came; returns how many did. */
static unsigned long pets_past(unsigned long n)
{
	unsigned long got = 0;

	for (unsigned int t = 0; t < wait_ms() && (got = pets()) <= n; t += WD_POLL_MS)
		test_sleep_ms(WD_POLL_MS);
	return got;
}

/* Sets *arg to thread tid of uffdd (pid) when it is a worker: neither its
 * main thread nor a placer. */
static bool find_worker(pid_t pid, const char *tid, void *arg)
{
	if (atoi(tid) == pid || test_daemon_placer(pid, tid))
		return true;
	*(pid_t *)arg = atoi(tid);
	return false;
}

/* A thread of pid other than its main one and its placers: a worker. */
static pid_t a_worker(pid_t pid)
{
	pid_t tid = 0;

	test_each_task(pid, find_worker, &tid);
	ck_assert_int_gt(tid, 0);
	return tid;
}

/*
 * With WATCHDOG_USEC set, uffdd sends WATCHDOG=1 while its workers go round,
 * idle ones too; one worker stopped (a ptrace stop, as a thread stuck in the
 * kernel would be), it sends none, so systemd would restart it; let go, it
 * sends them again.  Without WATCHDOG_USEC, none.
 */
START_TEST(watchdog_petted)
{
	int status;

	up_watched(WD_USEC);
	ck_assert_uint_gt(pets_past(WD_PETS), WD_PETS);
	pid_t tid = a_worker(manager_pid(mgr));
	ck_assert_int_eq(ptrace(PTRACE_SEIZE, tid, NULL, NULL), 0);
	ck_assert_int_eq(ptrace(PTRACE_INTERRUPT, tid, NULL, NULL), 0);
	ck_assert_int_eq(waitpid(tid, &status, __WALL), tid);
	/* What was sent before it stopped arrives within an interval: wait
	 * for an interval without any, then two more bring none. */
	unsigned long before = pets();
	for (int i = 0; i < WD_SETTLE; i++) {
		test_sleep_ms(WD_USEC / 1000);
		unsigned long now = pets();
		if (now == before)
			break;
		before = now;
	}
	test_sleep_ms(2 * WD_USEC / 1000);
	ck_assert_uint_eq(pets(), before);
	ck_assert_int_eq(ptrace(PTRACE_DETACH, tid, NULL, NULL), 0);
	ck_assert_uint_gt(pets_past(before), before);
	down();

	up_watched(0);
	ck_assert_int_eq(manager_stop(mgr), 0);
	ck_assert_uint_eq(pets(), 0);
	manager_free(mgr);
	mgr = NULL;
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* A bound for most cases: a few daemon starts, each under WAIT_MS. */
#define CASE_TIMEOUT_S 120

Suite *test_suite(void)
{
	Suite *s = suite_create("durable");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, manager_plays_systemd, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, fork_child_mid_restore, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, fork_while_daemon_dies, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, fork_child_made_again, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, connect_while_daemon_dies, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, dontneed_then_restart, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, wp_dirty_then_restart, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, wp_async_dirty_then_restart, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, threads_blocked_in_faults, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, client_without_thread, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, mremap_then_restart, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, mremap_read_when_daemon_dies, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, placed_when_daemon_dies, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, placed_by_two_when_daemon_dies, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, evlog_taken_over, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, request_in_flight, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, kill_loop, KILL_BASE_S + KILL_EACH_S * kills());
	TEST_ADD_CASE(s, watchdog_petted, CASE_TIMEOUT_S);
	/* Under valgrind the case never ends (it ran past 400 s where it takes
	 * 2 s plainly, leaving its FUSE mount stuck): the plain and ASan runs
	 * have it. */
	if (RUNNING_ON_VALGRIND)
		printf("read_in_flight_at_kill: not run under valgrind\n");
	else
		TEST_ADD_CASE(s, read_in_flight_at_kill, CASE_TIMEOUT_S);
	return s;
}

const char *test_skip_reason(void)
{
	if (!getenv("UFFDD") || !getenv("RESTORE_WORKLOAD") || !getenv("FAKE_UFFDD"))
		return "UFFDD, RESTORE_WORKLOAD and FAKE_UFFDD (the programs to run) are not set; "
		       "run through meson test";
	return test_uffd_skip_reason();
}
