// SPDX-License-Identifier: MIT
/*
 * A session's pins (struct pin_set): an array, a hash of it by cookie for
 * PinReport and PinRelease (O(1)), and the same array in cookie order for
 * ListGet pages, a treap whose links are indexes into the array: a page is
 * found in O(log n) and read in O(limit), and a pin goes in or out in
 * O(log n) (a sorted array would move O(n) entries per pin a client adds,
 * a copy and sort per page was O(n log n) for every page of the list).  The
 * treap's priorities come from a generator seeded from getrandom(), so a
 * client that picks its cookies cannot unbalance it.  It calls nothing in
 * the daemon; the caller holds the session's lock, or owns it alone.
 */
#include <stdlib.h>
#include <sys/random.h>

#include "uffdd.h"

/* Slots per pin in the hash, at least: probes stay short. */
#define PIN_HASH_LOAD 2
#define PIN_HASH_MIN  64

/* splitmix64's finaliser: every bit of x counts. */
static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* ---- the hash by cookie: index + 1 in open addressing, 0 free ---- */

static size_t pin_slot(uint64_t cookie, size_t cap)
{
	return (size_t)mix(cookie) & (cap - 1);
}

ssize_t pins_find(const struct pin_set *ps, uint64_t cookie)
{
	if (!ps->hash_cap)
		return -1;
	for (size_t h = pin_slot(cookie, ps->hash_cap);; h = (h + 1) & (ps->hash_cap - 1)) {
		uint32_t v = ps->hash[h];
		if (!v)
			return -1;
		if (ps->v[v - 1].cookie == cookie)
			return (ssize_t)(v - 1);
	}
}

/* The hash slot that holds pin i. */
static size_t hash_at(const struct pin_set *ps, size_t i)
{
	size_t h = pin_slot(ps->v[i].cookie, ps->hash_cap);

	while (ps->hash[h] != i + 1)
		h = (h + 1) & (ps->hash_cap - 1);
	return h;
}

static void hash_put(struct pin_set *ps, size_t i)
{
	size_t h = pin_slot(ps->v[i].cookie, ps->hash_cap);

	while (ps->hash[h])
		h = (h + 1) & (ps->hash_cap - 1);
	ps->hash[h] = (uint32_t)(i + 1);
}

/* Take slot h out of the linear-probing hash: later entries of its run move
 * back, so that every lookup still finds them. */
static void hash_remove(struct pin_set *ps, size_t h)
{
	size_t mask = ps->hash_cap - 1;

	ps->hash[h] = 0;
	for (size_t j = (h + 1) & mask; ps->hash[j]; j = (j + 1) & mask) {
		size_t home = pin_slot(ps->v[ps->hash[j] - 1].cookie, ps->hash_cap);
		/* Moved back unless its home lies cyclically in (h, j]. */
		if (h <= j ? (home > h && home <= j) : (home > h || home <= j))
			continue;
		ps->hash[h] = ps->hash[j];
		ps->hash[j] = 0;
		h = j;
	}
}

/* ---- the treap by cookie: links are index + 1, 0 none ---- */

static struct pin_rec *at(const struct pin_set *ps, uint32_t x)
{
	return &ps->v[x - 1];
}

/* Where the link to x is: its parent's child, or the root. */
static uint32_t *link_to(struct pin_set *ps, uint32_t x)
{
	uint32_t up = at(ps, x)->up;

	if (!up)
		return &ps->root;
	struct pin_rec *p = at(ps, up);
	return &p->kid[p->kid[1] == x];
}

/* x takes its parent's place, the parent becomes x's child. */
static void rotate_up(struct pin_set *ps, uint32_t x)
{
	struct pin_rec *c = at(ps, x);
	uint32_t up = c->up;
	struct pin_rec *p = at(ps, up);
	int d = p->kid[1] == x;
	uint32_t b = c->kid[!d];

	*link_to(ps, up) = x;
	c->up = p->up;
	p->kid[d] = b;
	if (b)
		at(ps, b)->up = up;
	c->kid[!d] = up;
	p->up = x;
}

static void treap_insert(struct pin_set *ps, uint32_t x)
{
	struct pin_rec *n = at(ps, x);
	uint32_t *l = &ps->root, up = 0;

	while (*l) {
		up = *l;
		struct pin_rec *p = at(ps, up);
		l = &p->kid[n->cookie > p->cookie];
	}
	*l = x;
	n->up = up;
	while (n->up && n->prio > at(ps, n->up)->prio)
		rotate_up(ps, x);
}

