/* SPDX-License-Identifier: MIT */
/*
 * libpin: a safe wrapper of the Linux userfaultfd API, memory pinning through
 * pin_user_pages, and the client side of the uffdd protocol.
 *
 * Every call returns >= 0 on success and -errno on failure.  The library never
 * prints; install a log callback with pin_log_set() to learn why a call failed.
 */
#ifndef LIBPIN_H
#define LIBPIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- logging ----------------------------------------------------------- */

enum pin_log_level {
	PIN_LOG_ERR = 3,
	PIN_LOG_WARN = 4,
	PIN_LOG_INFO = 6,
	PIN_LOG_DEBUG = 7,
};

typedef void (*pin_log_fn)(enum pin_log_level level, const char *msg, void *userdata);

/* Install (or with NULL remove) the process-wide log callback. */
void pin_log_set(pin_log_fn fn, void *userdata);

/* ---- userfaultfd ------------------------------------------------------- */

struct pin_uffd;

/* pin_uffd_open() flags */
#define PIN_UFFD_CLOEXEC  0x1u
#define PIN_UFFD_NONBLOCK 0x2u
/* Faults taken in kernel mode (GUP, copy_to_user) are not reported: they
 * fail with EFAULT instead.  Never use it on ranges that get pinned. */
#define PIN_UFFD_USER_MODE_ONLY 0x4u
/* Use the userfaultfd(2) syscall, not /dev/userfaultfd. */
#define PIN_UFFD_SYSCALL 0x8u

/* Features, the kernel's UFFD_FEATURE_* bits (a stable ABI). */
#define PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP  (1ull << 0)
#define PIN_UFFD_FEATURE_EVENT_FORK	    (1ull << 1)
#define PIN_UFFD_FEATURE_EVENT_REMAP	    (1ull << 2)
#define PIN_UFFD_FEATURE_EVENT_REMOVE	    (1ull << 3)
#define PIN_UFFD_FEATURE_MISSING_HUGETLBFS  (1ull << 4)
#define PIN_UFFD_FEATURE_MISSING_SHMEM	    (1ull << 5)
#define PIN_UFFD_FEATURE_EVENT_UNMAP	    (1ull << 6)
#define PIN_UFFD_FEATURE_SIGBUS		    (1ull << 7)
#define PIN_UFFD_FEATURE_THREAD_ID	    (1ull << 8)
#define PIN_UFFD_FEATURE_MINOR_HUGETLBFS    (1ull << 9)
#define PIN_UFFD_FEATURE_MINOR_SHMEM	    (1ull << 10)
#define PIN_UFFD_FEATURE_EXACT_ADDRESS	    (1ull << 11)
#define PIN_UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1ull << 12)
#define PIN_UFFD_FEATURE_WP_UNPOPULATED	    (1ull << 13)
#define PIN_UFFD_FEATURE_POISON		    (1ull << 14)
#define PIN_UFFD_FEATURE_WP_ASYNC	    (1ull << 15)
#define PIN_UFFD_FEATURE_MOVE		    (1ull << 16)

/* Register modes, the kernel's UFFDIO_REGISTER_MODE_* bits. */
#define PIN_UFFD_REGISTER_MISSING 0x1u
#define PIN_UFFD_REGISTER_WP	  0x2u
#define PIN_UFFD_REGISTER_MINOR	  0x4u

/* Range ioctls a registration allows (pin_uffd_register() ret_ioctls):
 * the kernel's 1 << _UFFDIO_* bits. */
#define PIN_UFFD_IOCTL_WAKE	    (1ull << 2)
#define PIN_UFFD_IOCTL_COPY	    (1ull << 3)
#define PIN_UFFD_IOCTL_ZEROPAGE	    (1ull << 4)
#define PIN_UFFD_IOCTL_MOVE	    (1ull << 5)
#define PIN_UFFD_IOCTL_WRITEPROTECT (1ull << 6)
#define PIN_UFFD_IOCTL_CONTINUE	    (1ull << 7)
#define PIN_UFFD_IOCTL_POISON	    (1ull << 8)

