// SPDX-License-Identifier: MIT
/*
 * The parts of a session's durable record written in place and durable at
 * once, not at a commit: the working set, the fork children being made, the
 * range a placing ioctl may be filling, and the messages of the last read of
 * the session's userfaultfd, the pages lost and whether the session is
 * stranded.  The layout is state-internal.h's.  It calls
 * no other file.
 */
#include <stdio.h>
#include <string.h>

#include "state-internal.h"

/* ---- the working set ---- */

int state_wset_add(struct state *st, uint64_t addr, uint64_t end)
{
	struct state_range *w = (struct state_range *)(st->base + WSET_OFF);

	if (addr >= end)
		return -EINVAL;
	if (st->wset_n && w[st->wset_n - 1].end == addr) {
		__atomic_store_n(&w[st->wset_n - 1].end, end, __ATOMIC_RELEASE);
		return 0;
	}
	if (st->wset_n >= UFFDD_WSET_MAX)
		return -ENOSPC;
	w[st->wset_n] = (struct state_range){ addr, end };
	st->wset_n++;
	/* The run, then the count that makes it seen. */
	__atomic_store_n(&st->hdr->wset_n, st->wset_n, __ATOMIC_RELEASE);
	return 0;
}

void state_making_set(struct state *st, uint64_t first, uint64_t end)
{
	st->making[0] = first;
	st->making[1] = end;
	/* Empty first: a death between the stores leaves the old ids, none, or
	 * the new ones, never a mix.  Seen before the descriptors they name
	 * reach the store (a syscall after these stores). */
	__atomic_store_n(&st->hdr->making[1], 0, __ATOMIC_RELEASE);
	__atomic_store_n(&st->hdr->making[0], first, __ATOMIC_RELEASE);
	__atomic_store_n(&st->hdr->making[1], end, __ATOMIC_RELEASE);
}

bool state_making(const struct state *st, uint64_t id)
{
	return id >= st->making[0] && id < st->making[1];
}

uint64_t state_making_first(const struct state *st)
{
	return st->making[0];
}

void state_placing_set(struct state *st, uint64_t start, uint64_t end)
{
	/* Empty first: a death between the stores leaves the old range, none,
	 * or the new one, never a mix.  Seen before the ioctl (a syscall
	 * after these stores) places anything. */
	__atomic_store_n(&st->hdr->placing[1], 0, __ATOMIC_RELEASE);
	if (start < end) {
		__atomic_store_n(&st->hdr->placing[0], start, __ATOMIC_RELEASE);
		__atomic_store_n(&st->hdr->placing[1], end, __ATOMIC_RELEASE);
	}
}

bool state_placing(const struct state *st, uint64_t *ret_start, uint64_t *ret_end)
{
	*ret_start = st->placing[0];
	*ret_end = st->placing[1];
	return st->placing[0] < st->placing[1];
}

void state_lost_add(struct state *st, uint64_t n)
{
	st->lost += n;
	/* Seen before the ioctl (a syscall after this store) poisons. */
	__atomic_store_n(&st->hdr->lost, st->lost, __ATOMIC_RELEASE);
}

uint64_t state_lost(const struct state *st)
{
	return st->lost;
}

void state_strand(struct state *st, const char *why)
{
	if (st->stranded)
		return;
	st->stranded = true;
	snprintf(st->stranded_why, sizeof(st->stranded_why), "%s", why);
	/* The text, then the flag that makes it seen. */
	memcpy(st->hdr->stranded_why, st->stranded_why, sizeof(st->stranded_why));
	__atomic_store_n(&st->hdr->stranded, 1, __ATOMIC_RELEASE);
}

const char *state_stranded(const struct state *st)
{
	return st->stranded ? st->stranded_why : NULL;
}

void *state_events_buf(struct state *st)
{
	struct state_hdr *h = st->hdr;

	/* All applied before any is cleared: a death leaves them so, then
	 * none, then the next read's, none applied. */
	__atomic_store_n(&h->events_applied, STATE_EVENTS_MAX, __ATOMIC_RELEASE);
	for (uint32_t i = 0; i < STATE_EVENTS_MAX && h->events[i][0]; i++)
		memset(h->events[i], 0, PIN_UFFD_MSG_BYTES);
	__atomic_store_n(&h->events_applied, 0, __ATOMIC_RELEASE);
	st->events_n = st->events_applied = 0;
	return h->events;
}

void state_events_applied(struct state *st, uint32_t upto)
{
	__atomic_store_n(&st->hdr->events_applied, upto, __ATOMIC_RELEASE);
	st->events_applied = upto;
}

const struct pin_uffd_event *state_event_pending(const struct state *st, uint32_t *at,
						 uint32_t *ret_forks)
{
	uint32_t i = *at > st->events_applied ? *at : st->events_applied;

	for (; i < st->events_n; i++) {
		if (st->events[i].type == PIN_UFFD_EVENT_PAGEFAULT)
			continue;
		*ret_forks = 0;
		for (uint32_t k = 0; k < i; k++)
			*ret_forks += st->events[k].type == PIN_UFFD_EVENT_FORK;
		*at = i;
		return &st->events[i];
	}
	return NULL;
}

const struct state_range *state_wset(const struct state *st, size_t *ret_n)
{
	*ret_n = (size_t)st->wset_n;
	return (const struct state_range *)(st->base + WSET_OFF);
}
