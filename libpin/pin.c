// SPDX-License-Identifier: MIT
/*
 * A pin context's registration cache (the context made by pin-ctx.c, its
 * handles read by pin-handle.c): lookups by range, refcounted
 * handles, idle pins in LRU order under count and byte limits, and
 * invalidation, so that a lookup never returns a pin whose pages the process
 * no longer sees.  Staleness does not depend on the cache: pins kept out of
 * it (taken right after a discard) are tracked all the same (ctx->held), but
 * never shared: such a pin may have raced the discard's zap and hold the old
 * pages, where a new pin by the thread that discarded (its madvise() done)
 * cannot (tests/test-pin.c threads_never_see_stale).  It owns the context's
 * lock and everything under it, including the stale-pin rules (the recent discards, the ranges left
 * to unregister).  It calls the interval map (range.c), the backends through struct
 * pin_backend_ops, the monitor (pin-monitor.h) and util.c; the monitor calls back only through the
 * struct pin_monitor_owner given to it here.  A miss first lets the uffdd client serving the
 * memory place its missing pages, through the hook the client set (pin_ctx_set_populate()); every
 * look-up first applies what that client's session logged (pin_ctx_set_evlog(), read through
 * pin-evlog.c).
 */
#include <stdio.h>
#include <string.h>

#include "pin-internal.h"

/* A lookup that keeps finding its new pin invalidated while it pins gives up. */
#define STALE_RETRIES 3
/* Background unregistration goes this far per ioctl (about 1.5 ms). */
#define UNWATCH_CHUNK (64ul << 20)
/* Room kept in ctx->unreg for the splits the monitor thread may make. */
#define UNREG_SLACK 16

struct gap_fn {
	const struct pin_ctx *ctx;
	void (*fn)(uintptr_t start, uintptr_t end, void *arg);
	void *arg;
};

static void held_gaps(uintptr_t start, uintptr_t end, void *arg)
{
	const struct gap_fn *g = arg;

	pin_imap_gaps(&g->ctx->held, start, end, g->fn, g->arg);
}

void pin_ctx_uncovered(struct pin_ctx *ctx, uintptr_t start, uintptr_t end,
		       void (*fn)(uintptr_t start, uintptr_t end, void *arg), void *arg)
{
	struct gap_fn g = { ctx, fn, arg };

	/* The gaps of the cached entries that no held one covers either. */
	pin_imap_gaps(&ctx->map, start, end, held_gaps, &g);
}

/* With ctx->lock held: remember a discard the monitor read at read_ns. */
static void note_remove(struct pin_ctx *ctx, uintptr_t start, uintptr_t end, uint64_t read_ns)
{
	uint64_t now = pin_now_ns();
	unsigned int keep = 0;

	/* Forget the discards no pin can race with any more. */
	for (unsigned int i = 0; i < ctx->nremoves; i++)
		if (ctx->removes[i].read_ns + PIN_REMOVE_RACE_NS > now)
			ctx->removes[keep++] = ctx->removes[i];
	ctx->nremoves = keep;
	if (keep == PIN_REMOVE_LOG) {
		if (read_ns + PIN_REMOVE_RACE_NS > ctx->remove_all_until)
			ctx->remove_all_until = read_ns + PIN_REMOVE_RACE_NS;
		return;
	}
	ctx->removes[ctx->nremoves++] = (struct pin_remove){ start, end, read_ns };
}

/* Could a discard read before `started` still be zapping under r? */
static bool after_remove(const struct pin_ctx *ctx, const struct pin_range *r, uint64_t started)
{
	if (ctx->remove_all_until > started)
		return true;
	for (unsigned int i = 0; i < ctx->nremoves; i++) {
		const struct pin_remove *d = &ctx->removes[i];
		if (d->start < r->end && d->end > r->start &&
		    d->read_ns + PIN_REMOVE_RACE_NS > started)
			return true;
	}
	return false;
}

