// SPDX-License-Identifier: MIT
/*
 * Suite daemon: uffdd (the binary in $UFFDD) on a temporary socket, clients
 * in child processes.  A client's faulting thread and the handler are always
 * in different processes (the daemon), so nothing here deadlocks under
 * valgrind, whose threads run one at a time; where a client must keep working
 * while one of its threads waits on a fault (the restart), that thread
 * touches the memory through a syscall, which valgrind does not serialise.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

static size_t page;

/* Inside client processes: report and fail without Check. */
#define REQUIRE(c)                                                                   \
	do {                                                                         \
		if (!(c)) {                                                          \
			fprintf(stderr, "%s:%d: client: %s failed\n", __FILE__, __LINE__, #c); \
			return 1;                                                    \
		}                                                                    \
	} while (0)

/* ---- the daemon ---- */

static int try_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

static int count_fds(pid_t pid)
{
	char path[64];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *dir = opendir(path);
	ck_assert_ptr_nonnull(dir);
	/* Under the valgrind setup (--trace-children) valgrind runs the daemon
	 * too, with a few descriptors of its own just below the soft RLIMIT_NOFILE:
	 * not counted when that is above 1024; at 1024 (1012 to 1018) they are,
	 * and being open all the daemon's life, in every count alike. */
	for (struct dirent *e; (e = readdir(dir));)
		n += e->d_name[0] != '.' && atoi(e->d_name) < 1024;
	closedir(dir);
	return n;
}

/* The descriptors of a daemon without clients: the last one's session is
 * freed asynchronously, so wait for the count to settle. */
static int idle_fds(pid_t pid)
{
	int n = count_fds(pid);

	for (int same = 0, i = 0; same < 3 && i < 500; i++) {
		test_sleep_ms(20);
		int k = count_fds(pid);
		same = k == n ? same + 1 : 0;
		n = k;
	}
	return n;
}

/* The daemon frees a session asynchronously: wait for its fds to go. */
static void wait_fds(pid_t pid, int want)
{
	int n = -1;

	for (int i = 0; i < 500 && (n = count_fds(pid)) != want; i++)
		test_sleep_ms(10);
	if (n != want) {
		char cmd[64];
		snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd >&2", (int)pid);
		ck_assert_int_ge(system(cmd), 0);
	}
	ck_assert_int_eq(n, want);
}

/* ---- clients ---- */

typedef int (*client_fn)(const struct test_daemon *d, void *arg);

static pid_t spawn(client_fn fn, const struct test_daemon *d, void *arg)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(fn(d, arg));
	return pid;
}

static int reap(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void *map_region(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* A partly filled range must not become a huge page: see uffdd(8). */
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

struct conn {
	struct pin_client *c;
	struct pin_uffd *u;
};

static int conn_open(const struct test_daemon *d, struct conn *k, unsigned int flags)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_FORK | PIN_UFFD_FEATURE_EVENT_REMAP |
			    PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP |
			    PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP,
		.optional = PIN_UFFD_FEATURE_THREAD_ID | PIN_UFFD_FEATURE_POISON,
	};
	struct pin_client_opts co = {
		.sz = sizeof(co),
		.socket = d->sock,
		.name = "test-daemon",
		.flags = flags,
		.reconnect_ms = 20000,
	};

	REQUIRE(pin_uffd_new(&uo, &k->u) == 0);
	REQUIRE(pin_client_connect(&co, &k->c) == 0);
	REQUIRE(pin_client_handover(k->c, k->u) == 0);
	return 0;
}

static void conn_close(struct conn *k)
{
	pin_client_free(k->c);
	pin_uffd_free(k->u);
}

static int add_region(struct conn *k, void *addr, size_t len, unsigned int mode, int fd,
		      unsigned int flags)
{
	struct pin_client_region r = {
		.sz = sizeof(r), .addr = addr, .len = len, .mode = mode, .flags = flags, .fd = fd,
	};

	if (!(flags & PIN_CLIENT_REGION_REGISTER)) {
		int ret = pin_uffd_register(k->u, addr, len, mode, NULL);
		if (ret < 0)
			return ret;
	}
	return pin_client_region_add(k->c, &r);
}

