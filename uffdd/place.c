// SPDX-License-Identifier: MIT
/*
 * Placing pages: one ioctl per run (COPY, ZEROPAGE, CONTINUE for a
 * snapshot's pages, POISON where the source cannot be read), each run as
 * long as the caller's window, a region of huge pages (hugetlbfs) a whole
 * huge page at a time; EEXIST is a page there already.  Data from a source
 * that may block comes from the session's reader (reader.c), from a page
 * server from its GETs (source-remote.c): -EINPROGRESS until then.  Each
 * placing ioctl's range goes into the session's record first.  A long run
 * goes in pieces placed by several threads at once (crew.c), whose results
 * the worker applies.  A source that failed for good poisons the region's
 * pages not in place at once (POISON tried whatever the userfaultfd's
 * features: a kernel that refuses it leaves nothing placed there, the
 * session stranded, its threads waiting), and what a failed read
 * costs is the session's to pay (s->unpaid_ns).  It may call snapshot.c,
 * finish.c, session.c, state.c, reader.c, source.c, source-remote.c,
 * crew.c, share.c, log.c and util.c.
 */
#include <stdlib.h>
#include <string.h>

#include "uffdd.h"

/* Zeroes to copy from: a zero page of a WP region must be write-protected,
 * which UFFDIO_ZEROPAGE cannot do.  Read by the crew too. */
static void *zeroes;
/* Pages: a run shorter than two of these is placed by one thread (handing
 * a piece to another costs a wake-up, some 10 us; copying 128 KiB, some
 * 40 us). */
#define PLACE_PIECE_MIN 32

static void mark_populated(struct region *r, uint64_t i, uint64_t n)
{
	uint64_t had = bm_count(r->populated, i, n);

	bm_assign(r->populated, i, n, true);
	STAT_ADD(r->n_populated, n - had);
}

static int64_t place(struct session *s, struct region *r, uint64_t i, uint64_t n, bool data,
		     bool push, bool *woke);

/* Before an ioctl that places pages: in the record, for a daemon that takes
 * over from one killed before it set their populated bits. */
static void placing(struct session *s, const void *dst, size_t len)
{
	if (s->st)
		state_placing_set(s->st, (uintptr_t)dst, (uintptr_t)dst + len);
}

/* A source read failed for good, not for a while: a retry would fail again. */
static bool failed_for_good(int err)
{
	return err != EINTR && err != EAGAIN && err != ENOMEM && err != ENOBUFS && err != EDQUOT;
}

/*
 * Pages of r poisoned ahead of their faults when its source failed for good
 * at page i: those of the POISON_SPAN-page span holding i that the source
 * should give but no longer can (gone_from()), not in place, not known zero,
 * not a hole, so that the process meets SIGBUS there in the kernel, without
 * a fault for the daemon each.  A span bounds the work of one failure (a
 * bitmap scan, an ioctl per run); a fault in the next span poisons that one.
 */
#define POISON_SPAN (1ull << 18)

static uint64_t run_at(const struct region *r, uint64_t i, uint64_t end, bool *ret_data);

/* Poison the pages of [i, end) not in place, one ioctl per run; a page the
 * process has already (EEXIST) stays as it is. */
static void poison_missing(struct session *s, struct region *r, uint64_t i, uint64_t end)
{
	while (i < end) {
		if (bm_test(r->populated, i)) {
			i++;
			continue;
		}
		uint64_t n = 1;
		while (i + n < end && !bm_test(r->populated, i + n))
			n++;
		void *dst = region_page_addr(r, i);
		int64_t done = 0;
		placing(s, dst, n << uffdd_page_shift);
		int ret = pin_uffd_poison(s->uffd, dst, n << uffdd_page_shift, PIN_UFFD_DONTWAKE,
					  &done);
		uint64_t k = ret == 0 ? n : done > 0 ? (uint64_t)done >> uffdd_page_shift : 0;
		/* Anything but EEXIST (an event pending, the process gone)
		 * ends it: the pages left are poisoned at their faults. */
		if (ret < 0 && ret != -EEXIST)
			return;
		/* EEXIST: page i + k is there already, and stays. */
		uint64_t there = ret == -EEXIST;
		mark_populated(r, i, k + there);
		i += k + there;
	}
}

