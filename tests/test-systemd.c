// SPDX-License-Identifier: MIT
/*
 * Suite daemon, area systemd: uffdd ($UFFDD) as a service manager runs it.
 * Socket activation through systemd-socket-activate ($SYSTEMD_SOCKET_ACTIVATE)
 * with a SOCK_SEQPACKET listening socket, and the sd_notify messages uffdd
 * sends (READY=1, STATUS=) to a datagram socket of ours named in
 * NOTIFY_SOCKET, checked word for word and with the sender's pid.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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

/* Bounded waits: a notification, the activated daemon's first reply. */
#define NOTIFY_TIMEOUT_MS 10000
#define POLL_MS		  10
#define POLL_TRIES	  1000
#define ACT_PAGES	  16
#define ACT_SEED	  0xac71

static size_t page;

/* The next notification on fd, exactly as sent, and who sent it. */
static void notify_expect(int fd, pid_t pid, const char *want)
{
	char buf[256], cbuf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int))];
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct pollfd p = { .fd = fd, .events = POLLIN };

	ck_assert_msg(poll(&p, 1, NOTIFY_TIMEOUT_MS) == 1, "no notification in %d ms; wanted '%s'",
		      NOTIFY_TIMEOUT_MS, want);
	ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);
	ck_assert_int_ge(n, 0);
	buf[n] = 0;
	ck_assert_str_eq(buf, want);
	ck_assert(!(mh.msg_flags & MSG_CTRUNC));
	struct ucred cred = { 0 };
	int fds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_type == SCM_CREDENTIALS) {
			memcpy(&cred, CMSG_DATA(c), sizeof(cred));
			continue;
		}
		ck_assert_int_eq(c->cmsg_type, SCM_RIGHTS);
		ck_assert_uint_eq(c->cmsg_len, CMSG_LEN(sizeof(int)));
		int sent;
		memcpy(&sent, CMSG_DATA(c), sizeof(sent));
		close(sent);
		fds++;
	}
	ck_assert_int_eq(cred.pid, pid);
	/* FDSTORE=1 comes with the one descriptor it names; nothing else does. */
	ck_assert_int_eq(fds, !strncmp(want, "FDSTORE=1", 9));
}

/* READY once listening with its workers up, then STATUS on every session
 * that comes or goes. */
