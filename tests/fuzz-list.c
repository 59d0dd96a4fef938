// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over uffdd's paged lists (uffdd/inspect.c): a caller of
 * some uid walks ListGet pages over a session table (fuzz-list-table.c: a
 * base built once per process, with sessions of every uid, of the largest
 * values and of more entries than a page holds), from a cursor and with a
 * limit the input gives, the table changed before the walk and between its
 * pages as the input says (sessions, regions and pins added and removed),
 * the changes undone after it.
 *
 * Input: a header (a byte of flags: bits 0-1 what to list, 2 a cursor to
 * start at, 3 root calls, 4 the largest values for what the input adds, 5 a
 * session filter, 6 the caller is an inspection connection, 7 the caller's
 * uid is the other one; the limit, see limit_of(); the most pages, a byte),
 * the sessions the input adds and the changes before the walk (a count
 * byte each), the filter and the cursor, then the changes, one after each
 * page (see build(), change(), start_of()).  Seeds: make-seeds.py.
 *
 * What must hold: every page, encoded as control.c sends it, fits one
 * datagram and holds at most the limit; its entries are the caller's to see,
 * at or after the cursor, in strictly increasing (session, key) order, and
 * before where it says the next page begins; each page but the last moves
 * on; and the walk lists every entry between its first cursor and where it
 * stopped (the end, or the next page's cursor) that existed for the whole
 * walk exactly once, and no entry twice.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-common.h"
#include "fuzz-list.h"

/* Entries listed in one walk: the walk stops at the page that reaches it
 * (a page of the largest limit gets through). */
#define FZ_VISITS 512
/* The limit byte: a small limit below FZ_LIMIT_AROUND, else (another byte)
 * one of the values around the largest page: rare, as a page of thousands
 * costs what hundreds of small walks do. */
#define FZ_LIMIT_SMALL	16
#define FZ_LIMIT_AROUND 0xff
/* The input's decoding and the checks of what was listed: not what is
 * fuzzed, so no coverage feedback from them (nor when inlined, which would
 * trace them: their comparisons were a third of a run). */
#define FZ_UNTRACED __attribute__((no_sanitize("coverage"), noinline))
/* The uids of the table: an ordinary caller's two, root's. */
static const uid_t uids[] = { 1000, 1001, 0 };

struct input {
	const uint8_t *p;
	size_t n;
};

FZ_UNTRACED static uint64_t take(struct input *in, size_t bytes)
{
	uint64_t v = 0;

	for (size_t i = 0; i < bytes && in->n; i++, in->p++, in->n--)
		v |= (uint64_t)*in->p << (8 * i);
	return v;
}

/* A position in the list: session id, then key (address, cookie; 0 for a
 * client). */
struct pos {
	uint64_t sid, key;
};

FZ_UNTRACED static bool before(struct pos a, struct pos b)
{
	return a.sid < b.sid || (a.sid == b.sid && a.key < b.key);
}

static struct session *caller;
/* list_limit_max() of each kind: clients, regions, pins. */
#define FZ_KINDS (UFFDD__LIST_GET__WHAT__PINS + 1)
static size_t limit_max[FZ_KINDS];
static Uffdd__ListGet__What what;
static uint64_t filter;
static bool root;
static struct session *seen_last; /* seen()'s last: entries come a session at a time */
static size_t seen_next;	  /* and the index after the last one's, in order too */

/* Whether the caller's walk lists s. */
FZ_UNTRACED static bool wanted(const struct session *s)
{
	return (root || s->uid == caller->uid) && !s->inspect && (!filter || filter == s->id);
}

/* ---- the input's changes ---- */

/* Session bytes: the uid, then regions and pins, each as a count (up to
 * FZ_FEW) and a first page or cookie with a stride between them. */
static void build(struct input *in, size_t n)
{
	for (size_t i = 0; i < n && in->n; i++) {
		struct session *s = fz_session_add(uids[take(in, 1) % PIN_ARRAY_SIZE(uids)]);
		uint64_t nr = take(in, 1) % (FZ_FEW + 1), first = take(in, 2),
			 stride = take(in, 1) + 1;

		if (!s)
			return;
		for (uint64_t k = 0; k < nr; k++)
			fz_region_add(s, first + k * stride);
		uint64_t np = take(in, 1) % (FZ_FEW + 1), cookie = take(in, 8),
			 cstride = take(in, 1) + 1;
		for (uint64_t k = 0; k < np; k++)
			fz_pin_add(s, cookie + k * cstride);
	}
}

/* Index i moved by d, in [0, n) cyclically. */
static size_t step(size_t i, int8_t d, size_t n)
{
	long long k = ((long long)(i % n) + d) % (long long)n;

	return (size_t)(k < 0 ? k + (long long)n : k);
}

/* The session a change is to: 2 bytes, with bit 15 an index among all,
 * else a step (-128 to 127) from the one at the cursor. */
static struct session *target(struct input *in, struct pos cur)
{
	uint64_t v = take(in, 2);
	size_t n = fz_nsessions();

	if (v & 0x8000)
		return fz_session_at((v & 0x7fff) % n);
	return fz_session_at(step(fz_index_from(cur.sid), (int8_t)(uint8_t)v, n));
}

/* An entry's index, 2 bytes: with bit 15 a step (-128 to 127) from the
 * first at or after the cursor's key, else one among all. */
static size_t entry(struct input *in, size_t first, size_t n)
{
	uint64_t v = take(in, 2);

	if (v & 0x8000)
		return step(first, (int8_t)(uint8_t)v, n);
	return v % n;
}

/* A change: one byte of kind (with bit 6: a key near the cursor's), the
 * session, then its arguments; none once the input is used up. */
static void change(struct input *in, struct pos cur)
{
	if (!in->n)
		return;
	uint8_t op = (uint8_t)take(in, 1);
	struct session *s = target(in, cur);
	bool near = op & 0x40;

	switch (op % 6) {
	case 0:
		fz_session_add(uids[op / 6 % PIN_ARRAY_SIZE(uids)]);
		break;
	case 1:
		if (s == caller)
			break;
		if (seen_last == s)
			seen_last = NULL;
		fz_session_del(s);
		break;
	case 2:
		fz_region_add(s, near ? (cur.key >> FZ_PAGE_SHIFT) + (uint64_t)(int8_t)take(in, 1)
				      : take(in, 2));
		break;
	case 3:
		if (s->nregions)
			fz_region_del(s, entry(in, fz_region_from(s, cur.key), s->nregions));
		break;
	case 4:
		fz_pin_add(s, near ? cur.key + (uint64_t)(int8_t)take(in, 1) : take(in, 8));
		break;
	default:
		if (s->pins.n)
			fz_pin_del(s, entry(in, fz_pin_from(s, cur.key), s->pins.n));
		break;
	}
}

/* ---- the walk ---- */

FZ_UNTRACED static void seen(struct pos p)
{
	struct session *s = seen_last && seen_last->id == p.sid ? seen_last : fz_session_get(p.sid);

	if (!s)
		fuzz_die("an entry of no session");
	seen_last = s;
	if (!root && s->uid != caller->uid)
		fuzz_die("an entry the caller may not see");
	if (s->inspect)
		fuzz_die("an inspection connection listed");
	if (filter && p.sid != filter)
		fuzz_die("an entry of another session than the one asked");
	struct fz_session *x = fz_of(s);
	if (what == UFFDD__LIST_GET__WHAT__CLIENTS) {
		x->self.seen++;
		return;
	}
	if (what == UFFDD__LIST_GET__WHAT__REGIONS) {
		size_t i = seen_next < s->nregions && s->regions[seen_next]->start == p.key
				   ? seen_next
				   : fz_region_from(s, p.key);
		if (i < s->nregions && s->regions[i]->start == p.key) {
			x->regions[i].seen++;
			seen_next = i + 1;
			return;
		}
	} else {
		size_t i = seen_next < x->npins && x->pins[seen_next].cookie == p.key
				   ? seen_next
				   : fz_pin_from(s, p.key);
		if (i < x->npins && x->pins[i].cookie == p.key) {
			x->pins[i].m.seen++;
			seen_next = i + 1;
			return;
		}
	}
	fuzz_die("an entry that does not exist");
}

/* An entry of the caller's there for the whole walk was listed once; none
 * twice.  Its mark is cleared for the next input. */
FZ_UNTRACED static void check_mark(struct mark *m)
{
	if (!m->during && m->seen != 1)
		fuzz_die("an entry there for the whole walk was not listed once");
	if (m->seen > 1)
		fuzz_die("an entry listed twice");
	m->seen = 0;
}

/*
 * The entries of the caller's sessions in [from, to) (to_end: from on) as
 * check_mark() says.  Those of the sessions it does not see were never
 * listed: seen() stops at the first.
 */
FZ_UNTRACED static void check_window(struct pos from, struct pos to, bool to_end)
{
	uint64_t first = filter > from.sid ? filter : from.sid;

	for (size_t i = fz_index_from(first); i < fz_nsessions(); i++) {
		struct session *s = fz_session_at(i);
		struct fz_session *x = fz_of(s);
		uint64_t lo = s->id == from.sid ? from.key : 0;
		bool last = !to_end && s->id == to.sid;

		if ((!to_end && s->id > to.sid) || (filter && s->id > filter))
			break;
		if (!wanted(s))
			continue;
		if (what == UFFDD__LIST_GET__WHAT__CLIENTS) {
			if (!lo && !(last && !to.key))
				check_mark(&x->self);
		} else if (what == UFFDD__LIST_GET__WHAT__REGIONS) {
			for (size_t k = fz_region_from(s, lo);
			     k < s->nregions && !(last && s->regions[k]->start >= to.key); k++)
				check_mark(&x->regions[k]);
		} else {
			for (size_t k = fz_pin_from(s, lo);
			     k < x->npins && !(last && x->pins[k].cookie >= to.key); k++)
				check_mark(&x->pins[k].m);
		}
	}
}

/* The reply as control.c encodes it: fits one datagram. */
FZ_UNTRACED static void check_size(Uffdd__Reply *rep)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;

	m.has_seq = true;
	m.seq = UINT64_MAX;
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = rep;
	if (uffdd__msg__get_packed_size(&m) > PIN_PROTO_MAX_MSG)
		fuzz_die("a page does not fit one datagram");
}