/*
 * The first page of r the source can no longer give, having failed with err:
 * a file that shrank (EFAULT: the copy ran past the end of its mapping) still
 * gives the pages before its end; any other failure of a file, or of a page
 * server, leaves none.  UINT64_MAX: unknown (nothing is poisoned ahead).
 */
static uint64_t gone_from(const struct region *r, int err)
{
	int fd = source_fd(r->src);
	struct stat st;

	if (err != EFAULT || fd < 0)
		return 0;
	if (fstat_cached(fd, &st) < 0)
		return UINT64_MAX;
	uint64_t size = (uint64_t)st.st_size;
	return size <= r->offset ? 0 : (size - r->offset + uffdd_page - 1) >> uffdd_page_shift;
}

static void poison_ahead(struct session *s, struct region *r, uint64_t i, int err)
{
	uint64_t lo = i & ~(POISON_SPAN - 1),
		 end = r->npages - lo < POISON_SPAN ? r->npages : lo + POISON_SPAN,
		 from = gone_from(r, err);

	if (from > lo)
		lo = from;
	for (uint64_t p = lo; p < end;) {
		bool data;
		uint64_t k = run_at(r, p, end, &data);
		if (data)
			poison_missing(s, r, p, p + k);
		p += k;
	}
}

/*
 * The source cannot be read where these pages are (its file shrank, or the
 * read failed: err).  Zero pages would be data made up, and a retry would
 * fail again, forever: poison them, so the process gets SIGBUS when it
 * touches one, whether or not its userfaultfd asked for the POISON feature
 * (the feature bit only tells that the kernel has UFFDIO_POISON, since Linux
 * 6.6; CRIU asks for none).  Only a kernel that refuses the ioctl (before
 * 6.6) leaves nothing placed and nothing woken (-EIO): the session is
 * stranded (finish.c), its threads on those pages wait in the kernel until
 * the process is killed.
 * A source that failed for good poisons the rest of its
 * span too (poison_ahead()), but in a snapshot's region (a page the memfd
 * lacks says nothing of the others), one of huge pages, and one whose file
 * is read by a reader (a network or FUSE file's failure may pass, and a
 * reader killed fails its read with EIO).  The time it takes is the
 * session's own doing: unpaid until its uid is charged.
 */
static int64_t place_unreadable(struct session *s, struct region *r, uint64_t i, uint64_t n,
				bool push, bool *woke, const char *call, int err)
{
	size_t len = n << uffdd_page_shift;
	void *dst = region_page_addr(r, i);
	int64_t done = 0;

	session_lost(s, n);
	uint64_t c0 = share_clock();
	bool ahead = failed_for_good(err) && !r->huge && !snapshot_region(r) &&
		     !source_may_block(r->src);
	placing(s, dst, len);
	/* Poisoned ahead, the rest is in place before the thread wakes and
	 * touches the next page: the caller wakes it then. */
	int ret = pin_uffd_poison(s->uffd, dst, len, woke && !ahead ? 0 : PIN_UFFD_DONTWAKE, &done);
	if (poison_refused(ret)) {
		/* Nothing to place but data made up: the threads wait. */
		session_strand(s, call, (uintptr_t)dst, len, err, -ret);
		if (woke)
			*woke = false;
		s->unpaid_ns += share_clock() - c0;
		return -EIO;
	}
	slog(s, LOG_ERR,
	     "%s [%p, +%#zx) from the source: %s; poisoning %s: "
	     "touching them raises SIGBUS",
	     call, dst, len, strerror(err),
	     ahead ? "the pages it can no longer give" : "the pages");
	if (ret == 0)
		done = (int64_t)len;
	if (woke)
		*woke = ret == 0 && !ahead;
	if (done > 0)
		mark_populated(r, i, (uint64_t)done >> uffdd_page_shift);
	if (done > 0 && ahead)
		poison_ahead(s, r, i, err);
	s->unpaid_ns += share_clock() - c0;
	if (done <= 0)
		return ret == -EEXIST ? 1 : ret;
	return (int64_t)done >> uffdd_page_shift;
}

