// SPDX-License-Identifier: MIT
/*
 * Suite daemon, area wpasync: uffdd's wp-async regions (issue 17).  A client
 * whose userfaultfd has WP_ASYNC hands over its pagemap with it; its writes
 * to a WP region raise no fault, and DirtyGet, served by PAGEMAP_SCAN, must
 * answer exactly as for a synchronous WP region: the pages written since the
 * region was added or last reset, bit for bit.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

#define NPAGES 64

static size_t page;

typedef int (*client_fn)(const struct test_daemon *d);

/* Polls for the daemon to free a session (it does so asynchronously):
 * 10 ms apart, 5 s in all (times the valgrind scale). */
#define FREE_POLL_MS 10
#define FREE_POLLS   500

/* A daemon and one client process running fn; then the pagemaps its
 * sessions had the daemon hold are closed. */
static int run(client_fn fn)
{
	struct test_daemon d;
	int st, n = -1;

	test_daemon_start(&d, NULL);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid)
		_exit(fn(&d));
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	for (unsigned int i = 0; i < FREE_POLLS * test_time_scale() && n; i++) {
		n = test_count_fd_links(d.pid, "/proc/*/pagemap");
		if (n)
			test_sleep_ms(FREE_POLL_MS);
	}
	ck_assert_int_eq(n, 0);
	test_daemon_stop(&d);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int conn_open(const struct test_daemon *d, struct test_conn *k, uint64_t features)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = features,
	};
	struct pin_client_opts co = {
		.sz = sizeof(co),
		.socket = d->sock,
		.name = "test-wpasync",
	};

	return test_conn_open(k, &uo, &co);
}

static int add_region(struct test_conn *k, void *addr, unsigned int mode, unsigned int flags)
{
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = addr,
		.len = NPAGES * page,
		.mode = mode,
		.flags = flags | PIN_CLIENT_REGION_NO_PUSH,
		.fd = -1,
	};

	return pin_client_region_add(k->c, &r);
}

/* DirtyGet of the region at base says exactly want. */
static int dirty_is(struct test_conn *k, uint8_t *base, const bool *want, unsigned int flags)
{
	uint8_t bm[NPAGES / 8];
	int n = 0;

	for (int i = 0; i < NPAGES; i++)
		n += want[i];
	int got = pin_client_dirty_get(k->c, base, NPAGES * page, flags, bm, sizeof(bm));
	if (got != n)
		fprintf(stderr, "client: DirtyGet says %d dirty pages, not %d\n", got, n);
	REQUIRE(got == n);
	for (int i = 0; i < NPAGES; i++)
		REQUIRE(((bm[i / 8] >> (i % 8)) & 1) == want[i]);
	return 0;
}

#define ASYNC_FEATURES (PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_UNPOPULATED)

/*
 * One region WP only (the client registers it), one MISSING and WP (the
 * daemon registers it and places zero pages write-protected): pages read,
 * written, both, or left alone; reset; new writes; MADV_DONTNEED.
 */
static int client_async(const struct test_daemon *d, unsigned int mode, unsigned int flags)
{
	bool want[NPAGES] = { false };
	uint64_t seed = test_seed() | 1;
	struct pin_client_stats st;
	struct test_conn k;

	REQUIRE(conn_open(d, &k, ASYNC_FEATURES | PIN_UFFD_FEATURE_EVENT_REMOVE) == 0);
	uint8_t *base = test_map_pages(NPAGES);
	REQUIRE(add_region(&k, base, mode, flags) == 0);
	REQUIRE(dirty_is(&k, base, want, 0) == 0);
	for (int i = 0; i < NPAGES; i++) {
		uint64_t r = test_rand(&seed) % 4;
		if (r == 0 || r == 1)
			REQUIRE(test_page_zero(base, (size_t)i));
		if (r == 1 || r == 2) {
			base[i * page + 7] = 1;
			want[i] = true;
		}
	}
	REQUIRE(dirty_is(&k, base, want, 0) == 0);
	/* Without reset the same again; with it, the same once more, then none. */
	REQUIRE(dirty_is(&k, base, want, PIN_CLIENT_DIRTY_RESET) == 0);
	memset(want, 0, sizeof(want));
	REQUIRE(dirty_is(&k, base, want, 0) == 0);
	for (int i = 0; i < NPAGES; i++) {
		want[i] = test_rand(&seed) % 3 == 0;
		if (want[i])
			base[i * page + 100] = 3;
	}
	REQUIRE(dirty_is(&k, base, want, 0) == 0);
	REQUIRE(dirty_is(&k, base, want, PIN_CLIENT_DIRTY_RESET) == 0);
	/* Dropped pages read zero from now on: they changed, read again
	 * (a MISSING region's page placed anew, protected) or not. */
	memset(want, 0, sizeof(want));
	want[10] = want[11] = true;
	REQUIRE(madvise(base + 10 * page, 2 * page, MADV_DONTNEED) == 0);
	REQUIRE(test_page_zero(base, 10));
	REQUIRE(dirty_is(&k, base, want, PIN_CLIENT_DIRTY_RESET) == 0);
	memset(want, 0, sizeof(want));
	REQUIRE(dirty_is(&k, base, want, 0) == 0);
	/* No write reached the daemon as a fault. */
	REQUIRE(pin_client_stats(k.c, 0, &st) == 0);
	REQUIRE(st.wp_faults == 0);
	test_conn_close(&k);
	return 0;
}

