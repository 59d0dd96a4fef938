// SPDX-License-Identifier: MIT
/*
 * The listening sockets (what store_start() found the manager passed, or
 * --socket PATH, bound here with the stale-socket rules), and accepting: each
 * client becomes a session with its peer's SO_PEERCRED identity, its socket
 * watched by a worker with control.c's request handler; one over its uid's
 * limits is answered -EDQUOT and closed.  listen_run() is the
 * main thread's loop until SIGTERM or SIGINT; it reaps readers and closers
 * on SIGCHLD, says a close that hangs, and tells the service manager's
 * watchdog that every worker goes round.  A connection to a
 * --firecracker-socket is a VM's session, given to firecracker.c (its
 * handshake).  It may call firecracker.c, control.c (the handler it
 * stores), worker.c, session.c, reader.c (reader_reap()), closer.c
 * (closer_reap(), closer_tick()), notify.c, log.c and util.c.
 */
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "uffdd.h"

#define MAX_LISTEN 8

/* uffdd's own sockets, then the Firecracker ones (listen_open_firecracker()). */
static int listen_fds[MAX_LISTEN + UFFDD_FC_MAX];
/* Of each: LISTEN_UFFDD, uffdd's protocol; LISTEN_STREAM, a SOCK_STREAM
 * socket passed that no pair took yet; else the --firecracker-socket pair's
 * index. */
#define LISTEN_UFFDD  (-1)
#define LISTEN_STREAM (-2)
static int listen_fc[MAX_LISTEN + UFFDD_FC_MAX];
static unsigned int nlisten;
static bool unlink_on_exit;
/* The Firecracker sockets this process bound: removed on exit. */
static bool fc_bound[UFFDD_FC_MAX];

static const char *socket_type(int type)
{
	return type == SOCK_STREAM ? "SOCK_STREAM" : "SOCK_SEQPACKET";
}

/*
 * Whether path, which bind() found taken, is a stale socket: a socket file
 * that nothing listens on (connect() is refused), left by a daemon that died.
 * Anything else is refused and left alone: not a socket (a file, a log being
 * written), a live uffdd, or another service's socket of another type.
 */
static int stale_socket(const char *path, const struct sockaddr_un *sa, int type)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		int err = errno;
		ulog(LOG_ERR, "%s: %s", path, strerror(err));
		return -err;
	}
	if (!S_ISSOCK(st.st_mode)) {
		ulog(LOG_ERR, "%s exists and is not a socket; not removing it", path);
		return -EEXIST;
	}
	_cleanup_close_ int probe = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (probe < 0) {
		int err = errno;
		ulog(LOG_ERR, "socket(AF_UNIX, %s): %s", socket_type(type), strerror(err));
		return -err;
	}
	if (connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
		ulog(LOG_ERR, "%s: another uffdd is listening there", path);
		return -EADDRINUSE;
	}
	if (errno != ECONNREFUSED) {
		int err = errno;
		ulog(LOG_ERR, "%s: a live socket of another kind (connect: %s); not removing it",
		     path, strerror(err));
		return -EADDRINUSE;
	}
	return 0;
}

/* Bind and listen on path, a socket of type (uffdd's SOCK_SEQPACKET, or
 * Firecracker's SOCK_STREAM). */
static int listen_path(const char *path, int type)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(sa.sun_path)) {
		ulog(LOG_ERR, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		int err = errno;
		ulog(LOG_ERR, "socket(AF_UNIX, %s): %s", socket_type(type), strerror(err));
		return -err;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno != EADDRINUSE)
			goto fail_bind;
		int r = stale_socket(path, &sa, type);
		if (r < 0) {
			close(fd);
			return r;
		}
		if (unlink(path) < 0 && errno != ENOENT) {
			ulog(LOG_ERR, "unlink stale socket %s: %m", path);
			close(fd);
			return -errno;
		}
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto fail_bind;
	}
	if (listen(fd, SOMAXCONN) < 0) {
		ulog(LOG_ERR, "listen %s: %m", path);
		close(fd);
		return -errno;
	}
	return fd;
