// SPDX-License-Identifier: MIT
/*
 * The page server and the clients of area remote (test-remote.c): a child
 * process that speaks CRIU's page-server protocol (criu/page-xfer.c) over
 * loopback TCP and reports what it was asked, and a client process that
 * hands a region over with the socket and touches its pages.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "loopback.h"
#include "remote-harness.h"
#include "test-common.h"

/* criu/page-xfer.c */
#define PS_IOV_ADD_F 6
#define PS_IOV_GET   7
#define PS_IOV_CLOSE 0x1023
#define PE_PRESENT   4

static size_t page;

struct iov {
	uint32_t cmd;
	uint64_t nr_pages, vaddr, dst_id;
};

/* One answer: the header, then the pages, patterned by address. */
static bool answer(int sk, const struct server_opts *o, struct iov *q, bool lie)
{
	uint64_t nr = q->nr_pages < o->max_pages ? q->nr_pages : o->max_pages;
	size_t len = nr * page;
	uint64_t *buf = malloc(len);
	struct iov a;
	bool ok;

	if (!buf)
		return false;
	/* Its padding too: what goes on the wire is all defined. */
	memset(&a, 0, sizeof(a));
	a.cmd = PS_IOV_ADD_F | PE_PRESENT << 16;
	a.nr_pages = nr;
	a.vaddr = q->vaddr + (lie ? page : 0);
	a.dst_id = q->dst_id;
	for (size_t w = 0; w < len / 8; w++)
		buf[w] = test_pattern(q->vaddr - REMOTE_BASE + w * 8, o->seed + q->dst_id - TASK);
	ok = test_send_all(sk, &a, sizeof(a)) && test_send_all(sk, buf, len);
	free(buf);
	return ok;
}

/* PS_IOV_CLOSE, as CRIU's page_server_serve() takes it: status 0, then
 * nothing more but the hang-up (CRIU: "Unexpected data"). */
static void closed(int sk, struct report *rp)
{
	int32_t status = 0;
	char c;

	rp->closes++;
	if (!test_send_all(sk, &status, sizeof(status)))
		snprintf(rp->why, sizeof(rp->why), "PS_IOV_CLOSE: sending the status failed");
	else if (read(sk, &c, 1) != 0)
		snprintf(rp->why, sizeof(rp->why), "data after PS_IOV_CLOSE");
}

/* Serve until the daemon closes or hangs up (or o says to); the report. */
static void serve(int sk, const struct server_opts *o, struct report *rp)
{
	uint64_t ntasks = o->ntasks ? o->ntasks : 1;
	uint8_t *asked = calloc(o->npages * ntasks, 1);
	struct iov held[256];
	size_t nheld = 0;
	long answers = 0;

	for (;;) {
		struct iov q;
		/* Hold the first GETs until o->hold came; then one by one. */
		bool hold = answers == 0 && nheld < o->hold;
		if (hold || nheld == 0) {
			if (!test_read_all(sk, &q, sizeof(q)))
				break;
			if (q.cmd == PS_IOV_CLOSE && !nheld) {
				closed(sk, rp);
				break;
			}
			if (q.cmd != PS_IOV_GET || q.dst_id < TASK || q.dst_id >= TASK + ntasks ||
			    q.vaddr < REMOTE_BASE || (q.vaddr - REMOTE_BASE) % page ||
			    !q.nr_pages ||
			    (q.vaddr - REMOTE_BASE) / page + q.nr_pages > o->npages) {
				snprintf(rp->why, sizeof(rp->why),
					 "GET cmd %u task %llu 0x%llx %llu pages: not the task's",
					 q.cmd, (unsigned long long)q.dst_id,
					 (unsigned long long)q.vaddr,
					 (unsigned long long)q.nr_pages);
				break;
			}
			rp->gets++;
			held[nheld++] = q;
			if ((long)nheld > rp->most_held)
				rp->most_held = (long)nheld;
			if (answers == 0 && nheld < o->hold && nheld < PIN_ARRAY_SIZE(held))
				continue;
		}
		q = held[0];
		memmove(held, held + 1, --nheld * sizeof(*held));
		uint64_t first = (q.dst_id - TASK) * o->npages + (q.vaddr - REMOTE_BASE) / page;
		uint64_t nr = q.nr_pages < o->max_pages ? q.nr_pages : o->max_pages;
		for (uint64_t k = 0; k < nr; k++)
			rp->twice += asked[first + k]++ > 0;
		bool lie = answers == o->lie_at;
		if (!answer(sk, o, &q, lie))
			break;
		/* After a lie the daemon reads nothing more: neither does it. */
		if (lie)
			break;
		rp->pages += (long)nr;
		if (++answers == o->hang_up_after)
			break;
	}
	free(asked);
}

void server_start(struct server *s, const struct server_opts *o)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
	int lsk = test_listen_loopback(&s->port), p[2];

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	s->pid = fork();
	ck_assert_int_ge(s->pid, 0);
	if (s->pid == 0) {
		struct report rp = { 0 };
		int one = 1, sk = accept4(lsk, NULL, NULL, SOCK_CLOEXEC);

		/* As CRIU's: an answer's header and pages go out at once (with
		 * Nagle the pages would wait for the header's delayed ACK). */
		if (sk >= 0)
			setsockopt(sk, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

		close(p[0]);
		if (sk < 0)
			snprintf(rp.why, sizeof(rp.why), "accept: %s", strerror(errno));
		else
			serve(sk, o, &rp);
		_exit(write(p[1], &rp, sizeof(rp)) == sizeof(rp) ? 0 : 1);
	}
	close(lsk);
	close(p[1]);
	s->report = p[0];
}