/* Flags of the resolving calls; each call takes the ones that apply. */
#define PIN_UFFD_DONTWAKE 0x1u /* all: do not wake the faulting threads */
#define PIN_UFFD_WP                                                                                \
	0x2u			      /* copy, continue: map write-protected;                      \
					 writeprotect: protect (else unprotect) */
#define PIN_UFFD_ALLOW_SRC_HOLES 0x4u /* move: skip unpopulated source pages */

struct pin_uffd_opts {
	size_t sz;	    /* sizeof(struct pin_uffd_opts) */
	unsigned int flags; /* PIN_UFFD_CLOEXEC ... */
	uint64_t features;  /* required: -EOPNOTSUPP when one is missing */
	uint64_t optional;  /* granted when the kernel has them */
};

/*
 * Open a userfaultfd and complete the API handshake: required features that
 * the kernel lacks fail with -EOPNOTSUPP (pin_uffd_probe() tells which).
 * opts may be NULL (CLOEXEC, no features).
 */
int pin_uffd_new(const struct pin_uffd_opts *opts, struct pin_uffd **ret);
/* Open a userfaultfd without the handshake; call pin_uffd_api() next. */
int pin_uffd_open(unsigned int flags, struct pin_uffd **ret);
/* The UFFDIO_API handshake, once per userfaultfd (a second one fails with
 * -EINVAL); granted features are then in pin_uffd_features(). */
int pin_uffd_api(struct pin_uffd *u, uint64_t features);
/* Adopt a userfaultfd that already went through the handshake (one received
 * over a socket, or a FORK event's).  Takes ownership of fd on success. */
int pin_uffd_from_fd(int fd, uint64_t features, struct pin_uffd **ret);
/* Learn what this kernel offers, on a throw-away userfaultfd. */
int pin_uffd_probe(uint64_t *ret_features, uint64_t *ret_ioctls);
/* Name of one feature bit ("MOVE"), NULL for an unknown bit. */
const char *pin_uffd_feature_name(uint64_t feature);
/* Close the userfaultfd and free; accepts NULL. */
void pin_uffd_free(struct pin_uffd *u);

int pin_uffd_fd(const struct pin_uffd *u);
uint64_t pin_uffd_features(const struct pin_uffd *u);

int pin_uffd_register(struct pin_uffd *u, void *addr, size_t len, unsigned int mode,
		      uint64_t *ret_ioctls);
int pin_uffd_unregister(struct pin_uffd *u, void *addr, size_t len);

/*
 * The resolving calls.  ret_done (may be NULL) receives the kernel's progress
 * field even when the call fails: bytes done before the error, or a negative
 * errno when nothing was done (-EAGAIN while a non-cooperative event is
 * pending, -EEXIST when the first page is already there).  A partial success
 * returns -EAGAIN with *ret_done > 0: continue at addr + *ret_done.
 */
int pin_uffd_copy(struct pin_uffd *u, void *dst, const void *src, size_t len, unsigned int flags,
		  int64_t *ret_done);
int pin_uffd_zeropage(struct pin_uffd *u, void *dst, size_t len, unsigned int flags,
		      int64_t *ret_done);
int pin_uffd_continue(struct pin_uffd *u, void *addr, size_t len, unsigned int flags,
		      int64_t *ret_done);
int pin_uffd_poison(struct pin_uffd *u, void *addr, size_t len, unsigned int flags,
		    int64_t *ret_done);
int pin_uffd_move(struct pin_uffd *u, void *dst, void *src, size_t len, unsigned int flags,
		  int64_t *ret_done);
int pin_uffd_writeprotect(struct pin_uffd *u, void *addr, size_t len, unsigned int flags);
int pin_uffd_wake(struct pin_uffd *u, void *addr, size_t len);

enum pin_uffd_event_type {
	PIN_UFFD_EVENT_PAGEFAULT = 1,
	PIN_UFFD_EVENT_FORK,
	PIN_UFFD_EVENT_REMAP,
	PIN_UFFD_EVENT_REMOVE,
	PIN_UFFD_EVENT_UNMAP,
};

/* Page fault flags, the kernel's UFFD_PAGEFAULT_FLAG_* bits. */
#define PIN_UFFD_PF_WRITE 0x1u
#define PIN_UFFD_PF_WP	  0x2u
#define PIN_UFFD_PF_MINOR 0x4u

