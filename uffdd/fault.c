// SPDX-License-Identifier: MIT
/*
 * The fault path: read a session's userfaultfd events in batches, hand each
 * FORK's child userfaultfd to the fd store first, apply the non-cooperative
 * events (FORK, REMAP, REMOVE, UNMAP) in order, then serve the page faults
 * sorted by address, one run per ioctl with DONTWAKE and one WAKE per run
 * (placed by place.c; EAGAIN keeps the faults, EEXIST wakes), each run as
 * long as the readahead window.  Faults whose data is being read (reader.c,
 * a page server's GET) wait in the queue until it is there.  Each fault is
 * counted once, when it is finished (fault_done()), its latency from the
 * read that returned it.  A fault whose page cannot be given, where the
 * kernel refused to poison it (a stranded session: finish.c), is finished
 * unwoken: its thread waits.  It may call place.c, finish.c, session.c, state.c, store.c,
 * reader.c, source.c, source-remote.c, notify.c (stale notices, fork
 * children), evlog.c (each read of the userfaultfd, each event), share.c
 * (the time fork children and unreadable sources cost), log.c and util.c.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "uffdd.h"

/*
 * The fault f is finished (served, woken, dropped or poisoned): each of its
 * messages counts once, its latency from the read that returned it to now,
 * so that the time it waited behind a read, an event or other sessions'
 * work is in the histogram.
 */
static void fault_done(struct session *s, const struct fault *f, uint64_t now)
{
	uint64_t us = (now - f->t0) / 1000;
	unsigned int b = us ? 63 - (unsigned int)__builtin_clzll(us) : 0;

	STAT_ADD(s->stats.lat[b < UFFDD_LAT_BUCKETS ? b : UFFDD_LAT_BUCKETS - 1], f->n);
	STAT_ADD(s->stats.faults, f->n);
}

static int wake(struct session *s, uint64_t addr, uint64_t len)
{
	int r = pin_uffd_wake(s->uffd, (void *)(uintptr_t)addr, len);

	if (r < 0)
		ulog(LOG_ERR, "session %" PRIu64 ": UFFDIO_WAKE [%#" PRIx64 ", +%#" PRIx64 "): %s",
		     s->id, addr, len, strerror(-r));
	return r;
}

/* Messages one read(2) takes: a FORK's descriptor waits for no other read
 * before it is stored (store_forks()). */
#define READ_BATCH 64
/* Reads per call at most, so that one busy session cannot starve the others
 * (epoll reports the rest). */
#define READ_ROUNDS 16
_Static_assert(READ_BATCH <= UFFDD_MAX_EVENTS, "a read must fit the worker's events");
_Static_assert(READ_BATCH <= STATE_EVENTS_MAX, "a read must fit the record's events");

/* A sequential stream is served this many windows ahead of its faults. */
#define AHEAD 4
/* Prefetch requests a session may have queued by readahead. */
#define MAX_QUEUED 16

/* The readahead run for a missing fault on page i of r. */
static uint64_t ra_window(struct region *r, uint64_t i)
{
	/* A fault in or right after what the last run placed or queued is
	 * sequential and doubles the window; any other resets it. */
	if (r->ra_next != UINT64_MAX && i >= r->ra_lo && i <= r->ra_next) {
		r->ra_pages = r->ra_pages * 2 < UFFDD_RA_MAX ? r->ra_pages * 2 : UFFDD_RA_MAX;
	} else {
		/* A new stream: what the old one queued must not make the next
		 * random fault look sequential. */
		r->ra_pages = 1;
		r->ra_next = UINT64_MAX;
	}
	r->ra_lo = i;
	uint64_t n = r->ra_pages < r->npages - i ? r->ra_pages : r->npages - i;
	for (uint64_t k = 1; k < n; k++)
		if (bm_test(r->populated, i + k))
			return k;
	return n;
}