static void lru_unlink(struct pin_ctx *ctx, struct pin_range *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		ctx->lru_head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		ctx->lru_tail = r->prev;
	r->prev = r->next = NULL;
	ctx->idle_count--;
	ctx->idle_bytes -= r->end - r->start;
}

static void lru_append(struct pin_ctx *ctx, struct pin_range *r)
{
	r->next = NULL;
	r->prev = ctx->lru_tail;
	if (ctx->lru_tail)
		ctx->lru_tail->next = r;
	else
		ctx->lru_head = r;
	ctx->lru_tail = r;
	ctx->idle_count++;
	ctx->idle_bytes += r->end - r->start;
}

static void unwatch_now(uintptr_t start, uintptr_t end, void *arg)
{
	struct pin_ctx *ctx = arg;

	pin_monitor_unwatch(ctx->mon, start, end);
	pin_imap_punch(&ctx->unreg, start, end);
}

static void unwatch_later(uintptr_t start, uintptr_t end, void *arg)
{
	struct pin_ctx *ctx = arg;

	/* Pending parts leave first, so that the items stay disjoint. */
	if (pin_imap_reserve(&ctx->unreg, UNREG_SLACK + 2) < 0 ||
	    pin_imap_punch(&ctx->unreg, start, end) < 0 ||
	    pin_imap_insert(&ctx->unreg, start, end, NULL) < 0) {
		pin_monitor_unwatch(ctx->mon, start, end);
		return;
	}
	pin_monitor_kick(ctx->mon);
}

/* With ctx->lock held: stop watching the parts of [start, end) no live
 * entry covers, now (the monitor thread) or in the background. */
static void unwatch_uncovered(struct pin_ctx *ctx, uintptr_t start, uintptr_t end, bool now)
{
	/* Closing the userfaultfd unregisters everything at once. */
	if (!ctx->mon || ctx->closing)
		return;
	pin_ctx_uncovered(ctx, start, end, now ? unwatch_now : unwatch_later, ctx);
}

/* The monitor thread, with ctx->lock held: forget pending unregistrations
 * of a range that is gone. */
static void unwatch_forget(struct pin_ctx *ctx, uintptr_t start, uintptr_t end)
{
	/* Without room to split, the chunk is unregistered later for nothing:
	 * the kernel skips what is no longer registered. */
	pin_imap_punch(&ctx->unreg, start, end);
}

/* The monitor thread, with ctx->lock held: unregister one chunk of what is
 * pending, dropping the lock around the ioctl.  False when nothing is left. */
static bool unwatch_step(void *arg)
{
	struct pin_ctx *ctx = arg;

	if (!ctx->unreg.n || ctx->closing)
		return false;
	uintptr_t start = ctx->unreg.items[0].start, end = ctx->unreg.items[0].end;
	if (end - start > UNWATCH_CHUNK)
		end = start + UNWATCH_CHUNK;
	/* From an item's start: never splits. */
	pin_imap_punch(&ctx->unreg, start, end);
	ctx->unreg_busy_start = start;
	ctx->unreg_busy_end = end;
	pthread_mutex_unlock(&ctx->lock);
	pin_monitor_unwatch(ctx->mon, start, end);
	pthread_mutex_lock(&ctx->lock);
	ctx->unreg_busy_start = ctx->unreg_busy_end = 0;
	pthread_cond_broadcast(&ctx->unreg_done);
	return ctx->unreg.n > 0;
}

/* Take back what a pending unregistration of [start, end) would drop. */
static int unwatch_cancel(struct pin_ctx *ctx, uintptr_t start, uintptr_t end)
{
	while (ctx->unreg_busy_end > start && ctx->unreg_busy_start < end)
		pthread_cond_wait(&ctx->unreg_done, &ctx->lock);
	int r = pin_imap_reserve(&ctx->unreg, UNREG_SLACK + 1);
	return r < 0 ? r : pin_imap_punch(&ctx->unreg, start, end);
}

