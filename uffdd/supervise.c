// SPDX-License-Identifier: MIT
/*
 * The supervisor: when no service manager keeps an fd store (uffdd --socket
 * PATH, containers, tests), the parent process plays one for its serving
 * child.  It owns the notify socket (an abstract datagram socket the child
 * knows as NOTIFY_SOCKET), the descriptors stored there by name, and the
 * child's life: start it with the listening sockets and the store
 * (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, as systemd does), restart it when
 * it dies of a signal or fails, give up after a burst of quick failures, and
 * stop it on SIGTERM or SIGINT.  The parent reads nothing a client sends and
 * never waits on the child: it reads datagrams and signals only.  It may call
 * listen.c (to remove the socket it bound), store.c (the names it takes),
 * closer.c (a stored descriptor dropped may be a FUSE file, closed by a
 * closer, charged to root), log.c and util.c.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "uffdd.h"

/* systemd's StartLimitBurst=5 in StartLimitIntervalSec=10s: the sixth
 * failure within 10 s ends the supervisor instead of a restart loop. */
#define RESTART_BURST	  5
#define RESTART_WINDOW_NS (10ull * 1000000000ull)
/* FileDescriptorStoreMax= of the supervisor: the most descriptors kept
 * (fewer when RLIMIT_NOFILE cannot hold them twice, see store_cap()). */
#define STORE_MAX_DEFAULT 65536u
/* A child starting holds each stored descriptor twice for a moment
 * (child_fds() copies them all above their places first). */
#define FD_COPIES_AT_START 2u
/* The store's array starts with room for this many and doubles. */
#define STORE_CAP_FIRST 64u
/* Descriptors besides the store's: stdio, the notify socket, the signalfd,
 * the listening sockets, and what a child needs before it serves. */
#define FD_RESERVE 64u
/* A notify message, as systemd reads it (NOTIFY_BUFFER_MAX: PIPE_BUF). */
#define NOTIFY_MSG_MAX 4096
/* SCM_MAX_FD: the most descriptors one datagram carries. */
#define NOTIFY_FDS_MAX 253
/* Datagrams read per wakeup, so that a flood never starves the signals. */
#define NOTIFY_BATCH 64
/* After the child died, what it may have left queued is read before its
 * successor starts; more than any queue the kernel keeps for it
 * (net.unix.max_dgram_qlen datagrams), fewer than a flood by another sender. */
#define NOTIFY_DRAIN_MAX 65536
/* "@uffdd-<pid>-<64 random bits in hex>" and its NUL. */
#define NOTIFY_NAME_MAX (sizeof("@uffdd--") + 10 + 16)
/* Where LISTEN_FDS begin (SD_LISTEN_FDS_START). */
#define LISTEN_FDS_START 3u
/* Signals read per wakeup (signalfd coalesces each kind). */
#define SIGNAL_BATCH 8
/* systemd's name for a descriptor stored without FDNAME=. */
#define STORE_DEFAULT_NAME "stored"
/* The name of the listening sockets in LISTEN_FDNAMES (store_start() takes
 * any name that is not a stored one for a listening socket). */
#define LISTEN_NAME "listen"

struct sup {
	const int *listen;
	size_t nlisten;
	int nfd; /* the notify socket */
	int sfd; /* signalfd: SIGCHLD, SIGTERM, SIGINT */
	char notify_name[NOTIFY_NAME_MAX];
	sigset_t oldmask;
	struct stored_fd *v; /* the store, in the order stored */
	size_t n, cap, max;
	pid_t child;
	pid_t self;
	bool stopping;		       /* SIGTERM or SIGINT went to the child */
	uint64_t fails[RESTART_BURST]; /* when the last failures were, a ring */
	unsigned int nfails;
};

static void close_logged(int fd, const char *what)
{
	if (close(fd) < 0) {
		int err = errno;
		ulog(LOG_ERR, "close(%s fd %d): %s", what, fd, strerror(err));
	}
}

static void close_fds(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close_logged(fds[i], "received");
}

/* Close everything and exit: clients on the stored connections see the end
 * at once. */
static void __attribute__((noreturn)) sup_exit(struct sup *s, int code)
{
	for (size_t i = 0; i < s->n; i++)
		close_logged(s->v[i].fd, "stored");
	free(s->v);
	for (size_t i = 0; i < s->nlisten; i++)
		close_logged(s->listen[i], "listening");
	close_logged(s->nfd, "notify");
	close_logged(s->sfd, "signalfd");
	listen_unlink();
	exit(code);
}

