// SPDX-License-Identifier: MIT
/*
 * The replies that show what the daemon serves (uffdctl's view): StatsGet of
 * one session or all, ListGet of clients, regions or pins in pages of one
 * datagram each, and the recorded working set, WorkingSetGet, in pages of
 * WSET_PER_REPLY runs.  Who sees what: a client sees the sessions of its own
 * uid; root and members of --admin-group see all of them (the groups the
 * kernel recorded when the client connected, never what it says).  Other
 * sessions are read under the global lock and each one's own lock, a page
 * at a time: no lock is held from one request to the next.  It may call
 * session.c, pins.c, source.c, log.c and util.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "uffdd.h"

/* Supplementary groups read at once; more take a second getsockopt(). */
#define PEER_GROUPS_FIRST 64

/* Whether gid is among the groups the kernel recorded for the peer of sock. */
static bool peer_in_group(struct session *s, gid_t gid)
{
	gid_t first[PEER_GROUPS_FIRST], *g = first;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	bool in = false;

	if (getsockopt(s->sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		int err = errno;
		slog(s, LOG_WARNING, "getsockopt(SO_PEERCRED): %s; sees its own uid only",
		     strerror(err));
		return false;
	}
	if (cred.gid == gid)
		return true;
	len = sizeof(first);
	if (getsockopt(s->sock, SOL_SOCKET, SO_PEERGROUPS, g, &len) < 0) {
		g = errno == ERANGE ? malloc(len) : NULL;
		if (!g || getsockopt(s->sock, SOL_SOCKET, SO_PEERGROUPS, g, &len) < 0) {
			int err = g ? errno : ENOMEM;
			slog(s, LOG_WARNING, "getsockopt(SO_PEERGROUPS): %s; sees its own uid only",
			     strerror(err));
			free(g);
			return false;
		}
	}
	for (size_t i = 0; i < len / sizeof(*g); i++)
		in |= g[i] == gid;
	if (g != first)
		free(g);
	return in;
}

/* The caller sees every session: root, or a member of --admin-group. */
static bool sees_all(struct session *s)
{
	if (s->uid == 0)
		return true;
	return uffdd_cfg.admin_gid != UFFDD_NO_GROUP && peer_in_group(s, uffdd_cfg.admin_gid);
}

static bool visible(const struct session *caller, bool all, const struct session *o)
{
	/* Inspection connections are nobody's business: listed nowhere. */
	if (o->inspect)
		return false;
	return all || o->uid == caller->uid;
}

struct stats_sum {
	Uffdd__Stats *st;
	uint64_t *lat;
	const struct session *caller;
	bool all;
};

static void add_stats(struct session *s, void *data)
{
	struct stats_sum *sum = data;

	if (visible(sum->caller, sum->all, s))
		session_stats_fill(s, sum->st, sum->lat);
}

static void stats_finish(Uffdd__Stats *st, uint64_t *lat)
{
	size_t n = UFFDD_LAT_BUCKETS;

	while (n && !lat[n - 1])
		n--;
	st->n_latency_us_log2 = n;
	st->latency_us_log2 = lat;
}

int do_stats(struct req *q, Uffdd__Reply *rep, Uffdd__Stats *st, uint64_t *lat)
{
	const Uffdd__StatsGet *g = q->m->stats_get;
	struct stats_sum sum = { st, lat, q->s, false };

	if (g->has_all && g->all) {
		sum.all = sees_all(q->s);
		sessions_foreach(add_stats, &sum);
	} else if (g->has_session && g->session && g->session != q->s->id) {
		bool all = sees_all(q->s);
		sessions_lock();
		struct session *o = sessions_get_locked(g->session);
		if (o && !visible(q->s, all, o))
			o = NULL;
		if (o)
			session_stats_fill(o, st, lat);
		sessions_unlock();
		/* Another uid's session is answered as one that does not
		 * exist: the answer does not confirm it does. */
		if (!o)
			return fail(q, -ENOENT, "no session %" PRIu64, g->session);
	} else {
		session_stats_fill(q->s, st, lat);
	}
	stats_finish(st, lat);
	rep->stats = st;
	return 0;
}

/* ---- ListGet pages ---- */

/*
 * A page's size: the reply without entries at its largest (every field of
 * the largest value, a failure text filling struct req's room), plus, per
 * entry, the entry at its largest and its framing in the reply (a tag byte,
 * a length of up to LIST_LEN_BYTES).  The length of the reply inside the
 * message grows with the entries too: LIST_LEN_BYTES covers it.
 */
#define LIST_LEN_BYTES 3 /* a varint length below 2 MiB */

static void stats_largest(Uffdd__Stats *st, uint64_t *lat)
{
	uffdd__stats__init(st);
	st->has_faults = st->has_pages_copied = st->has_pages_zeroed = st->has_bytes_copied =
		st->has_pages_pushed = st->has_wp_faults = st->has_eagain = st->has_eexist =
			st->has_pages_total = st->has_pages_populated = st->has_deferred =
				st->has_unreadable = true;
	st->faults = st->pages_copied = st->pages_zeroed = st->bytes_copied = st->pages_pushed =
		st->wp_faults = st->eagain = st->eexist = st->pages_total = st->pages_populated =
			st->deferred = st->unreadable = UINT64_MAX;
	for (size_t i = 0; i < UFFDD_LAT_BUCKETS; i++)
		lat[i] = UINT64_MAX;
	st->n_latency_us_log2 = UFFDD_LAT_BUCKETS;
	st->latency_us_log2 = lat;
}

static size_t entry_largest(int what)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__ClientInfo c = UFFDD__CLIENT_INFO__INIT;
	Uffdd__RegionInfo r = UFFDD__REGION_INFO__INIT;
	Uffdd__PinInfo p = UFFDD__PIN_INFO__INIT;
	Uffdd__Stats st;
	uint64_t lat[UFFDD_LAT_BUCKETS];
	char name[sizeof(((struct session *)0)->name)];

	range.addr = range.len = UINT64_MAX;
	switch (what) {
	case UFFDD__LIST_GET__WHAT__CLIENTS:
		memset(name, '~', sizeof(name) - 1);
		name[sizeof(name) - 1] = '\0';
		stats_largest(&st, lat);
		c.session = UINT64_MAX;
		c.pid = -1; /* negative: ten bytes */
		c.uid = UINT32_MAX;
		c.name = name;
		c.has_regions = c.has_pinned_bytes = true;
		c.regions = UINT32_MAX;
		c.pinned_bytes = UINT64_MAX;
		c.stats = &st;
		return uffdd__client_info__get_packed_size(&c);
	case UFFDD__LIST_GET__WHAT__REGIONS:
		r.session = UINT64_MAX;
		r.range = &range;
		r.mode = UINT32_MAX;
		r.source = UFFDD__SOURCE_KIND__SOURCE_FD;
		r.has_pages_populated = r.has_pages_dirty = true;
		r.pages_populated = r.pages_dirty = UINT64_MAX;
		return uffdd__region_info__get_packed_size(&r);
	default:
		p.session = UINT64_MAX;
		p.range = &range;
		p.cookie = UINT64_MAX;
		return uffdd__pin_info__get_packed_size(&p);
	}
}

