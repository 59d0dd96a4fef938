// SPDX-License-Identifier: MIT
/*
 * A stand-in for uffdd that the durable suite's manager test starts in its
 * place: it sends the notifications a service manager must sort out (a
 * duplicate, a hangup, a blocking userfaultfd, a removal, a bad name, a
 * message too long, one from another pid) with raw sendmsg(), as
 * sd_pid_notify_with_fds() does, and writes what it was started with
 * (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, each fd's kind and close-on-exec
 * flag) to $FAKE_REPORT, one line per start.  Started with fds from the
 * store, it hands each back under its name.  SIGTERM: exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* One byte over what systemd reads (NOTIFY_BUFFER_MAX - 1). */
#define TOO_LONG     4096
#define NAME_MAX_LEN 256

static int fail(const char *what)
{
	fprintf(stderr, "fake-uffdd: %s: %s\n", what, strerror(errno));
	return 1;
}

/* Send msg with fd (-1: none) to $NOTIFY_SOCKET; 0 or -1. */
static int notify(const char *msg, size_t len, int fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} c = { 0 };
	struct iovec iov = { (void *)msg, len };
	struct msghdr mh = {
		.msg_name = &sa, .msg_namelen = sizeof(sa), .msg_iov = &iov, .msg_iovlen = 1
	};
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", getenv("NOTIFY_SOCKET"));
	if (fd >= 0) {
		mh.msg_control = &c;
		mh.msg_controllen = sizeof(c);
		struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
		h->cmsg_level = SOL_SOCKET;
		h->cmsg_type = SCM_RIGHTS;
		h->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(h), &fd, sizeof(int));
	}
	int r = s >= 0 && sendmsg(s, &mh, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
	if (s >= 0)
		close(s);
	return r;
}

static int store(int fd, const char *name)
{
	char msg[sizeof("FDSTORE=1\nFDNAME=") + NAME_MAX_LEN];
	int n = snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);

	return notify(msg, (size_t)n, fd);
}

static int memfd(void)
{
	return memfd_create("fake", MFD_CLOEXEC);
}

/* A userfaultfd after its handshake, blocking or not: from /dev/userfaultfd
 * (valgrind 3.19 lacks the syscall), else the syscall. */
static int uffd(int nonblock)
{
	struct uffdio_api api = { .api = UFFD_API };
	int flags = O_CLOEXEC | (nonblock ? O_NONBLOCK : 0), fd = -1;
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		close(dev);
	}
	if (fd < 0)
		fd = (int)syscall(SYS_userfaultfd, flags);

	if (fd < 0 || ioctl(fd, UFFDIO_API, &api) < 0)
		return -1;
	return fd;
}

static int first_start(void)
{
	int a = memfd(), b = memfd(), c = memfd(), sp[2], pp[2];
	char big[TOO_LONG + 1];

	if (a < 0 || b < 0 || c < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pp) < 0)
		return fail("making descriptors");
	int blocking = uffd(0), nonblocking = uffd(1);
	if (blocking < 0 || nonblocking < 0)
		return fail("userfaultfd");
	/* Stored once: the same open file again, under its name or another. */
	if (store(a, "s1.state") || store(a, "s1.state") || store(dup(a), "s9.state"))
		return fail("storing s1.state");
	/* A connection whose peer hangs up: the manager drops it. */
	if (store(sp[0], "s1.conn"))
		return fail("storing s1.conn");
	close(sp[0]);
	close(sp[1]);
	/* A connection and its peer, both kept. */
	if (store(pp[0], "s2.conn") || store(pp[1], "s2.peer"))
		return fail("storing s2");
	/* A name systemd refuses: stored as "stored". */
	if (store(b, "bad:name"))
		return fail("storing bad:name");
	/* Stored, then removed. */
	if (store(c, "s3.state") || notify("FDSTOREREMOVE=1\nFDNAME=s3.state",
					   strlen("FDSTOREREMOVE=1\nFDNAME=s3.state"), -1))
		return fail("storing and removing s3.state");
	/* A blocking userfaultfd polls EPOLLERR: dropped at once. */
	if (store(blocking, "s4.uffd") || store(nonblocking, "s5.uffd"))
		return fail("storing userfaultfds");
	/* Too long for the manager: ignored, its fd closed. */
	memset(big, 'x', sizeof(big));
	memcpy(big, "FDSTORE=1\nFDNAME=s7.state\nX=", strlen("FDSTORE=1\nFDNAME=s7.state\nX="));
	if (notify(big, sizeof(big), memfd()))
		return fail("sending a message too long");
	/* From another pid (NotifyAccess=main): ignored, its fd closed. */
	pid_t pid = fork();
	if (pid < 0)
		return fail("fork");
	if (pid == 0)
		_exit(store(memfd(), "s8.state") ? 1 : 0);
	int st;
	if (waitpid(pid, &st, 0) != pid)
		return fail("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "fake-uffdd: the other pid could not send (status %#x)\n", st);
		return 1;
	}
	return notify("READY=1", strlen("READY=1"), -1) ? fail("READY=1") : 0;
}

/* Hand every stored descriptor back under its name. */
static int again(int n, const char *names)
{
	char copy[4096], *save = NULL;

	snprintf(copy, sizeof(copy), "%s", names);
	char *name = strtok_r(copy, ":", &save); /* the listening socket's */
	for (int fd = 4; fd < 3 + n; fd++) {
		name = strtok_r(NULL, ":", &save);
		if (!name || store(fd, name))
			return fail("storing again");
	}
	return notify("READY=1", strlen("READY=1"), -1) ? fail("READY=1") : 0;
}

static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}

int main(void)
{
	const char *lpid = getenv("LISTEN_PID"), *lfds = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	int n = lfds ? atoi(lfds) : 0, type = 0, listening = 0;
	socklen_t len = sizeof(int);
	char line[8192];
	size_t k = 0;

	signal(SIGTERM, on_term);
	/* Looked at before this process opens anything. */
	getsockopt(3, SOL_SOCKET, SO_TYPE, &type, &len);
	len = sizeof(int);
	getsockopt(3, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
	k += (size_t)snprintf(
		line + k, sizeof(line) - k, "pid %s fds %d names %s fd3 %s",
		lpid && atoi(lpid) == getpid() ? "ok" : "wrong", n, names ? names : "(none)",
		type == SOCK_SEQPACKET && listening ? "listening-seqpacket" : "other");
	for (int fd = 3; fd < 3 + n && k < sizeof(line); fd++)
		k += (size_t)snprintf(line + k, sizeof(line) - k, " %d%s", fd,
				      fcntl(fd, F_GETFD) & FD_CLOEXEC ? "cloexec" : "");
	if (k < sizeof(line))
		snprintf(line + k, sizeof(line) - k, " next %s\n",
			 fcntl(3 + n, F_GETFD) < 0 ? "closed" : "open");
	FILE *f = fopen(getenv("FAKE_REPORT"), "ae");
	if (!f || fputs(line, f) < 0 || fclose(f) != 0)
		return fail("$FAKE_REPORT");
	int r = n > 1 ? again(n, names) : first_start();
	if (r)
		return r;
	for (;;)
		pause();
}
