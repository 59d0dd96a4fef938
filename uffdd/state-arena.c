// SPDX-License-Identifier: MIT
/*
 * What the daemon keeps beside a session's durable record (daemon memory
 * only, rebuilt from the file by state_open()): the arena's allocator (the
 * free runs, and those freed in the open txn, free after its commit), the
 * bitmaps the arena holds, the stacks of free record slots.  The layout is
 * state-internal.h's.  It may call log.c and util.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "state-internal.h"

/* Grow *v (of *cap elements of size sz) to hold n; 0 or -ENOMEM. */
int reserve(void **v, size_t *cap, size_t n, size_t sz)
{
	size_t c = *cap ? *cap : 16;
	void *p;

	if (n <= *cap)
		return 0;
	while (c < n)
		c *= 2;
	p = reallocarray(*v, c, sz);
	if (!p)
		return -ENOMEM;
	*v = p;
	*cap = c;
	return 0;
}

/* ---- the arena's allocator (daemon memory only) ---- */

/* Give [off, off + len) back to the free runs, merged with its neighbours. */
int arena_put(struct state *st, uint64_t off, uint64_t len)
{
	size_t lo = 0, hi = st->nfree;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (st->free[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	bool left = lo > 0 && st->free[lo - 1].off + st->free[lo - 1].len == off;
	bool right = lo < st->nfree && off + len == st->free[lo].off;

	if (left && right) {
		st->free[lo - 1].len += len + st->free[lo].len;
		memmove(&st->free[lo], &st->free[lo + 1], (st->nfree - lo - 1) * sizeof(*st->free));
		st->nfree--;
	} else if (left) {
		st->free[lo - 1].len += len;
	} else if (right) {
		st->free[lo].off = off;
		st->free[lo].len += len;
	} else {
		if (reserve((void **)&st->free, &st->free_cap, st->nfree + 1, sizeof(*st->free)))
			return -ENOMEM;
		memmove(&st->free[lo + 1], &st->free[lo], (st->nfree - lo) * sizeof(*st->free));
		st->free[lo] = (struct extent){ off, len };
		st->nfree++;
	}
	return 0;
}

/*
 * Zero [off, off + len): its whole pages by punching them out of the file
 * (shmem then holds no memory for them: a bitmap of a large sparse region
 * costs what is written of it), the partial pages at its ends by hand.
 */
static void arena_zero(struct state *st, uint64_t off, uint64_t len)
{
	uint64_t page = uffdd_page ? uffdd_page : 1, lo = (off + page - 1) & ~(page - 1),
		 hi = (off + len) & ~(page - 1);

	if (uffdd_page && lo < hi &&
	    fallocate(st->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)lo,
		      (off_t)(hi - lo)) == 0) {
		memset(st->base + off, 0, lo - off);
		memset(st->base + hi, 0, off + len - hi);
		return;
	}
	memset(st->base + off, 0, len);
}

/* First fit: the file offset of len zeroed bytes, or 0 when none is free. */
uint64_t arena_get(struct state *st, uint64_t len)
{
	len = round_unit(len);
	for (size_t i = 0; i < st->nfree; i++) {
		struct extent *x = &st->free[i];
		uint64_t off = x->off;

		if (x->len < len)
			continue;
		x->off += len;
		x->len -= len;
		if (!x->len) {
			memmove(x, x + 1, (st->nfree - i - 1) * sizeof(*x));
			st->nfree--;
		}
		st->used += len;
		arena_zero(st, off, len);
		return off;
	}
	return 0;
}

/* Free now (nothing committed names it) or after the next commit. */
void arena_free(struct state *st, uint64_t off, uint64_t len, bool now)
{
	len = round_unit(len);
	if (now ? arena_put(st, off, len) == 0
		: reserve((void **)&st->later, &st->later_cap, st->nlater + 1,
			  sizeof(*st->later)) == 0) {
		if (now)
			st->used -= len;
		else
			st->later[st->nlater++] = (struct extent){ off, len };
		return;
	}
	/* Kept, never reused early: a committed record may still name it. */
	ulog(LOG_WARNING,
	     "state %" PRIu64 ": arena run [%#" PRIx64 ", %#" PRIx64
	     ") not reusable: out of memory",
	     st->ident.id, off, off + len);
}

/* ---- the bitmaps allocated: off -> nbits ---- */

static size_t bm_hash(const struct state *st, uint64_t off)
{
	return (size_t)((off / UNIT) * 0x9e3779b97f4a7c15ull) & (st->bms_cap - 1);
}

struct bmkey *bm_find(const struct state *st, uint64_t off)
{
	if (!st->bms_cap)
		return NULL;
	for (size_t i = bm_hash(st, off);; i = (i + 1) & (st->bms_cap - 1)) {
		if (st->bms[i].off == off)
			return &st->bms[i];
		if (!st->bms[i].off)
			return NULL;
	}
}

static void bm_insert(struct bmkey *v, size_t cap, size_t h, struct bmkey k)
{
	size_t i = h;

	while (v[i].off)
		i = (i + 1) & (cap - 1);
	v[i] = k;
}

int bm_remember(struct state *st, uint64_t off, uint64_t nbits)
{
	/* At most half full: probes stay short. */
	if ((st->nbms + 1) * 2 > st->bms_cap) {
		size_t cap = st->bms_cap ? st->bms_cap * 2 : 64;
		struct bmkey *v = calloc(cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		struct bmkey *old = st->bms;
		size_t ocap = st->bms_cap;

		st->bms = v;
		st->bms_cap = cap;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].off)
				bm_insert(v, cap, bm_hash(st, old[i].off), old[i]);
		free(old);
	}
	bm_insert(st->bms, st->bms_cap, bm_hash(st, off), (struct bmkey){ off, nbits });
	st->nbms++;
	return 0;
}

/* Remove a bucket, shifting back the ones its removal would cut off. */
void bm_forget(struct state *st, struct bmkey *k)
{
	size_t mask = st->bms_cap - 1, i = (size_t)(k - st->bms), j = i;

	st->bms[i].off = 0;
	for (;;) {
		j = (j + 1) & mask;
		if (!st->bms[j].off)
			break;
		size_t h = bm_hash(st, st->bms[j].off);

		/* Stays when its home lies cyclically in (i, j]. */
		if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
			continue;
		st->bms[i] = st->bms[j];
		st->bms[j].off = 0;
		i = j;
	}
	st->nbms--;
}

/* ---- record slots ---- */

int slot_push(uint32_t **v, size_t *n, size_t *cap, uint32_t slot)
{
	if (reserve((void **)v, cap, *n + 1, sizeof(**v)))
		return -ENOMEM;
	(*v)[(*n)++] = slot;
	return 0;
}
