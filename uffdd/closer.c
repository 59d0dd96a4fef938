// SPDX-License-Identifier: MIT
/*
 * Closers: the close() of a descriptor a client sent whose file system may
 * never answer it, done off the workers.  Every close() of a FUSE file sends
 * FLUSH and waits for the answer (fs/fuse/file.c: fuse_flush(), a forced
 * request that waits uninterruptibly once sent), however many references the
 * file has left; an NFS file opened for writing writes its dirty pages back.
 * No copy of the descriptor avoids that: each close of each copy flushes.
 * So such a close is done by a closer, a process of the daemon's that shares
 * its descriptor table (clone(CLONE_FILES), no thread): the descriptor leaves
 * the table at once, and only the closer waits.  Not a thread: a thread that
 * never returns keeps the daemon from exiting; a closer stuck so holds the
 * table (the daemon's descriptors stay open until it ends) but not the
 * daemon.  One closer runs per uid at a time, over the descriptors queued
 * when it started; the uid's next ones wait for it, so a stuck file system
 * stalls the closes of the uid that sent it only, and a uid with
 * CLOSES_PENDING_MAX closes pending may add no source that may block
 * (closer_pending()).  Closers are reaped on SIGCHLD (closer_reap()), and a
 * close pending over CLOSE_SLOW_NS is said once (closer_tick()).  A closer
 * that cannot start (clone() fails) is tried again later; a close that
 * cannot even be queued (no memory) leaves its descriptor open, said: a
 * worker never waits in one.  It calls log.c and util.c.
 */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#ifdef HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "uffdd.h"

#define NS_PER_S  ((uint64_t)1000000000)
#define NS_PER_MS ((uint64_t)1000000)
/* A close pending this long is said (once): its file system does not answer. */
#define CLOSE_SLOW_NS (10 * NS_PER_S)
/* A closer that could not start (clone() failed: out of memory or of
 * processes) is tried again this much later; its descriptors wait queued,
 * never closed by a worker. */
#define CLOSER_RETRY_NS (1 * NS_PER_S)
/* A queue's first room (it doubles): a uid's closes come a few at a time. */
#define QUEUE_MIN 8

struct closer {
	uid_t uid;
	pid_t pid;	/* the closer running; 0: none */
	uint64_t since; /* when it started */
	bool said;	/* its slow close was logged */
	int *run;	/* what it closes (the first of them, for the log) */
	size_t nrun;
	int *queue; /* what the next one closes */
	size_t nqueue, cap;
	uint64_t retry_at; /* a clone() failed: when to try again; 0: none failed */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* One per uid with closes pending (a few: one per uid whose file system is stuck). */
static struct closer *closers;
static size_t nclosers;
/* The thread that calls closer_tick(): woken (SIGCHLD) when a closer starts. */
static pthread_t ticker;
static bool have_ticker;
static struct ratelimit clone_rl;

bool closer_needed(int fd, const struct stat *st)
{
	return S_ISREG(st->st_mode) && major(st->st_dev) == 0 && fcntl(fd, F_GET_SEALS) < 0;
}

static struct closer *closer_of_locked(uid_t uid, bool create)
{
	for (size_t i = 0; i < nclosers; i++)
		if (closers[i].uid == uid)
			return &closers[i];
	if (!create)
		return NULL;
	struct closer *v = realloc(closers, (nclosers + 1) * sizeof(*v));
	if (!v)
		return NULL;
	closers = v;
	closers[nclosers] = (struct closer){ .uid = uid };
	return &closers[nclosers++];
}

/* The closer's whole life: it has the table and a copy of the memory, of a
 * process of many threads: system calls only. */
__attribute__((noreturn)) static void closer_main(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		syscall(SYS_close, fds[i]);
	_exit(0);
}

/* Start c's closer over its queue; when it cannot start, the queue waits
 * CLOSER_RETRY_NS (closer_tick() tries again). */
static void start_locked(struct closer *c, uint64_t now)
{
	/* Valgrind runs no clone() but a thread's or fork()'s: under it (the
	 * tests' valgrind setup, which leaves out suite hostile) the closes
	 * are done here. */
	if (RUNNING_ON_VALGRIND) {
		for (size_t i = 0; i < c->nqueue; i++)
			close(c->queue[i]);
		c->nqueue = 0;
		return;
	}
	/* Like fork(), but the descriptor table is the daemon's own. */
	long pid = syscall(SYS_clone, CLONE_FILES | SIGCHLD, NULL, NULL, NULL, NULL);
	if (pid == 0)
		closer_main(c->queue, c->nqueue);
	if (pid < 0) {
		int err = errno;
		ulog_rl(&clone_rl, LOG_ERR,
			"uid %u: clone(CLONE_FILES) for a closer: %s; its %zu descriptors wait "
			"%" PRIu64 " ms to be closed",
			c->uid, strerror(err), c->nqueue, CLOSER_RETRY_NS / NS_PER_MS);
		c->retry_at = now + CLOSER_RETRY_NS;
		return;
	}
	c->run = c->queue;
	c->nrun = c->nqueue;
	c->queue = NULL;
	c->nqueue = c->cap = 0;
	c->retry_at = 0;
	c->pid = (pid_t)pid;
	c->since = now;
	c->said = false;
	/* Its slow close, or its retry, is looked for from now on. */
	if (have_ticker)
		pthread_kill(ticker, SIGCHLD);
}

void closer_close(int fd, uid_t uid)
{
	struct stat st;

	if (fd < 0)
		return;
	if (fstat_cached(fd, &st) < 0 || !closer_needed(fd, &st)) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&lock);
	struct closer *c = closer_of_locked(uid, true);
	if (c && c->nqueue == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : QUEUE_MIN;
		int *v = realloc(c->queue, cap * sizeof(*v));
		if (v) {
			c->queue = v;
			c->cap = cap;
		}
	}
	if (!c || c->nqueue == c->cap) {
		pthread_mutex_unlock(&lock);
		/* Never closed here: a worker must not wait in it. */
		ulog(LOG_ERR, "uid %u: descriptor %d: no memory to queue its close; left open", uid,
		     fd);
		return;
	}
	c->queue[c->nqueue++] = fd;
	if (!c->pid && !c->retry_at)
		start_locked(c, uffdd_now_ns());
	pthread_mutex_unlock(&lock);
}

