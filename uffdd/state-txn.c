// SPDX-License-Identifier: MIT
/*
 * A session's durable record, changed: its bitmaps made and freed, its
 * records added and deleted, the commit that makes the pending records,
 * metadata and reply take effect at once, and the reads of what is
 * committed.  The layout is state-internal.h's.  It may call state.c (a
 * record checked as state_open() will), state-arena.c, util.c, log.c and
 * libpin's private helpers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "state-internal.h"

/* ---- record slots ---- */

/* The slots a txn that was never committed left behind: not live now, and
 * they must not become so at our first commit. */
static void scrub(struct state *st)
{
	uint64_t txn = st->com.txn;

	if (!st->scrub)
		return;
	for (uint64_t i = 0; i < st->table_cap; i++) {
		struct entry *e = &st->table[i];

		if (e->born > txn)
			e->born = 0;
		if (e->died > txn)
			e->died = 0;
	}
	st->scrub = false;
}

/* A table twice as large, holding the same slots; the old one is freed once
 * the commit that names the new one is done. */
static int table_grow(struct state *st)
{
	uint64_t cap = st->table_cap * 2, off;

	if (cap > TABLE_MAX)
		return -EFBIG;
	if (reserve((void **)&st->free_slots, &st->free_slots_cap, st->nfree_slots + cap / 2,
		    sizeof(*st->free_slots)))
		return -ENOMEM;
	off = arena_get(st, cap * sizeof(struct entry));
	if (!off)
		return -EFBIG;
	memcpy(st->base + off, st->table, st->table_cap * sizeof(struct entry));
	arena_free(st, st->table_off, st->table_cap * sizeof(struct entry), st->table_fresh);
	/* Popped lowest first. */
	for (uint64_t i = cap; i-- > st->table_cap;)
		st->free_slots[st->nfree_slots++] = (uint32_t)i;
	st->table = (struct entry *)(st->base + off);
	st->table_off = off;
	st->table_cap = cap;
	st->table_fresh = true;
	return 0;
}

/* ---- bitmaps ---- */

uint64_t *state_bm_new(struct state *st, uint64_t nbits)
{
	uint64_t off;

	if (!nbits) {
		errno = EINVAL;
		return NULL;
	}
	off = nbits / 8 > st->size ? 0 : arena_get(st, bm_bytes(nbits));
	if (!off) {
		errno = EFBIG;
		return NULL;
	}
	if (bm_remember(st, off, nbits)) {
		arena_free(st, off, bm_bytes(nbits), true);
		errno = ENOMEM;
		return NULL;
	}
	return (uint64_t *)(st->base + off);
}

uint64_t state_room(const struct state *st)
{
	return st->size - ARENA_OFF - st->used;
}

void state_bm_free(struct state *st, uint64_t *bm, uint64_t nbits)
{
	uint64_t off = state_bm_off(st, bm);
	struct bmkey *k;

	if (!bm)
		return;
	k = bm_find(st, off);
	if (!k || k->nbits != nbits) {
		ulog(LOG_ERR,
		     "state %" PRIu64 ": freeing a bitmap at %#" PRIx64 " of %" PRIu64
		     " bits that was not made so",
		     st->ident.id, off, nbits);
		return;
	}
	bm_forget(st, k);
	arena_free(st, off, bm_bytes(nbits), false);
}

uint64_t state_bm_off(const struct state *st, const uint64_t *bm)
{
	return bm ? (uint64_t)((const uint8_t *)bm - st->base) : 0;
}

uint64_t *state_bm_at(struct state *st, uint64_t off, uint64_t nbits)
{
	const struct bmkey *k = off ? bm_find(st, off) : NULL;

	if (!k || k->nbits != nbits)
		return NULL;
	return (uint64_t *)(st->base + off);
}

/* ---- records ---- */

/* What state_open() will check of it, so that a bug shows here, not at a restart. */
static int rec_ok(struct state *st, const struct state_rec *rec)
{
	char why[160];

	if (check_rec(st, rec, 0, why, sizeof(why)) < 0)
		return -EINVAL;
	if (rec->kind != STATE_REGION)
		return 0;

	uint64_t nbits = rec->len >> uffdd_page_shift;

	if (!state_bm_at(st, rec->populated, nbits) ||
	    (rec->zero && !state_bm_at(st, rec->zero, nbits)) ||
	    (rec->dirty && !state_bm_at(st, rec->dirty, nbits)))
		return -EINVAL;
	return 0;
}