static int client_async_wp(const struct test_daemon *d)
{
	return client_async(d, PIN_UFFD_REGISTER_WP, 0);
}

static int client_async_missing_wp(const struct test_daemon *d)
{
	return client_async(d, PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP,
			    PIN_CLIENT_REGION_REGISTER);
}

START_TEST(async_dirty_bitmap)
{
	ck_assert_int_eq(run(client_async_wp), 0);
}
END_TEST

START_TEST(async_dirty_bitmap_missing)
{
	ck_assert_int_eq(run(client_async_missing_wp), 0);
}
END_TEST

/* A fork child's memory is not the parent's pagemap's: its session answers
 * DirtyGet with -EBADFD rather than with the parent's pages. */
static int client_fork(const struct test_daemon *d)
{
	bool want[NPAGES] = { false };
	struct test_conn k;
	int go[2];

	REQUIRE(pipe2(go, O_CLOEXEC) == 0);
	REQUIRE(conn_open(d, &k, ASYNC_FEATURES | PIN_UFFD_FEATURE_EVENT_FORK) == 0);
	uint8_t *base = test_map_pages(NPAGES);
	REQUIRE(add_region(&k, base, PIN_UFFD_REGISTER_WP, 0) == 0);
	base[5 * page] = 1;
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (!pid) {
		char c;
		base[6 * page] = 1;
		_exit(read(go[0], &c, 1) == 1 ? 0 : 1);
	}
	/* The parent's own writes only. */
	base[7 * page] = 1;
	want[5] = want[7] = true;
	REQUIRE(dirty_is(&k, base, want, 0) == 0);
	REQUIRE(write(go[1], "g", 1) == 1);
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid);
	REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	test_conn_close(&k);
	return 0;
}

START_TEST(async_fork_parent_exact)
{
	ck_assert_int_eq(run(client_fork), 0);
}
END_TEST

/* What the userfaultfd does and what the region says must agree. */
static int client_refused(const struct test_daemon *d)
{
	struct test_conn k;
	uint8_t *base = test_map_pages(NPAGES);
	uint8_t bm[NPAGES / 8];

	/* A synchronous WP userfaultfd: a WP region of it is not wp-async,
	 * and a MISSING one has no dirty bitmap at all. */
	REQUIRE(conn_open(d, &k, PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP) == 0);
	REQUIRE(add_region(&k, base, PIN_UFFD_REGISTER_MISSING, 0) == 0);
	REQUIRE(pin_client_dirty_get(k.c, base, NPAGES * page, 0, bm, sizeof(bm)) == -EINVAL);
	test_conn_close(&k);
	return 0;
}

START_TEST(async_refused)
{
	ck_assert_int_eq(run(client_refused), 0);
}
END_TEST

/* ---- the protocol itself ---- */

static int raw_connect(const struct test_daemon *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d->sock);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send m with a new seq and return the error of its reply; 1 when none came. */
static int reply_error(int sock, Uffdd__Msg *m, const int *fds, size_t nfds)
{
	Uffdd__Msg *r;
	int rfds[PIN_PROTO_MAX_FDS];
	size_t n;
	int e = 1;

	m->has_seq = true;
	m->seq++;
	if (pin_proto_send(sock, m, fds, nfds) < 0 || pin_proto_recv(sock, &r, rfds, &n) < 0)
		return 1;
	if (r->body_case == UFFDD__MSG__BODY_REPLY && (!r->seq || r->seq == m->seq))
		e = r->reply->error;
	pin_proto_free(r);
	return e;
}

/* A connection that said Hello. */
static int hello(const struct test_daemon *d, Uffdd__Msg *m)
{
	Uffdd__Hello h = UFFDD__HELLO__INIT;
	int sock = raw_connect(d);

	h.version = PIN_PROTO_VERSION;
	m->body_case = UFFDD__MSG__BODY_HELLO;
	m->hello = &h;
	int e = sock < 0 ? 1 : reply_error(sock, m, NULL, 0);
	m->hello = NULL;
	if (e) {
		if (sock >= 0)
			close(sock);
		return -1;
	}
	return sock;
}

