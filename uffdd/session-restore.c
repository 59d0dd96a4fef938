// SPDX-License-Identifier: MIT
/*
 * Sessions rebuilt after a restart: a session from its record and the
 * descriptors the fd store kept (its regions, sources and pins read back from
 * the record), and a fork child's userfaultfd stored without a record.  It
 * may call session.c (to make, publish, charge and free the session),
 * region.c, pins.c, state.c, state-now.c (pages lost, stranded), source.c,
 * store.c, log.c and util.c.
 */
#include <stdio.h>
#include <string.h>

#include "uffdd.h"

struct restore {
	struct session *s;
	char *why;
	size_t whylen;
};

static int restore_region(struct restore *x, const struct state_rec *rec, uint32_t slot)
{
	struct session *s = x->s;
	struct source *src;
	uint64_t npages = rec->len >> uffdd_page_shift;
	int r = source_new_from(rec->src, s->uid, rec->offset, rec->len,
				rec->flags & STATE_R_COVERED, &src);

	if (r < 0) {
		snprintf(x->why, x->whylen,
			 "region [%#" PRIx64 ", +%#" PRIx64 "): source f%" PRIu64 ": %s",
			 rec->start, rec->len, rec->src, strerror(-r));
		return r == -ENOMEM ? r : -EBADMSG;
	}
	struct region *g = calloc(1, sizeof(*g));
	if (!g || regions_reserve(s, 1) < 0) {
		free(g);
		source_unref(src);
		return -ENOMEM;
	}
	*g = (struct region){
		.start = rec->start,
		.len = rec->len,
		.npages = npages,
		.mode = rec->mode,
		.src = src,
		.offset = rec->offset,
		/* A finishing session pushes every region. */
		.push = (rec->flags & STATE_R_PUSH) || s->finishing,
		.ours = rec->flags & STATE_R_OURS,
		.huge = rec->flags & STATE_R_HUGE,
		.slot = slot,
		.populated = state_bm_at(s->st, rec->populated, npages),
		.zero = state_bm_at(s->st, rec->zero, npages),
		.dirty = rec->dirty ? state_bm_at(s->st, rec->dirty, npages) : NULL,
		.ra_next = UINT64_MAX,
		.ra_pages = 1,
	};
	/* Not to free: they stay in the record, which state_open() checked. */
	if (!g->populated || !g->zero || (rec->dirty && !g->dirty) ||
	    !(rec->mode & PIN_UFFD_REGISTER_WP) != !rec->dirty) {
		snprintf(x->why, x->whylen, "region [%#" PRIx64 ", +%#" PRIx64 "): bad bitmaps",
			 rec->start, rec->len);
		source_unref(src);
		free(g);
		return -EBADMSG;
	}
	atomic_init(&g->n_populated, bm_count(g->populated, 0, npages));
	atomic_init(&g->n_dirty, g->dirty ? bm_count(g->dirty, 0, npages) : 0);
	s->regions[s->nregions++] = g;
	if (g->push && g->n_populated < npages)
		s->push_pending = true;
	return 0;
}

static int restore_rec(const struct state_rec *rec, uint32_t slot, void *data)
{
	struct restore *x = data;
	struct session *s = x->s;

	if (rec->kind == STATE_REGION) {
		/* In slot order: kept sorted here, checked disjoint by state_open(). */
		if (s->nregions && s->regions[s->nregions - 1]->start > rec->start) {
			int r = restore_region(x, rec, slot);
			if (r < 0)
				return r;
			struct region *g = s->regions[--s->nregions];
			regions_insert_locked(s, g);
			return 0;
		}
		return restore_region(x, rec, slot);
	}
	if (session_pin_find(s, rec->offset) >= 0) {
		snprintf(x->why, x->whylen, "cookie %#" PRIx64 " pinned twice", rec->offset);
		return -EBADMSG;
	}
	int r = pins_reserve(&s->pins);
	if (r < 0)
		return r;
	pins_add(&s->pins, rec->start, rec->len, rec->offset, slot);
	s->pinned += rec->len;
	return 0;
}

int session_orphan(uint64_t id, int uffd, struct session **ret)
{
	struct session *s = session_alloc(-1, 0, 0);
	int r = -ENOMEM;

	if (!s) {
		close(uffd);
		return r;
	}
	s->id = id;
	s->forking = s->broken = true;
	/* The features it was made with are not known: the ioctls say. */
	r = pin_uffd_from_fd(uffd, 0, &s->uffd);
	if (r < 0) {
		close(uffd);
		session_free(s);
		return r;
	}
	r = session_state(s, 0);
	if (!r)
		r = store_put(state_fd(s->st), "s%" PRIu64 ".state", s->id);
	if (r < 0) {
		session_free(s);
		return r;
	}
	id_taken(s->id);
	session_publish(s);
	*ret = s;
	return 0;
}

int session_restore(struct state *st, int conn, int uffd, struct session **ret, char *why,
		    size_t whylen)
{
	const struct state_ident *id = state_ident(st);
	const struct state_meta *m = state_meta(st);
	struct session *s = session_alloc(conn, m->pid, (uid_t)id->uid);
	int r = -ENOMEM;

	if (!s) {
		state_free(st);
		if (conn >= 0)
			close(conn);
		if (uffd >= 0)
			close(uffd);
		return r;
	}
	s->id = id->id;
	s->st = st;
	s->hello = m->flags & STATE_HELLO;
	s->broken = m->flags & STATE_FORKING;
	s->finishing = m->flags & STATE_FINISHING;
	s->fc = m->flags & STATE_FC;
	s->fc_ready = m->flags & STATE_FC_READY;
	memcpy(s->name, m->name, sizeof(s->name));
	s->name[sizeof(s->name) - 1] = '\0';
	/* Pages lost before the restart make its end a failure still, and a
	 * stranded session stays stranded (its threads wait). */
	STAT_ADD(s->stats.unreadable, state_lost(st));
	const char *stranded = state_stranded(st);
	if (stranded) {
		s->stranded = true;
		snprintf(s->stranded_why, sizeof(s->stranded_why), "%s", stranded);
	}
	if (!(m->flags & STATE_UFFD) && uffd >= 0) {
		/* A handover the dead daemon stored but never committed: its
		 * client sends it again (Resume). */
		store_remove("s%" PRIu64 ".uffd", s->id);
		close(uffd);
		uffd = -1;
	}
	if ((m->flags & STATE_UFFD) && uffd < 0) {
		snprintf(why, whylen, "the record says a userfaultfd, the store has none");
		r = -EBADMSG;
	} else if (!id->parent && !(m->flags & (STATE_FORKING | STATE_FINISHING)) && !stranded &&
		   conn < 0) {
		snprintf(why, whylen, "a client's session without its connection");
		r = -EBADMSG;
	} else if (uffd >= 0 && (r = pin_uffd_from_fd(uffd, m->features, &s->uffd)) < 0) {
		snprintf(why, whylen, "its userfaultfd: %s", strerror(-r));
	} else {
		uffd = -1;
		struct restore x = { s, why, whylen };
		r = state_foreach(st, restore_rec, &x);
	}
	if (r < 0) {
		if (uffd >= 0)
			close(uffd);
		session_free(s);
		return r;
	}
	id_taken(s->id);
	/* What it held before the restart it holds still: past the limits too. */
	session_charge(s, (int64_t)s->nregions, (int64_t)s->pinned, NULL, 0);
	session_publish(s);
	*ret = s;
	return 0;
}