/* After a run for a fault that ended at page end: read further ahead. */
static void ra_ahead(struct session *s, struct region *r, uint64_t end)
{
	if (r->ra_next == UINT64_MAX || end > r->ra_next)
		r->ra_next = end;
	/* The thread waited for one window; while it reads that, place the
	 * next ones in the background so that it need not wait again. */
	if (r->ra_pages < 2 || s->nprefetch >= MAX_QUEUED)
		return;
	uint64_t want = end + (uint64_t)AHEAD * r->ra_pages;
	if (want > r->npages)
		want = r->npages;
	if (want <= r->ra_next)
		return;
	uint64_t from = r->ra_next;
	if (session_prefetch_add(s, r->start + (from << uffdd_page_shift),
				 (want - from) << uffdd_page_shift) == 0)
		r->ra_next = want;
}

/* The faults at [i, *ret_j) are WP faults on consecutive pages of r:
 * record them dirty and un-protect (which wakes). */
static int serve_wp(struct session *s, struct region *r, size_t i, size_t *ret_j)
{
	uint64_t first = (s->faults[i].addr - r->start) >> uffdd_page_shift, last = first;
	size_t j = i + 1;

	for (; j < s->nfaults; j++) {
		const struct fault *f = &s->faults[j];
		uint64_t p = (f->addr - r->start) >> uffdd_page_shift;
		if (!(f->flags & PIN_UFFD_PF_WP) || f->addr >= r->start + r->len || p > last + 1)
			break;
		last = p;
	}
	*ret_j = j;
	/* Recorded before the write goes through: a daemon killed in between
	 * reports a page dirty that was not written, never the reverse. */
	if (r->dirty) {
		uint64_t had = bm_count(r->dirty, first, last - first + 1);
		bm_assign(r->dirty, first, last - first + 1, true);
		STAT_ADD(r->n_dirty, last - first + 1 - had);
	}
	int ret = pin_uffd_writeprotect(s->uffd, region_page_addr(r, first),
					(last - first + 1) << uffdd_page_shift, 0);
	if (ret < 0)
		return ret;
	STAT_ADD(s->stats.wp_faults, j - i);
	return 0;
}

/* A missing fault at s->faults[i]: place its readahead run, wake it, and
 * say which faults the run covered. */
static int serve_missing(struct session *s, struct region *r, size_t i, size_t *ret_j)
{
	uint64_t u = region_unit(r);
	uint64_t p = ((s->faults[i].addr - r->start) >> uffdd_page_shift) & ~(u - 1);
	bool woken;

	/*
	 * A page the daemon placed that faults as missing again was zapped:
	 * only MADV_DONTNEED, MADV_REMOVE or a hole punched does that to a
	 * registered range (MADV_FREE may, and allows zeros), each with a
	 * REMOVE event.  Its REMOVE may be lost (read by a daemon killed before
	 * it recorded it): the page is zero all the same.  A page placed after
	 * this fault was queued is still there: the ZEROPAGE meets EEXIST.
	 */
	if (bm_test(r->populated, p)) {
		uint64_t had = bm_count(r->populated, p, u);
		/* A snapshot's page refaults as the image has it. */
		if (!snapshot_region(r))
			bm_assign(r->zero, p, u, true);
		bm_assign(r->populated, p, u, false);
		STAT_ADD(r->n_populated, -had);
	}
	/* Whole huge pages: the region is aligned to them. */
	uint64_t n = (ra_window(r, p) + u - 1) & ~(u - 1);
	int64_t got = fault_fill(s, r, p, n, false, &woken);

	if (got < 0) {
		*ret_j = i + 1;
		return (int)got;
	}
	uint64_t end = r->start + ((p + (uint64_t)got) << uffdd_page_shift);
	ra_ahead(s, r, p + (uint64_t)got);
	session_record(s, r->start + (p << uffdd_page_shift), end);
	size_t j = i + 1;
	while (j < s->nfaults && s->faults[j].addr < end)
		j++;
	*ret_j = j;
	return woken ? 0 : wake(s, s->faults[i].addr, end - s->faults[i].addr);
}