void server_end(struct server *s, struct report *rp)
{
	int st;

	ck_assert_int_eq(test_read_all(s->report, rp, sizeof(*rp)), true);
	close(s->report);
	ck_assert_int_eq(waitpid(s->pid, &st, 0), s->pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the page server failed");
	ck_assert_msg(!rp->why[0], "the page server: %s", rp->why);
}

/* ---- clients ---- */

struct pin_client_region remote_region(void *base, size_t len, unsigned int flags, int sk,
				       uint64_t task)
{
	return (struct pin_client_region){
		.sz = sizeof(struct pin_client_region),
		.addr = base,
		.len = len,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = flags | PIN_CLIENT_REGION_PAGE_SERVER,
		.fd = sk,
		.offset = REMOTE_BASE,
		.task = task,
	};
}

/* Map, hand the region over with the connected socket, touch every page in
 * random order (or wait for the push), and report what each held. */
/* Fork (the parent gets the child's pid once the child read page i, not in
 * before, through the session the daemon made for it); the child gets 0. */
static pid_t fork_at_half(const uint8_t *base, size_t i)
{
	pid_t parent = getpid();
	int p[2];
	char b;

	REQUIRE(pipe2(p, O_CLOEXEC) == 0);
	pid_t kid = fork();
	REQUIRE(kid >= 0);
	if (kid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(126);
		b = *(const volatile uint8_t *)(base + i * page);
		if (write(p[1], &b, 1) != 1)
			_exit(126);
		close(p[0]);
		close(p[1]);
		return 0;
	}
	close(p[1]);
	REQUIRE(read(p[0], &b, 1) == 1);
	close(p[0]);
	return kid;
}

int client_main(const struct test_daemon *d, struct client *cl)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = cl->fork_half ? PIN_UFFD_FEATURE_EVENT_FORK : 0,
		.optional = PIN_UFFD_FEATURE_POISON,
	};
	pid_t kid = 0;
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "remote" };
	struct pin_client_stats st;
	struct counts n = { 0 };
	struct test_conn conn;
	size_t len = cl->npages * page;
	uint8_t *base = test_map_region(len);
	size_t *order = malloc(cl->npages * sizeof(*order));
	int sk = cl->sk > 0 ? cl->sk : loopback_connect(cl->port);

	REQUIRE(base && order && sk >= 0);
	REQUIRE(test_conn_open(&conn, &uo, &co) == 0);
	struct pin_client_region r =
		remote_region(base, len, cl->flags, sk, cl->task ? cl->task : TASK);
	REQUIRE(pin_uffd_register(conn.u, base, len, PIN_UFFD_REGISTER_MISSING, NULL) == 0);
	REQUIRE_EQ(pin_client_region_add(conn.c, &r), 0);
	close(sk);
	size_t gone = cl->unmap_third ? cl->npages / 3 : SIZE_MAX;
	if (cl->unmap_third)
		REQUIRE_EQ(pin_client_region_remove(conn.c, base + gone * page, page), 0);
	if (cl->wait)
		REQUIRE_EQ(pin_client_wait_populated(conn.c, base, len, 0), 0);
	test_permutation(order, cl->npages, cl->seed);
	for (size_t k = 0; k < (cl->touch ? cl->touch : cl->npages); k++) {
		size_t i = order[k];
		char b;
		if (cl->fork_half && k == cl->npages / 2)
			kid = fork_at_half(base, i == gone ? order[k + 1] : i);
		if (cl->half >= 0 && k == cl->npages / 2 && (!cl->fork_half || kid > 0))
			REQUIRE(write(cl->half, "h", 1) == 1 && read(cl->go, &b, 1) == 1);
		if (i == gone)
			continue;
		if (cl->may_bus && test_read_bus(base + i * page))
			n.bus++;
		else if (test_page_ok(base, i, cl->seed))
			n.ok++;
		else
			n.wrong++;
	}
	if (kid == 0 && cl->fork_half)
		_exit(n.wrong || n.bus ? 1 : 0);
	if (kid > 0) {
		int ks;
		REQUIRE(waitpid(kid, &ks, 0) == kid && WIFEXITED(ks) && WEXITSTATUS(ks) == 0);
	}
	REQUIRE(pin_client_stats(conn.c, 0, &st) == 0);
	n.copied = st.pages_copied;
	REQUIRE(write(cl->report, &n, sizeof(n)) == sizeof(n));
	free(order);
	test_conn_close(&conn);
	return 0;
}

pid_t remote_serving_child(pid_t sup)
{
	char path[64];
	long pid = -1;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)sup, (int)sup);
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fscanf(f, "%ld", &pid), 1);
	fclose(f);
	return (pid_t)pid;
}

static int client_run(const struct test_daemon *d, void *cl)
{
	return client_main(d, cl);
}

pid_t client_spawn(const struct test_daemon *d, struct client *cl)
{
	return test_spawn(client_run, d, cl);
}