FZ_UNTRACED static struct pos entry_pos(const Uffdd__Reply *rep, size_t i)
{
	if (what == UFFDD__LIST_GET__WHAT__CLIENTS)
		return (struct pos){ rep->clients[i]->session, 0 };
	if (what == UFFDD__LIST_GET__WHAT__REGIONS)
		return (struct pos){ rep->regions[i]->session, rep->regions[i]->range->addr };
	return (struct pos){ rep->pins[i]->session, rep->pins[i]->cookie };
}

/* A page of n entries from cur: in order, at or after cur and before the
 * next page's cursor, each marked seen; where the next page begins ({0, 0}:
 * none). */
FZ_UNTRACED static struct pos check_entries(const Uffdd__Reply *rep, size_t n, struct pos cur)
{
	struct pos last = cur, next = { rep->next_cursor, rep->next_key };

	for (size_t i = 0; i < n; i++) {
		struct pos p = entry_pos(rep, i);
		if (before(p, last) || (i && !before(last, p)))
			fuzz_die("entries out of order, or before the cursor");
		seen(p);
		last = p;
	}
	if (next.sid && (!n || !before(last, next)))
		fuzz_die("a page that does not move on");
	return next.sid ? next : (struct pos){ 0, 0 };
}

/* One page at cur: checked, its entries marked; where the next begins
 * ({0, 0}: none), or {0, 1} when the session asked for is gone. */