static size_t reply_largest(void)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	char text[sizeof(((struct req *)0)->text)];

	memset(text, '~', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	m.has_seq = true;
	m.seq = UINT64_MAX;
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	rep.error = INT32_MIN;
	rep.text = text;
	rep.has_next_cursor = rep.has_next_key = true;
	rep.next_cursor = rep.next_key = UINT64_MAX;
	return uffdd__msg__get_packed_size(&m) + LIST_LEN_BYTES;
}

size_t list_limit_max(int what)
{
	return (PIN_PROTO_MAX_MSG - reply_largest()) / (1 + LIST_LEN_BYTES + entry_largest(what));
}

static void *list_part(struct list *l, int part, size_t size)
{
	if (!l->part[part])
		l->part[part] = calloc(l->limit ? l->limit : 1, size);
	if (!l->part[part])
		l->error = -ENOMEM;
	return l->part[part];
}

static void list_client(struct list *l, struct session *s)
{
	Uffdd__ClientInfo *c = (Uffdd__ClientInfo *)l->part[LIST_ENTRIES] + l->n;
	Uffdd__Stats *st = (Uffdd__Stats *)l->part[LIST_STATS] + l->n;
	uint64_t *lat = (uint64_t *)l->part[LIST_LAT] + l->n * UFFDD_LAT_BUCKETS;
	char *name = (char *)l->part[LIST_NAMES] + l->n * sizeof(s->name);

	uffdd__client_info__init(c);
	uffdd__stats__init(st);
	c->session = s->id;
	c->uid = s->uid;
	pthread_mutex_lock(&s->lock);
	c->pid = s->pid;
	memcpy(name, s->name, sizeof(s->name));
	c->has_regions = c->has_pinned_bytes = true;
	c->regions = (uint32_t)s->nregions;
	c->pinned_bytes = s->pinned;
	pthread_mutex_unlock(&s->lock);
	c->name = name;
	session_stats_fill(s, st, lat);
	stats_finish(st, lat);
	c->stats = st;
	((void **)l->part[LIST_PTRS])[l->n++] = c;
}

