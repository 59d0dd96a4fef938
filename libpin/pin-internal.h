/* SPDX-License-Identifier: MIT */
/*
 * Declarations shared by the pinning files: the cache entry, the backends,
 * the interval map (range.c) and the userfaultfd monitor (pin-monitor.c).
 * Never installed.
 */
#ifndef LIBPIN_PIN_INTERNAL_H
#define LIBPIN_PIN_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "libpin-private.h"

/* ---- range.c: intervals [start, end) sorted by start, may overlap ------- */

struct pin_imap_item {
	uintptr_t start;
	uintptr_t end;
	void *data;
};

struct pin_imap {
	struct pin_imap_item *items;
	size_t n;
	size_t cap;
	uintptr_t max_len; /* longest item ever held: bounds the backward scans */
};

void pin_imap_init(struct pin_imap *m);
void pin_imap_fini(struct pin_imap *m);
/* Make room for extra more items, so that the next inserts cannot fail. */
int pin_imap_reserve(struct pin_imap *m, size_t extra);
int pin_imap_insert(struct pin_imap *m, uintptr_t start, uintptr_t end, void *data);
/* Remove the item holding data that starts at start; false if absent. */
bool pin_imap_remove(struct pin_imap *m, uintptr_t start, void *data);
/* Data of an item with item.start <= start and end <= item.end, or NULL. */
void *pin_imap_find_covering(const struct pin_imap *m, uintptr_t start, uintptr_t end);
/* Remove one item overlapping [start, end) and return its data; NULL when none
 * is left.  Never allocates, so the monitor thread may call it. */
void *pin_imap_take_overlap(struct pin_imap *m, uintptr_t start, uintptr_t end);
/* For maps of disjoint items: cut [start, end) out of them.  Never allocates:
 * -ENOSPC when an item must split and no room was reserved. */
int pin_imap_punch(struct pin_imap *m, uintptr_t start, uintptr_t end);
/* Call fn on each maximal piece of [start, end) that no item covers. */
void pin_imap_gaps(const struct pin_imap *m, uintptr_t start, uintptr_t end,
		   void (*fn)(uintptr_t start, uintptr_t end, void *arg), void *arg);

/* ---- the cache entry, which is also the caller's handle ------------------ */

struct pin_range {
	struct pin_ctx *ctx;
	uintptr_t start; /* page aligned */
	uintptr_t end;
	unsigned int refs;
	atomic_bool stale; /* invalidated: never returned by a lookup again */
	bool pinned;	   /* the backend still holds the pages */
	bool watched;	   /* registered with the monitor's userfaultfd */
	bool uncached;	   /* pinned right after a discard: the caller's only */
	struct pin_range *prev, *next; /* idle LRU, or the ctx's dead list */
	void *mr;	   /* rdma: struct ibv_mr * */
	uint32_t lkey, rkey;
	unsigned int nbufs; /* io_uring: registered buffers, each <= 1 GiB */
	uint32_t bufs[];
};

/* ---- backends ------------------------------------------------------------ */

struct pin_ctx;

struct pin_backend_ops {
	const char *name;
	int (*open)(struct pin_ctx *ctx);
	void (*close)(struct pin_ctx *ctx);
	/* How many buffer slots a range of len bytes takes (0: none). */
	unsigned int (*nbufs)(size_t len);
	/* -ENOSPC or -ENOMEM make the cache evict idle entries and retry. */
	int (*pin)(struct pin_ctx *ctx, struct pin_range *r);
	void (*unpin)(struct pin_ctx *ctx, struct pin_range *r);
	/*
	 * unpin only makes syscalls (no malloc/free): the monitor thread may run
	 * it.  Else the monitor leaves the entry to an application thread,
	 * since a free() there could trim memory the monitor itself watches.
	 */
	bool unpin_on_monitor;
};

extern const struct pin_backend_ops pin_backend_iouring;
extern const struct pin_backend_ops pin_backend_mlock;
#ifdef HAVE_RDMA
extern const struct pin_backend_ops pin_backend_rdma;
#endif

#define PIN_IOURING_SLOTS   16384u
#define PIN_IOURING_BUF_MAX (1ul << 30) /* the kernel's limit per buffer */

struct pin_monitor;