/* A source file of npages patterned pages (word at offset o: test_pattern(o, seed)). */
static int make_source(const struct test_daemon *d, const char *name, size_t npages, uint64_t seed)
{
	char path[128];
	size_t len = npages * page;

	snprintf(path, sizeof(path), "%s/%s", d->dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	unlink(path);
	test_pattern_write(fd, len, seed);
	return fd;
}

/* Page i of a region over a source at offset 0 holds the pattern. */
static bool page_ok(const uint8_t *base, size_t i, uint64_t seed)
{
	const uint64_t *w = (const uint64_t *)(base + i * page);

	for (size_t j = 0; j < page / 8; j++)
		if (w[j] != test_pattern(i * page + j * 8, seed))
			return false;
	return true;
}

static bool page_zero(const uint8_t *base, size_t i)
{
	const uint64_t *w = (const uint64_t *)(base + i * page);

	for (size_t j = 0; j < page / 8; j++)
		if (w[j])
			return false;
	return true;
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void shuffle(size_t *v, size_t n, uint64_t seed)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)(rng(&seed) % i), t = v[i - 1];
		v[i - 1] = v[j];
		v[j] = t;
	}
}

/* ---- lazy fill ---- */

#define FILL_THREADS 4

struct fill {
	int fd;
	size_t npages;
	uint64_t seed;
	const uint8_t *base;
	size_t *order;
	int half_fd; /* restart: told when half the pages are read */
	_Atomic int bad;
};

static void *fill_thread(void *arg)
{
	struct fill *f = arg;
	static _Atomic unsigned int next;
	unsigned int t = atomic_fetch_add(&next, 1) % FILL_THREADS;

	for (size_t k = t; k < f->npages; k += FILL_THREADS)
		if (!page_ok(f->base, f->order[k], f->seed))
			atomic_fetch_add(&f->bad, 1);
	return NULL;
}

/* The region is served byte-exact, several threads touching in random order. */
static int client_fill(const struct test_daemon *d, void *arg)
{
	struct fill *f = arg;
	struct pin_client_stats st;
	pthread_t th[FILL_THREADS];
	struct conn k;
	size_t len = f->npages * page;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = map_region(len);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, len, PIN_UFFD_REGISTER_MISSING, f->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	f->base = base;
	f->order = malloc(f->npages * sizeof(*f->order));
	REQUIRE(f->order);
	for (size_t i = 0; i < f->npages; i++)
		f->order[i] = i;
	shuffle(f->order, f->npages, f->seed);
	for (int i = 0; i < FILL_THREADS; i++)
		REQUIRE(pthread_create(&th[i], NULL, fill_thread, f) == 0);
	for (int i = 0; i < FILL_THREADS; i++)
		pthread_join(th[i], NULL);
	REQUIRE(f->bad == 0);
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.pages_copied == f->npages);
	REQUIRE(st.bytes_copied == len);
	REQUIRE(st.pages_zeroed == 0);
	REQUIRE(st.pages_pushed == 0);
	REQUIRE(st.pages_total == f->npages);
	REQUIRE(st.pages_populated == f->npages);
	REQUIRE(st.faults >= 1 && st.faults <= f->npages);
	uint64_t lat = 0;
	for (int i = 0; i < PIN_CLIENT_LATENCY_BUCKETS; i++)
		lat += st.latency_us_log2[i];
	REQUIRE(lat == st.faults);
	free(f->order);
	conn_close(&k);
	return 0;
}

START_TEST(lazy_fill_64m)
{
	struct test_daemon d;
	struct fill f = { .npages = (64u << 20) / page, .seed = (uint64_t)time(NULL) | 1 };

	test_daemon_start(&d, NULL);
	f.fd = make_source(&d, "src", f.npages, f.seed);
	ck_assert_int_eq(reap(spawn(client_fill, &d, &f)), 0);
	close(f.fd);
	test_daemon_stop(&d);
}
END_TEST

