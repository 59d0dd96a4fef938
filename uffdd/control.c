// SPDX-License-Identifier: MIT
/*
 * The requests of a session: each message decoded, handled by one
 * do_<request>() that acts on the sender's session, and answered with exactly
 * one Reply; a malformed one gets an error Reply and leaves the session (and
 * every other) as it was.  It may call control-reply.c (the replies),
 * inspect.c, push.c, fault.c, worker.c (to watch a handed-over
 * userfaultfd), session.c, source.c, source-remote.c, closer.c (a
 * descriptor a client sent is closed through it), evlog.c (a handed-over
 * event log), share.c (a uid that owes others time waits for its requests
 * to be read), log.c and util.c.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "uffdd.h"

/* Requests taken from one session per wake-up: fairness to the others. */
#define MAX_BATCH 16

/* ---- requests ---- */

static int take_fd(struct req *q)
{
	int fd = q->fds[0];

	q->nfds = 0;
	return fd;
}

/* A descriptor a client sent, closed when its scope ends through closer.c:
 * its close may wait for a file system that never answers (a FUSE file). */
struct sent_fd {
	int fd;
	uid_t uid;
};

static void sent_fd_close(struct sent_fd *f)
{
	closer_close(f->fd, f->uid);
}

#define _cleanup_sent_ __attribute__((cleanup(sent_fd_close)))

/*
 * A client's name goes into log lines and uffdctl's tables: only printable
 * ASCII is kept, every other byte becomes '?', so that a name can forge
 * neither a journal line (a newline, "<0>") nor terminal escapes.
 */
static void set_name(char *dst, size_t size, const char *name)
{
	size_t i = 0;

	for (; name[i] && i + 1 < size; i++)
		dst[i] = name[i] >= ' ' && name[i] <= '~' ? name[i] : '?';
	dst[i] = '\0';
}

static int do_hello(struct req *q, Uffdd__Reply *rep)
{
	const Uffdd__Hello *h = q->m->hello;

	if (h->version != PIN_PROTO_VERSION)
		return fail(q, -EPROTONOSUPPORT, "protocol version %u; this daemon speaks %u",
			    h->version, PIN_PROTO_VERSION);
	bool inspect = h->has_inspect && h->inspect;
	if (q->s->hello && inspect != q->s->inspect)
		return fail(q, -EINVAL, "inspect is said in the first Hello only");
	if (h->name) {
		pthread_mutex_lock(&q->s->lock);
		set_name(q->s->name, sizeof(q->s->name), h->name);
		pthread_mutex_unlock(&q->s->lock);
	}
	if (inspect && !q->s->inspect)
		session_inspect(q->s);
	q->s->hello = true;
	session_set_meta(q->s);
	rep->has_version = rep->has_session = true;
	rep->version = PIN_PROTO_VERSION;
	rep->session = q->s->id;
	return 0;
}