/*
 * The data at off of a source that may block, *len bytes at most (all of
 * them with whole: a huge page): what the session's reader read there (*len
 * becomes what it holds), else its read is started and the pages wait for
 * it (-EINPROGRESS): the worker goes on with other sessions meanwhile.
 */
static int read_data(struct session *s, struct source *src, uint64_t off, size_t *len, bool whole,
		     const void **ret)
{
	if (!s->rd) {
		int r = reader_new(s->uid, s->w->efd, &s->rd);
		if (r < 0)
			return r;
	}
	ssize_t got = reader_take(s->rd, src, off, *len, ret);
	if (got < 0)
		return (int)got;
	if (got > 0 && (!whole || (size_t)got == *len)) {
		*len = (size_t)got;
		return 0;
	}
	int r = reader_start(s->rd, src, off, *len);
	return r == 0 || r == -EBUSY ? -EINPROGRESS : r;
}

/* Place n pages at page i of r, all data or all zero.  With woke, the
 * ioctl wakes their threads, and *woke says whether it did (it placed them
 * all).  Returns the pages handled or -errno. */
static int64_t place(struct session *s, struct region *r, uint64_t i, uint64_t n, bool data,
		     bool push, bool *woke)
{
	bool wp = r->mode & PIN_UFFD_REGISTER_WP;
	unsigned int dontwake = woke ? 0 : PIN_UFFD_DONTWAKE;
	unsigned int flags = dontwake | (wp ? PIN_UFFD_WP : 0);
	size_t len = n << uffdd_page_shift;
	void *dst = region_page_addr(r, i);
	const void *src = zeroes;
	struct remote *rm = data ? source_remote(r->src) : NULL;
	uint64_t off = r->offset + (i << uffdd_page_shift);
	int64_t done = 0;
	int ret;

	/* A snapshot's page is in the page cache of the memfd the process
	 * maps: CONTINUE maps it there, nothing is read or copied. */
	bool cont = data && snapshot_region(r);
	/* hugetlbfs has no UFFDIO_ZEROPAGE: a huge page's zeroes are copied. */
	bool copy = !cont && (data || wp || r->huge);
	const char *call = cont ? "UFFDIO_CONTINUE" : copy ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE";

	if (rm) {
		/* A push run asks for the rest of its region ahead. */
		ret = remote_data(rm, off, &len, push ? r->offset + r->len : 0, &src);
		if (ret == -EINPROGRESS)
			s->remote_wait = true;
		if (ret == -EINPROGRESS || ret == -ENOMEM)
			return ret;
		if (ret < 0)
			return place_unreadable(s, r, i, n, push, woke, "GET", -ret);
	} else if (data && !cont) {
		if (source_may_block(r->src))
			ret = read_data(s, r->src, off, &len, r->huge, &src);
		else
			ret = source_data(r->src, off, len, s->w->buf, &src);
		/* Read ahead, not landed yet (source-ra.c): a push waits for
		 * it, while a fault waits alone and the push goes on. */
		if (ret == -EINPROGRESS && !source_may_block(r->src)) {
			s->src_wait = true;
			s->src_wait_bulk |= push;
		}
		if (ret == -ENOMEM || ret == -EINPROGRESS)
			return ret;
		const char *rd = ret == -EDQUOT ? "read (its uid has readers stuck)" : "pread";
		if (ret < 0)
			return place_unreadable(s, r, i, n, push, woke, rd, -ret);
	}
	placing(s, dst, len);
	if (cont)
		ret = pin_uffd_continue(s->uffd, dst, len, dontwake, &done);
	else if (copy)
		ret = pin_uffd_copy(s->uffd, dst, src, len, flags, &done);
	else
		ret = pin_uffd_zeropage(s->uffd, dst, len, dontwake, &done);
	if (ret == 0)
		done = (int64_t)len;
	if (woke)
		*woke = ret == 0;
	/* What went in, or was there already, is not asked for again. */
	if (rm && (done > 0 || ret == -EEXIST))
		remote_used(rm, off, done > 0 ? (size_t)done : uffdd_page);
	if (done > 0) {
		uint64_t k = (uint64_t)done >> uffdd_page_shift;
		uffdd_hold("placed");
		s->in_eagain = false;
		mark_populated(r, i, k);
		if (data) {
			/* Placed with the image's data; bytes the daemon
			 * copied only when it copied them. */
			STAT_ADD(s->stats.pages_copied, k);
			if (!cont)
				STAT_ADD(s->stats.bytes_copied, (uint64_t)done);
		} else {
			STAT_ADD(s->stats.pages_zeroed, k);
		}
		if (push)
			STAT_ADD(s->stats.pages_pushed, k);
		return (int64_t)k;
	}
	switch (ret) {
	case -EEXIST:
		/* The page is there (placed before, or the range was populated by
		 * the process before registering): nothing to do but wake. */
		STAT_ADD(s->stats.eexist, 1);
		mark_populated(r, i, region_unit(r));
		return (int64_t)region_unit(r);
	case -EAGAIN:
		/* Once per wait for a pending event: the retries until the
		 * event's thread runs again are the same wait. */
		if (!s->in_eagain)
			STAT_ADD(s->stats.eagain, 1);
		s->in_eagain = true;
		return ret;
	case -ESRCH:
	case -ENOSPC:
		/* The process is gone: ESRCH since Linux 4.13, ENOSPC before. */
		session_end(s, -ESRCH, "its process is gone");
		return -ESRCH;
	case -ENOENT:
		return ret;
	case -EFAULT:
		/* CONTINUE: no page in the memfd there, which its seals rule
		 * out unless the process maps another file than the source. */
		if (data)
			return place_unreadable(s, r, i, n, push, woke, call, EFAULT);
		break;
	}
	slog(s, LOG_ERR, "%s [%p, +%#zx): %s", call, dst, len, strerror(-ret));
	return ret;
}