START_TEST(two_clients)
{
	struct test_daemon d;
	struct fill a = { .npages = (8u << 20) / page, .seed = 0x1234 };
	struct fill b = { .npages = (12u << 20) / page, .seed = 0x9876 };

	test_daemon_start(&d, NULL);
	a.fd = make_source(&d, "a", a.npages, a.seed);
	b.fd = make_source(&d, "b", b.npages, b.seed);
	pid_t pa = spawn(client_fill, &d, &a), pb = spawn(client_fill, &d, &b);
	ck_assert_int_eq(reap(pa), 0);
	ck_assert_int_eq(reap(pb), 0);
	close(a.fd);
	close(b.fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- holes ---- */

/* Pages 0-3 and 12-13 are data; 4-11 a hole; the file ends after page 13,
 * the region goes on to page 31. */
#define HOLE_PAGES 32

static int client_holes(const struct test_daemon *d, void *arg)
{
	int fd = *(int *)arg;
	struct pin_client_stats st;
	struct conn k;
	size_t order[HOLE_PAGES];

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = map_region(HOLE_PAGES * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, HOLE_PAGES * page, PIN_UFFD_REGISTER_MISSING, fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < HOLE_PAGES; i++)
		order[i] = i;
	shuffle(order, HOLE_PAGES, 77);
	for (size_t k2 = 0; k2 < HOLE_PAGES; k2++) {
		size_t i = order[k2];
		bool data = i < 4 || (i >= 12 && i < 14);
		REQUIRE(data ? page_ok(base, i, 5) : page_zero(base, i));
	}
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.pages_copied == 6);
	REQUIRE(st.pages_zeroed == HOLE_PAGES - 6);
	conn_close(&k);
	return 0;
}

START_TEST(holes_read_zero)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, "holes", 14, 5);
	ck_assert_int_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * page,
				   8 * page),
			 0);
	/* The file system must report the hole, or the test proves nothing. */
	ck_assert_int_eq(lseek(fd, 4 * page, SEEK_DATA), (off_t)(12 * page));
	ck_assert_int_eq(reap(spawn(client_holes, &d, &fd)), 0);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- a source that shrinks under its region ---- */

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(bus_jmp, 1);
}

/* Whether reading page i of base raises SIGBUS. */
static bool page_bus(const uint8_t *base, size_t i)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	volatile bool bus = false;

	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(bus_jmp, 1))
		bus = true;
	else
		(void)*(volatile const uint8_t *)(base + i * page);
	sigaction(SIGBUS, &old, NULL);
	return bus;
}

static int client_truncated(const struct test_daemon *d, void *arg)
{
	int fd = *(int *)arg;
	struct conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	REQUIRE(pin_uffd_features(k.u) & PIN_UFFD_FEATURE_POISON);
	uint8_t *base = map_region(4 * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, 4 * page, PIN_UFFD_REGISTER_MISSING, fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	/* After the daemon saw 4 pages of data: the last two are gone. */
	REQUIRE(ftruncate(fd, 2 * page) == 0);
	REQUIRE(page_bus(base, 3));
	REQUIRE(page_bus(base, 2));
	REQUIRE(page_ok(base, 0, 9));
	REQUIRE(page_ok(base, 1, 9));
	conn_close(&k);
	return 0;
}

/* Pages the source no longer has are poisoned, never made up as zeroes. */
START_TEST(truncated_source_poisons)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, "shrinks", 4, 9);
	ck_assert_int_eq(reap(spawn(client_truncated, &d, &fd)), 0);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- write protection ---- */

#define WP_PAGES 64

static int dirty_check(struct conn *k, uint8_t *base, const bool *want, unsigned int flags)
{
	uint8_t bm[WP_PAGES / 8];
	int n = 0;

	for (int i = 0; i < WP_PAGES; i++)
		n += want[i];
	REQUIRE(pin_client_dirty_get(k->c, base, WP_PAGES * page, flags, bm, sizeof(bm)) == n);
	for (int i = 0; i < WP_PAGES; i++)
		REQUIRE(((bm[i / 8] >> (i % 8)) & 1) == want[i]);
	return 0;
}

