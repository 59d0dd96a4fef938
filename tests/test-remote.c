// SPDX-License-Identifier: MIT
/*
 * Area remote (suite daemon, issue 13): regions whose pages uffdd asks of a
 * CRIU page server over a socket the client connected and handed over
 * (SOURCE_PAGE_SERVER).  The server (remote-harness.c) is a child of the
 * test that speaks CRIU's page-server protocol (criu/page-xfer.c) over
 * loopback TCP, its pages patterned by their address (the word at task
 * address R + o is test_pattern(o, seed)), and reports what it was asked:
 * GETs, pages, pages asked twice, and the most GETs it held unanswered at
 * once.  It can hold its first answers until that many GETs came, hang up
 * after some answers, or answer one GET with another address (a lie).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "loopback.h"
#include "remote-harness.h"
#include "test-common.h"
#include "uffdd-harness.h"

static size_t page;

/* Run the server with o and a client with cl; their reports.  With
 * restart, uffdd runs under its supervisor, and its serving process is
 * killed (SIGKILL) when the client has read half of its pages. */
static void run_restart(const struct server_opts *o, struct client *cl, struct report *rp,
			struct counts *n, bool restart)
{
	struct test_daemon d;
	struct server s;
	int p[2], h[2] = { -1, -1 }, g[2] = { -1, -1 }, st;
	char b;

	page = (size_t)sysconf(_SC_PAGESIZE);
	if (restart)
		test_daemon_start_supervised(&d, NULL);
	else
		test_daemon_start(&d, NULL);
	server_start(&s, o);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	if (restart) {
		ck_assert_int_eq(pipe2(h, O_CLOEXEC), 0);
		ck_assert_int_eq(pipe2(g, O_CLOEXEC), 0);
	}
	cl->port = s.port;
	cl->report = p[1];
	cl->half = h[1];
	cl->go = g[0];
	pid_t pid = client_spawn(&d, cl);
	close(p[1]);
	if (restart) {
		ck_assert_int_eq(read(h[0], &b, 1), 1);
		ck_assert_int_eq(kill(remote_serving_child(d.pid), SIGKILL), 0);
		ck_assert_int_eq(write(g[1], "g", 1), 1);
		for (int i = 0; i < 2; i++) {
			close(h[i]);
			close(g[i]);
		}
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the client failed");
	ck_assert_int_eq(test_read_all(p[0], n, sizeof(*n)), true);
	close(p[0]);
	/* The session ends with its client: the daemon ends the connection
	 * (PS_IOV_CLOSE), or cuts it when it broke or was lost. */
	server_end(&s, rp);
	test_daemon_stop(&d);
}

static void run(const struct server_opts *o, struct client *cl, struct report *rp, struct counts *n)
{
	run_restart(o, cl, rp, n, false);
}

#define NPAGES 2048 /* 8 MiB */

/*
 * Faults without push against a server that may hang up after
 * hang_up_after answers or lie at answer lie_at (-1: neither), pages that
 * may be poisoned counted, the daemon restarted at half if restart.
 */
static void run_faulting(long hang_up_after, long lie_at, bool restart, struct report *rp,
			 struct counts *n)
{
	uint64_t seed = test_seed();
	struct server_opts o = { NPAGES, seed, 256, 0, hang_up_after, lie_at, 1 };
	struct client cl = {
		.npages = NPAGES, .seed = seed, .flags = PIN_CLIENT_REGION_NO_PUSH, .may_bus = true
	};

