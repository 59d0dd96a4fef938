// SPDX-License-Identifier: MIT
/*
 * Suite daemon, area place: one session's runs placed by several threads at
 * once (issue 14 item 1).  uffdd runs with --workers 2, so its crew has one
 * placer thread beside the workers, and every push run of 64 pages or more
 * goes in pieces, the worker taking its share and the placer the others.
 * Which thread placed which piece depends on the scheduler; what must not is
 * checked exactly: every byte, and the counters (each page placed once,
 * copied or zeroed as its source says, none found there twice), also while
 * the process forks, moves part of the range and discards another part, and
 * when a run goes over pages already in place.  And a push that met a
 * range not registered yet goes again at Goodbye (issue 13).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

/* The region: 64 MiB of 4 KiB pages. */
#define NPAGES 16384
#define SEED   0x9a7
/* Holes in the source: HOLES runs of HOLE_LEN pages, one every HOLE_EVERY. */
#define HOLES	   16
#define HOLE_LEN   40
#define HOLE_EVERY 1024
#define HOLE_AT	   500
/* The placer threads uffdd --workers 2 has (uffdd/crew.c): workers - 1. */
#define WORKERS "2"
#define PLACERS 1
/* How long a client waits for the push of 64 MiB (ms, native). */
#define WAIT_MS 60000

static size_t page;

static int conn_open(const struct test_daemon *d, struct test_conn *k)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_FORK | PIN_UFFD_FEATURE_EVENT_REMAP |
			    PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP,
	};
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "test-place" };

	return test_conn_open(k, &uo, &co);
}

/* A region of n pages at base over fd, with flags (PIN_CLIENT_REGION_*). */
static int add_region_flags(struct test_conn *k, void *base, size_t n, int fd, unsigned int flags)
{
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = base,
		.len = n * page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = flags,
		.fd = fd,
	};

	if (pin_uffd_register(k->u, base, n * page, PIN_UFFD_REGISTER_MISSING, NULL) < 0)
		return -1;
	return pin_client_region_add(k->c, &r);
}

/* A region of n pages at base over fd, pushed. */
static int add_region(struct test_conn *k, void *base, size_t n, int fd)
{
	return add_region_flags(k, base, n, fd, 0);
}

/* Page i of the source is a hole (read as zero). */
static bool in_hole(size_t i)
{
	return i % HOLE_EVERY >= HOLE_AT && i % HOLE_EVERY < HOLE_AT + HOLE_LEN;
}

/* A memfd of NPAGES patterned pages (seed SEED), with holes when holes. */
static int make_source(bool holes)
{
	int fd = memfd_create("place-src", MFD_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	test_pattern_write(fd, NPAGES * page, SEED);
	for (size_t h = 0; holes && h < HOLES; h++)
		ck_assert_int_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					   (off_t)((h * HOLE_EVERY + HOLE_AT) * page),
					   (off_t)(HOLE_LEN * page)),
				 0);
	/* The holes must be seen as such, or the zero pieces go untested. */
	if (holes)
		ck_assert_int_eq(lseek(fd, HOLE_AT * page, SEEK_DATA),
				 (off_t)((HOLE_AT + HOLE_LEN) * page));
	return fd;
}

/* Counts uffdd's placer threads in *arg. */
static bool count_placer(pid_t pid, const char *tid, void *arg)
{
	*(int *)arg += test_daemon_placer(pid, tid);
	return true;
}

/* The placer threads of uffdd (pid). */
static int placers(pid_t pid)
{
	int n = 0;

	test_each_task(pid, count_placer, &n);
	return n;
}

/* uffdd --workers 2, which must have its placer (else nothing here is
 * placed by two threads), and fn in a client over a source (with holes when
 * holes): it must exit 0. */