int state_add(struct state *st, const struct state_rec *rec, uint32_t *ret_slot)
{
	uint64_t txn = st->com.txn + 1;
	struct entry *e;
	uint32_t slot;
	int r;

	r = rec_ok(st, rec);
	if (r < 0)
		return r;
	scrub(st);
	if (!st->nfree_slots) {
		r = table_grow(st);
		if (r < 0)
			return r;
	}
	slot = st->free_slots[--st->nfree_slots];
	e = &st->table[slot];
	/* Pending before anything else changes: a reused slot, dead at the
	 * commit, must never look live with half its new fields. */
	__atomic_store_n(&e->born, txn, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	e->rec = *rec;
	e->died = 0;
	*ret_slot = slot;
	return 0;
}

void state_del(struct state *st, uint32_t slot)
{
	uint64_t txn = st->com.txn + 1;
	struct entry *e;

	if (slot >= st->table_cap)
		return;
	scrub(st);
	e = &st->table[slot];
	if (!e->born || e->died || e->born > txn)
		return;
	if (slot_push(&st->dead_slots, &st->ndead_slots, &st->dead_slots_cap, slot) < 0)
		ulog(LOG_WARNING, "state %" PRIu64 ": slot %" PRIu32 " not reusable: out of memory",
		     st->ident.id, slot);
	__atomic_store_n(&e->died, txn, __ATOMIC_RELEASE);
}

int state_commit(struct state *st, uint64_t seq, const void *reply, size_t len)
{
	struct state_slot s = {
		.txn = st->com.txn + 1,
		.seq = st->com.seq,
		.reply_area = st->com.reply_area,
		.reply_len = st->com.reply_len,
		.table_off = st->table_off,
		.table_cap = st->table_cap,
		.meta = st->meta_next,
	};
	uint8_t next = !st->hdr->cur;

	if (len > PIN_PROTO_MAX_MSG || (len && !reply))
		return -EINVAL;
	/* A txn state_open() refuses is never written: the record stays at
	 * the last one, readable by a successor. */
	if (st->com.txn == STATE_TXN_LAST)
		return -EOVERFLOW;
	if (reserve((void **)&st->free_slots, &st->free_slots_cap,
		    st->nfree_slots + st->ndead_slots, sizeof(*st->free_slots)))
		return -ENOMEM;
	scrub(st);
	if (seq) {
		s.seq = seq;
		s.reply_area = !st->com.reply_area;
		s.reply_len = (uint32_t)len;
		if (len)
			memcpy(st->base + REPLY_OFF + s.reply_area * (uint64_t)PIN_PROTO_MAX_MSG,
			       reply, len);
	}
	st->hdr->slot[next] = s;
	/* The commit: one byte, after everything it names. */
	__atomic_store_n(&st->hdr->cur, next, __ATOMIC_RELEASE);
	st->com = s;
	st->table_fresh = false;
	for (size_t i = 0; i < st->nlater; i++)
		arena_free(st, st->later[i].off, st->later[i].len, true);
	st->nlater = 0;
	while (st->ndead_slots)
		st->free_slots[st->nfree_slots++] = st->dead_slots[--st->ndead_slots];
	return 0;
}

uint64_t state_last(const struct state *st, const void **ret_reply, size_t *ret_len)
{
	*ret_reply = st->com.seq ? st->base + REPLY_OFF +
					   st->com.reply_area * (uint64_t)PIN_PROTO_MAX_MSG
				 : NULL;
	*ret_len = st->com.seq ? st->com.reply_len : 0;
	return st->com.seq;
}

int state_foreach(struct state *st,
		  int (*fn)(const struct state_rec *rec, uint32_t slot, void *data), void *data)
{
	/* st->table is read each time: fn may add records and grow it. */
	for (uint64_t i = 0; i < st->table_cap; i++) {
		if (!is_live(&st->table[i], st->com.txn))
			continue;
		int r = fn(&st->table[i].rec, (uint32_t)i, data);

		if (r < 0)
			return r;
	}
	return 0;
}
