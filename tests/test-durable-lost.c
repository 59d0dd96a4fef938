// SPDX-License-Identifier: MIT
/*
 * Suite durable, area durable-lost: pages a source could not give are not
 * forgotten at a restart (issue 13).  uffdd runs under the fake systemd of
 * manager.c, is killed -9 and restarted with its fd store.  A client whose
 * userfaultfd lacks the POISON feature (as CRIU's restorer opens them) adds
 * a region of a file, reads page 0 and cuts the file to that page.  With
 * this kernel's UFFDIO_POISON the pages past the cut are poisoned, and after
 * the restart the Goodbye still says -EIO with the one page counted
 * unreadable.  Under tests/no-poison (UFFDIO_POISON refused, as before Linux
 * 6.6) the session is stranded: the thread that touched a lost page waits;
 * after the restart it still waits (its write(2) of the page into a pipe
 * never happens: a zero page would show there), the Goodbye says
 * -ENOTRECOVERABLE, and the successor keeps the userfaultfd open, even with
 * the client gone before the kill, until the process is killed.
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
#include "manager.h"
#include "test-common.h"
#include "uffdd-harness.h"

static size_t page;

#define SRC_PAGES 4
#define SRC_SEED  29
#define LOST_PAGE 2 /* touched after the cut: gone from the file */
/* A bounded wait, natively, in 10 ms steps (times test_time_scale()): a
 * bound that fails the test, not a timing measured. */
#define WAIT_STEPS 1000
#define STEP_MS	   10
/* The raw Goodbye's seq: past any the library used, before the raw StatsGets. */
#define BYE_SEQ	 (LOST_RAW_SEQ0 - 1)
#define REPLY_MS 10000
/* uffdd's UFFDD_HOLD_ENV: it stops itself at the point named. */
#define HOLD_ENV "UFFDD_HOLD"
/* Far above anything the store needs here. */
#define STORE_MAX 4096

/* How the client leaves while its thread waits. */
enum leave { LEAVE_GOODBYE, LEAVE_HANG_UP };

struct lost {
	int src;     /* the source file */
	int res[2];  /* the thread's write(2) of the lost page */
	int up[2];   /* client -> test: a step reached, or its verdict */
	int down[2]; /* test -> client: go on */
	enum leave leave;
	uint8_t *base; /* the client's region */
};

static struct manager *mgr;
static struct test_daemon d; /* its dir and socket: the manager's */

static unsigned int wait_ms(void)
{
	return REPLY_MS * test_time_scale();
}

/* uffdd under the manager; through $NO_POISON with no_poison. */
static void up(bool no_poison)
{
	const char *tmp = getenv("TMPDIR");
	static const char *const args[] = { "--workers", "2", NULL };
	const char *exe = getenv("UFFDD");

	if (no_poison) {
		exe = getenv("NO_POISON");
		ck_assert_msg(exe && *exe, "NO_POISON (tests/no-poison) is not set");
		ck_assert_int_eq(setenv("NO_POISON_EXEC", getenv("UFFDD"), 1), 0);
	}
	snprintf(d.dir, sizeof(d.dir), "%s/uffdd-lost-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(d.dir));
	struct manager_opts o = { .dir = d.dir,
				  .exe = exe,
				  .args = args,
				  .store_max = STORE_MAX,
				  .ready_ms = wait_ms() };
	ck_assert_int_eq(manager_new(&o, &mgr), 0);
	ck_assert_msg(manager_start(mgr) == 0, "uffdd did not start under the manager");
	snprintf(d.sock, sizeof(d.sock), "%s", manager_socket(mgr));
}

static void down(void)
{
	ck_assert_int_eq(manager_wait_count(mgr, "s[0-9]*", 0, wait_ms()), 0);
	ck_assert_int_eq(manager_stop(mgr), 0);
	manager_free(mgr);
	mgr = NULL;
	ck_assert_int_eq(rmdir(d.dir), 0);
}

/* A Goodbye that waits for the end: its reply (error, stats). */
static Uffdd__Msg *raw_goodbye(int sock)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Goodbye g = UFFDD__GOODBYE__INIT;

	g.has_wait = true;
	g.wait = true;
	m.body_case = UFFDD__MSG__BODY_GOODBYE;
	m.goodbye = &g;
	return lost_client_request(sock, &m, BYE_SEQ);
}