static void run(int (*fn)(const struct test_daemon *, int), bool holes)
{
	const char *const args[] = { "--workers", WORKERS, NULL };
	struct test_daemon d;
	int st;

	test_daemon_start(&d, args);
	ck_assert_int_eq(placers(d.pid), PLACERS);
	int fd = make_source(holes);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(fn(&d, fd));
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_int_eq(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), 0);
	close(fd);
	test_daemon_stop(&d);
}

/* ---- 64 MiB pushed by two threads ---- */

/*
 * The push places the whole region before the process touches a page: each
 * page once (pushed, copied or zeroed as the source has it, no EEXIST), and
 * every byte as the source has it.
 */
static int client_push(const struct test_daemon *d, int fd)
{
	struct pin_client_stats st;
	struct test_conn k;
	size_t holes = 0;

	REQUIRE(conn_open(d, &k) == 0);
	uint8_t *base = test_map_region(NPAGES * page);
	REQUIRE(base);
	REQUIRE(add_region(&k, base, NPAGES, fd) == 0);
	REQUIRE_EQ(pin_client_wait_populated(k.c, base, NPAGES * page, WAIT_MS * test_time_scale()),
		   0);
	REQUIRE_EQ(pin_client_stats(k.c, 0, &st), 0);
	for (size_t i = 0; i < NPAGES; i++)
		holes += in_hole(i);
	REQUIRE_EQ(holes, HOLES * HOLE_LEN);
	REQUIRE_EQ(st.faults, 0);
	REQUIRE_EQ(st.pages_pushed, NPAGES);
	REQUIRE_EQ(st.pages_copied, NPAGES - holes);
	REQUIRE_EQ(st.pages_zeroed, holes);
	REQUIRE_EQ(st.bytes_copied, (NPAGES - holes) * page);
	REQUIRE_EQ(st.eexist, 0);
	REQUIRE_EQ(st.pages_total, NPAGES);
	REQUIRE_EQ(st.pages_populated, NPAGES);
	for (size_t i = 0; i < NPAGES; i++)
		REQUIRE(in_hole(i) ? test_page_zero(base, i) : test_page_ok(base, i, SEED));
	/* Read, nothing faulted: every page was in place. */
	REQUIRE_EQ(pin_client_stats(k.c, 0, &st), 0);
	REQUIRE_EQ(st.faults, 0);
	test_conn_close(&k);
	return 0;
}

START_TEST(push_64m_two_placers)
{
	run(client_push, true);
}
END_TEST

/* ---- fork, mremap and MADV_DONTNEED while the push places ---- */

/* The parts of the region: discarded, moved, and the rest kept. */
#define DN_FROM 4096
#define DN_LEN	512
#define MV_FROM 8192
#define MV_LEN	4096

/* Page i of the source, mapped at p (page i of the region was there). */
static bool page_is(const uint8_t *p, size_t i)
{
	const uint64_t *w = (const uint64_t *)p;

	for (size_t j = 0; j < page / 8; j++)
		if (w[j] != test_pattern(i * page + j * 8, SEED))
			return false;
	return true;
}

/*
 * As soon as the region is added (the push under way), the process forks a
 * child that reads every page, discards DN_LEN pages, and moves MV_LEN pages
 * elsewhere; then it reads every page.  The child's pages are the source's;
 * the parent's too, but the discarded ones: zero, as a discard of anonymous
 * memory leaves them (the daemon places nothing there afterwards); and the
 * moved ones are the source's at their new address.
 */