static Uffdd__Range *list_range(struct list *l, uint64_t addr, uint64_t len)
{
	Uffdd__Range *r = (Uffdd__Range *)l->part[LIST_RANGES] + l->n;

	uffdd__range__init(r);
	r->addr = addr;
	r->len = len;
	return r;
}

/* The first region of s starting at key or after. */
static size_t region_from(const struct session *s, uint64_t key)
{
	size_t lo = 0, hi = s->nregions;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->regions[mid]->start < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The regions of s from key on, while the page has room; returns the key of
 * the first one left out (0: none was). */
static uint64_t list_regions(struct list *l, struct session *s, uint64_t key)
{
	uint64_t next = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = region_from(s, key); i < s->nregions; i++) {
		const struct region *r = s->regions[i];
		if (l->n == l->limit) {
			next = r->start;
			break;
		}
		Uffdd__RegionInfo *ri = (Uffdd__RegionInfo *)l->part[LIST_ENTRIES] + l->n;
		uffdd__region_info__init(ri);
		ri->session = s->id;
		ri->range = list_range(l, r->start, r->len);
		ri->mode = r->mode;
		ri->source = source_is_zero(r->src)  ? UFFDD__SOURCE_KIND__SOURCE_ZERO
			     : source_remote(r->src) ? UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER
						     : UFFDD__SOURCE_KIND__SOURCE_FD;
		ri->has_pages_populated = ri->has_pages_dirty = true;
		ri->pages_populated = STAT_GET(r->n_populated);
		ri->pages_dirty = STAT_GET(r->n_dirty);
		((void **)l->part[LIST_PTRS])[l->n++] = ri;
	}
	pthread_mutex_unlock(&s->lock);
	return next;
}

/* The pins of s in cookie order (a cookie is one pin's in a session) from
 * key on, while the page has room; returns the cookie of the first one left
 * out (0: none was).  O(log n) to the first, then one step each. */
static uint64_t list_pins(struct list *l, struct session *s, uint64_t key)
{
	const struct pin_set *ps = &s->pins;
	uint64_t next = 0;

	pthread_mutex_lock(&s->lock);
	for (ssize_t i = pins_from(ps, key); i >= 0; i = pins_next(ps, (size_t)i)) {
		const struct pin_rec *p = &ps->v[i];
		if (l->n == l->limit) {
			next = p->cookie;
			break;
		}
		Uffdd__PinInfo *pi = (Uffdd__PinInfo *)l->part[LIST_ENTRIES] + l->n;
		uffdd__pin_info__init(pi);
		pi->session = s->id;
		pi->range = list_range(l, p->addr, p->len);
		pi->cookie = p->cookie;
		((void **)l->part[LIST_PTRS])[l->n++] = pi;
	}
	pthread_mutex_unlock(&s->lock);
	return next;
}