/* Once the daemon counted a page unreadable, the session's stats are exact:
 * one page unreadable, populated pages in place (poisoned ones count). */
static int unreadable_counted(const struct test_conn *k, uint64_t populated)
{
	Uffdd__Msg *rep = lost_client_stats_unreadable(k, populated);

	REQUIRE(rep);
	REQUIRE_EQ(rep->reply->error, 0);
	REQUIRE_EQ(rep->reply->stats->unreadable, 1);
	REQUIRE_EQ(rep->reply->stats->pages_populated, populated);
	pin_proto_free(rep);
	return 0;
}

/* The client's beginning (lost-client.h) over t->src, its region at t->base. */
static int client_begin(struct lost *t, struct test_conn *k)
{
	struct lost_source src = { .fd = t->src, .pages = SRC_PAGES, .seed = SRC_SEED };

	return lost_client_begin(k, d.sock, "lost", &src, &t->base);
}

/* In the client: tell the test a step is reached, wait until it says go. */
static int step(struct lost *t)
{
	char c = 's';

	REQUIRE_EQ(write(t->up[1], &c, 1), 1);
	REQUIRE_EQ(read(t->down[0], &c, 1), 1);
	return 0;
}

/* The test: the client reached its step (or sent its verdict, 0 when every
 * check held). */
static char await(struct lost *t)
{
	struct pollfd p = { .fd = t->up[0], .events = POLLIN };
	char c = 1;

	ck_assert_msg(poll(&p, 1, (int)wait_ms()) == 1, "the client said nothing in %u ms",
		      wait_ms());
	ck_assert_int_eq(read(t->up[0], &c, 1), 1);
	return c;
}

static void go(struct lost *t)
{
	ck_assert_int_eq(write(t->down[1], "g", 1), 1);
}

static void kill9_restart(void)
{
	ck_assert_msg(manager_kill9_restart(mgr) == 0, "kill -9 and restart of uffdd failed");
}

/* The pipes and the source of a case; the client at pid. */
static pid_t start(struct lost *t, int (*fn)(const struct test_daemon *, void *))
{
	t->src = test_pattern_source(d.dir, "shrinks", SRC_PAGES * page, SRC_SEED);
	ck_assert_int_ge(t->src, 0);
	ck_assert_int_eq(pipe(t->res), 0);
	ck_assert_int_eq(pipe(t->up), 0);
	ck_assert_int_eq(pipe(t->down), 0);
	pid_t pid = test_spawn(fn, &d, t);
	close(t->res[1]);
	close(t->up[1]);
	close(t->down[0]);
	return pid;
}

static void end(struct lost *t)
{
	close(t->res[0]);
	close(t->up[0]);
	close(t->down[1]);
	close(t->src);
}

/* The client's beginning; then the lost page and the others past the cut
 * raise SIGBUS (poisoned with it, no fault each). */
static int poisoned_begin(struct lost *t, struct test_conn *k)
{
	REQUIRE(client_begin(t, k) == 0);
	REQUIRE(test_read_bus(t->base + LOST_PAGE * page));
	for (size_t i = 1; i < SRC_PAGES; i++)
		REQUIRE(test_read_bus(t->base + i * page));
	return 0;
}

/* The Goodbye says -EIO with unreadable pages counted and all in place. */
static int goodbye_eio(const struct test_conn *k, uint64_t unreadable)
{
	Uffdd__Msg *rep = raw_goodbye(pin_client_fd(k->c));

	REQUIRE(rep);
	REQUIRE_EQ(rep->reply->error, -EIO);
	REQUIRE_EQ(rep->reply->stats->unreadable, unreadable);
	REQUIRE_EQ(rep->reply->stats->pages_populated, SRC_PAGES);
	pin_proto_free(rep);
	return 0;
}