static int cmp_fault(const void *a, const void *b)
{
	const struct fault *x = a, *y = b;

	return (x->addr > y->addr) - (x->addr < y->addr);
}

/*
 * A fault of a fork child whose regions were never recorded (its daemon
 * died while making it): what the page should hold cannot be known, so the
 * access gets SIGBUS, whatever its features (a kernel that refuses
 * UFFDIO_POISON leaves the thread waiting until the process is killed: a
 * zero page would be made up).
 */
static void poison_lost(struct session *s, uint64_t addr)
{
	session_lost(s, 1);
	int r = pin_uffd_poison(s->uffd, (void *)(uintptr_t)addr, uffdd_page, 0, NULL);

	if (poison_refused(r))
		session_strand(s, "a fork child's regions were never recorded: page", addr,
			       uffdd_page, ENODATA, -r);
	else if (r < 0 && r != -EEXIST)
		slog(s, LOG_ERR, "UFFDIO_POISON [%#" PRIx64 ", +%#zx): %s", addr, uffdd_page,
		     strerror(-r));
	else
		slog(s, LOG_ERR,
		     "page %#" PRIx64 " of a fork child whose regions were never recorded: "
		     "poisoned (SIGBUS)",
		     addr);
}

/* Keep the fault f in the queue, at *keep (not after f). */
static void keep_fault(struct session *s, size_t *keep, const struct fault *f)
{
	struct fault *last = *keep ? &s->faults[*keep - 1] : NULL;

	/* Once per page: a thread woken by a WAKE over a wider range faults
	 * again while its first fault waits.  Its messages still count, each
	 * from the first read. */
	if (last && last->addr == f->addr && last->flags == f->flags) {
		last->n += f->n;
		if (f->t0 < last->t0)
			last->t0 = f->t0;
		return;
	}
	s->faults[(*keep)++] = *f;
}

/* Serve the session's pending faults; keep those that must wait.  Returns
 * whether some met a source it cannot read (poisoned: their threads get
 * SIGBUS, and fault again no sooner than their process recovers). */
static bool serve(struct session *s)
{
	size_t keep = 0;

	/* The events were just read: whatever hit EAGAIN (a fault, or a push,
	 * prefetch or replay with no fault queued) may go on. */
	s->eagain = false;
	if (!s->nfaults)
		return false;
	qsort(s->faults, s->nfaults, sizeof(*s->faults), cmp_fault);
	for (size_t i = 0; i < s->nfaults;) {
		struct fault *f = &s->faults[i];
		struct region *r = session_find(s, f->addr);
		size_t j = i + 1;
		int ret = 0;

		if (!r && s->broken && !s->eagain && !s->dead) {
			poison_lost(s, f->addr);
			fault_done(s, f, uffdd_now_ns());
			i++;
			continue;
		}
		if (!r || s->eagain || s->dead) {
			/* Outside every region: its region is still to come (a
			 * handover, a restart).  Or we stopped: keep it. */
			if (!r && !s->warned_outside) {
				ulog(s->takeover ? LOG_INFO : LOG_WARNING,
				     "session %" PRIu64 ": fault at %#" PRIx64
				     " outside every region; "
				     "it waits until a region covers it",
				     s->id, f->addr);
				s->warned_outside = true;
			}
			keep_fault(s, &keep, f);
			i++;
			continue;
		}
		if (f->flags & PIN_UFFD_PF_WP)
			ret = serve_wp(s, r, i, &j);
		else
			ret = serve_missing(s, r, i, &j);
		if (ret == -EINPROGRESS) {
			/* Its data is being read (reader.c): it waits for the
			 * read, its session's other faults do not. */
			keep_fault(s, &keep, f);
			i++;
			continue;
		}
		if (ret == -EAGAIN) {
			/* A non-cooperative event is pending: it must be read
			 * before anything resolves.  Keep these faults. */
			s->eagain = true;
			continue;
		}
		if (ret == -ESRCH || ret == -ENOSPC) {
			session_end(s, -ESRCH, "its process is gone");
			return false;
		}
		/* The mapping changed or the page cannot be placed: let the
		 * thread fault again and meet the new state.  But a page
		 * stranded (its source failed, UFFDIO_POISON refused): nothing
		 * is there for it, it waits. */
		if (ret < 0 && !(ret == -EIO && s->stranded))
			wake(s, f->addr, (uint64_t)uffdd_page);
		uint64_t now = uffdd_now_ns();
		for (size_t k = i; k < j; k++)
			fault_done(s, &s->faults[k], now);
		i = j;
	}
	s->nfaults = keep;
	/* Faults that met a source it cannot read: its own doing, charged
	 * (share.c), unlike a fault served. */
	if (!s->unpaid_ns)
		return false;
	share_charge(s->share, s->unpaid_ns, uffdd_now_ns());
	s->unpaid_ns = 0;
	return true;
}