/*
 * The run from page i (before end) that one ioctl places, and whether it is
 * the source's (*ret_data; else zero): in a region of huge pages, the huge
 * page at i whole, zero only when the balloon removed all of it (a hole in
 * the source reads as zeroes); else the small pages from i that are all
 * zero, or all of one extent of the source.
 */
static uint64_t run_at(const struct region *r, uint64_t i, uint64_t end, bool *ret_data)
{
	uint64_t k;

	*ret_data = false;
	if (r->huge) {
		uint64_t u = region_unit(r);

		*ret_data = bm_count(r->zero, i, u) < u;
		return u;
	}
	if (bm_test(r->zero, i)) {
		for (k = 1; i + k < end && bm_test(r->zero, i + k);)
			k++;
		return k;
	}
	k = source_extent(r->src, r->offset + (i << uffdd_page_shift), end - i, ret_data);
	for (uint64_t j = 1; j < k; j++)
		if (bm_test(r->zero, i + j))
			return j;
	return k;
}

/* The first k pages from page i of r, to the first one in place. */
static uint64_t missing_run(const struct region *r, uint64_t i, uint64_t k)
{
	for (uint64_t j = 1; j < k; j++)
		if (bm_test(r->populated, i + j))
			return j;
	return k;
}

/* fault_fill() one ioctl after the other, by the calling worker. */
static int64_t fill_serial(struct session *s, struct region *r, uint64_t first, uint64_t n,
			   bool push, bool *ret_woken)
{
	/* Each huge page that [first, +n) touches is placed whole. */
	uint64_t i = r->huge ? first & ~(region_unit(r) - 1) : first, end = first + n;

	if (ret_woken)
		*ret_woken = false;
	while (i < end) {
		/* In place already (a push run goes over such pages). */
		if (!r->huge && bm_test(r->populated, i)) {
			i++;
			continue;
		}
		bool data;
		uint64_t k = r->huge ? run_at(r, i, end, &data)
				     : missing_run(r, i, run_at(r, i, end, &data));
		/* One ioctl for the whole run: let it wake, and save a WAKE. */
		bool single = ret_woken && i <= first && i + k >= end;
		int64_t got = place(s, r, i, k, data, push, single ? ret_woken : NULL);
		if (got < 0)
			return i > first ? (int64_t)(i - first) : got;
		i += (uint64_t)got;
		if ((uint64_t)got < k)
			break;
	}
	return (int64_t)((i < end ? i : end) - first);
}

