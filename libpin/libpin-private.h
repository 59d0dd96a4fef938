/* SPDX-License-Identifier: MIT */
/* Declarations shared inside libpin; never installed. */
#ifndef LIBPIN_PRIVATE_H
#define LIBPIN_PRIVATE_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "libpin.h"

#define PIN_EXPORT __attribute__((visibility("default")))

#define PIN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Kernel ABI newer than Debian 12's linux-libc-dev (6.1).  The values are
 * fixed by include/uapi/linux/userfaultfd.h and never change.
 */
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#define UFFD_FEATURE_POISON	    (1 << 14)
#define UFFD_FEATURE_WP_ASYNC	    (1 << 15)
#define UFFD_FEATURE_MOVE	    (1 << 16)
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif
#ifndef UFFDIO_POISON
#define _UFFDIO_POISON		    (0x08)
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef UFFDIO_MOVE
#define _UFFDIO_MOVE			 (0x05)
#define UFFDIO_MOVE_MODE_DONTWAKE	 ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

/* Log through the callback of pin_log_set(); a no-op without one. */
void pin_log(enum pin_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t pin_now_ns(void);

/* ioctl(2) with EINTR retried; returns 0 or -errno. */
int pin_ioctl(int fd, unsigned long request, void *arg);

/*
 * Take a growable options struct (libbpf style): sz (its first member) must
 * cover at least itself, bytes the caller has beyond what we know must be
 * zero (-E2BIG), and what the caller has of what we know is copied over the
 * defaults in dst (known_sz bytes).  opts NULL: dst keeps its defaults.
 */
int pin_opts_copy(void *dst, size_t known_sz, const void *opts);

static inline void pin_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

static inline void pin_freep(void *p)
{
	free(*(void **)p);
}

/* A region's registration modes that uffdd serves: MISSING, WP or both, or
 * MISSING with MINOR (a snapshot region: a sealed memfd's pages are
 * CONTINUEd, its holes fault MISSING). */
static inline bool pin_region_mode_valid(unsigned int mode)
{
	const unsigned int snapshot = PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_MINOR;

	if (mode & PIN_UFFD_REGISTER_MINOR)
		return mode == snapshot;
	return mode && !(mode & ~(PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP));
}

/* ---- the uffdd protocol (proto.c; see proto/uffdd.proto) -------------- */

#include "uffdd.pb-c.h"

#define PIN_PROTO_VERSION 1
#define PIN_PROTO_MAX_MSG (256 * 1024) /* one datagram, encoded */
#define PIN_PROTO_MAX_FDS 4

/*
 * Encode msg and send it as one datagram with nfds (<= PIN_PROTO_MAX_FDS)
 * descriptors attached; the caller keeps its descriptors.  EINTR is retried,
 * SIGPIPE never raised: a gone peer is -EPIPE.  The fd count is not checked
 * against the body, so tests can send wrong ones.  -EMSGSIZE above
 * PIN_PROTO_MAX_MSG encoded bytes.
 */
int pin_proto_send(int sock, const Uffdd__Msg *msg, const int *fds, size_t nfds);
/* One datagram of len bytes as they are, with nfds (<= PIN_PROTO_RAW_MAX_FDS)
 * descriptors: pin_proto_send() after encoding, and tests that play a
 * hostile peer. */
#define PIN_PROTO_RAW_MAX_FDS 64
int pin_proto_send_raw(int sock, const void *buf, size_t len, const int *fds, size_t nfds);
/*
 * Receive one datagram (EINTR retried) and decode it strictly, in this order:
 *   -EBADMSG   truncated (MSG_TRUNC/MSG_CTRUNC), oversized, empty,
 *              undecodable (missing required field...), or a body we do not
 *              know (an unknown field number leaves body_case NOT_SET);
 *   -EBADF     the number of descriptors differs from
 *              pin_proto_fds_expected();
 *   -EINVAL    a range of length 0, not page aligned, ending past 2^57 or
 *              wrapping around 2^64 (or a file offset + length that wraps),
 *              an unknown enum value or register mode, a Reply error outside
 *              [-4095, 0].
 * Descriptors that came with a rejected message are closed; accepted ones
 * are CLOEXEC (MSG_CMSG_CLOEXEC) and land in fds[], which must have room
 * for PIN_PROTO_MAX_FDS.  Returns 0 with *ret_msg (free with
 * pin_proto_free()) and *ret_nfds; on failure both are left untouched, so a
 * rejected request's seq is unknown: the daemon answers it with seq 0.
 * -ECONNRESET at EOF, -EAGAIN on a non-blocking socket with nothing queued.
 */
int pin_proto_recv(int sock, Uffdd__Msg **ret_msg, int *fds, size_t *ret_nfds);
/* The same, closing what it does not keep through close_fd(fd, userdata)
 * instead of close(): a close() of a file a peer sent may wait for its file
 * system (uffdd's closer.c does it off its workers). */
int pin_proto_recv_closing(int sock, Uffdd__Msg **ret_msg, int *fds, size_t *ret_nfds,
			   void (*close_fd)(int fd, void *userdata), void *userdata);
/* The decoding half of pin_proto_recv() for a buffer that came with nfds
 * descriptors: same checks, same errors (the fuzz target's entry point). */
int pin_proto_decode(const uint8_t *buf, size_t len, size_t nfds, Uffdd__Msg **ret_msg);
/* Free a message pin_proto_recv() or pin_proto_decode() returned; accepts NULL. */
void pin_proto_free(Uffdd__Msg *msg);
/* A Range the decoder accepts: -EINVAL when empty, not page aligned, past
 * 2^57 or wrapping around 2^64, else 0.  The client checks with it before
 * a round trip. */
int pin_proto_check_range(uint64_t addr, uint64_t len);
/* How many descriptors a message of this body must carry: 1 for
 * UffdHandover, for RegionAdd with SOURCE_FD and for a RegionAddBatch with
 * one, 0 otherwise. */
size_t pin_proto_fds_expected(const Uffdd__Msg *msg);

/* One request without descriptors and its Reply (client.c), for requests
 * other files make: the Reply's error, *ret_msg (may be NULL) on success. */
int pin_client_request(struct pin_client *c, Uffdd__Msg *req, Uffdd__Msg **ret_msg);
/*
 * pin_client_region_add() for the n regions of v, in RegionAddBatch requests
 * (one by one with a daemon that has none); every SOURCE_FD region must have
 * the same fd.  0, or the first error (the regions it added before stay in
 * the daemon's session, not in the client's memory).
 */
int pin_client_region_add_many(struct pin_client *c, const struct pin_client_region *v, size_t n);
/*
 * pin_client_add_image_region() for the nidx regions of img at idx, all in
 * one pin_client_region_add_many(): the number of uffdd regions added.
 */
int pin_client_add_image_regions(struct pin_client *c, const struct pin_image *img,
				 const size_t *idx, size_t nidx, unsigned int flags);
/*
 * The same with the PE_LAZY pages of img (pin_image_open_criu_lazy()) asked
 * of the page server over ps_fd by uffdd, for task (SOURCE_PAGE_SERVER, one
 * batch of its own): the tasks of a tree hand over the same socket, and
 * uffdd serves them all over one connection.
 */
int pin_client_add_image_regions_remote(struct pin_client *c, const struct pin_image *img,
					const size_t *idx, size_t nidx, unsigned int flags,
					int ps_fd, uint64_t task);

/*
 * Issue 18: a cache miss on [start, end) calls fn(arg, start, end) before it
 * pins, without the context's lock, so that the uffdd client serving that
 * memory places its missing pages in bulk first (client-pins.c); a failure is
 * logged there and the pin goes on (its faults place the pages then).  fn
 * NULL: none, if arg is the one set (else the hook stays).  The client sets
 * it when it gets a userfaultfd of this process and clears it when freed.
 */
typedef void (*pin_ctx_populate_fn)(void *arg, uintptr_t start, uintptr_t end);
void pin_ctx_set_populate(struct pin_ctx *ctx, pin_ctx_populate_fn fn, void *arg);

/*
 * Issue 18: the event log, one page of a memfd the client hands over with its
 * userfaultfd (UffdHandover.evlog) and maps read-only; uffdd, which reads that
 * userfaultfd, writes each REMOVE, UNMAP and REMAP it reads into it, so that
 * the client's pin cache drops the pins those made stale, every one, reported
 * or not, with no round trip.
 *
 * The kernel completes such an event when uffdd reads it: madvise(), munmap()
 * and mremap() return before uffdd has done anything with it.  So busy is odd
 * from before each read(2) of the userfaultfd until that read's events are in
 * the log (uffdd: evlog.c).  A look-up that finds busy even sees every event of
 * every read that completed before it (the read happened inside a window that
 * had ended); one that finds it odd waits for it to change (the window ends in
 * microseconds: a read and its events, no fault is resolved inside it), and
 * past 50 ms (pin-evlog.c) pins anew instead of trusting the cache.
 *
 * Entries are written before head moves past them (release); the reader takes
 * [its tail, head), and when head ran more than PIN_EVLOG_ENTRIES ahead of
 * it, before or while it read, it drops every pin: some events were lost.
 */
#define PIN_EVLOG_SIZE	  4096
#define PIN_EVLOG_ENTRIES ((PIN_EVLOG_SIZE - 64) / 32)

struct pin_evlog_entry {
	_Atomic uint64_t start;
	_Atomic uint64_t end;
	_Atomic uint64_t to;   /* REMAP: where [start, end) went */
	_Atomic uint32_t type; /* enum pin_uffd_event_type */
	uint32_t pad;
};

struct pin_evlog {
	_Atomic uint64_t busy; /* odd: a read's events may not be in yet */
	_Atomic uint64_t head; /* entries ever written */
	uint8_t pad[48];
	struct pin_evlog_entry ent[PIN_EVLOG_ENTRIES];
};

_Static_assert(sizeof(struct pin_evlog) <= PIN_EVLOG_SIZE, "the event log is one page");

/*
 * Read log (NULL: none), a new one (head 0), from its first entry at every
 * look-up of ctx from now on; what the old one held and ctx had not read yet
 * is applied first.  The client sets it when it hands a userfaultfd of this
 * process over with a log, and clears it (NULL, with the arg it set) before
 * it unmaps the log.
 */
void pin_ctx_set_evlog(struct pin_ctx *ctx, const struct pin_evlog *log, void *arg);

/*
 * Register [addr, addr + len) for mode on the userfaultfd fd (uffd.c): what
 * pin_uffd_register() does, for a descriptor without its handle.  Already
 * registered there with those modes: a no-op (the kernel's).
 */
int pin_uffd_register_fd(int fd, uintptr_t addr, size_t len, unsigned int mode);
/* u was opened in this process (pin_uffd_open(), pin_uffd_new()): its
 * registrations are in this process's memory, which /proc/self shows. */
bool pin_uffd_own(const struct pin_uffd *u);
/*
 * Whether some userfaultfd is registered on every page of [addr, addr + len)
 * for every fault of mode, as /proc/self/smaps says (VmFlags um, uw): 1; 0
 * when not, *ret_gap then the first address that is not; or -errno.
 */
int pin_uffd_covers(uintptr_t addr, size_t len, unsigned int mode, uintptr_t *ret_gap);

/* The size of one message of a userfaultfd (struct uffd_msg). */
#define PIN_UFFD_MSG_BYTES 32u
/*
 * One read(2) of at most max messages of u straight into raw (max *
 * PIN_UFFD_MSG_BYTES bytes, which may be shared memory: the kernel writes
 * each message there before read(2) returns, so they outlive a caller
 * killed as it returns), decoded into events.  Returns the count, or -errno
 * (-EAGAIN: none queued).
 */
int pin_uffd_read_raw(struct pin_uffd *u, void *raw, struct pin_uffd_event *events, size_t max);
/* One raw message decoded; -EINVAL when its event is none the kernel sends
 * (0: an empty slot). */
int pin_uffd_decode(const void *raw, struct pin_uffd_event *ev);

#define _cleanup_close_ __attribute__((cleanup(pin_closep)))
#define _cleanup_free_	__attribute__((cleanup(pin_freep)))

/* ---- checkpoint images (image.c; criu.c builds them too) --------------- */

#define PIN_IMAGE_MANIFEST    "manifest"
#define PIN_IMAGE_PAGES	      "pages"
#define PIN_IMAGE_HEADER_FULL "uffdd-image 1"
#define PIN_IMAGE_HEADER_INCR "uffdd-image 2"
/* An image's id: 128 random bits as lowercase hex (uffdd-image(5)). */
#define PIN_IMAGE_ID_LEN 32
/* A segment of an incremental image whose pages it does not hold: its
 * parent's, until pin_image_open() puts the parent's segments there. */
#define PIN_IMAGE_SEG_PARENT 0x80000000u

struct image_region {
	struct pin_image_region pub;
	struct pin_image_segment *segs; /* pub.segments, writable */
	size_t cap;
	char *name;
};

struct pin_image {
	int pages_fd;	 /* segment source 0 */
	int snapshot_fd; /* pin_image_snapshot()'s memfd; -1: none */
	int *parent_fds; /* source k >= 1: the pages file of the k-th ancestor */
	size_t nr_parents;
	size_t nr, cap;
	struct image_region *regions;
	char id[PIN_IMAGE_ID_LEN + 1];	      /* "" when the manifest names none */
	char parent_id[PIN_IMAGE_ID_LEN + 1]; /* "" without a parent */
	char *parent_path;		      /* as the manifest says; NULL without */
};

/* One manifest and pages file of the directory dfd (dir names it in
 * messages), a parent's pages left as PIN_IMAGE_SEG_PARENT segments. */
int pin_image_open_one(int dfd, const char *dir, struct pin_image **ret);
/* The pages file of a segment source (0: img's own); -EINVAL past them. */
int pin_image_source_fd(const struct pin_image *img, uint32_t source);
/* pin_image_add_segment() with the data's source (image-chain.c). */
int pin_image_add_source_segment(struct pin_image *img, uint64_t len, uint64_t offset,
				 uint32_t flags, uint32_t source);
/* The segment holding addr; NULL outside every region. */
const struct pin_image_segment *pin_image_find_segment(const struct pin_image *img, uint64_t addr);
/* One image of a chain, newest first (image-chain.c). */
struct pin_image_link {
	struct pin_image *img; /* as pin_image_open_one() read it */
	char *dir;	       /* its directory, as reached from the newest */
};
/* The images of the chain that ends with dir, newest first, each the
 * parent its child names (id and all); *ret is pin_image_chain_free()'s. */
int pin_image_chain_open(const char *dir, struct pin_image_link **ret, size_t *ret_n);
/* The chain v (pin_image_chain_open()'s, which it frees) as one image. */
int pin_image_chain_flatten(struct pin_image_link *v, size_t n, struct pin_image **ret);
void pin_image_chain_free(struct pin_image_link *v, size_t n);
/*
 * The pages of the mapping [start, end) an incremental checkpoint against
 * parent holds (all of them with parent NULL), in address order, merged
 * (image-held.c); *ret is free()'s.  written NULL: the kernel's record.
 */
int pin_image_held(int pagemap_fd, const struct pin_image *parent, uint64_t start, uint64_t end,
		   bool anon, const struct pin_pagemap_range *written, size_t nr_written,
		   struct pin_pagemap_range **ret, size_t *ret_n);
/* Write-protect again the async write-protect ranges of [start, end); none
 * without PAGEMAP_SCAN (the kernel has no WP_ASYNC either). */
int pin_image_rearm(int pagemap_fd, uint64_t start, uint64_t end);
/* A mapping a checkpoint takes (image-maps.c), and what of it the image
 * holds (image-write.c). */
struct pin_image_mapping {
	uint64_t start, end;
	uint32_t prot, flags;
	char *name;
	struct pin_pagemap_range *held; /* the pages the image holds */
	size_t nr_held;
};
/* The mappings of /proc/pid/maps o asks for, in address order. */
int pin_image_read_maps(int pid, const struct pin_image_write_opts *o,
			struct pin_image_mapping **ret, size_t *ret_n);
void pin_image_free_mappings(struct pin_image_mapping *maps, size_t n);
/* Write img (a chain's flattened) as one full image into dir (image-write.c). */
int pin_image_save(const struct pin_image *img, const char *dir);
/* A new random image id (getrandom(2)). */
int pin_image_new_id(char out[PIN_IMAGE_ID_LEN + 1]);

/* open(2) directory dir for the *at() calls; -errno, logged, on failure. */
int pin_image_open_dir(const char *dir);

/* pin_uffd_open()/pin_uffd_new() flag of libpin's own: a refusal for lack
 * of privilege (EPERM) is not logged, for the caller tries otherwise and
 * reports (pin-monitor.c). */
#define PIN_UFFD_QUIET_EPERM (1u << 31)

/* A run of DIR/working-set (uffdd-image(5)). */
struct pin_ws_run {
	uint64_t addr, len;
};
/* The runs of DIR/working-set, in its order (free()); -ENOENT without one,
 * -EBADMSG (logged with the line) when it is malformed (workingset.c). */
int pin_working_set_read(const char *dir, struct pin_ws_run **ret, size_t *ret_nr);
/*
 * A new image without regions over the pages file dfd/pages (dir names dfd
 * in messages), opened read-only; its size in *ret_size.
 */
int pin_image_new_at(int dfd, const char *dir, const char *pages, struct pin_image **ret,
		     uint64_t *ret_size);
/* A new image without regions over the pages file fd, which it owns from
 * now on; NULL when out of memory (fd left open). */
struct pin_image *pin_image_new_fd(int fd);
/*
 * Append a region above the previous one, then its segments in address
 * order, each starting where the one before ended (-EINVAL otherwise, or
 * past the region's end).  The caller covers every region to its end.
 */
int pin_image_add_region(struct pin_image *img, uint64_t addr, uint64_t len, uint32_t prot,
			 uint32_t flags, const char *name);
int pin_image_add_segment(struct pin_image *img, uint64_t len, uint64_t offset, uint32_t flags);
/* The image's snapshot memfd (pin_image_snapshot()), -1: none; set takes
 * fd over (image.c). */
int pin_image_snapshot_fd(const struct pin_image *img);
void pin_image_snapshot_set(struct pin_image *img, int fd);
/* Where region i starts in the snapshot memfd: the regions lie one after
 * another, each as long as it is (snapshot.c). */
uint64_t pin_image_snapshot_offset(const struct pin_image *img, size_t i);
/* pread(2) until len bytes are in, EINTR retried; -ENODATA at end of file. */
int pin_pread_all(int fd, void *buf, size_t len, uint64_t off);
/* pwrite(2) until len bytes are out, EINTR retried (image-write.c). */
int pin_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

/* PAGEMAP_SCAN page categories (include/uapi/linux/fs.h, Linux 6.7). */
#define PIN_PAGE_IS_WPALLOWED (1ull << 0)
#define PIN_PAGE_IS_WRITTEN   (1ull << 1)
#define PIN_PAGE_IS_PRESENT   (1ull << 3)
#define PIN_PAGE_IS_PFNZERO   (1ull << 5)

/* A run of pages of the same categories (PIN_PAGE_IS_*). */
struct pin_pagemap_cat {
	uint64_t addr, len, categories;
};
/*
 * Every page of [addr, addr + len) of the process of pagemap_fd, in runs of
 * the same categories of mask (pagemap.c); *ret is free()'s.  Unlike
 * pin_pagemap_scan_written() any memory may be scanned.
 */
int pin_pagemap_scan_categories(int pagemap_fd, uint64_t addr, uint64_t len, uint64_t mask,
				struct pin_pagemap_cat **ret, size_t *ret_n);

/* Whether the kernel has PAGEMAP_SCAN (Linux 6.7), asked without a log. */
bool pin_pagemap_scan_supported(int pagemap_fd);

/* CRIU's pagemap flags (criu/include/pagemap.h). */
#define PIN_CRIU_PE_PARENT  0x1u /* pages are in the parent dump */
#define PIN_CRIU_PE_LAZY    0x2u /* may be restored on demand */
#define PIN_CRIU_PE_PRESENT 0x4u /* pages are in pages-<pages_id>.img */

struct pin_criu_pagemap_entry {
	uint64_t vaddr;
	uint64_t nr_pages;
	uint64_t offset;   /* in pages-<pages_id>.img, with PE_PRESENT */
	uint64_t file_off; /* where the entry sits in pagemap-PID.img */
	uint32_t flags;	   /* PE_*; old images' in_parent becomes PE_PARENT */
	uint32_t source;   /* whose pages file: 0 the dump's, k its k-th parent's */
};

/*
 * Decode pagemap-PID.img in directory dirfd: the head's pages_id and the
 * entries, checked to be page aligned, ascending and not overlapping, each
 * of source 0 (criu-img.c).  *ret_entries is malloc'd.
 */
int pin_criu_pagemap_read(int dirfd, int pid, uint32_t *ret_pages_id,
			  struct pin_criu_pagemap_entry **ret_entries, size_t *ret_nr);

/* ---- CRIU's page server (pageserver.c, criu-remote.c) ------------------- */

/* A connection to a page server of CRIU's. */
struct pin_ps;
/* nr_pages pages of a task at addr, to be written to buf. */
struct pin_ps_range {
	uint64_t addr;
	uint64_t nr_pages;
	void *buf;
};

/* Connect to ADDR:PORT (a name or a number, IPv4 or IPv6), waiting
 * timeout_ms at most for each address tried; logged on failure. */
int pin_ps_connect(const char *addr, uint16_t port, int timeout_ms, struct pin_ps **ret);
/* A connected stream socket (it becomes the connection's, made
 * non-blocking); name stands for the peer in messages. */
int pin_ps_from_fd(int fd, const char *name, struct pin_ps **ret);
/*
 * Fetch the lazy pages of task dst_id (its pid) in ranges: GETs of at most
 * 1 MiB, many in flight, the rest of a short answer asked again.  Each wait
 * ends after timeout_ms without a byte moved (-ETIMEDOUT).  A failure is
 * logged with the GET it hit; the connection is unusable after one.
 */
int pin_ps_fetch(struct pin_ps *ps, uint64_t dst_id, const struct pin_ps_range *ranges, size_t n,
		 int timeout_ms);
/*
 * GETs streamed over a connection for a caller that waits on the socket
 * itself (uffdd): queued, sent and answered without ever blocking (every
 * send and recv is MSG_DONTWAIT), each reply checked against its GET as
 * pin_ps_fetch() checks it.  The connection is unusable after a failure.
 */
struct pin_ps_gets;
/* A reply whole: nr_pages pages at addr are in buf, for the GET added with
 * tag. */
typedef void (*pin_ps_done_fn)(void *arg, void *tag, uint64_t addr, uint64_t nr_pages, void *buf);
int pin_ps_gets_new(struct pin_ps *ps, uint64_t dst_id, struct pin_ps_gets **ret);
void pin_ps_gets_free(struct pin_ps_gets *g);
/* Queue nr_pages pages at addr, to be written to buf (GETs of 1 MiB at
 * most; the rest of a short answer is asked again, told to done apart). */
int pin_ps_gets_add(struct pin_ps_gets *g, uint64_t addr, uint64_t nr_pages, void *buf);
/* The same for task dst_id (not the one of pin_ps_gets_new()), its replies
 * told to done with tag: the GETs of many tasks share one connection, as
 * CRIU's restore of a tree does. */
int pin_ps_gets_add_task(struct pin_ps_gets *g, uint64_t dst_id, uint64_t addr, uint64_t nr_pages,
			 void *buf, void *tag);
/* Send and receive what can move now, calling done for each whole reply;
 * 0, or -errno (-EBADMSG: an answer that is not the GET's; -ECONNRESET: the
 * server hung up), logged, and told by pin_ps_gets_failure(). */
int pin_ps_gets_pump(struct pin_ps_gets *g, pin_ps_done_fn done, void *arg);
/* Bytes read off the stream since it was taken (resumed). */
uint64_t pin_ps_gets_read(const struct pin_ps_gets *g);
/* GETs queued or in flight (a reply's rest to drop counts as one). */
size_t pin_ps_gets_pending(const struct pin_ps_gets *g);
/* Whether some GET waits for room to be sent (wait for POLLOUT too). */
bool pin_ps_gets_sending(const struct pin_ps_gets *g);
/* What the last failure was, and the GET it hit (nr_pages 0: none). */
const char *pin_ps_gets_failure(const struct pin_ps_gets *g, uint64_t *ret_addr,
				uint64_t *ret_nr_pages);
/* Bytes of one message header (a GET whole): struct page_server_iov. */
#define PIN_PS_IOV_BYTES 32
/* GETs out and not wholly answered at once, at most. */
#define PIN_PS_GETS_IN_FLIGHT 64
/* What a journal is told (pin_ps_gets_journal()), GETs numbered from 0 in
 * the order they go out. */
enum pin_ps_note {
	PIN_PS_NOTE_GET,   /* GET seq goes out next: not a byte of it yet */
	PIN_PS_NOTE_SENT,  /* GET seq is wholly out */
	PIN_PS_NOTE_REPLY, /* the reply to GET seq has nr_pages (checked), at rd
			    * bytes read: its header whole in the socket, not a
			    * byte of it taken yet */
	PIN_PS_NOTE_TAKEN, /* that header is taken off the stream */
};
struct pin_ps_noted {
	uint64_t seq, dst_id, addr, nr_pages, rd;
	void *tag;
};
typedef void (*pin_ps_note_fn)(void *arg, enum pin_ps_note what, const struct pin_ps_noted *n);
/* Tell fn each step of the stream, as it is taken: a reply's header is then
 * peeked whole before a byte of it is read, so that a successor that knows
 * how many bytes were read knows which reply it is in. */
void pin_ps_gets_journal(struct pin_ps_gets *g, pin_ps_note_fn fn, void *arg);
/* Go on with a stream another process left (nothing queued yet): the next
 * reply answers GET seq, skip bytes (of a reply it half read, to drop) come
 * before it, rd bytes were read.  Then its GETs in flight are added in their
 * order and pin_ps_gets_gone_out() says how many bytes of them went out. */
int pin_ps_gets_resume(struct pin_ps_gets *g, uint64_t seq, uint64_t rd, uint64_t skip);
/* The first bytes of the GETs queued went out already (no more than they
 * hold): 0, or -EINVAL. */
int pin_ps_gets_gone_out(struct pin_ps_gets *g, uint64_t bytes);
/* Its socket. */
int pin_ps_fd(const struct pin_ps *ps);
/* A connected stream socket whose flags stay as they are (a descriptor
 * shared with a client): for GETs only, which never block. */
int pin_ps_wrap(int fd, const char *name, struct pin_ps **ret);
/* PS_IOV_CLOSE and the server's status: 0, -EPROTO (a status not 0) or
 * -errno; the caller still frees ps. */
int pin_ps_close(struct pin_ps *ps, int timeout_ms);
/* Close the socket and free; accepts NULL. */
void pin_ps_free(struct pin_ps *ps);

/*
 * Task pid of the CRIU dump in dir as pin_image_open_criu() reads it, but
 * its PE_LAZY pages fetched from the page server ps (the others read from
 * pages-<id>.img, which a lazy dump's images need only for them): all of
 * them placed in a sealed memfd that becomes the image's pages file.
 */
int pin_image_open_criu_remote(const char *dir, int pid, struct pin_ps *ps, int timeout_ms,
			       struct pin_image **ret);
/*
 * The same with the PE_LAZY pages left on the page server: holes in the
 * memfd, to be asked for by uffdd (pin_client_add_image_regions_remote()).
 */
int pin_image_open_criu_lazy(const char *dir, int pid, struct pin_image **ret);
/* criu.c's reader with the pages placed by criu-remote.c: e's offsets and
 * flags rewritten to point into the new pages file, *ret over it; ps NULL:
 * the PE_LAZY pages not fetched. */
int pin_criu_remote_pages(int dfd, const char *dir, int pid, uint32_t pages_id, struct pin_ps *ps,
			  int timeout_ms, struct pin_criu_pagemap_entry *e, size_t ne,
			  struct pin_image **ret, uint64_t *ret_size);

#endif /* LIBPIN_PRIVATE_H */
