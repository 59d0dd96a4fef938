// SPDX-License-Identifier: MIT
/*
 * Suite daemon, area stranded: a client whose userfaultfd lacks the POISON
 * feature, as CRIU's restorer opens them, and a source that fails under it
 * (a file cut short once added).  The daemon must never make up a page.  A
 * kernel that has UFFDIO_POISON poisons for such a userfaultfd too: the
 * client meets SIGBUS there, and its Goodbye -EIO.  On one that refuses the
 * ioctl (before Linux 6.6: uffdd runs under tests/no-poison, a seccomp filter
 * failing it with EINVAL) the session is stranded: the thread that touched
 * a page the source can no longer give waits in the kernel, counted (stats
 * unreadable), not placed; the Goodbye says -ENOTRECOVERABLE; and the
 * session, its userfaultfd open, outlives its client's Goodbye or hang-up
 * until the process is killed.  The thread reads the page through write(2)
 * into a pipe, so that a zero page, had one been placed, would show there.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "libpin-private.h"
#include "lost-client.h"
#include "test-common.h"
#include "uffdd-harness.h"

static size_t page;

#define SRC_PAGES 4
#define SRC_SEED  13
#define LOST_PAGE 2 /* touched after the cut: gone from the file */
/* How long a wait on the daemon's state may take, in 10 ms steps (times
 * test_time_scale()): a bound that fails the test, not a timing measured. */
#define WAIT_STEPS 1000

/* How the client leaves while its thread waits. */
enum leave { LEAVE_GOODBYE, LEAVE_HANG_UP };

struct stranded {
	int src;     /* the source file */
	int res[2];  /* the thread's write(2) of the lost page */
	int done[2]; /* the client's verdict: one byte, 0 when all held */
	enum leave leave;
	uint8_t *base; /* the client's region */
};

/* Reads the lost page into the pipe: it must never return. */
static void *toucher(void *arg)
{
	struct stranded *t = arg;

	(void)!write(t->res[1], t->base + LOST_PAGE * page, sizeof(uint64_t));
	return NULL;
}

/* The client's beginning (lost-client.h) over t->src, its region at t->base. */
static int client_begin(const struct test_daemon *d, struct stranded *t, struct test_conn *k)
{
	struct lost_source src = { .fd = t->src, .pages = SRC_PAGES, .seed = SRC_SEED };

	return lost_client_begin(k, d->sock, "stranded", &src, &t->base);
}

/* Once the daemon counted the lost page unreadable, the session's stats are
 * exact: two faults (page 0 and the lost page), page 0 copied, no page
 * zeroed, populated pages in place (poisoned ones count): 0 when they are. */
static int unreadable_counted(const struct test_conn *k, uint64_t populated)
{
	Uffdd__Msg *rep = lost_client_stats_unreadable(k, populated);

	REQUIRE(rep);
	REQUIRE_EQ(rep->reply->error, 0);
	const Uffdd__Stats *st = rep->reply->stats;
	REQUIRE_EQ(st->unreadable, 1);
	REQUIRE_EQ(st->faults, 2);
	REQUIRE_EQ(st->pages_copied, 1);
	REQUIRE_EQ(st->pages_zeroed, 0);
	REQUIRE_EQ(st->pages_populated, populated);
	pin_proto_free(rep);
	return 0;
}

/* The client's part up to its leave: 0 when every check held. */
static int client_steps(const struct test_daemon *d, struct stranded *t)
{
	struct test_conn k;
	pthread_t th;

	REQUIRE(client_begin(d, t, &k) == 0);
	REQUIRE(pthread_create(&th, NULL, toucher, t) == 0);
	/* The daemon handled its fault: counted unreadable, placed nothing. */
	REQUIRE(unreadable_counted(&k, 1) == 0);
	/* The thread waits: nothing in the pipe, and it has not returned. */
	struct pollfd p = { .fd = t->res[0], .events = POLLIN };
	REQUIRE_EQ(poll(&p, 1, 0), 0);
	REQUIRE_EQ(pthread_tryjoin_np(th, NULL), EBUSY);
	if (t->leave == LEAVE_GOODBYE) {
		struct pin_client_stats bye;
		/* At once, for the process lives: -ENOTRECOVERABLE, and the
		 * counters. */
		REQUIRE_EQ(pin_client_finish(k.c, &bye), -ENOTRECOVERABLE);
		REQUIRE_EQ(bye.pages_copied, 1);
		REQUIRE_EQ(bye.pages_zeroed, 0);
	} else {
		REQUIRE(shutdown(pin_client_fd(k.c), SHUT_RDWR) == 0);
	}
	REQUIRE_EQ(poll(&p, 1, 0), 0);
	return 0;
}

/* The client: its verdict to the test, then it waits to be killed. */
static int client_stranded(const struct test_daemon *d, void *arg)
{
	struct stranded *t = arg;
	uint8_t verdict;

	close(t->done[0]);
	verdict = (uint8_t)client_steps(d, t);
	if (write(t->done[1], &verdict, 1) != 1)
		return 1;
	for (;;)
		pause();
}

