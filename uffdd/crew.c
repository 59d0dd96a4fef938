// SPDX-License-Identifier: MIT
/*
 * The placer crew (issue 14): threads that take part in one worker's bulk
 * placing, so that a run of one session goes in on several CPUs at once
 * (the kernel takes concurrent UFFDIO_COPY/ZEROPAGE/CONTINUE on disjoint
 * ranges of one userfaultfd).  A caller hands a batch of independent tasks;
 * it and every idle placer take the next task, in order, until none is
 * left or the caller took its own share: then it closes the batch, waits
 * for the tasks under way and returns how many were taken, the first ones.
 * So the caller is kept no longer than its share takes, however slow the
 * placers are to start (the machine busy), and what they did not take is
 * left for later.  A caller that finds the crew serving another worker does
 * its share alone.  Tasks touch no session state (the caller applies their
 * results).  It calls log.c and util.c only.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "uffdd.h"

#define CREW_THREAD_NAME "uffdd-placer"
/*
 * After a batch a placer looks for the next one this long before it sleeps,
 * and a caller for the placers' last tasks before it sleeps.  A placer done
 * with its piece waits for the caller's last one (a piece of some 128 pages:
 * 50 to 200 us) and the gap to the next batch: with a shorter look it slept
 * after most batches of a push (some 120 of 185 in a 256 MiB restore), and
 * each futex wake-up made it start the next one late (25 ms in all), leaving
 * its pieces to the caller.  Each look yields the CPU (spin_pause()), so a
 * placer that shares the caller's CPU lets the caller run instead of taking
 * its time: there the caller places the batch alone, as fast as one thread
 * can (a busy spin there made that restore 1.5 x slower).
 */
#define CREW_SPIN_NS 300000ull

static struct {
	pthread_mutex_t use; /* held by the caller the crew serves */
	pthread_mutex_t lock;
	pthread_cond_t go, done;
	pthread_t *threads;
	void **bufs;
	unsigned int n;	      /* placers started */
	_Atomic uint64_t gen; /* batches handed out so far */
	_Atomic bool stop;
	/* The batch: n tasks of size bytes from tasks, fn on each. */
	crew_fn fn;
	char *tasks;
	size_t size;
	unsigned int ntasks;
	_Atomic unsigned int busy; /* placers inside it */
	_Atomic unsigned int next; /* the next task to take */
} crew = {
	.use = PTHREAD_MUTEX_INITIALIZER,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.go = PTHREAD_COND_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
};

/* Take tasks of the batch until none is left, or most were taken here;
 * returns how many. */
static unsigned int take(crew_fn fn, char *tasks, size_t size, unsigned int n, unsigned int most,
			 void *buf)
{
	unsigned int k, done = 0;

	while (done < most && (k = atomic_fetch_add(&crew.next, 1)) < n) {
		fn(tasks + k * size, buf);
		done++;
	}
	return done;
}

/* One look of a spin: the CPU to any other thread that waits for it (on a
 * CPU of its own, the call returns at once). */
static void spin_pause(void)
{
	sched_yield();
}

/* Until a batch after the seen-th is handed out, the crew stops, or
 * CREW_SPIN_NS passed. */
static void spin_while(uint64_t seen)
{
	uint64_t until = uffdd_now_ns() + CREW_SPIN_NS;

	while (atomic_load(&crew.gen) == seen && !atomic_load(&crew.stop) && uffdd_now_ns() < until)
		spin_pause();
}

/* Until no placer is inside the batch, or CREW_SPIN_NS passed. */
static void spin_while_busy(void)
{
	uint64_t until = uffdd_now_ns() + CREW_SPIN_NS;

	while (atomic_load(&crew.busy) && uffdd_now_ns() < until)
		spin_pause();
}

static void *placer_main(void *arg)
{
	void *buf = arg;
	uint64_t seen = 0;

	pthread_mutex_lock(&crew.lock);
	for (;;) {
		if (!crew.stop && crew.gen == seen) {
			pthread_mutex_unlock(&crew.lock);
			spin_while(seen);
			pthread_mutex_lock(&crew.lock);
		}
		while (!crew.stop && crew.gen == seen)
			pthread_cond_wait(&crew.go, &crew.lock);
		if (crew.stop)
			break;
		seen = crew.gen;
		crew.busy++;
		crew_fn fn = crew.fn;
		char *tasks = crew.tasks;
		size_t size = crew.size;
		unsigned int n = crew.ntasks;
		pthread_mutex_unlock(&crew.lock);
		take(fn, tasks, size, n, n, buf);
		pthread_mutex_lock(&crew.lock);
		if (!--crew.busy)
			pthread_cond_signal(&crew.done);
	}
	pthread_mutex_unlock(&crew.lock);
	return NULL;
}

int crew_start(unsigned int n)
{
	crew.threads = calloc(n ? n : 1, sizeof(*crew.threads));
	crew.bufs = calloc(n ? n : 1, sizeof(*crew.bufs));
	if (!crew.threads || !crew.bufs)
		return -ENOMEM;
	for (unsigned int i = 0; i < n; i++) {
		crew.bufs[i] = malloc(uffdd_run_bytes());
		if (!crew.bufs[i])
			return -ENOMEM;
		int r = pthread_create(&crew.threads[i], NULL, placer_main, crew.bufs[i]);
		if (r) {
			ulog(LOG_ERR, "pthread_create (placer %u): %s", i, strerror(r));
			free(crew.bufs[i]);
			crew.bufs[i] = NULL;
			return -r;
		}
		/* Named: a look at the daemon's threads tells placers from
		 * workers (a placer is idle whenever every worker is). */
		pthread_setname_np(crew.threads[i], CREW_THREAD_NAME);
		crew.n = i + 1;
	}
	return 0;
}

unsigned int crew_width(void)
{
	return crew.n + 1;
}

unsigned int crew_run(crew_fn fn, void *tasks, size_t size, unsigned int n, unsigned int mine,
		      void *buf)
{
	if (!crew.n || n < 2 || pthread_mutex_trylock(&crew.use)) {
		unsigned int k;
		for (k = 0; k < n && k < mine; k++)
			fn((char *)tasks + k * size, buf);
		return k;
	}
	pthread_mutex_lock(&crew.lock);
	crew.fn = fn;
	crew.tasks = tasks;
	crew.size = size;
	crew.ntasks = n;
	atomic_store(&crew.next, 0);
	crew.gen++;
	pthread_cond_broadcast(&crew.go);
	pthread_mutex_unlock(&crew.lock);
	take(fn, tasks, size, n, mine, buf);
	/* Closed: what no one took is left, a suffix of the tasks. */
	unsigned int taken = atomic_exchange(&crew.next, n);
	spin_while_busy();
	pthread_mutex_lock(&crew.lock);
	while (crew.busy)
		pthread_cond_wait(&crew.done, &crew.lock);
	/* A placer that wakes late finds nothing to take. */
	crew.ntasks = 0;
	pthread_mutex_unlock(&crew.lock);
	pthread_mutex_unlock(&crew.use);
	return taken < n ? taken : n;
}

void crew_stop(void)
{
	pthread_mutex_lock(&crew.lock);
	crew.stop = true;
	pthread_cond_broadcast(&crew.go);
	pthread_mutex_unlock(&crew.lock);
	for (unsigned int i = 0; i < crew.n; i++) {
		pthread_join(crew.threads[i], NULL);
		free(crew.bufs[i]);
	}
	free(crew.threads);
	free(crew.bufs);
	crew.threads = NULL;
	crew.bufs = NULL;
	crew.n = 0;
}
