// SPDX-License-Identifier: MIT
/*
 * The fake service manager of manager.h: it owns the listening socket (as
 * uffdd.socket does), the notify socket, the file descriptor store, the
 * daemon's process and a thread that reads notifications the way systemd
 * 252's manager_dispatch_notify_fd() and service_notify_message() do:
 * credentials required and only the main pid heard (NotifyAccess=main),
 * messages of 4095 bytes at most, FDSTOREREMOVE=1 before FDSTORE=1, names
 * checked like fdname_is_valid(), an fd of an open file already stored is
 * not added twice (kcmp KCMP_FILE, as same_fd()), the store bounded by
 * FileDescriptorStoreMax=, every stored fd polled for nothing so that
 * EPOLLHUP or EPOLLERR drops it (unless FDPOLL=0), and the store handed to
 * the next daemon newest first after the listening socket (LIST_PREPEND),
 * named in LISTEN_FDNAMES.  It calls libc only.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <dirent.h>
#include <fnmatch.h>
#include <time.h>
#include <unistd.h>

#include "manager.h"

/* systemd's NOTIFY_BUFFER_MAX (PIPE_BUF): a message is at most one byte less. */
#define NOTIFY_BUFFER_MAX 4096
/* systemd's NOTIFY_FD_MAX: descriptors taken from one message. */
#define NOTIFY_FD_MAX 768
/* systemd's NOTIFY_RCVBUF_SIZE: a daemon that sends a burst never blocks. */
#define NOTIFY_RCVBUF_SIZE (8 * 1024 * 1024)
/* systemd's FDNAME_MAX. */
#define FDNAME_MAX 255
/* The socket unit's name, which LISTEN_FDNAMES gives its socket. */
#define SOCKET_FDNAME "uffdd.socket"
/* uffdd.socket's SocketMode=. */
#define SOCKET_MODE 0660
/* Events one epoll_wait() takes. */
#define EPOLL_BATCH 32
/* epoll tags that are not stored descriptors. */
#define TAG_NOTIFY 0
#define TAG_STOP   1
#define TAG_FIRST  2
/* manager_stop() waits this many times o.ready_ms for the daemon to exit. */
#define STOP_BOUNDS 3u
/* Polling /proc for a stopped daemon, or waitid() for an exited one (no
 * pidfd: valgrind 3.19 lacks pidfd_open): every 1 ms. */
#define STOP_POLL_NS 1000000L
/* While waiting for READY=1, whether the daemon exited is checked this often. */
#define READY_SLICE_NS 10000000ull
/* Room for "LISTEN_PID=" and a pid in decimal. */
#define PID_ENV_LEN 32
#define MAX_ARGS    32

struct entry {
	int fd;
	uint64_t tag; /* its epoll tag */
	bool polled;
	char name[FDNAME_MAX + 1];
};