/*
 * The most descriptors the store keeps: FD_COPIES_AT_START of each, and
 * FD_RESERVE, within RLIMIT_NOFILE, raised to its hard limit.
 */
static int store_cap(struct sup *s)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		int err = errno;
		ulog(LOG_ERR, "getrlimit(RLIMIT_NOFILE): %s", strerror(err));
		return -err;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			int err = errno;
			ulog(LOG_ERR, "setrlimit(RLIMIT_NOFILE, %llu): %s",
			     (unsigned long long)rl.rlim_cur, strerror(err));
			return -err;
		}
	}
	uint64_t room = rl.rlim_cur > FD_RESERVE + s->nlisten
				? (rl.rlim_cur - FD_RESERVE - s->nlisten) / FD_COPIES_AT_START
				: 0;
	s->max = room < STORE_MAX_DEFAULT ? (size_t)room : STORE_MAX_DEFAULT;
	ulog(LOG_INFO, "fd store: at most %zu descriptors (RLIMIT_NOFILE %llu)", s->max,
	     (unsigned long long)rl.rlim_cur);
	return 0;
}

/* The notify socket: abstract, so nothing is left on disk; its name has a
 * random part so that no other process guesses it in advance, and only the
 * child's datagrams are taken (SO_PASSCRED: the kernel says who sent each). */
static int notify_open(struct sup *s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t rnd;
	int one = 1;

	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd)) {
		int err = errno;
		ulog(LOG_ERR, "getrandom(%zu bytes): %s", sizeof(rnd), strerror(err));
		return -err;
	}
	snprintf(s->notify_name, sizeof(s->notify_name), "@uffdd-%d-%016" PRIx64, (int)s->self,
		 rnd);
	size_t len = strlen(s->notify_name);
	memcpy(sa.sun_path + 1, s->notify_name + 1, len - 1);
	s->nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->nfd < 0) {
		int err = errno;
		ulog(LOG_ERR, "socket(AF_UNIX, SOCK_DGRAM): %s", strerror(err));
		return -err;
	}
	if (bind(s->nfd, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + len) <
		    0 ||
	    setsockopt(s->nfd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
		int err = errno;
		ulog(LOG_ERR, "notify socket %s (bind, SO_PASSCRED): %s", s->notify_name,
		     strerror(err));
		close_logged(s->nfd, "notify");
		return -err;
	}
	return 0;
}

/* Keep fd under name; a name stored twice keeps both, as systemd does. */
static void store_keep(struct sup *s, int fd, const char *name)
{
	if (s->n >= s->max) {
		ulog(LOG_WARNING, "fd store full (%zu descriptors): %s (fd %d) refused", s->max,
		     name, fd);
		close_logged(fd, "refused");
		return;
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : STORE_CAP_FIRST;
		if (cap > s->max)
			cap = s->max;
		struct stored_fd *v = realloc(s->v, cap * sizeof(*v));
		if (!v) {
			ulog(LOG_ERR, "fd store: %zu descriptors: %s; %s (fd %d) refused", cap,
			     strerror(ENOMEM), name, fd);
			close_logged(fd, "refused");
			return;
		}
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n].fd = fd;
	strcpy(s->v[s->n++].name, name);
}

/* FDSTOREREMOVE=1: drop every descriptor stored under name. */
static void store_drop(struct sup *s, const char *name)
{
	size_t k = 0;

	for (size_t i = 0; i < s->n; i++) {
		if (strcmp(s->v[i].name, name)) {
			s->v[k++] = s->v[i];
			continue;
		}
		/* A client's source file (f<id>) may be a FUSE file, whose
		 * close waits for its server: never here. */
		closer_close(s->v[i].fd, 0);
	}
	s->n = k;
}

