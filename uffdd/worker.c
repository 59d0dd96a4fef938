// SPDX-License-Identifier: MIT
/*
 * Worker threads: each owns the sockets and userfaultfds of its sessions and
 * waits on them with epoll, calling the handler stored with each fd when it
 * is readable; it knows nothing of requests or faults.  Between rounds it
 * lets push.c do one run of background work, and it frees the sessions that
 * died.  Each round it notes the time (its beat), which the watchdog's
 * WATCHDOG=1 depends on (listen.c): a worker stuck stops it.  It charges
 * the time of each session's requests and of its end to its uid, pauses the
 * userfaultfd of a session that forked while its uid owed others time, and
 * watches again the sockets and userfaultfds paused so, once paid
 * (share.c).  It starts and ends the placer crew (crew.c).  A session taken
 * over gets its page servers' watches here (remote-adopt.c).  It may call
 * push.c, session.c, crew.c, share.c, source.c, remote-adopt.c, log.c and
 * util.c.
 */
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "uffdd.h"

/* After serving faults, keep polling this long before sleeping: a thread
 * that faulted once is likely to fault again soon, and an epoll sleep and
 * wake-up costs more than the fault itself. */
#define SPIN_NS 200000ull
/* While polling, epoll_wait() every so many rounds. */
#define SPIN_EPOLL_EVERY 8

static struct worker *workers;
static unsigned int nworkers;
/* The daemon exits: each loop ends at its next round. */
static atomic_bool stopping;
/* Posted by each worker once its own resources are made (its io_uring):
 * the daemon is ready, and its descriptors counted, only after. */
static sem_t started;
/* How long an exit waits for each worker to end its loop. */
#define STOP_WAIT_S 2

/* With a watchdog, an idle worker wakes this often (ms): a quarter of its
 * interval, so that it went round within half of it when the main thread
 * looks (listen.c). */
static int watchdog_wait_ms(void)
{
	uint64_t ms = uffdd_cfg.watchdog_ns / 4 / 1000000;

	return ms ? (ms < INT32_MAX ? (int)ms : INT32_MAX) : 1;
}

bool workers_alive(uint64_t since, unsigned int *ret_stuck)
{
	for (unsigned int i = 0; i < nworkers; i++) {
		if (atomic_load_explicit(&workers[i].beat, memory_order_relaxed) < since) {
			*ret_stuck = i;
			return false;
		}
	}
	return true;
}

int worker_watch(struct worker *w, struct watch *wt, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = wt };

	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = errno;
		ulog(LOG_ERR, "epoll_ctl(ADD, fd %d): %s", fd, strerror(err));
		return -err;
	}
	return 0;
}

void worker_adopt_child(struct session *parent, struct session *c, int fd)
{
	struct worker *w = parent->w;

	c->w = w;
	c->wnext = w->sessions;
	w->sessions = c;
	atomic_fetch_add(&w->nsessions, 1);
	if (worker_watch(w, &c->wuffd, fd) < 0)
		session_kill(c, "cannot watch its userfaultfd");
}

void workers_assign(struct session *s)
{
	struct worker *w = &workers[0];
	uint64_t one = 1;

	for (unsigned int i = 1; i < nworkers; i++)
		if (atomic_load(&workers[i].nsessions) < atomic_load(&w->nsessions))
			w = &workers[i];
	/* A page-server source is read by one worker (remotes_pump()), and a
	 * reply wakes only that worker's sessions: the sessions that share
	 * one (a fork family's, rebuilt after a restart) go to it. */
	struct worker *home = NULL;
	for (size_t i = 0; i < s->nregions && !home; i++) {
		struct remote *rm = source_remote(s->regions[i]->src);
		if (rm)
			home = remote_home(rm, NULL);
	}
	if (home)
		w = home;
	for (size_t i = 0; i < s->nregions; i++) {
		struct remote *rm = source_remote(s->regions[i]->src);
		if (rm)
			remote_home(rm, w);
	}
	atomic_fetch_add(&w->nsessions, 1);
	pthread_mutex_lock(&w->qlock);
	s->wnext = w->queue;
	w->queue = s;
	pthread_mutex_unlock(&w->qlock);
	if (write(w->efd, &one, sizeof(one)) != sizeof(one))
		ulog(LOG_ERR, "eventfd write: %m");
}

