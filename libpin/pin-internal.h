/* SPDX-License-Identifier: MIT */
/*
 * Declarations shared by the pinning files: the cache entry, the backends,
 * the interval map (range.c) and the pin context (pin.c).  The userfaultfd
 * monitor (pin-monitor.c) sees none of this: its interface is pin-monitor.h.
 * Never installed.
 */
#ifndef LIBPIN_PIN_INTERNAL_H
#define LIBPIN_PIN_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "libpin-private.h"
#include "pin-monitor.h"

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
	atomic_bool stale;	       /* invalidated: never returned by a lookup again */
	bool pinned;		       /* the backend still holds the pages */
	bool watched;		       /* registered with the monitor's userfaultfd */
	bool uncached;		       /* pinned right after a discard: the caller's only */
	bool changed;		       /* unmapped, moved or discarded: pages out of reach */
	struct pin_range *prev, *next; /* idle LRU, or the ctx's dead list */
	void *mr;		       /* rdma: struct ibv_mr * */
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
	/* In a fork child: free the child's copy, release nothing of the
	 * parent's (NULL: close does only that already). */
	void (*forget)(struct pin_ctx *ctx);
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
	/* The kernel's unpin leaves the pages as clean as it found them
	 * (pin-dirty.c): shared ones are marked dirty first. */
	bool dirty_before_unpin;
};

extern const struct pin_backend_ops pin_backend_iouring;
/* io_uring into the caller's ring (pin_ctx_opts.ring_nslots > 0). */
extern const struct pin_backend_ops pin_backend_iouring_caller;
extern const struct pin_backend_ops pin_backend_mlock;
#ifdef HAVE_RDMA
extern const struct pin_backend_ops pin_backend_rdma;
#endif

#define PIN_IOURING_SLOTS   16384u
#define PIN_IOURING_BUF_MAX (1ul << 30) /* the kernel's limit per buffer */

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
	int ring_fd; /* the caller's ring, with ring_nslots > 0 */
	unsigned int ring_first_slot, ring_nslots;
	unsigned int rdma_access;
	uintptr_t page;
	struct pin_imap map; /* live entries, never stale ones */
	/*
	 * Live entries taken right after a discard (uncached: the callers'
	 * only, never shared), so that later changes mark them stale as they
	 * do cached ones.
	 */
	struct pin_imap held;
	struct pin_range *lru_head, *lru_tail; /* idle entries, oldest first */
	struct pin_range *dead; /* retired by the monitor, freed by the next caller */
	/*
	 * Ranges no pin covers any more, still registered with the monitor's
	 * userfaultfd: unregistering walks every page table of the range
	 * (~25 ms a GiB), so the monitor thread does it in the background,
	 * one chunk at a time, and a new pin of the range just takes it back.
	 */
	struct pin_imap unreg;			    /* disjoint */
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
	/* The uffdd client serving this memory (pin_ctx_set_populate()). */
	pin_ctx_populate_fn populate;
	void *populate_arg;
	/* Its session's event log (pin_ctx_set_evlog()), read up to evlog_tail. */
	const struct pin_evlog *evlog;
	void *evlog_arg;
	uint64_t evlog_tail;
	/* pin-fork.c: the list of live contexts; this is a fork child's copy. */
	struct pin_ctx *fork_next, *fork_prev;
	bool forked;
};

/* ---- pin.c, for pin-ctx.c ------------------------------------------------- */

/* Start the context's monitor (pin-monitor.c), which calls back into pin.c. */
int pin_ctx_watch_start(struct pin_ctx *ctx);

/* ---- pin-fork.c: contexts across fork(2) --------------------------------- */

/* Put ctx on the list whose copies a fork marks forked (0, or -errno of
 * pthread_atfork); untrack takes it off. */
int pin_fork_track(struct pin_ctx *ctx);
void pin_fork_untrack(struct pin_ctx *ctx);

/* ---- pin-evlog.c: reading a uffdd session's event log ------------------ */

struct pin_evlog_change {
	uint32_t type; /* PIN_UFFD_EVENT_REMOVE, _UNMAP or _REMAP */
	uintptr_t start, end;
	uintptr_t to; /* REMAP: where [start, end) went */
};

/* The entry past *tail into *c, *tail moved past it: 1; 0 when there is
 * none; -ENOSPC when the writer overran the reader (entries were lost:
 * *tail is now at the head). */
int pin_evlog_next(const struct pin_evlog *log, uint64_t *tail, struct pin_evlog_change *c);
/* Wait while the daemon is in a read whose events may not be logged yet;
 * false when it took more than 50 ms. */
bool pin_evlog_settle(const struct pin_evlog *log);

/* With ctx->lock held: call fn on each maximal piece of [start, end) that no
 * live entry of the cache covers. */
void pin_ctx_uncovered(struct pin_ctx *ctx, uintptr_t start, uintptr_t end,
		       void (*fn)(uintptr_t start, uintptr_t end, void *arg), void *arg);
/* pin-refusal.c: log a pin that failed with err, naming the cause that
 * /proc/self/maps shows (secretmem, a shared file, PROT_NONE, a hole...) or
 * RLIMIT_MEMLOCK when it applies. */
void pin_log_pin_error(struct pin_ctx *ctx, const char *call, const struct pin_range *r, int err);
/* pin-dirty.c: mark the pages of the MAP_SHARED parts of [start, end) dirty,
 * so that reclaim keeps what a device wrote through a pin of them. */
void pin_dirty_shared(uintptr_t start, uintptr_t end);

#endif /* LIBPIN_PIN_INTERNAL_H */
