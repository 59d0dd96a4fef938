/* SPDX-License-Identifier: MIT */
/*
 * fuzz-list's session table (fuzz-list-table.c), in place of
 * session-table.c's:
 * a base of FZ_BASE sessions built once per process, the changes an input
 * makes to it, undone after the input so that every input starts from the
 * same table (a crash reproduces alone), and the marks the walk's checks
 * keep on each entry.
 */
#ifndef FUZZ_LIST_H
#define FUZZ_LIST_H

#include "uffdd.h"

/* Sessions of the base: more than a page of clients holds (list_limit_max()
 * 452 when written), for each uid that calls. */
#define FZ_BASE 1024
/* Entries of one session at most: more than a page of regions or pins holds
 * (3796 and 5238 when written). */
#define FZ_ENTRIES 8192
/* Sessions an input adds (its caller's among them), and the entries of each
 * kind one of them starts with. */
#define FZ_ADDED 32
#define FZ_FEW	 16
/* Changes of one input: before its walk, and one after each page. */
#define FZ_SETUP      16
#define FZ_PAGES      16
#define FZ_CHANGES    (FZ_SETUP + FZ_PAGES)
#define FZ_PAGE_SHIFT 12

/* What the walk saw of an entry: added while it went on, and times listed.
 * All zero: there before the walk, not listed yet. */
struct mark {
	bool during;
	unsigned int seen;
};

/* A pin as the table knows it, in cookie order. */
struct fz_pin {
	uint64_t cookie;
	struct mark m;
};

/* A session of the table, and the marks of it, its regions (in their
 * array's order) and its pins (the same as s.pins, in cookie order).  A base
 * session keeps its arrays as built, to be restored after an input that
 * changed it (dirty) or removed it. */
struct fz_session {
	struct session s;
	struct mark self;
	struct mark *regions;
	struct fz_pin *pins;
	size_t regions_cap, npins, pins_cap;
	bool base, dirty, removed;
	struct region **regions0;
	size_t nregions0, npins0;
	struct fz_pin *pins0;
	struct pin_set set0;
};

static inline struct fz_session *fz_of(struct session *s)
{
	return (struct fz_session *)s;
}

/* The walk has begun: what is added from now on is marked so. */
extern bool fz_walking;
/* What the input adds takes the largest values: addresses, cookies, names,
 * counters. */
extern bool fz_big;

/* The live sessions, in id order as session-table.c keeps them: how many,
 * the i-th, the index of the first whose id is id or above (fz_nsessions()
 * if none), and the one of that id (NULL: none). */
size_t fz_nsessions(void);
struct session *fz_session_at(size_t i);
size_t fz_index_from(uint64_t id);
struct session *fz_session_get(uint64_t id);

/* The base table, built on the first call. */
void fz_table_init(void);
/* Undo what the input changed: the base table as built, next ids again. */
void fz_table_reset(void);

/* A session after the others (NULL once ids run out). */
struct session *fz_session_add(uid_t uid);
void fz_session_del(struct session *s);
/* A one-page region at page index pg, unless one starts there. */
void fz_region_add(struct session *s, uint64_t pg);
void fz_region_del(struct session *s, size_t i);
/* A pin with that cookie, unless the session has one; the i-th pin in
 * cookie order out. */
void fz_pin_add(struct session *s, uint64_t cookie);
void fz_pin_del(struct session *s, size_t i);
/* The first region starting at start or above, the first pin whose cookie
 * is cookie or above (the count when none). */
size_t fz_region_from(const struct session *s, uint64_t start);
size_t fz_pin_from(const struct session *s, uint64_t cookie);

#endif /* FUZZ_LIST_H */
