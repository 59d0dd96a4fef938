// SPDX-License-Identifier: MIT
/*
 * The requests of a session: each message decoded, handled by one
 * do_<request>() that acts on the sender's session, and answered with exactly
 * one Reply; a malformed one gets an error Reply and leaves the session (and
 * every other) as it was.  It may call control-region.c (RegionAdd,
 * RegionRemove, DirtyGet), control-reply.c (the replies), inspect.c,
 * push.c, worker.c (to watch a handed-over userfaultfd), session.c,
 * closer.c (a descriptor a client sent is closed through it), evlog.c (a
 * handed-over event log), share.c (a uid that owes others time waits for
 * its requests to be read), log.c and util.c.
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
 * gone: recorded, so that a successor finishes it too; pages its source
 * could not give (poisoned) make that end -EIO.  A stranded session
 * (finish.c) is answered -UFFDD_STRANDED_ERR at once and stays until its
 * process is gone.
 * The Goodbye itself is not committed as done: sent again after a restart,
 * it finds the session finishing and waits as the first did.
 */
static void do_goodbye(struct session *s, uint64_t seq, bool wait)
{
	uint64_t left = s->uffd ? session_pages_left(s) : 0;
	char text[128];

	s->in_request = false;
	/* Stranded while its process lives: the end comes when the process is
	 * gone (killed: its threads wait for pages nobody can give), so the
	 * answer is now, with the range and the call that failed. */
	if (s->stranded && !s->ending) {
		if (!s->finishing) {
			session_finish(s);
			session_commit(s, 0, NULL, 0);
		}
		control_ended(s, seq, -UFFDD_STRANDED_ERR, s->stranded_why);
		return;
	}
	uint64_t lost = STAT_GET(s->stats.unreadable);
	if (!s->finishing && !left) {
		snprintf(text, sizeof(text),
			 "every page is in place, %" PRIu64
			 " of them poisoned: their source could not give them",
			 lost);
		if (wait)
			control_ended(s, seq, lost ? -EIO : 0,
				      lost ? text : "every page is in place");
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
	case -EINVAL:
		return "a field is out of bounds (a range empty, unaligned, past user space or "
		       "wrapping; an unknown mode)";
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
