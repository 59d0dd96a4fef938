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
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
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

/* The descriptors of a daemon just started, without clients: the session of
 * the harness's probe (a socket and a record, nothing else) is freed
 * asynchronously, its socket closed before its record, so wait until only
 * the listening socket is left and no record. */
static int idle_fds(pid_t pid)
{
	int n = -1, recs = -1;

	for (int i = 0; i < 500 && ((n = test_count_fd_links(pid, "socket:*")) != 1 ||
				    (recs = test_count_fd_links(pid, "/memfd:uffdd-state*")) != 0);
	     i++)
		test_sleep_ms(10);
	ck_assert_msg(n == 1, "uffdd has %d sockets, not just the listening one", n);
	ck_assert_msg(recs == 0, "uffdd has %d session records without a session", recs);
	return test_count_fds(pid);
}

/* The daemon frees a session asynchronously: wait for its fds to go. */
static void wait_fds(pid_t pid, int want)
{
	int n = -1;

	for (int i = 0; i < 500 && (n = test_count_fds(pid)) != want; i++)
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

static int conn_open(const struct test_daemon *d, struct test_conn *k, unsigned int flags)
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

	return test_conn_open(k, &uo, &co);
}

static int add_region(struct test_conn *k, void *addr, size_t len, unsigned int mode, int fd,
		      unsigned int flags)
{
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = addr,
		.len = len,
		.mode = mode,
		.flags = flags,
		.fd = fd,
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
	return test_pattern_source(d->dir, name, npages * page, seed);
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
		if (!test_page_ok(f->base, f->order[k], f->seed))
			atomic_fetch_add(&f->bad, 1);
	return NULL;
}

/* The region is served byte-exact, several threads touching in random order. */
static int client_fill(const struct test_daemon *d, void *arg)
{
	struct fill *f = arg;
	struct pin_client_stats st;
	pthread_t th[FILL_THREADS];
	struct test_conn k;
	size_t len = f->npages * page;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(len);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, len, PIN_UFFD_REGISTER_MISSING, f->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	f->base = base;
	f->order = malloc(f->npages * sizeof(*f->order));
	REQUIRE(f->order);
	test_permutation(f->order, f->npages, f->seed);
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
	test_conn_close(&k);
	return 0;
}

START_TEST(lazy_fill_64m)
{
	struct test_daemon d;
	struct fill f = { .npages = (64u << 20) / page, .seed = test_seed() };

	test_daemon_start(&d, NULL);
	f.fd = make_source(&d, "src", f.npages, f.seed);
	ck_assert_msg(test_reap(test_spawn(client_fill, &d, &f)) == 0,
		      "the client failed with seed %" PRIu64, f.seed);
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
	pid_t pa = test_spawn(client_fill, &d, &a), pb = test_spawn(client_fill, &d, &b);
	ck_assert_int_eq(test_reap(pa), 0);
	ck_assert_int_eq(test_reap(pb), 0);
	close(a.fd);
	close(b.fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- holes ---- */

/* Pages 0-3 and 12-13 are data; 4-11 a hole; the file ends after page 13,
 * the region goes on to page 31. */
#define HOLE_PAGES 32
/* pagemap(5): bit 63 present, bits 0-54 the page frame number. */
#define PAGEMAP_PRESENT	 (1ull << 63)
#define PAGEMAP_PFN_MASK ((1ull << 55) - 1)
/* kpageflags: bit 24, KPF_ZERO_PAGE. */
#define KPF_ZERO_PAGE (1ull << 24)

/* Whether the kernel's zero page is mapped at addr: its frame from
 * /proc/self/pagemap, that frame's flags from /proc/kpageflags (root only). */
static bool maps_zero_page(const void *addr)
{
	_cleanup_close_ int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int kf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	uint64_t e, flags;

	if (pm < 0 || kf < 0 ||
	    pread(pm, &e, sizeof(e), (off_t)((uintptr_t)addr / page * sizeof(e))) != sizeof(e) ||
	    !(e & PAGEMAP_PRESENT) ||
	    pread(kf, &flags, sizeof(flags), (off_t)((e & PAGEMAP_PFN_MASK) * sizeof(flags))) !=
		    sizeof(flags))
		return false;
	return flags & KPF_ZERO_PAGE;
}

static int client_holes(const struct test_daemon *d, void *arg)
{
	int fd = *(int *)arg;
	struct pin_client_stats st;
	struct test_conn k;
	size_t order[HOLE_PAGES];

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(HOLE_PAGES * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, HOLE_PAGES * page, PIN_UFFD_REGISTER_MISSING, fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	test_permutation(order, HOLE_PAGES, 77);
	for (size_t k2 = 0; k2 < HOLE_PAGES; k2++) {
		size_t i = order[k2];
		bool data = i < 4 || (i >= 12 && i < 14);
		REQUIRE(data ? test_page_ok(base, i, 5) : test_page_zero(base, i));
	}
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.pages_copied == 6);
	REQUIRE(st.pages_zeroed == HOLE_PAGES - 6);
	/* Zero pages cost no memory: each maps the kernel's zero page. */
	for (size_t i = 0; i < HOLE_PAGES; i++)
		REQUIRE(maps_zero_page(base + i * page) == !(i < 4 || (i >= 12 && i < 14)));
	test_conn_close(&k);
	return 0;
}

START_TEST(holes_read_zero)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, "holes", 14, 5);
	ck_assert_int_eq(
		fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * page, 8 * page), 0);
	/* The file system must report the hole, or the test proves nothing. */
	ck_assert_int_eq(lseek(fd, 4 * page, SEEK_DATA), (off_t)(12 * page));
	ck_assert_int_eq(test_reap(test_spawn(client_holes, &d, &fd)), 0);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- a source that shrinks under its region ---- */

/* Whether reading page i of base raises SIGBUS. */
static bool page_bus(const uint8_t *base, size_t i)
{
	return test_read_bus(base + i * page);
}

static int client_truncated(const struct test_daemon *d, void *arg)
{
	int fd = *(int *)arg;
	struct test_conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	REQUIRE(pin_uffd_features(k.u) & PIN_UFFD_FEATURE_POISON);
	uint8_t *base = test_map_region(4 * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, 4 * page, PIN_UFFD_REGISTER_MISSING, fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	/* After the daemon saw 4 pages of data: the last two are gone. */
	REQUIRE(ftruncate(fd, 2 * page) == 0);
	REQUIRE(page_bus(base, 3));
	REQUIRE(page_bus(base, 2));
	REQUIRE(test_page_ok(base, 0, 9));
	REQUIRE(test_page_ok(base, 1, 9));
	test_conn_close(&k);
	return 0;
}

/* Pages the source no longer has are poisoned, never made up as zeroes. */
START_TEST(truncated_source_poisons)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, "shrinks", 4, 9);
	ck_assert_int_eq(test_reap(test_spawn(client_truncated, &d, &fd)), 0);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- write protection ---- */

#define WP_PAGES 64

static int dirty_check(struct test_conn *k, uint8_t *base, const bool *want, unsigned int flags)
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
	uint64_t seed = 99, writes = 0;
	struct pin_client_stats st;
	struct test_conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(WP_PAGES * page);
	REQUIRE(base);
	/* The daemon registers this one (MISSING and WP, zero pages). */
	REQUIRE(add_region(&k, base, WP_PAGES * page,
			   PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP, -1,
			   PIN_CLIENT_REGION_REGISTER | PIN_CLIENT_REGION_NO_PUSH) == 0);
	/* Read some pages first, write others straight away. */
	for (int i = 0; i < WP_PAGES; i++) {
		uint64_t r = test_rand(&seed) % 4;
		if (r == 0)
			REQUIRE(test_page_zero(base, (size_t)i));
		if (r == 1) {
			REQUIRE(test_page_zero(base, (size_t)i));
			base[i * page + 7] = 1;
			want[i] = true;
		}
		if (r == 2) {
			base[i * page] = 2;
			want[i] = true;
		}
		writes += want[i];
	}
	REQUIRE(dirty_check(&k, base, want, PIN_CLIENT_DIRTY_RESET) == 0);
	/* After the reset only new writes count. */
	for (int i = 0; i < WP_PAGES; i++) {
		want[i] = test_rand(&seed) % 3 == 0;
		if (want[i])
			base[i * page + 100] = 3;
		writes += want[i];
	}
	REQUIRE(dirty_check(&k, base, want, 0) == 0);
	/* Every page is placed write-protected, a missing write fault's too,
	 * and the reset protects again: each first write to a page (since the
	 * reset) takes exactly one WP fault. */
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.wp_faults == writes);
	test_conn_close(&k);
	return 0;
}

START_TEST(wp_dirty_bitmap)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	ck_assert_int_eq(test_reap(test_spawn(client_wp, &d, NULL)), 0);
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
	ck_assert_int_eq(test_reap(test_spawn(fn, &d, &e)), 0);
	wait_fds(d.pid, fds);
	close(e.fd);
	test_daemon_stop(&d);
}

static int client_fork(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct pin_client_stats stats;
	struct test_conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(EV_PAGES * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, EV_PAGES * page, PIN_UFFD_REGISTER_MISSING, e->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	/* Downwards, so that no readahead places the other half: the child
	 * must fault those in through its own session. */
	for (size_t i = EV_PAGES / 2; i-- > 0;)
		REQUIRE(test_page_ok(base, i, 11));
	REQUIRE(pin_client_stats(k.c, 0, &stats) == 0);
	REQUIRE(stats.pages_populated == EV_PAGES / 2);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		/* The child's missing pages come from its own session. */
		for (size_t i = 0; i < EV_PAGES; i++)
			if (!test_page_ok(base, EV_PAGES - 1 - i, 11))
				_exit(1);
		_exit(0);
	}
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid);
	REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	for (size_t i = EV_PAGES / 2; i < EV_PAGES; i++)
		REQUIRE(test_page_ok(base, i, 11));
	test_conn_close(&k);
	return 0;
}

START_TEST(fork_child_served)
{
	run_client(client_fork, EV_PAGES);
}
END_TEST

/* ---- a fork child's session is seen only once complete ---- */

#define FW_REGIONS 256 /* one page each: the child's copy grows its table many times */
#define FW_FORKS   64

/* List every session's regions until the pipe says stop; 0 when every
 * listing succeeded. */