struct pin_uffd_event {
	uint32_t type; /* enum pin_uffd_event_type */
	uint32_t pad;
	union {
		struct {
			uint64_t address;
			uint32_t flags; /* PIN_UFFD_PF_* */
			uint32_t tid;	/* with PIN_UFFD_FEATURE_THREAD_ID, else 0 */
		} pagefault;
		struct {
			int fd; /* the child's userfaultfd; the caller owns it */
		} fork;
		struct {
			uint64_t from;
			uint64_t to;
			uint64_t len;
		} remap;
		struct {
			uint64_t start;
			uint64_t end;
		} remove, unmap;
		uint64_t reserved[4];
	} arg;
};

/*
 * Read up to max events with as few read() calls as it takes.  Returns the
 * number read, -EAGAIN when a non-blocking userfaultfd has none.
 */
int pin_uffd_read_events(struct pin_uffd *u, struct pin_uffd_event *events, size_t max);

/* ---- written pages (PAGEMAP_SCAN) -------------------------------------- */

/*
 * Async dirty tracking: open the userfaultfd with PIN_UFFD_FEATURE_WP_ASYNC
 * (and PIN_UFFD_FEATURE_WP_UNPOPULATED for anonymous memory), register the
 * range PIN_UFFD_REGISTER_WP and protect it with pin_uffd_writeprotect(): the
 * kernel then lifts the protection of a page on its first write without any
 * fault event, and pin_pagemap_scan_written() finds the written pages.
 */
struct pin_pagemap_range {
	uint64_t addr;
	uint64_t len;
};

/* pin_pagemap_scan_written() flags */
#define PIN_PAGEMAP_RESET 0x1u /* write-protect the reported pages again, in the same walk */

/*
 * The written pages of [addr, addr + len) in the memory of the process whose
 * /proc/PID/pagemap pagemap_fd is (PAGEMAP_SCAN), as at most max ranges in
 * out, adjacent pages merged.  Returns how many; *ret_end (may be NULL) is
 * where the scan stopped: addr + len, or less when out was full (call again
 * from there).  max 0 with out NULL and PIN_PAGEMAP_RESET protects the whole
 * range.  -EOPNOTSUPP: the kernel has no PAGEMAP_SCAN; -EPERM: part of the
 * range is not registered for async write-protect.
 */
int pin_pagemap_scan_written(int pagemap_fd, uint64_t addr, uint64_t len, unsigned int flags,
			     struct pin_pagemap_range *out, size_t max, uint64_t *ret_end);

/* ---- pinning ----------------------------------------------------------- */

/*
 * Pin user memory the way DMA users do (pin_user_pages with FOLL_LONGTERM),
 * through a backend, behind a registration cache.  A pin_range handle stays
 * valid until pin_range_put(); the cache never hands out a pin whose range
 * was unmapped, remapped or discarded (MADV_DONTNEED) since it was pinned,
 * see pin_ctx_new(3).
 */
struct pin_ctx;
struct pin_range;
struct io_uring;
struct ibv_mr;

enum pin_backend {
	PIN_BACKEND_AUTO = 0, /* rdma when a device exists, else io_uring */
	PIN_BACKEND_IO_URING, /* registered buffers: READ_FIXED/WRITE_FIXED */
	PIN_BACKEND_RDMA,     /* ibv_reg_mr: lkey/rkey */
	PIN_BACKEND_MLOCK,    /* mlock(2): resident, but not a FOLL_PIN pin */
};

/* pin_ctx_opts flags */
/* No userfaultfd of our own: the caller reports changes with
 * pin_ctx_invalidate() (the uffdd client does, from stale-pin notices). */
#define PIN_CTX_NO_MONITOR 0x1u

