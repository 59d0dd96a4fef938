// SPDX-License-Identifier: MIT
/*
 * Suite durable, area supervise: the fd store and uffdd's supervisor (issue
 * 11).  store.c and supervise.c are built into this binary: store_put() and
 * store_remove() against a notify socket of the test's own (each datagram
 * checked word for word, with its sender and the very file passed), the split
 * store_start() makes of what LISTEN_FDS passes, and supervise() handing what
 * a child stored to the next one and nothing a stranger sent.  Then the real
 * uffdd ($UFFDD) with its supervisor: a serving child killed is replaced and
 * serves, SIGTERM stops both and removes the socket, a burst of deaths ends
 * the supervisor with exit 1.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Before check.h, whose fail() macro would rename uffdd.h's fail(). */
#include "uffdd.h"

#include "test-common.h"
#include "uffdd-harness.h"

/* Bounded waits: a datagram, a new serving child, its first reply. */
#define WAIT_MS 10000
#define POLL_MS 10
/* Where store_start()'s child parks what it reports: above every fd it
 * passes in LISTEN_FDS and those it parks them at. */
#define REPORT_FD 50
#define PARK_FD	  20
/* The restarts the supervisor allows in its window; one more death ends it. */
#define RESTART_BURST 5

/* supervise.c's call into listen.c, which is not built in: the supervisors
 * of these tests bound no socket path. */
void listen_unlink(void)
{
}

/* A service manager's notify socket: a datagram socket of ours named by
 * NOTIFY_SOCKET. */
struct mgr {
	char dir[32];
	struct sockaddr_un sa;
	int fd;
};

static void mgr_open(struct mgr *m)
{
	int one = 1;

	strcpy(m->dir, "/tmp/uffdd-store-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(m->dir));
	m->sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
	snprintf(m->sa.sun_path, sizeof(m->sa.sun_path), "%s/notify", m->dir);
	m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(m->fd, 0);
	ck_assert_int_eq(setsockopt(m->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	ck_assert_int_eq(bind(m->fd, (struct sockaddr *)&m->sa, sizeof(m->sa)), 0);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", m->sa.sun_path, 1), 0);
}

static void mgr_close(struct mgr *m)
{
	ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
	ck_assert_int_eq(close(m->fd), 0);
	ck_assert_int_eq(unlink(m->sa.sun_path), 0);
	ck_assert_int_eq(rmdir(m->dir), 0);
}

#ifdef HAVE_SYSTEMD
/*
 * The next datagram: its text must be want, its sender this process; its fds
 * land in fds (room for max) and their number is returned.
 */
static size_t mgr_expect(struct mgr *m, const char *want, int *fds, size_t max)
{
	char buf[512];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 4)];
	} cbuf;
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf.buf,
			     .msg_controllen = sizeof(cbuf.buf) };
	struct pollfd p = { .fd = m->fd, .events = POLLIN };
	struct ucred cred = { .pid = 0 };
	size_t n = 0;

	ck_assert_msg(poll(&p, 1, WAIT_MS) == 1, "no datagram in %d ms; wanted '%s'", WAIT_MS,
		      want);
	ssize_t len = recvmsg(m->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	ck_assert_int_ge(len, 0);
	ck_assert_int_eq(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC), 0);
	buf[len] = 0;
	ck_assert_str_eq(buf, want);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_type == SCM_CREDENTIALS) {
			memcpy(&cred, CMSG_DATA(c), sizeof(cred));
		} else if (c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			ck_assert_uint_le(n + k, max);
			memcpy(fds + n, CMSG_DATA(c), k * sizeof(int));
			n += k;
		}
	}
	ck_assert_int_eq(cred.pid, getpid());
	return n;
}

#endif

/* Nothing was sent. */
static void mgr_none(struct mgr *m)
{
	char buf[512];

	ck_assert_int_eq(recv(m->fd, buf, sizeof(buf), MSG_DONTWAIT), -1);
	ck_assert_int_eq(errno, EAGAIN);
}

#ifdef HAVE_SYSTEMD
static void same_file(int a, int b)
{
	struct stat sa, sb;

	ck_assert_int_eq(fstat(a, &sa), 0);
	ck_assert_int_eq(fstat(b, &sb), 0);
	ck_assert_uint_eq(sa.st_dev, sb.st_dev);
	ck_assert_uint_eq(sa.st_ino, sb.st_ino);
}
#endif