static bool is_userfaultfd(int fd)
{
	char path[64], link[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return false;
	link[n] = '\0';
	return !strcmp(link, "anon_inode:[userfaultfd]");
}

/* Give up the userfaultfd a handover took: under the sessions' lock, as
 * sessions_uffd_taken_locked() reads every session's from any worker. */
static void drop_uffd(struct session *s)
{
	sessions_lock();
	struct pin_uffd *u = s->uffd;
	s->uffd = NULL;
	sessions_unlock();
	pin_uffd_free(u);
}

/* Give up the pagemap and the event log a handover took, and take them and
 * the userfaultfd out of the store if stored: what fails after them. */
static void undo_handover(struct session *s, bool stored)
{
	if (stored) {
		if (s->pagemap >= 0)
			store_remove("s%" PRIu64 ".pagemap", s->id);
		if (s->evlog_fd >= 0)
			store_remove("s%" PRIu64 ".evlog", s->id);
		store_remove("s%" PRIu64 ".uffd", s->id);
	}
	if (s->pagemap >= 0)
		close(s->pagemap);
	s->pagemap = -1;
	evlog_close(s);
	drop_uffd(s);
}

/* Descriptors stored by a handover: the userfaultfd, then the pagemap and the
 * event log when they came.  0, or the store's error (nothing stays). */
static int store_handover(struct req *q)
{
	struct session *s = q->s;
	int r = store_put(pin_uffd_fd(s->uffd), "s%" PRIu64 ".uffd", s->id);

	if (r < 0)
		return fail(q, r, "the fd store refused the userfaultfd: %s", strerror(-r));
	r = s->pagemap >= 0 ? store_put(s->pagemap, "s%" PRIu64 ".pagemap", s->id) : 0;
	if (r < 0) {
		store_remove("s%" PRIu64 ".uffd", s->id);
		return fail(q, r, "the fd store refused the pagemap: %s", strerror(-r));
	}
	r = s->evlog_fd >= 0 ? store_put(s->evlog_fd, "s%" PRIu64 ".evlog", s->id) : 0;
	if (r < 0) {
		if (s->pagemap >= 0)
			store_remove("s%" PRIu64 ".pagemap", s->id);
		store_remove("s%" PRIu64 ".uffd", s->id);
		return fail(q, r, "the fd store refused the event log: %s", strerror(-r));
	}
	return 0;
}

static int do_handover(struct req *q)
{
	struct session *s = q->s;
	const Uffdd__UffdHandover *h = q->m->uffd;
	bool has_pm = h->has_pagemap && h->pagemap, has_log = h->has_evlog && h->evlog;
	/* The decoder checked the count: the userfaultfd, [pagemap], [log]. */
	_cleanup_sent_ struct sent_fd pm = { has_pm ? q->fds[1] : -1, s->uid };
	_cleanup_sent_ struct sent_fd log = { has_log ? q->fds[1 + has_pm] : -1, s->uid };
	_cleanup_sent_ struct sent_fd fd = { take_fd(q), s->uid };
	struct stat st;

	if (s->uffd)
		return fail(q, -EBUSY, "this session has a userfaultfd already");
	if (!is_userfaultfd(fd.fd))
		return fail(q, -EBADF, "the descriptor is not a userfaultfd");
	if (pm.fd >= 0 && !dirty_is_pagemap(pm.fd))
		return fail(q, -EBADF, "the second descriptor is not a /proc/PID/pagemap");
	int flags = fcntl(fd.fd, F_GETFL);
	/* O_NONBLOCK is on the open file, which the client shares: harmless,
	 * it never reads its own userfaultfd while uffdd serves it. */
	if (flags < 0 || fcntl(fd.fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return fail(q, -errno, "fcntl(O_NONBLOCK): %s", strerror(errno));
	/* Checked and taken under the sessions' lock: of two sessions
	 * handed one userfaultfd at once, the second sees the first's. */
	ino_t ino = fstat(fd.fd, &st) == 0 ? st.st_ino : 0;
	sessions_lock();
	bool taken = sessions_uffd_taken_locked(fd.fd, ino);
	int r = taken ? -EBUSY : pin_uffd_from_fd(fd.fd, h->features, &s->uffd);
	if (!r)
		s->uffd_ino = ino;
	sessions_unlock();
	if (r == -EBUSY)
		return fail(q, r, "that userfaultfd belongs to another session");
	if (r < 0)
		return fail(q, r, "out of memory");
	fd.fd = -1;
	s->pagemap = pm.fd;
	pm.fd = -1;
	if (log.fd >= 0) {
		r = evlog_adopt(s, log.fd, q->text, sizeof(q->text));
		if (r < 0) {
			undo_handover(s, false);
			return r;
		}
		log.fd = -1;
		/* Nothing read yet: nothing pending. */
		evlog_end(s);
	}
	/* One to three more descriptors held for the uid. */
	r = session_charge(s, 0, 0, q->text, sizeof(q->text));
	if (r < 0) {
		undo_handover(s, false);
		return r;
	}
	/* Stored before it is watched: the record says it is there once
	 * this request commits. */
	r = store_handover(q);
	if (r < 0) {
		undo_handover(s, false);
		return r;
	}
	s->wuffd.handle = fault_ready;
	r = worker_watch(s->w, &s->wuffd, pin_uffd_fd(s->uffd));
	if (r < 0) {
		undo_handover(s, true);
		return fail(q, r, "epoll_ctl: %s", strerror(-r));
	}
	s->takeover = h->has_takeover && h->takeover;
	session_set_meta(s);
	return 0;
}

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
	int err = sock < 0 ? -EBADF : remote_new(sock, task, q->s->w, q->s->id, &rm);

	if (!err)
		err = source_new_remote(rm, ret);
	if (err < 0)
		return fail(q, err, "page server: %s",
			    err == -ENOTSOCK ? "not a connected stream socket" : strerror(-err));
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

static int do_region_add(struct req *q)
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
static int do_region_add_batch(struct req *q)
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

static int do_region_remove(struct req *q)
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

static int do_dirty_get(struct req *q, Uffdd__Reply *rep, uint8_t **ret_buf)
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

static int do_pin_report(struct req *q)
{
	struct session *s = q->s;
	const Uffdd__PinReport *p = q->m->pin_report;

	ssize_t i = session_pin_find(s, p->cookie);

	if (i >= 0) {
		/* The same report again (after a restart): done once. */
		if (s->pins.v[i].addr == p->range->addr && s->pins.v[i].len == p->range->len)
			return 0;
		return fail(q, -EEXIST, "cookie %#" PRIx64 " is reported already", p->cookie);
	}
	int ret = session_charge(s, 0, (int64_t)p->range->len, q->text, sizeof(q->text));
	if (ret < 0)
		return ret;
	ret = session_pin_add(s, p->range->addr, p->range->len, p->cookie);
	if (ret < 0) {
		session_charge(s, 0, -(int64_t)p->range->len, NULL, 0);
		return fail(q, ret, "pin %#" PRIx64 " at [%#" PRIx64 ", +%#" PRIx64 "): %s",
			    p->cookie, p->range->addr, p->range->len, strerror(-ret));
	}
	return 0;
}

static int do_pin_release(struct req *q)
{
	struct session *s = q->s;

	ssize_t i = session_pin_find(s, q->m->pin_release->cookie);

	if (i < 0)
		return fail(q, -ENOENT, "no pin with cookie %#" PRIx64, q->m->pin_release->cookie);
	uint64_t len = s->pins.v[i].len;
	session_pin_del(s, (size_t)i);
	session_charge(s, 0, -(int64_t)len, NULL, 0);
	return 0;
}

static int do_prefetch(struct req *q)
{
	struct session *s = q->s;
	const Uffdd__Range *range = q->m->prefetch->range;
	int error = s->uffd ? session_prefetch_add(s, range->addr, range->len) : -EBADFD;

	if (error)
		fail(q, error, "%s",
		     error == -EBADFD	? "hand over a userfaultfd first"
		     : error == -ENOENT ? "no region in that range"
					: strerror(-error));
	return error;
}

static int do_replay(struct req *q)
{
	const Uffdd__Replay *rp = q->m->replay;

	if (!q->s->uffd)
		return fail(q, -EBADFD, "hand over a userfaultfd first");
	int r = push_replay(q->s, q->m->seq, rp->ranges, rp->n_ranges);
	if (r < 0)
		return fail(q, r, "replay of %zu ranges: %s", rp->n_ranges,
			    r == -EBUSY ? "too many replays under way" : strerror(-r));
	return 0;
}

/*
 * Goodbye: the session is the daemon's now.  With pages left it pushes them
 * and ends the session when all are in (push.c), or when the process is
 * gone: recorded, so that a successor finishes it too.  The Goodbye itself
 * is not committed as done: sent again after a restart, it finds the
 * session finishing and waits as the first did.
 */
static void do_goodbye(struct session *s, uint64_t seq, bool wait)
{
	uint64_t left = s->uffd ? session_pages_left(s) : 0;
	char text[96];

	s->in_request = false;
	if (!s->finishing && !left) {
		if (wait)
			control_ended(s, seq, 0, "every page is in place");
		else
			control_reply(s, seq, 0, "goodbye");
		session_end(s, 0, "said goodbye");
		return;
	}
	if (!s->finishing) {
		session_finish(s);
		session_commit(s, 0, NULL, 0);
		slog(s, LOG_INFO, "said goodbye with %" PRIu64 " pages not in place: placing them",
		     left);
	}
	if (wait) {
		s->bye_seq = seq;
		/* Done already, while this Goodbye was sent again. */
		if (s->ending)
			session_end(s, s->end_error, s->end_why);
		return;
	}
	snprintf(text, sizeof(text), "goodbye: the daemon places the %" PRIu64 " pages left", left);
	control_reply(s, seq, 0, text);
}

/* ---- dispatch ---- */

/* Whether a request changes the session: its reply is committed with it. */
static bool changes(const Uffdd__Msg *m)
{
	switch (m->body_case) {
	case UFFDD__MSG__BODY_STATS_GET:
	case UFFDD__MSG__BODY_LIST_GET:
	case UFFDD__MSG__BODY_WORKING_SET_GET:
		return false;
	case UFFDD__MSG__BODY_DIRTY_GET:
		return m->dirty_get->reset;
	default:
		return true;
	}
}

/*
 * Commit what the request changed with its reply, then what may follow the
 * commit only (a DirtyGet's reset), then answer.
 */
static void finish(struct req *q, uint64_t seq, Uffdd__Reply *rep)
{
	struct session *s = q->s;
	struct packed p;

	s->in_request = false;
	int r = pack_reply(seq, rep, &p);
	if (r < 0) {
		slog(s, LOG_ERR, "encoding a reply: %s", strerror(-r));
		session_kill(s, "no memory for its reply");
		return;
	}
	if (changes(q->m))
		session_commit(s, seq, p.buf, p.len);
	if (q->reset) {
		STAT_ADD(q->reset->n_dirty, -bm_count(q->reset->dirty, q->reset_first, q->reset_n));
		bm_assign(q->reset->dirty, q->reset_first, q->reset_n, false);
	}
	reply_out(s, p.buf, p.len);
	free(p.buf);
}

/* Handle one request; its error, and the reply's text in why (why NULL:
 * not wanted). */
static int handle(struct session *s, const Uffdd__Msg *m, int *fds, size_t nfds, char *why,
		  size_t whylen)
{
	struct req q = { .s = s, .m = m, .fds = fds, .nfds = nfds };
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Stats st = UFFDD__STATS__INIT;
	uint64_t lat[UFFDD_LAT_BUCKETS] = { 0 };
	struct list l = { .rep = &rep };
	uint8_t *bitmap = NULL;
	Uffdd__Range *wset = NULL;
	uint64_t seq = m->has_seq ? m->seq : 0;
	const void *done;
	size_t done_len;
	int error;

	/* Sent again after a restart, and done already: the same reply. */
	if (seq && seq == state_last(s->st, &done, &done_len) && done_len) {
		for (size_t i = 0; i < nfds; i++)
			closer_close(fds[i], s->uid);
		reply_out(s, done, done_len);
		return 0;
	}
	/* Hello first: it checks the version every other request is read in. */
	if (!s->hello && m->body_case != UFFDD__MSG__BODY_HELLO) {
		error = fail(&q, -EPROTO, "say Hello first");
		goto reply;
	}
	/* After Goodbye only Goodbye again (sent again after a restart) and
	 * what reads. */
	if (s->finishing && m->body_case != UFFDD__MSG__BODY_GOODBYE && changes(m)) {
		error = fail(&q, -EPROTO, "the session said Goodbye");
		goto reply;
	}
	/* An inspection connection reads; Goodbye only ends it. */
	if (s->inspect && m->body_case != UFFDD__MSG__BODY_GOODBYE &&
	    m->body_case != UFFDD__MSG__BODY_HELLO && changes(m)) {
		error = fail(&q, -EPERM, "an inspection connection only reads");
		goto reply;
	}
	s->in_request = true;
	switch (m->body_case) {
	case UFFDD__MSG__BODY_HELLO:
		error = do_hello(&q, &rep);
		break;
	case UFFDD__MSG__BODY_UFFD:
		error = do_handover(&q);
		break;
	case UFFDD__MSG__BODY_REGION_ADD:
		error = do_region_add(&q);
		break;
	case UFFDD__MSG__BODY_REGION_ADD_BATCH:
		error = do_region_add_batch(&q);
		break;
	case UFFDD__MSG__BODY_REGION_REMOVE:
		error = do_region_remove(&q);
		break;
	case UFFDD__MSG__BODY_PREFETCH:
		error = do_prefetch(&q);
		break;
	case UFFDD__MSG__BODY_WAIT:
		/* Replied to when the range is populated. */
		s->in_request = false;
		push_wait(s, seq, m->wait->range->addr, m->wait->range->len,
			  m->wait->has_timeout_ms ? m->wait->timeout_ms : 0);
		return 0;
	case UFFDD__MSG__BODY_DIRTY_GET:
		error = do_dirty_get(&q, &rep, &bitmap);
		break;
	case UFFDD__MSG__BODY_PIN_REPORT:
		error = do_pin_report(&q);
		break;
	case UFFDD__MSG__BODY_PIN_RELEASE:
		error = do_pin_release(&q);
		break;
	case UFFDD__MSG__BODY_STATS_GET:
		error = do_stats(&q, &rep, &st, lat);
		break;
	case UFFDD__MSG__BODY_LIST_GET:
		error = do_list(&q, &l);
		break;
	case UFFDD__MSG__BODY_WORKING_SET_GET:
		error = do_working_set_get(&q, &rep, &wset);
		break;
	case UFFDD__MSG__BODY_REPLAY:
		error = do_replay(&q);
		if (!error) {
			/* Replied to when its last slice is placed. */
			s->in_request = false;
			return 0;
		}
		break;
	case UFFDD__MSG__BODY_GOODBYE:
		do_goodbye(s, seq, m->goodbye->has_wait && m->goodbye->wait);
		return 0;
	default:
		error = fail(&q, -EINVAL, "not a request");
		break;
	}
reply:
	/* A descriptor the request did not take is not kept. */
	for (size_t i = 0; i < q.nfds; i++)
		closer_close(fds[i], s->uid);
	rep.error = error;
	rep.text = error ? q.text : "ok";
	if (why)
		snprintf(why, whylen, "%s", rep.text);
	finish(&q, seq, &rep);
	free(bitmap);
	free(wset);
	free(rep.working_set);
	list_free(&l);
	return error;
}

int control_request(struct session *s, const Uffdd__Msg *m, int *fds, size_t nfds, char *why,
		    size_t whylen)
{
	return handle(s, m, fds, nfds, why, whylen);
}

static const char *recv_error(int err)
{
	switch (err) {
	case -EBADMSG:
		return "malformed message: truncated, undecodable or of an unknown type";
	case -EBADF:
		return "wrong number of file descriptors for this message";
	case -EOVERFLOW:
		return "a range wraps around the end of the address space";
	case -EINVAL:
		return "a field is out of bounds (empty or unaligned range, unknown mode)";
	default:
		return NULL;
	}
}

/* What a message that was refused came with, closed as any descriptor a
 * client sent. */
static void close_sent(int fd, void *userdata)
{
	const struct session *s = userdata;

	closer_close(fd, s->uid);
}

/* Whether the client hung up: its socket polls POLLHUP or POLLERR. */
static bool hung_up_now(struct session *s)
{
	struct pollfd p = { .fd = s->sock };

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR));
}

void control_handle(struct session *s)
{
	/* Its connection closed after Goodbye, in this round. */
	if (s->sock < 0)
		return;
	/* Replies first: no request is read while some wait for room. */
	if (!flush(s))
		return;
	/* Its uid owes others time (share.c): its requests wait, unwatched,
	 * until its worker sees the debt paid; but a hang-up (reported
	 * unasked) is met at once. */
	if (share_owes(s->share, uffdd_now_ns()) && !hung_up_now(s)) {
		if (!s->paused) {
			s->paused = true;
			STAT_ADD(s->stats.deferred, 1);
			watch_for(s, 0);
		}
		return;
	}
	for (int k = 0; k < MAX_BATCH && !s->dead && !s->outq_n; k++) {
		Uffdd__Msg *m;
		int fds[PIN_PROTO_MAX_FDS];
		size_t nfds;
		int r = pin_proto_recv_closing(s->sock, &m, fds, &nfds, close_sent, s);

		if (r == -EAGAIN)
			return;
		if (r < 0 && recv_error(r)) {
			slog(s, LOG_INFO, "rejected a message: %s", strerror(-r));
			control_reply(s, 0, r, recv_error(r));
			continue;
		}
		if (r < 0) {
			hung_up(s, r == -ECONNRESET ? "disconnected" : strerror(-r));
			return;
		}
		handle(s, m, fds, nfds, NULL, 0);
		pin_proto_free(m);
	}
}