static struct pos page(struct pos cur, uint32_t limit, size_t *visits)
{
	Uffdd__ListGet g = UFFDD__LIST_GET__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	struct list l = { .rep = &rep };
	struct req q = { .s = caller, .m = &m };
	size_t max = limit_max[what];

	g.what = what;
	g.has_session = filter != 0;
	g.session = filter;
	g.has_limit = true;
	g.limit = limit;
	g.has_cursor = g.has_cursor_key = true;
	g.cursor = cur.sid;
	g.cursor_key = cur.key;
	m.body_case = UFFDD__MSG__BODY_LIST_GET;
	m.list_get = &g;
	int r = do_list(&q, &l);
	if (r == -ENOENT && filter) {
		struct session *s = fz_session_get(filter);
		if (s && wanted(s))
			fuzz_die("-ENOENT for a session the caller sees");
		list_free(&l);
		return (struct pos){ 0, 1 };
	}
	if (r < 0)
		fuzz_die("ListGet failed");
	size_t n = what == UFFDD__LIST_GET__WHAT__CLIENTS   ? rep.n_clients
		   : what == UFFDD__LIST_GET__WHAT__REGIONS ? rep.n_regions
							    : rep.n_pins;
	if (n > (limit && limit < max ? limit : max))
		fuzz_die("a page over the limit");
	check_size(&rep);
	struct pos next = check_entries(&rep, n, cur);
	list_free(&l);
	*visits += n;
	return next;
}