/*
 * A discard (UFFD_EVENT_REMOVE) the monitor read.  The kernel sends it before
 * it zaps the pages, and the madvise() caller zaps them once the event is
 * read: a pin taken meanwhile holds the old pages.  Pins of such a range
 * taken within PIN_REMOVE_RACE_NS of the read are never cached.
 */
#define PIN_REMOVE_RACE_NS 1000000000ull
#define PIN_REMOVE_LOG	   1024

struct pin_remove {
	uintptr_t start, end;
	uint64_t read_ns; /* CLOCK_MONOTONIC */
};

struct pin_ctx {
	pthread_mutex_t lock;
	const struct pin_backend_ops *be;
	void *be_data;
	int backend; /* enum pin_backend */
	bool autoselect;
	unsigned int flags;
	unsigned int ring_entries;
	unsigned int rdma_access;
	uintptr_t page;
	struct pin_imap map; /* live entries, never stale ones */
	struct pin_range *lru_head, *lru_tail; /* idle entries, oldest first */
	struct pin_range *dead; /* retired by the monitor, freed by the next caller */
	/*
	 * Ranges no pin covers any more, still registered with the monitor's
	 * userfaultfd: unregistering walks every page table of the range
	 * (~25 ms a GiB), so the monitor thread does it in the background,
	 * one chunk at a time, and a new pin of the range just takes it back.
	 */
	struct pin_imap unreg; /* disjoint */
	uintptr_t unreg_busy_start, unreg_busy_end; /* the chunk in progress */
	pthread_cond_t unreg_done;
	bool closing;
	struct pin_remove removes[PIN_REMOVE_LOG];
	unsigned int nremoves;
	uint64_t remove_all_until; /* the log overflowed: every pin is suspect */
	size_t max_idle, max_idle_bytes;
	size_t idle_count, idle_bytes;
	size_t pinned_bytes, pinned_ranges, unwatched;
	uint64_t hits, misses, invalidations, evictions;
	struct pin_monitor *mon;
};

/* Log a pin that failed with err, naming RLIMIT_MEMLOCK when it applies. */
void pin_log_pin_error(struct pin_ctx *ctx, const char *call, const struct pin_range *r,
		       int err);

/* With ctx->lock held: remember a discard the monitor read at read_ns. */
void pin_ctx_note_remove(struct pin_ctx *ctx, uintptr_t start, uintptr_t end, uint64_t read_ns);
uint64_t pin_now_ns(void);

/* With ctx->lock held: drop every entry overlapping [start, end). */
unsigned int pin_ctx_invalidate_locked(struct pin_ctx *ctx, uintptr_t start, uintptr_t end,
				       bool on_monitor);
/* With ctx->lock held: stop watching the parts of [start, end) no live
 * entry covers, now (the monitor thread) or in the background. */
void pin_ctx_unwatch_uncovered(struct pin_ctx *ctx, uintptr_t start, uintptr_t end, bool now);
/* The monitor thread, with ctx->lock held: forget pending unregistrations
 * of a range that is gone. */
void pin_ctx_unwatch_forget(struct pin_ctx *ctx, uintptr_t start, uintptr_t end);
/* The monitor thread, with ctx->lock held: unregister one chunk of what is
 * pending, dropping the lock around the ioctl.  False when nothing is left. */
bool pin_ctx_unwatch_step(struct pin_ctx *ctx);

/* ---- pin-monitor.c: REMOVE/UNMAP/REMAP events on pinned ranges ------------ */

int pin_monitor_new(struct pin_ctx *ctx, struct pin_monitor **ret);
void pin_monitor_free(struct pin_monitor *m);
/* Register [start, end) for events, in a mode that takes over no fault. */
int pin_monitor_watch(struct pin_monitor *m, uintptr_t start, uintptr_t end);
void pin_monitor_unwatch(struct pin_monitor *m, uintptr_t start, uintptr_t end);
/* Wake the monitor thread: unregistrations are pending. */
void pin_monitor_kick(struct pin_monitor *m);
/*
 * With ctx->lock held: wait for a read in progress, then apply every event
 * read so far.  After it, no entry the kernel reported stale is in the map.
 */
void pin_monitor_sync(struct pin_monitor *m, bool on_monitor);
/* Events read since the start, and page faults among them (none expected). */
uint64_t pin_monitor_events(const struct pin_monitor *m);
uint64_t pin_monitor_faults(const struct pin_monitor *m);

#endif /* LIBPIN_PIN_INTERNAL_H */
