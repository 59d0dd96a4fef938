// SPDX-License-Identifier: MIT
/*
 * Pages placed before they fault: Prefetch requests (queued by requests and
 * by the readahead), the background push of untouched pages between faults,
 * working-set replay, and WaitPopulated.  Work is done in runs of at most
 * UFFDD_PUSH_MAX pages for each thread that may place them (place_width():
 * the worker and the placers, each taking pieces), placed through place.c,
 * so a fault never waits behind more than one thread's run; a session's work
 * waits while its reader reads, and while its uid owes others time
 * (share.c); each round one session's work goes, in turn.  A session whose
 * client said Goodbye ends here once its pages are all in, and a Firecracker
 * VM's whose handshake did not come in time (its fc_deadline); a stranded
 * one (finish.c) has its bulk work dropped and its process probed.  It may call
 * fault.c, place.c, finish.c, session.c, reader.c, source-remote.c,
 * notify.c (the reply to a WaitPopulated), share.c, log.c and util.c.
 */
#include <string.h>

#include "uffdd.h"

/* Fork children have no socket to hang up: check on them first after
 * PROBE_FIRST_NS, then twice as long each time, up to PROBE_NS.  Most
 * children that fork() makes exit (or exec) soon: their sessions go within
 * milliseconds, and the few that live long cost a probe a second. */
#define PROBE_FIRST_NS 1000000ull
#define PROBE_NS       1000000000ull

/* Place the run of missing pages of r at or after page *next (below end)
 * with DONTWAKE, counted as pushed with push: returns the pages handled, 0
 * when none was left or *scan ran out first (*next < end), -errno.  Pages
 * in place are skipped a bitmap word at a time, each page taken from *scan. */
static int64_t place_run(struct session *s, struct region *r, uint64_t *next, uint64_t end,
			 bool push, uint64_t *scan)
{
	uint64_t i = bm_first_unset(r->populated, r->zero, *next, end, scan);

	*next = i;
	if (i >= end || !*scan)
		return 0;
	/* As long as one thread's run takes, on every thread that may place
	 * r's pages. */
	uint64_t n = 1, most = (uint64_t)UFFDD_PUSH_MAX * place_width(r);
	while (n < most && i + n < end && !done_page(r, i + n))
		n++;
	/* A push run the crew shares goes on over pages in place (a random
	 * reader's faults ahead of the push leave some every few pages):
	 * fault_fill() skips them, and the threads share one wide run instead
	 * of one of them placing many short ones (a 256 MiB random restore:
	 * some 340 runs of 17 pages each, placed by the worker alone). */
	if (push && place_width(r) > 1)
		while (n < most && i + n < end && !bm_test(r->zero, i + n))
			n++;
	int64_t got = fault_fill(s, r, i, n, push, NULL);
	if (got > 0) {
		*next = i + (uint64_t)got;
		/* Readahead and Prefetch requests place what the process asks
		 * for: part of its working set, unlike the push. */
		if (!push)
			session_record(s, r->start + (i << uffdd_page_shift),
				       r->start + (*next << uffdd_page_shift));
	}
	return got;
}

/* One run as place_run() does, woken: returns 1 when it did some work, 0
 * when none was left, -errno. */
static int fill_from(struct session *s, struct region *r, uint64_t *next, uint64_t end, bool push)
{
	uint64_t scan = UINT64_MAX;
	int64_t got = place_run(s, r, next, end, push, &scan);

	if (got <= 0)
		return (int)got;
	/* Threads may be waiting on these pages with their fault unread yet. */
	pin_uffd_wake(s->uffd,
		      (void *)(uintptr_t)(r->start + ((*next - (uint64_t)got) << uffdd_page_shift)),
		      (uint64_t)got << uffdd_page_shift);
	return 1;
}

/* Pages placed so far (not those found in place). */
static uint64_t placed_count(const struct session *s)
{
	return STAT_GET(s->stats.pages_copied) + STAT_GET(s->stats.pages_zeroed);
}

static void replay_end(struct session *s, int error)
{
	struct replay *q = &s->replays[0];

	notify_replayed(s, q->seq, q->placed || !error ? 0 : error, q->placed);
	free(q->v);
	memmove(&s->replays[0], &s->replays[1], (s->nreplays - 1) * sizeof(*q));
	s->nreplays--;
}

