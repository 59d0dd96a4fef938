// SPDX-License-Identifier: MIT
/*
 * A fair share of the daemon's time for each uid (issue 12).  What a worker
 * spends on a session's requests, on a slice of its bulk work (Replay,
 * Prefetch, push) and on the sessions its fork children need is charged to
 * the session's uid, in thread CPU time; its faults only mark it active.  A
 * uid charged while k other uids are active (charged, or served faults,
 * within SHARE_ACTIVE_NS) owes k times what it spent: its requests and its
 * bulk work wait until it has paid (deferred, never refused), so that it
 * runs 1/(k+1) of the time at most while others need the daemon, and at
 * full speed alone.  A worker with nothing else to do sleeps in ms (epoll):
 * there, a wait is a ms at least, and the share less.  Faults never wait,
 * whoever owes, but for those of a process that forked while its uid owed
 * (worker.c); a fault whose source cannot be read is charged (place.c).
 * The table holds one entry per uid ever seen, never freed (a client cannot
 * make uids), read and changed with atomics from any worker.  It calls
 * util.c only.
 */
#include <stdlib.h>
#include <time.h>

#include "uffdd.h"

/* A uid charged this recently is active: others share the daemon with it. */
#define SHARE_ACTIVE_NS 10000000ull
/* What a uid owes is at most this far ahead of now: a request waits this long
 * at most, however busy its uid was. */
#define SHARE_DEFER_MAX_NS 5000000ull

struct share {
	uid_t uid;
	_Atomic uint64_t active; /* ns: when it was charged last */
	_Atomic uint64_t until;	 /* ns: what it owes is paid then */
	struct share *_Atomic next;
};

/* The table: a list, appended under the lock, read without it. */
static struct share *_Atomic shares;
static pthread_mutex_t shares_lock = PTHREAD_MUTEX_INITIALIZER;

struct share *share_of(uid_t uid)
{
	struct share *sh;

	for (sh = atomic_load(&shares); sh; sh = atomic_load(&sh->next))
		if (sh->uid == uid)
			return sh;
	pthread_mutex_lock(&shares_lock);
	for (sh = atomic_load(&shares); sh; sh = atomic_load(&sh->next))
		if (sh->uid == uid)
			break;
	if (!sh) {
		sh = calloc(1, sizeof(*sh));
		if (sh) {
			sh->uid = uid;
			atomic_store(&sh->next, atomic_load(&shares));
			atomic_store(&shares, sh);
		}
	}
	pthread_mutex_unlock(&shares_lock);
	return sh;
}

uint64_t share_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Other uids charged within SHARE_ACTIVE_NS of now. */
static unsigned int others_active(const struct share *sh, uint64_t now)
{
	unsigned int k = 0;

	for (struct share *o = atomic_load(&shares); o; o = atomic_load(&o->next)) {
		uint64_t t = atomic_load_explicit(&o->active, memory_order_relaxed);
		k += o != sh && t + SHARE_ACTIVE_NS > now;
	}
	return k;
}

void share_charge(struct share *sh, uint64_t spent, uint64_t now)
{
	if (!sh)
		return;
	atomic_store_explicit(&sh->active, now, memory_order_relaxed);
	unsigned int k = others_active(sh, now);
	if (!k || !spent)
		return;
	/* Its share of the time since the work began is 1/(k+1): it owes the
	 * rest, past what it owed already. */
	uint64_t began = now - spent,
		 until = atomic_load_explicit(&sh->until, memory_order_relaxed), next;
	do {
		next = (until > began ? until : began) + spent * (k + 1);
		if (next > now + SHARE_DEFER_MAX_NS)
			next = now + SHARE_DEFER_MAX_NS;
	} while (!atomic_compare_exchange_weak(&sh->until, &until, next));
}

uint64_t share_owes(const struct share *sh, uint64_t now)
{
	uint64_t until = sh ? atomic_load_explicit(&sh->until, memory_order_relaxed) : 0;

	return until > now ? until - now : 0;
}