/* FDSTORE=1 with the name, and a descriptor of the same file; the caller
 * keeps its own. */
START_TEST(store_put_sends_fdstore)
{
	struct mgr m;

	mgr_open(&m);
	int fd = memfd_create("store-put", MFD_CLOEXEC);
	ck_assert_int_ge(fd, 0);
#ifdef HAVE_SYSTEMD
	int got[4];

	ck_assert(store_enabled());
	ck_assert_int_eq(store_put(fd, "s%d.state", 42), 0);
	ck_assert_uint_eq(mgr_expect(&m, "FDSTORE=1\nFDNAME=s42.state", got, 4), 1);
	ck_assert_int_ne(got[0], fd);
	same_file(got[0], fd);
	ck_assert_int_eq(close(got[0]), 0);
	ck_assert_int_eq(store_put(fd, "f%u", 7u), 0);
	ck_assert_uint_eq(mgr_expect(&m, "FDSTORE=1\nFDNAME=f7", got, 4), 1);
	same_file(got[0], fd);
	ck_assert_int_eq(close(got[0]), 0);
	/* 31 bytes, the longest name. */
	ck_assert_int_eq(store_put(fd, "%s", "s1234567890123456789012345.uffd"), 0);
	ck_assert_uint_eq(
		mgr_expect(&m, "FDSTORE=1\nFDNAME=s1234567890123456789012345.uffd", got, 4), 1);
	ck_assert_int_eq(close(got[0]), 0);
#else
	/* No libsystemd: no store, nothing sent. */
	ck_assert(!store_enabled());
	ck_assert_int_eq(store_put(fd, "s%d.state", 42), 0);
#endif
	/* The caller's descriptor is still its own. */
	ck_assert_int_ge(fcntl(fd, F_GETFD), 0);
	mgr_none(&m);
	ck_assert_int_eq(close(fd), 0);
	mgr_close(&m);
}
END_TEST

START_TEST(store_remove_sends_fdstoreremove)
{
	struct mgr m;

	mgr_open(&m);
	store_remove("s%d.conn", 5);
#ifdef HAVE_SYSTEMD
	ck_assert_uint_eq(mgr_expect(&m, "FDSTOREREMOVE=1\nFDNAME=s5.conn", NULL, 0), 0);
#endif
	mgr_none(&m);
	mgr_close(&m);
}
END_TEST

/* A name with a control character, a ':', a byte past ASCII, none, or of 32
 * bytes: -EINVAL, nothing sent, with or without a store. */
START_TEST(store_bad_names_refused)
{
	static const char *const bad[] = {
		"",
		"a:b",
		"s1.conn\nFDSTORE=1",
		"tab\t",
		"del\x7f",
		"caf\xc3\xa9",
		"s12345678901234567890123456.uffd",
	};
	struct mgr m;

	mgr_open(&m);
	int fd = memfd_create("store-bad", MFD_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	for (size_t i = 0; i < PIN_ARRAY_SIZE(bad); i++) {
		ck_assert_msg(!store_name_valid(bad[i]), "name %zu taken", i);
		ck_assert_int_eq(store_put(fd, "%s", bad[i]), -EINVAL);
		store_remove("%s", bad[i]);
	}
	mgr_none(&m);
	ck_assert(store_name_valid("f1"));
	ck_assert(store_name_valid("a name, spaces too"));
	ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
	/* No store: a good name is 0, a bad one still -EINVAL. */
	ck_assert(!store_enabled());
	ck_assert_int_eq(store_put(fd, "f%d", 1), 0);
	ck_assert_int_eq(store_put(fd, "a:b"), -EINVAL);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", m.sa.sun_path, 1), 0);
	mgr_none(&m);
	ck_assert_int_eq(close(fd), 0);
	mgr_close(&m);
}
END_TEST

/* A listening AF_UNIX SOCK_SEQPACKET socket on an abstract address. */
static int listening(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa_family_t)) < 0 ||
	    listen(fd, 1) < 0)
		return -1;
	return fd;
}