START_TEST(notify_ready_and_status)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct pin_client_opts co = { .sz = sizeof(co) };
	struct pin_client *c;
	struct test_daemon d;
	char dir[] = "/tmp/uffdd-notify-XXXXXX";
	int one = 1;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", dir);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", sa.sun_path, 1), 0);
	test_daemon_start(&d, NULL);
	ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);

	/* The harness's workers: 2; its Hello was a session of its own. */
	notify_expect(fd, d.pid, "READY=1\nSTATUS=Serving 0 sessions with 2 workers");
	/* Each session's record and connection go to the fd store first, and
	 * leave it when the session ends, the record last. */
	for (unsigned int id = 1; id <= 2; id++) {
		char name[64];
		if (id == 2) {
			co.socket = d.sock;
			ck_assert_int_eq(pin_client_connect(&co, &c), 0);
		}
		snprintf(name, sizeof(name), "FDSTORE=1\nFDNAME=s%u.state", id);
		notify_expect(fd, d.pid, name);
		snprintf(name, sizeof(name), "FDSTORE=1\nFDNAME=s%u.conn", id);
		notify_expect(fd, d.pid, name);
		notify_expect(fd, d.pid, "STATUS=Serving 1 session(s)");
		if (id == 2) {
			ck_assert_int_eq(pin_client_goodbye(c), 0);
			pin_client_free(c);
		}
		snprintf(name, sizeof(name), "FDSTOREREMOVE=1\nFDNAME=s%u.conn", id);
		notify_expect(fd, d.pid, name);
		snprintf(name, sizeof(name), "FDSTOREREMOVE=1\nFDNAME=s%u.state", id);
		notify_expect(fd, d.pid, name);
		notify_expect(fd, d.pid, "STATUS=Serving 0 session(s)");
	}
	test_daemon_stop(&d);
	close(fd);
	ck_assert_int_eq(unlink(sa.sun_path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* systemd-socket-activate listens, and execs uffdd in its own place on the
 * first connection: that connection is served, faults included. */
START_TEST(socket_activation_serves)
{
	char dir[] = "/tmp/uffdd-activate-XXXXXX", path[64];
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = path };
	struct pin_client_stats st;
	struct pin_client *c = NULL;
	struct pin_uffd *u;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int status;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sock", dir);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close_range(3, ~0u, 0);
		execl(getenv("SYSTEMD_SOCKET_ACTIVATE"), "systemd-socket-activate", "--seqpacket",
		      "-l", path, getenv("UFFDD"), "--workers", "1", "--no-supervisor",
		      (char *)NULL);
		_exit(127);
	}
	/* Until it listens: bind comes before listen, so connect, not stat. */
	for (int tries = 0; pin_client_connect(&co, &c) < 0; tries++) {
		ck_assert_msg(tries < POLL_TRIES, "nothing listens on %s", path);
		ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), 0);
		test_sleep_ms(POLL_MS);
	}
	/* The daemon that answered is the process we started. */
	ck_assert_int_eq(getsockopt(pin_client_fd(c), SOL_SOCKET, SO_PEERCRED, &cred, &len), 0);
	ck_assert_int_eq(cred.pid, pid);

	int src = memfd_create("activate-src", MFD_CLOEXEC);
	ck_assert_int_ge(src, 0);
	test_pattern_write(src, ACT_PAGES * page, ACT_SEED);
	uint8_t *base = test_map_pages(ACT_PAGES);
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = base,
		.len = ACT_PAGES * page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER,
		.fd = src,
	};
	ck_assert_int_eq(pin_uffd_new(&uo, &u), 0);
	ck_assert_int_eq(pin_client_handover(c, u), 0);
	ck_assert_int_eq(pin_client_region_add(c, &r), 0);
	/* Backwards: one fault and one page each, no readahead. */
	for (size_t i = ACT_PAGES; i-- > 0;) {
		const uint64_t *w = (const uint64_t *)(base + i * page);
		for (size_t j = 0; j < page / 8; j++)
			ck_assert_uint_eq(w[j], test_pattern(i * page + j * 8, ACT_SEED));
	}
	ck_assert_int_eq(pin_client_stats(c, 0, &st), 0);
	ck_assert_uint_eq(st.faults, ACT_PAGES);
	ck_assert_uint_eq(st.pages_copied, ACT_PAGES);

	ck_assert_int_eq(pin_client_goodbye(c), 0);
	pin_client_free(c);
	pin_uffd_free(u);
	close(src);
	munmap(base, ACT_PAGES * page);
	ck_assert_int_eq(kill(pid, SIGTERM), 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	/* The socket is the service manager's: uffdd leaves it. */
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("systemd");
	TCase *tc = tcase_create("systemd");

	page = (size_t)sysconf(_SC_PAGESIZE);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, notify_ready_and_status);
	tcase_add_test(tc, socket_activation_serves);
	suite_add_tcase(s, tc);
	return s;
}

const char *test_skip_reason(void)
{
	const char *act = getenv("SYSTEMD_SOCKET_ACTIVATE");

	if (!getenv("UFFDD"))
		return "UFFDD (the uffdd binary to test) is not set; run through meson test";
	if (strcmp(getenv("UFFDD_SYSTEMD") ?: "", "1"))
		return "uffdd was built without libsystemd (-Dsystemd=disabled, or no "
		       "libsystemd-dev)";
	if (!act || !*act)
		return "systemd-socket-activate is not installed (Debian package systemd)";
	return test_uffd_skip_reason();
}
