// SPDX-License-Identifier: MIT
/*
 * The region requests of a session: RegionAdd (one or a batch), with the
 * checks a region must pass and the source its pages come from,
 * RegionRemove, and DirtyGet (a WP region's dirty bitmap).  Called by
 * control.c's dispatch; it may call fault.c, dirty.c, snapshot.c,
 * session.c, region.c, state.c, source.c, source-remote.c, closer.c (a
 * descriptor a client sent is closed through it), log.c and util.c.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "uffdd.h"

static int add_region(struct req *q, const Uffdd__RegionAdd *ra, struct region *r)
{
	struct session *s = q->s;
	void *addr = (void *)(uintptr_t)ra->range->addr;
	bool registered = !ra->has_registered || ra->registered;
	int ret;

	if (!registered) {
		ret = pin_uffd_register(s->uffd, addr, ra->range->len, ra->mode, NULL);
		if (ret < 0)
			return fail(q, ret, "UFFDIO_REGISTER [%p, +%#" PRIx64 "): %s", addr,
				    ra->range->len, strerror(-ret));
		r->ours = true;
	}
	if (ra->mode & PIN_UFFD_REGISTER_WP) {
		ret = pin_uffd_writeprotect(s->uffd, addr, ra->range->len, PIN_UFFD_WP);
		if (ret < 0) {
			if (r->ours)
				pin_uffd_unregister(s->uffd, addr, ra->range->len);
			return fail(q, ret, "UFFDIO_WRITEPROTECT [%p, +%#" PRIx64 "): %s", addr,
				    ra->range->len, strerror(-ret));
		}
	}
	ret = session_insert(s, r);
	if (ret < 0) {
		if (r->ours)
			pin_uffd_unregister(s->uffd, addr, ra->range->len);
		if (ret == -EFBIG)
			return fail(q, ret,
				    "the session's record has no room for the table of one more "
				    "region (%" PRIu64 " MiB free)",
				    state_room(s->st) >> 20);
		return fail(q, ret, "out of memory");
	}
	return 0;
}

/*
 * The region ra asks for, from src, is r already: the same request again
 * (sent once more after a daemon restart, its reply lost), done once.
 */