struct manager {
	struct manager_opts o;
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char notify[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int lfd, nfd, ep, efd;
	pthread_t thread;
	bool threaded;

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cond;  /* a notification was taken in */
	struct entry *v;      /* in the order stored */
	size_t n, cap;
	uint64_t next_tag;
	pid_t pid;   /* the running daemon; 0: none */
	pid_t heard; /* whose messages count: the daemon's, or the one just killed */
	bool ready;  /* READY=1 since the start */
	struct manager_stats st;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("manager: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct timespec deadline_of(uint64_t ns)
{
	return (struct timespec){ (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
}

/* systemd's same_fd(): kcmp(KCMP_FILE), else the inode and the status flags. */
static bool same_fd(int a, int b)
{
	struct stat sa, sb;
	pid_t me = getpid();
	long r = syscall(SYS_kcmp, me, me, KCMP_FILE, a, b);

	if (r >= 0)
		return r == 0;
	if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
		return false;
	if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT) || sa.st_dev != sb.st_dev ||
	    sa.st_ino != sb.st_ino)
		return false;
	return fcntl(a, F_GETFL) == fcntl(b, F_GETFL);
}

/* systemd's fdname_is_valid(): no control character, no ':', 255 bytes at most. */
static bool fdname_valid(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++)
		if ((unsigned char)s[n] < ' ' || s[n] == 127 || s[n] == ':')
			return false;
	return n <= FDNAME_MAX;
}

static void entry_drop(struct manager *m, size_t i)
{
	if (m->v[i].polled && epoll_ctl(m->ep, EPOLL_CTL_DEL, m->v[i].fd, NULL) < 0)
		say("epoll_ctl DEL of stored fd %d (%s): %s", m->v[i].fd, m->v[i].name,
		    strerror(errno));
	close(m->v[i].fd);
	memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
	m->n--;
}

/* service_add_fd_store(): takes fd; -EXFULL when the store is full. */
static int store_add(struct manager *m, int fd, const char *name, bool poll_it)
{
	for (size_t i = 0; i < m->n; i++)
		if (same_fd(m->v[i].fd, fd)) {
			m->st.dups++;
			close(fd);
			return 0;
		}
	if (m->n >= m->o.store_max) {
		close(fd);
		return -EXFULL;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 64;
		struct entry *v = realloc(m->v, cap * sizeof(*v));
		if (!v) {
			close(fd);
			return -ENOMEM;
		}
		m->v = v;
		m->cap = cap;
	}
	struct entry *e = &m->v[m->n];
	*e = (struct entry){ .fd = fd, .tag = m->next_tag++ };
	snprintf(e->name, sizeof(e->name), "%s", name);
	if (poll_it) {
		struct epoll_event ev = { .events = 0, .data.u64 = e->tag };
		if (epoll_ctl(m->ep, EPOLL_CTL_ADD, fd, &ev) == 0)
			e->polled = true;
		else if (errno != EPERM) {
			/* Not EPERM (a file that cannot be polled): systemd refuses it. */
			say("epoll_ctl ADD of fd %d (%s): %s", fd, name, strerror(errno));
			close(fd);
			return -errno;
		}
	}
	m->n++;
	m->st.stored++;
	return 0;
}

/* The first line of tags starting with key, or NULL (strv_find_startswith). */
static const char *tag_find(char *const *tags, size_t n, const char *key)
{
	size_t k = strlen(key);

	for (size_t i = 0; i < n; i++)
		if (!strncmp(tags[i], key, k))
			return tags[i] + k;
	return NULL;
}

static bool tag_has(char *const *tags, size_t n, const char *tag)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(tags[i], tag))
			return true;
	return false;
}

/* service_notify_message() for the parts uffdd uses; takes the fds. */
static void take_message(struct manager *m, char *buf, int *fds, size_t nfds)
{
	char *tags[NOTIFY_BUFFER_MAX / 2];
	size_t ntags = 0, used = 0;

	for (char *save = NULL, *t = strtok_r(buf, "\n", &save);
	     t && ntags < sizeof(tags) / sizeof(*tags); t = strtok_r(NULL, "\n", &save))
		tags[ntags++] = t;
	if (tag_has(tags, ntags, "READY=1"))
		m->ready = true;
	if (tag_has(tags, ntags, "WATCHDOG=1"))
		m->st.watchdog++;
	if (tag_has(tags, ntags, "FDSTOREREMOVE=1")) {
		const char *name = tag_find(tags, ntags, "FDNAME=");
		if (!name || !fdname_valid(name))
			say("FDSTOREREMOVE=1 without a valid FDNAME=, ignored");
		for (size_t i = m->n; name && fdname_valid(name) && i-- > 0;)
			if (!strcmp(m->v[i].name, name)) {
				entry_drop(m, i);
				m->st.removed++;
			}
	}
	if (tag_has(tags, ntags, "FDSTORE=1")) {
		const char *name = tag_find(tags, ntags, "FDNAME=");
		bool poll_it = !tag_has(tags, ntags, "FDPOLL=0");
		if (name && !fdname_valid(name)) {
			say("FDNAME= is not a valid name, stored as \"stored\"");
			name = NULL;
		}
		for (; used < nfds; used++) {
			int r = store_add(m, fds[used], name ? name : "stored", poll_it);
			if (r == -EXFULL)
				say("the store is full (FileDescriptorStoreMax=%u): %zu fd(s) "
				    "closed",
				    m->o.store_max, nfds - used);
			if (r < 0) {
				m->st.refused += nfds - used;
				used++;
				break;
			}
		}
	}
	if (used < nfds && !tag_has(tags, ntags, "FDSTORE=1"))
		say("%zu fd(s) came without FDSTORE=1: closed", nfds - used);
	for (; used < nfds; used++)
		close(fds[used]);
}

