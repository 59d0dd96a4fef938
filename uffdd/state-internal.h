/* SPDX-License-Identifier: MIT */
/*
 * A session's durable record, private to its files: the file's layout (the
 * header, its commit slots, the record table's entries) and what the daemon
 * keeps beside it (struct state).  state-txn.c changes records and commits,
 * state.c makes and opens a record, state-arena.c keeps the arena's
 * allocator, the known bitmaps and the free record slots, state-now.c what
 * is durable at once.
 */
#ifndef UFFDD_STATE_INTERNAL_H
#define UFFDD_STATE_INTERNAL_H

#include "uffdd.h"

#define STATE_MAGIC   "UFFDDST1"
#define STATE_VERSION 1u

/* The header and both commit slots: one 4 KiB block, whatever the page size. */
#define HDR_BYTES ((uint64_t)4096)
/* Two reply areas of one datagram each: the committed reply is never the one
 * the next commit writes. */
#define REPLY_OFF HDR_BYTES
#define WSET_OFF  (REPLY_OFF + 2 * (uint64_t)PIN_PROTO_MAX_MSG)
#define ARENA_OFF (WSET_OFF + (uint64_t)UFFDD_WSET_MAX * sizeof(struct state_range))
/* The arena's unit: a cache line, so that two bitmaps never share one. */
#define UNIT ((uint64_t)64)
/* Records in the first table block; a full table doubles. */
#define TABLE_FIRST 64u
/* Slot numbers are uint32_t. */
#define TABLE_MAX UINT32_MAX
/* The last txn committed: the records pending for the next one carry its
 * number, which must not be 0 (never born). */
#define STATE_TXN_LAST (UINT64_MAX - 1)

/* One commit: what state_open() believes when cur names it. */
struct state_slot {
	uint64_t txn;
	uint64_t seq; /* the last request done; 0: none */
	uint32_t reply_area;
	uint32_t reply_len;
	uint64_t table_off; /* file offset of the record table */
	uint64_t table_cap; /* its slots */
	struct state_meta meta;
};

struct state_hdr {
	char magic[8];
	uint32_t version;
	uint8_t cur; /* the committed slot: written last, with a release store */
	uint8_t pad[3];
	uint64_t max_bytes; /* the file's size */
	struct state_ident ident;
	uint64_t wset_n; /* runs of the working set: durable at once, not at a commit */
	struct state_slot slot[2];
	/* The ids [first, end) of the fork children being made from this
	 * session: durable at once.  Last, so that a record from before it
	 * reads 0 there (none). */
	uint64_t making[2];
	/* The messages of the last read of the session's userfaultfd, as the
	 * kernel wrote them (state_events_buf()), ended by an empty one, and
	 * how many of them need no replay; durable at once. */
	uint32_t events_applied;
	uint32_t pad2;
	uint8_t events[STATE_EVENTS_MAX][PIN_UFFD_MSG_BYTES];
	/* The addresses [start, end) a placing ioctl may be filling now
	 * (state_placing_set()); durable at once.  Last, so that a record
	 * from before it reads 0 there (none). */
	uint64_t placing[2];
	/* Pages whose source could not give them (state_lost_add()), and,
	 * when the kernel refused to poison them, why the session is stranded
	 * (state_strand()): durable at once, set before the ioctl, or the
	 * end, they describe.  Last, so that a record from before them reads
	 * 0 there (none lost, not stranded). */
	uint64_t lost;
	uint32_t stranded; /* 0 or 1: stranded_why holds a terminated text */
	uint32_t pad3;
	char stranded_why[STATE_WHY_MAX];
};

_Static_assert(sizeof(struct state_hdr) <= HDR_BYTES, "the header outgrew its block");

/* A table slot: live when born <= the committed txn and not died <= it. */
struct entry {
	struct state_rec rec;
	uint64_t born, died; /* txn; 0: never born, not dead */
};

/* A run of the arena, in bytes from the start of the file. */
struct extent {
	uint64_t off, len;
};

/* A bitmap the arena holds, and its size in bits (open addressing). */
struct bmkey {
	uint64_t off; /* 0: an empty bucket */
	uint64_t nbits;
};

struct state {
	int fd;
	uint8_t *base;
	uint64_t size;
	struct state_hdr *hdr;
	struct state_ident ident;
	struct state_slot com;	     /* the committed slot, as written */
	struct state_meta meta_next; /* what the next commit writes */
	struct entry *table;	     /* the table being built (the committed one until it grows) */
	uint64_t table_off, table_cap;
	bool table_fresh; /* made in the open txn: nothing committed names it */
	bool scrub;	  /* slots written by a txn never committed: reset before any change */
	uint64_t wset_n;
	uint64_t making[2];
	uint64_t placing[2]; /* the dead daemon's, as read at state_open() */
	uint64_t lost;
	bool stranded;
	char stranded_why[STATE_WHY_MAX];
	/* The dead daemon's last read, decoded at state_open(): events_n of
	 * them, the first events_applied not to be replayed. */
	uint32_t events_n, events_applied;
	struct pin_uffd_event events[STATE_EVENTS_MAX];

	uint32_t *free_slots; /* a stack of slots neither live nor pending */
	size_t nfree_slots, free_slots_cap;
	uint32_t *dead_slots; /* deleted in the open txn: free after the commit */
	size_t ndead_slots, dead_slots_cap;

	struct extent *free; /* the arena's free runs, sorted and coalesced */
	size_t nfree, free_cap;
	struct extent *later; /* freed in the open txn: free after the commit */
	size_t nlater, later_cap;
	uint64_t used; /* arena bytes allocated */

	struct bmkey *bms; /* the bitmaps allocated; a power of two of buckets */
	size_t nbms, bms_cap;
};

static inline uint64_t round_unit(uint64_t n)
{
	return (n + UNIT - 1) & ~(UNIT - 1);
}

static inline uint64_t bm_bytes(uint64_t nbits)
{
	return (nbits + 63) / 64 * sizeof(uint64_t);
}

static inline bool is_live(const struct entry *e, uint64_t txn)
{
	return e->born && e->born <= txn && !(e->died && e->died <= txn);
}

/* state.c: a record checked as state_open() checks it; 0 or -EBADMSG with
 * why filled in. */
int check_rec(const struct state *st, const struct state_rec *r, uint32_t slot, char *why,
	      size_t whylen);

/* state-arena.c: the arena's allocator, the bitmaps known, the record slots. */
int reserve(void **v, size_t *cap, size_t n, size_t sz);
int arena_put(struct state *st, uint64_t off, uint64_t len);
uint64_t arena_get(struct state *st, uint64_t len);
void arena_free(struct state *st, uint64_t off, uint64_t len, bool now);
struct bmkey *bm_find(const struct state *st, uint64_t off);
int bm_remember(struct state *st, uint64_t off, uint64_t nbits);
void bm_forget(struct state *st, struct bmkey *k);
int slot_push(uint32_t **v, size_t *n, size_t *cap, uint32_t slot);

#endif
