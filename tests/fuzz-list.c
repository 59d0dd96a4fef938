// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over uffdd's paged lists (uffdd/inspect.c): a session
 * table built from the input (here, in place of session.c; its pins in
 * pins.c's set, as the daemon keeps them), a caller of
 * some uid, and a walk of ListGet pages from (0, 0) with the limit the input
 * gives, the table changed between pages as the input says (regions, pins
 * and sessions added and removed).
 *
 * Input: a header (a byte of flags: bits 0-1 what to list, 3 entries in
 * bulk, 4 the largest values, 5 root calls, 6 a session filter; the limit, 2
 * bytes; how many sessions), then the sessions of the table, then the
 * changes, one per page (see build() and change()).
 *
 * What must hold: every page, encoded as control.c sends it, fits one
 * datagram and holds at most the limit; its entries are the caller's to see,
 * at or after the cursor, in strictly increasing (session, key) order, and
 * before where it says the next page begins; the walk ends (each page but the
 * last moves on), and lists every entry that existed for the whole walk
 * exactly once.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>

#include "fuzz-common.h"
#include "uffdd.h"

/* Bounds that keep one input quick: sessions, entries of one session (more
 * than a page holds), entries in all, pages of a walk, and pages times
 * entries (a page walks every session, and the walk's checks read every
 * entry); the limit is raised to keep within the last two. */
#define FZ_SESSIONS 1024
#define FZ_ENTRIES  8192
#define FZ_TOTAL    32768
#define FZ_PAGES    512
#define FZ_VISITS   (1u << 15)
/* Regions made in one input, a removed one's room not used again until the
 * next: the build's, and as many as changes add. */
#define FZ_REGION_ALLOCS (FZ_TOTAL + 4096)
#define FZ_FEW		 16 /* entries of a session, but in bulk */
#define FZ_PAGE_SHIFT	 12
/* The uids of the table: the caller's, root's, another. */
#define FZ_UIDS 3
/* The table's own bookkeeping and checks: what is fuzzed is inspect.c, so
 * no coverage feedback from them, and no call per comparison (they were
 * half of the time of an input that builds thousands of entries). */
#define FZ_UNTRACED __attribute__((no_sanitize("coverage")))

/* ---- what session.c and source.c give inspect.c, over a table here ---- */

/* In id order, as session.c keeps its list; tail: the last (the largest
 * id, where a new session goes). */
static struct session *all, *tail;

void sessions_lock(void)
{
}

void sessions_unlock(void)
{
}

FZ_UNTRACED struct session *sessions_get_locked(uint64_t id)
{
	for (struct session *s = all; s; s = s->gnext)
		if (s->id == id)
			return s;
	return NULL;
}

FZ_UNTRACED struct session *sessions_from_locked(uint64_t id)
{
	struct session *s = all;

	while (s && s->id < id)
		s = s->gnext;
	return s;
}

FZ_UNTRACED void sessions_foreach(void (*fn)(struct session *s, void *data), void *data)
{
	for (struct session *s = all; s; s = s->gnext)
		fn(s, data);
}

/* Each counter of a session holds its faults (the largest values when the
 * input asks for them). */
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

/* WorkingSetGet's (inspect.c's other request), not asked here. */
const struct state_range *state_wset(const struct state *st, size_t *ret_n)
{
	*ret_n = 0;
	return NULL;
}

/* ---- the table ---- */

struct input {
	const uint8_t *p;
	size_t n;
};

static uint64_t take(struct input *in, size_t bytes)
{
	uint64_t v = 0;

	for (size_t i = 0; i < bytes && in->n; i++, in->p++, in->n--)
		v |= (uint64_t)*in->p << (8 * i);
	return v;
}

/* What the walk saw of an entry: born before it began, and times listed. */
struct mark {
	bool before;
	unsigned int seen;
};

/* A pin as the table knows it, in cookie order. */
struct fz_pin {
	uint64_t cookie;
	struct mark m;
};

/* A session of the table, and the marks of it, its regions (in their
 * array's order) and its pins (the same as s.pins, in cookie order). */
struct fz_session {
	struct session s;
	struct mark self;
	struct mark *regions;
	struct fz_pin *pins;
	size_t regions_cap, npins, pins_cap;
};

static struct fz_session *extra_of(struct session *s)
{
	return (struct fz_session *)s;
}

static uint64_t next_id;
static bool big; /* the largest values: addresses, cookies, names, counters */
static uid_t uids[FZ_UIDS];
static bool walking;
static struct session *caller;	  /* never removed */
static size_t total;		  /* regions and pins in the table */
static char fd_source;		  /* what a region with a file source points to */
static struct session *seen_last; /* seen()'s last: entries come a session at a time */
static size_t seen_next;	  /* and the index after the last one's, in order too */

/*
 * Regions come from one pool, emptied after each input: a calloc() and a
 * free() each under ASan were half of the time of an input that builds
 * thousands.  A removed region is poisoned, so that inspect.c reading one
 * is reported as a read of freed memory would be.
 */
static struct region *pool;
static size_t pool_used;

FZ_UNTRACED static struct region *fz_region_new(void)
{
	if (!pool)
		pool = calloc(FZ_REGION_ALLOCS, sizeof(*pool));
	if (!pool)
		fuzz_die("calloc of the region pool");
	if (pool_used == FZ_REGION_ALLOCS)
		return NULL;
	struct region *r = &pool[pool_used++];
	ASAN_UNPOISON_MEMORY_REGION(r, sizeof(*r));
	memset(r, 0, sizeof(*r));
	return r;
}

FZ_UNTRACED static void fz_region_gone(struct region *r)
{
	ASAN_POISON_MEMORY_REGION(r, sizeof(*r));
}

FZ_UNTRACED static struct session *session_add(uid_t uid)
{
	struct fz_session *x = calloc(1, sizeof(*x));
	struct session *s = &x->s;

	if (!x)
		fuzz_die("calloc");
	pthread_mutex_init(&s->lock, NULL);
	s->id = next_id++;
	s->uid = uid;
	s->pid = big ? -1 : (pid_t)s->id;
	memset(s->name, big ? '~' : 'n', big ? sizeof(s->name) - 1 : 1);
	/* The treap's shape is the input's to choose, not getrandom()'s: a
	 * crash reproduces. */
	s->pins.prio_state = s->id | 1;
	STAT_ADD(s->stats.faults, big ? UINT64_MAX : s->id);
	x->self.before = !walking;
	s->gnext = NULL;
	*(tail ? &tail->gnext : &all) = s;
	tail = s;
	return s;
}

FZ_UNTRACED static void session_del(struct session *s)
{
	struct fz_session *x = extra_of(s);

	total -= s->nregions + s->pins.n;
	if (seen_last == s)
		seen_last = NULL;
	for (struct session **p = &all, *prev = NULL; *p; prev = *p, p = &(*p)->gnext)
		if (*p == s) {
			*p = s->gnext;
			if (tail == s)
				tail = prev;
			break;
		}
	for (size_t i = 0; i < s->nregions; i++)
		fz_region_gone(s->regions[i]);
	free(s->regions);
	pins_free(&s->pins);
	free(x->regions);
	free(x->pins);
	pthread_mutex_destroy(&s->lock);
	free(x);
}

/* Room for one more in the arrays a and b of cap entries (n in use). */
FZ_UNTRACED static void grow(void **a, size_t asize, void **b, size_t bsize, size_t n, size_t *cap)
{
	if (n < *cap)
		return;
	*cap = *cap ? 2 * *cap : 16;
	*a = realloc(*a, *cap * asize);
	*b = realloc(*b, *cap * bsize);
	if (!*a || !*b)
		fuzz_die("realloc");
}

/* The first region of s starting at start or above (at once past the last:
 * the table is built in ascending order). */
FZ_UNTRACED static size_t region_from(const struct session *s, uint64_t start)
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

/* A one-page region at page index pg, where no region starts yet. */
FZ_UNTRACED static void region_add(struct session *s, uint64_t pg)
{
	uint64_t start = (big ? pg | 1ull << 44 : pg) << FZ_PAGE_SHIFT;
	struct fz_session *x = extra_of(s);

	if (s->nregions >= FZ_ENTRIES || total >= FZ_TOTAL)
		return;
	size_t i = region_from(s, start);
	if (i < s->nregions && s->regions[i]->start == start)
		return;
	struct region *r = fz_region_new();
	if (!r)
		return;
	r->start = start;
	r->len = r->npages = 1;
	r->len <<= FZ_PAGE_SHIFT;
	r->mode = big ? UINT32_MAX : PIN_UFFD_REGISTER_MISSING;
	r->src = pg & 1 ? (struct source *)&fd_source : NULL;
	STAT_ADD(r->n_populated, big ? UINT64_MAX : pg & 1);
	STAT_ADD(r->n_dirty, big ? UINT64_MAX : 0);
	grow((void **)&s->regions, sizeof(*s->regions), (void **)&x->regions, sizeof(*x->regions),
	     s->nregions, &x->regions_cap);
	memmove(s->regions + i + 1, s->regions + i, (s->nregions - i) * sizeof(*s->regions));
	memmove(x->regions + i + 1, x->regions + i, (s->nregions - i) * sizeof(*x->regions));
	s->regions[i] = r;
	x->regions[i] = (struct mark){ .before = !walking };
	s->nregions++;
	total++;
}

FZ_UNTRACED static void region_del(struct session *s, size_t i)
{
	struct fz_session *x = extra_of(s);

	fz_region_gone(s->regions[i]);
	s->nregions--;
	total--;
	memmove(s->regions + i, s->regions + i + 1, (s->nregions - i) * sizeof(*s->regions));
	memmove(x->regions + i, x->regions + i + 1, (s->nregions - i) * sizeof(*x->regions));
}

/* The first pin of s (in cookie order) whose cookie is cookie or above. */
FZ_UNTRACED static size_t pin_from(struct session *s, uint64_t cookie)
{
	const struct fz_session *x = extra_of(s);
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

/* A pin with this cookie, unless the session has one: into s->pins, and
 * into the table's own array in cookie order. */
FZ_UNTRACED static void pin_add(struct session *s, uint64_t cookie)
{
	struct fz_session *x = extra_of(s);

	if (s->pins.n >= FZ_ENTRIES || total >= FZ_TOTAL)
		return;
	if (big)
		cookie |= 1ull << 63;
	size_t i = pin_from(s, cookie);
	if (i < x->npins && x->pins[i].cookie == cookie)
		return;
	if (x->npins == x->pins_cap) {
		x->pins_cap = x->pins_cap ? 2 * x->pins_cap : 16;
		x->pins = realloc(x->pins, x->pins_cap * sizeof(*x->pins));
		if (!x->pins)
			fuzz_die("realloc");
	}
	if (pins_reserve(&s->pins) < 0)
		fuzz_die("pins_reserve");
	pins_add(&s->pins, big ? UINT64_MAX << FZ_PAGE_SHIFT : cookie << FZ_PAGE_SHIFT,
		 big ? UINT64_MAX << FZ_PAGE_SHIFT : 1u << FZ_PAGE_SHIFT, cookie, 0);
	memmove(x->pins + i + 1, x->pins + i, (x->npins - i) * sizeof(*x->pins));
	x->pins[i] = (struct fz_pin){ cookie, { .before = !walking } };
	x->npins++;
	total++;
}

/* The pin at i in cookie order. */
FZ_UNTRACED static void pin_del(struct session *s, size_t i)
{
	struct fz_session *x = extra_of(s);
	ssize_t k = pins_find(&s->pins, x->pins[i].cookie);

	if (k < 0)
		fuzz_die("a pin the set does not find");
	pins_del(&s->pins, (size_t)k);
	total--;
	x->npins--;
	memmove(x->pins + i, x->pins + i + 1, (x->npins - i) * sizeof(*x->pins));
}

FZ_UNTRACED static size_t nsessions(void)
{
	size_t n = 0;

	for (struct session *s = all; s; s = s->gnext)
		n++;
	return n;
}

FZ_UNTRACED static struct session *nth(size_t k)
{
	size_t n = nsessions();
	struct session *s = all;

	if (!n)
		return NULL;
	for (k %= n; k--;)
		s = s->gnext;
	return s;
}

/* Session bytes: the uid, then regions and pins, each as a count (of up to
 * FZ_ENTRIES in bulk, else FZ_FEW) and a first page or cookie with a stride
 * between them. */
static void build(struct input *in, size_t n, bool bulk)
{
	for (size_t i = 0; i < n && in->n; i++) {
		uint8_t b = (uint8_t)take(in, 1);
		struct session *s = session_add(uids[b % FZ_UIDS]);
		uint64_t nr = bulk ? take(in, 2) % FZ_ENTRIES : take(in, 1) % FZ_FEW,
			 first = take(in, 2), stride = take(in, 1) + 1;
		for (uint64_t k = 0; k < nr; k++)
			region_add(s, first + k * stride);
		uint64_t np = bulk ? take(in, 2) % FZ_ENTRIES : take(in, 1) % FZ_FEW,
			 cookie = take(in, 8), cstride = take(in, 1) + 1;
		for (uint64_t k = 0; k < np; k++)
			pin_add(s, cookie + k * cstride);
	}
}

/* A change between two pages: one byte of kind, then its arguments; none
 * once the input is used up.  Returns the entries it may have added. */
static size_t change(struct input *in)
{
	if (!in->n)
		return 0;
	uint8_t op = (uint8_t)take(in, 1);
	struct session *s = nth(take(in, 2));

	switch (op % 6) {
	case 0:
		/* Ids are never reused: none after the largest. */
		if (next_id && nsessions() < FZ_SESSIONS)
			session_add(uids[op / 6 % FZ_UIDS]);
		break;
	case 1:
		if (s && s != caller)
			session_del(s);
		break;
	case 2:
		if (s)
			region_add(s, take(in, 2));
		break;
	case 3:
		if (s && s->nregions)
			region_del(s, take(in, 2) % s->nregions);
		break;
	case 4:
		if (s)
			pin_add(s, take(in, 8));
		break;
	default:
		if (s && s->pins.n)
			pin_del(s, take(in, 2) % s->pins.n);
		break;
	}
	return op % 2 == 0;
}

/* ---- the walk ---- */

struct pos {
	uint64_t sid, key;
};

static bool before(struct pos a, struct pos b)
{
	return a.sid < b.sid || (a.sid == b.sid && a.key < b.key);
}

FZ_UNTRACED static void seen(bool root, Uffdd__ListGet__What what, uint64_t filter, uint64_t sid,
			     uint64_t key)
{
	struct session *s =
		seen_last && seen_last->id == sid ? seen_last : sessions_get_locked(sid);

	if (!s)
		fuzz_die("an entry of no session");
	seen_last = s;
	if (!root && s->uid != caller->uid)
		fuzz_die("an entry the caller may not see");
	if (filter && sid != filter)
		fuzz_die("an entry of another session than the one asked");
	struct fz_session *x = extra_of(s);
	if (what == UFFDD__LIST_GET__WHAT__CLIENTS) {
		x->self.seen++;
		return;
	}
	if (what == UFFDD__LIST_GET__WHAT__REGIONS) {
		size_t i = seen_next < s->nregions && s->regions[seen_next]->start == key
				   ? seen_next
				   : region_from(s, key);
		if (i < s->nregions && s->regions[i]->start == key) {
			x->regions[i].seen++;
			seen_next = i + 1;
			return;
		}
	} else {
		size_t i = seen_next < x->npins && x->pins[seen_next].cookie == key
				   ? seen_next
				   : pin_from(s, key);
		if (i < x->npins && x->pins[i].cookie == key) {
			x->pins[i].m.seen++;
			seen_next = i + 1;
			return;
		}
	}
	fuzz_die("an entry that does not exist");
}

/* Whether an entry that existed for the whole walk was listed once. */
FZ_UNTRACED static void check_mark(const struct mark *m, bool want)
{
	if (m->before && m->seen != (unsigned int)want)
		fuzz_die(want ? "an entry there for the whole walk was not listed once"
			      : "an entry listed that should not be");
	if (m->seen > 1)
		fuzz_die("an entry listed twice");
}

FZ_UNTRACED static void check_all(bool root, Uffdd__ListGet__What what, uint64_t filter)
{
	for (struct session *s = all; s; s = s->gnext) {
		struct fz_session *x = extra_of(s);
		bool want = (root || s->uid == caller->uid) && (!filter || filter == s->id);

		check_mark(&x->self, what == UFFDD__LIST_GET__WHAT__CLIENTS && want);
		for (size_t i = 0; i < s->nregions; i++)
			check_mark(&x->regions[i], what == UFFDD__LIST_GET__WHAT__REGIONS && want);
		for (size_t i = 0; i < x->npins; i++)
			check_mark(&x->pins[i].m, what == UFFDD__LIST_GET__WHAT__PINS && want);
	}
}

/* The reply as control.c encodes it: fits one datagram. */
static void check_size(Uffdd__Reply *rep)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;

	m.has_seq = true;
	m.seq = UINT64_MAX;
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = rep;
	if (uffdd__msg__get_packed_size(&m) > PIN_PROTO_MAX_MSG)
		fuzz_die("a page does not fit one datagram");
}

FZ_UNTRACED static size_t entries(Uffdd__ListGet__What what)
{
	size_t n = 0;

	for (struct session *s = all; s; s = s->gnext)
		n += what == UFFDD__LIST_GET__WHAT__CLIENTS   ? 1
		     : what == UFFDD__LIST_GET__WHAT__REGIONS ? s->nregions
							      : s->pins.n;
	return n;
}

static void walk(struct input *in, Uffdd__ListGet__What what, uint64_t filter, uint32_t limit)
{
	Uffdd__ListGet g = UFFDD__LIST_GET__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	bool root = caller->uid == 0;
	struct pos cur = { 0, 0 };
	size_t max = list_limit_max(what), n0 = entries(what), added = 0;
	size_t pages = n0 ? FZ_VISITS / n0 : FZ_PAGES;

	/* A small limit over many entries: as many pages as the bounds. */
	if (pages > FZ_PAGES)
		pages = FZ_PAGES;
	if (!pages)
		pages = 1;
	if (limit && n0 / limit > pages)
		limit = (uint32_t)(n0 / pages + 1);
	g.what = what;
	g.has_session = filter != 0;
	g.session = filter;
	g.has_limit = true;
	g.limit = limit;
	m.body_case = UFFDD__MSG__BODY_LIST_GET;
	m.list_get = &g;
	walking = true;
	for (size_t page = 0;; page++) {
		Uffdd__Reply rep = UFFDD__REPLY__INIT;
		struct list l = { .rep = &rep };
		struct req q = { .s = caller, .m = &m };

		/* Each page but the last lists one entry at least, and none
		 * twice. */
		if (page > n0 + added)
			fuzz_die("the walk does not end");
		g.has_cursor = g.has_cursor_key = true;
		g.cursor = cur.sid;
		g.cursor_key = cur.key;
		int r = do_list(&q, &l);
		if (r == -ENOENT && filter) {
			struct session *s = sessions_get_locked(filter);
			if (s && (root || s->uid == caller->uid))
				fuzz_die("-ENOENT for a session the caller sees");
			list_free(&l);
			return;
		}
		if (r < 0)
			fuzz_die("ListGet failed");
		size_t n = what == UFFDD__LIST_GET__WHAT__CLIENTS   ? rep.n_clients
			   : what == UFFDD__LIST_GET__WHAT__REGIONS ? rep.n_regions
								    : rep.n_pins;
		if (n > (limit && limit < max ? limit : max))
			fuzz_die("a page over the limit");
		check_size(&rep);
		struct pos last = cur, next = { rep.next_cursor, rep.next_key };
		for (size_t i = 0; i < n; i++) {
			struct pos p;
			if (what == UFFDD__LIST_GET__WHAT__CLIENTS)
				p = (struct pos){ rep.clients[i]->session, 0 };
			else if (what == UFFDD__LIST_GET__WHAT__REGIONS)
				p = (struct pos){ rep.regions[i]->session,
						  rep.regions[i]->range->addr };
			else
				p = (struct pos){ rep.pins[i]->session, rep.pins[i]->cookie };
			if (before(p, last) || (i && !before(last, p)))
				fuzz_die("entries out of order, or before the cursor");
			seen(root, what, filter, p.sid, p.key);
			last = p;
		}
		list_free(&l);
		if (!rep.next_cursor)
			break;
		if (!n || !before(last, next))
			fuzz_die("a page that does not move on");
		cur = next;
		added += change(in);
	}
	check_all(root, what, filter);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };

	if (size < 8)
		return 0;
	uint8_t flags = (uint8_t)take(&in, 1);
	Uffdd__ListGet__What what = (Uffdd__ListGet__What)((flags & 3) % 3);
	big = flags & 0x10;
	uids[0] = 1000;
	uids[1] = 0;
	uids[2] = 1001;
	next_id = big ? UINT64_MAX - 2 * FZ_SESSIONS : 1;
	bool bulk = flags & 0x08;
	uint32_t limit = (uint32_t)take(&in, 2);
	size_t n = bulk ? take(&in, 2) % FZ_SESSIONS : take(&in, 1) % FZ_FEW;
	/* The caller: its own session, which the changes leave. */
	caller = session_add(flags & 0x20 ? 0 : uids[0]);
	build(&in, n, bulk);
	uint64_t filter = 0;
	if (flags & 0x40) {
		struct session *f = nth(take(&in, 2));
		filter = f ? f->id : 0;
	}
	walk(&in, what, filter, limit);
	while (all)
		session_del(all);
	pool_used = 0;
	walking = false;
	caller = NULL;
	return 0;
}