	run_restart(&o, &cl, rp, n, restart);
}

/* A broken server: the pages it sent right are there and right, every
 * other page raises SIGBUS. */
static void run_broken_server(long hang_up_after, long lie_at)
{
	struct report rp = { 0 };
	struct counts n;

	run_faulting(hang_up_after, lie_at, false, &rp, &n);
	ck_assert_int_eq(n.wrong, 0);
	ck_assert_int_eq(n.ok, rp.pages);
	ck_assert_int_eq(n.bus, NPAGES - rp.pages);
	ck_assert_int_gt(n.bus, 0);
	/* Broken: cut, never closed. */
	ck_assert_int_eq(rp.closes, 0);
}

/*
 * Faults in random order, no push: every page right, each asked for once,
 * every page the server sent placed (the faults' readahead included), and
 * answers cut short (5 pages at most, as CRIU's at its buffers' ends) asked
 * on from where they stopped.
 */
START_TEST(random_faults_each_page_once)
{
	uint64_t seed = test_seed();
	struct server_opts o = { NPAGES, seed, 5, 0, -1, -1, 1 };
	struct client cl = { .npages = NPAGES, .seed = seed, .flags = PIN_CLIENT_REGION_NO_PUSH };
	struct report rp = { 0 };
	struct counts n;

	run(&o, &cl, &rp, &n);
	ck_assert_int_eq(n.ok, NPAGES);
	ck_assert_int_eq(n.wrong, 0);
	ck_assert_int_eq(rp.twice, 0);
	ck_assert_int_eq(rp.pages, NPAGES);
	ck_assert_uint_eq(n.copied, NPAGES);
	/* The session gone, the daemon ended the connection. */
	ck_assert_int_eq(rp.closes, 1);
}
END_TEST

/*
 * The push alone, its GETs in flight together: the server answers nothing
 * until 4 GETs came (what uffdd asks ahead of a push run: 4 MiB), so the
 * test ends only if they did.  32 MiB, each page asked once, every byte
 * right.
 */
START_TEST(push_many_gets_in_flight)
{
	uint64_t seed = test_seed();
	size_t npages = 8192;
	struct server_opts o = { npages, seed, 256, 4, -1, -1, 1 };
	struct client cl = { .npages = npages, .seed = seed, .wait = true };
	struct report rp = { 0 };
	struct counts n;

	run(&o, &cl, &rp, &n);
	ck_assert_int_eq(n.ok, (long)npages);
	ck_assert_int_eq(rp.twice, 0);
	ck_assert_int_eq(rp.pages, (long)npages);
	ck_assert_int_ge(rp.most_held, 4);
	/* 1 MiB each, none short, none asked twice. */
	ck_assert_int_eq(rp.gets, (long)npages / 256);
	ck_assert_int_eq(rp.closes, 1);
}
END_TEST

/*
 * A server that hangs up after 20 answers: the pages it sent are there and
 * right, every other page raises SIGBUS (poisoned, never zeros made up), and
 * the daemon goes on serving (the session ends normally).
 */
START_TEST(server_hangs_up_midway)
{
	run_broken_server(20, -1);
}
END_TEST

/*
 * A server that answers its 10th GET with the next page's address: that
 * answer is refused (its pages not taken), the source is broken from then
 * on, every page not sent right before raises SIGBUS.
 */
START_TEST(server_answers_a_wrong_range)
{
	run_broken_server(-1, 9);
}
END_TEST

/*
 * The daemon killed when half the pages are in, wherever it was on the
 * page server's stream: its successor takes the session and the connection
 * over (the stream where the record and the socket's counts say it stands),
 * every page reads right, none poisoned, and the successor ends the
 * connection with the server once the session ends.
 */
START_TEST(restart_keeps_the_page_server)
{
	struct report rp = { 0 };
	struct counts n;

	run_faulting(-1, -1, true, &rp, &n);
	ck_assert_int_eq(n.wrong, 0);
	ck_assert_int_eq(n.bus, 0);
	ck_assert_int_eq(n.ok, NPAGES);
	ck_assert_int_eq(rp.closes, 1);
}
END_TEST

/* A restart with the client forked at half (fork_half) or its region split
 * (a page in it removed): want_ok pages read right, none wrong, none
 * poisoned, and one end of the connection with the server. */
static void restart_changed(bool fork_half, int want_ok)
{
	uint64_t seed = test_seed();
	struct server_opts o = { NPAGES, seed, 256, 0, -1, -1, 1 };
	struct client cl = { .npages = NPAGES,
			     .seed = seed,
			     .flags = PIN_CLIENT_REGION_NO_PUSH,
			     .may_bus = true,
			     .unmap_third = !fork_half,
			     .fork_half = fork_half };
	struct report rp = { 0 };
	struct counts n;

	run_restart(&o, &cl, &rp, &n, true);
	ck_assert_int_eq(n.wrong, 0);
	ck_assert_int_eq(n.bus, 0);
	ck_assert_int_eq(n.ok, want_ok);
	ck_assert_int_eq(rp.closes, 1);
}

/*
 * The same with the region split in two (a page in it removed) before the
 * kill: both halves read the one source, and both claim it again from the
 * successor's record (every page right but the one removed).
 */
START_TEST(restart_keeps_a_split_source)
{
	restart_changed(false, NPAGES - 1);
}
END_TEST

/*
 * The client forks at half (its child's session shares the region's
 * source) before the kill: the successor gives both sessions to the worker
 * that reads the source, so that each is woken when its pages come (one on
 * another worker waited for ever), and every page of both reads right.
 */
START_TEST(restart_keeps_a_fork_child)
{
	restart_changed(true, NPAGES);
}
END_TEST

/*
 * A tree of TREE_TASKS tasks restored over one connection, as CRIU's page
 * server takes one for the whole tree: each task a client of its own (a
 * session), every one handing over the same socket, each touching its pages
 * in its own random order at once, no push.  One connection in the daemon
 * asks for all of them, each GET with its task's id, each reply placed in
 * the task that asked: every page touched right (each task's pattern its
 * own), each asked once.  With touch0, task 0 touches that many pages and
 * exits while the others wait at half their pages: its session ends (its
 * GETs in flight still read by the daemon, their pages dropped), and the
 * others go on over the connection it leaves them.  extra: the daemon's
 * arguments.
 */
#define TREE_TASKS 2

static void run_tree(size_t touch0, const char *const *extra)
{
	uint64_t seed = test_seed();
	struct server_opts o = { NPAGES, seed, 5, 0, -1, -1, TREE_TASKS };
	struct client cl[TREE_TASKS];
	struct test_daemon d;
	struct server srv;
	struct report rp = { 0 };
	pid_t pid[TREE_TASKS];
	int p[TREE_TASKS][2], h[2], g[2], st;
	char b;

	page = (size_t)sysconf(_SC_PAGESIZE);
	test_daemon_start(&d, extra);
	server_start(&srv, &o);
	ck_assert_int_eq(pipe2(h, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(g, O_CLOEXEC), 0);
	int sk = loopback_connect(srv.port);
	ck_assert_int_gt(sk, 0);
	for (int k = 0; k < TREE_TASKS; k++) {
		ck_assert_int_eq(pipe2(p[k], O_CLOEXEC), 0);
		cl[k] = (struct client){ .npages = NPAGES,
					 .seed = seed + (uint64_t)k,
					 .flags = PIN_CLIENT_REGION_NO_PUSH,
					 .report = p[k][1],
					 .task = TASK + (uint64_t)k,
					 .sk = sk,
					 .touch = k ? 0 : touch0,
					 .half = touch0 && k ? h[1] : -1,
					 .go = g[0] };
		pid[k] = fork();
		ck_assert_int_ge(pid[k], 0);
		if (pid[k] == 0)
			_exit(client_main(&d, &cl[k]));
		close(p[k][1]);
	}
	close(sk);
	long pages = 0;
	for (int k = 0; k < TREE_TASKS; k++) {
		struct counts n;
		/* The others wait at half until task 0 is gone. */
		for (int i = 1; k == 1 && touch0 && i < TREE_TASKS; i++)
			ck_assert_int_eq(read(h[0], &b, 1), 1);
		for (int i = 1; k == 1 && touch0 && i < TREE_TASKS; i++)
			ck_assert_int_eq(write(g[1], "g", 1), 1);
		ck_assert_int_eq(waitpid(pid[k], &st, 0), pid[k]);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "task %d failed", k);
		ck_assert_int_eq(test_read_all(p[k][0], &n, sizeof(n)), true);
		close(p[k][0]);
		long want = k || !touch0 ? NPAGES : (long)touch0;
		ck_assert_int_eq(n.ok, want);
		ck_assert_int_eq(n.wrong, 0);
		if (want == NPAGES)
			ck_assert_uint_eq(n.copied, NPAGES);
		pages += n.ok;
	}
	for (int i = 0; i < 2; i++) {
		close(h[i]);
		close(g[i]);
	}
	/* The last session gone, the daemon ends the connection: task 0's
	 * GETs in flight answered first, then PS_IOV_CLOSE, once. */
	server_end(&srv, &rp);
	ck_assert_int_eq(rp.closes, 1);
	ck_assert_int_eq(rp.twice, 0);
	/* Task 0's readahead may have asked for pages it never touched. */
	if (touch0)
		ck_assert_int_ge(rp.pages, pages);
	else
		ck_assert_int_eq(rp.pages, pages);
	test_daemon_stop(&d);
}

START_TEST(tree_shares_one_connection)
{
	run_tree(0, NULL);
}
END_TEST

START_TEST(tree_task_ends_first)
{
	run_tree(NPAGES / 4, NULL);
}
END_TEST

/* The connection's buffers (64 MiB at their most) are charged to the uid
 * once: with 96 MiB allowed, both tasks' regions are taken (charged to
 * each session, the second RegionAdd would be refused with EDQUOT). */
START_TEST(tree_charged_once)
{
	static const char *const extra[] = { "--max-bytes-per-uid", "100663296", NULL };

	run_tree(0, extra);
}
END_TEST

/* A uid that is not root's, to hand over root's page-server socket. */
#define OTHER_UID 65534

/* In a child: a session of OTHER_UID handing over sk, root's connection's
 * socket: refused with EBUSY (it would read root's stream), nothing kept. */
static int other_uid_client(const struct test_daemon *d, int sk)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "other" };
	struct pin_client_region_info *ri = NULL;
	struct pin_client *c;
	struct pin_uffd *u;
	size_t n = 0, len = 4 * page;
	uint8_t *base = test_map_region(len);

	/* Opening a userfaultfd needs root here; using it does not. */
	REQUIRE(base && pin_uffd_new(&uo, &u) == 0);
	REQUIRE(setresgid(OTHER_UID, OTHER_UID, OTHER_UID) == 0);
	REQUIRE(setresuid(OTHER_UID, OTHER_UID, OTHER_UID) == 0);
	REQUIRE(pin_client_connect(&co, &c) == 0);
	REQUIRE(pin_client_handover(c, u) == 0);
	struct pin_client_region r =
		remote_region(base, len, PIN_CLIENT_REGION_REGISTER, sk, TASK + 1);
	REQUIRE_EQ(pin_client_region_add(c, &r), -EBUSY);
	REQUIRE_EQ(pin_client_list_regions(c, pin_client_session(c), &ri, &n), 0);
	REQUIRE_EQ(n, 0);
	free(ri);
	pin_client_free(c);
	pin_uffd_free(u);
	return 0;
}