fail_bind:;
	int err = errno;
	ulog(LOG_ERR, "bind %s: %s", path, strerror(err));
	close(fd);
	return -err;
}

int listen_open(const int *fds, size_t n)
{
	/* A supervised child inherits what its parent opened: start afresh. */
	nlisten = 0;
	unlink_on_exit = false;
	memset(fc_bound, 0, sizeof(fc_bound));
	if (n > MAX_LISTEN) {
		ulog(LOG_ERR, "%zu listening sockets passed; at most %d", n, MAX_LISTEN);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		int flags = fcntl(fds[i], F_GETFL);
		if (flags < 0 || fcntl(fds[i], F_SETFL, flags | O_NONBLOCK) < 0) {
			int err = errno;
			ulog(LOG_ERR, "fcntl(listening fd %d, O_NONBLOCK): %s", fds[i],
			     strerror(err));
			return -err;
		}
		int type;
		socklen_t len = sizeof(type);
		if (getsockopt(fds[i], SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
			int err = errno;
			ulog(LOG_ERR, "getsockopt(listening fd %d, SO_TYPE): %s", fds[i],
			     strerror(err));
			return -err;
		}
		listen_fc[nlisten] = type == SOCK_STREAM ? LISTEN_STREAM : LISTEN_UFFDD;
		listen_fds[nlisten++] = fds[i];
	}
	if (nlisten)
		return 0;
	if (!uffdd_cfg.socket_path) {
		ulog(LOG_ERR, "no socket: give --socket PATH or start through uffdd.socket");
		return -EINVAL;
	}
	int fd = listen_path(uffdd_cfg.socket_path, SOCK_SEQPACKET);
	if (fd < 0)
		return fd;
	unlink_on_exit = true;
	listen_fc[nlisten] = LISTEN_UFFDD;
	listen_fds[nlisten++] = fd;
	return 0;
}

/* The index of the SOCK_STREAM socket passed that listens at path; -1. */
static int passed_at(const char *path)
{
	for (unsigned int k = 0; k < nlisten; k++) {
		struct sockaddr_un sa;
		socklen_t len = sizeof(sa);
		if (listen_fc[k] != LISTEN_STREAM ||
		    getsockname(listen_fds[k], (struct sockaddr *)&sa, &len) < 0 ||
		    len <= offsetof(struct sockaddr_un, sun_path))
			continue;
		size_t n = len - offsetof(struct sockaddr_un, sun_path);
		if (strnlen(sa.sun_path, n) == strlen(path) && !strncmp(sa.sun_path, path, n))
			return (int)k;
	}
	return -1;
}

int listen_open_firecracker(void)
{
	for (unsigned int i = 0; i < uffdd_cfg.nfc; i++) {
		/* The service manager's (it outlives a restart: VMs that
		 * connect meanwhile wait in its backlog), else our own. */
		int k = passed_at(uffdd_cfg.fc[i].socket);
		if (k >= 0) {
			listen_fc[k] = (int)i;
			continue;
		}
		int fd = listen_path(uffdd_cfg.fc[i].socket, SOCK_STREAM);
		if (fd < 0)
			return fd;
		fc_bound[i] = true;
		listen_fc[nlisten] = (int)i;
		listen_fds[nlisten++] = fd;
	}
	for (unsigned int k = 0; k < nlisten; k++)
		if (listen_fc[k] == LISTEN_STREAM) {
			ulog(LOG_ERR,
			     "listening fd %d is a SOCK_STREAM socket that no --firecracker-socket "
			     "names",
			     listen_fds[k]);
			return -EINVAL;
		}
	return 0;
}

size_t listen_get(const int **ret_fds)
{
	*ret_fds = listen_fds;
	return nlisten;
}

static void unlink_logged(const char *path)
{
	if (unlink(path) < 0 && errno != ENOENT) {
		int err = errno;
		ulog(LOG_ERR, "unlink %s: %s", path, strerror(err));
	}
}

void listen_unlink(void)
{
	if (unlink_on_exit)
		unlink_logged(uffdd_cfg.socket_path);
	for (unsigned int i = 0; i < uffdd_cfg.nfc; i++)
		if (fc_bound[i])
			unlink_logged(uffdd_cfg.fc[i].socket);
}

/* Out of descriptors (or of socket memory): accept() fails at once again
 * while the connection waits, so stop watching the listening sockets this
 * long, and let sessions end and free theirs. */
#define BACKOFF_NS (100ull * 1000000)

static bool out_of_fds(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* Messages of a refused client read and dropped before its connection is
 * closed: closing with some unread makes the client's next receive fail
 * ECONNRESET before it gets the Reply queued for it.  A Hello that comes
 * after the drain still does that, or, after the close, fails EPIPE; either
 * way the Reply is there for the client's next receive (libpin reads it:
 * client:refusal_read_after_reset).  A client sends its Hello, then waits. */
#define REFUSED_DRAIN_MAX 16

/* A connection over its uid's limits (session_new() logged why): tell the
 * client, then close it. */
static void refuse(int fd)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Reply rep = UFFDD__REPLY__INIT;

	rep.error = -EDQUOT;
	rep.text = "over a per-uid limit of uffdd: see uffdd(8), LIMITS";
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	/* Non-blocking, to a socket nobody has written to: it fits, or the
	 * client is gone and closing is all there is left to do. */
	pin_proto_send(fd, &m, NULL, 0);
	for (int i = 0; i < REFUSED_DRAIN_MAX; i++) {
		char b;
		/* MSG_TRUNC: the datagram is dropped whole; EAGAIN: none left. */
		if (recv(fd, &b, sizeof(b), MSG_DONTWAIT | MSG_TRUNC) < 0)
			break;
	}
	close(fd);
}