/*
 * One slice of the oldest Replay: runs of missing pages with DONTWAKE, then
 * one WAKE for what the slice covered.  A slice ends after UFFDD_REPLAY_SLICE
 * pages handled, or UFFDD_REPLAY_RUNS runs (each an ioctl at least: a page
 * the process has already costs one, found EEXIST), or UFFDD_REPLAY_SCAN
 * pages of bitmaps looked at, whichever comes first: then the worker's other
 * sessions have their turn.  A pending event stops it until the event is
 * read.
 */
static void replay_step(struct session *s)
{
	struct replay *q = &s->replays[0];
	uint64_t budget = UFFDD_REPLAY_SLICE, scan = UFFDD_REPLAY_SCAN, lo = UINT64_MAX, hi = 0,
		 before = placed_count(s);
	unsigned int runs = UFFDD_REPLAY_RUNS;
	int ret = 0;

	while (q->k < q->n && budget && runs && scan && !ret) {
		struct prefetch *p = &q->v[q->k];
		size_t i = session_first_after(s, p->addr);
		if (p->addr >= p->end || i == s->nregions || s->regions[i]->start >= p->end) {
			q->k++;
			continue;
		}
		struct region *r = s->regions[i];
		if (p->addr < r->start)
			p->addr = r->start;
		uint64_t next = (p->addr - r->start) >> uffdd_page_shift;
		uint64_t end = (p->end < r->start + r->len ? p->end : r->start + r->len) - r->start;
		end >>= uffdd_page_shift;
		int64_t got = place_run(s, r, &next, end, true, &scan);
		uint64_t at = r->start + (next << uffdd_page_shift);
		if (got > 0) {
			lo = p->addr < lo ? p->addr : lo;
			hi = at > hi ? at : hi;
			budget -= (uint64_t)got < budget ? (uint64_t)got : budget;
			runs--;
		}
		p->addr = at;
		/* Nothing left of this region in the range (not: the scan ran
		 * out before its end). */
		if (got == 0 && next >= end)
			p->addr = r->start + r->len < p->end ? r->start + r->len : p->end;
		ret = got < 0 ? (int)got : 0;
	}
	q->placed += placed_count(s) - before;
	/* A thread that faulted on one of these pages meanwhile waits for it,
	 * its fault maybe unread yet. */
	if (hi > lo)
		pin_uffd_wake(s->uffd, (void *)(uintptr_t)lo, hi - lo);
	if (ret == -EAGAIN) {
		s->eagain = true;
		return;
	}
	/* Its data is being read: it goes on once the read is done. */
	if (ret == -EINPROGRESS)
		return;
	if (ret < 0 || q->k == q->n) {
		if (ret < 0)
			slog(s, LOG_WARNING, "replay stopped: %s", strerror(-ret));
		replay_end(s, ret);
	}
}

int push_replay(struct session *s, uint64_t seq, Uffdd__Range *const *ranges, size_t n)
{
	if (s->nreplays >= UFFDD_REPLAYS_MAX)
		return -EBUSY;
	struct replay *q = realloc(s->replays, (s->nreplays + 1) * sizeof(*q));
	if (!q)
		return -ENOMEM;
	s->replays = q;
	struct prefetch *v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t k = 0; k < n; k++)
		v[k] = (struct prefetch){ ranges[k]->addr, ranges[k]->addr + ranges[k]->len };
	q[s->nreplays++] = (struct replay){ .seq = seq, .v = v, .n = n };
	/* The first slice now, as the request is read: a replay before the
	 * process runs is placed at once. */
	if (s->nreplays == 1 && !s->eagain)
		replay_step(s);
	return 0;
}

/* One run of the oldest Prefetch request. */
static int prefetch_one(struct session *s)
{
	struct prefetch *p = &s->prefetch[0];
	int ret = 0;

	while (p->addr < p->end) {
		size_t i = session_first_after(s, p->addr);
		if (i == s->nregions || s->regions[i]->start >= p->end) {
			p->addr = p->end;
			break;
		}
		struct region *r = s->regions[i];
		if (p->addr < r->start)
			p->addr = r->start;
		uint64_t next = (p->addr - r->start) >> uffdd_page_shift;
		uint64_t end = (p->end < r->start + r->len ? p->end : r->start + r->len) - r->start;
		ret = fill_from(s, r, &next, end >> uffdd_page_shift, false);
		p->addr = r->start + (next << uffdd_page_shift);
		if (ret)
			break;
	}
	if (ret == -EAGAIN)
		s->eagain = true;
	if (p->addr >= p->end || (ret < 0 && ret != -EAGAIN && ret != -EINPROGRESS)) {
		memmove(&s->prefetch[0], &s->prefetch[1], (s->nprefetch - 1) * sizeof(*p));
		s->nprefetch--;
	}
	return ret;
}