/*
 * The lost page and the others past the cut raise SIGBUS (poisoned with it,
 * no fault each); the daemon is killed; the successor answers the Goodbye
 * -EIO, one page unreadable, all four populated, page 0 as it was.
 */
static int client_poisoned(const struct test_daemon *dm, void *arg)
{
	struct lost *t = arg;
	struct test_conn k;

	(void)dm;
	REQUIRE(poisoned_begin(t, &k) == 0);
	REQUIRE(unreadable_counted(&k, SRC_PAGES) == 0);
	REQUIRE(step(t) == 0);
	REQUIRE(goodbye_eio(&k, 1) == 0);
	REQUIRE(test_page_ok(t->base, 0, SRC_SEED));
	REQUIRE(test_read_bus(t->base + LOST_PAGE * page));
	test_conn_close(&k);
	return 0;
}

START_TEST(poisoned_then_restart)
{
	struct lost t = { .leave = LEAVE_GOODBYE };

	up(false);
	pid_t pid = start(&t, client_poisoned);
	await(&t);
	kill9_restart();
	go(&t);
	ck_assert_int_eq(test_reap(pid), 0);
	end(&t);
	down();
}
END_TEST

/*
 * The daemon dies with the lost page counted in the record and not yet
 * poisoned (held at "lost-recorded"): the thread on it still waits.  The
 * successor wakes it, meets the page the file lost (a hole it is not),
 * poisons it and counts it again: the access raises SIGBUS, the Goodbye
 * says -EIO with two pages unreadable (more lost, never fewer), and all
 * four are in place.
 */
static int client_poisoned_late(const struct test_daemon *dm, void *arg)
{
	struct lost *t = arg;
	struct test_conn k;

	(void)dm;
	REQUIRE(poisoned_begin(t, &k) == 0);
	REQUIRE(goodbye_eio(&k, 2) == 0);
	REQUIRE(test_page_ok(t->base, 0, SRC_SEED));
	test_conn_close(&k);
	return 0;
}

START_TEST(poisoned_when_daemon_dies)
{
	struct lost t = { .leave = LEAVE_GOODBYE };

	ck_assert_int_eq(setenv(HOLD_ENV, "lost-recorded", 1), 0);
	up(false);
	ck_assert_int_eq(unsetenv(HOLD_ENV), 0);
	pid_t pid = start(&t, client_poisoned_late);
	ck_assert_msg(manager_wait_stopped(mgr) == 0, "uffdd did not hold at lost-recorded");
	kill9_restart();
	ck_assert_int_eq(test_reap(pid), 0);
	end(&t);
	down();
}
END_TEST

/* Reads the lost page into the pipe: it must never return. */
static void *toucher(void *arg)
{
	struct lost *t = arg;

	(void)!write(t->res[1], t->base + LOST_PAGE * page, sizeof(uint64_t));
	return NULL;
}

/* The client's part: its thread stranded on the lost page, the restart,
 * then its leave (a Goodbye after the restart, or a hang-up before it). */
static int client_steps(struct lost *t)
{
	struct pollfd p = { .fd = t->res[0], .events = POLLIN };
	struct test_conn k;
	pthread_t th;

	REQUIRE(client_begin(t, &k) == 0);
	REQUIRE(pthread_create(&th, NULL, toucher, t) == 0);
	/* Counted unreadable, placed nothing: only page 0 is in. */
	REQUIRE(unreadable_counted(&k, 1) == 0);
	REQUIRE_EQ(poll(&p, 1, 0), 0);
	if (t->leave == LEAVE_HANG_UP)
		REQUIRE(shutdown(pin_client_fd(k.c), SHUT_RDWR) == 0);
	/* The test kills the daemon now. */
	REQUIRE(step(t) == 0);
	if (t->leave == LEAVE_GOODBYE) {
		Uffdd__Msg *rep = raw_goodbye(pin_client_fd(k.c));
		REQUIRE(rep);
		REQUIRE_EQ(rep->reply->error, -ENOTRECOVERABLE);
		pin_proto_free(rep);
	}
	REQUIRE_EQ(poll(&p, 1, 0), 0);
	REQUIRE_EQ(pthread_tryjoin_np(th, NULL), EBUSY);
	return 0;
}

