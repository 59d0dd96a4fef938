/* SPDX-License-Identifier: MIT */
/*
 * The interface of the stale-pin monitor (pin-monitor.c), and all the monitor
 * knows of its owner, the pin context of pin.c: the lock that guards the
 * owner's state and the callbacks, run with that lock held, through which
 * the monitor hands over what it read.  The owner calls the monitor; the
 * monitor calls the owner only through struct pin_monitor_owner.  Never
 * installed.
 */
#ifndef LIBPIN_PIN_MONITOR_H
#define LIBPIN_PIN_MONITOR_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "libpin-private.h"

struct pin_monitor;

/* A change to watched memory that the monitor read from its userfaultfd. */
struct pin_monitor_change {
	uint32_t type; /* PIN_UFFD_EVENT_REMOVE, _UNMAP or _REMAP */
	uintptr_t start, end;
	uintptr_t to;	  /* REMAP: where [start, end) went */
	uint64_t read_ns; /* CLOCK_MONOTONIC, taken after the read (pin_now_ns) */
};

/*
 * on_monitor: the callback runs on the monitor thread, which must not call
 * free() (a heap trim could discard memory it watches and wait for itself).
 */
struct pin_monitor_owner {
	pthread_mutex_t *lock; /* held around every callback below */
	void *arg;	       /* the callbacks' first argument */
	/* The call that makes up for a change not seen, named in log messages. */
	const char *remedy;
	/* Apply one change, in the order the kernel reported them. */
	void (*apply)(void *arg, const struct pin_monitor_change *c, bool on_monitor);
	/* Changes were lost to a full queue: nothing watched can be trusted. */
	void (*lost)(void *arg, bool on_monitor);
	/*
	 * On the monitor thread, once pin_monitor_kick() woke it and no event
	 * waits: do one step of background unregistration, and say whether more
	 * is left.  It may drop the lock around a slow call.
	 */
	bool (*unwatch_step)(void *arg);
};

/* Starts the monitor thread; *owner is copied. */
int pin_monitor_new(const struct pin_monitor_owner *owner, struct pin_monitor **ret);
void pin_monitor_free(struct pin_monitor *m);
/* In a fork child, where the thread does not exist: close the child's
 * descriptors and free its copy. */
void pin_monitor_forget(struct pin_monitor *m);
/* Register [start, end) for events, in a mode that takes over no fault. */
int pin_monitor_watch(struct pin_monitor *m, uintptr_t start, uintptr_t end);
void pin_monitor_unwatch(struct pin_monitor *m, uintptr_t start, uintptr_t end);
/* Wake the monitor thread: unregistrations are pending. */
void pin_monitor_kick(struct pin_monitor *m);
/*
 * With the owner's lock held: wait for a read in progress, then apply every
 * event read so far.  After it, the owner has seen every change the kernel
 * reported before.
 */
void pin_monitor_sync(struct pin_monitor *m, bool on_monitor);
/* Events read since the start, and page faults among them (none expected). */
uint64_t pin_monitor_events(const struct pin_monitor *m);
uint64_t pin_monitor_faults(const struct pin_monitor *m);

#endif /* LIBPIN_PIN_MONITOR_H */