/* The page's parts for limit entries of its kind. */
static int list_alloc(struct list *l)
{
	size_t entry = l->g->what == UFFDD__LIST_GET__WHAT__CLIENTS   ? sizeof(Uffdd__ClientInfo)
		       : l->g->what == UFFDD__LIST_GET__WHAT__REGIONS ? sizeof(Uffdd__RegionInfo)
								      : sizeof(Uffdd__PinInfo);

	list_part(l, LIST_ENTRIES, entry);
	list_part(l, LIST_PTRS, sizeof(void *));
	if (l->g->what == UFFDD__LIST_GET__WHAT__CLIENTS) {
		list_part(l, LIST_STATS, sizeof(Uffdd__Stats));
		list_part(l, LIST_LAT, UFFDD_LAT_BUCKETS * sizeof(uint64_t));
		list_part(l, LIST_NAMES, sizeof(((struct session *)0)->name));
	} else {
		list_part(l, LIST_RANGES, sizeof(Uffdd__Range));
	}
	return l->error;
}

/* The entries of s from key on; pins counted no further than the page
 * needs (O(log n + limit)). */
static size_t list_avail(const struct list *l, struct session *s, uint64_t key)
{
	const Uffdd__ListGet *g = l->g;
	size_t n = 0;

	if (g->what == UFFDD__LIST_GET__WHAT__CLIENTS)
		return 1;
	pthread_mutex_lock(&s->lock);
	if (g->what == UFFDD__LIST_GET__WHAT__REGIONS)
		n = s->nregions - region_from(s, key);
	else if (!key)
		n = s->pins.n;
	else
		for (ssize_t i = pins_from(&s->pins, key); i >= 0 && n < l->limit;
		     i = pins_next(&s->pins, (size_t)i))
			n++;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/*
 * The session the page may list after s, or its first when s is NULL
 * (visible to the caller, the one asked for, at or after the cursor), under
 * the global lock: the list is in id order (session.c keeps it), so a page
 * starts at its cursor and reads no session past the ones it lists, and
 * the one after them.
 */
static struct session *list_next(const struct list *l, struct session *s)
{
	const Uffdd__ListGet *g = l->g;
	uint64_t cursor = g->has_cursor ? g->cursor : 0;
	bool one = g->has_session && g->session;

	if (s)
		s = one ? NULL : s->gnext;
	else
		s = sessions_from_locked(one && g->session > cursor ? g->session : cursor);
	for (; s; s = one ? NULL : s->gnext)
		if (visible(l->caller, l->all, s) && (!one || s->id == g->session))
			return s;
	return NULL;
}

/*
 * The page, under the global lock: entries at or after (cursor,
 * cursor_key) in (session id, key) order, and where the next page begins.
 * Returns whether any session could be listed.
 */
static bool list_build(struct list *l)
{
	const Uffdd__ListGet *g = l->g;
	uint64_t cursor = g->has_cursor ? g->cursor : 0;
	uint64_t key = g->has_cursor_key ? g->cursor_key : 0;
	Uffdd__Reply *rep = l->rep;
	struct session *first = list_next(l, NULL);
	size_t avail = 0;

	/* Room for what there is, when less than the limit (one at least: a
	 * page is never empty when more follow).  Entries added meanwhile
	 * end the page early, at the right cursor; entries removed meanwhile
	 * (under a session's own lock) leave room the next sessions fill. */
	for (struct session *s = first; s && avail < l->limit; s = list_next(l, s))
		avail += list_avail(l, s, s->id == cursor ? key : 0);
	if (avail < l->limit)
		l->limit = avail ? avail : 1;
	if (list_alloc(l) < 0)
		return first != NULL;
	rep->has_next_cursor = rep->has_next_key = true;
	for (struct session *s = first; s; s = list_next(l, s)) {
		uint64_t from = s->id == cursor ? key : 0, next = 0;

		if (l->n == l->limit) {
			rep->next_cursor = s->id;
			break;
		}
		switch (g->what) {
		case UFFDD__LIST_GET__WHAT__CLIENTS:
			list_client(l, s);
			break;
		case UFFDD__LIST_GET__WHAT__REGIONS:
			next = list_regions(l, s, from);
			break;
		default:
			next = list_pins(l, s, from);
			break;
		}
		if (next) {
			rep->next_cursor = s->id;
			rep->next_key = next;
			break;
		}
	}
	void **ptrs = l->part[LIST_PTRS];
	switch (g->what) {
	case UFFDD__LIST_GET__WHAT__CLIENTS:
		rep->clients = (Uffdd__ClientInfo **)ptrs;
		rep->n_clients = l->n;
		break;
	case UFFDD__LIST_GET__WHAT__REGIONS:
		rep->regions = (Uffdd__RegionInfo **)ptrs;
		rep->n_regions = l->n;
		break;
	default:
		rep->pins = (Uffdd__PinInfo **)ptrs;
		rep->n_pins = l->n;
		break;
	}
	return first != NULL;
}

void list_free(struct list *l)
{
	for (size_t i = 0; i < LIST_PARTS; i++)
		free(l->part[i]);
}

int do_list(struct req *q, struct list *l)
{
	const Uffdd__ListGet *g = q->m->list_get;

	if (g->what != UFFDD__LIST_GET__WHAT__CLIENTS &&
	    g->what != UFFDD__LIST_GET__WHAT__REGIONS && g->what != UFFDD__LIST_GET__WHAT__PINS)
		return fail(q, -EINVAL, "no list of kind %d", (int)g->what);
	size_t max = list_limit_max(g->what);
	l->g = g;
	l->caller = q->s;
	l->all = sees_all(q->s);
	l->limit = g->has_limit && g->limit && g->limit < max ? g->limit : max;
	sessions_lock();
	bool found = list_build(l);
	sessions_unlock();
	if (l->error) {
		l->rep->n_clients = l->rep->n_regions = l->rep->n_pins = 0;
		return fail(q, l->error, "out of memory");
	}
	/* The one session asked for, when the caller may not see it, is
	 * answered as one that does not exist. */
	if (g->has_session && g->session && !found && !(g->has_cursor && g->cursor > g->session))
		return fail(q, -ENOENT, "no session %" PRIu64, g->session);
	return 0;
}

/* Runs per WorkingSetGet reply: 24 encoded bytes each at most, well inside
 * one datagram. */
#define WSET_PER_REPLY 8192

/* Entries [from, from + n) of the recorded working set; *ret_buf and
 * rep->working_set are the caller's to free. */
int do_working_set_get(struct req *q, Uffdd__Reply *rep, Uffdd__Range **ret_buf)
{
	const Uffdd__WorkingSetGet *g = q->m->working_set_get;
	struct session *s = q->s;
	uint64_t from = g->has_from ? g->from : 0;
	size_t nwset;
	const struct state_range *wset = state_wset(s->st, &nwset);

	if (from > nwset)
		return fail(q, -ERANGE, "from %" PRIu64 " is past the %zu runs recorded", from,
			    nwset);
	size_t n = nwset - (size_t)from < WSET_PER_REPLY ? nwset - (size_t)from : WSET_PER_REPLY;
	Uffdd__Range *v = calloc(n ? n : 1, sizeof(*v));
	Uffdd__Range **pv = calloc(n ? n : 1, sizeof(*pv));
	if (!v || !pv) {
		free(v);
		free(pv);
		return fail(q, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		const struct state_range *w = &wset[from + i];
		uffdd__range__init(&v[i]);
		v[i].addr = w->addr;
		v[i].len = w->end - w->addr;
		pv[i] = &v[i];
	}
	rep->n_working_set = n;
	rep->working_set = pv;
	rep->has_working_set_total = 1;
	rep->working_set_total = nwset;
	*ret_buf = v;
	return 0;
}