static void unpin(struct pin_ctx *ctx, struct pin_range *r)
{
	if (!r->pinned)
		return;
	if (ctx->be->dirty_before_unpin && !r->changed)
		pin_dirty_shared(r->start, r->end);
	ctx->be->unpin(ctx, r);
	r->pinned = false;
	ctx->pinned_bytes -= r->end - r->start;
	ctx->pinned_ranges--;
}

/*
 * Release an entry already out of the map and the LRU.  The monitor thread
 * never frees (see unpin_on_monitor): it leaves the entry on the dead list.
 */
static void retire(struct pin_ctx *ctx, struct pin_range *r, bool on_monitor)
{
	if (r->watched) {
		unwatch_uncovered(ctx, r->start, r->end, on_monitor);
		r->watched = false;
	} else if (ctx->mon) {
		ctx->unwatched--;
	}
	if (!on_monitor || ctx->be->unpin_on_monitor)
		unpin(ctx, r);
	if (on_monitor) {
		r->next = ctx->dead;
		ctx->dead = r;
		return;
	}
	free(r);
}

static void reap_dead(struct pin_ctx *ctx)
{
	while (ctx->dead) {
		struct pin_range *r = ctx->dead;
		ctx->dead = r->next;
		unpin(ctx, r);
		free(r);
	}
}

/* With ctx->lock held: drop every entry overlapping [start, end), which
 * changed (an event of the monitor's) or which the caller gives up. */
static unsigned int invalidate_locked(struct pin_ctx *ctx, uintptr_t start, uintptr_t end,
				      bool changed, bool on_monitor)
{
	struct pin_range *r;
	unsigned int n = 0;

	while ((r = pin_imap_take_overlap(&ctx->map, start, end))) {
		r->changed = changed;
		atomic_store(&r->stale, true);
		ctx->invalidations++;
		n++;
		if (r->refs == 0) {
			lru_unlink(ctx, r);
			retire(ctx, r, on_monitor);
		}
	}
	/* Held by callers only: their last pin_range_put() retires them. */
	while ((r = pin_imap_take_overlap(&ctx->held, start, end))) {
		r->changed = changed;
		atomic_store(&r->stale, true);
		ctx->invalidations++;
		n++;
	}
	return n;
}

/* The monitor, with ctx->lock held: one change it read, in the kernel's order. */
static void monitor_apply(void *arg, const struct pin_monitor_change *c, bool on_monitor)
{
	struct pin_ctx *ctx = arg;

	invalidate_locked(ctx, c->start, c->end, true, on_monitor);
	if (c->type == PIN_UFFD_EVENT_REMOVE) {
		note_remove(ctx, c->start, c->end, c->read_ns);
		return;
	}
	/* Unmapped or moved away: nothing to unregister there any more. */
	unwatch_forget(ctx, c->start, c->end);
	/* The registration moved along with the mapping: drop it there. */
	if (c->type == PIN_UFFD_EVENT_REMAP)
		unwatch_uncovered(ctx, c->to, c->to + (c->end - c->start), true);
}

/* With ctx->lock held: one change the session's event log holds. */
static void evlog_apply(struct pin_ctx *ctx, const struct pin_evlog_change *c)
{
	invalidate_locked(ctx, c->start, c->end, true, false);
	if (c->type == PIN_UFFD_EVENT_REMOVE)
		note_remove(ctx, c->start, c->end, pin_now_ns());
	/* MREMAP_FIXED unmapped what a pin of the destination held. */
	if (c->type == PIN_UFFD_EVENT_REMAP)
		invalidate_locked(ctx, c->to, c->to + (c->end - c->start), true, false);
}

/* With ctx->lock held: apply what the session's event log holds past our tail. */
static void evlog_read(struct pin_ctx *ctx)
{
	struct pin_evlog_change c;
	int r;

	if (!ctx->evlog)
		return;
	while ((r = pin_evlog_next(ctx->evlog, &ctx->evlog_tail, &c)) > 0)
		evlog_apply(ctx, &c);
	if (r < 0) {
		pin_log(PIN_LOG_WARN,
			"uffdd event log: overrun before it was read, dropping every pin");
		invalidate_locked(ctx, 0, UINTPTR_MAX, true, false);
	}
}