struct pin_ctx_opts {
	size_t sz;		   /* sizeof(struct pin_ctx_opts) */
	int backend;		   /* enum pin_backend */
	unsigned int flags;	   /* PIN_CTX_* */
	size_t max_idle;	   /* unused pins kept cached; 0: 256 */
	size_t max_idle_bytes;	   /* their total size; 0: 1 GiB */
	unsigned int ring_entries; /* io_uring: queue depth; 0: 64 */
	unsigned int rdma_access;  /* rdma: ibv_access_flags; 0: local write, remote read/write */
	/*
	 * io_uring: with ring_nslots > 0, pin into the caller's own ring, an
	 * io_uring file descriptor (libpin keeps a duplicate), in the slots
	 * [ring_first_slot, ring_first_slot + ring_nslots) of the sparse buffer
	 * table the caller registered on it; libpin empties them first.  See
	 * pin_ctx_new(3).  ring_nslots 0: a ring of libpin's own.
	 */
	int ring_fd;
	unsigned int ring_first_slot;
	unsigned int ring_nslots;
};

/* opts may be NULL.  -ENODEV: PIN_BACKEND_RDMA and no RDMA device. */
int pin_ctx_new(const struct pin_ctx_opts *opts, struct pin_ctx **ret);
/* Release every pin and free; accepts NULL.  Put every handle first.  In a
 * fork child, every call on the parent's context fails -ECHILD but this one,
 * which frees the child's copy and releases none of the parent's pins. */
void pin_ctx_free(struct pin_ctx *ctx);
/* The backend in use (enum pin_backend, never AUTO) and its name. */
int pin_ctx_backend(const struct pin_ctx *ctx);
const char *pin_ctx_backend_name(const struct pin_ctx *ctx);
/* io_uring backend: the ring holding the registered buffers, and its fd
 * (with a caller's ring: NULL, and libpin's duplicate of its fd).
 * NULL / -EOPNOTSUPP with another backend. */
struct io_uring *pin_ctx_io_uring(struct pin_ctx *ctx);
int pin_ctx_ring_fd(const struct pin_ctx *ctx);
/* Drop every cached pin overlapping [addr, addr + len): lookups never return
 * them again; their pages are released once their last handle is put.
 * Returns how many pins were dropped. */
int pin_ctx_invalidate(struct pin_ctx *ctx, const void *addr, size_t len);

struct pin_ctx_stats {
	size_t sz;		/* sizeof(struct pin_ctx_stats), set by the caller */
	uint64_t hits;		/* lookups a cached pin served */
	uint64_t misses;	/* lookups that pinned */
	uint64_t invalidations; /* pins dropped as stale */
	uint64_t evictions;	/* idle pins dropped for the limits or for room */
	uint64_t events;	/* userfaultfd events the monitor read */
	uint64_t pinned_bytes;	/* held by the backend now, stale ones included */
	uint64_t pinned_ranges;
	uint64_t idle_ranges; /* cached without a handle */
	uint64_t idle_bytes;
	uint64_t unwatched; /* pins the monitor cannot watch (see pin_ctx_invalidate) */
};

int pin_ctx_stats(struct pin_ctx *ctx, struct pin_ctx_stats *ret);

/* A pin covering [addr, addr + len): a cached one, or a new one (whole pages). */
int pin_range_get(struct pin_ctx *ctx, const void *addr, size_t len, struct pin_range **ret);
/* Drop the handle; accepts NULL. */
void pin_range_put(struct pin_range *r);
/* The pinned range, page aligned; it may be larger than asked. */
void *pin_range_addr(const struct pin_range *r);
size_t pin_range_len(const struct pin_range *r);
/* 1 when the range changed under the pin since pin_range_get(), else 0. */
int pin_range_stale(const struct pin_range *r);
/* io_uring: how many registered buffers the range takes (one per GiB). */
int pin_range_buf_count(const struct pin_range *r);
/* io_uring: the buffer index for READ_FIXED/WRITE_FIXED of [addr, addr + len)
 * on the context's ring (the caller's, when it gave one); -ERANGE when that
 * is not inside one buffer. */
int pin_range_buf_index(const struct pin_range *r, const void *addr, size_t len);
/* rdma: the memory region's keys, and the region itself. */
int pin_range_rdma_keys(const struct pin_range *r, uint32_t *ret_lkey, uint32_t *ret_rkey);
struct ibv_mr *pin_range_ibv_mr(const struct pin_range *r);