/*
 * Root's task hands its socket over and waits at half its pages; a client of
 * another uid that got the same socket hands it over too: refused (EBUSY),
 * and root's task then gets every page right, each asked once.
 */
START_TEST(other_uid_refused_the_connection)
{
	uint64_t seed = test_seed();
	struct server_opts o = { NPAGES, seed, 256, 0, -1, -1, 1 };
	struct test_daemon d;
	struct server srv;
	struct report rp = { 0 };
	struct counts n;
	int p[2], h[2], g[2], st;
	char b;

	page = (size_t)sysconf(_SC_PAGESIZE);
	test_daemon_start(&d, NULL);
	/* The other uid may reach the daemon (its uid limits are its own). */
	ck_assert_int_eq(chmod(d.dir, 0711), 0);
	ck_assert_int_eq(chmod(d.sock, 0666), 0);
	server_start(&srv, &o);
	int sk = loopback_connect(srv.port);
	ck_assert_int_gt(sk, 0);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(h, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(g, O_CLOEXEC), 0);
	struct client cl = { .npages = NPAGES,
			     .seed = seed,
			     .flags = PIN_CLIENT_REGION_NO_PUSH,
			     .report = p[1],
			     .sk = sk,
			     .half = h[1],
			     .go = g[0] };
	pid_t pid = client_spawn(&d, &cl);
	close(p[1]);
	ck_assert_int_eq(read(h[0], &b, 1), 1);
	pid_t other = fork();
	ck_assert_int_ge(other, 0);
	if (other == 0)
		_exit(other_uid_client(&d, sk));
	ck_assert_int_eq(waitpid(other, &st, 0), other);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the other uid's client failed");
	close(sk);
	ck_assert_int_eq(write(g[1], "g", 1), 1);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "root's client failed");
	ck_assert_int_eq(test_read_all(p[0], &n, sizeof(n)), true);
	for (int i = 0; i < 2; i++) {
		close(h[i]);
		close(g[i]);
	}
	close(p[0]);
	ck_assert_int_eq(n.ok, NPAGES);
	ck_assert_int_eq(n.wrong, 0);
	server_end(&srv, &rp);
	ck_assert_int_eq(rp.closes, 1);
	ck_assert_int_eq(rp.twice, 0);
	ck_assert_int_eq(rp.pages, NPAGES);
	test_daemon_stop(&d);
}
END_TEST