/* Accept what waits on listening socket k: 0, or -errno when the daemon is
 * out of descriptors (the caller backs off). */
static int accept_all(unsigned int k)
{
	int lfd = listen_fds[k];
	char name[sizeof(((struct session *)0)->name)];

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			int err = errno;
			if (err == EINTR)
				continue;
			if (out_of_fds(err))
				return -err;
			if (err != EAGAIN)
				ulog(LOG_ERR, "accept4(listening fd %d): %s", lfd, strerror(err));
			return 0;
		}
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			ulog(LOG_ERR, "getsockopt(SO_PEERCRED): %m");
			close(fd);
			continue;
		}
		struct session *s;
		uffdd_hold("conn-accepted");
		const char *fc = listen_fc[k] == LISTEN_UFFDD
					 ? NULL
					 : fc_name((unsigned int)listen_fc[k], name, sizeof(name));
		int r = session_new(fd, cred.pid, cred.uid, fc, &s);
		/* A VM reads no reply: the log says why (session_new()). */
		if (r == -EDQUOT && !fc) {
			refuse(fd);
			continue;
		}
		if (r < 0) {
			close(fd);
			if (out_of_fds(-r))
				return r;
			ulog(LOG_ERR, "new session for pid %d uid %u: %s", (int)cred.pid, cred.uid,
			     strerror(-r));
			continue;
		}
		ulog(LOG_INFO, "session %" PRIu64 ": pid %d uid %u%s%s", s->id, (int)cred.pid,
		     cred.uid, fc ? ", " : "", fc ? fc : "");
		if (fc)
			fc_accepted(s);
		else
			s->wsock.handle = control_handle;
		uffdd_hold("fc-accepted");
		workers_assign(s);
	}
}

/* Watch the listening sockets in ep, or stop watching them. */
static int watch_listening(int ep, bool on)
{
	for (unsigned int i = 0; i < nlisten; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
		if (epoll_ctl(ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, listen_fds[i], &ev) < 0) {
			int err = errno;
			ulog(LOG_ERR, "epoll_ctl(%s, listening fd %d): %s", on ? "ADD" : "DEL",
			     listen_fds[i], strerror(err));
			return -err;
		}
	}
	return 0;
}