/* ---- checkpoint images ------------------------------------------------- */

/*
 * A checkpoint image read back as a list of regions (mappings), each cut
 * into segments that cover it without gaps: pages at an offset of the pages
 * file (pin_image_pages_fd()), or zero pages.  Both our own format
 * (uffdd-image(5)) and CRIU's images read into this shape.
 */
struct pin_image;

/* pin_image_segment flags */
#define PIN_IMAGE_SEG_DATA 0x1u /* pages at offset in the pages file; else zero */
#define PIN_IMAGE_SEG_LAZY 0x2u /* CRIU PE_LAZY: may be served on demand */

struct pin_image_segment {
	uint64_t addr;
	uint64_t len;
	uint64_t offset; /* in the pages file, with PIN_IMAGE_SEG_DATA; else 0 */
	uint32_t flags;	 /* PIN_IMAGE_SEG_* */
	uint32_t source; /* with DATA: 0 the image's pages file, k its k-th parent's */
};

struct pin_image_region {
	uint64_t addr;
	uint64_t len;
	uint32_t prot;	  /* PROT_* */
	uint32_t flags;	  /* MAP_* */
	const char *name; /* "[heap]", "[stack]", a path, or "" */
	size_t nr_segments;
	const struct pin_image_segment *segments; /* in address order */
};

/* pin_image_write_opts flags: which private mappings to take besides the
 * anonymous writable ones.  Both together also take read-only file ones. */
#define PIN_IMAGE_WRITE_READONLY 0x1u /* mappings without PROT_WRITE */
#define PIN_IMAGE_WRITE_FILE	 0x2u /* file-backed mappings */
/* Once written, write-protect again the pages of pid's async write-protect
 * ranges (PAGEMAP_SCAN): the next incremental checkpoint with this one as
 * its parent counts the writes from now. */
#define PIN_IMAGE_WRITE_REARM 0x4u

struct pin_image_write_opts {
	size_t sz;	    /* sizeof(struct pin_image_write_opts) */
	unsigned int flags; /* PIN_IMAGE_WRITE_* */
	uint64_t addr;	    /* with len: only this range of the mappings */
	uint64_t len;	    /* 0: the whole address space */
	/* Incremental: the checkpoint of pid this one follows (a chain of
	 * them restores as one image, pin_image_open()); NULL: a full one. */
	const char *parent;
	/* With parent: the pages written since it, sorted, not overlapping
	 * (pin_client_dirty_get() of a WP region gives them); NULL: those
	 * the kernel's async write-protect record (PAGEMAP_SCAN) shows. */
	const struct pin_pagemap_range *written;
	size_t nr_written;
};

/*
 * Write a checkpoint of the memory of process pid (0: the caller) into
 * directory dir (created when missing).  With opts->parent, only the pages
 * that changed since that checkpoint: written since (opts->written, or the
 * kernel's record of async write-protect ranges), or reading zero now
 * (discarded); a mapping that is not one of the parent's regions, same
 * start and end, or that has no record goes in whole.  Returns the number
 * of regions.
 */
int pin_image_write(int pid, const char *dir, const struct pin_image_write_opts *opts);
/* Read a checkpoint that pin_image_write() made; an incremental one with
 * its chain of parents, each page from the newest image that holds it. */
int pin_image_open(const char *dir, struct pin_image **ret);
/* Read the memory of task pid of a CRIU dump in dir. */
int pin_image_open_criu(const char *dir, int pid, struct pin_image **ret);
/* The pids of a CRIU dump's tasks (pstree.img): stores up to max of them
 * and returns how many there are. */
int pin_image_criu_pids(const char *dir, int *pids, size_t max);
/* Close and free; accepts NULL. */
void pin_image_free(struct pin_image *img);

size_t pin_image_nr_regions(const struct pin_image *img);
/* Region i, NULL past the end; valid until pin_image_free(). */
const struct pin_image_region *pin_image_region(const struct pin_image *img, size_t i);
/* The pages file, open read-only; owned by img.  Of a chain: the newest. */
int pin_image_pages_fd(const struct pin_image *img);
/* The pages file a DATA segment's offset is in (its source), owned by img. */
int pin_image_segment_fd(const struct pin_image *img, const struct pin_image_segment *s);
/* Copy the image's bytes at [addr, addr + len) into buf; -EFAULT when a
 * byte lies outside every region. */