static int client_wp(const struct test_daemon *d, void *arg)
{
	bool want[WP_PAGES] = { false };
	uint64_t seed = 99;
	struct pin_client_stats st;
	struct conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = map_region(WP_PAGES * page);
	REQUIRE(base);
	/* The daemon registers this one (MISSING and WP, zero pages). */
	REQUIRE(add_region(&k, base, WP_PAGES * page,
			   PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP, -1,
			   PIN_CLIENT_REGION_REGISTER | PIN_CLIENT_REGION_NO_PUSH) == 0);
	/* Read some pages first, write others straight away. */
	for (int i = 0; i < WP_PAGES; i++) {
		uint64_t r = rng(&seed) % 4;
		if (r == 0)
			REQUIRE(page_zero(base, (size_t)i));
		if (r == 1) {
			REQUIRE(page_zero(base, (size_t)i));
			base[i * page + 7] = 1;
			want[i] = true;
		}
		if (r == 2) {
			base[i * page] = 2;
			want[i] = true;
		}
	}
	REQUIRE(dirty_check(&k, base, want, PIN_CLIENT_DIRTY_RESET) == 0);
	/* After the reset only new writes count. */
	for (int i = 0; i < WP_PAGES; i++) {
		want[i] = rng(&seed) % 3 == 0;
		if (want[i])
			base[i * page + 100] = 3;
	}
	REQUIRE(dirty_check(&k, base, want, 0) == 0);
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.wp_faults >= 1);
	conn_close(&k);
	return 0;
}

START_TEST(wp_dirty_bitmap)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	ck_assert_int_eq(reap(spawn(client_wp, &d, NULL)), 0);
	test_daemon_stop(&d);
}
END_TEST

/* ---- fork, mremap, MADV_DONTNEED ---- */

#define EV_PAGES 64

struct evtest {
	int fd; /* the source, seed 11 */
};

/* A daemon and one client process running fn over a source of npages; then
 * the daemon's descriptors must be back to where they were (every session,
 * forked ones included, freed). */
static void run_client(client_fn fn, size_t npages)
{
	struct test_daemon d;
	struct evtest e;

	test_daemon_start(&d, NULL);
	e.fd = make_source(&d, "src", npages, 11);
	int fds = idle_fds(d.pid);
	ck_assert_int_eq(reap(spawn(fn, &d, &e)), 0);
	wait_fds(d.pid, fds);
	close(e.fd);
	test_daemon_stop(&d);
}

static int client_fork(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = map_region(EV_PAGES * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, EV_PAGES * page, PIN_UFFD_REGISTER_MISSING, e->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < EV_PAGES / 2; i++)
		REQUIRE(page_ok(base, i, 11));
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		/* The child's missing pages come from its own session. */
		for (size_t i = 0; i < EV_PAGES; i++)
			if (!page_ok(base, EV_PAGES - 1 - i, 11))
				_exit(1);
		_exit(0);
	}
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid);
	REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	for (size_t i = EV_PAGES / 2; i < EV_PAGES; i++)
		REQUIRE(page_ok(base, i, 11));
	conn_close(&k);
	return 0;
}

START_TEST(fork_child_served)
{
	run_client(client_fork, EV_PAGES);
}
END_TEST