/* Act on one message of the child's: its lines, and the fds that came with it. */
static void notify_apply(struct sup *s, char *msg, int *fds, size_t nfds)
{
	bool fdstore = false, remove = false;
	const char *name = NULL;

	for (char *line; (line = strsep(&msg, "\n"));) {
		if (!strcmp(line, "FDSTORE=1"))
			fdstore = true;
		else if (!strcmp(line, "FDSTOREREMOVE=1"))
			remove = true;
		else if (!strncmp(line, "FDNAME=", strlen("FDNAME=")))
			name = line + strlen("FDNAME=");
		else if (!strcmp(line, "READY=1"))
			ulog(LOG_INFO, "serving child %d ready", (int)s->child);
	}
	if (name && !store_name_valid(name)) {
		ulog(LOG_WARNING, "notify from child %d: invalid FDNAME=%.*s; ignored",
		     (int)s->child, STORE_NAME_MAX, name);
		close_fds(fds, nfds);
		return;
	}
	if (remove && name)
		store_drop(s, name);
	if (!fdstore) {
		close_fds(fds, nfds);
		return;
	}
	for (size_t i = 0; i < nfds; i++)
		store_keep(s, fds[i], name ? name : STORE_DEFAULT_NAME);
}

/* Read one datagram: 1 when one was read, 0 when none is queued. */
static int notify_read(struct sup *s)
{
	char buf[NOTIFY_MSG_MAX + 1];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred)) +
			 CMSG_SPACE(sizeof(int) * NOTIFY_FDS_MAX)];
	} cbuf;
	struct iovec iov = { buf, NOTIFY_MSG_MAX };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf.buf,
		.msg_controllen = sizeof(cbuf.buf),
	};
	int fds[NOTIFY_FDS_MAX];
	size_t nfds = 0;
	struct ucred cred = { .pid = 0 };

	ssize_t len = recvmsg(s->nfd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (len < 0) {
		int err = errno;
		if (err != EAGAIN && err != EINTR)
			ulog(LOG_ERR, "recvmsg(notify socket %s): %s", s->notify_name,
			     strerror(err));
		return 0;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET)
			continue;
		if (c->cmsg_type == SCM_CREDENTIALS &&
		    c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
			memcpy(&cred, CMSG_DATA(c), sizeof(cred));
		} else if (c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			if (nfds + k > NOTIFY_FDS_MAX)
				k = NOTIFY_FDS_MAX - nfds;
			memcpy(fds + nfds, CMSG_DATA(c), k * sizeof(int));
			nfds += k;
		}
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		ulog(LOG_WARNING, "notify from pid %d: truncated (%zd bytes, %zu fds); ignored",
		     (int)cred.pid, len, nfds);
		close_fds(fds, nfds);
		return 1;
	}
	if (!s->child || cred.pid != s->child) {
		ulog(LOG_DEBUG, "notify from pid %d, not the serving child %d: ignored",
		     (int)cred.pid, (int)s->child);
		close_fds(fds, nfds);
		return 1;
	}
	buf[len] = 0;
	notify_apply(s, buf, fds, nfds);
	return 1;
}

/*
 * In the child: the listening sockets then the store at 3, 4, ... (each
 * copied above them first, so that no move overwrites one not moved yet),
 * everything else closed.
 */
static int child_fds(struct sup *s)
{
	size_t n = s->nlisten + s->n;
	int *tmp = calloc(n ? n : 1, sizeof(*tmp));

	if (!tmp) {
		ulog(LOG_ERR, "child: %zu descriptors: %s", n, strerror(ENOMEM));
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		int fd = i < s->nlisten ? s->listen[i] : s->v[i - s->nlisten].fd;
		tmp[i] = fcntl(fd, F_DUPFD_CLOEXEC, (int)(LISTEN_FDS_START + n));
		if (tmp[i] < 0) {
			int err = errno;
			ulog(LOG_ERR, "child: fcntl(fd %d, F_DUPFD_CLOEXEC, %zu): %s", fd,
			     LISTEN_FDS_START + n, strerror(err));
			free(tmp);
			return -err;
		}
	}
	for (size_t i = 0; i < n; i++) {
		/* dup2() leaves the new descriptor without FD_CLOEXEC. */
		if (dup2(tmp[i], (int)(LISTEN_FDS_START + i)) < 0) {
			int err = errno;
			ulog(LOG_ERR, "child: dup2(%d, %zu): %s", tmp[i], LISTEN_FDS_START + i,
			     strerror(err));
			free(tmp);
			return -err;
		}
	}
	free(tmp);
	if (close_range((unsigned int)(LISTEN_FDS_START + n), ~0u, 0) < 0) {
		int err = errno;
		ulog(LOG_ERR, "child: close_range(%zu, ~0): %s", LISTEN_FDS_START + n,
		     strerror(err));
		return -err;
	}
	return 0;
}