static int memfd_with(const char *text)
{
	int fd = memfd_create(text, MFD_CLOEXEC);

	if (fd < 0 || pwrite(fd, text, strlen(text), 0) != (ssize_t)strlen(text))
		return -1;
	return fd;
}

/*
 * In a child: the fds made by kind[i] ('l' listening, 'm' memfd, 's' a
 * connected socket) at 3, 4, ..., passed with names as systemd passes them;
 * what store_start() made of them is written to out as text.  Exits 0, or 1
 * when it could not set up.
 */
static void __attribute__((noreturn)) split_child(int out, const char *kinds, const char *names)
{
	size_t n = strlen(kinds), k = 0;
	char buf[512], num[24];
	int sp[2];

	for (size_t i = 0; i < n; i++) {
		int fd = kinds[i] == 'l'   ? listening()
			 : kinds[i] == 'm' ? memfd_with("stored")
			 : socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0 ? -1
											 : sp[0];
		if (fd < 0 || fcntl(fd, F_DUPFD_CLOEXEC, PARK_FD + (int)i) != PARK_FD + (int)i)
			_exit(1);
	}
	close_range(3, PARK_FD - 1, 0);
	for (size_t i = 0; i < n; i++)
		if (dup2(PARK_FD + (int)i, 3 + (int)i) < 0)
			_exit(1);
	close_range(PARK_FD, REPORT_FD - 1, 0);
	snprintf(num, sizeof(num), "%zu", n);
	setenv("LISTEN_FDS", num, 1);
	snprintf(num, sizeof(num), "%d", (int)getpid());
	setenv("LISTEN_PID", num, 1);
	setenv("LISTEN_FDNAMES", names, 1);

	int *lfds;
	struct stored_fd *sv;
	size_t nl, ns;
	int r = store_start(&lfds, &nl, &sv, &ns);
	k += (size_t)snprintf(buf + k, sizeof(buf) - k, "r=%d", r);
	if (r == 0) {
		k += (size_t)snprintf(buf + k, sizeof(buf) - k, " listen=");
		for (size_t i = 0; i < nl; i++)
			k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s%d%s", i ? "," : "",
					      lfds[i],
					      fcntl(lfds[i], F_GETFD) == FD_CLOEXEC ? "" : "!");
		k += (size_t)snprintf(buf + k, sizeof(buf) - k, " stored=");
		for (size_t i = 0; i < ns; i++)
			k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s%d:%s%s", i ? "," : "",
					      sv[i].fd, sv[i].name,
					      fcntl(sv[i].fd, F_GETFD) == FD_CLOEXEC ? "" : "!");
		k += (size_t)snprintf(buf + k, sizeof(buf) - k, " env=%s",
				      getenv("LISTEN_FDS") ? "set" : "unset");
		free(lfds);
		free(sv);
	}
	_exit(write(out, buf, k) == (ssize_t)k ? 0 : 1);
}

/* What store_start() makes, in a child, of fds of kinds passed with names. */
static void split(const char *kinds, const char *names, const char *want)
{
	char buf[512];
	int p[2], status;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int out = fcntl(p[1], F_DUPFD_CLOEXEC, REPORT_FD);
		close_range(3, REPORT_FD - 1, 0);
		split_child(out, kinds, names);
	}
	ck_assert_int_eq(close(p[1]), 0);
	ssize_t len = read(p[0], buf, sizeof(buf) - 1);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	ck_assert_int_gt(len, 0);
	buf[len] = 0;
	ck_assert_str_eq(buf, want);
	ck_assert_int_eq(close(p[0]), 0);
}

/* Stored names go to the stored list, in order, anything else must listen;
 * every fd CLOEXEC, LISTEN_* gone from the environment. */
START_TEST(store_start_splits)
{
#ifdef HAVE_SYSTEMD
	split("lmsmlml", "listen:s1.state:s1.conn:f7:s1.connx:s12.uffd:f",
	      "r=0 listen=3,7,9 stored=4:s1.state,5:s1.conn,6:f7,8:s12.uffd env=unset");
	/* Not a stored name, not a listening socket: refused. */
	split("lm", "listen:s.state", "r=-22");
	split("ls", "listen:f7x", "r=-22");
#else
	/* No libsystemd: nothing passed is taken. */
	split("lm", "listen:s1.state", "r=0 listen= stored= env=set");
#endif
}
END_TEST