/*
 * A piece of a wide run: pages [i, end) of r, placed by whichever thread of
 * the crew takes it, with DONTWAKE, one ioctl per run_at() run.  It changes
 * nothing of the session: what it placed is counted here, and the worker
 * applies it once every piece is done.  It stops at the first call that
 * fails (err), but for EEXIST: that page is there, and it goes on.
 */
struct piece {
	struct session *s;
	struct region *r;
	uint64_t i, end;
	uint64_t at;			/* pages below it are in place */
	uint64_t copied, zeroed, bytes; /* placed by it (pages, pages, bytes copied) */
	uint64_t eexist;
	int err;
};

static void piece_place(void *task, void *buf)
{
	struct piece *p = task;
	struct region *r = p->r;
	bool wp = r->mode & PIN_UFFD_REGISTER_WP;

	for (p->at = p->i; p->at < p->end;) {
		/* In place already: the worker waits for the batch, so the
		 * bitmap does not change meanwhile. */
		if (bm_test(r->populated, p->at)) {
			p->at++;
			continue;
		}
		bool data;
		uint64_t k = missing_run(r, p->at, run_at(r, p->at, p->end, &data));
		size_t len = k << uffdd_page_shift;
		void *dst = region_page_addr(r, p->at);
		const void *src = zeroes;
		bool cont = data && snapshot_region(r), copy = !cont && (data || wp);
		int64_t done = 0;
		int ret = 0;

		if (data && !cont)
			ret = source_data(r->src, r->offset + (p->at << uffdd_page_shift), len, buf,
					  &src);
		if (ret < 0) {
			p->err = ret;
			return;
		}
		if (cont)
			ret = pin_uffd_continue(p->s->uffd, dst, len, PIN_UFFD_DONTWAKE, &done);
		else if (copy)
			ret = pin_uffd_copy(p->s->uffd, dst, src, len,
					    PIN_UFFD_DONTWAKE | (wp ? PIN_UFFD_WP : 0), &done);
		else
			ret = pin_uffd_zeropage(p->s->uffd, dst, len, PIN_UFFD_DONTWAKE, &done);
		if (ret == 0)
			done = (int64_t)len;
		if (done > 0) {
			uint64_t got = (uint64_t)done >> uffdd_page_shift;
			p->at += got;
			if (!data)
				p->zeroed += got;
			else
				p->copied += got;
			if (data && !cont)
				p->bytes += (uint64_t)done;
		}
		if (ret == -EEXIST) {
			/* The page at p->at is there (placed before a
			 * takeover, or the process's own): counted as
			 * such, not as placed. */
			p->eexist++;
			p->at++;
		} else if (ret < 0) {
			p->err = ret;
			return;
		}
	}
}

/* Whether r's runs may go to the crew: not a source that may block (its
 * reader serves one worker), nor a page server's, nor huge pages (placed
 * one at a time). */
static bool wide_ok(const struct region *r)
{
	return !r->huge && !source_remote(r->src) && !source_may_block(r->src);
}

/*
 * Place [first, first + n) of r in pieces across the crew.  The worker
 * places own pages of them at most, and as many as that at least (or the
 * run): the pieces of the first own pages are its share, whoever takes
 * them, and it takes no more once it placed as many pieces (one thread's
 * run: a fault waits no longer behind it); what no thread took is left for
 * later.  The record's placing range covers every piece first: each ioctl
 * in flight is inside it, and a daemon that takes over from one killed
 * meanwhile places it again (EEXIST for what went in).  Then the worker
 * applies what the pieces did, and from the first piece that failed goes on
 * alone, where errors (EAGAIN, ESRCH, an unreadable source) are handled as
 * ever.  Returns the pages handled from first on, as fill_serial().
 */