static void treap_remove(struct pin_set *ps, uint32_t x)
{
	struct pin_rec *n = at(ps, x);

	/* Down below its children, the one of higher priority rising. */
	while (n->kid[0] && n->kid[1])
		rotate_up(ps, n->kid[at(ps, n->kid[1])->prio > at(ps, n->kid[0])->prio]);
	uint32_t c = n->kid[0] ? n->kid[0] : n->kid[1];
	*link_to(ps, x) = c;
	if (c)
		at(ps, c)->up = n->up;
}

/* The pin at index last, moved to index i (its place in the array and in
 * the treap, and its hash slot, say so). */
static void move(struct pin_set *ps, size_t last, size_t i)
{
	uint32_t from = (uint32_t)(last + 1), to = (uint32_t)(i + 1);

	ps->hash[hash_at(ps, last)] = to;
	*link_to(ps, from) = to;
	ps->v[i] = ps->v[last];
	for (int d = 0; d < 2; d++)
		if (ps->v[i].kid[d])
			at(ps, ps->v[i].kid[d])->up = to;
}

/* ---- the set ---- */

int pins_reserve(struct pin_set *ps)
{
	if (ps->n >= UINT32_MAX - 1)
		return -ENOSPC;
	if (!ps->prio_state &&
	    getrandom(&ps->prio_state, sizeof(ps->prio_state), 0) != sizeof(ps->prio_state))
		return errno ? -errno : -EIO;
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? 2 * ps->cap : PIN_HASH_MIN;
		struct pin_rec *v = realloc(ps->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		ps->v = v;
		ps->cap = cap;
	}
	if ((ps->n + 1) * PIN_HASH_LOAD <= ps->hash_cap)
		return 0;
	size_t cap = ps->hash_cap ? 2 * ps->hash_cap : PIN_HASH_MIN;
	uint32_t *h = calloc(cap, sizeof(*h));
	if (!h)
		return -ENOMEM;
	free(ps->hash);
	ps->hash = h;
	ps->hash_cap = cap;
	for (size_t i = 0; i < ps->n; i++)
		hash_put(ps, i);
	return 0;
}

void pins_add(struct pin_set *ps, uint64_t addr, uint64_t len, uint64_t cookie, uint32_t slot)
{
	size_t i = ps->n++;

	/* splitmix64: a golden-ratio step, then the finaliser. */
	ps->prio_state += 0x9e3779b97f4a7c15ull;
	ps->v[i] = (struct pin_rec){ .addr = addr,
				     .len = len,
				     .cookie = cookie,
				     .slot = slot,
				     .prio = (uint32_t)(mix(ps->prio_state) >> 32) };
	hash_put(ps, i);
	treap_insert(ps, (uint32_t)(i + 1));
}

void pins_del(struct pin_set *ps, size_t i)
{
	size_t last = ps->n - 1;

	hash_remove(ps, hash_at(ps, i));
	treap_remove(ps, (uint32_t)(i + 1));
	if (i != last)
		move(ps, last, i);
	ps->n--;
}

ssize_t pins_from(const struct pin_set *ps, uint64_t cookie)
{
	uint32_t x = ps->root, best = 0;

	while (x) {
		const struct pin_rec *p = at(ps, x);
		if (p->cookie >= cookie)
			best = x;
		x = p->kid[p->cookie < cookie];
	}
	return (ssize_t)best - 1;
}

ssize_t pins_next(const struct pin_set *ps, size_t i)
{
	uint32_t x = (uint32_t)(i + 1), r = ps->v[i].kid[1];

	if (r) {
		while (at(ps, r)->kid[0])
			r = at(ps, r)->kid[0];
		return (ssize_t)r - 1;
	}
	/* Up while x is a right child: the first parent it is left of. */
	while (at(ps, x)->up && at(ps, at(ps, x)->up)->kid[1] == x)
		x = at(ps, x)->up;
	return (ssize_t)at(ps, x)->up - 1;
}

void pins_free(struct pin_set *ps)
{
	free(ps->v);
	free(ps->hash);
	*ps = (struct pin_set){ 0 };
}