/* One run of background push, in address order. */
static int push_one(struct session *s)
{
	for (size_t i = 0; i < s->nregions; i++) {
		struct region *r = s->regions[i];
		if (!r->push || r->push_next >= r->npages)
			continue;
		int ret = fill_from(s, r, &r->push_next, r->npages, true);
		if (ret == -EAGAIN) {
			s->eagain = true;
		} else if (ret < 0 && ret != -EINPROGRESS) {
			/* Logged (but -ENOENT: nothing is registered there,
			 * maybe not yet); the rest is left to faults, and to
			 * the push again after Goodbye (finish.c). */
			r->push = false;
			r->push_error = ret;
		}
		if (ret)
			return ret;
	}
	s->push_pending = false;
	return 0;
}

static void reply_wait(struct session *s, size_t k, int error, const char *text)
{
	notify_reply(s, s->waits[k].seq, error, text);
	memmove(&s->waits[k], &s->waits[k + 1], (s->nwaits - k - 1) * sizeof(*s->waits));
	s->nwaits--;
}

/*
 * Whether every page of the waiter's range that a region covers is in place
 * or discarded.  The cursor moves past what is (a page once done stays done
 * while its region lives), so each page is looked at about once over the
 * waiter's life, and one call looks at UFFDD_WAIT_SCAN pages at most.
 */
static bool wait_done(struct session *s, struct waiter *wt)
{
	uint64_t end = wt->addr + wt->len, budget = UFFDD_WAIT_SCAN;

	while (wt->cursor < end) {
		size_t i = session_first_after(s, wt->cursor);
		if (i == s->nregions || s->regions[i]->start >= end) {
			wt->cursor = end;
			break;
		}
		struct region *r = s->regions[i];
		if (wt->cursor < r->start)
			wt->cursor = r->start;
		uint64_t from = (wt->cursor - r->start) >> uffdd_page_shift;
		uint64_t to = ((end < r->start + r->len ? end : r->start + r->len) - r->start) >>
			      uffdd_page_shift;
		uint64_t at = bm_first_unset(r->populated, r->zero, from, to, &budget);
		wt->cursor = r->start + (at << uffdd_page_shift);
		if (at < to)
			return false;
	}
	return true;
}

static void check_waits(struct session *s, uint64_t now)
{
	for (size_t k = 0; k < s->nwaits;) {
		struct waiter *wt = &s->waits[k];
		if (wait_done(s, wt))
			reply_wait(s, k, 0, "populated");
		else if (s->stranded)
			reply_wait(s, k, -UFFDD_STRANDED_ERR, s->stranded_why);
		else if (wt->deadline && now >= wt->deadline)
			reply_wait(s, k, -ETIMEDOUT, "timed out before the range was populated");
		else
			k++;
	}
}

void push_wait(struct session *s, uint64_t seq, uint64_t addr, uint64_t len, uint32_t timeout_ms)
{
	size_t i = session_first_after(s, addr);
	struct waiter wt = {
		.seq = seq,
		.addr = addr,
		.len = len,
		.cursor = addr,
		.deadline = timeout_ms ? uffdd_now_ns() + timeout_ms * 1000000ull : 0,
	};

	if (i == s->nregions || s->regions[i]->start >= addr + len) {
		notify_reply(s, seq, -ENOENT, "no region in that range");
		return;
	}
	if (wait_done(s, &wt)) {
		notify_reply(s, seq, 0, "populated");
		return;
	}
	/* Its process is gone (the end waits for its Goodbye): never. */
	if (s->gone) {
		notify_reply(s, seq, -ESRCH, "its process is gone");
		return;
	}
	/* Nor while it is stranded: its bulk work stopped. */
	if (s->stranded) {
		notify_reply(s, seq, -UFFDD_STRANDED_ERR, s->stranded_why);
		return;
	}
	if (s->nwaits >= UFFDD_WAITS_MAX) {
		notify_reply(s, seq, -EBUSY, "too many WaitPopulated requests waiting already");
		return;
	}
	struct waiter *w = realloc(s->waits, (s->nwaits + 1) * sizeof(*w));
	if (!w) {
		notify_reply(s, seq, -ENOMEM, "out of memory");
		return;
	}
	s->waits = w;
	w[s->nwaits++] = wt;
}

