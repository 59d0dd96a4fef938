// SPDX-License-Identifier: MIT
/*
 * Pin contexts across fork(2).  A context's pins belong to the process that
 * made it: the io_uring ring and its registered buffers, the RDMA protection
 * domain and its MRs are shared with a fork child, the pinned pages are the
 * parent's (the kernel copies a pinned anonymous page into the child at fork
 * rather than share it, pin_user_pages.rst), mlock does not carry over, and
 * the monitor thread does not exist in the child.  So the child's copy of
 * every context is marked forked, and pin.c refuses it (-ECHILD) and, at
 * pin_ctx_free(), lets go of the child's copies of memory and descriptors
 * only, never of the parent's pins.
 *
 * Every context is locked while the process forks, so that the child's copy
 * of each cache is whole (pthread_atfork, the pattern malloc uses).  It owns
 * the list of live contexts; it calls nothing of libpin.
 */
#include <errno.h>
#include <pthread.h>

#include "pin-internal.h"

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pin_ctx *all;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int once_err;

static void prepare(void)
{
	pthread_mutex_lock(&all_lock);
	for (struct pin_ctx *c = all; c; c = c->fork_next)
		pthread_mutex_lock(&c->lock);
}

static void parent(void)
{
	for (struct pin_ctx *c = all; c; c = c->fork_next)
		pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&all_lock);
}

static void child(void)
{
	for (struct pin_ctx *c = all; c; c = c->fork_next) {
		c->forked = true;
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&all_lock);
}

static void register_handlers(void)
{
	once_err = -pthread_atfork(prepare, parent, child);
}

int pin_fork_track(struct pin_ctx *ctx)
{
	pthread_once(&once, register_handlers);
	if (once_err < 0)
		return once_err;
	pthread_mutex_lock(&all_lock);
	ctx->fork_next = all;
	if (all)
		all->fork_prev = ctx;
	all = ctx;
	pthread_mutex_unlock(&all_lock);
	return 0;
}

void pin_fork_untrack(struct pin_ctx *ctx)
{
	pthread_mutex_lock(&all_lock);
	if (ctx->fork_prev)
		ctx->fork_prev->fork_next = ctx->fork_next;
	else if (all == ctx)
		all = ctx->fork_next;
	if (ctx->fork_next)
		ctx->fork_next->fork_prev = ctx->fork_prev;
	ctx->fork_next = ctx->fork_prev = NULL;
	pthread_mutex_unlock(&all_lock);
}