/* A page server's region must come with a connected stream socket: a file
 * is refused with ENOTSOCK, and nothing of it is kept. */
static int not_a_socket(struct pin_client *c, struct pin_client_region *r)
{
	struct pin_client_region_info *ri = NULL;
	size_t n = 0;
	int fd = memfd_create("not-a-socket", MFD_CLOEXEC);

	REQUIRE(fd >= 0 && ftruncate(fd, (off_t)r->len) == 0);
	r->fd = fd;
	REQUIRE_EQ(pin_client_region_add(c, r), -ENOTSOCK);
	REQUIRE_EQ(pin_client_list_regions(c, 0, &ri, &n), 0);
	REQUIRE_EQ(n, 0);
	free(ri);
	return 0;
}

/* A page server's buffers are charged to the session at their most
 * (64 MiB): a uid allowed 32 MiB of bytes gets no page server's region,
 * and a zero region there all the same. */
static int over_bytes(struct pin_client *c, struct pin_client_region *r)
{
	int sk[2];

	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sk) == 0);
	r->fd = sk[0];
	REQUIRE_EQ(pin_client_region_add(c, r), -EDQUOT);
	r->flags = PIN_CLIENT_REGION_REGISTER;
	r->fd = -1;
	r->offset = 0;
	REQUIRE_EQ(pin_client_region_add(c, r), 0);
	return 0;
}

