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

struct region *region_new(uint64_t start, uint64_t len, uint32_t mode, struct source *src,
			  uint64_t offset, bool push)
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
	r->ra_next = UINT64_MAX;
	r->ra_pages = 1;
	r->populated = bm_new(r->npages);
	if (mode & PIN_UFFD_REGISTER_WP)
		r->dirty = bm_new(r->npages);
	if (!r->populated || ((mode & PIN_UFFD_REGISTER_WP) && !r->dirty)) {
		region_free(r);
		return NULL;
	}
	r->src = source_ref(src);
	return r;
}

void region_free(struct region *r)
{
	if (!r)
		return;
	source_unref(r->src);
	free(r->populated);
	free(r->zero);
	free(r->dirty);
	free(r);
}

/* The pages [from, from + n) of r as a region of their own at start. */
static struct region *region_part(const struct region *r, uint64_t from, uint64_t n, uint64_t start)
{
	struct region *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	*p = *r;
	p->start = start;
	p->len = n << uffdd_page_shift;
	p->npages = n;
	p->offset = r->offset + (from << uffdd_page_shift);
	p->push_next = r->push_next > from ? r->push_next - from : 0;
	p->ra_next = UINT64_MAX;
	p->ra_pages = 1;
	p->populated = bm_slice(r->populated, from, n);
	p->zero = r->zero ? bm_slice(r->zero, from, n) : NULL;
	p->dirty = r->dirty ? bm_slice(r->dirty, from, n) : NULL;
	atomic_init(&p->n_populated, bm_count(p->populated, 0, n));
	atomic_init(&p->n_dirty, p->dirty ? bm_count(p->dirty, 0, n) : 0);
	if (!p->populated || (r->zero && !p->zero) || (r->dirty && !p->dirty)) {
		p->src = NULL;
		region_free(p);
		return NULL;
	}
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

	if (reserve(s, 1) < 0 || (fa && !(head = region_part(r, 0, fa, r->start))) ||
	    (fb < r->npages && !(tail = region_part(r, fb, r->npages - fb, b))) ||
	    (move && !(mid = region_part(r, fa, fb - fa, (uint64_t)((int64_t)a + move))))) {
		region_free(head);
		region_free(tail);
		return -ENOMEM;
	}
	memmove(&s->regions[i], &s->regions[i + 1], (s->nregions - i - 1) * sizeof(r));
	s->nregions--;
	region_free(r);
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
		    reserve(s, 1) < 0) {
			ulog(LOG_WARNING,
			     "session %" PRIu64 ": region moved to [%#" PRIx64 ", +%#" PRIx64
			     ") overlaps another or no memory; dropped",
			     s->id, r->start, r->len);
			region_free(r);
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

/*
 * Make s visible to other threads (inspection walks the global list from any
 * worker) and to the counts.  Only a complete session is published: one
 * filled while listed could be read half made.
 */
static void session_publish(struct session *s)
{
	pthread_mutex_lock(&glock);
	s->id = next_id++;
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
	snprintf(s->name, sizeof(s->name), "%.50s (fork)", parent->name);
	int r = pin_uffd_from_fd(fd, pin_uffd_features(parent->uffd), &s->uffd);
	if (r < 0) {
		close(fd);
		session_free(s);
		return r;
	}
	for (size_t i = 0; i < parent->nregions; i++) {
		struct region *p = parent->regions[i];
		struct region *c = region_part(p, 0, p->npages, p->start);
		if (!c || reserve(s, 1) < 0) {
			region_free(c);
			session_free(s);
			return -ENOMEM;
		}
		insert_locked(s, c);
	}
	/* A fork cannot be refused: count the regions even past the limit. */
	session_charge(s, (int64_t)s->nregions, 0, NULL, 0);
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
	if (s->listed)
		session_unpublish(s);

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
	for (size_t i = 0; i < s->nregions; i++)
		region_free(s->regions[i]);
	free(s->regions);
	free(s->pins);
	free(s->faults);
	free(s->waits);
	free(s->prefetch);
	free(s->wset);
	pthread_mutex_destroy(&s->lock);
	free(s);
	notify_status(sessions_count());
}

/* ---- what is in place, what to place ---- */

uint64_t session_populated(struct session *s, uint64_t addr, uint64_t len, uint64_t *ret_total)
{
	size_t i = session_first_after(s, addr);
	uint64_t total = 0, done = 0, fa, n;

	for (struct region *r; (r = session_overlap(s, &i, addr, addr + len, &fa, &n));) {
		total += n;
		if (!r->zero) {
			done += bm_count(r->populated, fa, n);
			continue;
		}
		for (uint64_t k = fa; k < fa + n; k++)
			done += done_page(r, k);
	}
	*ret_total = total;
	return done;
}

void session_record(struct session *s, uint64_t addr, uint64_t end)
{
	/* Sequential faults grow one run instead of adding runs. */
	if (s->nwset && s->wset[s->nwset - 1].end == addr) {
		s->wset[s->nwset - 1].end = end;
		return;
	}
	if (s->nwset == s->wset_cap) {
		/* Full, or no memory: the faults are served, just not recorded. */
		size_t cap = s->wset_cap ? 2 * s->wset_cap : 1024;
		struct prefetch *p =
			cap <= UFFDD_WSET_MAX ? realloc(s->wset, cap * sizeof(*p)) : NULL;
		if (!p)
			return;
		s->wset = p;
		s->wset_cap = cap;
	}
	s->wset[s->nwset++] = (struct prefetch){ addr, end };
}

int session_prefetch_add(struct session *s, uint64_t addr, uint64_t len)
{
	uint64_t total;

	session_populated(s, addr, len, &total);
	if (!total)
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