static int inspector(const struct test_daemon *d, void *arg)
{
	int stop = *(int *)arg;
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "inspector" };
	struct pin_client *c;
	struct pollfd p = { .fd = stop, .events = POLLIN };

	REQUIRE(pin_client_connect(&co, &c) == 0);
	while (poll(&p, 1, 0) == 0) {
		struct pin_client_region_info *v;
		size_t n;
		REQUIRE(pin_client_list_regions(c, PIN_CLIENT_SESSION_ALL, &v, &n) == 0);
		free(v);
	}
	pin_client_free(c);
	return 0;
}

/* A client of FW_REGIONS regions forks FW_FORKS children, each exiting at
 * once: each fork makes a session the daemon fills with a copy of the
 * regions. */
static int client_fork_many(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct test_conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(FW_REGIONS * page);
	REQUIRE(base);
	for (size_t i = 0; i < FW_REGIONS; i++)
		REQUIRE(add_region(&k, base + i * page, page, PIN_UFFD_REGISTER_MISSING, e->fd,
				   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (int f = 0; f < FW_FORKS; f++) {
		pid_t pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0)
			_exit(0);
		int st;
		REQUIRE(waitpid(pid, &st, 0) == pid);
		REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	/* Each region is the source's first page. */
	for (size_t i = 0; i < FW_REGIONS; i++)
		REQUIRE(test_page_ok(base + i * page, 0, 11));
	test_conn_close(&k);
	return 0;
}

/* While fork children's sessions are made, another client lists every
 * session's regions: it never sees one half made (in an ASan build a read of
 * the region table while the daemon grows it is a use-after-free; in a plain
 * one, a crash), and the daemon exits 0 afterwards. */
START_TEST(fork_while_inspected)
{
	struct test_daemon d;
	struct evtest e;
	int stop[2];

	test_daemon_start(&d, NULL);
	e.fd = make_source(&d, "src", 1, 11);
	ck_assert_int_eq(pipe2(stop, O_CLOEXEC), 0);
	pid_t insp = test_spawn(inspector, &d, &stop[0]);
	ck_assert_int_eq(test_reap(test_spawn(client_fork_many, &d, &e)), 0);
	ck_assert_int_eq(write(stop[1], "s", 1), 1);
	ck_assert_int_eq(test_reap(insp), 0);
	close(stop[0]);
	close(stop[1]);
	close(e.fd);
	test_daemon_stop(&d);
}
END_TEST

static int client_mremap(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct test_conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(EV_PAGES * page);
	uint8_t *spot = mmap(NULL, EV_PAGES * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(base && spot != MAP_FAILED);
	REQUIRE(add_region(&k, base, EV_PAGES * page, PIN_UFFD_REGISTER_MISSING, e->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < EV_PAGES; i += 2)
		REQUIRE(test_page_ok(base, i, 11));
	uint8_t *moved =
		mremap(base, EV_PAGES * page, EV_PAGES * page, MREMAP_MAYMOVE | MREMAP_FIXED, spot);
	REQUIRE(moved == spot);
	/* The pages touched before moved along; the others are served at the
	 * new address, from the same source offsets. */
	for (size_t i = 0; i < EV_PAGES; i++)
		REQUIRE(test_page_ok(moved, EV_PAGES - 1 - i, 11));
	test_conn_close(&k);
	return 0;
}

START_TEST(mremap_followed)
{
	run_client(client_mremap, EV_PAGES);
}
END_TEST

static int client_dontneed(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct test_stale_seen seen = { 0 };
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP,
	};
	struct pin_client_opts co = {
		.sz = sizeof(co),
		.socket = d->sock,
		.stale_fn = test_on_stale,
		.stale_data = &seen,
	};
	struct test_conn k;

	REQUIRE(pin_uffd_new(&uo, &k.u) == 0);
	REQUIRE(pin_client_connect(&co, &k.c) == 0);
	REQUIRE(pin_client_handover(k.c, k.u) == 0);
	uint8_t *base = test_map_region(EV_PAGES * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, EV_PAGES * page, PIN_UFFD_REGISTER_MISSING, e->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < EV_PAGES; i++)
		REQUIRE(test_page_ok(base, i, 11));
	REQUIRE(pin_client_pin_report(k.c, base + 8 * page, 16 * page, 0xc00c1e) == 0);
	REQUIRE(madvise(base + 16 * page, 16 * page, MADV_DONTNEED) == 0);
	/* Discarded pages are zero now, not the source's again. */
	for (size_t i = 0; i < EV_PAGES; i++)
		REQUIRE(i >= 16 && i < 32 ? test_page_zero(base, i) : test_page_ok(base, i, 11));
	struct pollfd p = { .fd = pin_client_fd(k.c), .events = POLLIN };
	REQUIRE(poll(&p, 1, 10000) == 1);
	REQUIRE(pin_client_process(k.c) == 1);
	REQUIRE(seen.n == 1);
	REQUIRE(seen.cookie == 0xc00c1e);
	REQUIRE(seen.addr == (uintptr_t)(base + 16 * page));
	REQUIRE(seen.len == 8 * page);
	REQUIRE(seen.event == PIN_UFFD_EVENT_REMOVE);
	test_conn_close(&k);
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
	struct test_conn k;
	size_t n = 1024;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(n * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, n * page, PIN_UFFD_REGISTER_MISSING, e->fd, 0) == 0);
	REQUIRE(pin_client_wait_populated(k.c, base, n * page, 60000) == 0);
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.faults == 0);
	REQUIRE(st.pages_pushed == n);
	REQUIRE(st.pages_copied == n);
	for (size_t i = 0; i < n; i++)
		REQUIRE(test_page_ok(base, i, 11));
	test_conn_close(&k);
	return 0;
}

/* Without the push, a range is populated by a Prefetch request alone. */
static int client_prefetch(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct pin_client_stats st;
	struct test_conn k;
	size_t n = 1024;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(n * page);
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
		REQUIRE(test_page_ok(base, i, 11));
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.faults == 1);
	test_conn_close(&k);
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
	struct test_conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(4 * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	REQUIRE(add_region(&k, base + page, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	REQUIRE(add_region(&k, base + 2 * page, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == -EDQUOT);
	REQUIRE(pin_client_pin_report(k.c, base, 2 * page, 1) == 0);
	REQUIRE(pin_client_pin_report(k.c, base, page, 2) == -EDQUOT);
	REQUIRE(pin_client_pin_release(k.c, 1) == 0);
	REQUIRE(pin_client_pin_report(k.c, base, page, 2) == 0);
	/* Removing a region frees its place. */
	REQUIRE(pin_client_region_remove(k.c, base, page) == 0);
	REQUIRE(add_region(&k, base + 3 * page, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	REQUIRE(base[3 * page] == 0);
	test_conn_close(&k);
	return 0;
}

START_TEST(per_uid_limits)
{
	struct test_daemon d;
	const char *const extra[] = { "--max-regions-per-uid", "2", "--max-pinned-per-uid", "8192",
				      NULL };

	ck_assert_int_eq(page, 4096);
	test_daemon_start(&d, extra);
	ck_assert_int_eq(test_reap(test_spawn(client_limits, &d, NULL)), 0);
	test_daemon_stop(&d);
}
END_TEST

/* ---- a client killed mid-fault ---- */

/* Random faults (each page then discarded) the victim takes before it parks. */
#define VICTIM_FAULTS 4096
/* Polls of the victim's state, 1 ms apart, before giving up. */
#define PARK_TRIES 10000

/*
 * Faults at random, then touches a page its userfaultfd covers but no region
 * of the daemon does: uffdd reads that fault and keeps it, unserved, until a
 * region covers it (none ever will).  Tells the test its userfaultfd's
 * number first, and then that it parks.
 */
static int client_victim(const struct test_daemon *d, void *arg)
{
	int *ready = arg;
	struct test_conn k;
	size_t n = (32u << 20) / page;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region((n + 1) * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, n * page, PIN_UFFD_REGISTER_MISSING, -1,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(pin_uffd_register(k.u, base + n * page, page, PIN_UFFD_REGISTER_MISSING, NULL) ==
		0);
	int fd = pin_uffd_fd(k.u);
	REQUIRE(write(ready[1], &fd, sizeof(fd)) == sizeof(fd));
	for (uint64_t seed = 3, f = 0; f < VICTIM_FAULTS; f++) {
		size_t i = (size_t)(test_rand(&seed) % n);
		REQUIRE(base[i * page] == 0);
		REQUIRE(madvise(base + i * page, page, MADV_DONTNEED) == 0);
	}
	REQUIRE(write(ready[1], "p", 1) == 1);
	/* Blocks until killed. */
	return base[n * page];
}

/* The counts in /proc/PID/fdinfo of userfaultfd fd: pending = queued and
 * unread; total = pending + read but not woken.  -1 when they cannot be read. */
static int uffd_fdinfo(pid_t pid, int fd, long *pending, long *total)
{
	char path[64], line[128];

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, fd);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	*pending = *total = -1;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "pending: %ld", pending);
		sscanf(line, "total: %ld", total);
	}
	fclose(f);
	return *pending < 0 || *total < 0 ? -1 : 0;
}

/* Wait until the single-threaded pid sleeps in handle_userfault() on a
 * fault of its userfaultfd fd that the daemon has read and not served. */
static void wait_parked(pid_t pid, int fd)
{
	char path[64], wchan[64] = "";
	long pending = -1, total = -1;

	snprintf(path, sizeof(path), "/proc/%d/wchan", (int)pid);
	for (int tries = 0; tries < PARK_TRIES; tries++) {
		int f = open(path, O_RDONLY | O_CLOEXEC);
		ck_assert_int_ge(f, 0);
		ssize_t n = read(f, wchan, sizeof(wchan) - 1);
		close(f);
		wchan[n > 0 ? n : 0] = '\0';
		ck_assert_int_eq(uffd_fdinfo(pid, fd, &pending, &total), 0);
		if (!strcmp(wchan, "handle_userfault") && pending == 0 && total == 1)
			return;
		test_sleep_ms(1);
	}
	ck_abort_msg("process %d never parked in a fault the daemon read (wchan '%s', "
		     "pending %ld, total %ld)",
		     (int)pid, wchan, pending, total);
}

START_TEST(killed_client)
{
	struct test_daemon d;
	struct fill f = { .npages = (16u << 20) / page, .seed = 42 };
	int ready[2], ufd;
	char c;

	test_daemon_start(&d, NULL);
	f.fd = make_source(&d, "src", f.npages, f.seed);
	int fds = idle_fds(d.pid);
	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	pid_t victim = test_spawn(client_victim, &d, ready);
	ck_assert_int_eq(read(ready[0], &ufd, sizeof(ufd)), sizeof(ufd));
	pid_t other = test_spawn(client_fill, &d, &f);
	ck_assert_int_eq(read(ready[0], &c, 1), 1);
	ck_assert_int_eq(c, 'p');
	wait_parked(victim, ufd);
	kill(victim, SIGKILL);
	ck_assert_int_eq(test_reap(victim), 128 + SIGKILL);
	ck_assert_int_eq(test_reap(other), 0);
	wait_fds(d.pid, fds);
	/* And it serves new clients as before. */
	ck_assert_int_eq(test_reap(test_spawn(client_fill, &d, &f)), 0);
	wait_fds(d.pid, fds);
	close(ready[0]);
	close(ready[1]);
	close(f.fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- one descriptor per source file ---- */

#define SHARED_REGIONS 100
#define SHARED_SEED_A  13
#define SHARED_SEED_B  17

struct shared {
	int a;	      /* SHARED_REGIONS patterned pages */
	int b;	      /* one patterned page */
	int ready[2]; /* client -> test: a step is done */
	int go[2];    /* test -> client: go on */
};

/* Tell the test a step is done and wait until it has looked. */
static int shared_step(struct shared *sh)
{
	char c;

	REQUIRE(write(sh->ready[1], "s", 1) == 1);
	REQUIRE(read(sh->go[0], &c, 1) == 1);
	return 0;
}

/*
 * Steps: connected; SHARED_REGIONS one-page regions added, region i over
 * page i of a, each with a descriptor of its own (libpin sends a new one
 * each time); one more region over b; the regions over a removed.  Every
 * page reads as its file's.
 */
static int client_shared(const struct test_daemon *d, void *arg)
{
	struct shared *sh = arg;
	struct test_conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region((SHARED_REGIONS + 1) * page);
	REQUIRE(base);
	REQUIRE(shared_step(sh) == 0);
	for (size_t i = 0; i < SHARED_REGIONS; i++) {
		struct pin_client_region r = {
			.sz = sizeof(r),
			.addr = base + i * page,
			.len = page,
			.mode = PIN_UFFD_REGISTER_MISSING,
			.flags = PIN_CLIENT_REGION_REGISTER | PIN_CLIENT_REGION_NO_PUSH,
			.fd = sh->a,
			.offset = i * page,
		};
		REQUIRE(pin_client_region_add(k.c, &r) == 0);
	}
	for (size_t i = 0; i < SHARED_REGIONS; i++)
		REQUIRE(test_page_ok(base, i, SHARED_SEED_A));
	REQUIRE(shared_step(sh) == 0);
	uint8_t *last = base + SHARED_REGIONS * page;
	REQUIRE(add_region(&k, last, page, PIN_UFFD_REGISTER_MISSING, sh->b,
			   PIN_CLIENT_REGION_REGISTER | PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(test_page_ok(last, 0, SHARED_SEED_B));
	REQUIRE(shared_step(sh) == 0);
	REQUIRE(pin_client_region_remove(k.c, base, SHARED_REGIONS * page) == 0);
	REQUIRE(shared_step(sh) == 0);
	test_conn_close(&k);
	return 0;
}

/* Let the client take its next step and wait until it has. */
static void shared_next(struct shared *sh)
{
	char c;

	ck_assert_int_eq(write(sh->go[1], "g", 1), 1);
	ck_assert_int_eq(read(sh->ready[0], &c, 1), 1);
}

START_TEST(one_fd_per_source_file)
{
	struct test_daemon d;
	struct shared sh;
	char c;

	test_daemon_start(&d, NULL);
	sh.a = make_source(&d, "a", SHARED_REGIONS, SHARED_SEED_A);
	sh.b = make_source(&d, "b", 1, SHARED_SEED_B);
	ck_assert_int_eq(pipe2(sh.ready, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(sh.go, O_CLOEXEC), 0);
	int idle = idle_fds(d.pid);
	pid_t pid = test_spawn(client_shared, &d, &sh);
	ck_assert_int_eq(read(sh.ready[0], &c, 1), 1);
	/* The session: its connection, its userfaultfd and its record. */
	ck_assert_int_eq(test_count_fds(d.pid), idle + 3);
	shared_next(&sh);
	/* SHARED_REGIONS regions over a: one descriptor. */
	ck_assert_int_eq(test_count_fds(d.pid), idle + 4);
	shared_next(&sh);
	/* And one for b. */
	ck_assert_int_eq(test_count_fds(d.pid), idle + 5);
	shared_next(&sh);
	/* a's last region gone: a's descriptor too. */
	ck_assert_int_eq(test_count_fds(d.pid), idle + 4);
	ck_assert_int_eq(write(sh.go[1], "g", 1), 1);
	ck_assert_int_eq(test_reap(pid), 0);
	wait_fds(d.pid, idle);
	close(sh.ready[0]);
	close(sh.ready[1]);
	close(sh.go[0]);
	close(sh.go[1]);
	close(sh.a);
	close(sh.b);
	test_daemon_stop(&d);
}
END_TEST

/* ---- malformed messages ---- */

/* Send m (if any) and return the error of the reply, 1 when none came. */
static int reply_error(int sock, Uffdd__Msg *m, const int *fds, size_t nfds)
{
	Uffdd__Msg *r;
	int rfds[PIN_PROTO_MAX_FDS];
	size_t n;
	int e = 1;

	/* A new seq for each request: the same seq as the last one done is
	 * that request sent again, and gets its reply again. */
	if (m)
		m->seq++;
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
	Uffdd__StatsGet sg = UFFDD__STATS_GET__INIT;
	Uffdd__PinReport pr = UFFDD__PIN_REPORT__INIT;
	uint8_t buf[256];
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

	/* Garbage, and a valid message cut short. */
	ck_assert_int_eq(raw_error(sock, "\xff\xff\xff\xff\xff", 5), -EBADMSG);
	hello.version = PIN_PROTO_VERSION;
	hello.name = "a name long enough to cut";
	m.has_seq = true;
	m.seq = 5;
	/* A request before Hello. */
	m.body_case = UFFDD__MSG__BODY_STATS_GET;
	m.stats_get = &sg;
	ck_assert_int_eq(reply_error(sock, &m, NULL, 0), -EPROTO);
	m.body_case = UFFDD__MSG__BODY_HELLO;
	m.hello = &hello;
	ck_assert_int_eq(reply_error(sock, &m, NULL, 0), 0);
	size_t len = uffdd__msg__pack(&m, buf);
	ck_assert_int_eq(raw_error(sock, buf, len - 6), -EBADMSG);
	/* An unknown message type: field 99, a varint. */
	const uint8_t unknown[] = { 0x08, 0x07, 0x98, 0x06, 0x01 };
	ck_assert_int_eq(raw_error(sock, unknown, sizeof(unknown)), -EBADMSG);
	/* Hello version 2^32 + 1, which protobuf-c alone reads as 1. */
	const uint8_t wide[] = { 0x52, 0x06, 0x08, 0x81, 0x80, 0x80, 0x80, 0x10 };
	ck_assert_int_eq(raw_error(sock, wide, sizeof(wide)), -EBADMSG);
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
	/* A range whose end wraps; one past every user address space. */
	range.addr = UINT64_MAX - page + 1;
	range.len = 2 * page;
	ck_assert_int_eq(reply_error(sock, &m, NULL, 0), -EINVAL);
	range.addr = 0x100000;
	range.len = 1ull << 63;
	ck_assert_int_eq(reply_error(sock, &m, NULL, 0), -EINVAL);
	pr.range = &range;
	pr.cookie = 1;
	m.body_case = UFFDD__MSG__BODY_PIN_REPORT;
	m.pin_report = &pr;
	ck_assert_int_eq(reply_error(sock, &m, NULL, 0), -EINVAL);
	m.body_case = UFFDD__MSG__BODY_REGION_ADD;
	m.region_add = &ra;
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
	pid_t other = test_spawn(client_fill, &d, &f);
	int sock = try_connect(d.sock);
	ck_assert_int_ge(sock, 0);
	malformed_all(sock);
	ck_assert_int_eq(test_reap(other), 0);
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
	struct test_conn k;
	pthread_t th;
	void *ret;
	char c;

	REQUIRE(conn_open(d, &k, 0) == 0);
	f.base = test_map_region(rs->npages * page);
	REQUIRE(f.base);
	REQUIRE(add_region(&k, (void *)f.base, rs->npages * page, PIN_UFFD_REGISTER_MISSING, rs->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(pthread_create(&th, NULL, restart_thread, &f) == 0);
	REQUIRE(read(rs->go[0], &c, 1) == 1);
	REQUIRE(pin_client_reconnect(k.c) == 0);
	pthread_join(th, &ret);
	REQUIRE(ret == NULL);
	struct pin_client_stats st;
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.pages_total == rs->npages);
	test_conn_close(&k);
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
	pid_t client = test_spawn(client_restart, &d, &rs);
	ck_assert_int_eq(read(rs.ready[0], &c, 1), 1);
	/* No goodbye: the daemon dies with faults in flight. */
	kill(d.pid, SIGKILL);
	ck_assert_int_eq(waitpid(d.pid, NULL, 0), d.pid);
	test_daemon_spawn(&d, NULL);
	ck_assert_int_eq(write(rs.go[1], "x", 1), 1);
	ck_assert_int_eq(test_reap(client), 0);
	close(rs.fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- a fault the daemon read but did not serve ---- */

/* How long a thread may stay blocked once the daemon has what it needs to
 * serve it: far above a fault's service time (microseconds; milliseconds
 * under valgrind), short enough that a thread never woken fails fast. */
#define UNBLOCK_WAIT_S 5
/* Polling the userfaultfd's fdinfo until the daemon has read the fault. */
#define FDINFO_POLL_MS 10
#define FDINFO_POLLS   2000
/* The test waiting on a client's step. */
#define AWAIT_POLL_MS 100
#define AWAIT_POLLS   600
/* A region of PARK_PAGES; the thread faults on page PARK_PAGE of it. */
#define PARK_PAGES 8
#define PARK_PAGE  3
#define PARK_SEED  21

enum park_mode {
	PARK_PLAIN,   /* the region comes later: the parked fault is served then */
	PARK_RESTART, /* the daemon dies before the region comes: only the takeover WAKE helps */
	PARK_EEXIST,  /* the page is placed meanwhile: the daemon's COPY meets EEXIST, must WAKE */
};

struct park {
	enum park_mode mode;
	int fd;
	int ready[2]; /* client -> test: the fault is read, not served */
	int go[2];    /* test -> client: the daemon was replaced */
};

struct toucher {
	const uint8_t *addr;
	size_t len;
	uint8_t *out; /* len bytes: what the thread read */
};

/* Read memory through a syscall (the kernel takes the faults in address
 * order, and valgrind runs the other threads meanwhile). */
static void *touch_thread(void *arg)
{
	const struct toucher *t = arg;
	_cleanup_close_ int fd = memfd_create("touch", MFD_CLOEXEC);

	if (fd < 0 || pwrite(fd, t->addr, t->len, 0) != (ssize_t)t->len ||
	    pread(fd, t->out, t->len, 0) != (ssize_t)t->len)
		return (void *)1;
	return NULL;
}

/* The len bytes at buf hold the pattern of the source from offset off. */
static bool buf_ok(const uint8_t *buf, size_t len, uint64_t off, uint64_t seed)
{
	for (size_t j = 0; j < len; j += 8) {
		uint64_t w;
		memcpy(&w, buf + j, 8);
		if (w != test_pattern(off + j, seed))
			return false;
	}
	return true;
}

/* Wait until the daemon has read exactly one fault of fd and not woken it. */
static int wait_read_unserved(int fd)
{
	long pending = -1, total = -1;

	for (int i = 0; i < FDINFO_POLLS; i++) {
		if (uffd_fdinfo(getpid(), fd, &pending, &total) < 0)
			break;
		if (pending == 0 && total == 1)
			return 0;
		test_sleep_ms(FDINFO_POLL_MS);
	}
	fprintf(stderr,
		"client: waited %d ms for the daemon to read the fault: pending %ld, "
		"total %ld (want 0 and 1)\n",
		FDINFO_POLLS * FDINFO_POLL_MS, pending, total);
	return -1;
}

/* Join th, or fail when it is still blocked after UNBLOCK_WAIT_S. */
static int join_bounded(pthread_t th, const char *what)
{
	struct timespec ts;
	void *ret;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += UNBLOCK_WAIT_S;
	int r = pthread_timedjoin_np(th, &ret, &ts);
	if (r == ETIMEDOUT) {
		fprintf(stderr, "client: the faulting thread is still blocked after %d s: %s\n",
			UNBLOCK_WAIT_S, what);
		return -1;
	}
	return r == 0 && ret == NULL ? 0 : -1;
}

static int client_park(const struct test_daemon *d, void *arg)
{
	struct park *pk = arg;
	size_t len = PARK_PAGES * page;
	struct pin_client_stats st;
	struct test_conn k;
	pthread_t th;
	char c;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(len);
	REQUIRE(base);
	/* Registered, but no region covers it yet: the daemon reads the
	 * fault and keeps it. */
	REQUIRE(pin_uffd_register(k.u, base, len, PIN_UFFD_REGISTER_MISSING, NULL) == 0);
	uint8_t *out = malloc(page);
	REQUIRE(out);
	struct toucher t = { base + PARK_PAGE * page, page, out };
	REQUIRE(pthread_create(&th, NULL, touch_thread, &t) == 0);
	REQUIRE(wait_read_unserved(pin_uffd_fd(k.u)) == 0);
	if (pk->mode == PARK_EEXIST) {
		/* The page arrives from elsewhere, its thread not woken. */
		uint64_t *src = malloc(page);
		int64_t done;
		REQUIRE(src);
		for (size_t j = 0; j < page / 8; j++)
			src[j] = test_pattern(PARK_PAGE * page + j * 8, PARK_SEED);
		REQUIRE(pin_uffd_copy(k.u, (void *)t.addr, src, page, PIN_UFFD_DONTWAKE, &done) ==
			0);
		free(src);
	}
	if (pk->mode == PARK_RESTART) {
		REQUIRE(write(pk->ready[1], "x", 1) == 1);
		REQUIRE(read(pk->go[0], &c, 1) == 1);
		REQUIRE(pin_client_reconnect(k.c) == 0);
	}
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = base,
		.len = len,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH,
		.fd = pk->fd,
	};
	REQUIRE(pin_client_region_add(k.c, &r) == 0);
	REQUIRE(join_bounded(th, pk->mode == PARK_RESTART ? "no takeover WAKE"
				 : pk->mode == PARK_EEXIST
					 ? "no WAKE after EEXIST"
					 : "the parked fault was not served") == 0);
	REQUIRE(buf_ok(out, page, PARK_PAGE * page, PARK_SEED));
	free(out);
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.faults == 1);
	REQUIRE(st.pages_copied == (pk->mode == PARK_EEXIST ? 0 : 1));
	REQUIRE(st.eexist == (pk->mode == PARK_EEXIST ? 1 : 0));
	REQUIRE(st.pages_populated == 1);
	test_conn_close(&k);
	return 0;
}

/* Read the byte child sends on fd; fail at once when it exits first. */
static void await_child(int fd, pid_t child)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	for (int i = 0; i < AWAIT_POLLS; i++) {
		if (poll(&p, 1, AWAIT_POLL_MS) == 1) {
			ck_assert_int_eq(read(fd, &c, 1), 1);
			return;
		}
		ck_assert_msg(waitpid(child, NULL, WNOHANG) == 0,
			      "client %d exited before it got there (its error is above)",
			      (int)child);
	}
	ck_abort_msg("client %d sent nothing in %d ms", (int)child, AWAIT_POLLS * AWAIT_POLL_MS);
}

static void run_park(enum park_mode mode)
{
	struct test_daemon d;
	struct park pk = { .mode = mode };

	test_daemon_start(&d, NULL);
	pk.fd = make_source(&d, "src", PARK_PAGES, PARK_SEED);
	ck_assert_int_eq(pipe2(pk.ready, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(pk.go, O_CLOEXEC), 0);
	pid_t client = test_spawn(client_park, &d, &pk);
	if (mode == PARK_RESTART) {
		await_child(pk.ready[0], client);
		/* It holds the fault, read and not served, as it dies. */
		kill(d.pid, SIGKILL);
		ck_assert_int_eq(waitpid(d.pid, NULL, 0), d.pid);
		test_daemon_spawn(&d, NULL);
		ck_assert_int_eq(write(pk.go[1], "x", 1), 1);
	}
	ck_assert_int_eq(test_reap(client), 0);
	for (int i = 0; i < 2; i++) {
		close(pk.ready[i]);
		close(pk.go[i]);
	}
	close(pk.fd);
	test_daemon_stop(&d);
}

/* A fault outside every region waits for the region that covers it. */
START_TEST(fault_waits_for_region)
{
	run_park(PARK_PLAIN);
}
END_TEST

/* The old daemon read the fault and died: the new one WAKEs the thread,
 * which faults again, to it. */
START_TEST(restart_wakes_read_fault)
{
	run_park(PARK_RESTART);
}
END_TEST

/* The page of a waiting fault is there when the daemon serves it. */
START_TEST(eexist_wakes)
{
	run_park(PARK_EEXIST);
}
END_TEST

/* ---- stale-pin notices for every event that ends a pin ---- */

#define NOTICE_WAIT_MS 5000
#define STALE_MAX      8

struct stale_log {
	struct test_stale_seen v[STALE_MAX];
	int n;
};

static void on_stale_log(struct pin_client *c, uint64_t cookie, uint64_t addr, uint64_t len,
			 uint32_t event, void *userdata)
{
	struct stale_log *l = userdata;

	if (l->n < STALE_MAX)
		l->v[l->n] = (struct test_stale_seen){ cookie, addr, len, event, l->n + 1 };
	l->n++;
}

/* Take notices until l holds want of them; then no more may have come. */
static int take_notices(struct pin_client *c, const struct stale_log *l, int want)
{
	struct pollfd p = { .fd = pin_client_fd(c), .events = POLLIN };

	while (l->n < want) {
		if (poll(&p, 1, NOTICE_WAIT_MS) != 1) {
			fprintf(stderr,
				"client: %d stale-pin notices, no more within %d ms; want %d\n",
				l->n, NOTICE_WAIT_MS, want);
			return -1;
		}
		if (pin_client_process(c) < 0)
			return -1;
	}
	if (l->n != want) {
		fprintf(stderr, "client: %d stale-pin notices, want %d\n", l->n, want);
		return -1;
	}
	return 0;
}

static bool notice_is(const struct test_stale_seen *s, uint64_t cookie, const void *addr,
		      size_t len, uint32_t event)
{
	if (s->cookie == cookie && s->addr == (uintptr_t)addr && s->len == len && s->event == event)
		return true;
	fprintf(stderr,
		"client: notice cookie %#" PRIx64 " [%#" PRIx64 ", +%#" PRIx64 ") event %u; "
		"want %#" PRIx64 " [%p, +%#zx) event %u\n",
		s->cookie, s->addr, s->len, s->event, cookie, addr, len, event);
	return false;
}

#define COOKIE_A 0xa11ceull
#define COOKIE_B 0xb0bull

static int client_stale_events(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct stale_log log = { 0 };
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMAP | PIN_UFFD_FEATURE_EVENT_REMOVE |
			    PIN_UFFD_FEATURE_EVENT_UNMAP,
	};
	struct pin_client_opts co = {
		.sz = sizeof(co),
		.socket = d->sock,
		.stale_fn = on_stale_log,
		.stale_data = &log,
	};
	struct test_conn k;

	REQUIRE(pin_uffd_new(&uo, &k.u) == 0);
	REQUIRE(pin_client_connect(&co, &k.c) == 0);
	REQUIRE(pin_client_handover(k.c, k.u) == 0);
	uint8_t *base = test_map_region(EV_PAGES * page);
	uint8_t *spot = mmap(NULL, EV_PAGES * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(base && spot != MAP_FAILED);
	REQUIRE(add_region(&k, base, EV_PAGES * page, PIN_UFFD_REGISTER_MISSING, e->fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	/* All but [24, 32): those move untouched, and are served where they
	 * went.  Downwards, so that no readahead places them. */
	for (size_t i = EV_PAGES; i-- > 0;)
		REQUIRE((i >= 24 && i < 32) || test_page_ok(base, i, 11));
	struct pin_client_stats st;
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.pages_populated == EV_PAGES - 8);
	/* A over pages [8, 24), B over [40, 56). */
	REQUIRE(pin_client_pin_report(k.c, base + 8 * page, 16 * page, COOKIE_A) == 0);
	REQUIRE(pin_client_pin_report(k.c, base + 40 * page, 16 * page, COOKIE_B) == 0);
	/* A discard where no pin is: no notice.  The daemon handles a
	 * session's events in order, so a notice for it would come before the
	 * one of the munmap that follows. */
	REQUIRE(madvise(base, 4 * page, MADV_DONTNEED) == 0);
	REQUIRE(munmap(base + 48 * page, 16 * page) == 0);
	REQUIRE(take_notices(k.c, &log, 1) == 0);
	REQUIRE(notice_is(&log.v[0], COOKIE_B, base + 48 * page, 8 * page, PIN_UFFD_EVENT_UNMAP));
	/* Pages [16, 32) move: the part of A in them is stale. */
	REQUIRE(mremap(base + 16 * page, 16 * page, 16 * page, MREMAP_MAYMOVE | MREMAP_FIXED,
		       spot) == spot);
	/* The kernel reports the move (REMAP), then the unmapping of the old
	 * range (UNMAP): A is stale by both. */
	REQUIRE(take_notices(k.c, &log, 3) == 0);
	REQUIRE(notice_is(&log.v[1], COOKIE_A, base + 16 * page, 8 * page, PIN_UFFD_EVENT_REMAP));
	REQUIRE(notice_is(&log.v[2], COOKIE_A, base + 16 * page, 8 * page, PIN_UFFD_EVENT_UNMAP));
	/* Page 24, now at spot + 8 pages, comes from the same source offset. */
	uint8_t out[4096];
	pthread_t th;
	struct toucher t = { spot + 8 * page, page, out };
	REQUIRE(page <= sizeof(out));
	REQUIRE(pthread_create(&th, NULL, touch_thread, &t) == 0);
	REQUIRE(join_bounded(th, "the moved region is not served at its new address") == 0);
	REQUIRE(buf_ok(out, page, 24 * page, 11));
	test_conn_close(&k);
	return 0;
}

START_TEST(stale_notices_remap_unmap)
{
	run_client(client_stale_events, EV_PAGES);
}
END_TEST

/* ---- per-uid limits across sessions and uids ---- */

/* What the daemon runs with, and the uid of the second user. */
#define LIMIT_REGIONS	   2
#define LIMIT_PINNED_PAGES 2
#define OTHER_UID	   65534
/* Retrying a request until the quota a dead session held is back. */
#define QUOTA_POLL_MS 10
#define QUOTA_POLLS   1000

struct quota {
	int held[2]; /* client A -> test: it holds one region and one pinned page */
	int full[2]; /* client B -> test: uid 0 is at its limits */
	int quit[2]; /* test -> A: go */
	int back[2]; /* test -> B: A is gone */
};

static char last_log[512];

static void keep_log(enum pin_log_level level, const char *msg, void *userdata)
{
	snprintf(last_log, sizeof(last_log), "%s", msg);
}

/* The last libpin log line (the daemon's reply text) contains want. */
static bool logged(const char *want)
{
	if (strstr(last_log, want))
		return true;
	fprintf(stderr, "client: last log \"%s\", want \"%s\" in it\n", last_log, want);
	return false;
}

static int client_quota_a(const struct test_daemon *d, void *arg)
{
	struct quota *q = arg;
	struct test_conn k;
	char c;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	REQUIRE(pin_client_pin_report(k.c, base, page, 1) == 0);
	REQUIRE(write(q->held[1], "x", 1) == 1);
	REQUIRE(read(q->quit[0], &c, 1) == 1);
	test_conn_close(&k);
	return 0;
}

/* Region add at addr, retried while -EDQUOT (a dead session's quota comes
 * back asynchronously); the last result. */
static int add_region_retry(struct test_conn *k, void *addr)
{
	int r = -EDQUOT;

	for (int i = 0; i < QUOTA_POLLS && r == -EDQUOT; i++) {
		r = add_region(k, addr, page, PIN_UFFD_REGISTER_MISSING, -1, 0);
		if (r == -EDQUOT)
			test_sleep_ms(QUOTA_POLL_MS);
	}
	if (r == -EDQUOT)
		fprintf(stderr, "client: the quota of a gone session did not come back in %d ms\n",
			QUOTA_POLLS * QUOTA_POLL_MS);
	return r;
}

static int client_quota_b(const struct test_daemon *d, void *arg)
{
	struct quota *q = arg;
	struct test_conn k;
	char c;

	pin_log_set(keep_log, NULL);
	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(4 * page);
	REQUIRE(base);
	/* Alone, this session would stay under both limits. */
	REQUIRE(add_region(&k, base, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	REQUIRE(add_region(&k, base + page, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == -EDQUOT);
	REQUIRE(logged("(uid 0 has 2 regions, the limit is 2)"));
	REQUIRE(pin_client_pin_report(k.c, base, page, 1) == 0);
	REQUIRE(pin_client_pin_report(k.c, base + page, page, 2) == -EDQUOT);
	REQUIRE(logged("(uid 0 has 8192 bytes pinned, the limit is 8192)"));
	REQUIRE(write(q->full[1], "x", 1) == 1);
	REQUIRE(read(q->back[0], &c, 1) == 1);
	/* A's session is gone, and with it what it held. */
	REQUIRE(add_region_retry(&k, base + page) == 0);
	REQUIRE(pin_client_pin_report(k.c, base + page, page, 2) == 0);
	REQUIRE(base[page] == 0);
	test_conn_close(&k);
	return 0;
}

/* Another uid, while uid 0 is at its limits, gets its own full share. */
static int client_quota_other(const struct test_daemon *d, void *arg)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock };
	struct test_conn k;

	/* Opening a userfaultfd needs root here; using it does not. */
	REQUIRE(pin_uffd_new(&uo, &k.u) == 0);
	REQUIRE(setresgid(OTHER_UID, OTHER_UID, OTHER_UID) == 0);
	REQUIRE(setresuid(OTHER_UID, OTHER_UID, OTHER_UID) == 0);
	REQUIRE(pin_client_connect(&co, &k.c) == 0);
	REQUIRE(pin_client_handover(k.c, k.u) == 0);
	uint8_t *base = test_map_region(LIMIT_REGIONS * page);
	REQUIRE(base);
	for (int i = 0; i < LIMIT_REGIONS; i++)
		REQUIRE(add_region(&k, base + i * page, page, PIN_UFFD_REGISTER_MISSING, -1, 0) ==
			0);
	REQUIRE(pin_client_pin_report(k.c, base, LIMIT_PINNED_PAGES * page, 1) == 0);
	REQUIRE(base[0] == 0);
	test_conn_close(&k);
	return 0;
}

START_TEST(per_uid_limits_across_sessions)
{
	struct test_daemon d;
	char regions[16], pinned[32];
	const char *const extra[] = { "--max-regions-per-uid", regions, "--max-pinned-per-uid",
				      pinned, NULL };
	struct quota q;

	snprintf(regions, sizeof(regions), "%d", LIMIT_REGIONS);
	snprintf(pinned, sizeof(pinned), "%zu", LIMIT_PINNED_PAGES * page);
	test_daemon_start(&d, extra);
	/* The socket's mode is the access policy: let the other uid in. */
	ck_assert_int_eq(chmod(d.dir, 0711), 0);
	ck_assert_int_eq(chmod(d.sock, 0666), 0);
	ck_assert_int_eq(pipe2(q.held, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(q.full, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(q.quit, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(q.back, O_CLOEXEC), 0);
	pid_t a = test_spawn(client_quota_a, &d, &q);
	await_child(q.held[0], a);
	pid_t b = test_spawn(client_quota_b, &d, &q);
	await_child(q.full[0], b);
	ck_assert_int_eq(test_reap(test_spawn(client_quota_other, &d, NULL)), 0);
	ck_assert_int_eq(write(q.quit[1], "x", 1), 1);
	ck_assert_int_eq(test_reap(a), 0);
	ck_assert_int_eq(write(q.back[1], "x", 1), 1);
	ck_assert_int_eq(test_reap(b), 0);
	int *pipes[] = { q.held, q.full, q.quit, q.back };
	for (size_t i = 0; i < PIN_ARRAY_SIZE(pipes); i++) {
		close(pipes[i][0]);
		close(pipes[i][1]);
	}
	test_daemon_stop(&d);
}
END_TEST

/* ---- a run that meets a page already there ---- */

#define PARTIAL_PAGES 16
#define PARTIAL_RUN   8
#define PARTIAL_THERE 2
/* Long enough for a request to be answered, were it answered early. */
#define WAIT_SHORT_MS 50

/* Prefetch of pages [0, 8) with page 2 already placed (by the client, the
 * daemon does not know): the COPY of the run stops at page 2 with a partial
 * count; the daemon goes on from there, and counts exactly what it placed. */
static int client_partial(const struct test_daemon *d, void *arg)
{
	struct evtest *e = arg;
	struct pin_client_stats st;
	struct test_conn k;
	size_t len = PARTIAL_PAGES * page;
	uint64_t *src = malloc(page);
	int64_t done;

	REQUIRE(src && conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(len);
	REQUIRE(base);
	REQUIRE(pin_uffd_register(k.u, base, len, PIN_UFFD_REGISTER_MISSING, NULL) == 0);
	for (size_t j = 0; j < page / 8; j++)
		src[j] = test_pattern(PARTIAL_THERE * page + j * 8, 11);
	REQUIRE(pin_uffd_copy(k.u, base + PARTIAL_THERE * page, src, page, 0, &done) == 0);
	free(src);
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = base,
		.len = len,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH,
		.fd = e->fd,
	};
	REQUIRE(pin_client_region_add(k.c, &r) == 0);
	REQUIRE(pin_client_prefetch(k.c, base, PARTIAL_RUN * page) == 0);
	REQUIRE(pin_client_wait_populated(k.c, base, PARTIAL_RUN * page, 60000) == 0);
	/* Half the region is populated: not the whole. */
	REQUIRE(pin_client_wait_populated(k.c, base, len, WAIT_SHORT_MS) == -ETIMEDOUT);
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.faults == 0);
	REQUIRE(st.pages_copied == PARTIAL_RUN - 1);
	REQUIRE(st.bytes_copied == (PARTIAL_RUN - 1) * page);
	REQUIRE(st.eexist == 1);
	REQUIRE(st.pages_populated == PARTIAL_RUN);
	for (size_t i = 0; i < PARTIAL_RUN; i++)
		REQUIRE(test_page_ok(base, i, 11));
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.faults == 0);
	test_conn_close(&k);
	return 0;
}

START_TEST(prefetch_partial_copy)
{
	run_client(client_partial, PARTIAL_PAGES);
}
END_TEST

/* ---- sequential faults over data and holes ---- */

/* The holes file of holes_read_zero read in address order by one syscall:
 * the readahead window grows past the ends of the data, so one fault's run
 * takes several ioctls (COPY, ZEROPAGE) placed without waking, and only the
 * WAKE after them lets the thread go on. */
static int client_holes_sequential(const struct test_daemon *d, void *arg)
{
	int fd = *(int *)arg;
	struct pin_client_stats st;
	struct test_conn k;
	pthread_t th;
	size_t len = HOLE_PAGES * page;
	uint8_t *out = malloc(len);

	REQUIRE(out && conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(len);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, len, PIN_UFFD_REGISTER_MISSING, fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	struct toucher t = { base, len, out };
	REQUIRE(pthread_create(&th, NULL, touch_thread, &t) == 0);
	REQUIRE(join_bounded(th, "a run placed without waking was never woken") == 0);
	for (size_t i = 0; i < HOLE_PAGES; i++)
		REQUIRE(i < 4 || (i >= 12 && i < 14) ? buf_ok(out + i * page, page, i * page, 5)
						     : test_page_zero(out, i));
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.pages_copied == 6);
	REQUIRE(st.pages_zeroed == HOLE_PAGES - 6);
	/* Runs of several pages, or the test proves nothing.  How many faults
	 * exactly depends on how far the background readahead got before the
	 * thread's next fault (4 here, every time, on an idle machine). */
	REQUIRE(st.faults < HOLE_PAGES);
	free(out);
	test_conn_close(&k);
	return 0;
}

START_TEST(holes_sequential)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, "holes", 14, 5);
	ck_assert_int_eq(
		fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * page, 8 * page), 0);
	ck_assert_int_eq(test_reap(test_spawn(client_holes_sequential, &d, &fd)), 0);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- per-uid caps (issue 12, rows 5 and 11) ---- */

/* Waits for a refusal's reply, at most (its times the time scale): a
 * connection the daemon serves gets nothing before its Hello. */
#define REFUSAL_WAIT_MS 5000

/* A connection the daemon should refuse: the error its first message
 * carries (-EDQUOT), before the client says anything; 1 when none came. */
static int refused_error(const struct test_daemon *d)
{
	Uffdd__Msg *r;
	int fds[PIN_PROTO_MAX_FDS];
	size_t nfds;
	int sock = try_connect(d->sock), e = 1;

	if (sock < 0)
		return 1;
	struct pollfd p = { .fd = sock, .events = POLLIN };
	if (poll(&p, 1, (int)(REFUSAL_WAIT_MS * test_time_scale())) == 1 &&
	    pin_proto_recv(sock, &r, fds, &nfds) == 0) {
		if (r->body_case == UFFDD__MSG__BODY_REPLY && !r->seq)
			e = r->reply->error;
		pin_proto_free(r);
	}
	close(sock);
	return e;
}

/* Tries 10 ms apart while a freed session's charge comes back (the daemon
 * frees it asynchronously; a fork child's within its 1 s probe). */
#define CAP_TRIES 500

/* 0 once a new connection is served (its Hello answered). */
static int hello_until_served(const struct test_daemon *d)
{
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "after" };
	struct pin_client *c;

	for (int i = 0; i < CAP_TRIES; i++) {
		if (pin_client_connect(&co, &c) == 0) {
			pin_client_free(c);
			return 0;
		}
		test_sleep_ms(10);
	}
	return -EDQUOT;
}

static int client_connections(const struct test_daemon *d, void *arg)
{
	struct test_conn a, b;

	(void)arg;
	REQUIRE(conn_open(d, &a, 0) == 0);
	REQUIRE(conn_open(d, &b, 0) == 0);
	REQUIRE(refused_error(d) == -EDQUOT);
	test_conn_close(&b);
	REQUIRE(hello_until_served(d) == 0);
	test_conn_close(&a);
	return 0;
}

/* Two connections per uid: the third is answered -EDQUOT and closed; one
 * gone, a new one is served. */
START_TEST(connections_capped)
{
	struct test_daemon d;
	const char *const extra[] = { "--max-connections-per-uid", "2", NULL };

	test_daemon_start(&d, extra);
	idle_fds(d.pid);
	ck_assert_int_eq(test_reap(test_spawn(client_connections, &d, NULL)), 0);
	test_daemon_stop(&d);
}
END_TEST

#define CAP_FORKS 2

static int client_fork_sessions(const struct test_daemon *d, void *arg)
{
	struct test_conn k;
	int go[2];
	pid_t kids[CAP_FORKS];

	(void)arg;
	REQUIRE(pipe2(go, O_CLOEXEC) == 0);
	REQUIRE(conn_open(d, &k, 0) == 0);
	/* A registered range: a fork copies it, and the daemon gets the
	 * child's userfaultfd. */
	uint8_t *base = test_map_region(page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	for (int i = 0; i < CAP_FORKS; i++) {
		REQUIRE((kids[i] = fork()) >= 0);
		if (kids[i] == 0) {
			char c;
			close(go[1]);
			_exit(read(go[0], &c, 1) == 0 ? 0 : 1);
		}
	}
	/* Its session and its children's, once made: the limit, and no
	 * connection more. */
	struct pin_client_info *v = NULL;
	size_t n = 0;
	for (int i = 0; i < CAP_TRIES && n != 1 + CAP_FORKS; i++) {
		free(v);
		v = NULL;
		REQUIRE(pin_client_list_clients(k.c, &v, &n) == 0);
		if (n != 1 + CAP_FORKS)
			test_sleep_ms(10);
	}
	free(v);
	REQUIRE(n == 1 + CAP_FORKS);
	REQUIRE(refused_error(d) == -EDQUOT);
	close(go[1]);
	for (int i = 0; i < CAP_FORKS; i++) {
		int st;
		REQUIRE(waitpid(kids[i], &st, 0) == kids[i]);
		REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	REQUIRE(hello_until_served(d) == 0);
	test_conn_close(&k);
	return 0;
}

/* Fork children's sessions count against the uid's sessions (charged: a
 * fork cannot be refused), and free their place once their process is
 * gone. */
START_TEST(fork_children_count_as_sessions)
{
	struct test_daemon d;
	const char *const extra[] = { "--max-sessions-per-uid", "3", NULL };

	test_daemon_start(&d, extra);
	idle_fds(d.pid);
	ck_assert_int_eq(test_reap(test_spawn(client_fork_sessions, &d, NULL)), 0);
	test_daemon_stop(&d);
}
END_TEST

struct three_files {
	int fd[3];
};

static int client_fds(const struct test_daemon *d, void *arg)
{
	const struct three_files *f = arg;
	struct test_conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(8 * page);
	REQUIRE(base);
	/* Connection, record, userfaultfd: 3.  File 0: 4, however many
	 * regions read it; file 1: 5, the limit. */
	REQUIRE(add_region(&k, base, page, PIN_UFFD_REGISTER_MISSING, f->fd[0], 0) == 0);
	REQUIRE(add_region(&k, base + page, page, PIN_UFFD_REGISTER_MISSING, f->fd[0], 0) == 0);
	REQUIRE(add_region(&k, base + 2 * page, page, PIN_UFFD_REGISTER_MISSING, f->fd[1], 0) == 0);
	REQUIRE(add_region(&k, base + 3 * page, page, PIN_UFFD_REGISTER_MISSING, f->fd[2], 0) ==
		-EDQUOT);
	REQUIRE(add_region(&k, base + 4 * page, page, PIN_UFFD_REGISTER_MISSING, f->fd[1], 0) == 0);
	/* File 1's regions gone, its place is free. */
	REQUIRE(pin_client_region_remove(k.c, base + 2 * page, page) == 0);
	REQUIRE(pin_client_region_remove(k.c, base + 4 * page, page) == 0);
	REQUIRE(add_region(&k, base + 3 * page, page, PIN_UFFD_REGISTER_MISSING, f->fd[2], 0) == 0);
	REQUIRE(test_page_ok(base, 0, 21));
	REQUIRE(test_page_ok(base + 3 * page, 0, 23));
	test_conn_close(&k);
	return 0;
}

/* A session's descriptors in the daemon (its connection, record,
 * userfaultfd and each distinct source file) count against the uid's
 * --max-fds-per-uid. */
START_TEST(fds_capped)
{
	struct test_daemon d;
	struct three_files f;
	const char *const extra[] = { "--max-fds-per-uid", "5", NULL };

	test_daemon_start(&d, extra);
	for (int i = 0; i < 3; i++) {
		char name[16];
		snprintf(name, sizeof(name), "src%d", i);
		f.fd[i] = make_source(&d, name, 1, 21 + (uint64_t)i);
	}
	idle_fds(d.pid);
	ck_assert_int_eq(test_reap(test_spawn(client_fds, &d, &f)), 0);
	for (int i = 0; i < 3; i++)
		close(f.fd[i]);
	test_daemon_stop(&d);
}
END_TEST

#define BIG_PAGES (1ull << 17) /* two bitmaps of 16 KiB in the record */

static int client_bytes(const struct test_daemon *d, void *arg)
{
	struct test_conn k;

	(void)arg;
	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *a = test_map_region(BIG_PAGES * page), *b = test_map_region(BIG_PAGES * page);
	uint8_t *c = test_map_region(page);
	REQUIRE(a && b && c);
	REQUIRE(add_region(&k, a, BIG_PAGES * page, PIN_UFFD_REGISTER_MISSING, -1,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(add_region(&k, b, BIG_PAGES * page, PIN_UFFD_REGISTER_MISSING, -1,
			   PIN_CLIENT_REGION_NO_PUSH) == -EDQUOT);
	REQUIRE(add_region(&k, c, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	REQUIRE(test_page_zero(c, 0));
	test_conn_close(&k);
	return 0;
}

/* The bytes of a session's record (its table, 5.5 KiB, and its regions'
 * bitmaps) count against --max-bytes-per-uid: at 48 KiB, one region of 2^17
 * pages fits (32 KiB of bitmaps), a second does not, a small one still
 * does. */
START_TEST(record_bytes_capped)
{
	struct test_daemon d;
	const char *const extra[] = { "--max-bytes-per-uid", "49152", NULL };

	test_daemon_start(&d, extra);
	idle_fds(d.pid);
	ck_assert_int_eq(test_reap(test_spawn(client_bytes, &d, NULL)), 0);
	test_daemon_stop(&d);
}
END_TEST

static int client_split(const struct test_daemon *d, void *arg)
{
	const int *fd = arg;
	struct test_conn k;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *a = test_map_region(4 * page), *b = test_map_region(page);
	REQUIRE(a && b);
	REQUIRE(add_region(&k, a, 4 * page, PIN_UFFD_REGISTER_MISSING, *fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(add_region(&k, b, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	/* A hole in A's middle would make a third region: refused, and
	 * nothing cut: A's pages still come from its source. */
	REQUIRE(pin_client_region_remove(k.c, a + page, page) == -EDQUOT);
	for (size_t i = 4; i-- > 0;)
		REQUIRE(test_page_ok(a, i, 31));
	/* B gone, the split fits. */
	REQUIRE(pin_client_region_remove(k.c, b, page) == 0);
	REQUIRE(pin_client_region_remove(k.c, a + page, page) == 0);
	test_conn_close(&k);
	return 0;
}

/* A RegionRemove that splits a region is charged the region it makes, and
 * refused over the limit before anything is cut. */
START_TEST(split_refused_over_cap)
{
	struct test_daemon d;
	const char *const extra[] = { "--max-regions-per-uid", "2", NULL };

	test_daemon_start(&d, extra);
	int fd = make_source(&d, "src", 4, 31);
	idle_fds(d.pid);
	ck_assert_int_eq(test_reap(test_spawn(client_split, &d, &fd)), 0);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- pins found by cookie in O(1) (issue 12, row 14) ---- */

#define MANY_PINS 4096

static int client_many_pins(const struct test_daemon *d, void *arg)
{
	struct test_conn k;
	size_t *order = malloc(MANY_PINS * sizeof(*order));

	(void)arg;
	REQUIRE(order);
	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(page);
	REQUIRE(base);
	/* Cookies far apart and close together alike. */
	for (size_t i = 0; i < MANY_PINS; i++)
		REQUIRE(pin_client_pin_report(k.c, base, page, (i << 40) | i) == 0);
	REQUIRE(pin_client_pin_report(k.c, base, page, (7ull << 40) | 7) == 0);
	REQUIRE(pin_client_pin_report(k.c, base, 2 * page, (7ull << 40) | 7) == -EEXIST);
	/* Released in a random order, half of them: each found, once. */
	test_permutation(order, MANY_PINS, 5);
	for (size_t i = 0; i < MANY_PINS / 2; i++) {
		uint64_t c = (order[i] << 40) | order[i];
		REQUIRE(pin_client_pin_release(k.c, c) == 0);
		REQUIRE(pin_client_pin_release(k.c, c) == -ENOENT);
	}
	/* The other half still there; the first half reported again. */
	for (size_t i = MANY_PINS / 2; i < MANY_PINS; i++)
		REQUIRE(pin_client_pin_report(k.c, base, 2 * page, (order[i] << 40) | order[i]) ==
			-EEXIST);
	for (size_t i = 0; i < MANY_PINS / 2; i++)
		REQUIRE(pin_client_pin_report(k.c, base, page, (order[i] << 40) | order[i]) == 0);
	for (size_t i = 0; i < MANY_PINS; i++)
		REQUIRE(pin_client_pin_release(k.c, (order[i] << 40) | order[i]) == 0);
	/* Every pin's bytes given back: the limit's worth fits again. */
	REQUIRE(pin_client_pin_report(k.c, base, MANY_PINS * page, 1) == 0);
	free(order);
	test_conn_close(&k);
	return 0;
}

/* MANY_PINS pins reported, released in a random order and reported again:
 * each is found by its cookie (released once, -ENOENT after, -EEXIST for
 * another range) and the pinned bytes come back exactly. */
START_TEST(many_pins_by_cookie)
{
	struct test_daemon d;
	char limit[32];

	snprintf(limit, sizeof(limit), "%zu", (size_t)MANY_PINS * page);
	const char *const extra[] = { "--max-pinned-per-uid", limit, NULL };
	test_daemon_start(&d, extra);
	ck_assert_int_eq(test_reap(test_spawn(client_many_pins, &d, NULL)), 0);
	test_daemon_stop(&d);
}
END_TEST

/* ---- one userfaultfd, one session (issue 12, row 14) ---- */

static int client_uffd_twice(const struct test_daemon *d, void *arg)
{
	struct test_conn a;
	struct pin_client *b;
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "second" };
	int r = -EBUSY;

	(void)arg;
	REQUIRE(conn_open(d, &a, 0) == 0);
	REQUIRE(pin_client_connect(&co, &b) == 0);
	REQUIRE(pin_client_handover(b, a.u) == -EBUSY);
	/* The first session gone, the userfaultfd is free for another. */
	pin_client_free(a.c);
	for (int i = 0; i < CAP_TRIES && r == -EBUSY; i++) {
		r = pin_client_handover(b, a.u);
		if (r == -EBUSY)
			test_sleep_ms(10);
	}
	REQUIRE(r == 0);
	uint8_t *base = test_map_region(page);
	REQUIRE(base);
	REQUIRE(pin_uffd_register(a.u, base, page, PIN_UFFD_REGISTER_MISSING, NULL) == 0);
	struct pin_client_region reg = {
		.sz = sizeof(reg),
		.addr = base,
		.len = page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.fd = -1,
	};
	REQUIRE(pin_client_region_add(b, &reg) == 0);
	REQUIRE(test_page_zero(base, 0));
	pin_client_free(b);
	pin_uffd_free(a.u);
	return 0;
}

/* A userfaultfd handed over in a second session while the first holds it
 * is refused with -EBUSY (the second would park its faults forever); once
 * the first is gone, the second takes it and serves it. */
START_TEST(uffd_in_one_session_only)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	ck_assert_int_eq(test_reap(test_spawn(client_uffd_twice, &d, NULL)), 0);
	test_daemon_stop(&d);
}
END_TEST

/* ---- a pipelining client is slowed down, not cut off (issue 12, row 14) ---- */

/* Far more requests than replies fit in a socket's buffer (some 270). */
#define PIPELINED 4096

static int client_pipelined(const struct test_daemon *d, void *arg)
{
	Uffdd__Msg m = UFFDD__MSG__INIT, *r;
	Uffdd__Hello hello = UFFDD__HELLO__INIT;
	Uffdd__StatsGet sg = UFFDD__STATS_GET__INIT;
	int fds[PIN_PROTO_MAX_FDS];
	size_t nfds;
	uint64_t sent = 0, got = 0;

	(void)arg;
	int sock = try_connect(d->sock);
	REQUIRE(sock >= 0);
	hello.version = PIN_PROTO_VERSION;
	m.has_seq = true;
	m.seq = 1;
	m.body_case = UFFDD__MSG__BODY_HELLO;
	m.hello = &hello;
	REQUIRE(pin_proto_send(sock, &m, NULL, 0) == 0);
	REQUIRE(pin_proto_recv(sock, &r, fds, &nfds) == 0);
	REQUIRE(r->body_case == UFFDD__MSG__BODY_REPLY && r->seq == 1 && !r->reply->error);
	pin_proto_free(r);
	REQUIRE(fcntl(sock, F_SETFL, O_NONBLOCK) == 0);
	m.body_case = UFFDD__MSG__BODY_STATS_GET;
	m.stats_get = &sg;
	/* Requests until the socket takes no more (the daemon stopped
	 * reading them), then one reply, and so on: every reply comes, in
	 * order. */
	while (got < PIPELINED) {
		int e = 0;
		while (sent < PIPELINED) {
			m.seq = 2 + sent;
			e = pin_proto_send(sock, &m, NULL, 0);
			if (e < 0)
				break;
			sent++;
		}
		REQUIRE(e == 0 || e == -EAGAIN);
		struct pollfd p = { .fd = sock, .events = POLLIN };
		REQUIRE(poll(&p, 1, -1) == 1);
		REQUIRE(pin_proto_recv(sock, &r, fds, &nfds) == 0);
		REQUIRE(r->body_case == UFFDD__MSG__BODY_REPLY && r->seq == 2 + got &&
			!r->reply->error);
		pin_proto_free(r);
		got++;
	}
	close(sock);
	return 0;
}

/* PIPELINED StatsGet requests sent without waiting for their replies: the
 * daemon stops reading them while its replies wait for room, and answers
 * every one, in order (it used to cut the client off at some 270). */
START_TEST(pipelined_requests_served)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	int fds = idle_fds(d.pid);
	ck_assert_int_eq(test_reap(test_spawn(client_pipelined, &d, NULL)), 0);
	wait_fds(d.pid, fds);
	test_daemon_stop(&d);
}
END_TEST

/* Stale notices one munmap makes: more than fit in the socket (some 270)
 * and the daemon's queue (UFFDD_OUTQ_MAX, 256) together. */
#define NOTICES 1024

struct unread {
	int ready[2]; /* client -> test: its notices are sent, or cut off */
	int go[2];    /* test -> client: the daemon let go of its session */
};

static int client_unread(const struct test_daemon *d, void *arg)
{
	struct unread *u = arg;
	struct test_conn k;
	char c;

	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, page, PIN_UFFD_REGISTER_MISSING, -1, 0) == 0);
	for (uint64_t i = 1; i <= NOTICES; i++)
		REQUIRE(pin_client_pin_report(k.c, base, page, i) == 0);
	/* Returns once the daemon read the event; nothing reads the notices. */
	REQUIRE(munmap(base, page) == 0);
	REQUIRE(write(u->ready[1], "r", 1) == 1);
	REQUIRE(read(u->go[0], &c, 1) == 1);
	test_conn_close(&k);
	return 0;
}

/* A client that never reads what the daemon sends is cut off once its
 * queue is full (its session freed while it still holds its end), and
 * costs the daemon no more than that. */
START_TEST(unread_notices_bounded)
{
	struct test_daemon d;
	struct unread u;
	char c;

	test_daemon_start(&d, NULL);
	ck_assert_int_eq(pipe2(u.ready, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(u.go, O_CLOEXEC), 0);
	int fds = idle_fds(d.pid);
	pid_t pid = test_spawn(client_unread, &d, &u);
	ck_assert_int_eq(read(u.ready[0], &c, 1), 1);
	wait_fds(d.pid, fds);
	ck_assert_int_eq(write(u.go[1], "g", 1), 1);
	ck_assert_int_eq(test_reap(pid), 0);
	for (int i = 0; i < 2; i++) {
		close(u.ready[i]);
		close(u.go[i]);
	}
	test_daemon_stop(&d);
}
END_TEST

/* ---- out of descriptors, the daemon backs off (issue 12, row 5) ---- */

#define EMFILE_ROOM  4	/* descriptors the daemon has left: two sessions' */
#define EMFILE_CONNS 32 /* connections then: most wait in the backlog */

/* The highest descriptor number the daemon has open (below TEST_VALGRIND_FDS). */
static int max_fd(pid_t pid)
{
	char path[64];
	int m = -1;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *dir = opendir(path);
	ck_assert_ptr_nonnull(dir);
	for (struct dirent *e; (e = readdir(dir));) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd < TEST_VALGRIND_FDS && fd > m)
			m = fd;
	}
	closedir(dir);
	return m;
}

/* How long the process's threads have been runnable, in ns: on a CPU or
 * waiting in a run queue (/proc/PID/task/TID/schedstat's first two fields).
 * Unlike CPU time it does not shrink when other work keeps the CPUs busy. */
static unsigned long long runnable_ns(pid_t pid)
{
	char path[64];
	unsigned long long sum = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *dir = opendir(path);
	ck_assert_ptr_nonnull(dir);
	for (struct dirent *e; (e = readdir(dir));) {
		unsigned long long run, wait;
		char stat[sizeof(path) + sizeof(e->d_name) + 16];
		if (e->d_name[0] == '.')
			continue;
		snprintf(stat, sizeof(stat), "%s/%s/schedstat", path, e->d_name);
		FILE *f = fopen(stat, "re");
		if (!f)
			continue; /* the thread ended */
		ck_assert_int_eq(fscanf(f, "%llu %llu", &run, &wait), 2);
		fclose(f);
		sum += run + wait;
	}
	closedir(dir);
	return sum;
}

/* A daemon with EMFILE_ROOM descriptors left and EMFILE_CONNS connections
 * waiting: over a second its threads are runnable for at most a fifth of
 * it (an accept loop retrying EMFILE is runnable all the time); given room again and the
 * connections gone, it serves a new client, and its descriptors come back
 * to baseline. */
START_TEST(emfile_backs_off)
{
	struct test_daemon d;
	struct rlimit old, low;
	int conns[EMFILE_CONNS];

	test_daemon_start(&d, NULL);
	int fds = idle_fds(d.pid);
	ck_assert_int_eq(prlimit(d.pid, RLIMIT_NOFILE, NULL, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)(max_fd(d.pid) + 1 + EMFILE_ROOM);
	ck_assert_int_eq(prlimit(d.pid, RLIMIT_NOFILE, &low, NULL), 0);
	for (int i = 0; i < EMFILE_CONNS; i++)
		ck_assert_int_ge(conns[i] = try_connect(d.sock), 0);
	unsigned long long t0 = runnable_ns(d.pid);
	test_sleep_ms(1000);
	unsigned long long used = runnable_ns(d.pid) - t0;
	ck_assert_uint_le(used, 200000000ull);
	/* Room again: the backlog drains (each of those connections a session
	 * for a moment, gone at its hangup), and a new client is served. */
	ck_assert_int_eq(prlimit(d.pid, RLIMIT_NOFILE, &old, NULL), 0);
	for (int i = 0; i < EMFILE_CONNS; i++)
		close(conns[i]);
	wait_fds(d.pid, fds);
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d.sock, .name = "after" };
	struct pin_client *c;
	ck_assert_int_eq(pin_client_connect(&co, &c), 0);
	pin_client_free(c);
	wait_fds(d.pid, fds);
	test_daemon_stop(&d);
}
END_TEST

/* ---- the daemon allocates nothing for a client (issue 12, row 4) ---- */

#define SPARSE_LEN  (1ull << 30)
#define SPARSE_DATA (SPARSE_LEN / 2) /* the offset of its one data page */

/* A 1 GiB memfd with one patterned page, as a region's source: adding the
 * region, and reading its data page and a hole, leaves the memfd with that
 * one page of memory (a hole read through the daemon's mapping would
 * allocate one). */
static int client_sparse(const struct test_daemon *d, void *arg)
{
	struct test_conn k;
	struct stat st;

	(void)arg;
	int fd = memfd_create("sparse", MFD_CLOEXEC);
	REQUIRE(fd >= 0);
	REQUIRE(ftruncate(fd, (off_t)SPARSE_LEN) == 0);
	uint64_t *w = malloc(page);
	REQUIRE(w);
	for (size_t i = 0; i < page / sizeof(*w); i++)
		w[i] = test_pattern(SPARSE_DATA + i * sizeof(*w), 3);
	REQUIRE(pwrite(fd, w, page, (off_t)SPARSE_DATA) == (ssize_t)page);
	free(w);
	REQUIRE(fstat(fd, &st) == 0 && st.st_blocks == (blkcnt_t)(page / 512));
	REQUIRE(conn_open(d, &k, 0) == 0);
	uint8_t *base = test_map_region(SPARSE_LEN);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, SPARSE_LEN, PIN_UFFD_REGISTER_MISSING, fd,
			   PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(fstat(fd, &st) == 0 && st.st_blocks == (blkcnt_t)(page / 512));
	REQUIRE(test_page_ok(base, SPARSE_DATA / page, 3));
	REQUIRE(test_page_zero(base, 0));
	REQUIRE(test_page_zero(base, SPARSE_LEN / page - 1));
	REQUIRE(fstat(fd, &st) == 0 && st.st_blocks == (blkcnt_t)(page / 512));
	test_conn_close(&k);
	close(fd);
	return 0;
}

START_TEST(sparse_source_not_allocated)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	ck_assert_int_eq(test_reap(test_spawn(client_sparse, &d, NULL)), 0);
	test_daemon_stop(&d);
}
END_TEST

/* ---- a fork child's session goes with its process (issue 12, row 10) ---- */

/* Where the daemon's probe of a fork child looked, and where it looks first:
 * regions cover both, so only a page found between regions answers it. */
#define PROBE_OLD_TOP ((1ull << 47) - 2 * page)
#define PROBE_FIRST   (16ull << 20)

/* Map and add two pages at addr, zero-filled. */
static int add_fixed(struct test_conn *k, uint64_t addr)
{
	void *p = mmap((void *)(uintptr_t)addr, 2 * page, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	REQUIRE(p == (void *)(uintptr_t)addr);
	return add_region(k, p, 2 * page, PIN_UFFD_REGISTER_MISSING, -1, 0);
}

/* Regions over the probe's old page and its first choice; a child forked,
 * its parent's session ended, then the child exits. */
static int client_fork_covered(const struct test_daemon *d, void *arg)
{
	struct test_conn k;
	int go[2];

	(void)arg;
	REQUIRE(pipe2(go, O_CLOEXEC) == 0);
	REQUIRE(conn_open(d, &k, 0) == 0);
	REQUIRE(add_fixed(&k, PROBE_OLD_TOP - page) == 0);
	REQUIRE(add_fixed(&k, PROBE_FIRST) == 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		char c;
		_exit(read(go[0], &c, 1) == 1 ? 0 : 1);
	}
	test_conn_close(&k);
	REQUIRE(write(go[1], "g", 1) == 1);
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid);
	REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	return 0;
}

/* The child's session (its userfaultfd and its record) is freed once its
 * process is gone, though regions cover the pages the probe tried before:
 * the daemon's descriptors come back to what an idle daemon holds. */
START_TEST(fork_child_reaped_under_regions)
{
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	int fds = idle_fds(d.pid);
	ck_assert_int_eq(test_reap(test_spawn(client_fork_covered, &d, NULL)), 0);
	wait_fds(d.pid, fds);
	test_daemon_stop(&d);
}
END_TEST

/* A case's bound: the 64 MiB fill under valgrind takes minutes. */
#define CASE_TIMEOUT_S 600
#define ADD_CASE(s, t) TEST_ADD_CASE(s, t, CASE_TIMEOUT_S)

Suite *test_suite(void)
{
	Suite *s = suite_create("daemon");

	page = (size_t)sysconf(_SC_PAGESIZE);
	ADD_CASE(s, lazy_fill_64m);
	ADD_CASE(s, holes_read_zero);
	ADD_CASE(s, holes_sequential);
	ADD_CASE(s, sparse_source_not_allocated);
	ADD_CASE(s, truncated_source_poisons);
	ADD_CASE(s, wp_dirty_bitmap);
	ADD_CASE(s, fork_child_served);
	ADD_CASE(s, fork_while_inspected);
	ADD_CASE(s, fork_child_reaped_under_regions);
	ADD_CASE(s, mremap_followed);
	ADD_CASE(s, dontneed_refaults_zero);
	ADD_CASE(s, stale_notices_remap_unmap);
	ADD_CASE(s, push_then_wait);
	ADD_CASE(s, prefetch_and_timeout);
	ADD_CASE(s, prefetch_partial_copy);
	ADD_CASE(s, per_uid_limits);
	ADD_CASE(s, connections_capped);
	ADD_CASE(s, fork_children_count_as_sessions);
	ADD_CASE(s, fds_capped);
	ADD_CASE(s, record_bytes_capped);
	ADD_CASE(s, split_refused_over_cap);
	ADD_CASE(s, many_pins_by_cookie);
	ADD_CASE(s, uffd_in_one_session_only);
	ADD_CASE(s, pipelined_requests_served);
	ADD_CASE(s, unread_notices_bounded);
	/* Becoming another uid needs root; say so rather than pass. */
	if (geteuid() == 0)
		ADD_CASE(s, per_uid_limits_across_sessions);
	else
		printf("per_uid_limits_across_sessions: not run: needs root to become uid %d\n",
		       OTHER_UID);
	ADD_CASE(s, two_clients);
	ADD_CASE(s, killed_client);
	/* valgrind keeps descriptors of its own at the top of RLIMIT_NOFILE
	 * (its setup sets TEST_TIME_SCALE; test_time_scale() asserts, which
	 * only a running test may). */
	const char *scale = getenv("TEST_TIME_SCALE");
	if (!scale || !strcmp(scale, "1"))
		ADD_CASE(s, emfile_backs_off);
	else
		printf("emfile_backs_off: not run under valgrind: its descriptors sit at the top "
		       "of RLIMIT_NOFILE\n");
	ADD_CASE(s, one_fd_per_source_file);
	ADD_CASE(s, malformed_messages);
	ADD_CASE(s, restart_loses_nothing);
	ADD_CASE(s, fault_waits_for_region);
	ADD_CASE(s, restart_wakes_read_fault);
	ADD_CASE(s, eexist_wakes);
	return s;
}

const char *test_skip_reason(void)
{
	return test_daemon_skip_reason();
}