/* Pages from start, the table changed after each, until the list ends, the
 * session asked for is gone, or pages or FZ_VISITS run out; then the window
 * paged is checked whole. */
static void walk(struct input *in, struct pos start, uint32_t limit, size_t pages)
{
	struct pos cur = start;
	size_t visits = 0;

	fz_walking = true;
	for (size_t p = 0;; p++) {
		struct pos next = page(cur, limit, &visits);
		if (!next.sid) {
			/* The end; or, the session asked for gone, [start,
			 * cur) paged whole. */
			check_window(start, cur, !next.key);
			return;
		}
		cur = next;
		if (p + 1 == pages || visits >= FZ_VISITS)
			break;
		change(in, cur);
	}
	check_window(start, cur, false);
}

/* The limit: 1 to FZ_LIMIT_SMALL, or at FZ_LIMIT_AROUND a byte more for a
 * value around the largest page (0: the server's largest) or between. */
static uint32_t limit_of(struct input *in)
{
	uint64_t max = limit_max[what], b = take(in, 1);
	const uint64_t around[] = { 0,	 max - 1, max,	max + 1, 2 * max,   FZ_LIMIT_SMALL + 1,
				    255, 256,	  1000, 65535,	 UINT32_MAX };

	if (b < FZ_LIMIT_AROUND)
		return 1 + b % FZ_LIMIT_SMALL;
	return (uint32_t)around[take(in, 1) % PIN_ARRAY_SIZE(around)];
}

/* Where the walk starts: the session (2 bytes) and a byte, bits 6-7 the
 * session id's step (-1 to 2), bits 0-1 the key: 0, 8 bytes, or (2 bytes)
 * an entry's key, or one past it.  Clients have no key. */
static struct pos start_of(struct input *in)
{
	struct session *s = fz_session_at(take(in, 2) % fz_nsessions());
	uint8_t k = (uint8_t)take(in, 1);
	struct pos p = { s->id + (k >> 6) - 1, 0 };
	size_t n = what == UFFDD__LIST_GET__WHAT__REGIONS ? s->nregions : fz_of(s)->npins;

	if (what == UFFDD__LIST_GET__WHAT__CLIENTS || !(k & 3))
		return p;
	if ((k & 3) == 1) {
		p.key = take(in, 8);
		return p;
	}
	if (!n)
		return p;
	size_t i = take(in, 2) % n;
	p.key = what == UFFDD__LIST_GET__WHAT__REGIONS ? s->regions[i]->start
						       : fz_of(s)->pins[i].cookie;
	p.key += (k & 3) == 3;
	return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	struct pos start = { 0, 0 };

	if (size < 6)
		return 0;
	fz_table_init();
	for (int k = 0; k < FZ_KINDS && !limit_max[k]; k++)
		limit_max[k] = list_limit_max(k);
	uint8_t flags = (uint8_t)take(&in, 1);
	what = (Uffdd__ListGet__What)((flags & 3) % FZ_KINDS);
	root = flags & 0x08;
	fz_big = flags & 0x10;
	uint32_t limit = limit_of(&in);
	size_t pages = 1 + take(&in, 1) % FZ_PAGES;
	/* The caller: its own session, which the changes leave. */
	caller = fz_session_add(root ? 0 : uids[flags >> 7]);
	caller->inspect = flags & 0x40;
	build(&in, take(&in, 1) % FZ_ADDED);
	for (size_t n = take(&in, 1) % (FZ_SETUP + 1); n; n--)
		change(&in, start);
	filter = flags & 0x20 ? fz_session_at(take(&in, 2) % fz_nsessions())->id : 0;
	if (flags & 0x04)
		start = start_of(&in);
	seen_last = NULL;
	walk(&in, start, limit, pages);
	fz_table_reset();
	caller = NULL;
	return 0;
}