int pin_image_read(const struct pin_image *img, uint64_t addr, void *buf, size_t len);

/* ---- uffdd client ------------------------------------------------------ */

/*
 * A connection to uffdd (uffdd-protocol(7)).  Requests are synchronous: each
 * call sends one message and waits for its reply; stale-pin notices that
 * arrive meanwhile go to the stale callback.  A pin_client is safe to use
 * from several threads (one mutex serialises the requests); the stale
 * callback runs with that mutex held and must not call pin_client_*() on the
 * same client.
 */
struct pin_client;

#define PIN_CLIENT_SOCKET_DEFAULT "/run/uffdd/uffdd.sock"

/* The pinned range [addr, addr + len) of the pin reported with cookie
 * changed under the pin: event is PIN_UFFD_EVENT_REMOVE, _UNMAP or _REMAP. */
typedef void (*pin_client_stale_fn)(struct pin_client *c, uint64_t cookie, uint64_t addr,
				    uint64_t len, uint32_t event, void *userdata);

/* pin_client_opts flags */
/* A request that finds the connection ended (the daemon was stopped; a
 * restart keeps it) reconnects (pin_client_reconnect()) and is sent again
 * once, instead of failing with -ECONNRESET. */
#define PIN_CLIENT_RECONNECT 0x1u
/* Only look (uffdctl): the connection reads counters and lists, is not a
 * session (not listed, not counted), and every request that changes
 * something fails with -EPERM. */
#define PIN_CLIENT_INSPECT 0x2u

struct pin_client_opts {
	size_t sz;		      /* sizeof(struct pin_client_opts) */
	const char *socket;	      /* NULL: $UFFDD_SOCKET, else PIN_CLIENT_SOCKET_DEFAULT */
	const char *name;	      /* shown by uffdctl; NULL: the program's name */
	unsigned int flags;	      /* PIN_CLIENT_* */
	unsigned int reconnect_ms;    /* how long a reconnect retries; 0: 5000 */
	pin_client_stale_fn stale_fn; /* may be NULL */
	void *stale_data;
	/* Stale notices also drop the overlapping pins of this registration
	 * cache (pin_ctx_invalidate()), before stale_fn runs; and once a
	 * userfaultfd of this process is handed over, its misses on memory of
	 * our regions first have the daemon place the missing pages in bulk
	 * (pin_client_connect(3)).  May be NULL. */
	struct pin_ctx *ctx;
};

/* Connect and say Hello.  opts may be NULL. */
int pin_client_connect(const struct pin_client_opts *opts, struct pin_client **ret);
/* Connect again (after the daemon was stopped) and hand over what this client
 * handed over before: Hello, the userfaultfd with takeover, its regions and
 * its pins.  Retries for reconnect_ms while the socket refuses. */
int pin_client_reconnect(struct pin_client *c);
/* Say Goodbye and disconnect: the daemon places the pages of the session's
 * regions not in place yet, then drops it.  Requests then fail with
 * -ENOTCONN until pin_client_reconnect(). */
int pin_client_goodbye(struct pin_client *c);
struct pin_client_stats;
/* pin_client_goodbye(), and wait until the session ended: 0 when every page
 * of its regions is in place (its counters then in *ret_stats, when not
 * NULL), -ESRCH when its process went first, -EIO when pages could not be
 * read from their source (poisoned), -ENOTRECOVERABLE at once when they
 * could not be poisoned either: the process is to be killed. */
int pin_client_finish(struct pin_client *c, struct pin_client_stats *ret_stats);
/* Disconnect and free; accepts NULL. */
void pin_client_free(struct pin_client *c);

/* The socket, to poll for POLLIN in an event loop (it changes on reconnect);
 * -ENOTCONN when there is none. */
int pin_client_fd(const struct pin_client *c);
/* The daemon's id for this session (uffdctl shows it). */
uint64_t pin_client_session(const struct pin_client *c);
/* Dispatch the notices already queued on the socket without blocking;
 * returns how many. */