/* A client with its uffd handed over and 4 pages mapped, whose page
 * server's region (its fd still to set) fn adds. */
static int page_server_client(const struct test_daemon *d,
			      int (*fn)(struct pin_client *c, struct pin_client_region *r))
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "remote" };
	struct test_conn k;
	size_t len = 4 * page;
	uint8_t *base = test_map_region(len);

	REQUIRE(base);
	REQUIRE(test_conn_open(&k, &uo, &co) == 0);
	struct pin_client_region r = remote_region(base, len, PIN_CLIENT_REGION_REGISTER, -1, TASK);
	int ret = fn(k.c, &r);

	test_conn_close(&k);
	return ret;
}

/* A daemon started with extra arguments, one page_server_client() in a
 * child: it must exit 0. */
static void run_one_client(const char *const *extra,
			   int (*fn)(struct pin_client *c, struct pin_client_region *r))
{
	struct test_daemon d;
	int st;

	page = (size_t)sysconf(_SC_PAGESIZE);
	test_daemon_start(&d, extra);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(page_server_client(&d, fn));
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the client failed");
	test_daemon_stop(&d);
}

START_TEST(buffers_charged)
{
	static const char *const extra[] = { "--max-bytes-per-uid", "33554432", NULL };

	run_one_client(extra, over_bytes);
}
END_TEST

START_TEST(not_a_socket_refused)
{
	run_one_client(NULL, not_a_socket);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = test_suite_new("remote");
	/* Root's socket handed over by another uid: setresuid() needs root. */
	const struct test_needs root = { .what = TEST_NEED_ROOT };
	TCase *tc = test_tcase(s, "other_uid_refused_the_connection", &root);

	TEST_ADD_CASE(s, random_faults_each_page_once, 120);
	TEST_ADD_CASE(s, push_many_gets_in_flight, 120);
	TEST_ADD_CASE(s, tree_shares_one_connection, 120);
	TEST_ADD_CASE(s, tree_task_ends_first, 120);
	TEST_ADD_CASE(s, tree_charged_once, 120);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, other_uid_refused_the_connection);
	TEST_ADD_CASE(s, server_hangs_up_midway, 120);
	TEST_ADD_CASE(s, server_answers_a_wrong_range, 120);
	TEST_ADD_CASE(s, restart_keeps_the_page_server, 120);
	TEST_ADD_CASE(s, restart_keeps_a_split_source, 120);
	TEST_ADD_CASE(s, restart_keeps_a_fork_child, 60);
	TEST_ADD_CASE(s, not_a_socket_refused, 60);
	TEST_ADD_CASE(s, buffers_charged, 60);
	return s;
}

const char *test_skip_reason(void)
{
	return test_daemon_skip_reason();
}