size_t closer_pending(uid_t uid)
{
	pthread_mutex_lock(&lock);
	struct closer *c = closer_of_locked(uid, false);
	size_t n = c ? c->nrun + c->nqueue : 0;
	pthread_mutex_unlock(&lock);
	return n;
}

/* c's closer has ended: the next over its queue, or c is done with (true). */
static bool ended_locked(struct closer *c, uint64_t now)
{
	if (c->said)
		ulog(LOG_INFO, "uid %u: the close of %zu descriptors ended after %" PRIu64 " s",
		     c->uid, c->nrun, (now - c->since) / NS_PER_S);
	free(c->run);
	c->run = NULL;
	c->nrun = 0;
	c->pid = 0;
	if (c->nqueue)
		start_locked(c, now);
	return !c->pid && !c->nqueue;
}

void closer_reap(void)
{
	uint64_t now = uffdd_now_ns();

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nclosers;) {
		struct closer *c = &closers[i];
		pid_t r = c->pid ? waitpid(c->pid, NULL, WNOHANG) : 0;
		if (r == 0 || (r < 0 && errno == EINTR) || !ended_locked(c, now)) {
			i++;
			continue;
		}
		free(c->queue);
		closers[i] = closers[--nclosers];
	}
	if (!nclosers) {
		free(closers);
		closers = NULL;
	}
	pthread_mutex_unlock(&lock);
}

void closer_forget(void)
{
	for (size_t i = 0; i < nclosers; i++) {
		free(closers[i].run);
		free(closers[i].queue);
	}
	free(closers);
	closers = NULL;
	nclosers = 0;
	have_ticker = false;
}

/* When c is to be looked at again (UINT64_MAX: not before it changes). */
static uint64_t look_locked(struct closer *c, uint64_t now)
{
	if (c->retry_at && now >= c->retry_at)
		start_locked(c, now);
	if (c->retry_at)
		return c->retry_at;
	if (!c->pid || c->said)
		return UINT64_MAX;
	if (now - c->since < CLOSE_SLOW_NS)
		return c->since + CLOSE_SLOW_NS;
	ulog(LOG_WARNING,
	     "uid %u: close() of %zu descriptors (the first was %d) pending for %" PRIu64
	     " s in closer %d: their file system does not answer FLUSH; the uid's next closes "
	     "wait for it, until the file system answers or its connection is aborted "
	     "(/sys/fs/fuse/connections/N/abort)",
	     c->uid, c->nrun, c->run[0], (now - c->since) / NS_PER_S, (int)c->pid);
	c->said = true;
	return UINT64_MAX;
}

int closer_tick(uint64_t now)
{
	uint64_t next = UINT64_MAX;

	pthread_mutex_lock(&lock);
	if (!have_ticker) {
		ticker = pthread_self();
		have_ticker = true;
	}
	for (size_t i = 0; i < nclosers; i++) {
		uint64_t t = look_locked(&closers[i], now);
		if (t < next)
			next = t;
	}
	pthread_mutex_unlock(&lock);
	if (next == UINT64_MAX)
		return -1;
	/* Rounded up: never a busy 0 ms wait. */
	return (int)((next - now + NS_PER_MS - 1) / NS_PER_MS);
}