static bool same_region(const struct region *r, const Uffdd__RegionAdd *ra,
			const struct source *src)
{
	struct stat a, b;
	bool fd = ra->source == UFFDD__SOURCE_KIND__SOURCE_FD;
	bool ps = ra->source == UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER;

	if (r->start != ra->range->addr || r->len != ra->range->len || r->mode != ra->mode ||
	    r->huge != (ra->has_page_size && ra->page_size == UFFDD_HUGE_PAGE) ||
	    (fd || ps) == source_is_zero(r->src) || ps != !!source_remote(r->src) ||
	    ((fd || ps) && r->offset != ra->offset))
		return false;
	/* A page server's pages are the task's wherever they come from. */
	if (!fd)
		return true;
	return source_stat(r->src, &a) == 0 && source_stat(src, &b) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/* -EFBIG, saying why [addr, +len) does not fit in the session's record: its
 * bitmaps (1 bit a page each: populated, zero, and dirty with WP) against
 * the room the record had before they were tried. */
static int record_full(struct req *q, uint64_t addr, uint64_t len, uint32_t mode, uint64_t room)
{
	uint64_t maps = (mode & PIN_UFFD_REGISTER_WP) ? 3 : 2;

	return fail(q, -EFBIG,
		    "[%#" PRIx64 ", +%#" PRIx64 "): %" PRIu64 " MiB of bitmaps; the session's "
		    "record has room for %" PRIu64 " MiB (of %" PRIu64 " MiB)",
		    addr, len, (len >> uffdd_page_shift) / 8 * maps >> 20, room >> 20,
		    uffdd_cfg.max_state_bytes >> 20);
}

/*
 * wp_async must say what the userfaultfd does: with WP_ASYNC the kernel
 * sends no WP fault, so a region that expects them would never see a write;
 * and a wp-async region needs the pagemap its DirtyGet scans.
 */
static int check_wp_async(struct req *q, const Uffdd__RegionAdd *ra)
{
	bool want = ra->has_wp_async && ra->wp_async;
	bool async = pin_uffd_features(q->s->uffd) & PIN_UFFD_FEATURE_WP_ASYNC;

	if (want && !(ra->mode & PIN_UFFD_REGISTER_WP))
		return fail(q, -EINVAL, "wp_async without PIN_UFFD_REGISTER_WP in mode");
	if (want && !async)
		return fail(q, -EOPNOTSUPP,
			    "wp_async: the userfaultfd was opened without UFFD_FEATURE_WP_ASYNC");
	if (!want && async && (ra->mode & PIN_UFFD_REGISTER_WP))
		return fail(q, -EINVAL,
			    "the userfaultfd has UFFD_FEATURE_WP_ASYNC: its writes raise no fault, "
			    "so a WP region of it is wp_async");
	if (want && q->s->pagemap < 0)
		return fail(q, -EBADFD,
			    "wp_async: no pagemap came with the userfaultfd to scan for writes");
	return 0;
}

/*
 * ra's page size: the system's, or UFFDD_HUGE_PAGE (*ret_huge) over a range
 * and offset aligned to it, MISSING only (a WP fault is served a page of
 * uffdd_page at a time).
 */
static int check_page_size(struct req *q, const Uffdd__RegionAdd *ra, bool *ret_huge)
{
	uint64_t ps = ra->has_page_size ? ra->page_size : 0;
	uint64_t off = ra->has_offset ? ra->offset : 0;

	*ret_huge = ps == UFFDD_HUGE_PAGE && ps != uffdd_page;
	if (!ps || ps == uffdd_page)
		return 0;
	if (ps != UFFDD_HUGE_PAGE || UFFDD_HUGE_PAGE > uffdd_run_bytes())
		return fail(q, -EINVAL, "page_size %" PRIu64 ": %zu or %llu", ps, uffdd_page,
			    UFFDD_HUGE_PAGE);
	if (ra->mode != PIN_UFFD_REGISTER_MISSING)
		return fail(q, -EOPNOTSUPP, "page_size %" PRIu64 ": MISSING regions only", ps);
	if ((ra->range->addr | ra->range->len | off) & (ps - 1))
		return fail(q, -EINVAL,
			    "[%#" PRIx64 ", +%#" PRIx64 ") at offset %#" PRIx64
			    ": not aligned to its %" PRIu64 "-byte pages",
			    ra->range->addr, ra->range->len, off, ps);
	return 0;
}

/*
 * The source of a region: the window [off, +len) of src_fd (taken whatever
 * the outcome), or zero pages with src_fd -1.  A snapshot's (its regions
 * MINOR) is not mapped: the daemon never reads it, and mapping and
 * populating 256 MiB would hold the worker some 30 ms per restore.
 */
static int region_source(struct req *q, int src_fd, uint64_t off, uint64_t len, bool snapshot,
			 struct source **ret)
{
	int err = snapshot ? source_new_unmapped(src_fd, q->s->uid, off, len, ret)
			   : source_new(src_fd, q->s->uid, off, len, ret);

	if (err < 0)
		return fail(q, err, "source: %s",
			    err == -EINVAL   ? "not a regular file or block device"
			    : err == -EBADF  ? "not open for reading"
			    : err == -EDQUOT ? "the uid's closes of such files wait for their "
					       "file system already (it does not answer FLUSH)"
					     : strerror(-err));
	return 0;
}

/* A page server's source over the connected socket sock (taken whatever the
 * outcome), its GETs for task. */
static int region_source_ps(struct req *q, int sock, uint64_t task, struct source **ret)
{
	struct remote *rm;
	int err = sock < 0 ? -EBADF : remote_new(sock, task, q->s->uid, q->s->w, q->s->id, &rm);

	if (!err)
		err = source_new_remote(rm, ret);
	if (err < 0)
		return fail(q, err, "page server: %s",
			    err == -ENOTSOCK ? "not a connected stream socket"
			    : err == -EBUSY  ? "another uid's sources read that socket"
					     : strerror(-err));
	return 0;
}

/*
 * Add the region ra asks for, its pages read from src (the caller's
 * reference).  The faults that wait for it are the caller's to serve.
 */
static int region_add_one(struct req *q, const Uffdd__RegionAdd *ra, struct source *src)
{
	struct session *s = q->s;
	uint64_t addr = ra->range->addr, len = ra->range->len;
	bool huge = false;
	int ret = check_wp_async(q, ra);

	if (!ret)
		ret = check_page_size(q, ra, &huge);
	if (!ret)
		ret = snapshot_check(s, ra->mode, src, q->text, sizeof(q->text));
	if (ret < 0)
		return ret;
	size_t i = session_first_after(s, addr);

	if (i < s->nregions && s->regions[i]->start < addr + len) {
		if (same_region(s->regions[i], ra, src))
			return 0;
		return fail(q, -EEXIST, "[%#" PRIx64 ", +%#" PRIx64 ") overlaps a region", addr,
			    len);
	}
	ret = session_charge(s, 1, 0, q->text, sizeof(q->text));
	if (ret < 0)
		return ret;
	struct region *r = NULL;
	uint64_t room = state_room(s->st);
	ret = region_new(s, addr, len, ra->mode, src, ra->has_offset ? ra->offset : 0,
			 !ra->has_push || ra->push, &r);
	/* Its bitmaps and a source file new to the session, charged. */
	if (!ret)
		ret = session_charge(s, 0, 0, q->text, sizeof(q->text));
	else if (ret == -EFBIG)
		record_full(q, addr, len, ra->mode, room);
	else
		fail(q, ret, "out of memory");
	if (!ret) {
		r->huge = huge;
		ret = add_region(q, ra, r);
	}
	if (ret < 0) {
		region_free(s, r);
		session_charge(s, -1, 0, NULL, 0);
		return ret;
	}
	if (r->push)
		s->push_pending = true;
	/* After a restart, threads may sleep on faults the old daemon read:
	 * wake them all so they fault again, to us. */
	if (s->takeover && !r->ours)
		pin_uffd_wake(s->uffd, (void *)(uintptr_t)addr, len);
	return 0;
}

int do_region_add(struct req *q)
{
	const Uffdd__RegionAdd *ra = q->m->region_add;
	bool fd = ra->source == UFFDD__SOURCE_KIND__SOURCE_FD;
	bool ps = ra->source == UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER;
	int src_fd = fd || ps ? take_fd(q) : -1;
	struct source *src;

	if (!q->s->uffd) {
		closer_close(src_fd, q->s->uid);
		return fail(q, -EBADFD, "hand over a userfaultfd first");
	}
	int ret = ps ? region_source_ps(q, src_fd, ra->task, &src)
		     : region_source(q, src_fd, fd ? ra->offset : 0, ra->range->len,
				     ra->mode & PIN_UFFD_REGISTER_MINOR, &src);
	if (ret < 0)
		return ret;
	ret = region_add_one(q, ra, src);
	source_unref(src);
	/* Faults that waited for this region. */
	if (!ret && q->s->nfaults)
		fault_serve(q->s);
	return ret;
}

/*
 * Each region of the batch as RegionAdd, in order, up to the first that
 * fails (the reply says which; those before it stay: the batch sent again
 * finds them done).  One source serves them all: a window of the batch's
 * file over every part the regions read (and one of zero pages), so that a
 * region costs no system call (issue 13: a restore of thousands of regions
 * waits for them).  The faults that waited for any of them are served once,
 * at the end.
 */
int do_region_add_batch(struct req *q)
{
	const Uffdd__RegionAddBatch *b = q->m->region_add_batch;
	int fd = q->nfds ? take_fd(q) : -1;
	struct source *file = NULL, *zero = NULL;
	uint64_t lo = UINT64_MAX, hi = 0, task = 0;
	bool ps = false;
	bool snapshot = true; /* every region from the file a snapshot's */
	int ret;

	if (!q->s->uffd) {
		closer_close(fd, q->s->uid);
		return fail(q, -EBADFD, "hand over a userfaultfd first");
	}
	for (size_t i = 0; i < b->n_regions; i++) {
		const Uffdd__RegionAdd *ra = b->regions[i];
		/* libpin's check: one kind, one task. */
		if (ra->source == UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER) {
			ps = true;
			task = ra->task;
		}
		if (ra->source != UFFDD__SOURCE_KIND__SOURCE_FD)
			continue;
		lo = ra->offset < lo ? ra->offset : lo;
		hi = ra->offset + ra->range->len > hi ? ra->offset + ra->range->len : hi;
		snapshot = snapshot && (ra->mode & PIN_UFFD_REGISTER_MINOR);
	}
	ret = region_source(q, -1, 0, 0, false, &zero);
	if (!ret && ps)
		ret = region_source_ps(q, fd, task, &file);
	else if (!ret && fd >= 0 && lo < hi)
		ret = region_source(q, fd, lo, hi - lo, snapshot, &file);
	else
		closer_close(fd, q->s->uid);
	for (size_t i = 0; i < b->n_regions && !ret; i++) {
		const Uffdd__RegionAdd *ra = b->regions[i];

		ret = region_add_one(q, ra,
				     ra->source != UFFDD__SOURCE_KIND__SOURCE_ZERO ? file : zero);
		if (ret < 0) {
			char why[sizeof(q->text)];
			snprintf(why, sizeof(why), "%s", q->text);
			fail(q, ret, "region %zu of %zu: %s", i, b->n_regions, why);
		}
	}
	source_unref(file);
	source_unref(zero);
	if (q->s->nfaults)
		fault_serve(q->s);
	return ret;
}

int do_region_remove(struct req *q)
{
	struct session *s = q->s;
	uint64_t a = q->m->region_remove->range->addr, b = a + q->m->region_remove->range->len;
	size_t before = s->nregions;
	struct region *r = session_find(s, a);
	/* A hole in the middle of a region makes one more: refused over the
	 * limit before anything is cut. */
	int64_t split = r && a > r->start && b < r->start + r->len;

	if (split) {
		int ret = session_charge(s, 1, 0, q->text, sizeof(q->text));
		if (ret < 0)
			return ret;
	}
	int64_t cut = session_cut(s, a, b, 0, true);
	session_charge(s, (int64_t)s->nregions - (int64_t)before - split, 0, NULL, 0);
	if (cut == -EFBIG)
		return fail(
			q, (int)cut,
			"cutting [%#" PRIx64 ", %#" PRIx64 ") out leaves parts whose bitmaps do "
			"not fit in the session's record beside the whole (%" PRIu64 " MiB free)",
			a, b, state_room(s->st) >> 20);
	if (cut < 0)
		return fail(q, (int)cut, "out of memory");
	if (!cut)
		return fail(q, -ENOENT, "no region in [%#" PRIx64 ", %#" PRIx64 ")", a, b);
	fault_drop(s, a, b);
	return 0;
}

int do_dirty_get(struct req *q, Uffdd__Reply *rep, uint8_t **ret_buf)
{
	struct session *s = q->s;
	uint64_t addr = q->m->dirty_get->range->addr, len = q->m->dirty_get->range->len;
	struct region *r = session_find(s, addr);

	if (!r || !r->dirty || addr + len > r->start + r->len)
		return fail(q, -EINVAL, "[%#" PRIx64 ", +%#" PRIx64 ") is not inside one WP region",
			    addr, len);
	uint64_t first = (addr - r->start) >> uffdd_page_shift, n = len >> uffdd_page_shift;
	if (n / 8 > PIN_PROTO_MAX_MSG / 2)
		return fail(q, -E2BIG, "the bitmap of %" PRIu64 " pages does not fit a message", n);
	if (dirty_async(s, r)) {
		/* The kernel's marks into the bitmap; the same answer from there on. */
		int ret = dirty_scan(s, r, addr, len, q->m->dirty_get->reset, q->text,
				     sizeof(q->text));
		if (ret < 0)
			return ret;
	} else if (q->m->dirty_get->reset) {
		/* Protect before taking the bits: a write in between faults
		 * and lands in the new bitmap, after this request. */
		int ret = pin_uffd_writeprotect(s->uffd, (void *)(uintptr_t)addr, len, PIN_UFFD_WP);
		if (ret < 0)
			return fail(q, ret, "UFFDIO_WRITEPROTECT [%#" PRIx64 ", +%#" PRIx64 "): %s",
				    addr, len, strerror(-ret));
	}
	uint8_t *buf = calloc(1, (n + 7) / 8 ? (n + 7) / 8 : 1);
	if (!buf)
		return fail(q, -ENOMEM, "out of memory");
	for (uint64_t k = 0; k < n; k++)
		if (bm_test(r->dirty, first + k))
			buf[k / 8] |= (uint8_t)(1u << (k % 8));
	/* The bits are cleared once the reply is committed: a daemon killed
	 * in between answers with the same bits, never with fewer. */
	if (q->m->dirty_get->reset) {
		q->reset = r;
		q->reset_first = first;
		q->reset_n = n;
	}
	rep->has_bitmap = true;
	rep->bitmap.data = buf;
	rep->bitmap.len = (n + 7) / 8;
	*ret_buf = buf;
	return 0;
}