static int region_add(int sock, Uffdd__Msg *m, void *addr, unsigned int mode, bool wp_async)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__RegionAdd ra = UFFDD__REGION_ADD__INIT;

	range.addr = (uintptr_t)addr;
	range.len = NPAGES * page;
	ra.range = &range;
	ra.mode = mode;
	/* The daemon registers it, and pushes nothing. */
	ra.has_registered = ra.has_push = ra.has_wp_async = true;
	ra.registered = ra.push = false;
	ra.wp_async = wp_async;
	m->body_case = UFFDD__MSG__BODY_REGION_ADD;
	m->region_add = &ra;
	return reply_error(sock, m, NULL, 0);
}

static int client_protocol(const struct test_daemon *d)
{
	struct pin_uffd_opts ao = { .sz = sizeof(ao),
				    .flags = PIN_UFFD_CLOEXEC,
				    .features = ASYNC_FEATURES };
	struct pin_uffd_opts so = { .sz = sizeof(so),
				    .flags = PIN_UFFD_CLOEXEC,
				    .features = PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP };
	Uffdd__UffdHandover ho = UFFDD__UFFD_HANDOVER__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	struct pin_uffd *a, *b, *c;
	uint8_t *base = test_map_pages(NPAGES), *base2 = test_map_pages(NPAGES);
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	REQUIRE(pm >= 0 && null >= 0);
	REQUIRE(pin_uffd_new(&ao, &a) == 0);
	REQUIRE(pin_uffd_new(&so, &b) == 0);
	REQUIRE(pin_uffd_new(&ao, &c) == 0);

	/* An async userfaultfd without its pagemap. */
	int s1 = hello(d, &m);
	REQUIRE(s1 >= 0);
	m.body_case = UFFDD__MSG__BODY_UFFD;
	m.uffd = &ho;
	ho.features = ASYNC_FEATURES;
	ho.has_pagemap = ho.pagemap = true;
	int two[2] = { pin_uffd_fd(a), null };
	/* Said, not sent; sent, not a pagemap. */
	REQUIRE(reply_error(s1, &m, two, 1) == -EBADF);
	REQUIRE(reply_error(s1, &m, two, 2) == -EBADF);
	ho.has_pagemap = ho.pagemap = false;
	REQUIRE(reply_error(s1, &m, two, 1) == 0);
	REQUIRE(region_add(s1, &m, base, PIN_UFFD_REGISTER_WP, true) == -EBADFD);
	REQUIRE(region_add(s1, &m, base, PIN_UFFD_REGISTER_WP, false) == -EINVAL);
	REQUIRE(region_add(s1, &m, base, PIN_UFFD_REGISTER_MISSING, true) == -EINVAL);
	/* MISSING alone is no WP region: async or not does not matter. */
	REQUIRE(region_add(s1, &m, base, PIN_UFFD_REGISTER_MISSING, false) == 0);
	close(s1);

	/* A synchronous one: no wp-async region of it. */
	int s2 = hello(d, &m);
	REQUIRE(s2 >= 0);
	m.body_case = UFFDD__MSG__BODY_UFFD;
	m.uffd = &ho;
	ho.features = PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	int fb = pin_uffd_fd(b);
	REQUIRE(reply_error(s2, &m, &fb, 1) == 0);
	REQUIRE(region_add(s2, &m, base, PIN_UFFD_REGISTER_WP, true) == -EOPNOTSUPP);
	close(s2);

	/* With its pagemap, as libpin sends it. */
	int s3 = hello(d, &m);
	REQUIRE(s3 >= 0);
	m.body_case = UFFDD__MSG__BODY_UFFD;
	m.uffd = &ho;
	ho.features = ASYNC_FEATURES;
	ho.has_pagemap = ho.pagemap = true;
	int fc[2] = { pin_uffd_fd(c), pm };
	REQUIRE(reply_error(s3, &m, fc, 2) == 0);
	/* Other memory: the first session's registration may still be
	 * there, its end being the daemon's to do. */
	REQUIRE(region_add(s3, &m, base2, PIN_UFFD_REGISTER_WP, true) == 0);
	close(s3);

	pin_uffd_free(a);
	pin_uffd_free(b);
	pin_uffd_free(c);
	close(pm);
	close(null);
	return 0;
}

START_TEST(async_protocol)
{
	ck_assert_int_eq(run(client_protocol), 0);
}
END_TEST

#define CASE_TIMEOUT_S 300

Suite *test_suite(void)
{
	Suite *s = suite_create("wpasync");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, async_dirty_bitmap, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, async_dirty_bitmap_missing, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, async_fork_parent_exact, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, async_refused, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, async_protocol, CASE_TIMEOUT_S);
	return s;
}

const char *test_skip_reason(void)
{
	if (!getenv("UFFDD"))
		return "UFFDD (the uffdd binary to test) is not set; run through meson test";
	return test_uffd_features_skip_reason(
		ASYNC_FEATURES, "the kernel has no UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
}
