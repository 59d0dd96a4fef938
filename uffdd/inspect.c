// SPDX-License-Identifier: MIT
/*
 * The replies that show what the daemon serves (uffdctl's view): StatsGet of
 * one session or all, ListGet of clients, regions or pins, and the recorded
 * working set, WorkingSetGet, in pages of WSET_PER_REPLY runs.  Other
 * sessions are read under the global lock and each one's own lock.  It may
 * call session.c, source.c and util.c.
 */
#include <stdio.h>
#include <string.h>

#include "uffdd.h"

struct stats_sum {
	Uffdd__Stats *st;
	uint64_t *lat;
};

static void add_stats(struct session *s, void *data)
{
	struct stats_sum *sum = data;

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
	struct stats_sum sum = { st, lat };

	if (g->has_all && g->all) {
		sessions_foreach(add_stats, &sum);
	} else if (g->has_session && g->session && g->session != q->s->id) {
		sessions_lock();
		struct session *o = sessions_get_locked(g->session);
		if (o)
			session_stats_fill(o, st, lat);
		sessions_unlock();
		if (!o)
			return fail(q, -ESRCH, "no session %" PRIu64, g->session);
	} else {
		session_stats_fill(q->s, st, lat);
	}
	stats_finish(st, lat);
	rep->stats = st;
	return 0;
}

static void *list_alloc(struct list *l, size_t size)
{
	void **a = realloc(l->allocs, (l->nallocs + 1) * sizeof(*a));
	void *p = a ? calloc(1, size) : NULL;

	if (a)
		l->allocs = a;
	if (!p) {
		l->error = -ENOMEM;
		return NULL;
	}
	l->allocs[l->nallocs++] = p;
	return p;
}

/* Append p to the repeated field (*v, *n). */
static void list_push(struct list *l, void ***v, size_t *n, void *p)
{
	void **nv = realloc(*v, (*n + 1) * sizeof(*nv));

	if (!nv) {
		l->error = -ENOMEM;
		return;
	}
	*v = nv;
	nv[(*n)++] = p;
}

static Uffdd__Range *list_range(struct list *l, uint64_t addr, uint64_t len)
{
	Uffdd__Range *r = list_alloc(l, sizeof(*r));

	if (r) {
		uffdd__range__init(r);
		r->addr = addr;
		r->len = len;
	}
	return r;
}

static void list_client(struct list *l, struct session *s)
{
	Uffdd__ClientInfo *c = list_alloc(l, sizeof(*c));
	Uffdd__Stats *st = list_alloc(l, sizeof(*st));
	uint64_t *lat = list_alloc(l, UFFDD_LAT_BUCKETS * sizeof(*lat));
	char *name = list_alloc(l, sizeof(s->name));

	if (!c || !st || !lat || !name)
		return;
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
	list_push(l, (void ***)&l->rep->clients, &l->rep->n_clients, c);
}

static void list_regions(struct list *l, struct session *s)
{
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nregions && !l->error; i++) {
		const struct region *r = s->regions[i];
		Uffdd__RegionInfo *ri = list_alloc(l, sizeof(*ri));
		if (!ri)
			break;
		uffdd__region_info__init(ri);
		ri->session = s->id;
		ri->range = list_range(l, r->start, r->len);
		ri->mode = r->mode;
		ri->source = source_is_zero(r->src) ? UFFDD__SOURCE_KIND__SOURCE_ZERO
						    : UFFDD__SOURCE_KIND__SOURCE_FD;
		ri->has_pages_populated = ri->has_pages_dirty = true;
		ri->pages_populated = STAT_GET(r->n_populated);
		ri->pages_dirty = STAT_GET(r->n_dirty);
		if (ri->range)
			list_push(l, (void ***)&l->rep->regions, &l->rep->n_regions, ri);
	}
	pthread_mutex_unlock(&s->lock);
}

static void list_pins(struct list *l, struct session *s)
{
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->npins && !l->error; i++) {
		Uffdd__PinInfo *pi = list_alloc(l, sizeof(*pi));
		if (!pi)
			break;
		uffdd__pin_info__init(pi);
		pi->session = s->id;
		pi->range = list_range(l, s->pins[i].addr, s->pins[i].len);
		pi->cookie = s->pins[i].cookie;
		if (pi->range)
			list_push(l, (void ***)&l->rep->pins, &l->rep->n_pins, pi);
	}
	pthread_mutex_unlock(&s->lock);
}

static void list_one(struct session *s, void *data)
{
	struct list *l = data;

	if (l->g->has_session && l->g->session && l->g->session != s->id)
		return;
	switch (l->g->what) {
	case UFFDD__LIST_GET__WHAT__CLIENTS:
		list_client(l, s);
		break;
	case UFFDD__LIST_GET__WHAT__REGIONS:
		list_regions(l, s);
		break;
	case UFFDD__LIST_GET__WHAT__PINS:
		list_pins(l, s);
		break;
	default:
		break;
	}
}

void list_free(struct list *l)
{
	for (size_t i = 0; i < l->nallocs; i++)
		free(l->allocs[i]);
	free(l->allocs);
	free(l->rep->clients);
	free(l->rep->regions);
	free(l->rep->pins);
}

int do_list(struct req *q, struct list *l)
{
	l->g = q->m->list_get;
	sessions_foreach(list_one, l);
	if (l->error)
		return fail(q, l->error, "out of memory");
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
