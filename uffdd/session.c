// SPDX-License-Identifier: MIT
/*
 * Sessions: identity, regions, pins, counters, per-uid limits, and what the
 * layers above read and keep in them: which pages are in place, the recorded
 * working set, the queue of Prefetch requests.  Below every file that serves
 * requests or faults, it may call source.c, notify.c (the status line), log.c
 * and util.c.
 */
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>

#include "uffdd.h"

struct uid_use {
	uid_t uid;
	uint64_t regions, pinned;
};

/* Guards the session list and the per-uid table (control plane only). */
static pthread_mutex_t glock = PTHREAD_MUTEX_INITIALIZER;
static struct session *all;
static struct uid_use *uses;
static size_t nuses;
static uint64_t next_id = 1;
static _Atomic unsigned int count;

/* ---- regions ---- */

#define NO_SLOT UINT32_MAX

/* Bitmaps of npages in the session's record, zeroed (the dirty one for WP). */
static int region_bitmaps(struct session *s, struct region *r)
{
	r->populated = state_bm_new(s->st, r->npages);
	r->zero = state_bm_new(s->st, r->npages);
	if (r->mode & PIN_UFFD_REGISTER_WP)
		r->dirty = state_bm_new(s->st, r->npages);
	if (!r->populated || !r->zero || ((r->mode & PIN_UFFD_REGISTER_WP) && !r->dirty))
		return -ENOMEM;
	return 0;
}

struct region *region_new(struct session *s, uint64_t start, uint64_t len, uint32_t mode,
			  struct source *src, uint64_t offset, bool push)
{
	struct region *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->start = start;
	r->len = len;
	r->npages = len >> uffdd_page_shift;
	r->mode = mode;
	r->offset = offset;
	r->push = push;
	r->slot = NO_SLOT;
	r->ra_next = UINT64_MAX;
	r->ra_pages = 1;
	if (region_bitmaps(s, r) < 0) {
		region_free(s, r);
		return NULL;
	}
	r->src = source_ref(src);
	return r;
}

void region_free(struct session *s, struct region *r)
{
	if (!r)
		return;
	if (s->st) {
		if (r->slot != NO_SLOT)
			state_del(s->st, r->slot);
		state_bm_free(s->st, r->populated, r->npages);
		state_bm_free(s->st, r->zero, r->npages);
		state_bm_free(s->st, r->dirty, r->npages);
	}
	source_unref(r->src);
	free(r);
}

/* Add r to the record (it takes effect at the next commit). */
static int region_record(struct session *s, struct region *r)
{
	struct state_rec rec = {
		.kind = STATE_REGION,
		.mode = r->mode,
		.flags = (r->push ? STATE_R_PUSH : 0) | (r->ours ? STATE_R_OURS : 0),
		.start = r->start,
		.len = r->len,
		.offset = r->offset,
		.src = source_file_id(r->src),
		.populated = state_bm_off(s->st, r->populated),
		.zero = state_bm_off(s->st, r->zero),
		.dirty = r->dirty ? state_bm_off(s->st, r->dirty) : 0,
	};

	return state_add(s->st, &rec, &r->slot);
}

/* The pages [from, from + n) of r as a region of s (r's session, or a fork
 * child's) at start, not recorded yet. */
static struct region *region_part(struct session *s, const struct region *r, uint64_t from,
				  uint64_t n, uint64_t start)
{
	struct region *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	*p = *r;
	p->start = start;
	p->len = n << uffdd_page_shift;
	p->npages = n;
	p->slot = NO_SLOT;
	p->offset = r->offset + (from << uffdd_page_shift);
	p->push_next = r->push_next > from ? r->push_next - from : 0;
	p->ra_next = UINT64_MAX;
	p->ra_pages = 1;
	p->populated = p->zero = p->dirty = NULL;
	p->src = NULL;
	if (region_bitmaps(s, p) < 0) {
		region_free(s, p);
		return NULL;
	}
	bm_copy(p->populated, r->populated, from, n);
	bm_copy(p->zero, r->zero, from, n);
	if (r->dirty)
		bm_copy(p->dirty, r->dirty, from, n);
	atomic_init(&p->n_populated, bm_count(p->populated, 0, n));
	atomic_init(&p->n_dirty, p->dirty ? bm_count(p->dirty, 0, n) : 0);
	p->src = source_ref(r->src);
	return p;
}