/* In the child: LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and NOTIFY_SOCKET. */
static int child_env(struct sup *s)
{
	size_t n = s->nlisten + s->n;
	char *names = malloc(n * STORE_NAME_MAX + 1);
	char num[32];
	size_t k = 0;

	if (!names) {
		ulog(LOG_ERR, "child: LISTEN_FDNAMES of %zu names: %s", n, strerror(ENOMEM));
		return -ENOMEM;
	}
	names[0] = 0;
	for (size_t i = 0; i < n; i++) {
		const char *name = i < s->nlisten ? LISTEN_NAME : s->v[i - s->nlisten].name;
		k += (size_t)sprintf(names + k, "%s%s", i ? ":" : "", name);
	}
	int r = 0;
	snprintf(num, sizeof(num), "%zu", n);
	r |= setenv("LISTEN_FDS", num, 1);
	snprintf(num, sizeof(num), "%d", (int)getpid());
	r |= setenv("LISTEN_PID", num, 1);
	r |= setenv("LISTEN_FDNAMES", names, 1);
	r |= setenv("NOTIFY_SOCKET", s->notify_name, 1);
	free(names);
	if (r < 0) {
		int err = errno;
		ulog(LOG_ERR, "child: setenv(LISTEN_*, NOTIFY_SOCKET): %s", strerror(err));
		return -err;
	}
	return 0;
}

/* The child, after fork(): ends the supervisor's part in it, or exits. */
static void child_setup(struct sup *s)
{
	/* When the supervisor dies, so does the child (it stops as on
	 * SIGTERM); getppid() tells whether that happened before prctl(). */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0) {
		int err = errno;
		ulog(LOG_ERR, "child: prctl(PR_SET_PDEATHSIG, SIGTERM): %s", strerror(err));
		_exit(EXIT_FAILURE);
	}
	if (getppid() != s->self) {
		ulog(LOG_ERR, "child: the supervisor %d is gone", (int)s->self);
		_exit(EXIT_FAILURE);
	}
	if (child_env(s) < 0 || child_fds(s) < 0)
		_exit(EXIT_FAILURE);
	if (sigprocmask(SIG_SETMASK, &s->oldmask, NULL) < 0) {
		int err = errno;
		ulog(LOG_ERR, "child: sigprocmask(SIG_SETMASK): %s", strerror(err));
		_exit(EXIT_FAILURE);
	}
	/* The store's descriptors are the child's LISTEN_FDS now; the
	 * supervisor's closes pending are its own. */
	free(s->v);
	closer_forget();
}

/* Start a serving child: 0 in it, 1 in the supervisor, or -errno. */
static int child_start(struct sup *s)
{
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		int err = errno;
		ulog(LOG_ERR, "fork (the serving child): %s", strerror(err));
		return -err;
	}
	if (pid == 0) {
		child_setup(s);
		return 0;
	}
	s->child = pid;
	/* Its successor stops at the next hold point, if any. */
	uffdd_hold_next();
	ulog(LOG_INFO, "serving child %d started with %zu listening and %zu stored fds", (int)pid,
	     s->nlisten, s->n);
	return 1;
}

/* A failure now: whether it is the (RESTART_BURST + 1)-th within the window. */
static bool burst_over(struct sup *s)
{
	uint64_t now = uffdd_now_ns();
	/* The oldest of the last RESTART_BURST failures, before this one. */
	bool over = s->nfails >= RESTART_BURST &&
		    now - s->fails[s->nfails % RESTART_BURST] < RESTART_WINDOW_NS;

	s->fails[s->nfails % RESTART_BURST] = now;
	s->nfails++;
	return over;
}

/* The child is gone (status from waitpid): 0 in a new child, 1 on in the
 * supervisor; exits when the supervisor's work is over. */
