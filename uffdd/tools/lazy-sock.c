// SPDX-License-Identifier: MIT
/*
 * CRIU's lazy-pages socket, the end uffdd-lazy-pages listens on
 * (lazy-pages.c): lazy-pages.socket in the work directory, removed when the
 * restore side has connected or when a signal ends the wait, and the two
 * things read from it: a 4-byte word (a task's pid, or the end of the
 * restore) and the one byte carrying a task's userfaultfd.  It calls libc
 * only.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lazy-sock.h"

/* lazy-pages.socket while it exists: removed once the restore side is
 * connected, or when a signal ends the wait for it. */
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static const int exit_signals[] = { SIGTERM, SIGINT, SIGHUP };

static void remove_socket_and_die(int sig)
{
	unlink(sock_path);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* How the socket file goes while it is listened on: a signal's handler. */
static void on_exit_signals(void (*handler)(int))
{
	for (size_t i = 0; i < sizeof(exit_signals) / sizeof(exit_signals[0]); i++)
		signal(exit_signals[i], handler);
}

int lazy_sock_listen(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/lazy-pages.socket", dir) >=
	    sizeof(sa.sun_path)) {
		fprintf(stderr, "uffdd-lazy-pages: %s/lazy-pages.socket: path too long\n", dir);
		return -ENAMETOOLONG;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(sa.sun_path);
	memcpy(sock_path, sa.sun_path, sizeof(sock_path));
	on_exit_signals(remove_socket_and_die);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
		int err = errno;
		fprintf(stderr, "uffdd-lazy-pages: bind/listen %s: %s\n", sa.sun_path,
			strerror(err));
		close(fd);
		unlink(sock_path);
		on_exit_signals(SIG_DFL);
		return -err;
	}
	return fd;
}

int lazy_sock_read_word(int sock, uint32_t *ret)
{
	ssize_t n;

	do
		n = recv(sock, ret, sizeof(*ret), MSG_WAITALL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == sizeof(*ret) ? 0 : -ECONNRESET;
}

int lazy_sock_read_fd(int sock)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *cm;
	ssize_t n;
	int fd;

	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	cm = CMSG_FIRSTHDR(&mh);
	if (n != 1 || (mh.msg_flags & MSG_CTRUNC) || !cm || cm->cmsg_level != SOL_SOCKET ||
	    cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EBADMSG;
	memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
	return fd;
}

void lazy_sock_remove(void)
{
	unlink(sock_path);
	on_exit_signals(SIG_DFL);
}