#ifdef HAVE_SYSTEMD
/*
 * The serving child of supervisor_hands_back_store.  The first stores three
 * memfds (a name twice), stores and removes a fourth, has a process of its
 * own (not the child) store a fifth, and fails; the next reports its
 * LISTEN_FDS (each stored file's text) to report and exits 0.
 */
static int sup_child(const char *report)
{
	struct stored_fd *sv;
	size_t nl, ns;
	int *lfds;
	char buf[256];
	size_t k = 0;

	if (store_start(&lfds, &nl, &sv, &ns) < 0)
		return 90;
	if (ns == 0) {
		if (store_put(memfd_with("state-1"), "s1.state") < 0 ||
		    store_put(memfd_with("file-2a"), "f2") < 0 ||
		    store_put(memfd_with("file-2b"), "f2") < 0 ||
		    store_put(memfd_with("conn-9"), "s9.conn") < 0)
			return 91;
		store_remove("s9.conn");
		pid_t pid = fork();
		if (pid == 0)
			_exit(store_put(memfd_with("stranger"), "f66") < 0 ? 1 : 0);
		int status;
		if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status))
			return 92;
		return 3;
	}
	k += (size_t)snprintf(buf + k, sizeof(buf) - k, "listen=%zu:%d stored=", nl,
			      nl ? lfds[0] : -1);
	for (size_t i = 0; i < ns; i++) {
		char text[16] = "";
		if (pread(sv[i].fd, text, sizeof(text) - 1, 0) < 0)
			return 93;
		k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s%d:%s:%s", i ? "," : "",
				      sv[i].fd, sv[i].name, text);
	}
	int fd = open(report, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, buf, k) != (ssize_t)k)
		return 94;
	return 0;
}

/* What a child stored (and did not remove) is the next child's LISTEN_FDS,
 * in order, after the listening socket; a stranger's datagram is not kept;
 * the supervisor exits with the code of a child that exits 0. */
START_TEST(supervisor_hands_back_store)
{
	char dir[] = "/tmp/uffdd-sup-XXXXXX", report[64], buf[256];
	int status;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(report, sizeof(report), "%s/report", dir);
	int lfd = listening();
	ck_assert_int_ge(lfd, 0);
	ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t sup = fork();
	ck_assert_int_ge(sup, 0);
	if (sup == 0) {
		if (supervise(&lfd, 1) < 0)
			_exit(89);
		_exit(sup_child(report));
	}
	ck_assert_int_eq(waitpid(sup, &status, 0), sup);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	int fd = open(report, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ssize_t len = read(fd, buf, sizeof(buf) - 1);
	ck_assert_int_gt(len, 0);
	buf[len] = 0;
	ck_assert_str_eq(buf, "listen=1:3 stored=4:s1.state:state-1,5:f2:file-2a,6:f2:file-2b");
	ck_assert_int_eq(close(fd), 0);
	ck_assert_int_eq(close(lfd), 0);
	ck_assert_int_eq(unlink(report), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* ---- the real uffdd and its supervisor ---- */

/*
 * The supervisor's one child, once it is another than other (0: any): waits,
 * bounded, for a restart to happen.  The supervisor has one thread, so its
 * task's children are all of them.
 */
static pid_t child_of(pid_t sup, pid_t other)
{
	char path[64], buf[64];
	unsigned int wait_ms = WAIT_MS * test_time_scale();

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)sup, (int)sup);
	for (unsigned int waited = 0; waited < wait_ms; waited += POLL_MS) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ck_assert_int_ge(fd, 0);
		ssize_t len = read(fd, buf, sizeof(buf) - 1);
		ck_assert_int_ge(len, 0);
		ck_assert_int_eq(close(fd), 0);
		buf[len] = 0;
		char *end;
		long pid = strtol(buf, &end, 10);
		if (len && *end == ' ' && !end[1] && pid != other)
			return (pid_t)pid;
		ck_assert_int_eq(waitpid(sup, NULL, WNOHANG), 0);
		test_sleep_ms(POLL_MS);
	}
	ck_abort_msg("supervisor %d: no child but %d within %u ms", (int)sup, (int)other, wait_ms);
	return -1;
}