static int client_events(const struct test_daemon *d, int fd)
{
	struct test_conn k;

	REQUIRE(conn_open(d, &k) == 0);
	uint8_t *base = test_map_region(NPAGES * page);
	uint8_t *spot = mmap(NULL, MV_LEN * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(base && spot != MAP_FAILED);
	REQUIRE(add_region(&k, base, NPAGES, fd) == 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		for (size_t i = 0; i < NPAGES; i++)
			if (!page_is(base + i * page, i))
				_exit(1);
		_exit(0);
	}
	REQUIRE(madvise(base + DN_FROM * page, DN_LEN * page, MADV_DONTNEED) == 0);
	REQUIRE(mremap(base + MV_FROM * page, MV_LEN * page, MV_LEN * page,
		       MREMAP_MAYMOVE | MREMAP_FIXED, spot) == spot);
	for (size_t i = 0; i < NPAGES; i++) {
		if (i >= MV_FROM && i < MV_FROM + MV_LEN)
			REQUIRE(page_is(spot + (i - MV_FROM) * page, i));
		else if (i >= DN_FROM && i < DN_FROM + DN_LEN)
			REQUIRE(test_page_zero(base, i));
		else
			REQUIRE(page_is(base + i * page, i));
	}
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid);
	REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	test_conn_close(&k);
	return 0;
}

START_TEST(placing_under_fork_mremap_dontneed)
{
	run(client_events, false);
}
END_TEST

/* ---- a run over pages in place ---- */

/* The process reads every STRIDE-th page first: each fault places its page
 * alone (the next fault is no sequel of it). */
#define STRIDE 7

/*
 * With no push, the process faults on every STRIDE-th page, then replays a
 * working set of the whole region: its runs go over the pages in place, in
 * pieces that skip them.  Each missing page is placed once, by the replay
 * (pushed), none found there (no EEXIST), and every byte is the source's.
 */