/* Take in every notification already sent (lock held). */
static void drain(struct manager *m)
{
	for (;;) {
		char buf[NOTIFY_BUFFER_MAX];
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(struct ucred)) +
			       CMSG_SPACE(sizeof(int) * NOTIFY_FD_MAX)];
		} c;
		struct iovec iov = { buf, sizeof(buf) - 1 };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = &c,
				     .msg_controllen = sizeof(c) };
		struct ucred *cred = NULL;
		int *fds = NULL;
		size_t nfds = 0;

		ssize_t n = recvmsg(m->nfd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				say("recvmsg on %s: %s", m->notify, strerror(errno));
			if (errno == EINTR)
				continue;
			break;
		}
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h)) {
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
				fds = (int *)CMSG_DATA(h);
				nfds = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			} else if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_CREDENTIALS &&
				   h->cmsg_len == CMSG_LEN(sizeof(struct ucred)))
				cred = (struct ucred *)CMSG_DATA(h);
		}
		const char *why = NULL;
		if (mh.msg_flags & MSG_CTRUNC)
			why = "its control data was cut (too many fds?)";
		else if (!cred || cred->pid <= 0)
			why = "it has no credentials";
		else if ((size_t)n >= sizeof(buf) || (mh.msg_flags & MSG_TRUNC))
			why = "it is too long";
		else if (n > 1 && memchr(buf, 0, (size_t)n - 1))
			why = "it holds a NUL byte";
		else if (cred->pid != m->heard) {
			m->st.foreign++;
			why = "it is not from the main pid (NotifyAccess=main)";
		}
		if (why) {
			say("a notification ignored: %s", why);
			for (size_t i = 0; i < nfds; i++)
				close(fds[i]);
			m->st.refused += nfds;
			continue;
		}
		buf[n] = '\0';
		take_message(m, buf, fds, nfds);
	}
	pthread_cond_broadcast(&m->cond);
}

static void on_hangup(struct manager *m, uint64_t tag, uint32_t events)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].tag == tag) {
			say("%s on stored fd %d (%s): closed, as systemd does",
			    events & EPOLLERR ? "EPOLLERR" : "EPOLLHUP", m->v[i].fd, m->v[i].name);
			entry_drop(m, i);
			m->st.hangups++;
			return;
		}
}

static void *manager_thread(void *arg)
{
	struct manager *m = arg;
	struct epoll_event evs[EPOLL_BATCH];

	for (;;) {
		int n = epoll_wait(m->ep, evs, EPOLL_BATCH, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			say("epoll_wait: %s", strerror(errno));
			return NULL;
		}
		pthread_mutex_lock(&m->lock);
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == TAG_STOP) {
				pthread_mutex_unlock(&m->lock);
				return NULL;
			}
			if (tag == TAG_NOTIFY)
				drain(m);
			else
				on_hangup(m, tag, evs[i].events);
		}
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
	}
}

static int bind_unix(int type, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;
		say("bind %s: %s", path, strerror(err));
		close(fd);
		return -err;
	}
	return fd;
}

