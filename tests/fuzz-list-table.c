// SPDX-License-Identifier: MIT
/*
 * fuzz-list's session table (see fuzz-list.h): what session-table.c,
 * session.c and source.c give inspect.c, over sessions kept here, their pins
 * in pins.c's set as the daemon keeps them.  The base (FZ_BASE sessions, a few of them with more
 * entries than a page holds, half of them with the largest values) is built
 * once; an input's changes mark the base sessions they touch, and
 * fz_table_reset() copies those back from what was built and frees what the
 * input added, so an input costs what it changes and lists, not the table.
 * A session, region or pin array taken out is poisoned until then: inspect.c
 * reading one is reported as a read of freed memory would be.
 *
 * None of it is what is fuzzed: tests/fuzz-list-untraced.txt leaves the file
 * without coverage feedback.
 */
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>

#include "fuzz-common.h"
#include "fuzz-list.h"

/* Regions the input adds: its sessions' and one per change at most. */
#define FZ_POOL (FZ_ADDED * FZ_FEW + FZ_CHANGES)
/* The base's ids: the first half from 1, the second half (the largest
 * values) up to where the input's sessions take the last ids there are. */
#define FZ_HALF	      (FZ_BASE / 2)
#define FZ_BASE_LAST  (UINT64_MAX - FZ_ADDED)
#define FZ_HUGE_FIRST 5 /* of each half, three sessions of FZ_ENTRIES each */
#define FZ_HUGE	      3

bool fz_walking, fz_big;

static struct fz_session *base[FZ_BASE];
/* The live sessions in id order, and the list inspect.c follows (gnext). */
static struct session *order[FZ_BASE + FZ_ADDED];
static size_t norder;
static uint64_t next_id;
/* What the input added, changed or took out. */
static struct fz_session *added[FZ_ADDED];
static size_t nadded;
static struct fz_session *dirty[FZ_BASE];
static size_t ndirty;
static struct fz_session *removed[FZ_CHANGES];
static size_t nremoved;
static struct region *gone[FZ_CHANGES];
static size_t ngone;
static struct region *pool;
static size_t pool_used;
static char fd_source; /* what a region with a file source points to */

/* ---- what inspect.c calls ---- */

void sessions_lock(void)
{
}

void sessions_unlock(void)
{
}

struct session *sessions_get_locked(uint64_t id)
{
	return fz_session_get(id);
}

struct session *sessions_from_locked(uint64_t id)
{
	size_t i = fz_index_from(id);

	return i < norder ? order[i] : NULL;
}

void sessions_foreach(void (*fn)(struct session *s, void *data), void *data)
{
	for (size_t i = 0; i < norder; i++)
		fn(order[i], data);
}

/* Each counter of a session holds its faults (the largest values for a
 * session of the largest). */
void session_stats_fill(struct session *s, Uffdd__Stats *out, uint64_t *lat)
{
	uint64_t v = STAT_GET(s->stats.faults);

	out->has_faults = out->has_pages_copied = out->has_pages_zeroed = out->has_bytes_copied =
		out->has_pages_pushed = out->has_wp_faults = out->has_eagain = out->has_eexist =
			out->has_pages_total = out->has_pages_populated = true;
	out->faults = out->pages_copied = out->pages_zeroed = out->bytes_copied =
		out->pages_pushed = out->wp_faults = out->eagain = out->eexist = out->pages_total =
			out->pages_populated = v;
	for (size_t i = 0; i < UFFDD_LAT_BUCKETS; i++)
		lat[i] = v;
}

bool source_is_zero(const struct source *s)
{
	return !s;
}

/* The table's sources are all files (or zero). */
struct remote *source_remote(const struct source *s)
{
	(void)s;
	return NULL;
}

/* WorkingSetGet's (inspect.c's other request), not asked here. */
const struct state_range *state_wset(const struct state *st, size_t *ret_n)
{
	*ret_n = 0;
	return NULL;
}

/* ---- the live sessions ---- */

size_t fz_nsessions(void)
{
	return norder;
}

struct session *fz_session_at(size_t i)
{
	return order[i];
}

