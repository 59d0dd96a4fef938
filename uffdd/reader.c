// SPDX-License-Identifier: MIT
/*
 * Readers: a session's reads of a source that may block (a FUSE or NFS file,
 * a block device: source_may_block()), done by a process of the session's
 * own, so that a source whose server never answers stalls that session only.
 * Not a thread: a FUSE read may wait uninterruptibly, and a thread that
 * never returns keeps the whole daemon from exiting (its process stays a
 * zombie, and systemd cannot restart it); an io_uring read waits in an
 * io-wq thread of the daemon, the same (and a worker's io-wq has a few
 * bounded threads for all its sessions).  A reader is uffdd run again as
 * `uffdd --reader SOCK,BUF,EFD`: it takes requests (offset, length, the
 * source's descriptor) on a SOCK_SEQPACKET socket, preads into BUF, a memfd
 * of one run (uffdd_run_bytes()) that the worker maps too, answers the
 * error, and writes EFD, its worker's eventfd, to wake it.  One read at a
 * time; the worker serves its other sessions meanwhile.  A session that ends
 * closes its socket: an idle reader exits, one stuck in a read exits when
 * the read returns, maybe never; it holds the source, not the daemon, and
 * the daemon's descriptors are its own again at once.  Readers that ended
 * or were left stuck are reaped on SIGCHLD (reader_reap()); a uid with
 * READERS_STUCK_MAX of them not reaped gets no new reader (its reads fail).
 * It calls source.c, log.c and util.c.
 */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "uffdd.h"

/* Readers a uid may have left behind, stuck in a read whose session ended
 * (or ending, not reaped yet): each is a process until its read returns. */
#define READERS_STUCK_MAX 16

extern char **environ;

struct reader {
	pid_t pid;
	int sock;     /* to the reader process */
	uint8_t *buf; /* the memfd both map */
	uid_t uid;
	bool busy;
	/* What the buffer holds (once not busy): file 0, nothing. */
	uint64_t file, off;
	size_t len;
	int err;
};

/* A request, and its answer (the source's descriptor comes with it). */
struct reader_req {
	uint64_t off, len;
};

struct reader_ans {
	int32_t err;
};

/* Readers left behind, not reaped yet. */
struct left {
	pid_t pid;
	uid_t uid;
};

static pthread_mutex_t left_lock = PTHREAD_MUTEX_INITIALIZER;
static struct left *left;
static size_t nleft, left_cap;

void reader_reap(void)
{
	pthread_mutex_lock(&left_lock);
	for (size_t i = 0; i < nleft;) {
		pid_t r = waitpid(left[i].pid, NULL, WNOHANG);
		if (r == 0 || (r < 0 && errno == EINTR)) {
			i++;
			continue;
		}
		left[i] = left[--nleft];
	}
	pthread_mutex_unlock(&left_lock);
}

static size_t left_of(uid_t uid)
{
	size_t n = 0;

	pthread_mutex_lock(&left_lock);
	for (size_t i = 0; i < nleft; i++)
		n += left[i].uid == uid;
	pthread_mutex_unlock(&left_lock);
	return n;
}

/* Reaped at once when it has exited, else on its SIGCHLD. */
static void leave(pid_t pid, uid_t uid)
{
	pthread_mutex_lock(&left_lock);
	if (nleft == left_cap) {
		size_t cap = left_cap ? 2 * left_cap : 16;
		struct left *v = realloc(left, cap * sizeof(*v));
		if (v) {
			left = v;
			left_cap = cap;
		}
	}
	if (nleft < left_cap)
		left[nleft++] = (struct left){ pid, uid };
	else
		/* Without memory to list it: a zombie until the daemon exits. */
		ulog(LOG_ERR, "reader %d of uid %u: not listed to reap: out of memory", (int)pid,
		     uid);
	pthread_mutex_unlock(&left_lock);
	reader_reap();
}

/* This program's path, to run it again (valgrind shows the program it
 * runs here, not itself). */
static char exe[PATH_MAX];
static pthread_once_t exe_once = PTHREAD_ONCE_INIT;

static void exe_find(void)
{
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n < 0) {
		ulog(LOG_ERR, "readlink /proc/self/exe: %m; readers run /proc/self/exe");
		snprintf(exe, sizeof(exe), "/proc/self/exe");
		return;
	}
	exe[n] = 0;
}

static int spawn(struct reader *rd, int sock, int buf, int efd)
{
	char fds[64];
	char *argv[] = { "uffdd-reader", "--reader", fds, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none;
	int r;

	pthread_once(&exe_once, exe_find);
	snprintf(fds, sizeof(fds), "%d,%d,%d", sock, buf, efd);
	sigemptyset(&none);
	r = posix_spawn_file_actions_init(&fa);
	if (r)
		return -r;
	r = posix_spawnattr_init(&attr);
	if (r) {
		posix_spawn_file_actions_destroy(&fa);
		return -r;
	}
	/* A dup2 onto itself clears FD_CLOEXEC: only these three are passed. */
	if (!r)
		r = posix_spawn_file_actions_adddup2(&fa, sock, sock);
	if (!r)
		r = posix_spawn_file_actions_adddup2(&fa, buf, buf);
	if (!r)
		r = posix_spawn_file_actions_adddup2(&fa, efd, efd);
	if (!r)
		r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	if (!r)
		r = posix_spawnattr_setsigmask(&attr, &none);
	if (!r)
		r = posix_spawn(&rd->pid, exe, &fa, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	return -r;
}

int reader_new(uid_t uid, int efd, struct reader **ret)
{
	size_t bytes = uffdd_run_bytes();
	int sv[2] = { -1, -1 };
	struct reader *rd;
	int r = 0;

	if (left_of(uid) >= READERS_STUCK_MAX)
		return -EDQUOT;
	rd = calloc(1, sizeof(*rd));
	if (!rd)
		return -ENOMEM;
	rd->uid = uid;
	rd->buf = MAP_FAILED;
	int mfd = memfd_create("uffdd-reader", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, (off_t)bytes) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 ||
	    (rd->buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)) == MAP_FAILED)
		r = -errno;
	if (!r)
		r = spawn(rd, sv[1], mfd, efd);
	if (r < 0)
		ulog(LOG_ERR, "uid %u: a reader (memfd, socketpair, mmap, posix_spawn): %s", uid,
		     strerror(-r));
	if (mfd >= 0)
		close(mfd);
	if (sv[1] >= 0)
		close(sv[1]);
	rd->sock = sv[0];
	if (r < 0) {
		if (rd->buf != MAP_FAILED)
			munmap(rd->buf, bytes);
		if (rd->sock >= 0)
			close(rd->sock);
		free(rd);
		return r;
	}
	*ret = rd;
	return 0;
}

