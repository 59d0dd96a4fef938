// SPDX-License-Identifier: MIT
/*
 * How a session ends: at once (it hung up, its userfaultfd failed), when
 * its process is gone (at its client's Goodbye or hang-up, if its client is
 * there: the answer says -ESRCH), or, after its client said Goodbye, once
 * the daemon has placed every page of its regions (push.c calls
 * session_end() then).  An end after some of its pages could not be read
 * from their source (poisoned) is a failure: -EIO.  A stranded session
 * (pages it cannot give, and a kernel that refused to poison them: their
 * threads wait) ends only when its process is gone: any other end closes
 * its connection alone, for closing its userfaultfd would wake those
 * threads to zero pages.
 * The answer to a Goodbye that waits for the end, -ESRCH to the
 * WaitPopulated requests of a process that is gone, a finishing session
 * that goes on without its connection, and the pages a session still
 * misses.  Pages lost and a stranded session go into its record
 * (state-now.c) before their effects.  Below the requests and the fault
 * path, it may call session.c, state-now.c, store.c, notify.c, log.c and
 * util.c (a hold point).
 */
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "uffdd.h"

uint64_t session_pages_left(const struct session *s)
{
	uint64_t left = 0;

	for (size_t i = 0; i < s->nregions; i++) {
		const struct region *r = s->regions[i];
		/* A push that met no registered mapping after Goodbye: none
		 * is there any more.  Before it, the range may be registered
		 * yet (a CRIU restorer moves its mappings into place and
		 * registers them after its userfaultfd was handed over):
		 * taken for gone, the session would end and its pages read
		 * as zeros. */
		if (s->finishing && r->push_error == -ENOENT)
			continue;
		for (uint64_t w = 0; w * 64 < r->npages; w++) {
			uint64_t miss = ~(r->populated[w] | r->zero[w]);
			if ((w + 1) * 64 > r->npages)
				miss &= (1ull << (r->npages % 64)) - 1;
			left += (uint64_t)__builtin_popcountll(miss);
		}
	}
	return left;
}

/* Its process is gone: its WaitPopulated requests are answered. */
static void answer_waits(struct session *s)
{
	while (s->gone && s->nwaits) {
		notify_reply(s, s->waits[0].seq, -ESRCH, "its process is gone");
		memmove(&s->waits[0], &s->waits[1], --s->nwaits * sizeof(*s->waits));
	}
}

void session_end(struct session *s, int error, const char *why)
{
	char text[256], lost[128];

	bool gone_now = error == -ESRCH, done_now = !error;

	if (s->dead)
		return;
	/* Its threads wait on pages it cannot give: the userfaultfd stays
	 * open while the process lives, its connection goes. */
	if (s->stranded && !gone_now && !s->gone && s->uffd) {
		if (s->sock >= 0)
			slog(s, LOG_WARNING,
			     "%s: its connection is closed; the session stays until its process is "
			     "gone (%s)",
			     why, s->stranded_why);
		session_detach(s);
		return;
	}
	s->gone |= gone_now;
	/* Gone, or done, after pages of it could not be had: not an end its
	 * restore may take for a task that exited, nor for one whole. */
	uint64_t unreadable = STAT_GET(s->stats.unreadable);
	if ((gone_now || done_now) && unreadable) {
		snprintf(lost, sizeof(lost),
			 "%s after %" PRIu64 " of its pages could not be read from their source%s",
			 gone_now ? "its process is gone" : "every page is in place", unreadable,
			 gone_now ? "" : " (poisoned)");
		error = -EIO;
		why = lost;
	}
	/* Its client is still there and waits for no answer yet: the end is
	 * told in the answer to its Goodbye (or its hang-up ends it), never by
	 * a connection cut under a request on its way (a task of a restore
	 * that exits before its Goodbye is not a failure: -ESRCH says so). */
	if (s->sock >= 0 && !s->bye_seq && (s->finishing ? done_now || gone_now : gone_now)) {
		if (!s->ending)
			snprintf(s->end_why, sizeof(s->end_why), "%s", why);
		s->end_error = s->ending ? s->end_error : error;
		s->ending = true;
		answer_waits(s);
		return;
	}
	if (error && !done_now) {
		snprintf(text, sizeof(text), "%s: %" PRIu64 " pages not in place", why,
			 s->uffd ? session_pages_left(s) : 0);
		why = text;
	}
	ulog(LOG_INFO, "session %" PRIu64 " (pid %d, %s): %s", s->id, (int)s->pid,
	     s->name[0] ? s->name : "unnamed", why);
	char who[32];
	snprintf(who, sizeof(who), "session %" PRIu64, s->id);
	ulog_rl_end(&s->rl, who);
	/* Answered before it is dead: a dead session's socket sends nothing. */
	if (s->bye_seq)
		notify_ended(s, s->bye_seq, error, why);
	s->bye_seq = 0;
	answer_waits(s);
	if (s->fc_ready)
		notify_vm_ended(s);
	s->dead = true;
}