static int add_fault(struct session *s, uint64_t addr, uint32_t flags, uint64_t t0)
{
	/* More than a process has threads: the fault faults again later. */
	if (s->nfaults >= UFFDD_FAULTS_MAX)
		return -ENOSPC;
	if (s->nfaults == s->faults_cap) {
		size_t cap = s->faults_cap ? 2 * s->faults_cap : UFFDD_MAX_EVENTS;
		struct fault *f = realloc(s->faults, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		s->faults = f;
		s->faults_cap = cap;
	}
	s->faults[s->nfaults++] =
		(struct fault){ addr & ~(uint64_t)(uffdd_page - 1), flags, 1, t0 };
	return 0;
}

void fault_drop(struct session *s, uint64_t start, uint64_t end)
{
	size_t keep = 0;

	for (size_t i = 0; i < s->nfaults; i++) {
		if (s->faults[i].addr >= start && s->faults[i].addr < end) {
			/* Finished here: the thread faults again and meets the
			 * new map (a new fault, counted from its own read). */
			wake(s, s->faults[i].addr, (uint64_t)uffdd_page);
			fault_done(s, &s->faults[i], uffdd_now_ns());
		} else
			s->faults[keep++] = s->faults[i];
	}
	s->nfaults = keep;
}

/*
 * A FORK's child userfaultfd exists only in this process from the read on:
 * a death before the store holds a copy closes it, the kernel drops the
 * child's registrations, and its missing pages read as zeros (uffdd(8)).
 * So before anything else of the batch: the children's ids (consecutive,
 * the first returned; 0: no FORK) and the parent's record naming them as
 * being made (fork_ids()), then, once the batch's events are recorded, each
 * descriptor, non-blocking (a blocking one polls as EPOLLERR, which makes
 * the store drop it), to the store (store_forks()).  A descriptor that
 * cannot be made so is closed, and its event's fd set to -1.
 */
static uint64_t fork_ids(struct session *s, const struct pin_uffd_event *ev, int n)
{
	size_t k = 0;

	for (int i = 0; i < n; i++)
		k += ev[i].type == PIN_UFFD_EVENT_FORK;
	if (!k)
		return 0;
	uint64_t id = ids_take(k);
	state_making_set(s->st, id, id + k);
	return id;
}

static void store_forks(struct session *s, struct pin_uffd_event *ev, int n, uint64_t t0,
			uint64_t id)
{
	for (int i = 0; i < n; i++) {
		if (ev[i].type != PIN_UFFD_EVENT_FORK)
			continue;
		int fd = ev[i].arg.fork.fd;
		int flags = fcntl(fd, F_GETFL);
		if (flags >= 0 && !(flags & O_NONBLOCK))
			flags = fcntl(fd, F_SETFL, flags | O_NONBLOCK);
		if (flags >= 0) {
			store_put(fd, "s%" PRIu64 ".fork%" PRIu64, id, s->id);
			slog(s, LOG_DEBUG,
			     "fork child %" PRIu64 " stored %" PRIu64 " ns after the read", id,
			     uffdd_now_ns() - t0);
			flags = fcntl(fd, F_SETFD, FD_CLOEXEC);
		}
		if (flags < 0) {
			slog(s, LOG_ERR, "fcntl of fork child %" PRIu64 "'s userfaultfd: %m", id);
			store_remove("s%" PRIu64 ".fork%" PRIu64, id, s->id);
			close(fd);
			ev[i].arg.fork.fd = -1;
		}
		id++;
	}
}

static void on_fork(struct session *s, int fd, uint64_t id)
{
	struct session *c;

	if (fd < 0)
		return;
	int r = session_fork(s, fd, id, &c);
	if (r < 0) {
		slog(s, LOG_ERR, "new session for fork child %" PRIu64 ": %s", id, strerror(-r));
		store_remove("s%" PRIu64 ".fork%" PRIu64, id, s->id);
		return;
	}
	c->push_pending = s->push_pending;
	c->wuffd.handle = fault_ready;
	notify_child(s, c, fd);
	ulog(LOG_INFO, "session %" PRIu64 ": fork child is session %" PRIu64, s->id, c->id);
}

/* MADV_DONTNEED and friends: the pages are gone and read as zero now. */
static void on_remove(struct session *s, uint64_t start, uint64_t end)
{
	size_t i = session_first_after(s, start);
	uint64_t fa, n;

	for (struct region *r; (r = session_overlap(s, &i, start, end, &fa, &n));) {
		/* Changed (they read zero now), as the kernel says of them
		 * too until they refault: a page a MISSING region gets again
		 * comes write-protected and would read as unwritten. */
		if (dirty_async(s, r))
			dirty_mark(r, fa, n);
		/* A snapshot's pages refault as the image has them
		 * (snapshot.c): nothing to remember but that they left. */
		if (!snapshot_region(r))
			bm_assign(r->zero, fa, n, true);
		uint64_t had = bm_count(r->populated, fa, n);
		bm_assign(r->populated, fa, n, false);
		STAT_ADD(r->n_populated, -had);
	}
}

static void on_cut(struct session *s, uint64_t start, uint64_t end, int64_t move)
{
	size_t before = s->nregions;

	fault_drop(s, start, end);
	session_cut(s, start, end, move, false);
	session_charge(s, (int64_t)s->nregions - (int64_t)before, 0, NULL, 0);
	session_commit(s, 0, NULL, 0);
}

void fault_apply_event(struct session *s, const struct pin_uffd_event *ev)
{
	uint64_t start, end;

	switch (ev->type) {
	case PIN_UFFD_EVENT_REMAP:
		start = ev->arg.remap.from;
		end = start + ev->arg.remap.len;
		on_cut(s, start, end, (int64_t)(ev->arg.remap.to - start));
		break;
	case PIN_UFFD_EVENT_REMOVE:
		start = ev->arg.remove.start;
		end = ev->arg.remove.end;
		on_remove(s, start, end);
		break;
	case PIN_UFFD_EVENT_UNMAP:
		start = ev->arg.unmap.start;
		end = ev->arg.unmap.end;
		on_cut(s, start, end, 0);
		break;
	default:
		return;
	}
	evlog_put(s, ev);
	notify_stale(s, start, end, ev->type);
}

/* A page fault: queued (a fork child's session learns its pid from its first
 * one: right after fork() its only thread is the main one). */
static void on_fault(struct session *s, const struct pin_uffd_event *ev, uint64_t t0)
{
	if (!s->pid && ev->arg.pagefault.tid) {
		pthread_mutex_lock(&s->lock);
		s->pid = (pid_t)ev->arg.pagefault.tid;
		pthread_mutex_unlock(&s->lock);
		session_set_meta(s);
		session_commit(s, 0, NULL, 0);
	}
	int r = add_fault(s, ev->arg.pagefault.address, ev->arg.pagefault.flags, t0);
	if (r < 0) {
		ulog(LOG_ERR,
		     "session %" PRIu64 ": cannot queue the fault at %#" PRIx64
		     " (%s); waking it to fault again",
		     s->id, ev->arg.pagefault.address,
		     r == -ENOSPC ? "too many faults waiting" : strerror(-r));
		wake(s, ev->arg.pagefault.address & ~(uint64_t)(uffdd_page - 1),
		     (uint64_t)uffdd_page);
	}
}

/*
 * The batch in order, each event but a page fault marked applied in the
 * record once it is (the read put the batch there: state_events_buf()).  A
 * child outlives its parent's process: made all the same.
 */
static void apply(struct session *s, const struct pin_uffd_event *ev, int n, uint64_t t0,
		  uint64_t child)
{
	for (int i = 0; i < n; i++) {
		const struct pin_uffd_event *e = &ev[i];

		if (e->type == PIN_UFFD_EVENT_PAGEFAULT) {
			if (!s->dead)
				on_fault(s, e, t0);
			continue;
		}
		if (e->type == PIN_UFFD_EVENT_FORK)
			on_fork(s, e->arg.fork.fd, child++);
		else if (!s->dead)
			fault_apply_event(s, e);
		else /* Its client's pins went stale all the same. */
			evlog_put(s, e);
		state_events_applied(s->st, (uint32_t)i + 1);
		slog(s, LOG_DEBUG, "event %u applied %" PRIu64 " ns after it was read", e->type,
		     uffdd_now_ns() - t0);
	}
}

/* A death here, after a read that took an event but a page fault, is what
 * the record's copy of the read is for (held with UFFDD_HOLD=events-read). */
static void hold_events(const struct pin_uffd_event *ev, int n)
{
	for (int i = 0; i < n; i++) {
		if (ev[i].type != PIN_UFFD_EVENT_PAGEFAULT) {
			uffdd_hold("events-read");
			return;
		}
	}
}

int fault_handle(struct session *s)
{
	struct worker *w = s->w;
	int got = 0;

	for (int round = 0; round < READ_ROUNDS && !s->dead; round++) {
		evlog_begin(s);
		int n = pin_uffd_read_raw(s->uffd, state_events_buf(s->st), w->events, READ_BATCH);
		if (n == -EAGAIN) {
			evlog_end(s);
			break;
		}
		if (n < 0) {
			evlog_end(s);
			slog(s, LOG_ERR, "read userfaultfd: %s", strerror(-n));
			session_kill(s, "its userfaultfd failed");
			return n;
		}
		got += n;
		uint64_t t0 = uffdd_now_ns(), first = fork_ids(s, w->events, n);
		uint64_t c0 = first ? share_clock() : 0;
		hold_events(w->events, n);
		store_forks(s, w->events, n, t0, first);
		if (first)
			uffdd_hold("fork-stored");
		apply(s, w->events, n, t0, first);
		evlog_end(s);
		if (first) {
			s->forked = true;
			state_making_set(s->st, 0, 0);
			/* Sessions made for the uid: charged as a request is
			 * (share.c), a fault is not. */
			share_charge(s->share, share_clock() - c0, uffdd_now_ns());
		}
		if (n < READ_BATCH)
			break;
	}
	/* A session whose faults were served is polled a while (worker.c):
	 * its threads are likely to fault again soon; not one whose faults
	 * were poisoned. */
	if (serve(s)) {
		if (w->hot == s)
			w->hot = NULL;
	} else if (got) {
		w->last_busy = uffdd_now_ns();
		w->hot = s;
	}
	return got;
}

void fault_serve(struct session *s)
{
	(void)serve(s);
}

void fault_ready(struct session *s)
{
	fault_handle(s);
}