/*
 * With ctx->lock held: wait until uffdd has logged the events of the read it
 * is in, and apply the log.  False when that took too long: the cache may not
 * know of a change that is done, so the caller pins anew.
 */
static bool evlog_settle(struct pin_ctx *ctx)
{
	bool settled = !ctx->evlog || pin_evlog_settle(ctx->evlog);

	evlog_read(ctx);
	return settled;
}

void pin_ctx_set_evlog(struct pin_ctx *ctx, const struct pin_evlog *log, void *arg)
{
	pthread_mutex_lock(&ctx->lock);
	if (log || ctx->evlog_arg == arg) {
		/* What the old log holds came before anything the new one will. */
		evlog_read(ctx);
		ctx->evlog = log;
		ctx->evlog_arg = log ? arg : NULL;
		ctx->evlog_tail = 0;
	}
	pthread_mutex_unlock(&ctx->lock);
}

/* The monitor, with ctx->lock held: events were lost. */
static void monitor_lost(void *arg, bool on_monitor)
{
	pin_log(PIN_LOG_WARN, "pin monitor: event queue overflowed, dropping every pin");
	invalidate_locked(arg, 0, UINTPTR_MAX, true, on_monitor);
}

/* The monitor calls back into this context only through these. */
int pin_ctx_watch_start(struct pin_ctx *ctx)
{
	const struct pin_monitor_owner owner = {
		.lock = &ctx->lock,
		.arg = ctx,
		.remedy = "pin_ctx_invalidate()",
		.apply = monitor_apply,
		.lost = monitor_lost,
		.unwatch_step = unwatch_step,
	};

	return pin_monitor_new(&owner, &ctx->mon);
}

/* Every lookup starts here: events the monitor read must be applied first. */
static void lock_synced(struct pin_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	if (ctx->mon)
		pin_monitor_sync(ctx->mon, false);
	evlog_read(ctx);
	reap_dead(ctx);
}

static bool evict_oldest(struct pin_ctx *ctx)
{
	struct pin_range *r = ctx->lru_head;

	if (!r)
		return false;
	lru_unlink(ctx, r);
	pin_imap_remove(&ctx->map, r->start, r);
	ctx->evictions++;
	retire(ctx, r, false);
	return true;
}

static void trim_idle(struct pin_ctx *ctx)
{
	while (ctx->idle_count > ctx->max_idle || ctx->idle_bytes > ctx->max_idle_bytes)
		evict_oldest(ctx);
}

/* uncached: the caller's only, never shared (the cache may not know of a
 * change before it). */
static int create(struct pin_ctx *ctx, uintptr_t start, uintptr_t end, bool uncached,
		  struct pin_range **ret)
{
	unsigned int nbufs = ctx->be->nbufs(end - start);
	struct pin_range *r = calloc(1, sizeof(*r) + nbufs * sizeof(r->bufs[0]));
	uint64_t started = pin_now_ns();
	int err;

