// SPDX-License-Identifier: MIT
/*
 * Area remote-held (suite daemon, issue 13): uffdd, under its supervisor,
 * stops itself at a point of a page server's stream (UFFDD_HOLD: a
 * connection stored, a GET journaled, sent, a reply journaled, half read,
 * read whole, its pages placed) while a client's pages come from the page
 * server of remote-harness.c, and is killed there (SIGKILL).  Its
 * successor takes the stream over where it stood: every page reads right,
 * none is poisoned, and the successor ends the connection with the server.
 * A record spoiled before the kill is refused: the pages not in raise
 * SIGBUS, none reads wrong.  A connection no region claims after the
 * restart is ended by the successor, and by the next one when that one is
 * killed in its end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "remote-harness.h"
#include "test-common.h"
#include "uffdd-harness.h"

#define NPAGES 2048 /* 8 MiB */

/* The state letter of process pid in /proc. */
static char proc_state(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	return test_proc_state(path);
}

/* How long a daemon may take to reach its hold point (scaled). */
#define HOLD_WAIT_MS 60000

/* Wait until pid stopped itself (uffdd_hold()). */
static void await_stopped(pid_t pid, const char *at)
{
	unsigned int wait_ms = HOLD_WAIT_MS * test_time_scale();

	for (unsigned int waited = 0; proc_state(pid) != 'T'; waited++) {
		ck_assert_msg(waited < wait_ms, "uffdd did not hold at %s", at);
		test_sleep_ms(1);
	}
}

/* Zero the head of every memfd named name that process pid holds (the
 * supervisor's fd store: page-server records, sessions' records): the next
 * daemon must refuse them. */
static int spoil_memfds(pid_t pid, const char *name)
{
	char dir[64], path[64 + 256], link[128];
	static const uint8_t zero[64];
	int spoiled = 0;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	for (struct dirent *e; (e = readdir(d));) {
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		ssize_t k = readlink(path, link, sizeof(link) - 1);
		if (k < 0)
			continue;
		link[k] = 0;
		if (!strstr(link, name))
			continue;
		int fd = open(path, O_RDWR | O_CLOEXEC);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(pwrite(fd, zero, sizeof(zero), 0), (ssize_t)sizeof(zero));
		close(fd);
		spoiled++;
	}
	closedir(d);
	return spoiled;
}

/*
 * uffdd (under its supervisor) stops itself at the hold point at (the first
 * time it gets there) while a client faults its pages in random order, no
 * push (with push: waits for the push, GETs of 1 MiB, 4 in flight at
 * once), and is killed there; with spoil, the records of its page-server
 * connections are spoiled first.  The client's counts and the server's
 * report.
 */
static void run_held(const char *at, bool push, bool spoil, struct report *rp, struct counts *n)
{
	uint64_t seed = test_seed();
	struct server_opts o = { NPAGES, seed, push ? 256 : 5, 0, -1, -1, 1 };
	struct client cl = { .npages = NPAGES,
			     .seed = seed,
			     .flags = push ? 0 : PIN_CLIENT_REGION_NO_PUSH,
			     .wait = push,
			     .may_bus = true,
			     .half = -1,
			     .go = -1 };
	struct test_daemon d;
	struct server s;
	int p[2], st;

	ck_assert_int_eq(setenv("UFFDD_HOLD", at, 1), 0);
	test_daemon_start_supervised(&d, NULL);
	ck_assert_int_eq(unsetenv("UFFDD_HOLD"), 0);
	server_start(&s, &o);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	cl.port = s.port;
	cl.report = p[1];
	pid_t pid = client_spawn(&d, &cl);
	close(p[1]);
	pid_t child = remote_serving_child(d.pid);
	await_stopped(child, at);
	if (spoil)
		ck_assert_int_eq(spoil_memfds(d.pid, "memfd:uffdd-remote"), 1);
	ck_assert_int_eq(kill(child, SIGKILL), 0);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the client failed");
	ck_assert_int_eq(test_read_all(p[0], n, sizeof(*n)), true);
	close(p[0]);
	server_end(&s, rp);
	test_daemon_stop(&d);
}

/* Killed at a hold point: every page right, none poisoned, the connection
 * ended with the server by the successor. */
static void killed_at_push(const char *at, bool push)
{
	struct report rp = { 0 };
	struct counts n;

	run_held(at, push, false, &rp, &n);
	ck_assert_int_eq(n.wrong, 0);
	ck_assert_int_eq(n.bus, 0);
	ck_assert_int_eq(n.ok, NPAGES);
	ck_assert_int_eq(rp.closes, 1);
}

static void killed_at(const char *at)
{
	killed_at_push(at, false);
}

/* A connection stored, its handover not committed: the successor leaves
 * the stream to the client, who hands it over again. */
START_TEST(killed_conn_stored)
{
	killed_at("ps-conn-stored");
}
END_TEST

/* A GET journaled, not a byte of it sent: the successor sends it. */
START_TEST(killed_get_journaled)
{
	killed_at("ps-get-journaled");
}
END_TEST

/* A GET sent whole, not answered: its reply is read by the successor. */
START_TEST(killed_get_sent)
{
	killed_at("ps-get-sent");
}
END_TEST

/* A reply's header journaled, not a byte of it read: peeked again. */
START_TEST(killed_reply_journaled)
{
	killed_at("ps-reply-journaled");
}
END_TEST