static int child_gone(struct sup *s, int status)
{
	pid_t dead = s->child;
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

	/* What it stored before it died is queued: take it (it is still
	 * s->child for notify_read()) before the next child starts. */
	for (int i = 0; i < NOTIFY_DRAIN_MAX && notify_read(s); i++)
		;
	s->child = 0;
	if (s->stopping || (WIFEXITED(status) && code == 0)) {
		ulog(LOG_INFO, "serving child %d exited (%s %d); supervisor exits %d", (int)dead,
		     WIFEXITED(status) ? "status" : "signal",
		     WIFEXITED(status) ? code : WTERMSIG(status), code);
		sup_exit(s, code);
	}
	char how[64];
	if (WIFSIGNALED(status))
		snprintf(how, sizeof(how), "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(how, sizeof(how), "exited with status %d", code);
	if (burst_over(s)) {
		ulog(LOG_ERR,
		     "serving child %d %s: %d failures within %llu s; giving up, closing %zu "
		     "stored fds",
		     (int)dead, how, RESTART_BURST + 1,
		     (unsigned long long)(RESTART_WINDOW_NS / 1000000000ull), s->n);
		sup_exit(s, EXIT_FAILURE);
	}
	ulog(LOG_WARNING, "serving child %d %s; restarting it with %zu stored fds", (int)dead, how,
	     s->n);
	int r = child_start(s);
	if (r < 0)
		sup_exit(s, EXIT_FAILURE);
	return r;
}

/* Read the signals: 0 in a new child, 1 on in the supervisor. */
static int signals_read(struct sup *s)
{
	for (int i = 0; i < SIGNAL_BATCH; i++) {
		struct signalfd_siginfo si;
		ssize_t len = read(s->sfd, &si, sizeof(si));
		if (len < 0) {
			int err = errno;
			if (err != EAGAIN && err != EINTR)
				ulog(LOG_ERR, "read(signalfd): %s", strerror(err));
			return 1;
		}
		if (len != sizeof(si))
			return 1;
		if (si.ssi_signo != SIGCHLD) {
			ulog(LOG_INFO, "signal %u: stopping the serving child %d", si.ssi_signo,
			     (int)s->child);
			s->stopping = true;
			if (kill(s->child, (int)si.ssi_signo) < 0) {
				int err = errno;
				ulog(LOG_ERR, "kill(%d, %u): %s", (int)s->child, si.ssi_signo,
				     strerror(err));
			}
			continue;
		}
		closer_reap();
		int status;
		pid_t pid = waitpid(s->child, &status, WNOHANG);
		if (pid < 0) {
			int err = errno;
			ulog(LOG_ERR, "waitpid(%d): %s", (int)s->child, strerror(err));
			sup_exit(s, EXIT_FAILURE);
		}
		if (pid == s->child && child_gone(s, status) == 0)
			return 0;
	}
	return 1;
}

int supervise(const int *listen_fds, size_t nlisten)
{
	struct sup s = {
		.listen = listen_fds,
		.nlisten = nlisten,
		.nfd = -1,
		.sfd = -1,
		.self = getpid(),
	};
	sigset_t mask;
	int r;

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, &s.oldmask) < 0) {
		r = -errno;
		ulog(LOG_ERR, "sigprocmask(SIG_BLOCK, SIGCHLD SIGTERM SIGINT): %s", strerror(-r));
		return r;
	}
	r = store_cap(&s);
	if (r < 0)
		return r;
	r = notify_open(&s);
	if (r < 0)
		return r;
	s.sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s.sfd < 0) {
		r = -errno;
		ulog(LOG_ERR, "signalfd(SIGCHLD SIGTERM SIGINT): %s", strerror(-r));
		close_logged(s.nfd, "notify");
		return r;
	}
	ulog(LOG_INFO, "supervisor %d: the fd store at %s", (int)s.self, s.notify_name);
	r = child_start(&s);
	if (r <= 0) {
		if (r < 0) {
			close_logged(s.nfd, "notify");
			close_logged(s.sfd, "signalfd");
		}
		return r;
	}
	for (;;) {
		struct pollfd p[] = {
			{ .fd = s.sfd, .events = POLLIN },
			{ .fd = s.nfd, .events = POLLIN },
		};
		if (poll(p, PIN_ARRAY_SIZE(p), -1) < 0) {
			int err = errno;
			if (err == EINTR)
				continue;
			ulog(LOG_ERR, "poll(signalfd, notify socket): %s", strerror(err));
			sup_exit(&s, EXIT_FAILURE);
		}
		if (p[1].revents)
			for (int i = 0; i < NOTIFY_BATCH && notify_read(&s); i++)
				;
		if (p[0].revents && signals_read(&s) == 0)
			return 0;
	}
}
