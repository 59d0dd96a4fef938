// SPDX-License-Identifier: MIT
/*
 * Reading a uffdd session's event log (struct pin_evlog, libpin-private.h,
 * says what the daemon promises): the entries past a reader's tail, each
 * checked against the writer's head after it is read, and the wait for a read
 * of the userfaultfd the daemon is in.  It owns no state (the tail is the pin
 * context's, pin.c) and calls util.c only.
 */
#include <sched.h>

#include "pin-internal.h"

/* How long a look-up waits for uffdd to log the events of a read in
 * progress before it pins anew instead of trusting the cache: a read and its
 * events take microseconds, but the daemon's thread may lose its CPU for a
 * few scheduler slices on a busy machine; one stopped or restarting takes
 * longer, and the pins taken meanwhile are the caller's only (uncached). */
#define SETTLE_NS 50000000ull

int pin_evlog_next(const struct pin_evlog *log, uint64_t *tail, struct pin_evlog_change *c)
{
	uint64_t head = atomic_load_explicit(&log->head, memory_order_acquire), t = *tail;

	if (head == t)
		return 0;
	if (head - t > PIN_EVLOG_ENTRIES)
		goto lost;
	const struct pin_evlog_entry *e = &log->ent[t % PIN_EVLOG_ENTRIES];
	uint64_t start = atomic_load_explicit(&e->start, memory_order_relaxed);
	uint64_t end = atomic_load_explicit(&e->end, memory_order_relaxed);
	uint64_t to = atomic_load_explicit(&e->to, memory_order_relaxed);
	c->type = atomic_load_explicit(&e->type, memory_order_relaxed);
	/* The slot is entry t's only while head is less than a lap past t:
	 * entry t + PIN_EVLOG_ENTRIES is written there before head reaches it. */
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&log->head, memory_order_relaxed) - t >= PIN_EVLOG_ENTRIES)
		goto lost;
	/* Written by a process we trust no more than ourselves: a range that
	 * wraps stands for all of memory. */
	if (end < start || to + (end - start) < to) {
		start = to = 0;
		end = UINTPTR_MAX;
		c->type = PIN_UFFD_EVENT_UNMAP;
	}
	c->start = (uintptr_t)start;
	c->end = (uintptr_t)end;
	c->to = (uintptr_t)to;
	*tail = t + 1;
	return 1;
lost:
	*tail = atomic_load_explicit(&log->head, memory_order_acquire);
	return -ENOSPC;
}

bool pin_evlog_settle(const struct pin_evlog *log)
{
	uint64_t busy = atomic_load(&log->busy), until = 0;

	if (!(busy & 1))
		return true;
	while (atomic_load(&log->busy) == busy) {
		uint64_t now = pin_now_ns();
		if (!until)
			until = now + SETTLE_NS;
		else if (now > until)
			return false;
		sched_yield();
	}
	return true;
}