/*
 * Where a probe looks: the kernel checks the range (at or above
 * vm.mmap_min_addr, 64 KiB by default, and below the task size, 2^47 less a
 * page at least) before it checks that the process lives, and only then
 * looks for a mapping.  So any page in [PROBE_LO, PROBE_HI) that no region
 * covers answers ESRCH once the process is gone, and never places a page.
 */
#define PROBE_LO (16ull << 20)
#define PROBE_HI (1ull << 47)

/* The first page at or above PROBE_LO that no region of s covers (PROBE_HI:
 * none below it). */
static uint64_t probe_addr(struct session *s)
{
	uint64_t a = PROBE_LO;

	for (size_t i = session_first_after(s, a); i < s->nregions; i++) {
		const struct region *r = s->regions[i];
		if (r->start > a || a >= PROBE_HI)
			break;
		a = r->start + r->len;
	}
	return a;
}

/* A fork child's process, that of a session finishing after Goodbye, or
 * that of a stranded one, may be gone with nothing to tell us: a resolving
 * ioctl on a page no region covers fails with ESRCH once its mm is gone
 * (ENOENT while it lives: no registered mapping there). */
static bool probed(const struct session *s)
{
	return s->sock < 0 || s->finishing || s->stranded;
}

static void probe(struct session *s, uint64_t now)
{
	if (!probed(s) || now < s->next_probe)
		return;
	s->probe_gap = s->probe_gap ? (s->probe_gap * 2 < PROBE_NS ? s->probe_gap * 2 : PROBE_NS)
				    : PROBE_FIRST_NS;
	s->next_probe = now + s->probe_gap;
	uint64_t a = probe_addr(s);
	if (a > PROBE_HI - uffdd_page) {
		slog(s, LOG_WARNING,
		     "no page in [0x%" PRIx64 ", 0x%" PRIx64
		     ") outside its regions: its process is not probed",
		     (uint64_t)PROBE_LO, (uint64_t)PROBE_HI);
		return;
	}
	if (pin_uffd_zeropage(s->uffd, (void *)(uintptr_t)a, uffdd_page, PIN_UFFD_DONTWAKE, NULL) ==
	    -ESRCH)
		session_end(s, -ESRCH, "its process is gone");
}

/*
 * A session that said Goodbye ends when every page is in place.  Pages
 * whose push failed keep it (and the process's faults served) until its
 * process is gone: closing the userfaultfd would turn them into zeros.
 */
static void finish_check(struct session *s)
{
	if (!s->finishing || s->dead || s->ending || s->push_pending || s->nprefetch ||
	    s->nreplays || s->eagain)
		return;
	uint64_t left = session_pages_left(s);
	if (!left) {
		session_end(s, 0, "every page is in place");
		return;
	}
	if (!s->stuck_said)
		slog(s, LOG_WARNING,
		     "%" PRIu64 " pages cannot be placed: the session stays until its process ends",
		     left);
	s->stuck_said = true;
}

/* A stranded session's bulk work is dropped: its Replays end
 * -UFFDD_STRANDED_ERR (what they placed said), no Prefetch nor push is left
 * for it. */
static void bulk_drop(struct session *s)
{
	while (s->nreplays)
		replay_end(s, -UFFDD_STRANDED_ERR);
	s->nprefetch = 0;
	s->push_pending = false;
}

/* Whether s has bulk work (Replay, Prefetch, push) it may do now: none
 * while a read or an event is awaited, nor while its uid owes others time
 * (a wait counted once in its deferred counter). */
static bool bulk_ready(struct session *s, uint64_t now)
{
	if (s->dead || !s->uffd || s->eagain || (s->rd && reader_busy(s->rd)) || s->src_wait_bulk)
		return false;
	if (!s->nreplays && !s->nprefetch && !s->push_pending)
		return false;
	if (!share_owes(s->share, now))
		return true;
	if (!s->bulk_deferred)
		STAT_ADD(s->stats.deferred, 1);
	s->bulk_deferred = true;
	return false;
}