size_t session_first_after(const struct session *s, uint64_t addr)
{
	size_t lo = 0, hi = s->nregions;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (s->regions[mid]->start + s->regions[mid]->len <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct region *session_overlap(struct session *s, size_t *i, uint64_t start, uint64_t end,
			       uint64_t *ret_first, uint64_t *ret_n)
{
	if (*i >= s->nregions || s->regions[*i]->start >= end)
		return NULL;
	struct region *r = s->regions[(*i)++];
	uint64_t a = r->start > start ? r->start : start;
	uint64_t b = r->start + r->len < end ? r->start + r->len : end;
	*ret_first = (a - r->start) >> uffdd_page_shift;
	*ret_n = (b - a) >> uffdd_page_shift;
	return r;
}

struct region *session_find(struct session *s, uint64_t addr)
{
	size_t i = session_first_after(s, addr);

	if (i < s->nregions && s->regions[i]->start <= addr)
		return s->regions[i];
	return NULL;
}

/* Room for n more regions, so that inserting cannot fail half way. */
static int reserve(struct session *s, size_t n)
{
	struct region **v = realloc(s->regions, (s->nregions + n) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	s->regions = v;
	return 0;
}

/* Insert into reserved room; the caller checked for overlaps. */
static void insert_locked(struct session *s, struct region *r)
{
	size_t i = session_first_after(s, r->start);

	memmove(&s->regions[i + 1], &s->regions[i], (s->nregions - i) * sizeof(r));
	s->regions[i] = r;
	s->nregions++;
}

int session_insert(struct session *s, struct region *r)
{
	size_t i = session_first_after(s, r->start);

	if (i < s->nregions && s->regions[i]->start < r->start + r->len)
		return -EEXIST;
	pthread_mutex_lock(&s->lock);
	int ret = reserve(s, 1);
	if (!ret)
		ret = region_record(s, r);
	if (!ret)
		insert_locked(s, r);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* Replace the region at i by its parts outside [a, b); the part inside,
 * shifted by move, goes to *ret_mid when move is not 0. */
static int cut_one(struct session *s, size_t i, uint64_t a, uint64_t b, int64_t move,
		   struct region **ret_mid)
{
	struct region *r = s->regions[i], *head = NULL, *tail = NULL, *mid = NULL;
	uint64_t fa = (a - r->start) >> uffdd_page_shift, fb = (b - r->start) >> uffdd_page_shift;

	if (reserve(s, 1) < 0 || (fa && !(head = region_part(s, r, 0, fa, r->start))) ||
	    (fb < r->npages && !(tail = region_part(s, r, fb, r->npages - fb, b))) ||
	    (move && !(mid = region_part(s, r, fa, fb - fa, (uint64_t)((int64_t)a + move)))) ||
	    (head && region_record(s, head) < 0) || (tail && region_record(s, tail) < 0)) {
		region_free(s, head);
		region_free(s, tail);
		region_free(s, mid);
		return -ENOMEM;
	}
	memmove(&s->regions[i], &s->regions[i + 1], (s->nregions - i - 1) * sizeof(r));
	s->nregions--;
	region_free(s, r);
	if (head)
		insert_locked(s, head);
	if (tail)
		insert_locked(s, tail);
	*ret_mid = mid;
	return (int)(fb - fa);
}

int session_cut(struct session *s, uint64_t start, uint64_t end, int64_t move, bool unregister)
{
	struct region **moved = NULL;
	size_t nmoved = 0;
	int cut = 0, ret = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = session_first_after(s, start); i < s->nregions;) {
		struct region *r = s->regions[i], *mid = NULL;
		if (r->start >= end)
			break;
		uint64_t a = r->start > start ? r->start : start;
		uint64_t b = r->start + r->len < end ? r->start + r->len : end;
		struct region **m = realloc(moved, (nmoved + 1) * sizeof(*m));
		if (!m) {
			ret = -ENOMEM;
			break;
		}
		moved = m;
		if (unregister && r->ours && s->uffd)
			pin_uffd_unregister(s->uffd, (void *)(uintptr_t)a, b - a);
		ret = cut_one(s, i, a, b, move, &mid);
		if (ret < 0)
			break;
		cut += ret;
		if (mid)
			moved[nmoved++] = mid;
		i = session_first_after(s, b);
	}
	for (size_t k = 0; k < nmoved; k++) {
		struct region *r = moved[k];
		size_t i = session_first_after(s, r->start);
		if ((i < s->nregions && s->regions[i]->start < r->start + r->len) ||
		    reserve(s, 1) < 0 || region_record(s, r) < 0) {
			ulog(LOG_WARNING,
			     "session %" PRIu64 ": region moved to [%#" PRIx64 ", +%#" PRIx64
			     ") overlaps another or no memory; dropped",
			     s->id, r->start, r->len);
			region_free(s, r);
			continue;
		}
		insert_locked(s, r);
	}
	pthread_mutex_unlock(&s->lock);
	free(moved);
	if (ret < 0) {
		ulog(LOG_ERR, "session %" PRIu64 ": cut [%#" PRIx64 ", %#" PRIx64 "): %s", s->id,
		     start, end, strerror(-ret));
		return ret;
	}
	return cut;
}

/* ---- sessions ---- */

static struct uid_use *use_of(uid_t uid, bool create)
{
	for (size_t i = 0; i < nuses; i++)
		if (uses[i].uid == uid)
			return &uses[i];
	if (!create)
		return NULL;
	struct uid_use *u = realloc(uses, (nuses + 1) * sizeof(*u));
	if (!u)
		return NULL;
	uses = u;
	uses[nuses] = (struct uid_use){ .uid = uid };
	return &uses[nuses++];
}

int session_charge(struct session *s, int64_t regions, int64_t pinned, char *why, size_t whylen)
{
	int ret = 0;

	pthread_mutex_lock(&glock);
	struct uid_use *u = use_of(s->uid, true);
	if (!why) {
		if (u) {
			u->regions += (uint64_t)regions;
			u->pinned += (uint64_t)pinned;
		}
	} else if (!u) {
		ret = -ENOMEM;
		snprintf(why, whylen, "out of memory");
	} else if (regions > 0 && uffdd_cfg.max_regions_per_uid &&
		   u->regions + (uint64_t)regions > uffdd_cfg.max_regions_per_uid) {
		ret = -EDQUOT;
		snprintf(why, whylen, "uid %u has %" PRIu64 " regions, the limit is %u", s->uid,
			 u->regions, uffdd_cfg.max_regions_per_uid);
	} else if (pinned > 0 && uffdd_cfg.max_pinned_per_uid &&
		   u->pinned + (uint64_t)pinned > uffdd_cfg.max_pinned_per_uid) {
		ret = -EDQUOT;
		snprintf(why, whylen, "uid %u has %" PRIu64 " bytes pinned, the limit is %" PRIu64,
			 s->uid, u->pinned, uffdd_cfg.max_pinned_per_uid);
	} else {
		u->regions += (uint64_t)regions;
		u->pinned += (uint64_t)pinned;
	}
	pthread_mutex_unlock(&glock);
	return ret;
}

static struct session *session_alloc(int sock, pid_t pid, uid_t uid)
{
	struct session *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->sock = sock;
	s->pid = pid;
	s->uid = uid;
	s->wsock = (struct watch){ .s = s };
	s->wuffd = (struct watch){ .s = s };
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

static uint64_t take_id(void)
{
	pthread_mutex_lock(&glock);
	uint64_t id = next_id++;
	pthread_mutex_unlock(&glock);
	return id;
}

/* The session's record, new, with its identity; parent: a fork child's. */
static int session_state(struct session *s, uint64_t parent)
{
	struct state_ident ident = { .id = s->id, .parent = parent, .uid = s->uid };

	if (getrandom(ident.token, sizeof(ident.token), 0) != sizeof(ident.token))
		return -errno;
	int r = state_new(&ident, uffdd_cfg.max_state_bytes, &s->st);
	if (r < 0)
		return r;
	session_set_meta(s);
	return state_commit(s->st, 0, NULL, 0);
}

/*
 * Hand the session's descriptors to the fd store: the record, the
 * connection (a client's session) and the userfaultfd (once it has one).
 */
static int session_store(struct session *s)
{
	int r = store_put(state_fd(s->st), "s%" PRIu64 ".state", s->id);

	if (!r && s->sock >= 0)
		r = store_put(s->sock, "s%" PRIu64 ".conn", s->id);
	if (!r && s->uffd)
		r = store_put(pin_uffd_fd(s->uffd), "s%" PRIu64 ".uffd", s->id);
	if (r < 0)
		slog(s, LOG_ERR, "the fd store refused it: %s", strerror(-r));
	return r;
}

static void session_unstore(struct session *s)
{
	store_remove("s%" PRIu64 ".state", s->id);
	if (s->sock >= 0)
		store_remove("s%" PRIu64 ".conn", s->id);
	if (s->uffd)
		store_remove("s%" PRIu64 ".uffd", s->id);
}

/*
 * Make s visible to other threads (inspection walks the global list from any
 * worker) and to the counts.  Only a complete session is published: one
 * filled while listed could be read half made.
 */
static void session_publish(struct session *s)
{
	pthread_mutex_lock(&glock);
	s->gnext = all;
	all = s;
	s->listed = true;
	pthread_mutex_unlock(&glock);
	atomic_fetch_add(&count, 1);
	notify_status(sessions_count());
}

int session_new(int sock, pid_t pid, uid_t uid, struct session **ret)
{
	struct session *s = session_alloc(sock, pid, uid);

	if (!s)
		return -ENOMEM;
	s->id = take_id();
	int r = session_state(s, 0);
	if (r < 0 || (r = session_store(s)) < 0) {
		session_unstore(s);
		s->sock = -1; /* the caller's still */
		session_free(s);
		return r;
	}
	session_publish(s);
	*ret = s;
	return 0;
}

int session_fork(struct session *parent, int fd, struct session **ret)
{
	struct session *s = session_alloc(-1, 0, parent->uid);

	if (!s) {
		close(fd);
		return -ENOMEM;
	}
	s->id = take_id();
	snprintf(s->name, sizeof(s->name), "%.50s (fork)", parent->name);
	int r = pin_uffd_from_fd(fd, pin_uffd_features(parent->uffd), &s->uffd);
	if (r < 0) {
		close(fd);
		session_free(s);
		return r;
	}
	r = session_state(s, parent->id);
	for (size_t i = 0; !r && i < parent->nregions; i++) {
		struct region *p = parent->regions[i];
		struct region *c = region_part(s, p, 0, p->npages, p->start);
		if (!c || reserve(s, 1) < 0 || region_record(s, c) < 0) {
			region_free(s, c);
			r = -ENOMEM;
			break;
		}
		insert_locked(s, c);
	}
	if (!r)
		r = session_commit(s, 0, NULL, 0);
	if (r < 0 || (r = session_store(s)) < 0) {
		session_unstore(s);
		session_free(s);
		return r;
	}
	/* A fork cannot be refused: count the regions even past the limit. */
	session_charge(s, (int64_t)s->nregions, 0, NULL, 0);
	session_publish(s);
	*ret = s;
	return 0;
}

void session_set_meta(struct session *s)
{
	struct state_meta m = {
		.pid = s->pid,
		.flags = (s->hello ? STATE_HELLO : 0) | (s->uffd ? STATE_UFFD : 0),
		.features = s->uffd ? pin_uffd_features(s->uffd) : 0,
	};

	memcpy(m.name, s->name, sizeof(m.name));
	state_set_meta(s->st, &m);
}

int session_commit(struct session *s, uint64_t seq, const void *reply, size_t len)
{
	/* What an event changed while a request is handled goes with the
	 * request's reply. */
	if (!seq && s->in_request)
		return 0;
	int r = state_commit(s->st, seq, reply, len);
	if (r < 0)
		slog(s, LOG_ERR, "committing its record: %s", strerror(-r));
	return r;
}

int session_pin_add(struct session *s, uint64_t addr, uint64_t len, uint64_t cookie)
{
	struct state_rec rec = { .kind = STATE_PIN, .start = addr, .len = len, .offset = cookie };
	uint32_t slot;
	int r = state_add(s->st, &rec, &slot);

	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	struct pin_rec *v = realloc(s->pins, (s->npins + 1) * sizeof(*v));
	if (v) {
		s->pins = v;
		v[s->npins++] = (struct pin_rec){ addr, len, cookie, slot };
		s->pinned += len;
	}
	pthread_mutex_unlock(&s->lock);
	if (!v) {
		state_del(s->st, slot);
		return -ENOMEM;
	}
	return 0;
}

void session_pin_del(struct session *s, size_t i)
{
	state_del(s->st, s->pins[i].slot);
	pthread_mutex_lock(&s->lock);
	s->pinned -= s->pins[i].len;
	s->pins[i] = s->pins[--s->npins];
	pthread_mutex_unlock(&s->lock);
}

/* ---- sessions rebuilt from the fd store ---- */

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
	int r = source_new_from(rec->src, rec->offset, rec->len, &src);

	if (r < 0) {
		snprintf(x->why, x->whylen,
			 "region [%#" PRIx64 ", +%#" PRIx64 "): source f%" PRIu64 ": %s",
			 rec->start, rec->len, rec->src, strerror(-r));
		return r == -ENOMEM ? r : -EBADMSG;
	}
	struct region *g = calloc(1, sizeof(*g));
	if (!g || reserve(s, 1) < 0) {
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
		.push = rec->flags & STATE_R_PUSH,
		.ours = rec->flags & STATE_R_OURS,
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
			insert_locked(s, g);
			return 0;
		}
		return restore_region(x, rec, slot);
	}
	struct pin_rec *v = realloc(s->pins, (s->npins + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->pins = v;
	v[s->npins++] = (struct pin_rec){ rec->start, rec->len, rec->offset, slot };
	s->pinned += rec->len;
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
	memcpy(s->name, m->name, sizeof(s->name));
	s->name[sizeof(s->name) - 1] = '\0';
	if (!(m->flags & STATE_UFFD) != (uffd < 0)) {
		snprintf(why, whylen, "the record says %s userfaultfd, the store has %s",
			 m->flags & STATE_UFFD ? "a" : "no", uffd >= 0 ? "one" : "none");
		r = -EBADMSG;
	} else if (!id->parent && conn < 0) {
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
	pthread_mutex_lock(&glock);
	if (s->id >= next_id)
		next_id = s->id + 1;
	pthread_mutex_unlock(&glock);
	/* What it held before the restart it holds still: past the limits too. */
	session_charge(s, (int64_t)s->nregions, (int64_t)s->pinned, NULL, 0);
	session_publish(s);
	*ret = s;
	return 0;
}

void session_kill(struct session *s, const char *why)
{
	if (!s->dead)
		ulog(LOG_INFO, "session %" PRIu64 " (pid %d, %s): %s", s->id, (int)s->pid,
		     s->name[0] ? s->name : "unnamed", why);
	s->dead = true;
}

/* Take a published session off the list and give back what it was charged. */
static void session_unpublish(struct session *s)
{
	pthread_mutex_lock(&glock);
	for (struct session **p = &all; *p; p = &(*p)->gnext) {
		if (*p == s) {
			*p = s->gnext;
			break;
		}
	}
	struct uid_use *u = use_of(s->uid, false);
	if (u) {
		u->regions -= s->nregions < u->regions ? s->nregions : u->regions;
		u->pinned -= s->pinned < u->pinned ? s->pinned : u->pinned;
	}
	pthread_mutex_unlock(&glock);
	atomic_fetch_sub(&count, 1);
}

void session_free(struct session *s)
{
	/* One never published (a fork child that failed half made) was never
	 * charged either. */
	if (s->listed) {
		session_unpublish(s);
		session_unstore(s);
	}

	if (s->w) {
		if (s->sock >= 0)
			epoll_ctl(s->w->ep, EPOLL_CTL_DEL, s->sock, NULL);
		if (s->uffd)
			epoll_ctl(s->w->ep, EPOLL_CTL_DEL, pin_uffd_fd(s->uffd), NULL);
	}
	if (s->sock >= 0)
		close(s->sock);
	/* Closing the userfaultfd wakes the client's blocked threads: they
	 * fault again as if it had never been registered. */
	pin_uffd_free(s->uffd);
	/* The record goes whole: no region needs taking out of it. */
	state_free(s->st);
	s->st = NULL;
	for (size_t i = 0; i < s->nregions; i++)
		region_free(s, s->regions[i]);
	free(s->regions);
	free(s->pins);
	free(s->faults);
	free(s->waits);
	free(s->prefetch);
	for (size_t i = 0; i < s->nreplays; i++)
		free(s->replays[i].v);
	free(s->replays);
	pthread_mutex_destroy(&s->lock);
	free(s);
	notify_status(sessions_count());
}

/* ---- what is in place, what to place ---- */

void session_record(struct session *s, uint64_t addr, uint64_t end)
{
	/* Full: the faults are served, just not recorded. */
	state_wset_add(s->st, addr, end);
}

int session_prefetch_add(struct session *s, uint64_t addr, uint64_t len)
{
	size_t i = session_first_after(s, addr);

	if (i == s->nregions || s->regions[i]->start >= addr + len)
		return -ENOENT;
	struct prefetch *p = realloc(s->prefetch, (s->nprefetch + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	s->prefetch = p;
	p[s->nprefetch++] = (struct prefetch){ addr, addr + len };
	return 0;
}

void sessions_lock(void)
{
	pthread_mutex_lock(&glock);
}

void sessions_unlock(void)
{
	pthread_mutex_unlock(&glock);
}

struct session *sessions_get_locked(uint64_t id)
{
	for (struct session *s = all; s; s = s->gnext)
		if (s->id == id)
			return s;
	return NULL;
}

void sessions_foreach(void (*fn)(struct session *s, void *data), void *data)
{
	pthread_mutex_lock(&glock);
	for (struct session *s = all; s; s = s->gnext)
		fn(s, data);
	pthread_mutex_unlock(&glock);
}

unsigned int sessions_count(void)
{
	return atomic_load(&count);
}

/* Adds s's counters to out (and lat, UFFDD_LAT_BUCKETS entries). */
void session_stats_fill(struct session *s, Uffdd__Stats *out, uint64_t *lat)
{
	const struct stats *st = &s->stats;
	uint64_t total = 0, populated = 0;

#define ADD(f)                                                                                     \
	do {                                                                                       \
		out->f += STAT_GET(st->f);                                                         \
		out->has_##f = true;                                                               \
	} while (0)
	ADD(faults);
	ADD(pages_copied);
	ADD(pages_zeroed);
	ADD(bytes_copied);
	ADD(pages_pushed);
	ADD(wp_faults);
	ADD(eagain);
	ADD(eexist);
#undef ADD
	for (unsigned int i = 0; i < UFFDD_LAT_BUCKETS; i++)
		lat[i] += STAT_GET(st->lat[i]);
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nregions; i++) {
		total += s->regions[i]->npages;
		populated += STAT_GET(s->regions[i]->n_populated);
	}
	pthread_mutex_unlock(&s->lock);
	out->pages_total += total;
	out->has_pages_total = true;
	out->pages_populated += populated;
	out->has_pages_populated = true;
}