/* Wait until the daemon holds want descriptors whose link matches pattern. */
static void wait_links(pid_t pid, const char *pattern, int want)
{
	int n = -1;

	for (int i = 0; i < WAIT_STEPS * (int)test_time_scale() &&
			(n = test_count_fd_links(pid, pattern)) != want;
	     i++)
		test_sleep_ms(10);
	ck_assert_msg(n == want, "uffdd holds %d descriptors like %s, not %d", n, pattern, want);
}

static void run(enum leave leave)
{
	struct test_daemon d;
	struct stranded t = { .leave = leave };
	struct pin_client_stats st;
	uint8_t verdict = 1;
	uint64_t word;

	/* A kernel that refuses UFFDIO_POISON, as before Linux 6.6. */
	test_uffdd_wrap("NO_POISON", "NO_POISON_EXEC");
	test_daemon_start(&d, NULL);
	test_uffdd_unwrap();
	t.src = test_pattern_source(d.dir, "shrinks", SRC_PAGES * page, SRC_SEED);
	ck_assert_int_ge(t.src, 0);
	ck_assert_int_eq(pipe(t.res), 0);
	ck_assert_int_eq(pipe(t.done), 0);
	pid_t pid = test_spawn(client_stranded, &d, &t);
	close(t.done[1]);
	close(t.res[1]);
	ck_assert_int_eq(read(t.done[0], &verdict, 1), 1);
	ck_assert_int_eq(verdict, 0);
	/* The client is gone from the daemon (Goodbye, or hang-up): its
	 * connection closed, its session and userfaultfd kept. */
	wait_links(d.pid, "socket:*", 1);
	wait_links(d.pid, "anon_inode:\\[userfaultfd\\]", 1);
	ck_assert(lost_client_listed(d.sock, pid, &st));
	ck_assert_uint_eq(st.pages_copied, 1);
	ck_assert_uint_eq(st.pages_zeroed, 0);
	/* Killed, its process is gone: so is its session. */
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(test_reap(pid), 128 + SIGKILL);
	wait_links(d.pid, "anon_inode:\\[userfaultfd\\]", 0);
	ck_assert(!lost_client_listed(d.sock, pid, &st));
	/* The thread never read a byte of the lost page. */
	ck_assert_int_eq(read(t.res[0], &word, sizeof(word)), 0);
	close(t.res[0]);
	close(t.done[0]);
	close(t.src);
	test_daemon_stop(&d);
}

/* The client says Goodbye (and waits for the end): -ENOTRECOVERABLE at once. */
START_TEST(stranded_goodbye)
{
	run(LEAVE_GOODBYE);
}
END_TEST

/* The client hangs up without a Goodbye: the session stays all the same. */
START_TEST(stranded_hang_up)
{
	run(LEAVE_HANG_UP);
}
END_TEST

/*
 * This kernel's UFFDIO_POISON, for the same client: the lost page raises
 * SIGBUS, and so do the other pages the file no longer has (poisoned with
 * it, no fault each); page 0 stays; the counters say one fault of each
 * page touched before, one page copied, none zeroed, one unreadable, all
 * four populated; the Goodbye says -EIO (every page in place, some lost).
 */
static int client_poisoned(const struct test_daemon *d, void *arg)
{
	struct stranded *t = arg;
	struct pin_client_stats bye;
	struct test_conn k;

	REQUIRE(client_begin(d, t, &k) == 0);
	REQUIRE(test_read_bus(t->base + LOST_PAGE * page));
	for (size_t i = 1; i < SRC_PAGES; i++)
		REQUIRE(test_read_bus(t->base + i * page));
	REQUIRE(test_page_ok(t->base, 0, SRC_SEED));
	REQUIRE(unreadable_counted(&k, SRC_PAGES) == 0);
	REQUIRE_EQ(pin_client_finish(k.c, &bye), -EIO);
	REQUIRE_EQ(bye.pages_copied, 1);
	REQUIRE_EQ(bye.pages_zeroed, 0);
	test_conn_close(&k);
	return 0;
}

START_TEST(poisoned_without_the_feature)
{
	struct test_daemon d;
	struct stranded t = { .leave = LEAVE_GOODBYE };

	test_daemon_start(&d, NULL);
	t.src = test_pattern_source(d.dir, "shrinks", SRC_PAGES * page, SRC_SEED);
	ck_assert_int_ge(t.src, 0);
	ck_assert_int_eq(test_reap(test_spawn(client_poisoned, &d, &t)), 0);
	close(t.src);
	test_daemon_stop(&d);
}
END_TEST

#define CASE_TIMEOUT_S 120

Suite *test_suite(void)
{
	Suite *s = suite_create("stranded");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, stranded_goodbye, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, stranded_hang_up, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, poisoned_without_the_feature, CASE_TIMEOUT_S);
	return s;
}

const char *test_skip_reason(void)
{
	return test_daemon_skip_reason();
}