int pin_client_process(struct pin_client *c);

/* Hand the userfaultfd over to the daemon, which serves its faults from then
 * on.  A duplicate of its descriptor is sent, and one kept for reconnects:
 * the caller keeps u.  Once per client (-EALREADY). */
int pin_client_handover(struct pin_client *c, const struct pin_uffd *u);

/* pin_client_region flags.  Without REGISTER or REGISTERED, libpin registers
 * the range with the handed-over userfaultfd (a no-op where it is already). */
#define PIN_CLIENT_REGION_NO_PUSH    0x1u /* no background push of untouched pages */
#define PIN_CLIENT_REGION_REGISTER   0x2u /* the daemon registers the range */
#define PIN_CLIENT_REGION_REGISTERED 0x4u /* the caller did: checked, refused if not */
/* fd is a stream socket connected to a CRIU page server: the daemon asks it
 * for page addr + x as page offset + x of task (PS_IOV_GET), as faults and
 * the push need them. */
#define PIN_CLIENT_REGION_PAGE_SERVER 0x8u

struct pin_client_region {
	size_t sz;	    /* sizeof(struct pin_client_region) */
	void *addr;	    /* page aligned */
	size_t len;	    /* page aligned, > 0 */
	unsigned int mode;  /* PIN_UFFD_REGISTER_MISSING and/or _WP, or MISSING with _MINOR */
	unsigned int flags; /* PIN_CLIENT_REGION_* */
	int fd;		    /* page source: page addr + x is at offset + x; -1: zero pages */
	uint64_t offset;    /* page aligned */
	uint64_t task;	    /* PIN_CLIENT_REGION_PAGE_SERVER: the id its GETs carry */
};

/* Ask the daemon to serve a range of the handed-over userfaultfd.  The
 * source fd is duplicated; the caller keeps its own. */
int pin_client_region_add(struct pin_client *c, const struct pin_client_region *r);
int pin_client_region_remove(struct pin_client *c, void *addr, size_t len);
/* Populate the range now rather than when it faults. */
int pin_client_prefetch(struct pin_client *c, void *addr, size_t len);
/* Block until every page of the range is populated; -ETIMEDOUT after
 * timeout_ms (0: no timeout). */
int pin_client_wait_populated(struct pin_client *c, void *addr, size_t len,
			      unsigned int timeout_ms);

/* pin_client_dirty_get() flags */
#define PIN_CLIENT_DIRTY_RESET 0x1u /* clear the bits and write-protect the pages again */

/* The pages of a WP region written since it was added (or last reset): bit
 * i (LSB first) of bitmap is page i of the range; bitmap_len must be at least
 * one bit per page.  Returns the number of dirty pages. */
int pin_client_dirty_get(struct pin_client *c, void *addr, size_t len, unsigned int flags,
			 uint8_t *bitmap, size_t bitmap_len);

/* Tell the daemon that [addr, addr + len) (rounded out to whole pages) is
 * pinned: it sends a stale notice with cookie when the range is removed,
 * unmapped or remapped.  Remembered for reconnects until released. */
int pin_client_pin_report(struct pin_client *c, void *addr, size_t len, uint64_t cookie);
int pin_client_pin_release(struct pin_client *c, uint64_t cookie);

#define PIN_CLIENT_LATENCY_BUCKETS 32
/* pin_client_stats() session: every session summed up. */
#define PIN_CLIENT_SESSION_ALL UINT64_MAX

struct pin_client_stats {
	uint64_t faults;
	uint64_t wp_faults;
	uint64_t pages_copied;
	uint64_t pages_zeroed;
	uint64_t bytes_copied;
	uint64_t pages_pushed;
	uint64_t eagain;
	uint64_t eexist;
	uint64_t pages_total;	  /* pages in the regions */
	uint64_t pages_populated; /* of those, populated */
	/* Fault latency, from the daemon's read of each fault to its end:
	 * bucket i counts [2^i, 2^(i+1)) us, bucket 0 also below 1 us, the
	 * last one everything above; the counts add up to faults. */
	uint64_t latency_us_log2[PIN_CLIENT_LATENCY_BUCKETS];
};

