// SPDX-License-Identifier: MIT
/*
 * Placing pages: one ioctl per run (COPY, ZEROPAGE, CONTINUE for a
 * snapshot's pages, POISON where the source cannot be read), each run as
 * long as the caller's window, a region of huge pages (hugetlbfs) a whole
 * huge page at a time; EEXIST is a page there already.  Data from a source
 * that may block comes from the session's reader (reader.c), from a page
 * server from its GETs (source-remote.c): -EINPROGRESS until then.  Each
 * placing ioctl's range goes into the session's record first.  It may call
 * snapshot.c, session.c, state.c, reader.c, source.c, source-remote.c,
 * log.c and util.c.
 */
#include <stdlib.h>
#include <string.h>

#include "uffdd.h"

/* Zeroes to copy from: a zero page of a WP region must be write-protected,
 * which UFFDIO_ZEROPAGE cannot do. */
static void *zeroes;

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

/*
 * The source cannot be read where these pages are (its file shrank, or the
 * read failed: err).  Zero pages would be data made up, and a retry would
 * fail again, forever: poison them, so the process gets SIGBUS when it
 * touches one, when its userfaultfd has the POISON feature; else zero pages
 * are all there is.
 */
static int64_t place_unreadable(struct session *s, struct region *r, uint64_t i, uint64_t n,
				bool push, bool *woke, const char *call, int err)
{
	size_t len = n << uffdd_page_shift;
	void *dst = region_page_addr(r, i);
	int64_t done = 0;

	s->unreadable += n;
	if (!(pin_uffd_features(s->uffd) & PIN_UFFD_FEATURE_POISON)) {
		slog(s, LOG_ERR,
		     "%s [%p, +%#zx) from the source: %s; placing zero "
		     "pages (no POISON feature)",
		     call, dst, len, strerror(err));
		return place(s, r, i, n, false, push, woke);
	}
	slog(s, LOG_ERR,
	     "%s [%p, +%#zx) from the source: %s; poisoning the pages: "
	     "touching them raises SIGBUS",
	     call, dst, len, strerror(err));
	placing(s, dst, len);
	int ret = pin_uffd_poison(s->uffd, dst, len, woke ? 0 : PIN_UFFD_DONTWAKE, &done);
	if (ret == 0)
		done = (int64_t)len;
	if (woke)
		*woke = ret == 0;
	if (done <= 0)
		return ret == -EEXIST ? 1 : ret;
	mark_populated(r, i, (uint64_t)done >> uffdd_page_shift);
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

int64_t fault_fill(struct session *s, struct region *r, uint64_t first, uint64_t n, bool push,
		   bool *ret_woken)
{
	/* Each huge page that [first, +n) touches is placed whole. */
	uint64_t i = r->huge ? first & ~(region_unit(r) - 1) : first, end = first + n;

	if (ret_woken)
		*ret_woken = false;
	while (i < end) {
		bool data;
		uint64_t k = run_at(r, i, end, &data);
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

int place_init(void)
{
	zeroes = calloc(1, uffdd_run_bytes());
	return zeroes ? 0 : -ENOMEM;
}