/*
 * A client connects (bounded: the new child may still be starting) and its
 * Hello is answered: by child, the supervisor's only child (the supervisor
 * reads nothing a client sends; SO_PEERCRED names the supervisor, which
 * called listen()).
 */
static void served_by(const struct test_daemon *d, pid_t child)
{
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock };
	unsigned int wait_ms = WAIT_MS * test_time_scale();
	struct pin_client *c;

	for (unsigned int waited = 0; pin_client_connect(&co, &c) < 0; waited += POLL_MS) {
		ck_assert_msg(waited < wait_ms, "nothing answers on %s", d->sock);
		test_sleep_ms(POLL_MS);
	}
	ck_assert_int_eq(pin_client_goodbye(c), 0);
	pin_client_free(c);
	ck_assert_int_eq(child_of(d->pid, 0), child);
}

/* The supervisor has exited with code; its socket and its child are gone. */
static void all_gone(struct test_daemon *d, pid_t child, int code)
{
	struct stat st;
	int status;

	ck_assert_int_eq(waitpid(d->pid, &status, 0), d->pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == code,
		      "supervisor: %s %d, not exit %d", WIFEXITED(status) ? "exit" : "signal",
		      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), code);
	ck_assert_int_eq(stat(d->sock, &st), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(kill(child, 0), -1);
	ck_assert_int_eq(errno, ESRCH);
	ck_assert_int_eq(rmdir(d->dir), 0);
}

/* kill -9 of the serving child: a new one serves on the same socket. */
START_TEST(child_killed_is_replaced)
{
	struct test_daemon d;
	struct stat st;

	test_daemon_start_supervised(&d, NULL);
	pid_t c1 = child_of(d.pid, 0);
	ck_assert_int_eq(kill(c1, SIGKILL), 0);
	pid_t c2 = child_of(d.pid, c1);
	served_by(&d, c2);
	ck_assert_int_eq(stat(d.sock, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_int_eq(kill(d.pid, SIGTERM), 0);
	all_gone(&d, c2, 0);
}
END_TEST

/* SIGTERM of the supervisor: the child stops, both exit 0, the socket is
 * removed. */
START_TEST(sigterm_stops_both)
{
	struct test_daemon d;

	test_daemon_start_supervised(&d, NULL);
	pid_t c = child_of(d.pid, 0);
	served_by(&d, c);
	ck_assert_int_eq(kill(d.pid, SIGTERM), 0);
	all_gone(&d, c, 0);
}
END_TEST

/* Each of RESTART_BURST quick deaths is followed by a new child; one more
 * ends the supervisor with exit 1, its socket removed. */
START_TEST(burst_of_deaths_gives_up)
{
	struct test_daemon d;
	pid_t c = 0;

	test_daemon_start_supervised(&d, NULL);
	for (int i = 0; i <= RESTART_BURST; i++) {
		c = child_of(d.pid, c);
		ck_assert_int_eq(kill(c, SIGKILL), 0);
	}
	all_gone(&d, c, 1);
}
END_TEST
#endif

static void add(Suite *s, const char *name, const TTest *t, const struct test_needs *needs)
{
	TCase *tc = test_tcase(s, name, needs);

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, t);
}

Suite *test_suite(void)
{
	Suite *s = test_suite_new("supervise");
	const struct test_needs none = { 0 };

	add(s, "store_put_sends_fdstore", store_put_sends_fdstore, &none);
	add(s, "store_remove_sends_fdstoreremove", store_remove_sends_fdstoreremove, &none);
	add(s, "store_bad_names_refused", store_bad_names_refused, &none);
	add(s, "store_start_splits", store_start_splits, &none);
#ifdef HAVE_SYSTEMD
	const struct test_needs daemon = { .path_env = "UFFDD" };

	add(s, "supervisor_hands_back_store", supervisor_hands_back_store, &none);
	add(s, "child_killed_is_replaced", child_killed_is_replaced, &daemon);
	add(s, "sigterm_stops_both", sigterm_stops_both, &daemon);
	add(s, "burst_of_deaths_gives_up", burst_of_deaths_gives_up, &daemon);
#else
	printf("SKIP: supervise/supervisor: uffdd was built without libsystemd: no supervisor\n");
	fflush(stdout);
#endif
	return s;
}

const char *test_skip_reason(void)
{
	return NULL;
}