/*
 * The service manager's watchdog: every quarter of its interval, WATCHDOG=1
 * when every worker went round within half of it (and this thread runs).  A
 * worker stuck (in a call that never returns) stops it, and systemd restarts
 * the daemon, which loses nothing (durable sessions).  A source that never
 * answers stalls its reader only (reader.c), never a worker.  Returns the ms
 * until the next look (-1: no watchdog).
 */
static int watchdog_step(uint64_t now, uint64_t *next)
{
	static struct ratelimit rl;
	uint64_t wd = uffdd_cfg.watchdog_ns;
	unsigned int stuck;

	if (!wd)
		return -1;
	if (now >= *next) {
		if (workers_alive(now - wd / 2, &stuck))
			notify_watchdog();
		else
			ulog_rl(&rl, LOG_ERR,
				"worker %u has not gone round for over %" PRIu64
				" ms: no WATCHDOG=1, so the service manager restarts us",
				stuck, wd / 2 / 1000000);
		*next = now + wd / 4;
	}
	/* Rounded up: never a busy 0 ms wait. */
	return (int)((*next - now + 999999) / 1000000);
}

int listen_run(void)
{
	uint64_t next_pet = 0;
	sigset_t mask;
	struct epoll_event ev = { .events = EPOLLIN };
	static struct ratelimit rl;
	uint64_t until = 0;	    /* backing off until then; 0: not */
	unsigned long backoffs = 0; /* since the last accept that went through */

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	/* A session's reader ended (reader.c), or a closer (closer.c) ended
	 * or started. */
	sigaddset(&mask, SIGCHLD);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || ep < 0) {
		ulog(LOG_ERR, "signalfd/epoll_create1: %m");
		return 1;
	}
	/* Listening sockets are watched by their index: past them, the signalfd. */
	ev.data.u32 = MAX_LISTEN + UFFDD_FC_MAX;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) < 0) {
		ulog(LOG_ERR, "epoll_ctl(ADD, signalfd): %m");
		return 1;
	}
	if (watch_listening(ep, true) < 0)
		return 1;
	for (;;) {
		struct epoll_event evs[MAX_LISTEN + UFFDD_FC_MAX + 1];
		uint64_t now = uffdd_now_ns();
		int timeout = watchdog_step(now, &next_pet);
		int slow = closer_tick(now);
		if (slow >= 0 && (timeout < 0 || slow < timeout))
			timeout = slow;
		if (until) {
			if (now >= until) {
				if (watch_listening(ep, true) < 0)
					return 1;
				until = 0;
				continue;
			}
			/* Rounded up: never a busy 0 ms wait. */
			int t = (int)((until - now + 999999) / 1000000);
			if (timeout < 0 || t < timeout)
				timeout = t;
		}
		int n = epoll_wait(ep, evs, PIN_ARRAY_SIZE(evs), timeout);
		if (n < 0 && errno != EINTR) {
			ulog(LOG_ERR, "epoll_wait(listening sockets): %m");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u32 < nlisten) {
				if (until)
					continue;
				int r = accept_all(evs[i].data.u32);
				if (!r) {
					backoffs = 0;
					continue;
				}
				backoffs++;
				ulog_rl(&rl, LOG_WARNING,
					"accept4: %s: not accepting for %llu ms (back-off %lu); "
					"new clients wait in the backlog",
					strerror(-r), BACKOFF_NS / 1000000, backoffs);
				if (watch_listening(ep, false) < 0)
					return 1;
				until = uffdd_now_ns() + BACKOFF_NS;
				continue;
			}
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) != sizeof(si))
				continue;
			if (si.ssi_signo == SIGCHLD) {
				reader_reap();
				closer_reap();
				continue;
			}
			ulog(LOG_INFO,
			     "signal %u: exiting; clients keep their userfaultfds and "
			     "hand them to the next daemon",
			     si.ssi_signo);
			listen_unlink();
			return 0;
		}
	}
}