int reader_start(struct reader *rd, struct source *src, uint64_t off, size_t len)
{
	struct reader_req q = { off, len < uffdd_run_bytes() ? len : uffdd_run_bytes() };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c = { 0 };
	struct iovec iov = { &q, sizeof(q) };
	struct msghdr m = { .msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = c.buf,
			    .msg_controllen = sizeof(c.buf) };
	int fd = source_fd(src);

	if (rd->busy)
		return -EBUSY;
	c.h.cmsg_level = SOL_SOCKET;
	c.h.cmsg_type = SCM_RIGHTS;
	c.h.cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(&c.h), &fd, sizeof(fd));
	/* One request at a time: never more than the socket holds. */
	if (sendmsg(rd->sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL) != sizeof(q)) {
		int err = errno;
		ulog(LOG_ERR, "reader %d: sendmsg: %s", (int)rd->pid, strerror(err));
		return -err;
	}
	rd->busy = true;
	rd->file = source_file_id(src);
	rd->off = q.off;
	rd->len = (size_t)q.len;
	return 0;
}

bool reader_done(struct reader *rd)
{
	struct reader_ans a;

	if (!rd->busy)
		return false;
	ssize_t n = recv(rd->sock, &a, sizeof(a), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	rd->busy = false;
	if (n == sizeof(a)) {
		rd->err = a.err;
	} else {
		/* The reader died (killed): its read failed. */
		ulog(LOG_ERR, "reader %d: gone: %s", (int)rd->pid, n < 0 ? strerror(errno) : "EOF");
		rd->err = -EIO;
	}
	return true;
}

bool reader_busy(const struct reader *rd)
{
	return rd->busy;
}

ssize_t reader_take(struct reader *rd, const struct source *src, uint64_t off, size_t len,
		    const void **ret)
{
	if (rd->busy || !rd->file || rd->file != source_file_id(src) || off < rd->off ||
	    off - rd->off >= rd->len)
		return 0;
	if (rd->err) {
		/* Said once: the pages asked for are given up. */
		rd->file = 0;
		return rd->err;
	}
	size_t have = rd->len - (size_t)(off - rd->off);
	*ret = rd->buf + (off - rd->off);
	return (ssize_t)(have < len ? have : len);
}

void reader_free(struct reader *rd)
{
	if (!rd)
		return;
	/* An idle reader reads EOF and exits; one in a read, when it returns. */
	close(rd->sock);
	munmap(rd->buf, uffdd_run_bytes());
	leave(rd->pid, rd->uid);
	free(rd);
}

/* ---- the reader process ---- */

/* Close every descriptor but stdio and the n (sorted) in keep. */
static void close_others(const int *keep, size_t n)
{
	unsigned int from = STDERR_FILENO + 1;

	for (size_t i = 0; i < n; i++) {
		if ((unsigned int)keep[i] > from)
			close_range(from, (unsigned int)keep[i] - 1, 0);
		from = (unsigned int)keep[i] + 1;
	}
	close_range(from, ~0u, 0);
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

int reader_main(const char *fds)
{
	int v[3], sock, efd;
	size_t bytes = uffdd_run_bytes();
	uint64_t one = 1;

	if (sscanf(fds, "%d,%d,%d", &v[0], &v[1], &v[2]) != 3)
		return 2;
	sock = v[0];
	efd = v[2];
	uint8_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, v[1], 0);
	if (buf == MAP_FAILED) {
		ulog(LOG_ERR, "reader: mmap: %m");
		return 1;
	}
	close(v[1]);
	qsort(v, 3, sizeof(v[0]), cmp_int);
	close_others(v, 3);
	for (;;) {
		struct reader_req q;
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int))];
		} c;
		struct iovec iov = { &q, sizeof(q) };
		struct msghdr m = { .msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = c.buf,
				    .msg_controllen = sizeof(c.buf) };
		ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		/* EOF: its session ended. */
		if (n <= 0)
			return 0;
		struct cmsghdr *h = CMSG_FIRSTHDR(&m);
		if (n != sizeof(q) || !h || h->cmsg_type != SCM_RIGHTS || q.len > bytes)
			return 1;
		int fd;
		memcpy(&fd, CMSG_DATA(h), sizeof(fd));
		struct reader_ans a = { source_pread(fd, q.off, (size_t)q.len, buf) };
		close(fd);
		if (send(sock, &a, sizeof(a), MSG_NOSIGNAL) != sizeof(a))
			return 0;
		if (write(efd, &one, sizeof(one)) != sizeof(one) && errno != EAGAIN)
			return 1;
	}
}