static int client_mremap(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = map_region(EV_PAGES * page);
	uint8_t *spot = mmap(NULL, EV_PAGES * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(base && spot != MAP_FAILED);
	REQUIRE(add_region(&k, base, EV_PAGES * page, PIN_UFFD_REGISTER_MISSING, e->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < EV_PAGES; i += 2)
		REQUIRE(page_ok(base, i, 11));
	uint8_t *moved = mremap(base, EV_PAGES * page, EV_PAGES * page,
				MREMAP_MAYMOVE | MREMAP_FIXED, spot);
	REQUIRE(moved == spot);
	/* The pages touched before moved along; the others are served at the
	 * new address, from the same source offsets. */
	for (size_t i = 0; i < EV_PAGES; i++)
		REQUIRE(page_ok(moved, EV_PAGES - 1 - i, 11));
	conn_close(&k);
	return 0;
}

START_TEST(mremap_followed)
{
	run_client(client_mremap, EV_PAGES);
}
END_TEST

struct stale_seen {
	uint64_t cookie, addr, len;
	uint32_t event;
	int n;
};

static void on_stale(struct pin_client *c, uint64_t cookie, uint64_t addr, uint64_t len,
		     uint32_t event, void *userdata)
{
	struct stale_seen *s = userdata;

	*s = (struct stale_seen){ cookie, addr, len, event, s->n + 1 };
}

static int client_dontneed(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct stale_seen seen = { 0 };
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP,
	};
	struct pin_client_opts co = {
		.sz = sizeof(co), .socket = d->sock, .stale_fn = on_stale, .stale_data = &seen,
	};
	struct conn k;

	REQUIRE(pin_uffd_new(&uo, &k.u) == 0);
	REQUIRE(pin_client_connect(&co, &k.c) == 0);
	REQUIRE(pin_client_handover(k.c, k.u) == 0);
	uint8_t *base = map_region(EV_PAGES * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, EV_PAGES * page, PIN_UFFD_REGISTER_MISSING, e->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < EV_PAGES; i++)
		REQUIRE(page_ok(base, i, 11));
	REQUIRE(pin_client_pin_report(k.c, base + 8 * page, 16 * page, 0xc00c1e) == 0);
	REQUIRE(madvise(base + 16 * page, 16 * page, MADV_DONTNEED) == 0);
	/* Discarded pages are zero now, not the source's again. */
	for (size_t i = 0; i < EV_PAGES; i++)
		REQUIRE(i >= 16 && i < 32 ? page_zero(base, i) : page_ok(base, i, 11));
	struct pollfd p = { .fd = pin_client_fd(k.c), .events = POLLIN };
	REQUIRE(poll(&p, 1, 10000) == 1);
	REQUIRE(pin_client_process(k.c) == 1);
	REQUIRE(seen.n == 1);
	REQUIRE(seen.cookie == 0xc00c1e);
	REQUIRE(seen.addr == (uintptr_t)(base + 16 * page));
	REQUIRE(seen.len == 8 * page);
	REQUIRE(seen.event == PIN_UFFD_EVENT_REMOVE);
	conn_close(&k);
	return 0;
}

START_TEST(dontneed_refaults_zero)
{
	run_client(client_dontneed, EV_PAGES);
}
END_TEST

/* ---- push and WaitPopulated ---- */

static int client_push(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct pin_client_stats st;
	struct conn k;
	size_t n = 1024;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = map_region(n * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, n * page, PIN_UFFD_REGISTER_MISSING, e->fd, 0) == 0);
	REQUIRE(pin_client_wait_populated(k.c, base, n * page, 60000) == 0);
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.faults == 0);
	REQUIRE(st.pages_pushed == n);
	REQUIRE(st.pages_copied == n);
	for (size_t i = 0; i < n; i++)
		REQUIRE(page_ok(base, i, 11));
	conn_close(&k);
	return 0;
}

/* Without the push, a range is populated by a Prefetch request alone. */
static int client_prefetch(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct pin_client_stats st;
	struct conn k;
	size_t n = 1024;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = map_region(n * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, n * page, PIN_UFFD_REGISTER_MISSING, e->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(pin_client_wait_populated(k.c, base, n * page, 50) == -ETIMEDOUT);
	REQUIRE(pin_client_prefetch(k.c, base + page, (n - 1) * page) == 0);
	REQUIRE(pin_client_wait_populated(k.c, base + page, (n - 1) * page, 60000) == 0);
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.faults == 0);
	REQUIRE(st.pages_pushed == 0);
	REQUIRE(st.pages_copied == n - 1);
	REQUIRE(st.pages_populated == n - 1);
	for (size_t i = 0; i < n; i++)
		REQUIRE(page_ok(base, i, 11));
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.faults == 1);
	conn_close(&k);
	return 0;
}