/* One slice of s's bulk work, charged to its uid. */
static void bulk_step(struct session *s)
{
	uint64_t c0 = share_clock();

	s->bulk_deferred = false;
	if (s->nreplays)
		replay_step(s);
	else if (s->nprefetch)
		prefetch_one(s);
	else
		/* Every round, not only when idle: a process faulting at
		 * random keeps the worker busy, and a push that waits for a
		 * quiet moment starves (256 MiB read at random took 25,000
		 * faults and 3 x the time of one bulk copy; now some 650
		 * faults, near that copy).  A fault waits for one run at
		 * most. */
		push_one(s);
	/* The slice's time holds what its pages' unreadable source cost. */
	s->unpaid_ns = 0;
	share_charge(s->share, share_clock() - c0, uffdd_now_ns());
}

/*
 * Each round gives one slice of bulk work to one session, the next after the
 * last served (by id, round robin): the worker's faults wait behind one
 * slice at most, however many sessions have bulk work, and each session's
 * bulk work goes at the same pace.
 */
void push_step(struct worker *w)
{
	uint64_t now = uffdd_now_ns();
	bool moved = remotes_pump(w), landed = source_reads_landed();
	struct session *first = NULL, *after = NULL;

	for (struct session *s = w->sessions; s; s = s->wnext) {
		if (!s->dead && s->fc_deadline && now >= s->fc_deadline) {
			slog(s, LOG_WARNING,
			     "Firecracker handshake refused: none came within %u ms: %s",
			     UFFDD_FC_HANDSHAKE_MS, strerror(ETIMEDOUT));
			session_kill(s, "no Firecracker handshake in time");
		}
		if (s->dead || !s->uffd)
			continue;
		/* Faults that waited for a read, a page server, or an event. */
		if (s->eagain || (s->rd && reader_done(s->rd)) || (s->remote_wait && moved) ||
		    (s->src_wait && landed)) {
			s->remote_wait = false;
			s->src_wait = s->src_wait_bulk = false;
			fault_handle(s);
		}
		if (s->stranded)
			bulk_drop(s);
		if (bulk_ready(s, now)) {
			if (!first || s->id < first->id)
				first = s;
			if (s->id > w->bulk_last && (!after || s->id < after->id))
				after = s;
		}
		if (s->nwaits)
			check_waits(s, now);
		probe(s, now);
		finish_check(s);
	}
	struct session *s = after ? after : first;
	if (!s)
		return;
	w->bulk_last = s->id;
	bulk_step(s);
	/* What the slice placed may answer a WaitPopulated, or end a session
	 * that said Goodbye: now, not when something next wakes the worker. */
	if (s->nwaits)
		check_waits(s, now);
	finish_check(s);
}

int push_timeout(struct worker *w)
{
	uint64_t now = uffdd_now_ns(), wake = UINT64_MAX;

	for (struct session *s = w->sessions; s; s = s->wnext) {
		if (!s->dead && s->fc_deadline && s->fc_deadline < wake)
			wake = s->fc_deadline;
		if (s->dead || !s->uffd)
			continue;
		bool reading = (s->rd && reader_busy(s->rd)) || s->remote_wait || s->src_wait_bulk;
		if (s->eagain)
			return 0;
		if (!reading && !s->stranded && (s->nreplays || s->nprefetch || s->push_pending)) {
			/* Its uid owes others time: its bulk work waits as long. */
			uint64_t owes = share_owes(s->share, now);
			if (!owes)
				return 0;
			if (now + owes < wake)
				wake = now + owes;
		}
		for (size_t k = 0; k < s->nwaits; k++)
			if (s->waits[k].deadline && s->waits[k].deadline < wake)
				wake = s->waits[k].deadline;
		if (probed(s) && s->next_probe < wake)
			wake = s->next_probe;
	}
	int ms = remotes_timeout(w);
	if (wake == UINT64_MAX)
		return ms;
	int at = wake <= now ? 0 : (int)((wake - now + 999999) / 1000000);
	return ms >= 0 && ms < at ? ms : at;
}