size_t fz_index_from(uint64_t id)
{
	size_t lo = 0, hi = norder;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (order[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct session *fz_session_get(uint64_t id)
{
	size_t i = fz_index_from(id);

	return i < norder && order[i]->id == id ? order[i] : NULL;
}

static void *xmemdup(const void *p, size_t n)
{
	void *q;

	if (!n)
		return NULL;
	q = malloc(n);
	if (!q)
		fuzz_die("malloc");
	return memcpy(q, p, n);
}

static void link_tail(struct session *s)
{
	if (norder)
		order[norder - 1]->gnext = s;
	s->gnext = NULL;
	order[norder++] = s;
}

static struct fz_session *fz_new(uint64_t id, uid_t uid, bool big)
{
	struct fz_session *x = calloc(1, sizeof(*x));
	struct session *s = &x->s;

	if (!x)
		fuzz_die("calloc");
	pthread_mutex_init(&s->lock, NULL);
	s->id = id;
	s->uid = uid;
	s->pid = big ? -1 : (pid_t)id;
	memset(s->name, big ? '~' : 'n', big ? sizeof(s->name) - 1 : 1);
	/* The treap's shape is the table's to choose, not getrandom()'s: a
	 * crash reproduces. */
	s->pins.prio_state = id | 1;
	STAT_ADD(s->stats.faults, big ? UINT64_MAX : id);
	return x;
}

/* An input's change to a base session: undone by fz_table_reset(). */
static void touch(struct fz_session *x)
{
	if (x->base && !x->dirty) {
		x->dirty = true;
		dirty[ndirty++] = x;
	}
}

/* Room for one more region in s's arrays. */
static void regions_grow(struct fz_session *x)
{
	struct session *s = &x->s;

	if (s->nregions < x->regions_cap)
		return;
	x->regions_cap = x->regions_cap ? 2 * x->regions_cap : FZ_FEW;
	s->regions = realloc(s->regions, x->regions_cap * sizeof(*s->regions));
	x->regions = realloc(x->regions, x->regions_cap * sizeof(*x->regions));
	if (!s->regions || !x->regions)
		fuzz_die("realloc");
}

size_t fz_region_from(const struct session *s, uint64_t start)
{
	size_t lo = 0, hi = s->nregions;

	if (!hi || s->regions[hi - 1]->start < start)
		return hi;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->regions[mid]->start < start)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* r, at page index pg, into s unless a region starts there; false if not. */
static bool region_insert(struct fz_session *x, struct region *r, uint64_t pg, bool big)
{
	struct session *s = &x->s;
	uint64_t start = (big ? pg | 1ull << 44 : pg) << FZ_PAGE_SHIFT;
	size_t i = fz_region_from(s, start);

	if (s->nregions >= FZ_ENTRIES || (i < s->nregions && s->regions[i]->start == start))
		return false;
	memset(r, 0, sizeof(*r));
	r->start = start;
	r->len = r->npages = 1;
	r->len <<= FZ_PAGE_SHIFT;
	r->mode = big ? UINT32_MAX : PIN_UFFD_REGISTER_MISSING;
	r->src = pg & 1 ? (struct source *)&fd_source : NULL;
	STAT_ADD(r->n_populated, big ? UINT64_MAX : pg & 1);
	STAT_ADD(r->n_dirty, big ? UINT64_MAX : 0);
	regions_grow(x);
	memmove(s->regions + i + 1, s->regions + i, (s->nregions - i) * sizeof(*s->regions));
	memmove(x->regions + i + 1, x->regions + i, (s->nregions - i) * sizeof(*x->regions));
	s->regions[i] = r;
	x->regions[i] = (struct mark){ .during = fz_walking };
	s->nregions++;
	return true;
}

size_t fz_pin_from(const struct session *s, uint64_t cookie)
{
	const struct fz_session *x = (const struct fz_session *)s;
	size_t lo = 0, hi = x->npins;

	if (!hi || x->pins[hi - 1].cookie < cookie)
		return hi;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (x->pins[mid].cookie < cookie)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* A pin with this cookie into s->pins and the table's own array, unless s
 * has one; false if not. */
static bool pin_insert(struct fz_session *x, uint64_t cookie, bool big)
{
	struct session *s = &x->s;

	if (big)
		cookie |= 1ull << 63;
	size_t i = fz_pin_from(s, cookie);
	if (s->pins.n >= FZ_ENTRIES || (i < x->npins && x->pins[i].cookie == cookie))
		return false;
	if (x->npins == x->pins_cap) {
		x->pins_cap = x->pins_cap ? 2 * x->pins_cap : FZ_FEW;
		x->pins = realloc(x->pins, x->pins_cap * sizeof(*x->pins));
		if (!x->pins)
			fuzz_die("realloc");
	}
	if (pins_reserve(&s->pins) < 0)
		fuzz_die("pins_reserve");
	pins_add(&s->pins, big ? UINT64_MAX << FZ_PAGE_SHIFT : cookie << FZ_PAGE_SHIFT,
		 big ? UINT64_MAX << FZ_PAGE_SHIFT : 1u << FZ_PAGE_SHIFT, cookie, 0);
	memmove(x->pins + i + 1, x->pins + i, (x->npins - i) * sizeof(*x->pins));
	x->pins[i] = (struct fz_pin){ cookie, { .during = fz_walking } };
	x->npins++;
	return true;
}

/* ---- the base ---- */

/* splitmix64 from a fixed seed: the same base in every process. */
static uint64_t rnd(void)
{
	static uint64_t state = 0x6c6973742d746162ull;
	uint64_t x = (state += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void base_session(size_t i)
{
	/* Entries of an ordinary base session: mostly a few, some more than
	 * a small page. */
	static const uint32_t sizes[] = { 0, 0, 1, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 64, 130 };
	static const uid_t uids[] = { 1000, 1000, 0, 1001 }, huge_uids[] = { 1000, 0, 1001 };
	size_t k = i % FZ_HALF;
	bool big = i >= FZ_HALF, huge = k >= FZ_HUGE_FIRST && k < FZ_HUGE_FIRST + FZ_HUGE;
	uint64_t r = rnd(), id = big ? FZ_BASE_LAST - (FZ_BASE - 1 - i) : 1 + i;
	struct fz_session *x = fz_new(id, huge ? huge_uids[k - FZ_HUGE_FIRST] : uids[r & 3], big);
	struct session *s = &x->s;
	size_t nr = huge ? FZ_ENTRIES : sizes[(r >> 8) % PIN_ARRAY_SIZE(sizes)];
	size_t np = huge ? FZ_ENTRIES : sizes[(r >> 16) % PIN_ARRAY_SIZE(sizes)];
	uint64_t pg = (r >> 24) & 0xffff, stride = 1 + ((r >> 40) & 0xff);
	uint64_t cookie = rnd(), cstride = huge || r >> 63 ? 1 + ((r >> 48) & 0xff) : 0;
	struct region *regions = nr ? calloc(nr, sizeof(*regions)) : NULL;

	if (nr && !regions)
		fuzz_die("calloc");
	x->base = true;
	s->inspect = !huge && ((r >> 4) & 15) == 0;
	for (size_t j = 0, used = 0; j < nr; j++, pg += stride)
		used += region_insert(x, &regions[used], pg, big);
	/* Cookies in steps, or (cstride 0) anywhere. */
	for (size_t j = 0; j < np; j++, cookie += cstride)
		pin_insert(x, cstride ? cookie : rnd(), big);
	x->regions0 = xmemdup(s->regions, s->nregions * sizeof(*s->regions));
	x->nregions0 = s->nregions;
	x->pins0 = xmemdup(x->pins, x->npins * sizeof(*x->pins));
	x->npins0 = x->npins;
	x->set0 = s->pins;
	x->set0.v = xmemdup(s->pins.v, s->pins.n * sizeof(*s->pins.v));
	x->set0.hash = xmemdup(s->pins.hash, s->pins.hash_cap * sizeof(*s->pins.hash));
	base[i] = x;
	link_tail(s);
}

void fz_table_init(void)
{
	if (base[0])
		return;
	pool = calloc(FZ_POOL, sizeof(*pool));
	if (!pool)
		fuzz_die("calloc of the region pool");
	for (size_t i = 0; i < FZ_BASE; i++)
		base_session(i);
	next_id = FZ_BASE_LAST + 1;
}

/* ---- an input's changes, and their undoing ---- */

struct session *fz_session_add(uid_t uid)
{
	if (!next_id || nadded == FZ_ADDED)
		return NULL;
	struct fz_session *x = fz_new(next_id++, uid, fz_big);
	x->self.during = fz_walking;
	added[nadded++] = x;
	link_tail(&x->s);
	return &x->s;
}

static void poison(void *p, size_t n, bool on)
{
	if (!n)
		return;
	if (on)
		ASAN_POISON_MEMORY_REGION(p, n);
	else
		ASAN_UNPOISON_MEMORY_REGION(p, n);
}

/* A base session's arrays, and the session, out of reach or back. */
static void base_poison(struct fz_session *x, bool on)
{
	struct pin_set *ps = &x->s.pins;

	if (!on)
		poison(&x->s, sizeof(x->s), on);
	poison(x->s.regions, x->regions_cap * sizeof(*x->s.regions), on);
	poison(ps->v, ps->cap * sizeof(*ps->v), on);
	poison(ps->hash, ps->hash_cap * sizeof(*ps->hash), on);
	if (on)
		poison(&x->s, sizeof(x->s), on);
}

static void fz_free(struct fz_session *x)
{
	struct session *s = &x->s;

	for (size_t i = 0; i < s->nregions; i++)
		poison(s->regions[i], sizeof(*s->regions[i]), true);
	free(s->regions);
	pins_free(&s->pins);
	free(x->regions);
	free(x->pins);
	pthread_mutex_destroy(&s->lock);
	free(x);
}

void fz_session_del(struct session *s)
{
	struct fz_session *x = fz_of(s);
	size_t i = fz_index_from(s->id);

	if (i)
		order[i - 1]->gnext = s->gnext;
	memmove(order + i, order + i + 1, (norder - i - 1) * sizeof(*order));
	norder--;
	if (x->base) {
		touch(x);
		x->removed = true;
		removed[nremoved++] = x;
		base_poison(x, true);
		return;
	}
	for (size_t k = 0; k < nadded; k++)
		if (added[k] == x)
			added[k] = NULL;
	fz_free(x);
}

void fz_region_add(struct session *s, uint64_t pg)
{
	if (pool_used == FZ_POOL)
		return;
	struct region *r = &pool[pool_used];
	ASAN_UNPOISON_MEMORY_REGION(r, sizeof(*r));
	if (region_insert(fz_of(s), r, pg, fz_big)) {
		pool_used++;
		touch(fz_of(s));
	}
}

void fz_region_del(struct session *s, size_t i)
{
	struct fz_session *x = fz_of(s);

	touch(x);
	if (ngone == FZ_CHANGES)
		fuzz_die("more regions removed than changes");
	gone[ngone++] = s->regions[i];
	poison(s->regions[i], sizeof(*s->regions[i]), true);
	s->nregions--;
	memmove(s->regions + i, s->regions + i + 1, (s->nregions - i) * sizeof(*s->regions));
	memmove(x->regions + i, x->regions + i + 1, (s->nregions - i) * sizeof(*x->regions));
}

void fz_pin_add(struct session *s, uint64_t cookie)
{
	if (pin_insert(fz_of(s), cookie, fz_big))
		touch(fz_of(s));
}

void fz_pin_del(struct session *s, size_t i)
{
	struct fz_session *x = fz_of(s);
	ssize_t k = pins_find(&s->pins, x->pins[i].cookie);

	if (k < 0)
		fuzz_die("a pin the set does not find");
	touch(x);
	pins_del(&s->pins, (size_t)k);
	x->npins--;
	memmove(x->pins + i, x->pins + i + 1, (x->npins - i) * sizeof(*x->pins));
}

/* A base session as built: its arrays (their room may have grown), its pin
 * set (the hash at its size then), marks none. */
static void restore(struct fz_session *x)
{
	struct session *s = &x->s;
	struct pin_set *ps = &s->pins;

	if (x->removed)
		base_poison(x, false);
	x->removed = x->dirty = false;
	x->self = (struct mark){ 0 };
	s->nregions = x->nregions0;
	if (x->nregions0) {
		memcpy(s->regions, x->regions0, x->nregions0 * sizeof(*s->regions));
		memset(x->regions, 0, x->nregions0 * sizeof(*x->regions));
	}
	x->npins = x->npins0;
	if (x->npins0)
		memcpy(x->pins, x->pins0, x->npins0 * sizeof(*x->pins));
	if (ps->hash_cap != x->set0.hash_cap) {
		free(ps->hash);
		ps->hash = xmemdup(x->set0.hash, x->set0.hash_cap * sizeof(*ps->hash));
		ps->hash_cap = x->set0.hash_cap;
	} else if (ps->hash_cap) {
		memcpy(ps->hash, x->set0.hash, ps->hash_cap * sizeof(*ps->hash));
	}
	if (x->set0.n)
		memcpy(ps->v, x->set0.v, x->set0.n * sizeof(*ps->v));
	ps->n = x->set0.n;
	ps->root = x->set0.root;
	ps->prio_state = x->set0.prio_state;
}

void fz_table_reset(void)
{
	/* The base's that are left (the input's were after them all), then
	 * those taken out, each in its place. */
	norder = fz_index_from(FZ_BASE_LAST + 1);
	for (size_t i = 0; i < nadded; i++)
		if (added[i])
			fz_free(added[i]);
	nadded = 0;
	for (size_t i = 0; i < ngone; i++)
		ASAN_UNPOISON_MEMORY_REGION(gone[i], sizeof(*gone[i]));
	ngone = 0;
	for (size_t i = 0; i < ndirty; i++)
		restore(dirty[i]);
	ndirty = 0;
	if (norder)
		order[norder - 1]->gnext = NULL;
	for (size_t i = 0; i < nremoved; i++) {
		struct session *s = &removed[i]->s;
		size_t k = fz_index_from(s->id);

		memmove(order + k + 1, order + k, (norder - k) * sizeof(*order));
		order[k] = s;
		norder++;
		s->gnext = k + 1 < norder ? order[k + 1] : NULL;
		if (k)
			order[k - 1]->gnext = s;
	}
	nremoved = 0;
	pool_used = 0;
	next_id = FZ_BASE_LAST + 1;
	fz_walking = fz_big = false;
}