static void adopt(struct worker *w)
{
	uint64_t v;

	if (read(w->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		ulog(LOG_ERR, "eventfd read: %m");
	pthread_mutex_lock(&w->qlock);
	struct session *q = w->queue;
	w->queue = NULL;
	pthread_mutex_unlock(&w->qlock);
	while (q) {
		struct session *s = q;
		q = q->wnext;
		s->w = w;
		s->wnext = w->sessions;
		w->sessions = s;
		if (s->sock >= 0 && worker_watch(w, &s->wsock, s->sock) < 0)
			session_kill(s, "cannot watch its socket");
		/* A session taken over after a restart has its userfaultfd,
		 * and its page servers' GETs in flight. */
		if (s->uffd && worker_watch(w, &s->wuffd, pin_uffd_fd(s->uffd)) < 0)
			session_kill(s, "cannot watch its userfaultfd");
		for (size_t i = 0; i < s->nregions; i++) {
			struct remote *rm = source_remote(s->regions[i]->src);
			if (rm)
				remote_attach(rm, w, s->id);
		}
	}
}

static void reap(struct worker *w)
{
	for (struct session **p = &w->sessions; *p;) {
		struct session *s = *p;
		if (!s->dead) {
			p = &s->wnext;
			continue;
		}
		*p = s->wnext;
		if (w->hot == s)
			w->hot = NULL;
		atomic_fetch_sub(&w->nsessions, 1);
		/* Its end is its uid's time too, as its start was (a fork
		 * child's most of all: its parent made it for nothing). */
		struct share *sh = s->share;
		uint64_t c0 = share_clock();
		session_free(s);
		share_charge(sh, share_clock() - c0, uffdd_now_ns());
	}
}

/*
 * A FORK blocks the forking thread until the daemon reads it, and each costs
 * the daemon a session: a process that forked while its uid owes others time
 * (charged for its children, share.c) has its userfaultfd unwatched until
 * that is paid, so that its uid forks at its share's pace.  Its faults wait
 * as long (5 ms at most, share.c): the process's own doing; a session that
 * does not fork is never paused so.
 */
static void pause_uffd(struct worker *w, struct session *s)
{
	struct epoll_event ev = { .events = 0, .data.ptr = &s->wuffd };

	if (epoll_ctl(w->ep, EPOLL_CTL_MOD, pin_uffd_fd(s->uffd), &ev) < 0) {
		ulog(LOG_ERR, "session %" PRIu64 ": epoll_ctl(MOD, its userfaultfd): %m", s->id);
		return;
	}
	s->uffd_paused = true;
	STAT_ADD(s->stats.deferred, 1);
	if (w->hot == s)
		w->hot = NULL;
}

/*
 * Call the handler of a readable watch.  Requests are charged to the
 * session's uid (share.c); faults read only mark it active (served first,
 * they are never deferred; what an event costs, fault.c charges).
 */
static void run(struct watch *wt)
{
	struct session *s = wt->s;
	struct worker *w = s->w;

	if (wt != &s->wsock) {
		uint64_t busy = w->last_busy;
		s->forked = false;
		wt->handle(s);
		/* fault_handle() read events. */
		if (w->last_busy != busy)
			share_charge(s->share, 0, w->last_busy);
		if (s->forked && !s->dead && share_owes(s->share, uffdd_now_ns()))
			pause_uffd(w, s);
		return;
	}
	uint64_t c0 = share_clock();
	wt->handle(s);
	share_charge(s->share, share_clock() - c0, uffdd_now_ns());
}

/*
 * Watch again the sockets (control.c) and userfaultfds (pause_uffd()) of the
 * sessions paused while their uid owed others time, now paid; returns
 * timeout lowered to the wait (ms) for the first one still paused.
 */
static int resume_paused(struct worker *w, int timeout)
{
	uint64_t now = uffdd_now_ns();

	for (struct session *s = w->sessions; s; s = s->wnext) {
		bool sock = s->paused && s->sock >= 0;
		if ((!sock && !s->uffd_paused) || s->dead)
			continue;
		uint64_t owes = share_owes(s->share, now);
		if (owes) {
			int ms = (int)((owes + 999999) / 1000000);
			if (timeout < 0 || ms < timeout)
				timeout = ms;
			continue;
		}
		if (s->uffd_paused) {
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &s->wuffd };
			s->uffd_paused = false;
			if (epoll_ctl(w->ep, EPOLL_CTL_MOD, pin_uffd_fd(s->uffd), &ev) < 0) {
				ulog(LOG_ERR,
				     "session %" PRIu64 ": epoll_ctl(MOD, its userfaultfd): %m",
				     s->id);
				session_kill(s, "its userfaultfd cannot be watched");
			}
		}
		if (!sock)
			continue;
		struct epoll_event ev = { .events = s->outq_n ? EPOLLOUT : EPOLLIN,
					  .data.ptr = &s->wsock };
		s->paused = false;
		if (epoll_ctl(w->ep, EPOLL_CTL_MOD, s->sock, &ev) < 0) {
			ulog(LOG_ERR, "session %" PRIu64 ": epoll_ctl(MOD, its socket): %m", s->id);
			session_kill(s, "its socket cannot be watched");
		}
	}
	return timeout;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[64];
	unsigned int spins = 0;

	source_thread_start(w->efd);
	sem_post(&started);
	while (!atomic_load(&stopping)) {
		uint64_t now = uffdd_now_ns();
		bool spinning = now - w->last_busy < SPIN_NS;
		atomic_store_explicit(&w->beat, now, memory_order_relaxed);
		/* While polling, a read() of the userfaultfd that last had
		 * events is the cheapest look; epoll_wait() looks at everything
		 * else every few rounds. */
		if (spinning && w->hot && !w->hot->dead && !w->hot->uffd_paused &&
		    ++spins % SPIN_EPOLL_EVERY) {
			run(&w->hot->wuffd);
			push_step(w);
			resume_paused(w, 0);
			reap(w);
			continue;
		}
		int timeout = resume_paused(w, spinning ? 0 : push_timeout(w));
		/* Idle, it still goes round for the watchdog (listen.c). */
		if (uffdd_cfg.watchdog_ns && (timeout < 0 || timeout > watchdog_wait_ms()))
			timeout = watchdog_wait_ms();
		int n = epoll_wait(w->ep, evs, PIN_ARRAY_SIZE(evs), timeout);
		if (n < 0) {
			if (errno != EINTR)
				ulog(LOG_ERR, "epoll_wait: %m");
			n = 0;
		}
		for (int i = 0; i < n; i++) {
			struct watch *wt = evs[i].data.ptr;
			if (!wt->handle)
				adopt(w);
			else if (wt->s->dead)
				continue;
			else
				run(wt);
		}
		push_step(w);
		reap(w);
	}
	return NULL;
}

static int worker_init(struct worker *w)
{
	atomic_init(&w->beat, uffdd_now_ns());
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	w->buf = malloc(uffdd_run_bytes());
	w->events = calloc(UFFDD_MAX_EVENTS, sizeof(*w->events));
	w->wevent = (struct watch){ NULL, NULL };
	pthread_mutex_init(&w->qlock, NULL);
	if (w->ep < 0 || w->efd < 0) {
		ulog(LOG_ERR, "epoll_create1/eventfd: %m");
		return -errno;
	}
	if (!w->buf || !w->events)
		return -ENOMEM;
	return worker_watch(w, &w->wevent, w->efd);
}

int workers_start(unsigned int n)
{
	/* As many threads may place one session's run as there are workers
	 * (as many as CPUs, unless --workers says otherwise). */
	int r = crew_start(n - 1 < UFFDD_PLACERS_MAX ? n - 1 : UFFDD_PLACERS_MAX);
	if (r < 0)
		return r;
	workers = calloc(n, sizeof(*workers));
	if (!workers)
		return -ENOMEM;
	nworkers = n;
	sem_init(&started, 0, 0);
	for (unsigned int i = 0; i < n; i++) {
		r = worker_init(&workers[i]);
		if (r < 0)
			return r;
		r = pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
		if (r) {
			ulog(LOG_ERR, "pthread_create: %s", strerror(r));
			return -r;
		}
	}
	/* sem_wait() fails only when a signal comes (EINTR). */
	for (unsigned int i = 0; i < n;)
		i += sem_wait(&started) == 0;
	return 0;
}

void workers_stop(void)
{
	uint64_t one = 1;

	atomic_store(&stopping, true);
	for (unsigned int i = 0; i < nworkers; i++)
		if (write(workers[i].efd, &one, sizeof(one)) != sizeof(one))
			ulog(LOG_ERR, "eventfd write: %m");
	for (unsigned int i = 0; i < nworkers; i++) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += STOP_WAIT_S;
		int r = pthread_timedjoin_np(workers[i].thread, NULL, &until);
		if (r) {
			ulog(LOG_WARNING,
			     "worker %u did not end its loop in %d s (%s): its sessions' records "
			     "stay mapped",
			     i, STOP_WAIT_S, strerror(r));
			return;
		}
	}
	/* None runs: no session is in use. */
	for (unsigned int i = 0; i < nworkers; i++) {
		for (struct session *s = workers[i].sessions; s; s = s->wnext)
			session_unmap_record(s);
		for (struct session *s = workers[i].queue; s; s = s->wnext)
			session_unmap_record(s);
	}
	crew_stop();
}