void session_lost(struct session *s, uint64_t n)
{
	STAT_ADD(s->stats.unreadable, n);
	if (s->st)
		state_lost_add(s->st, n);
	uffdd_hold("lost-recorded");
}

void session_strand(struct session *s, const char *call, uint64_t addr, size_t len, int err,
		    int poison_err)
{
	if (s->stranded)
		return;
	s->stranded = true;
	/* strerror() may share its buffer: one call each. */
	char why[64];
	snprintf(why, sizeof(why), "%s", strerror(err));
	snprintf(s->stranded_why, sizeof(s->stranded_why),
		 "%s [%#" PRIx64 ", +%#zx) from the source: %s; UFFDIO_POISON refused (%s): the "
		 "threads touching those pages wait until the process is killed",
		 call, addr, len, why, strerror(poison_err));
	/* Durable before it is told or acted on: a successor that took it for
	 * a session like any other would close its userfaultfd. */
	if (s->st)
		state_strand(s->st, s->stranded_why);
	slog(s, LOG_ERR, "%s", s->stranded_why);
	/* A Goodbye that waits for the end would wait as long as the process
	 * lives: it is answered now. */
	if (s->bye_seq)
		notify_ended(s, s->bye_seq, -UFFDD_STRANDED_ERR, s->stranded_why);
	s->bye_seq = 0;
}

void session_kill(struct session *s, const char *why)
{
	session_end(s, -ECONNABORTED, why);
}

void session_finish(struct session *s)
{
	s->finishing = true;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nregions; i++) {
		struct region *r = s->regions[i];
		/* A push stopped by an error is tried once more; one that met
		 * no registered mapping too (see session_pages_left()). */
		r->push = true;
		r->push_error = 0;
	}
	pthread_mutex_unlock(&s->lock);
	s->push_pending = true;
	session_set_meta(s);
}

void session_detach(struct session *s)
{
	if (s->sock < 0)
		return;
	if (s->w)
		epoll_ctl(s->w->ep, EPOLL_CTL_DEL, s->sock, NULL);
	store_remove("s%" PRIu64 ".conn", s->id);
	close(s->sock);
	s->sock = -1;
	for (size_t i = 0; i < s->outq_n; i++)
		free(s->outq[(s->outq_head + i) % UFFDD_OUTQ_MAX].buf);
	s->outq_n = 0;
	/* Nobody is left to answer. */
	s->bye_seq = 0;
	s->nwaits = 0;
	session_charge(s, 0, 0, NULL, 0);
	if (s->stranded)
		ulog(LOG_INFO,
		     "session %" PRIu64 " (pid %d, %s): its client left; %" PRIu64
		     " pages left, some it cannot give: it stays until its process is gone",
		     s->id, (int)s->pid, s->name[0] ? s->name : "unnamed",
		     s->uffd ? session_pages_left(s) : 0);
	else
		ulog(LOG_INFO,
		     "session %" PRIu64 " (pid %d, %s): its client left after Goodbye; the daemon "
		     "places the %" PRIu64 " pages left",
		     s->id, (int)s->pid, s->name[0] ? s->name : "unnamed",
		     s->uffd ? session_pages_left(s) : 0);
	if (s->ending)
		session_end(s, s->end_error, s->end_why);
}