/* Counters of one session (0: this one) or PIN_CLIENT_SESSION_ALL. */
int pin_client_stats(struct pin_client *c, uint64_t session, struct pin_client_stats *ret);

struct pin_client_info {
	uint64_t session;
	int32_t pid;
	uint32_t uid;
	char name[64];
	uint32_t regions;
	uint64_t pinned_bytes;
	struct pin_client_stats stats;
};

struct pin_client_region_info {
	uint64_t session;
	uint64_t addr;
	uint64_t len;
	uint32_t mode;	 /* PIN_UFFD_REGISTER_* */
	uint32_t source; /* 0: zero pages, 1: a file, 2: a page server */
	uint64_t pages_populated;
	uint64_t pages_dirty;
};

struct pin_client_pin_info {
	uint64_t session;
	uint64_t addr;
	uint64_t len;
	uint64_t cookie;
};

/* What the daemon serves, for uffdctl: every session, or the regions and
 * pins of one (session 0: all).  *ret is malloc'd (free()); *ret_nr entries. */
int pin_client_list_clients(struct pin_client *c, struct pin_client_info **ret, size_t *ret_nr);
int pin_client_list_regions(struct pin_client *c, uint64_t session,
			    struct pin_client_region_info **ret, size_t *ret_nr);
int pin_client_list_pins(struct pin_client *c, uint64_t session, struct pin_client_pin_info **ret,
			 size_t *ret_nr);

/* ---- lazy restore of an image ------------------------------------------ */

/*
 * In the restored process: map region i of img where it was (never over an
 * existing mapping: -EEXIST), MADV_NOHUGEPAGE, and register it MISSING on u.
 */
int pin_image_map_region(const struct pin_image *img, size_t i, struct pin_uffd *u);
/*
 * Shared snapshots (many restores of one image, one copy in memory): with
 * fd -1, put img's pages into a new sealed memfd (its regions one after
 * another, zero pages left as holes), once; or take fd, such a memfd made
 * for the same image by another process (duplicated; -EINVAL unless sealed
 * against writes, growing and shrinking, and as large as img's regions).
 * From then on pin_image_map_region() maps img's regions MAP_PRIVATE from
 * the memfd and registers them MISSING and MINOR (the userfaultfd needs
 * PIN_UFFD_FEATURE_MINOR_SHMEM), and pin_client_add_image_region() has uffdd
 * serve them from it with UFFDIO_CONTINUE.  Returns the memfd (owned by
 * img, to hand to the other restores); -EBUSY when img has one already.
 */
int pin_image_snapshot(struct pin_image *img, int fd);
/*
 * Tell uffdd where the pages of region i come from: one uffdd region per
 * run of segments (adjacent, both zero or both data at adjacent offsets),
 * data from the image's pages file, the rest zero pages.  flags:
 * PIN_CLIENT_REGION_*.  Returns the number of uffdd regions added.
 */
int pin_client_add_image_region(struct pin_client *c, const struct pin_image *img, size_t i,
				unsigned int flags);
/*
 * In the restored process, once pages are in: make every aligned 2 MiB run of
 * region i whose pages are all in a transparent huge page again
 * (MADV_HUGEPAGE, then MADV_COLLAPSE); a run with a page still missing stays
 * small pages, MADV_NOHUGEPAGE.  Call it when pin_client_wait_populated()
 * says the region is in, or at any time for the runs that are.  Returns the
 * number of runs that are huge pages now.
 */
int pin_image_collapse_region(const struct pin_image *img, size_t i);

/*
 * Working-set record and replay.  After a restore served on demand: ask
 * uffdd which pages this session's faults placed, in order, and write them
 * to dir/working-set (uffdd-image(5)).  Returns the number of pages.
 */
int pin_client_working_set_save(struct pin_client *c, const char *dir);
/*
 * In a later restore, once its regions are added: have uffdd place the pages
 * of dir/working-set now, in bulk; the rest faults as before.  Returns the
 * number of pages placed (those of the set that were not there yet).
 */
int pin_client_working_set_replay(struct pin_client *c, const char *dir);

#ifdef __cplusplus
}
#endif

#endif /* LIBPIN_H */