START_TEST(prefetch_and_timeout)
{
	run_client(client_prefetch, 1024);
}
END_TEST

START_TEST(push_then_wait)
{
	run_client(client_push, 1024);
}
END_TEST

/* ---- limits ---- */

static int client_limits(const struct test_daemon *d, void *arg)
{
	struct conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = map_region(4 * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	REQUIRE(add_region(&k, base + page, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	REQUIRE(add_region(&k, base + 2 * page, page, PIN_UFFD_REGISTER_MISSING, -1, 0) ==
		-EDQUOT);
	REQUIRE(pin_client_pin_report(k.c, base, 2 * page, 1) == 0);
	REQUIRE(pin_client_pin_report(k.c, base, page, 2) == -EDQUOT);
	REQUIRE(pin_client_pin_release(k.c, 1) == 0);
	REQUIRE(pin_client_pin_report(k.c, base, page, 2) == 0);
	/* Removing a region frees its place. */
	REQUIRE(pin_client_region_remove(k.c, base, page) == 0);
	REQUIRE(add_region(&k, base + 3 * page, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	REQUIRE(base[3 * page] == 0);
	conn_close(&k);
	return 0;
}

START_TEST(per_uid_limits)
{
	struct test_daemon d;
	const char *const extra[] = { "--max-regions-per-uid", "2", "--max-pinned-per-uid",
				      "8192", NULL };

	ck_assert_int_eq(page, 4096);
	test_daemon_start(&d, extra);
	ck_assert_int_eq(reap(spawn(client_limits, &d, NULL)), 0);
	test_daemon_stop(&d);
}
END_TEST

/* ---- a client killed mid-fault ---- */

static int client_victim(const struct test_daemon *d, void *arg)
{
	int *ready = arg;
	struct conn k;
	size_t n = (32u << 20) / page;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = map_region(n * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, n * page, PIN_UFFD_REGISTER_MISSING, -1,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(write(ready[1], "x", 1) == 1);
	/* Fault forever, until killed. */
	for (uint64_t seed = 3;;) {
		size_t i = (size_t)(rng(&seed) % n);
		if (base[i * page])
			return 1;
		if (madvise(base + i * page, page, MADV_DONTNEED) < 0)
			return 1;
	}
}

START_TEST(killed_client)
{
	struct test_daemon d;
	struct fill f = { .npages = (16u << 20) / page, .seed = 42 };
	int ready[2];
	char c;

	test_daemon_start(&d, NULL);
	f.fd = make_source(&d, "src", f.npages, f.seed);
	int fds = idle_fds(d.pid);
	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	pid_t victim = spawn(client_victim, &d, ready);
	ck_assert_int_eq(read(ready[0], &c, 1), 1);
	pid_t other = spawn(client_fill, &d, &f);
	test_sleep_ms(50);
	kill(victim, SIGKILL);
	ck_assert_int_eq(reap(victim), 128 + SIGKILL);
	ck_assert_int_eq(reap(other), 0);
	wait_fds(d.pid, fds);
	/* And it serves new clients as before. */
	ck_assert_int_eq(reap(spawn(client_fill, &d, &f)), 0);
	wait_fds(d.pid, fds);
	close(ready[0]);
	close(ready[1]);
	close(f.fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- malformed messages ---- */

/* Send m (if any) and return the error of the reply, 1 when none came. */
static int reply_error(int sock, const Uffdd__Msg *m, const int *fds, size_t nfds)
{
	Uffdd__Msg *r;
	int rfds[PIN_PROTO_MAX_FDS];
	size_t n;
	int e = 1;

	if (m && pin_proto_send(sock, m, fds, nfds) < 0)
		return 1;
	if (pin_proto_recv(sock, &r, rfds, &n) < 0)
		return 1;
	if (r->body_case == UFFDD__MSG__BODY_REPLY && !r->seq)
		e = r->reply->error;
	if (r->body_case == UFFDD__MSG__BODY_REPLY && m && m->seq == r->seq)
		e = r->reply->error;
	pin_proto_free(r);
	return e;
}

static int raw_error(int sock, const void *buf, size_t len)
{
	if (send(sock, buf, len, 0) != (ssize_t)len)
		return 1;
	return reply_error(sock, NULL, NULL, 0);
}

static void malformed_all(int sock)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Hello hello = UFFDD__HELLO__INIT;
	Uffdd__UffdHandover ho = UFFDD__UFFD_HANDOVER__INIT;
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__RegionAdd ra = UFFDD__REGION_ADD__INIT;
	uint8_t buf[256];
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

	/* Garbage, and a valid message cut short. */
	ck_assert_int_eq(raw_error(sock, "\xff\xff\xff\xff\xff", 5), -EBADMSG);
	hello.version = PIN_PROTO_VERSION;
	hello.name = "a name long enough to cut";
	m.has_seq = true;
	m.seq = 5;
	m.body_case = UFFDD__MSG__BODY_HELLO;
	m.hello = &hello;
	size_t len = uffdd__msg__pack(&m, buf);
	ck_assert_int_eq(raw_error(sock, buf, len - 6), -EBADMSG);
	/* An unknown message type: field 99, a varint. */
	const uint8_t unknown[] = { 0x08, 0x07, 0x98, 0x06, 0x01 };
	ck_assert_int_eq(raw_error(sock, unknown, sizeof(unknown)), -EBADMSG);
	/* A handover without its fd; a zero-source region with one. */
	m.body_case = UFFDD__MSG__BODY_UFFD;
	m.uffd = &ho;
	ck_assert_int_eq(reply_error(sock, &m, NULL, 0), -EBADF);
	range.addr = 0x100000;
	range.len = page;
	ra.range = &range;
	ra.mode = PIN_UFFD_REGISTER_MISSING;
	m.body_case = UFFDD__MSG__BODY_REGION_ADD;
	m.region_add = &ra;
	ck_assert_int_eq(reply_error(sock, &m, &devnull, 1), -EBADF);
	/* A range whose end wraps. */
	range.addr = UINT64_MAX - page + 1;
	range.len = 2 * page;
	ck_assert_int_eq(reply_error(sock, &m, NULL, 0), -EOVERFLOW);
	/* A well-formed region before any userfaultfd. */
	range.addr = 0x100000;
	range.len = page;
	ck_assert_int_eq(reply_error(sock, &m, NULL, 0), -EBADFD);
	/* A handover of something that is not a userfaultfd. */
	m.body_case = UFFDD__MSG__BODY_UFFD;
	m.uffd = &ho;
	ck_assert_int_eq(reply_error(sock, &m, &devnull, 1), -EBADF);
	/* The session is still fine. */
	m.body_case = UFFDD__MSG__BODY_HELLO;
	m.hello = &hello;
	ck_assert_int_eq(reply_error(sock, &m, NULL, 0), 0);
	close(devnull);
}

START_TEST(malformed_messages)
{
	struct test_daemon d;
	struct fill f = { .npages = (16u << 20) / page, .seed = 7 };

	test_daemon_start(&d, NULL);
	f.fd = make_source(&d, "src", f.npages, f.seed);
	int fds = idle_fds(d.pid);
	pid_t other = spawn(client_fill, &d, &f);
	int sock = try_connect(d.sock);
	ck_assert_int_ge(sock, 0);
	malformed_all(sock);
	ck_assert_int_eq(reap(other), 0);
	close(sock);
	wait_fds(d.pid, fds);
	close(f.fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- a daemon restart ---- */

struct restart {
	int fd;
	int ready[2]; /* client -> test: half done */
	int go[2];    /* test -> client: the daemon was replaced */
	size_t npages;
};

static void *restart_thread(void *arg)
{
	struct fill *f = arg;
	uint8_t buf[4096];
	char path[] = "/tmp/uffdd-scratch-XXXXXX";
	int scratch = mkstemp(path);

	if (scratch < 0)
		return (void *)1;
	unlink(path);
	for (size_t i = 0; i < f->npages; i++) {
		/* Through a syscall: the kernel takes the fault, and valgrind
		 * lets the other threads run meanwhile. */
		if (pwrite(scratch, f->base + i * page, page, 0) != (ssize_t)page ||
		    pread(scratch, buf, page, 0) != (ssize_t)page)
			return (void *)1;
		for (size_t j = 0; j < page / 8; j++) {
			uint64_t w;
			memcpy(&w, buf + j * 8, 8);
			if (w != test_pattern(i * page + j * 8, f->seed))
				return (void *)1;
		}
		if (i == f->npages / 2 && write(f->half_fd, "x", 1) != 1)
			return (void *)1;
	}
	close(scratch);
	return NULL;
}

static int client_restart(const struct test_daemon *d, void *arg)
{
	struct restart *rs = arg;
	struct fill f = { .npages = rs->npages, .seed = 3, .half_fd = rs->ready[1] };
	struct conn k;
	pthread_t th;
	void *ret;
	char c;

	REQUIRE(conn_open(d, &k, 0) == 0);
	f.base = map_region(rs->npages * page);
	REQUIRE(f.base);
	REQUIRE(add_region(&k, (void *)f.base, rs->npages * page, PIN_UFFD_REGISTER_MISSING,
			   rs->fd, PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(pthread_create(&th, NULL, restart_thread, &f) == 0);
	REQUIRE(read(rs->go[0], &c, 1) == 1);
	REQUIRE(pin_client_reconnect(k.c) == 0);
	pthread_join(th, &ret);
	REQUIRE(ret == NULL);
	struct pin_client_stats st;
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.pages_total == rs->npages);
	conn_close(&k);
	return 0;
}

START_TEST(restart_loses_nothing)
{
	struct test_daemon d;
	struct restart rs = { .npages = 2048 };
	char c;

	test_daemon_start(&d, NULL);
	rs.fd = make_source(&d, "src", rs.npages, 3);
	ck_assert_int_eq(pipe2(rs.ready, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(rs.go, O_CLOEXEC), 0);
	pid_t client = spawn(client_restart, &d, &rs);
	ck_assert_int_eq(read(rs.ready[0], &c, 1), 1);
	/* No goodbye: the daemon dies with faults in flight. */
	kill(d.pid, SIGKILL);
	ck_assert_int_eq(waitpid(d.pid, NULL, 0), d.pid);
	test_daemon_spawn(&d, NULL);
	ck_assert_int_eq(write(rs.go[1], "x", 1), 1);
	ck_assert_int_eq(reap(client), 0);
	close(rs.fd);
	test_daemon_stop(&d);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("daemon");
	TCase *tc = tcase_create("uffdd");

	page = (size_t)sysconf(_SC_PAGESIZE);
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, lazy_fill_64m);
	tcase_add_test(tc, holes_read_zero);
	tcase_add_test(tc, truncated_source_poisons);
	tcase_add_test(tc, wp_dirty_bitmap);
	tcase_add_test(tc, fork_child_served);
	tcase_add_test(tc, mremap_followed);
	tcase_add_test(tc, dontneed_refaults_zero);
	tcase_add_test(tc, push_then_wait);
	tcase_add_test(tc, prefetch_and_timeout);
	tcase_add_test(tc, per_uid_limits);
	tcase_add_test(tc, two_clients);
	tcase_add_test(tc, killed_client);
	tcase_add_test(tc, malformed_messages);
	tcase_add_test(tc, restart_loses_nothing);
	suite_add_tcase(s, tc);
	return s;
}

const char *test_skip_reason(void)
{
	struct pin_uffd *u;

	if (!getenv("UFFDD"))
		return "UFFDD (the uffdd binary to test) is not set; run through meson test";
	if (pin_uffd_open(PIN_UFFD_CLOEXEC, &u) < 0)
		return "userfaultfd is not available to this user (needs /dev/userfaultfd "
		       "access or CAP_SYS_PTRACE)";
	pin_uffd_free(u);
	return NULL;
}