/* The client: its verdict to the test, then it waits to be killed. */
static int client_stranded(const struct test_daemon *dm, void *arg)
{
	struct lost *t = arg;
	char verdict;

	(void)dm;
	close(t->up[0]);
	close(t->down[1]);
	verdict = (char)client_steps(t);
	if (write(t->up[1], &verdict, 1) != 1)
		return 1;
	for (;;)
		pause();
}

/* The session of process pid, listed by the daemon, and its faults
 * counted since the restart; false when not listed. */
static bool listed(pid_t pid, uint64_t *ret_faults)
{
	struct pin_client_stats st;

	if (!lost_client_listed(d.sock, pid, &st))
		return false;
	*ret_faults = st.faults;
	return true;
}

/* The daemon's userfaultfds: want of them, within the bound. */
static void wait_uffds(int want)
{
	const char *uffd = "anon_inode:\\[userfaultfd\\]";
	int n = -1;

	for (int i = 0; i < WAIT_STEPS * (int)test_time_scale(); i++) {
		n = test_count_fd_links(manager_pid(mgr), uffd);
		if (n == want)
			break;
		test_sleep_ms(STEP_MS);
	}
	ck_assert_msg(n == want, "uffdd holds %d userfaultfds, not %d", n, want);
}

static void run(enum leave leave)
{
	struct lost t = { .leave = leave };
	uint64_t faults = 0, word;

	up(true);
	pid_t pid = start(&t, client_stranded);
	ck_assert_int_eq(await(&t), 's');
	/* A hang-up closed the connection, the session stays (finish.c). */
	if (leave == LEAVE_HANG_UP)
		ck_assert_int_eq(manager_wait_count(mgr, "s*.conn", 0, wait_ms()), 0);
	kill9_restart();
	/* The successor kept the session and its userfaultfd; the takeover's
	 * UFFDIO_WAKE made the thread fault again, and it was left waiting
	 * (counted, not placed). */
	for (int i = 0; i < WAIT_STEPS * (int)test_time_scale(); i++) {
		ck_assert_msg(listed(pid, &faults), "the successor dropped the stranded session");
		if (faults)
			break;
		test_sleep_ms(STEP_MS);
	}
	ck_assert_uint_eq(faults, 1);
	wait_uffds(1);
	go(&t);
	ck_assert_int_eq(await(&t), 0);
	wait_uffds(1);
	ck_assert(listed(pid, &faults));
	/* Killed, its process is gone: so is its session. */
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(test_reap(pid), 128 + SIGKILL);
	wait_uffds(0);
	ck_assert(!listed(pid, &faults));
	/* The thread never read a byte of the lost page. */
	ck_assert_int_eq(read(t.res[0], &word, sizeof(word)), 0);
	end(&t);
	down();
}

/* The client says Goodbye after the restart: -ENOTRECOVERABLE at once. */
START_TEST(stranded_then_restart)
{
	run(LEAVE_GOODBYE);
}
END_TEST

/* The client hung up before the kill: the successor keeps the session
 * without its connection, never closing the userfaultfd. */
START_TEST(stranded_hang_up_then_restart)
{
	run(LEAVE_HANG_UP);
}
END_TEST

#define CASE_TIMEOUT_S 120

Suite *test_suite(void)
{
	Suite *s = suite_create("durable-lost");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, poisoned_then_restart, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, poisoned_when_daemon_dies, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, stranded_then_restart, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, stranded_hang_up_then_restart, CASE_TIMEOUT_S);
	return s;
}

const char *test_skip_reason(void)
{
	if (!getenv("NO_POISON"))
		return "NO_POISON (tests/no-poison) is not set; run through meson test";
	return test_daemon_skip_reason();
}