static int watch(struct manager *m, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = { .events = events, .data.u64 = tag };

	if (epoll_ctl(m->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = errno;
		say("epoll_ctl ADD: %s", strerror(err));
		return -err;
	}
	return 0;
}

static int setup(struct manager *m)
{
	int one = 1, size = NOTIFY_RCVBUF_SIZE;

	m->lfd = bind_unix(SOCK_SEQPACKET, m->sock);
	if (m->lfd < 0)
		return m->lfd;
	if (chmod(m->sock, SOCKET_MODE) < 0 || listen(m->lfd, SOMAXCONN) < 0)
		return -errno;
	m->nfd = bind_unix(SOCK_DGRAM, m->notify);
	if (m->nfd < 0)
		return m->nfd;
	if (setsockopt(m->nfd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)
		return -errno;
	/* As fd_increase_rxbuf(): forced when privileged, else what is allowed. */
	if (setsockopt(m->nfd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0 &&
	    setsockopt(m->nfd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) < 0)
		return -errno;
	m->ep = epoll_create1(EPOLL_CLOEXEC);
	m->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->ep < 0 || m->efd < 0)
		return -errno;
	int r = watch(m, m->nfd, EPOLLIN, TAG_NOTIFY);
	if (r == 0)
		r = watch(m, m->efd, EPOLLIN, TAG_STOP);
	if (r < 0)
		return r;
	r = -pthread_create(&m->thread, NULL, manager_thread, m);
	m->threaded = r == 0;
	return r;
}

int manager_new(const struct manager_opts *o, struct manager **ret)
{
	pthread_condattr_t ca;
	struct manager *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->o = *o;
	m->lfd = m->nfd = m->ep = m->efd = -1;
	m->next_tag = TAG_FIRST;
	pthread_mutex_init(&m->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cond, &ca);
	pthread_condattr_destroy(&ca);
	if ((size_t)snprintf(m->sock, sizeof(m->sock), "%s/sock", o->dir) >= sizeof(m->sock) ||
	    (size_t)snprintf(m->notify, sizeof(m->notify), "%s/notify", o->dir) >=
		    sizeof(m->notify)) {
		say("%s: too long for a socket's path", o->dir);
		manager_free(m);
		return -ENAMETOOLONG;
	}
	int r = setup(m);
	if (r < 0) {
		say("setting up in %s: %s", o->dir, strerror(-r));
		manager_free(m);
		return r;
	}
	*ret = m;
	return 0;
}

/* Write v in decimal at p; returns the end. */
static char *put_decimal(char *p, long v)
{
	char d[24];
	int n = 0;

	do
		d[n++] = (char)('0' + v % 10);
	while ((v /= 10) > 0);
	while (n)
		*p++ = d[--n];
	*p = '\0';
	return p;
}

/* In the child, between fork and exec: async-signal-safe calls only. */
static void exec_daemon(struct manager *m, pid_t parent, const int *fds, int *tmp, size_t n,
			char *const *argv, char **envp, char *pid_env, char *wd_pid_env)
{
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(127);
	if (null < 0 || dup2(null, STDIN_FILENO) < 0)
		_exit(127);
	for (size_t i = 0; i < n; i++)
		if ((tmp[i] = fcntl(fds[i], F_DUPFD, (int)(3 + n))) < 0)
			_exit(127);
	for (size_t i = 0; i < n; i++)
		if (dup2(tmp[i], (int)(3 + i)) < 0)
			_exit(127);
	if (close_range((unsigned int)(3 + n), ~0u, 0) < 0)
		_exit(127);
	put_decimal(pid_env + strlen("LISTEN_PID="), (long)getpid());
	put_decimal(wd_pid_env + strlen("WATCHDOG_PID="), (long)getpid());
	execve(m->o.exe, argv, envp);
	_exit(127);
}

extern char **environ;

static bool ours(const char *e)
{
	static const char *const keys[] = { "NOTIFY_SOCKET=",  "LISTEN_PID=",	 "LISTEN_FDS=",
					    "LISTEN_FDNAMES=", "WATCHDOG_USEC=", "WATCHDOG_PID=" };

	for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++)
		if (!strncmp(e, keys[i], strlen(keys[i])))
			return true;
	return false;
}

/* Fork and exec with what the store holds (lock held). */
static int spawn(struct manager *m)
{
	size_t n = 1 + m->n, nenv = 0, namelen = sizeof("LISTEN_FDNAMES=") + sizeof(SOCKET_FDNAME);
	const char *argv[MAX_ARGS] = { m->o.exe, "--no-supervisor" };
	size_t na = 2;
	char pid_env[PID_ENV_LEN] = "LISTEN_PID=", fds_env[PID_ENV_LEN] = "LISTEN_FDS=";
	char wd_pid_env[PID_ENV_LEN] = "WATCHDOG_PID=", wd_env[PID_ENV_LEN] = "WATCHDOG_USEC=";
	char notify_env[sizeof(m->notify) + sizeof("NOTIFY_SOCKET=")];
	int r = 0;

	for (const char *const *a = m->o.args; a && *a && na < MAX_ARGS - 1; a++)
		argv[na++] = *a;
	argv[na] = NULL;
	for (size_t i = 0; i < m->n; i++)
		namelen += strlen(m->v[i].name) + 1;
	while (environ[nenv])
		nenv++;
	int *fds = calloc(n, sizeof(int)), *tmp = calloc(n, sizeof(int));
	char *names = malloc(namelen), **envp = calloc(nenv + 7, sizeof(char *));
	if (!fds || !tmp || !names || !envp) {
		r = -ENOMEM;
		goto out;
	}
	/* The socket unit's socket first, then the store newest first. */
	fds[0] = m->lfd;
	char *p = names + sprintf(names, "LISTEN_FDNAMES=%s", SOCKET_FDNAME);
	for (size_t i = 0; i < m->n; i++) {
		fds[1 + i] = m->v[m->n - 1 - i].fd;
		p += sprintf(p, ":%s", m->v[m->n - 1 - i].name);
	}
	put_decimal(fds_env + strlen("LISTEN_FDS="), (long)n);
	snprintf(notify_env, sizeof(notify_env), "NOTIFY_SOCKET=%s", m->notify);
	size_t k = 0;
	for (size_t i = 0; i < nenv; i++)
		if (!ours(environ[i]))
			envp[k++] = environ[i];
	envp[k++] = notify_env;
	envp[k++] = pid_env;
	envp[k++] = fds_env;
	envp[k++] = names;
	if (m->o.watchdog_usec) {
		put_decimal(wd_env + strlen("WATCHDOG_USEC="), (long)m->o.watchdog_usec);
		envp[k++] = wd_env;
		envp[k++] = wd_pid_env;
	}
	envp[k] = NULL;

	m->ready = false;
	pid_t parent = getpid(), pid = fork();
	if (pid < 0) {
		r = -errno;
		say("fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0)
		exec_daemon(m, parent, fds, tmp, n, (char *const *)argv, envp, pid_env, wd_pid_env);
	m->pid = m->heard = pid;
	m->st.starts++;
out:
	free(fds);
	free(tmp);
	free(names);
	free(envp);
	return r;
}

bool manager_pid_exited(pid_t pid)
{
	siginfo_t si = { 0 };

	return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

int manager_wait_pid(pid_t pid, unsigned int timeout_ms, int *ret_status)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	struct timespec pause = { 0, STOP_POLL_NS };

	while (!manager_pid_exited(pid)) {
		if (now_ns() > end)
			return -ETIMEDOUT;
		nanosleep(&pause, NULL);
	}
	return waitpid(pid, ret_status, 0) == pid ? 0 : -errno;
}

/* Reap the daemon that exited (lock held); its status on stderr. */
static void reap_exited(struct manager *m, const char *when)
{
	int st = 0;

	if (waitpid(m->pid, &st, 0) == m->pid)
		say("uffdd (pid %d) %s %d %s", (int)m->pid,
		    WIFEXITED(st) ? "exited" : "killed by signal",
		    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), when);
	drain(m);
	m->pid = 0;
}

int manager_start(struct manager *m)
{
	pthread_mutex_lock(&m->lock);
	drain(m);
	int r = m->pid ? -EBUSY : spawn(m);
	uint64_t end = now_ns() + (uint64_t)m->o.ready_ms * 1000000ull;
	bool exited = false;

	/* READY=1 wakes us (the thread broadcasts); an exit is seen within a slice. */
	while (r == 0 && !m->ready && !(exited = manager_pid_exited(m->pid))) {
		uint64_t now = now_ns();
		if (now > end) {
			say("uffdd (pid %d) sent no READY=1 in %u ms", (int)m->pid, m->o.ready_ms);
			r = -ETIMEDOUT;
			break;
		}
		struct timespec dl =
			deadline_of(now + READY_SLICE_NS < end ? now + READY_SLICE_NS : end);
		pthread_cond_timedwait(&m->cond, &m->lock, &dl);
		drain(m);
	}
	if (r == 0 && !m->ready && exited) {
		reap_exited(m, "before READY=1");
		r = -ECHILD;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

int manager_kill9(struct manager *m)
{
	pthread_mutex_lock(&m->lock);
	pid_t pid = m->pid;
	pthread_mutex_unlock(&m->lock);
	if (!pid)
		return -ESRCH;
	if (kill(pid, SIGKILL) < 0)
		return -errno;
	int st;
	if (waitpid(pid, &st, 0) != pid)
		return -errno;
	/* What it sent before it died is in the queue: the main pid's still. */
	pthread_mutex_lock(&m->lock);
	drain(m);
	m->pid = 0;
	pthread_mutex_unlock(&m->lock);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) {
		say("uffdd (pid %d) %s %d before the SIGKILL", (int)pid,
		    WIFEXITED(st) ? "exited" : "died of signal",
		    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		return -ECHILD;
	}
	return 0;
}

int manager_kill9_restart(struct manager *m)
{
	int r = manager_kill9(m);

	return r < 0 ? r : manager_start(m);
}

/* Whether every thread of pid is stopped; -errno when it cannot be read. */
static int all_stopped(pid_t pid)
{
	char path[64], line[256];
	int running = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *dir = opendir(path);
	if (!dir)
		return -errno;
	for (struct dirent *e; (e = readdir(dir));) {
		if (e->d_name[0] == '.')
			continue;
		char stat[sizeof(path) + sizeof(e->d_name) + sizeof("/stat")];
		snprintf(stat, sizeof(stat), "%s/%s/stat", path, e->d_name);
		FILE *f = fopen(stat, "re");
		if (!f)
			continue; /* a thread that just exited */
		bool got = fgets(line, sizeof(line), f) != NULL;
		fclose(f);
		const char *st = got ? strrchr(line, ')') : NULL;
		running += !st || (st[2] != 'T' && st[2] != 't');
	}
	closedir(dir);
	return running == 0;
}

/* Wait within timeout_ms until every thread of pid is stopped. */
static int wait_stopped(pid_t pid, unsigned int timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	struct timespec pause = { 0, STOP_POLL_NS };

	for (;;) {
		int r = all_stopped(pid);
		if (r != 0)
			return r < 0 ? r : 0;
		if (now_ns() > end) {
			say("pid %d did not stop in %u ms", (int)pid, timeout_ms);
			return -ETIMEDOUT;
		}
		nanosleep(&pause, NULL);
	}
}

int manager_freeze_pid(pid_t pid, unsigned int timeout_ms)
{
	if (kill(pid, SIGSTOP) < 0)
		return -errno;
	return wait_stopped(pid, timeout_ms);
}

int manager_freeze(struct manager *m)
{
	pid_t pid = manager_pid(m);

	return pid ? manager_freeze_pid(pid, m->o.ready_ms) : -ESRCH;
}

int manager_wait_stopped(struct manager *m)
{
	pid_t pid = manager_pid(m);

	return pid ? wait_stopped(pid, m->o.ready_ms) : -ESRCH;
}

size_t manager_lose(struct manager *m, const char *name)
{
	size_t n = 0;

	pthread_mutex_lock(&m->lock);
	drain(m);
	for (size_t i = m->n; i-- > 0;)
		if (!strcmp(m->v[i].name, name)) {
			entry_drop(m, i);
			n++;
		}
	pthread_mutex_unlock(&m->lock);
	return n;
}

int manager_stop(struct manager *m)
{
	pid_t pid = manager_pid(m);
	int st, r = 0;

	if (!pid)
		return -ESRCH;
	/* SIGCONT after it, as systemd sends: a stopped daemon gets to exit. */
	if (kill(pid, SIGTERM) < 0 || kill(pid, SIGCONT) < 0)
		return -errno;
	/* Its workers get 2 s each to end their loops; a daemon under
	 * ASan on a loaded machine was seen past 10 s in all: a hang is one
	 * that outlasts three times the start's bound. */
	if (manager_wait_pid(pid, STOP_BOUNDS * m->o.ready_ms, &st) == -ETIMEDOUT) {
		say("uffdd (pid %d) still runs %u ms after SIGTERM: killed", (int)pid,
		    STOP_BOUNDS * m->o.ready_ms);
		kill(pid, SIGKILL);
		r = waitpid(pid, &st, 0) == pid ? -ETIMEDOUT : -errno;
	} else if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		say("uffdd (pid %d) %s %d on SIGTERM, not exit 0", (int)pid,
		    WIFEXITED(st) ? "exited" : "died of signal",
		    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		r = -ECHILD;
	}
	pthread_mutex_lock(&m->lock);
	drain(m);
	m->pid = 0;
	/* systemd 252 empties the store when the service stops. */
	while (m->n)
		entry_drop(m, m->n - 1);
	pthread_mutex_unlock(&m->lock);
	return r;
}

void manager_free(struct manager *m)
{
	if (!m)
		return;
	if (m->pid && kill(m->pid, SIGKILL) == 0)
		waitpid(m->pid, NULL, 0);
	if (m->threaded) {
		uint64_t one = 1;
		if (write(m->efd, &one, sizeof(one)) != sizeof(one))
			say("eventfd write: %s", strerror(errno));
		pthread_join(m->thread, NULL);
	}
	while (m->n)
		entry_drop(m, m->n - 1);
	free(m->v);
	if (m->lfd >= 0) {
		close(m->lfd);
		unlink(m->sock);
	}
	if (m->nfd >= 0) {
		close(m->nfd);
		unlink(m->notify);
	}
	if (m->ep >= 0)
		close(m->ep);
	if (m->efd >= 0)
		close(m->efd);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

pid_t manager_pid(struct manager *m)
{
	pthread_mutex_lock(&m->lock);
	pid_t pid = m->pid;
	pthread_mutex_unlock(&m->lock);
	return pid;
}

const char *manager_socket(const struct manager *m)
{
	return m->sock;
}

void manager_stats(struct manager *m, struct manager_stats *ret)
{
	pthread_mutex_lock(&m->lock);
	drain(m);
	*ret = m->st;
	pthread_mutex_unlock(&m->lock);
}

static size_t count_locked(struct manager *m, const char *glob)
{
	size_t n = 0;

	drain(m);
	for (size_t i = 0; i < m->n; i++)
		n += fnmatch(glob, m->v[i].name, 0) == 0;
	return n;
}

size_t manager_count(struct manager *m, const char *glob)
{
	pthread_mutex_lock(&m->lock);
	size_t n = count_locked(m, glob);
	pthread_mutex_unlock(&m->lock);
	return n;
}

static void names_locked(struct manager *m, char *buf, size_t len)
{
	size_t k = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < m->n && k < len; i++)
		k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? " " : "", m->v[i].name);
}

size_t manager_queued(struct manager *m, const char *glob)
{
	size_t bytes = 0;
	int q;

	pthread_mutex_lock(&m->lock);
	drain(m);
	for (size_t i = 0; i < m->n; i++)
		if (fnmatch(glob, m->v[i].name, 0) == 0 && ioctl(m->v[i].fd, SIOCINQ, &q) == 0)
			bytes += (size_t)q;
	pthread_mutex_unlock(&m->lock);
	return bytes;
}

void manager_names(struct manager *m, char *buf, size_t len)
{
	pthread_mutex_lock(&m->lock);
	drain(m);
	names_locked(m, buf, len);
	pthread_mutex_unlock(&m->lock);
}

int manager_wait_count(struct manager *m, const char *glob, size_t want, unsigned int timeout_ms)
{
	struct timespec dl = deadline_of(now_ns() + (uint64_t)timeout_ms * 1000000ull);
	int r = 0;
	size_t n;

	pthread_mutex_lock(&m->lock);
	while ((n = count_locked(m, glob)) != want)
		if (pthread_cond_timedwait(&m->cond, &m->lock, &dl) == ETIMEDOUT &&
		    (n = count_locked(m, glob)) != want) {
			char names[1024];
			names_locked(m, names, sizeof(names));
			say("%zu stored fd(s) named %s, not %zu, after %u ms; the store: %s", n,
			    glob, want, timeout_ms, names);
			r = -ETIMEDOUT;
			break;
		}
	pthread_mutex_unlock(&m->lock);
	return r;
}