static int client_skip(const struct test_daemon *d, int fd)
{
	struct pin_client_stats st;
	char dir[] = "/tmp/test-place-XXXXXX", path[64];
	struct test_conn k;
	size_t touched = 0, holes = 0;

	REQUIRE(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/working-set", dir);
	REQUIRE(conn_open(d, &k) == 0);
	uint8_t *base = test_map_region(NPAGES * page);
	REQUIRE(base);
	REQUIRE(add_region_flags(&k, base, NPAGES, fd, PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (size_t i = 0; i < NPAGES; i += STRIDE, touched++)
		REQUIRE(in_hole(i) ? test_page_zero(base, i) : test_page_ok(base, i, SEED));
	FILE *f = fopen(path, "w");
	REQUIRE(f);
	fprintf(f, "uffdd-working-set 1\npage-size %zu\nrun %p 0x%zx\nend 1\n", page, (void *)base,
		NPAGES * page);
	REQUIRE(fclose(f) == 0);
	REQUIRE_EQ(pin_client_working_set_replay(k.c, dir), NPAGES - touched);
	REQUIRE_EQ(pin_client_stats(k.c, 0, &st), 0);
	for (size_t i = 0; i < NPAGES; i++)
		holes += in_hole(i);
	REQUIRE_EQ(st.faults, touched);
	REQUIRE_EQ(st.pages_pushed, NPAGES - touched);
	REQUIRE_EQ(st.pages_copied + st.pages_zeroed, NPAGES);
	REQUIRE_EQ(st.pages_zeroed, holes);
	REQUIRE_EQ(st.eexist, 0);
	REQUIRE_EQ(st.pages_populated, NPAGES);
	for (size_t i = 0; i < NPAGES; i++)
		REQUIRE(in_hole(i) ? test_page_zero(base, i) : test_page_ok(base, i, SEED));
	REQUIRE_EQ(pin_client_stats(k.c, 0, &st), 0);
	REQUIRE_EQ(st.faults, touched);
	REQUIRE(unlink(path) == 0 && rmdir(dir) == 0);
	test_conn_close(&k);
	return 0;
}

START_TEST(replay_skips_pages_in_place)
{
	run(client_skip, true);
}
END_TEST

/* ---- a push before the range is registered ---- */

/* Pages of each half: the late one, registered after its push met nothing,
 * and the one registered at once. */
#define EARLY_PAGES 256

/* A region of n pages at base over fd at offset off, added on the word of
 * the handed-over userfaultfd (PIN_CLIENT_REGION_REGISTERED: libpin checks
 * nothing for a descriptor it did not open), pushed. */
static int add_on_word(struct pin_client *c, void *base, size_t n, int fd, uint64_t off)
{
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = base,
		.len = n * page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_REGISTERED,
		.fd = fd,
		.offset = off,
	};

	return pin_client_region_add(c, &r);
}

/*
 * CRIU hands a task's userfaultfd over before its restorer moves the
 * mappings into place and registers them: a push that early meets no
 * registered mapping (ENOENT).  Here the lower half's region is added
 * before its range is registered, the upper half's after: the push tries
 * the lower one first, so when the upper one is in, the lower one's push
 * has met ENOENT.  Then the lower half is registered and Goodbye must place
 * it (pushed again), not end the session as if it needed no page: closing
 * the userfaultfd leaves its pages to read as zeros.
 */
static int client_early(const struct test_daemon *d, int fd)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMAP | PIN_UFFD_FEATURE_EVENT_REMOVE |
			    PIN_UFFD_FEATURE_EVENT_UNMAP,
	};
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "test-early" };
	struct pin_client_stats st;
	struct pin_uffd *u, *h;
	struct pin_client *c;

	REQUIRE(pin_uffd_new(&uo, &u) == 0);
	int dup_fd = fcntl(pin_uffd_fd(u), F_DUPFD_CLOEXEC, 0);
	REQUIRE(dup_fd >= 0);
	REQUIRE(pin_uffd_from_fd(dup_fd, uo.features, &h) == 0);
	REQUIRE(pin_client_connect(&co, &c) == 0);
	REQUIRE(pin_client_handover(c, h) == 0);
	uint8_t *late = test_map_region(2 * EARLY_PAGES * page);
	REQUIRE(late);
	uint8_t *now = late + EARLY_PAGES * page;
	REQUIRE(add_on_word(c, late, EARLY_PAGES, fd, 0) == 0);
	REQUIRE(pin_uffd_register(u, now, EARLY_PAGES * page, PIN_UFFD_REGISTER_MISSING, NULL) ==
		0);
	REQUIRE(add_on_word(c, now, EARLY_PAGES, fd, EARLY_PAGES * page) == 0);
	REQUIRE_EQ(
		pin_client_wait_populated(c, now, EARLY_PAGES * page, WAIT_MS * test_time_scale()),
		0);
	REQUIRE_EQ(pin_client_stats(c, 0, &st), 0);
	REQUIRE_EQ(st.pages_populated, EARLY_PAGES);
	REQUIRE(pin_uffd_register(u, late, EARLY_PAGES * page, PIN_UFFD_REGISTER_MISSING, NULL) ==
		0);
	REQUIRE_EQ(pin_client_finish(c, &st), 0);
	REQUIRE_EQ(st.faults, 0);
	REQUIRE_EQ(st.pages_pushed, 2 * EARLY_PAGES);
	REQUIRE_EQ(st.pages_copied, 2 * EARLY_PAGES);
	REQUIRE_EQ(st.eexist, 0);
	REQUIRE_EQ(st.pages_populated, 2 * EARLY_PAGES);
	/* Every copy of the userfaultfd closed: a page not placed reads as
	 * zeros now, not as a fault nobody serves. */
	pin_client_free(c);
	pin_uffd_free(h);
	pin_uffd_free(u);
	for (size_t i = 0; i < 2 * EARLY_PAGES; i++)
		REQUIRE(test_page_ok(late, i, SEED));
	return 0;
}

START_TEST(push_before_registration_placed_at_goodbye)
{
	run(client_early, false);
}
END_TEST

/* A case's bound: 64 MiB under valgrind takes minutes. */
#define CASE_TIMEOUT_S 600

Suite *test_suite(void)
{
	Suite *s = suite_create("place");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, push_64m_two_placers, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, placing_under_fork_mremap_dontneed, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, replay_skips_pages_in_place, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, push_before_registration_placed_at_goodbye, CASE_TIMEOUT_S);
	return s;
}

const char *test_skip_reason(void)
{
	return test_daemon_skip_reason();
}