static int64_t fill_wide(struct session *s, struct region *r, uint64_t first, uint64_t n, bool push,
			 uint64_t own)
{
	struct piece pv[UFFDD_PLACE_PIECES];
	/* Pieces of some size pages: two a thread, so that one slow to start
	 * costs half as much.  n being UFFDD_PUSH_MAX x width at most, a piece
	 * is UFFDD_PUSH_MAX / 2 pages at most, and fits a thread's buffer.
	 * Pieces side by side share a page table, and its lock: cut so that
	 * threads at once work in different 2 MiB areas instead, they left
	 * that lock's share of UFFDIO_COPY where it was (13 %, as high with
	 * one thread alone: the cost of taking it, not a wait) and the CRIU
	 * restore times too (issue 13). */
	uint64_t width = crew_width(), size = n / (2 * width), placed = 0;
	if (size < PLACE_PIECE_MIN)
		size = PLACE_PIECE_MIN;
	uint64_t a = own < n ? own : n, ma = (a + size - 1) / size, mb = (n - a + size - 1) / size;
	for (uint64_t k = 0; k < ma; k++)
		pv[k] = (struct piece){
			.s = s, .r = r, .i = first + a * k / ma, .end = first + a * (k + 1) / ma
		};
	for (uint64_t k = 0; k < mb; k++)
		pv[ma + k] = (struct piece){ .s = s,
					     .r = r,
					     .i = first + a + (n - a) * k / mb,
					     .end = first + a + (n - a) * (k + 1) / mb };
	uint64_t np = ma + mb;
	placing(s, region_page_addr(r, first), n << uffdd_page_shift);
	uint64_t taken = crew_run(piece_place, pv, sizeof(*pv), (unsigned int)np, (unsigned int)ma,
				  s->w->buf);
	for (uint64_t k = 0; k < taken; k++)
		placed += pv[k].copied + pv[k].zeroed;
	if (placed) {
		uffdd_hold("placed");
		s->in_eagain = false;
	}
	uint64_t stop = taken;
	for (uint64_t k = 0; k < taken; k++) {
		struct piece *p = &pv[k];
		mark_populated(r, p->i, p->at - p->i);
		STAT_ADD(s->stats.pages_copied, p->copied);
		STAT_ADD(s->stats.bytes_copied, p->bytes);
		STAT_ADD(s->stats.pages_zeroed, p->zeroed);
		STAT_ADD(s->stats.eexist, p->eexist);
		if (push)
			STAT_ADD(s->stats.pages_pushed, p->copied + p->zeroed);
		if (stop == taken && p->at < p->end)
			stop = k;
		/* The caller wakes the pages handled from first on, up to the
		 * first piece that failed: those after it, here. */
		else if (stop < taken && p->at > p->i)
			pin_uffd_wake(s->uffd, region_page_addr(r, p->i),
				      (p->at - p->i) << uffdd_page_shift);
	}
	if (stop == taken)
		return (int64_t)(pv[taken - 1].end - first);
	uint64_t head = pv[stop].at - first;
	int64_t more = fill_serial(s, r, pv[stop].at, pv[stop].end - pv[stop].at, push, NULL);
	if (more < 0)
		return head ? (int64_t)head : more;
	return (int64_t)(head + (uint64_t)more);
}

unsigned int place_width(const struct region *r)
{
	return wide_ok(r) ? crew_width() : 1;
}

int64_t fault_fill(struct session *s, struct region *r, uint64_t first, uint64_t n, bool push,
		   bool *ret_woken)
{
	if (n < 2 * PLACE_PIECE_MIN || place_width(r) < 2)
		return fill_serial(s, r, first, n, push, ret_woken);
	if (!ret_woken)
		return fill_wide(s, r, first, n, push, UFFDD_PUSH_MAX);
	/* A fault's run is placed whole, as ever: by the worker when no
	 * placer is free. */
	*ret_woken = false;
	return fill_wide(s, r, first, n, push, n);
}

int place_init(void)
{
	zeroes = calloc(1, uffdd_run_bytes());
	return zeroes ? 0 : -ENOMEM;
}