/* A reply's header read, its pages not: the rest is dropped, exactly, and
 * its pages asked again. */
START_TEST(killed_reply_half_read)
{
	killed_at("ps-reply-half-read");
}
END_TEST

/* The same in a push: a reply of 1 MiB half read, GETs behind it in flight
 * (their replies read by the successor in turn). */
START_TEST(killed_push_reply_half_read)
{
	killed_at_push("ps-reply-half-read", true);
}
END_TEST

/* A push's GETs sent, the first reply's header journaled. */
START_TEST(killed_push_reply_journaled)
{
	killed_at_push("ps-reply-journaled", true);
}
END_TEST

/* A reply read whole, its pages not placed: asked again. */
START_TEST(killed_reply_read)
{
	killed_at("ps-reply-read");
}
END_TEST

/* Pages placed, not marked populated: placed again (EEXIST). */
START_TEST(killed_placed)
{
	killed_at("placed");
}
END_TEST

/*
 * A record that cannot be trusted (its head zeroed while the daemon held,
 * before the kill): the successor refuses it and cuts the connection; the
 * pages not in raise SIGBUS, none reads wrong.
 */
START_TEST(spoiled_record_poisons)
{
	struct report rp = { 0 };
	struct counts n;

	run_held("ps-reply-journaled", false, true, &rp, &n);
	ck_assert_int_eq(n.wrong, 0);
	ck_assert_int_gt(n.bus, 0);
	ck_assert_int_eq(n.ok + n.bus, NPAGES);
	ck_assert_int_eq(rp.closes, 0);
}
END_TEST

/* The child of supervisor sup other than old (the successor it started),
 * once there is one. */
static pid_t successor_of(pid_t sup, pid_t old)
{
	unsigned int wait_ms = HOLD_WAIT_MS * test_time_scale();
	char path[64];
	long pid = old;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)sup, (int)sup);
	for (unsigned int waited = 0; pid == old; waited++) {
		ck_assert_msg(waited < wait_ms, "no successor of uffdd %d", (int)old);
		FILE *f = fopen(path, "r");
		ck_assert_ptr_nonnull(f);
		if (fscanf(f, "%ld", &pid) != 1)
			pid = old;
		fclose(f);
		if (pid == old)
			test_sleep_ms(1);
	}
	return (pid_t)pid;
}

/*
 * A connection none of whose sources a region rebuilt claims, a GET of it
 * in flight (the session's record spoiled while the daemon held with the
 * GET sent): the successor ends it, and is killed with the answer read,
 * PS_IOV_CLOSE not sent.  Its end was journaled before its last source left
 * the record, so the next successor ends it too (it holds there again, and
 * goes on): the server gets PS_IOV_CLOSE.  Dropped instead, the stream
 * would be left to a client that waits for its end.
 */
START_TEST(unclaimed_end_survives)
{
	struct server_opts o = { NPAGES, test_seed(), 5, 0, -1, -1, 1 };
	struct client cl = { .npages = NPAGES,
			     .seed = o.seed,
			     .flags = PIN_CLIENT_REGION_NO_PUSH,
			     .may_bus = true,
			     .report = -1,
			     .half = -1,
			     .go = -1 };
	struct report rp = { 0 };
	struct test_daemon d;
	struct server s;
	int st;

	ck_assert_int_eq(setenv("UFFDD_HOLD", "ps-get-sent,ps-end-drained,ps-end-drained", 1), 0);
	test_daemon_start_supervised(&d, NULL);
	ck_assert_int_eq(unsetenv("UFFDD_HOLD"), 0);
	server_start(&s, &o);
	cl.port = s.port;
	pid_t pid = client_spawn(&d, &cl);
	pid_t first = remote_serving_child(d.pid);
	await_stopped(first, "ps-get-sent");
	ck_assert_int_eq(spoil_memfds(d.pid, "memfd:uffdd-state"), 1);
	ck_assert_int_eq(kill(first, SIGKILL), 0);
	pid_t second = successor_of(d.pid, first);
	await_stopped(second, "ps-end-drained");
	ck_assert_int_eq(kill(second, SIGKILL), 0);
	pid_t third = successor_of(d.pid, second);
	await_stopped(third, "ps-end-drained");
	ck_assert_int_eq(kill(third, SIGCONT), 0);
	server_end(&s, &rp);
	ck_assert_int_eq(rp.closes, 1);
	ck_assert_int_eq(rp.gets, 1);
	/* Its session refused, the client is stopped here. */
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	test_daemon_stop(&d);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("remote-held");

	TEST_ADD_CASE(s, killed_conn_stored, 120);
	TEST_ADD_CASE(s, killed_get_journaled, 120);
	TEST_ADD_CASE(s, killed_get_sent, 120);
	TEST_ADD_CASE(s, killed_reply_journaled, 120);
	TEST_ADD_CASE(s, killed_reply_half_read, 120);
	TEST_ADD_CASE(s, killed_push_reply_half_read, 120);
	TEST_ADD_CASE(s, killed_push_reply_journaled, 120);
	TEST_ADD_CASE(s, killed_reply_read, 120);
	TEST_ADD_CASE(s, killed_placed, 120);
	TEST_ADD_CASE(s, spoiled_record_poisons, 120);
	TEST_ADD_CASE(s, unclaimed_end_survives, 240);
	return s;
}

const char *test_skip_reason(void)
{
	return test_daemon_skip_reason();
}