	if (!r)
		return -ENOMEM;
	r->ctx = ctx;
	r->start = start;
	r->end = end;
	r->nbufs = nbufs;
	r->refs = 1;
	err = pin_imap_reserve(&ctx->map, 1);
	if (err == 0)
		err = pin_imap_reserve(&ctx->held, 1);
	if (err == 0 && ctx->mon)
		err = unwatch_cancel(ctx, start, end);
	if (err < 0) {
		free(r);
		return err;
	}
	/* Watch before pinning: a change while the pages are pinned is then
	 * reported, and the sync below applies it to this entry. */
	if (ctx->mon)
		r->watched = pin_monitor_watch(ctx->mon, start, end) == 0;
	/* Out of slots or of locked memory: idle pins make room. */
	do
		err = ctx->be->pin(ctx, r);
	while ((err == -ENOSPC || err == -ENOMEM) && evict_oldest(ctx));
	if (err < 0) {
		if (r->watched)
			unwatch_uncovered(ctx, start, end, false);
		free(r);
		return err;
	}
	r->pinned = true;
	ctx->pinned_bytes += end - start;
	ctx->pinned_ranges++;
	if (ctx->mon && !r->watched)
		ctx->unwatched++;
	pin_imap_insert(&ctx->map, start, end, r);
	if (ctx->mon)
		pin_monitor_sync(ctx->mon, false);
	evlog_read(ctx);
	if (!atomic_load(&r->stale) && (uncached || after_remove(ctx, r, started))) {
		/* Reserved above: cannot fail. */
		pin_imap_remove(&ctx->map, start, r);
		pin_imap_insert(&ctx->held, start, end, r);
		r->uncached = true;
	}
	*ret = r;
	return 0;
}

/* With ctx->lock held: a cached pin covering [start, end), with a new
 * reference; NULL when none does. */
static struct pin_range *take_cached(struct pin_ctx *ctx, uintptr_t start, uintptr_t end)
{
	struct pin_range *r = pin_imap_find_covering(&ctx->map, start, end);

	if (r) {
		if (r->refs++ == 0)
			lru_unlink(ctx, r);
		ctx->hits++;
	}
	return r;
}

void pin_ctx_set_populate(struct pin_ctx *ctx, pin_ctx_populate_fn fn, void *arg)
{
	pthread_mutex_lock(&ctx->lock);
	/* A client going away leaves the hook of one that came after it. */
	if (fn || ctx->populate_arg == arg) {
		ctx->populate = fn;
		ctx->populate_arg = fn ? arg : NULL;
	}
	pthread_mutex_unlock(&ctx->lock);
}

PIN_EXPORT int pin_range_get(struct pin_ctx *ctx, const void *addr, size_t len,
			     struct pin_range **ret)
{
	uintptr_t a = (uintptr_t)addr, start, end;
	struct pin_range *r;
	int err = 0;

	if (!ctx || !ret || !len)
		return -EINVAL;
	if (ctx->forked)
		return -ECHILD;
	if (a + len < a || a + len > UINTPTR_MAX - ctx->page)
		return -EOVERFLOW;
	start = a & ~(ctx->page - 1);
	end = (a + len + ctx->page - 1) & ~(ctx->page - 1);

	lock_synced(ctx);
	bool settled = evlog_settle(ctx);
	r = settled ? take_cached(ctx, start, end) : NULL;
	if (!r && ctx->populate) {
		pin_ctx_populate_fn fn = ctx->populate;
		void *arg = ctx->populate_arg;
		/* Unlocked: stale notices that come in with the client's
		 * reply invalidate, which takes the lock. */
		pthread_mutex_unlock(&ctx->lock);
		fn(arg, start, end);
		lock_synced(ctx);
		settled = evlog_settle(ctx);
		r = settled ? take_cached(ctx, start, end) : NULL;
	}
	if (r) {
		pthread_mutex_unlock(&ctx->lock);
		*ret = r;
		return 0;
	}
	ctx->misses++;
	for (int i = 0; i < STALE_RETRIES; i++) {
		err = create(ctx, start, end, !settled, &r);
		if (err < 0 || !atomic_load(&r->stale))
			break;
		/* The range changed while we pinned it: pin what is there now. */
		r->refs = 0;
		retire(ctx, r, false);
		err = -EAGAIN;
	}
	pthread_mutex_unlock(&ctx->lock);
	if (err == 0)
		*ret = r;
	return err;
}

PIN_EXPORT void pin_range_put(struct pin_range *r)
{
	if (!r || r->ctx->forked)
		return;
	struct pin_ctx *ctx = r->ctx;

	lock_synced(ctx);
	if (--r->refs == 0) {
		if (atomic_load(&r->stale) || r->uncached) {
			/* A stale entry left both maps when it went stale. */
			if (!atomic_load(&r->stale))
				pin_imap_remove(&ctx->held, r->start, r);
			retire(ctx, r, false);
		} else {
			lru_append(ctx, r);
			trim_idle(ctx);
		}
	}
	pthread_mutex_unlock(&ctx->lock);
}

PIN_EXPORT int pin_ctx_invalidate(struct pin_ctx *ctx, const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;

	if (!ctx || a + len < a)
		return -EINVAL;
	if (ctx->forked)
		return -ECHILD;
	lock_synced(ctx);
	unsigned int n = invalidate_locked(ctx, a & ~(ctx->page - 1), a + len, false, false);
	pthread_mutex_unlock(&ctx->lock);
	return (int)n;
}

/* A fork child's copy of ctx (pin-fork.c): its memory and descriptors go,
 * the parent's pins and registrations stay. */
static void forget(struct pin_ctx *ctx)
{
	struct pin_range *r;

	while ((r = pin_imap_take_overlap(&ctx->map, 0, UINTPTR_MAX)) ||
	       (r = pin_imap_take_overlap(&ctx->held, 0, UINTPTR_MAX)))
		free(r);
	while ((r = ctx->dead)) {
		ctx->dead = r->next;
		free(r);
	}
	pin_monitor_forget(ctx->mon);
	if (ctx->be)
		(ctx->be->forget ? ctx->be->forget : ctx->be->close)(ctx);
}

PIN_EXPORT void pin_ctx_free(struct pin_ctx *ctx)
{
	if (!ctx)
		return;
	pin_fork_untrack(ctx);
	if (ctx->forked) {
		forget(ctx);
		ctx->mon = NULL;
		ctx->be = NULL;
	}
	if (ctx->be) {
		pthread_mutex_lock(&ctx->lock);
		ctx->closing = true;
		if (ctx->mon)
			pin_monitor_sync(ctx->mon, false);
		reap_dead(ctx);
		while (evict_oldest(ctx))
			;
		/* Handles the caller still holds lose their pins here. */
		struct pin_range *r;
		while ((r = pin_imap_take_overlap(&ctx->map, 0, UINTPTR_MAX)) ||
		       (r = pin_imap_take_overlap(&ctx->held, 0, UINTPTR_MAX))) {
			atomic_store(&r->stale, true);
			retire(ctx, r, false);
		}
		pthread_mutex_unlock(&ctx->lock);
	}
	/* Stops the thread and closes the userfaultfd, which unregisters the rest. */
	pin_monitor_free(ctx->mon);
	if (ctx->be)
		ctx->be->close(ctx);
	pin_imap_fini(&ctx->map);
	pin_imap_fini(&ctx->held);
	pin_imap_fini(&ctx->unreg);
	pthread_cond_destroy(&ctx->unreg_done);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}

PIN_EXPORT int pin_ctx_stats(struct pin_ctx *ctx, struct pin_ctx_stats *ret)
{
	struct pin_ctx_stats s = { .sz = sizeof(s) };

	/* Callers built against an older struct get its prefix. */
	if (!ctx || !ret || ret->sz < sizeof(ret->sz))
		return -EINVAL;
	if (ctx->forked)
		return -ECHILD;
	lock_synced(ctx);
	s.hits = ctx->hits;
	s.misses = ctx->misses;
	s.invalidations = ctx->invalidations;
	s.evictions = ctx->evictions;
	s.events = ctx->mon ? pin_monitor_events(ctx->mon) : 0;
	s.pinned_bytes = ctx->pinned_bytes;
	s.pinned_ranges = ctx->pinned_ranges;
	s.idle_ranges = ctx->idle_count;
	s.idle_bytes = ctx->idle_bytes;
	s.unwatched = ctx->unwatched;
	pthread_mutex_unlock(&ctx->lock);
	size_t sz = ret->sz < sizeof(s) ? ret->sz : sizeof(s);
	memcpy(ret, &s, sz);
	ret->sz = sz;
	return 0;
}
