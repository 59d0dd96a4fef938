/* SPDX-License-Identifier: MIT */
/*
 * uffdd internals.  Threading: the main thread accepts; every session (its
 * socket and its userfaultfd) belongs to one worker thread, which alone
 * changes it.  The owner reads its own state without locks and takes
 * session->lock only to change regions or pins, so that other threads
 * (uffdctl requests served by another worker) can read them under that lock.
 * Counters are single-writer relaxed atomics.
 *
 * The files, each calling only files after it in this list (checked by
 * ../shared/tools/callcycles.py): main, supervise, takeover, listen,
 * firecracker, fcgmem, fcwset, fcmsg, control, control-region, control-reply,
 * inspect, worker, push, fault, place, dirty, snapshot, finish,
 * session-restore, session, session-table, region, pins, state-txn, state,
 * state-arena, state-now, reader, source, source-file, source-ra,
 * source-remote, remote-adopt, remote-conn, remote-record, closer, store,
 * notify, evlog, crew, share, log, util.
 * Requests go listen -> control -> session; faults worker -> push -> fault
 * -> source.  What goes back up (a reply, a stale notice, a fork child's
 * userfaultfd) goes through notify.c's handlers.  Below, one section per file.
 */
#ifndef UFFDD_H
#define UFFDD_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <syslog.h>

#include "libpin-private.h"

/* ---- util.c: settings, page size, clock -------------------------------- */

/* --firecracker-socket PATH --mem-file FILE pairs, at most (firecracker.c). */
#define UFFDD_FC_MAX 8

struct uffdd_fc {
	const char *socket, *mem_file;
};

struct uffdd_config {
	const char *socket_path;
	/* Where Firecracker VMs connect, each with the snapshot memory file
	 * their pages come from (named by the administrator only). */
	struct uffdd_fc fc[UFFDD_FC_MAX];
	unsigned int nfc;
	unsigned int workers;
	uint32_t max_regions_per_uid;
	uint64_t max_pinned_per_uid;
	/* Per uid (0: no limit): sessions (fork children too), connections,
	 * descriptors the daemon holds for them, bytes of their records. */
	uint32_t max_sessions_per_uid, max_connections_per_uid, max_fds_per_uid;
	uint64_t max_bytes_per_uid;
	uint64_t max_state_bytes; /* a session's record, at most */
	/* --admin-group: its members see every session (as root does);
	 * UFFDD_NO_GROUP: none. */
	gid_t admin_gid;
	/* The service manager's watchdog (WATCHDOG_USEC), in ns; 0: none. */
	uint64_t watchdog_ns;
	int verbose;
};

#define UFFDD_NO_GROUP ((gid_t)-1)

extern struct uffdd_config uffdd_cfg;
extern size_t uffdd_page; /* the page size */
extern unsigned int uffdd_page_shift;

void uffdd_page_init(void);
uint64_t uffdd_now_ns(void);
/* fstat() of a descriptor a client sent, from what the kernel has cached
 * (AT_STATX_DONT_SYNC): a FUSE or NFS file's server is not asked, and may
 * never answer.  0 or -errno. */
int fstat_cached(int fd, struct stat *st);

/*
 * A point where a death matters: with UFFDD_HOLD=<point> in its environment
 * the daemon stops itself there (SIGSTOP), so that a test kills it exactly
 * at that point.  Under the supervisor, a list "<point>,<point>,..." holds
 * its first serving child at the first point, the successor at the next,
 * and so on; past the last, none.  Points: "fork-stored" (a batch's fork children stored,
 * none of them made yet), "conn-accepted" (a connection accepted, not yet
 * stored), "fc-accepted" (a connection accepted and stored, a Firecracker
 * VM's handshake not read yet), "fc-served" (a VM's session made of its
 * handshake and committed, the handshake not yet taken off the
 * connection), "events-read" (a read that took an event but a page fault:
 * its messages in the session's record, none applied, its faults not
 * served), "placed" (a placing ioctl done, its pages' populated bits not
 * set yet), "lost-recorded" (pages a source could not give counted in the
 * session's record, their UFFDIO_POISON not issued yet); a page server's
 * stream (remote-conn.c): "ps-conn-stored" (a connection's socket and
 * record stored, no source of it yet), "ps-get-journaled" (a GET
 * journaled, not a byte of it sent), "ps-get-sent" (a GET wholly sent),
 * "ps-reply-journaled" (a reply's header whole in the socket and
 * journaled, not a byte of it read),
 * "ps-reply-half-read" (its header read, its pages not), "ps-reply-read"
 * (a reply read whole, its pages not placed), "ps-end-drained" (a
 * connection's end under way: the answers in flight read, PS_IOV_CLOSE not
 * sent).  Without the variable: nothing.
 */
#define UFFDD_HOLD_ENV "UFFDD_HOLD"
void uffdd_hold(const char *point);
/* The list past its first point, for the next serving child (supervise.c):
 * the variable unset once none is left. */
void uffdd_hold_next(void);

/* ---- crew.c: placer threads that share a worker's bulk placing ---------- */

/* A task of a batch; buf holds uffdd_run_bytes() for its source reads. */
typedef void (*crew_fn)(void *task, void *buf);

/* Start n placers (0: each worker places alone); before the workers. */
int crew_start(unsigned int n);
/* The threads a batch may have at once: the placers and its caller. */
unsigned int crew_width(void);
/* Run fn on tasks (n of size bytes each, in order) with the crew, the
 * caller taking mine of them at most with its buf: returns k when tasks
 * [0, k) were done, the rest not begun (none taken by then).  While the
 * crew serves another caller, this one does its mine alone. */
unsigned int crew_run(crew_fn fn, void *tasks, size_t size, unsigned int n, unsigned int mine,
		      void *buf);
/* After the workers ended: end the placers. */
void crew_stop(void);

/* ---- share.c: a fair share of the daemon's time per uid ----------------- */

/*
 * Work done for a session is charged to its uid (share_charge()); a uid that
 * spent while others were active owes them time, and its requests and bulk
 * work wait until share_owes() says 0.  Faults never wait for it, but for
 * those of a process that forked while its uid owed (worker.c).
 */
struct share;

/* The entry of uid (made at its first use; NULL when out of memory: such a
 * uid is never deferred). */
struct share *share_of(uid_t uid);
/* This thread's CPU time (ns): what share_charge() is given is a difference. */
uint64_t share_clock(void);
/* sh's uid had spent ns of a worker's CPU time at now (ns, uffdd_now_ns()). */
void share_charge(struct share *sh, uint64_t spent, uint64_t now);
/* How long sh's requests and bulk work must still wait (ns; 0: none). */
uint64_t share_owes(const struct share *sh, uint64_t now);

/* ---- log.c ------------------------------------------------------------- */

void ulog(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Lines one client can cause: a few per window, then a count of the rest. */
struct ratelimit {
	uint64_t start; /* ns: the window began */
	unsigned int n, suppressed;
};

void ulog_rl(struct ratelimit *rl, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Log the count of the lines rl suppressed in its window, if any, for who
 * ("session 7"): the end of what may log through it (a window that never
 * turns again would never tell). */
void ulog_rl_end(struct ratelimit *rl, const char *who);
/* A session's line, rate limited per session. */
#define slog(s, prio, fmt, ...)                                                                    \
	ulog_rl(&(s)->rl, prio, "session %" PRIu64 ": " fmt, (s)->id, ##__VA_ARGS__)
/* Log to the journal when it reads stderr; libpin's messages as debug lines. */
void log_init(void);

/* ---- util.c: bitmaps (one bit per page) -------------------------------- */

static inline bool bm_test(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] >> (i % 64) & 1;
}

static inline void bm_set(uint64_t *bm, uint64_t i)
{
	bm[i / 64] |= 1ull << (i % 64);
}

static inline void bm_clear(uint64_t *bm, uint64_t i)
{
	bm[i / 64] &= ~(1ull << (i % 64));
}

void bm_assign(uint64_t *bm, uint64_t from, uint64_t n, bool value);
uint64_t bm_count(const uint64_t *bm, uint64_t from, uint64_t n);
/*
 * The first bit in [from, to) set in neither a nor b; looks at *budget bits
 * at most (less what it looked at is left there) and returns where it
 * stopped when they ran out.
 */
uint64_t bm_first_unset(const uint64_t *a, const uint64_t *b, uint64_t from, uint64_t to,
			uint64_t *budget);
/* Copy bits [from, from + n) of src to bits [0, n) of dst. */
void bm_copy(uint64_t *dst, const uint64_t *src, uint64_t from, uint64_t n);

/* ---- notify.c ---------------------------------------------------------- */

struct session;

/* What reaches a client or a worker from below the requests: set once. */
struct notify_ops {
	int (*reply)(struct session *s, uint64_t seq, int error, const char *text);
	/* A Replay done: the pages it placed. */
	void (*replayed)(struct session *s, uint64_t seq, int error, uint64_t placed);
	/* The session ends: the answer to a Goodbye that waited, with its
	 * counters. */
	void (*ended)(struct session *s, uint64_t seq, int error, const char *text);
	/* Tell the owners of pins overlapping [start, end) that they went stale. */
	void (*stale)(struct session *s, uint64_t start, uint64_t end, uint32_t event);
	/* A fork child's session and its userfaultfd fd (watch handler set):
	 * to the parent's worker. */
	void (*child)(struct session *parent, struct session *child, int fd);
	/* A Firecracker VM's session ends (firecracker.c keeps its working
	 * set for the next VM of its memory file). */
	void (*vm_ended)(struct session *s);
};

void notify_set(const struct notify_ops *ops);
int notify_reply(struct session *s, uint64_t seq, int error, const char *text);
void notify_replayed(struct session *s, uint64_t seq, int error, uint64_t placed);
void notify_ended(struct session *s, uint64_t seq, int error, const char *text);
void notify_stale(struct session *s, uint64_t start, uint64_t end, uint32_t event);
void notify_vm_ended(struct session *s);

/* ---- evlog.c: the event log a client's pin cache reads ---- */

/* Map fd (the client's memfd, checked) as s's log, busy until evlog_end();
 * the error's text in why. */
int evlog_adopt(struct session *s, int fd, char *why, size_t whylen);
/* Around each read of s's userfaultfd, until its events are applied. */
void evlog_begin(struct session *s);
void evlog_end(struct session *s);
/* Log a REMOVE, UNMAP or REMAP (others are not logged). */
void evlog_put(struct session *s, const struct pin_uffd_event *ev);
/* Unmap and close the log (none: a no-op). */
void evlog_close(struct session *s);
void notify_child(struct session *parent, struct session *child, int fd);
/* Tell systemd (when it started us) how many sessions there are. */
void notify_status(unsigned int nsessions);
/* Tell the service manager's watchdog that the daemon is alive (WATCHDOG=1). */
void notify_watchdog(void);

/* ---- store.c: the fd store (the service manager's, or supervise.c's) ---- */

/*
 * Everything a session depends on is a descriptor kept in the store, so that
 * a daemon killed at any instruction loses nothing: its successor gets them
 * back (LISTEN_FDS, LISTEN_FDNAMES) and rebuilds the sessions.  The names:
 *   s<id>.conn   a session's connection      s<id>.uffd  its userfaultfd
 *   s<id>.state  its state memfd (state.c)   f<id>       a source file
 *   s<id>.fork<parent id>  a fork child's userfaultfd
 * (<id> in decimal).  Any other name is a listening socket.
 */
#define STORE_NAME_MAX 32

struct stored_fd {
	int fd;
	char name[STORE_NAME_MAX];
};

/* A name the store takes: printable ASCII but ':', 1 to STORE_NAME_MAX - 1
 * bytes.  store_put() and store_remove() refuse any other with -EINVAL. */
bool store_name_valid(const char *name);
/* Whether a store keeps what store_put() hands it (NOTIFY_SOCKET is set). */
bool store_enabled(void);
/* Hand a copy of fd to the store under the name; the caller keeps fd.
 * 0, or -errno (the store is gone or refused it; -EINVAL: a bad name).
 * 0 without a store. */
int store_put(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop whatever the store holds under the name. */
void store_remove(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * At start: what the manager passed, split into the listening sockets and the
 * stored descriptors (both arrays are the caller's to free; the fds are
 * CLOEXEC).  Without socket activation, both are empty.
 */
int store_start(int **ret_listen, size_t *ret_nlisten, struct stored_fd **ret_stored,
		size_t *ret_nstored);

/* ---- reader.c: reads of a source that may block, off the workers ------- */

struct reader;
struct source;

/*
 * A session's reader for uid: a process that reads a source that may block,
 * one read of a run at most at a time, and writes efd (the worker's eventfd)
 * when it is done.  -EDQUOT: the uid has too many readers stuck already.
 */
int reader_new(uid_t uid, int efd, struct reader **ret);
/* Read len bytes (a run at most) at off of src: 0, or -EBUSY while a read
 * is under way. */
int reader_start(struct reader *rd, struct source *src, uint64_t off, size_t len);
/*
 * What the last read holds at off of src, len bytes at most: their number
 * (> 0, at *ret, valid until the next reader_start()), 0 when it holds
 * nothing there, or once the -errno of a read there that failed.
 */
ssize_t reader_take(struct reader *rd, const struct source *src, uint64_t off, size_t len,
		    const void **ret);
bool reader_busy(const struct reader *rd);
/* Whether a read ended since the last call. */
bool reader_done(struct reader *rd);
/* End it; accepts NULL.  A read under way is left to end on its own (maybe
 * never): the caller never waits for it. */
void reader_free(struct reader *rd);
/* Reap the readers that exited (on SIGCHLD). */
void reader_reap(void);
/* The reader process's main (`uffdd --reader SOCK,BUF,EFD`): its exit code. */
int reader_main(const char *fds);

/* ---- closer.c: closes that may wait for a server, off the workers ------- */

/* A uid with this many closes pending adds no source that may block. */
#define CLOSES_PENDING_MAX 64

/*
 * Close fd (taken; -1: nothing), a descriptor uid sent: at once, unless its
 * close() may wait for a server (a FUSE or NFS file); then in a closer, a
 * process sharing the daemon's descriptor table, after the uid's closes
 * before it.  The descriptor leaves the table before the call returns or soon
 * after; the caller never waits for its file system.
 */
void closer_close(int fd, uid_t uid);
/* Whether a close() of fd (st its statx()) may wait for a server: a regular
 * file of a file system of no device of its own (FUSE, NFS, ...), not shmem.
 * Asks the file system nothing. */
bool closer_needed(int fd, const struct stat *st);
/* The closes of uid not done yet. */
size_t closer_pending(uid_t uid);
/* Reap the closers that ended and start the next (on SIGCHLD). */
void closer_reap(void);
/* In a child after fork(): forget the parent's closers and queues (their
 * descriptors are the parent's to close), closing nothing. */
void closer_forget(void);
/* Say the closes pending over a while (once each); the ms until the next
 * look (-1: none).  Its caller is woken by SIGCHLD when a closer starts. */
int closer_tick(uint64_t now);

/* ---- source-file.c: source files, held once each, and their extents ---- */

/*
 * At start: take over fd, stored as f<id>, checked as source_new() checks a
 * client's (closed on failure; -EEXIST: the id is taken).  New files get ids
 * above the largest adopted.  Held until source_files_unadopted_release(),
 * which drops (closes, and removes from the store) those no source took.
 */
int source_file_adopt(uint64_t id, int fd);
void source_files_unadopted_release(void);

/* ---- source.c ---------------------------------------------------------- */

struct source;
struct remote;

/*
 * A page source over the window [off, off + len) of fd (taken over; -1:
 * every page is zero).  A file already held by some source (same device and
 * inode) is read through the descriptor held, and fd is closed: one
 * descriptor per distinct file, in the fd store as f<id>.  uid sent it: the
 * close of the file is charged to it (closer.c).  -EBADF: fd is not open for
 * reading; -EINVAL: not a regular file or block device; -EDQUOT: a file whose
 * close may wait for a server, from a uid with CLOSES_PENDING_MAX closes
 * pending.
 */
int source_new(int fd, uid_t uid, uint64_t off, uint64_t len, struct source **ret);
/* The same, its file never mapped by the daemon: a snapshot's source, whose
 * pages the daemon never reads (UFFDIO_CONTINUE maps the process's own). */
int source_new_unmapped(int fd, uid_t uid, uint64_t off, uint64_t len, struct source **ret);
/* The same over the file of that id (0: zero pages); -ENOENT: no such file.
 * covered: the file reached off + len when the region was added (a region's
 * record says so: STATE_R_COVERED), so that what it lost since is data gone
 * (poisoned), not a hole (zero pages). */
int source_new_from(uint64_t id, uid_t uid, uint64_t off, uint64_t len, bool covered,
		    struct source **ret);
/* Its file reached the end of the window asked for, when it was made. */
bool source_covers(const struct source *s);
/* A page-server source (source-remote.c), which it takes over; an id with
 * REMOTE_ID_BIT given to source_new_from() makes one whose connection is
 * lost (remote_lost()). */
int source_new_remote(struct remote *rm, struct source **ret);
/* Its page server, NULL when it reads a file or zeroes. */
struct remote *source_remote(const struct source *s);
/* Its file's id, what a region records (0: a zero source; a page server's
 * has REMOTE_ID_BIT). */
uint64_t source_file_id(const struct source *s);
struct source *source_ref(struct source *s);
void source_unref(struct source *s);
bool source_is_zero(const struct source *s);
/* fstat() of its file (-EINVAL for a zero source). */
int source_stat(const struct source *s, struct stat *st);
/*
 * Of the n pages at file offset off, how many in a row are the same kind as
 * the first: data (*ret_data) or a hole / past the end (read as zero).
 */
uint64_t source_extent(const struct source *s, uint64_t off, uint64_t n, bool *ret_data);
/*
 * Whether a read of it may wait for a server that never answers (FUSE, NFS,
 * a block device): then a reader (reader.c) reads it, never a worker.
 */
bool source_may_block(const struct source *s);
/*
 * Where the len bytes of data at off can be copied from: inside the source's
 * mapping, or read into buf (len bytes of room) when it cannot be mapped.
 * -EINPROGRESS: they are being read (source-ra.c), ask again once
 * source_reads_landed().  Not for a source that may block.
 */
int source_data(const struct source *s, uint64_t off, size_t len, void *buf, const void **ret);
/* Its file's descriptor (-1: a zero source). */
int source_fd(const struct source *s);
/* Read the len bytes at off of fd into buf (past the end of the file:
 * zeroes); any thread or process. */
int source_pread(int fd, uint64_t off, size_t len, void *buf);

/* ---- source-ra.c: readahead of source files on disk, through io_uring --- */

/*
 * In a worker thread, at its start: the thread's ring for source reads,
 * whose completions write efd (the worker's eventfd).  Without one (said
 * once), the thread's copies read cold pages themselves.
 */
void source_thread_start(int efd);
/* Whether reads of this thread landed since the last call: faults that
 * waited for them (source_data() -EINPROGRESS) may go on. */
bool source_reads_landed(void);

/* ---- source-remote.c: pages asked of a remote page server ---------------- */

struct remote;
struct worker;

/* Bytes of buffers (asked or holding pages not placed yet) a page-server
 * connection has at most, charged to the session of one of its sources
 * (CHARGE_BYTES, remote_pays()): 64 GETs of 1 MiB, what libpin keeps in
 * flight. */
#define UFFDD_REMOTE_BYTES_MAX (64ull << 20)
/* Page-server sources' ids have this bit, files' ids not (FILE_ID_MAX). */
#define REMOTE_ID_BIT ((uint64_t)1 << 63)

/*
 * A page-server source over fd (taken over; a connected stream socket, else
 * -ENOTSOCK), whose GETs carry task; worker w's epoll watches it.  The
 * sources uid makes over the same socket (any descriptor of it) share one
 * connection; -EBUSY: another uid's sources read that socket.  sid names the
 * session in log lines.
 */
int remote_new(int fd, uint64_t task, uid_t uid, struct worker *w, uint64_t sid,
	       struct remote **ret);
/* Whether its session is charged for the connection's buffers (one source
 * of each connection is; when it ends, another). */
bool remote_pays(const struct remote *rm);
/* One of a region rebuilt after a restart whose connection was not taken
 * back (every read fails with -ENOTCONN); NULL without memory. */
struct remote *remote_lost(uint64_t id);
void remote_free(struct remote *rm);
uint64_t remote_id(const struct remote *rm);
/*
 * The data at off (the remote task's address), *len bytes at most: 0 with
 * *ret and *len set to what has come, -EINPROGRESS when it is asked for
 * (the worker's remotes_pump() says when something came), or the -errno
 * that broke the source.  ahead (0: none) is where a push run's region ends
 * in the source: what comes after off is asked for too.
 */
int remote_data(struct remote *rm, uint64_t off, size_t *len, uint64_t ahead, const void **ret);
/* The len bytes at off were placed (or found there): their buffer may go. */
void remote_used(struct remote *rm, uint64_t off, size_t len);
/* Move what can move on every remote of w; whether a reply came or one broke. */
bool remotes_pump(struct worker *w);
/* The ms until a remote of w is taken as hung (-1: none waits). */
int remotes_timeout(const struct worker *w);

/* ---- remote-adopt.c: page-server connections taken back at start --------- */

/* Connection id from its socket and record as the fd store kept them (-1:
 * missing; both closed): refused (logged, cut, dropped from the store) when
 * they do not hold together. */
void remote_conn_adopt(uint64_t id, int sock, int recfd);
/* Source id of an adopted connection of uid, for a region rebuilt; NULL
 * when there is none (the source is lost: remote_lost()). */
struct remote *remote_claim(uint64_t id, uid_t uid);
/* rm, claimed, is watched by w from now on (session sid's). */
void remote_attach(struct remote *rm, struct worker *w, uint64_t sid);
/* The worker of every session that reads rm (its sessions share it: a fork
 * family's, after a restart too): its home, set to w when it has none and w
 * is not NULL.  NULL: none yet. */
struct worker *remote_home(struct remote *rm, struct worker *w);
/* Once every session is rebuilt: the sources no region claimed leave. */
void remotes_unclaimed_release(void);

/* ---- remote-record.c: a page-server connection's durable record ---------- */

/* Sources one connection's record holds (a restored tree's tasks); one
 * more still works, its pages lost with a daemon that dies. */
#define RREC_SOURCES 1024

struct rrec;
struct rrec_planned {
	uint64_t src, task, addr, nr;
};
/* Where a stream stands, from its record and its socket's counts. */
struct rrec_plan {
	uint64_t seq;  /* the GET the next reply answers */
	uint64_t rd;   /* bytes read since the daemon took the stream */
	uint64_t skip; /* bytes of a reply half read, to drop first */
	uint64_t out;  /* bytes of the GETs in flight that went out */
	bool ending;   /* its end began (no source was left) */
	size_t n;      /* GETs in flight (v), in their order */
	struct rrec_planned v[PIN_PS_GETS_IN_FLIGHT];
};

/* The bytes the daemon read off the TCP stream fd and wrote to it (the
 * kernel's counts); -ENOTCONN: not established (the server hung up),
 * -EOPNOTSUPP: not TCP, or a kernel without the counts. */
int rrec_counts(int fd, uint64_t *ret_rd, uint64_t *ret_wr);
size_t rrec_bytes(void);
/* A new record (a memfd, *ret_fd, mapped) for connection id of uid whose
 * stream counts are rd0 and wr0 now. */
int rrec_new(uint64_t id, uid_t uid, uint64_t rd0, uint64_t wr0, struct rrec **ret, int *ret_fd);
/* The record of connection id in fd (untrusted; the caller keeps fd):
 * -EBADMSG with why when it is not one. */
int rrec_map(int fd, uint64_t id, struct rrec **ret, char *why, size_t len);
void rrec_unmap(struct rrec *r);
uint64_t rrec_id(const struct rrec *r);
/* The stream's counts when the daemon took it. */
void rrec_base(const struct rrec *r, uint64_t *ret_rd0, uint64_t *ret_wr0);
uid_t rrec_uid(const struct rrec *r);
/* Source slot i (below RREC_SOURCES): whether it holds one. */
bool rrec_src_at(const struct rrec *r, size_t i, uint64_t *ret_id, uint64_t *ret_task);
/* -ENOSPC: RREC_SOURCES are held. */
int rrec_src_add(struct rrec *r, uint64_t id, uint64_t task);
void rrec_src_del(struct rrec *r, uint64_t id);
/* GET n (of source src) goes out next; its reply's header is whole. */
void rrec_get(struct rrec *r, uint64_t src, const struct pin_ps_noted *n);
void rrec_reply(struct rrec *r, const struct pin_ps_noted *n);
void rrec_ending(struct rrec *r);
/* Where the stream of r stands now that rd and wr bytes were read and
 * written (rrec_counts()): -EBADMSG with why when the record does not hold
 * together or does not match them. */
int rrec_plan(const struct rrec *r, uint64_t rd, uint64_t wr, struct rrec_plan *p, char *why,
	      size_t len);

/* ---- state.c: a session's durable record, a memfd ------------------------ */

/*
 * One memfd per session, mapped by the daemon and changed in place: a header
 * (magic, version, the session's identity), two commit slots (the current one
 * is named by a single byte, so a commit takes effect at once), a table of
 * records (regions and pins), the working set, and an arena of bitmaps.  A
 * record carries the txn that made it (born) and the one that removed it
 * (died): it is live when born <= commit and not died <= commit, so many
 * changes take effect together at state_commit() and a daemon killed before
 * it leaves every record as it was.  A bitmap's bits are set and cleared in
 * place (durable at once); a bitmap freed, like a record deleted, is reused
 * only after the commit.  Owner worker only (or before the session has one).
 */
#define STATE_NAME_MAX 64
/* A stranded session's text in its record, terminated (struct session's). */
#define STATE_WHY_MAX 256
/* Runs of the working set a session records, at most: 16 MiB. */
#define UFFDD_WSET_MAX (1u << 20)

/* Fixed when the session is made. */
struct state_ident {
	uint64_t id;
	uint64_t parent; /* a fork child's parent session; 0: a client's own */
	uint32_t uid;
	uint64_t token[2]; /* random */
};

#define STATE_HELLO   (1u << 0) /* the client said Hello */
#define STATE_UFFD    (1u << 1) /* a userfaultfd was handed over (stored as s<id>.uffd) */
#define STATE_FORKING (1u << 2) /* a fork child's, its regions not copied yet */
/* Its client said Goodbye: the daemon places the rest of every region, then
 * ends it (with or without its connection). */
#define STATE_FINISHING (1u << 3)
/* A Firecracker VM's (firecracker.c): its connection carries one handshake
 * and no request; nothing is sent to it. */
#define STATE_FC (1u << 4)
/* Its handshake is served (the session made of it committed); until then a
 * successor serves it again from the connection, where it stays. */
#define STATE_FC_READY (1u << 5)
/* The client's pagemap came with its userfaultfd (stored as s<id>.pagemap):
 * wp-async regions' DirtyGet scans it (dirty.c). */
#define STATE_PAGEMAP (1u << 6)
/* The client's event log came with its userfaultfd (stored as s<id>.evlog:
 * evlog.c). */
#define STATE_EVLOG (1u << 7)

/* What changes, at a commit. */
struct state_meta {
	int32_t pid;
	uint32_t flags; /* STATE_* */
	uint64_t features;
	char name[STATE_NAME_MAX];
};

enum state_kind { STATE_REGION = 1, STATE_PIN = 2 };

#define STATE_R_PUSH (1u << 0) /* push untouched pages in the background */
#define STATE_R_OURS (1u << 1) /* the daemon registered it */
#define STATE_R_HUGE (1u << 2) /* UFFDD_HUGE_PAGE pages (hugetlbfs) */
/* Its source's file reached the region's end when it was added: pages past
 * a later end are lost, not holes (source_new_from()).  A record from before
 * this flag restores as holes there. */
#define STATE_R_COVERED (1u << 3)

struct state_rec {
	uint32_t kind;	/* enum state_kind */
	uint32_t mode;	/* regions: PIN_UFFD_REGISTER_* */
	uint32_t flags; /* regions: STATE_R_* */
	uint32_t pad;
	uint64_t start, len; /* bytes, page aligned */
	uint64_t offset;     /* regions: of start in the source; pins: the cookie */
	uint64_t src;	     /* regions: the source file's id; 0: zero pages */
	/* regions: arena offsets of the bitmaps (state_bm_off()); dirty 0: not WP */
	uint64_t populated, zero, dirty;
};

struct state_range {
	uint64_t addr, end;
};

struct state;

/* A new record for a session, in a new memfd of at most max_bytes. */
int state_new(const struct state_ident *ident, uint64_t max_bytes, struct state **ret);
/*
 * Take over fd (an untrusted memfd from the store): map it and check every
 * part the daemon will use.  -EBADMSG with why filled in when it is not a
 * record this daemon wrote (closes fd then too), -ENOMEM.
 */
int state_open(int fd, uint64_t max_bytes, struct state **ret, char *why, size_t whylen);
/* Unmap and close; accepts NULL. */
void state_free(struct state *st);
int state_fd(const struct state *st);
const struct state_ident *state_ident(const struct state *st);
/* The committed metadata; state_set_meta() takes effect at the next commit. */
const struct state_meta *state_meta(const struct state *st);
void state_set_meta(struct state *st, const struct state_meta *m);
/* Arena bytes in use: what the session is charged for its record. */
uint64_t state_bytes(const struct state *st);

/* state-txn.c: bitmaps, records and commits. */

/* A zeroed bitmap of nbits in the arena; NULL with errno EFBIG when no run
 * of its size is free within the record's max_bytes, ENOMEM when the daemon
 * is out of memory, EINVAL for 0 bits. */
uint64_t *state_bm_new(struct state *st, uint64_t nbits);
/* The arena's bytes not in use: what bitmaps and record tables may still
 * take (in one run or several). */
uint64_t state_room(const struct state *st);
/* Give it back; its room is reused after the next commit. */
void state_bm_free(struct state *st, uint64_t *bm, uint64_t nbits);
uint64_t state_bm_off(const struct state *st, const uint64_t *bm);
/* The bitmap at off (from a committed record): NULL unless it is one that
 * state_bm_new() made of nbits. */
uint64_t *state_bm_at(struct state *st, uint64_t off, uint64_t nbits);

/* Records: an add or a delete takes effect at the next commit.  state_add()
 * fails with -EFBIG when the table is full and has no room to double in the
 * record. */
int state_add(struct state *st, const struct state_rec *rec, uint32_t *ret_slot);
void state_del(struct state *st, uint32_t slot);
/*
 * Commit the pending records and metadata, and, when seq is not 0, that the
 * request seq is done and its encoded reply (len <= PIN_PROTO_MAX_MSG).
 * -EOVERFLOW, nothing committed, once the record is at the last txn (only a
 * forged record from the store starts near it).
 */
int state_commit(struct state *st, uint64_t seq, const void *reply, size_t len);
/* The last request committed (0: none) and its reply. */
uint64_t state_last(const struct state *st, const void **ret_reply, size_t *ret_len);
/* Each committed live record, in slot order; stops at fn's first error. */
int state_foreach(struct state *st,
		  int (*fn)(const struct state_rec *rec, uint32_t slot, void *data), void *data);

/* state-now.c: what is durable at once, not at a commit. */

/* The working set: runs appended in order, the last one grown when the next
 * begins where it ends; at most UFFDD_WSET_MAX runs (then -ENOSPC). */
int state_wset_add(struct state *st, uint64_t addr, uint64_t end);
const struct state_range *state_wset(const struct state *st, size_t *ret_n);

/*
 * The fork children being made from this session: ids [first, end), set
 * before their userfaultfds go to the store and cleared (0, 0) once their
 * records are complete; durable at once.  A child that a dead daemon left
 * half made is made again from its parent's record only when the record
 * still names it: nothing changed the parent since its fork then.
 */
void state_making_set(struct state *st, uint64_t first, uint64_t end);
bool state_making(const struct state *st, uint64_t id);
/* The first of them (0: none): a read's k-th FORK made the child first + k. */
uint64_t state_making_first(const struct state *st);

/*
 * The pages [start, end) the last placing ioctl (COPY, ZEROPAGE, CONTINUE,
 * POISON) was given, set before it; durable at once.  A daemon killed after
 * the ioctl and before it set their populated bits leaves pages in the
 * process that its record does not have: they never fault again, so a
 * WaitPopulated would wait for them for ever.  state_placing() gives the
 * dead daemon's range at takeover (false: none), and its missing pages are
 * placed again (a Prefetch), which finds those already there (EEXIST).
 */
void state_placing_set(struct state *st, uint64_t start, uint64_t end);
bool state_placing(const struct state *st, uint64_t *ret_start, uint64_t *ret_end);

/*
 * Pages lost: n more pages whose source could not give them, counted before
 * the ioctl that poisons them (a daemon killed between the two leaves a
 * record that says lost for pages the next daemon finds missing and counts
 * again: more lost, never fewer).  state_lost() is the count, the dead
 * daemon's at takeover plus those added since.
 */
void state_lost_add(struct state *st, uint64_t n);
uint64_t state_lost(const struct state *st);
/*
 * The session is stranded (pages it cannot give, UFFDIO_POISON refused),
 * why saying so; set before anything tells it or acts on it (the Goodbye's
 * answer, its connection closed while the userfaultfd stays), so that a
 * successor never closes the userfaultfd of a stranded session.  Once:
 * later calls change nothing.  state_stranded() is the text, NULL when not.
 */
void state_strand(struct state *st, const char *why);
const char *state_stranded(const struct state *st);

/*
 * The last read(2) of the session's userfaultfd goes straight into the
 * record: the kernel writes each message it hands over there before read(2)
 * returns, so a daemon killed as it returns leaves them (a FORK, REMAP,
 * REMOVE or UNMAP is not delivered again, and a moved range the next daemon
 * does not know of faults where no region is, for ever).  The daemon marks
 * them applied as it goes; the next one applies those not marked
 * (takeover.c).  Applying one twice changes nothing: a REMAP's source range,
 * a removed range, an unmapped one hold no region the second time.
 */
#define STATE_EVENTS_MAX 64u
/* Where the next read(2) puts at most STATE_EVENTS_MAX messages: the last
 * read's, all applied, are cleared first. */
void *state_events_buf(struct state *st);
/* The messages [0, upto) of the last read need no replay. */
void state_events_applied(struct state *st, uint32_t upto);
/*
 * At takeover: the first message of the dead daemon's last read from index
 * *at on that it did not mark applied and that is not a page fault, decoded
 * (state_open() checked it), its index in *at, and, for a FORK, how many
 * FORKs came before it in that read in *ret_forks; NULL when none.
 */
const struct pin_uffd_event *state_event_pending(const struct state *st, uint32_t *at,
						 uint32_t *ret_forks);

/* ---- session.c --------------------------------------------------------- */

#define UFFDD_LAT_BUCKETS 32

struct stats {
	_Atomic uint64_t faults, pages_copied, pages_zeroed, bytes_copied, pages_pushed, wp_faults,
		eagain, eexist;
	/* Its requests or its bulk work waited for its uid's share (share.c):
	 * once a wait. */
	_Atomic uint64_t deferred;
	/* Pages poisoned, or left waiting where the kernel refused to poison
	 * them, because their source could not be read (place.c): an end
	 * after that is a failed one. */
	_Atomic uint64_t unreadable;
	_Atomic uint64_t lat[UFFDD_LAT_BUCKETS];
};

/* Single writer: a plain read-modify-write, atomic only for the readers. */
#define STAT_ADD(field, n)                                                                         \
	atomic_store_explicit(&(field),                                                            \
			      atomic_load_explicit(&(field), memory_order_relaxed) + (n),          \
			      memory_order_relaxed)
#define STAT_GET(field) atomic_load_explicit(&(field), memory_order_relaxed)

struct region {
	uint64_t start, len; /* bytes, page aligned */
	uint64_t npages;
	uint32_t mode; /* PIN_UFFD_REGISTER_MISSING | WP, or MISSING | MINOR */
	struct source *src;
	uint64_t offset; /* of start in the source */
	bool push;	 /* push untouched pages in the background */
	int push_error;	 /* what stopped its push (0: nothing; -ENOENT: no
			  * mapping is registered there, nothing can fault) */
	bool ours;	 /* the daemon registered it, so it unregisters */
	bool huge;	 /* a hugetlbfs mapping of UFFDD_HUGE_PAGE pages */
	uint32_t slot;	 /* in the session's record */
	/* Bitmaps in the session's record (state.c), changed in place: */
	uint64_t *populated; /* pages the daemon placed (or found there) */
	uint64_t *zero;	     /* discarded (MADV_DONTNEED): refault as zero */
	uint64_t *dirty;     /* WP regions: written since the last reset; else NULL */
	_Atomic uint64_t n_populated, n_dirty;
	uint64_t push_next; /* page index where the background push goes on */
	uint64_t ra_lo;	    /* readahead: where the last run began */
	uint64_t ra_next;   /* end of what readahead placed or queued */
	uint32_t ra_pages;  /* readahead window */
};

/* ---- pins.c: a session's pins, by cookie and in cookie order ---------- */

struct pin_rec {
	uint64_t addr, len, cookie;
	uint32_t slot; /* in the record */
	/* Its place in cookie order: links of the treap (index + 1; 0 none)
	 * and its priority there. */
	uint32_t up, kid[2], prio;
};

struct pin_set {
	struct pin_rec *v;
	size_t n, cap;
	uint32_t *hash; /* open addressing by cookie: index + 1; 0 free */
	size_t hash_cap;
	uint32_t root;	     /* of the treap: index + 1; 0 empty */
	uint64_t prio_state; /* the priorities' generator; 0: not seeded yet */
};

/* Room for one more pin (a zeroed set is an empty one): 0 or -errno. */
int pins_reserve(struct pin_set *ps);
/* A pin whose cookie the set has not, into the room reserved. */
void pins_add(struct pin_set *ps, uint64_t addr, uint64_t len, uint64_t cookie, uint32_t slot);
/* Pin i out; the last one takes index i. */
void pins_del(struct pin_set *ps, size_t i);
/* The index of the pin with that cookie, -1 when none (O(1)). */
ssize_t pins_find(const struct pin_set *ps, uint64_t cookie);
/* In cookie order (O(log n) each): the index of the first pin whose cookie
 * is cookie or above, and of the one after pin i; -1 when none. */
ssize_t pins_from(const struct pin_set *ps, uint64_t cookie);
ssize_t pins_next(const struct pin_set *ps, size_t i);
void pins_free(struct pin_set *ps);

/* ---- session.c (cont.) ------------------------------------------------- */

/* A fault not resolved yet: waiting for EAGAIN to pass or for its region. */
struct fault {
	uint64_t addr;
	uint32_t flags;
	/* Fault messages this entry stands for: the same page's faults that
	 * waited together are kept once (fault.c keep_fault()). */
	uint32_t n;
	uint64_t t0; /* ns, when the read(2) of the userfaultfd returned the first */
};

struct waiter {
	uint64_t seq, addr, len, deadline; /* deadline 0: none */
	uint64_t cursor;		   /* the pages before it are done */
};

/* WaitPopulated requests a session may have waiting: a client waits for
 * one at a time, or a few ranges at once. */
#define UFFDD_WAITS_MAX 64
/* Pages a waiter's check looks at in one worker round, at most. */
#define UFFDD_WAIT_SCAN (1u << 18)

struct prefetch {
	uint64_t addr, end;
};

/* A Replay request under way (push.c): its ranges, where it is, what it
 * placed. */
struct replay {
	uint64_t seq;
	struct prefetch *v;
	size_t n, k; /* range k is next, from v[k].addr */
	uint64_t placed;
};

/* An fd a worker waits on, and what it calls when the fd is readable. */
struct watch {
	void (*handle)(struct session *s); /* NULL: the worker's own eventfd */
	struct session *s;
};

struct worker;

/* An encoded message waiting for room in a session's socket (control-reply.c). */
struct out_msg {
	uint8_t *buf;
	size_t len;
};

/* What a uid is charged for (session_charge()). */
enum charge {
	CHARGE_REGIONS,
	CHARGE_PINNED,	    /* bytes */
	CHARGE_SESSIONS,    /* fork children's too */
	CHARGE_CONNECTIONS, /* sessions with a connection */
	CHARGE_FDS,	    /* connection, userfaultfd, record, distinct source files */
	CHARGE_BYTES,	    /* of the session's record (state_bytes(): bitmaps) */
	UFFDD_CHARGES
};

/* A source file a session's regions read, and how many do. */
struct file_use {
	uint64_t id;
	uint64_t regions;
	const struct source *src; /* the first region's (a page server's: theirs) */
};

struct session {
	uint64_t id;
	pid_t pid;
	uid_t uid;
	char name[64];
	int sock;	       /* -1: a fork child's session, no connection */
	struct pin_uffd *uffd; /* NULL until UffdHandover; set and cleared under
				* sessions_lock() once listed */
	/* Its userfaultfd's inode (0: not known): one per userfaultfd since
	 * Linux 5.12, compared before kcmp() (sessions_uffd_taken_locked()). */
	ino_t uffd_ino;
	/* The client's /proc/PID/pagemap, handed over with a WP_ASYNC
	 * userfaultfd (dirty.c); -1: none (a fork child's never has one). */
	int pagemap;
	/* The client's event log (evlog.c), handed over with its userfaultfd
	 * (stored as s<id>.evlog); NULL and -1: none.  busy and head are
	 * ours, written there. */
	struct pin_evlog *evlog;
	int evlog_fd;
	uint64_t evlog_busy, evlog_head;
	bool takeover;
	bool dead;	/* freed by its worker at the end of the round */
	bool eagain;	/* faults wait for a non-cooperative event to pass */
	bool in_eagain; /* counted that wait (stats.eagain) */
	struct worker *w;
	struct watch wsock, wuffd;
	struct share *share; /* its uid's share of the daemon's time */
	/* Its last read of its userfaultfd took a FORK (fault.c); then, if its
	 * uid owes time, the userfaultfd is not watched until paid (worker.c):
	 * the process's next fork waits that long in the kernel. */
	bool forked, uffd_paused;
	/* Its socket is not watched for requests: its uid owes time (share.c);
	 * its worker watches it again once paid. */
	bool paused;
	bool bulk_deferred;    /* its bulk work waits for the same (push.c) */
	struct session *wnext; /* the worker's list */
	struct session *gnext; /* the global list, in id order */
	bool listed;	       /* on the global list: complete, seen by inspection */
	bool hello;	       /* said Hello: its other requests are taken */
	bool in_request;       /* a request is being handled: it commits the record */
	bool forking;	       /* a fork child being made */
	uint64_t parent;       /* a fork child's parent session (its uffd's name) */
	/* A fork child whose regions a dead daemon never recorded: its faults
	 * are poisoned (SIGBUS), for its pages cannot be known. */
	bool broken;
	/* Said Hello with inspect (uffdctl): only reads, is listed nowhere,
	 * counts as no session; set under the global lock. */
	bool inspect;
	/* A Firecracker VM's (STATE_FC), and until when its handshake may come
	 * (ns; 0: it came, or none is waited for). */
	bool fc, fc_ready;
	uint64_t fc_deadline;
	int fc_pair;	  /* its --firecracker-socket pair; -1: none configured now */
	struct state *st; /* the durable record (state.c) */

	pthread_mutex_t lock;	 /* see the top of this file */
	struct region **regions; /* sorted by start, disjoint */
	size_t nregions;
	struct pin_set pins;
	uint64_t pinned;

	struct fault *faults;
	size_t nfaults, faults_cap;
	struct waiter *waits;
	size_t nwaits;
	struct prefetch *prefetch;
	size_t nprefetch;
	struct replay *replays;
	size_t nreplays;
	uint64_t next_probe; /* fork children: when to check the process is alive */
	uint64_t probe_gap;  /* ns from the last check to the next (push.c) */
	bool warned_outside;
	bool push_pending; /* some region has pages left to push */
	/* Its client said Goodbye (STATE_FINISHING): every region's rest is
	 * pushed, then the session ends, its connection or not (push.c). */
	bool finishing;
	bool stuck_said; /* logged that some of its pages cannot be placed */
	/*
	 * Some of its pages could not be given and the kernel refused to
	 * poison them (place.c): their threads wait in the kernel, never woken
	 * to a zero page.  Its bulk work stops; its end waits until its
	 * process is gone (probed, push.c), whatever its client does: closing
	 * the userfaultfd would wake them to zero pages.  stranded_why names
	 * the first such range and call, for the UFFDD_STRANDED_ERR its
	 * Goodbye gets.
	 */
	bool stranded;
	char stranded_why[STATE_WHY_MAX];
	bool gone;	  /* its process is gone (an ioctl said ESRCH) */
	uint64_t bye_seq; /* a Goodbye that waits for the end; 0: none */
	/* Done (every page in, or its process gone) while its client is there
	 * and waits for no answer (it has yet to say Goodbye, or to say it
	 * again after a daemon restart): the end waits for that Goodbye, or for
	 * the client to hang up (session_end()). */
	bool ending;
	int end_error;
	char end_why[160];

	/* Messages its socket had no room for, sent in order once it has
	 * (control-reply.c: a ring of UFFDD_OUTQ_MAX, freed with the session); no
	 * request is read meanwhile. */
	struct out_msg *outq;
	size_t outq_head, outq_n;
	struct file_use *files; /* sorted by id */
	size_t nfiles;
	uint64_t charged[UFFDD_CHARGES]; /* what its uid is charged for it */

	/* Reads its sources that may block (NULL until the first). */
	struct reader *rd;
	/* Some fault or run waits for a page server's answer. */
	bool remote_wait;
	/* Faults wait for a source read ahead to land (source_reads_landed()),
	 * and with src_wait_bulk its bulk work too. */
	bool src_wait, src_wait_bulk;
	/* Worker time (ns) spent on its faults that is its own doing (a source
	 * it gave that cannot be read: place.c), not charged to its uid yet:
	 * the fault path charges it (share.c), bulk work's charge holds it. */
	uint64_t unpaid_ns;

	struct stats stats;
	struct ratelimit rl; /* its log lines */
};

/* A client's session; with fc_name, a Firecracker VM's of that name. */
int session_new(int sock, pid_t pid, uid_t uid, const char *fc_name, struct session **ret);
/*
 * Make s an inspection connection: out of the counts of sessions (its
 * connection still counts) and out of the fd store (a restarted daemon does
 * not bring it back as a session: its client connects again).
 */
void session_inspect(struct session *s);
/* Unlink from every list, close its descriptors and free it; worker only. */
void session_free(struct session *s);
/* The daemon exits (workers_stop()): its record unmapped and closed, the
 * store's copy kept; nothing may use s after it. */
void session_unmap_record(struct session *s);

/* Lookups in a session's sorted region array (owner, or under s->lock). */
struct region *session_find(struct session *s, uint64_t addr);
/* Index of the first region ending after addr. */
size_t session_first_after(const struct session *s, uint64_t addr);
/*
 * Walk the regions overlapping [start, end): start with *i at
 * session_first_after(s, start); each call returns the next one (NULL after
 * the last) and its pages in the range, [*ret_first, *ret_first + *ret_n).
 */
struct region *session_overlap(struct session *s, size_t *i, uint64_t start, uint64_t end,
			       uint64_t *ret_first, uint64_t *ret_n);

/* A region of s (its bitmaps in s's record), not in the record yet:
 * session_insert() adds it.  -EFBIG when its bitmaps do not fit in the
 * record, -ENOMEM. */
int region_new(struct session *s, uint64_t start, uint64_t len, uint32_t mode, struct source *src,
	       uint64_t offset, bool push, struct region **ret);
/* Free r, taking it out of s's record when it is in it. */
void region_free(struct session *s, struct region *r);
/* The pages [from, from + n) of r as a region of s (r's session, or a fork
 * child's) at start, with a copy of their bits, not recorded yet; NULL with
 * errno EFBIG (its bitmaps do not fit in s's record) or ENOMEM. */
struct region *region_part(struct session *s, const struct region *r, uint64_t from, uint64_t n,
			   uint64_t start);
/* Add r to s's record (it takes effect at the next commit). */
int region_record(struct session *s, struct region *r);
/* Room for n more regions in s's array, so that inserting cannot fail. */
int regions_reserve(struct session *s, size_t n);
/* The distinct page-server sources of s's regions. */
uint64_t regions_remote_sources(const struct session *s);
/* Insert r into reserved room (under s->lock); the caller checked overlaps. */
void regions_insert_locked(struct session *s, struct region *r);
int session_insert(struct session *s, struct region *r);
/*
 * Cut [start, end) out of the session's regions; with move != 0 the cut
 * parts are put back shifted by move bytes (REMAP).  Returns the pages cut,
 * or -EFBIG (the parts' bitmaps or records do not fit in the session's
 * record while the whole is still there) or -ENOMEM.
 */
int64_t session_cut(struct session *s, uint64_t start, uint64_t end, int64_t move, bool unregister);
/*
 * A fork child's session, id: the parent's regions and sources, the child's
 * userfaultfd fd (taken), which the caller stored as s<id>.fork<parent>
 * after the parent's record named id as being made (state_making_set()).
 * The parent's record must be as it was when the fork was read: the FORK
 * event's handler, or the takeover for a child a dead daemon left half made.
 */
int session_fork(struct session *parent, int fd, uint64_t id, struct session **ret);
/* A session, new and unlisted: no id, record or userfaultfd yet; NULL when
 * out of memory. */
struct session *session_alloc(int sock, pid_t pid, uid_t uid);
/* The session's record, new, with its identity; parent: a fork child's. */
int session_state(struct session *s, uint64_t parent);
/* The pin (addr, len, cookie), recorded. */
int session_pin_add(struct session *s, uint64_t addr, uint64_t len, uint64_t cookie);
/* The index in s->pins.v of the pin with that cookie, -1 when none (O(1)). */
ssize_t session_pin_find(const struct session *s, uint64_t cookie);
void session_pin_del(struct session *s, size_t i);

/* The identity that changes (pid, name, Hello said, the userfaultfd's
 * features) into the record, at the next commit. */
void session_set_meta(struct session *s);
/*
 * Commit the record's pending changes; seq and the encoded reply when a
 * request is done (seq 0: an event's changes, which wait for the request's
 * commit while one is handled).
 */
int session_commit(struct session *s, uint64_t seq, const void *reply, size_t len);

void session_stats_fill(struct session *s, Uffdd__Stats *out, uint64_t *lat);

static inline bool done_page(const struct region *r, uint64_t i)
{
	return bm_test(r->populated, i) || bm_test(r->zero, i);
}

/* Record the run [addr, end) a MISSING fault, its readahead or a Prefetch
 * request placed (its worker only). */
void session_record(struct session *s, uint64_t addr, uint64_t end);
/* Queue a Prefetch request. */
int session_prefetch_add(struct session *s, uint64_t addr, uint64_t len);

/* ---- session-table.c: the tables of sessions and of uids' charges ------ */

/* Guards the session list and the per-uid table (control plane only). */
extern pthread_mutex_t glock;
/* Published sessions not turned to inspection (sessions_count()). */
extern _Atomic unsigned int session_table_count;

/*
 * Count against (or release from) the uid's limits: -EDQUOT, with why filled
 * in, when over.  why NULL: forced (what the kernel did cannot be refused).
 * Besides the regions and pinned bytes given, every call brings the rest of
 * what the uid is charged for the session (CHARGE_SESSIONS and after) to what
 * it holds now; with why, a rise over a limit is refused and nothing is
 * charged.  What a session was charged is given back when it is freed.
 */
int session_charge(struct session *s, int64_t regions, int64_t pinned, char *why, size_t whylen);

/* Make s, complete, visible to other threads and to the counts. */
void session_publish(struct session *s);
/* An id the fd store names (a session's before a restart, kept or
 * dropped): new sessions get ids above it. */
void id_taken(uint64_t id);
/* n consecutive new ids; the first. */
uint64_t ids_take(size_t n);
/* Visit every session (under the global lock); uffdctl's view. */
void sessions_foreach(void (*fn)(struct session *s, void *data), void *data);
struct session *sessions_get_locked(uint64_t id);
/* The first listed session whose id is id or above, under sessions_lock();
 * the next ones follow by gnext, in id order. */
struct session *sessions_from_locked(uint64_t id);
/* Whether some listed session's userfaultfd is the open file of fd, whose
 * inode is ino (0: not known), under sessions_lock(): one userfaultfd
 * belongs to one session only. */
bool sessions_uffd_taken_locked(int fd, ino_t ino);
void sessions_lock(void);
void sessions_unlock(void);
unsigned int sessions_count(void);
/* Take a published session off the list (and off the count). */
void session_unpublish(struct session *s);
/* Give back everything s was charged. */
void charge_release(struct session *s);

/* ---- session-restore.c: sessions rebuilt from the fd store ------------ */

/* A session rebuilt from its record and descriptors out of the fd store
 * (conn, uffd: -1 when absent), not yet watched by a worker; st, conn and
 * uffd are taken whatever the result.  -EBADMSG with why when the record
 * does not hold together. */
int session_restore(struct state *st, int conn, int uffd, struct session **ret, char *why,
		    size_t whylen);
/* A fork child's userfaultfd stored without a record or a parent to make it
 * from: a session whose faults are poisoned, recorded as such. */
int session_orphan(uint64_t id, int uffd, struct session **ret);

/* ---- snapshot.c: regions of a shared image memfd (MINOR, CONTINUE) ---- */

/* A snapshot region: registered MISSING and MINOR over a MAP_PRIVATE
 * mapping of its source, a sealed memfd; data pages are CONTINUEd. */
static inline bool snapshot_region(const struct region *r)
{
	return r->mode & PIN_UFFD_REGISTER_MINOR;
}

/*
 * Whether s may have a region of mode from src: 0 for a mode without MINOR;
 * with it, -EOPNOTSUPP when s's userfaultfd lacks MINOR_SHMEM, -EINVAL when
 * src is not a memfd sealed against writes, growing and shrinking (why
 * filled in).
 */
int snapshot_check(const struct session *s, uint32_t mode, const struct source *src, char *why,
		   size_t whylen);

/* ---- finish.c: how a session ends ---------------------------------------- */

/*
 * Mark a session for freeing, once, and say why: error 0 when every page is
 * in place, -ESRCH when its process is gone (its WaitPopulated requests get
 * that too), else the reason it cannot go on.  A Goodbye that waits for the
 * end gets error and why, and the session's counters.  A finishing session
 * whose client may still send its Goodbye again (it was taken over after a
 * restart) keeps its connection until then: the end is that Goodbye's
 * answer (s->ending).
 */
void session_end(struct session *s, int error, const char *why);
/* What a stranded session's Goodbye, WaitPopulated and Replay requests get
 * (uffdd-protocol(7)): not -EIO, the end of a session whose lost pages were
 * poisoned (its process runs on, or died of SIGBUS), for a stranded one's
 * process can only wait: its client is to kill it. */
#define UFFDD_STRANDED_ERR ENOTRECOVERABLE
/* n pages of s cannot be given (their source failed): counted (stats
 * unreadable) and in its record, before the ioctl that poisons them. */
void session_lost(struct session *s, uint64_t n);
/* Pages [addr, +len) cannot be given (call failed with err) and the kernel
 * refused to poison them (UFFDIO_POISON failed with poison_err): s is
 * stranded (struct session), in its record first, said once. */
void session_strand(struct session *s, const char *call, uint64_t addr, size_t len, int err,
		    int poison_err);
/* UFFDIO_POISON's result ret says the kernel has no such ioctl (before Linux
 * 6.6): userfaultfd_ioctl() answers an unknown command -EINVAL, the generic
 * path -ENOTTY.  Any kernel that has it poisons for a userfaultfd that never
 * asked for the POISON feature (the bit only tells that the ioctl exists). */
static inline bool poison_refused(int ret)
{
	return ret == -EINVAL || ret == -ENOTTY;
}
/* session_end() for a session that cannot go on (it hung up, its
 * userfaultfd failed): -ECONNABORTED. */
void session_kill(struct session *s, const char *why);
/* Goodbye: the daemon pushes the rest of every region, then ends the
 * session (push.c); recorded at the next commit. */
void session_finish(struct session *s);
/* A finishing or stranded session's client hung up: close the connection;
 * the session goes on without it. */
void session_detach(struct session *s);
/* Pages of its regions neither in place nor discarded, but for regions
 * where a push after Goodbye met no registered mapping (-ENOENT). */
uint64_t session_pages_left(const struct session *s);

/* ---- supervise.c: the fd store when no service manager keeps one ------- */

/*
 * Without --no-supervisor: fork the serving child and return 0 in it, with
 * NOTIFY_SOCKET naming the parent and LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES
 * giving it listen_fds (named "listen") and every stored descriptor.  The
 * parent parses nothing a client sends: it keeps the store (FDSTORE=1,
 * FDNAME=, FDSTOREREMOVE=1 from its child only), restarts the child when it
 * dies of a signal or fails, gives up after a burst of quick failures, and
 * on SIGTERM/SIGINT stops the child and exits with its code (never returns;
 * -errno when it cannot start: no notify socket, signalfd or first fork).
 */
int supervise(const int *listen_fds, size_t nlisten);

/* ---- takeover.c: the sessions a previous daemon left in the store ------ */

/*
 * At start, after the workers run: take over the stored descriptors v[0, n)
 * (store_start()'s; each fd is kept or closed, the array stays the
 * caller's).
 */
void takeover_run(struct stored_fd *v, size_t n);

/* ---- listen.c ---------------------------------------------------------- */

/*
 * Listen on fds (the listening sockets store_start() found), or, when n is 0,
 * bind --socket PATH (a stale socket there is replaced, nothing else).
 */
int listen_open(const int *fds, size_t n);
/* The serving process's: bind each --firecracker-socket (SOCK_STREAM, as
 * Firecracker connects); a stale socket there is replaced, nothing else. */
int listen_open_firecracker(void);
/* The listening sockets listen_open() took or made. */
size_t listen_get(const int **ret_fds);
/* Remove --socket PATH if listen_open() bound it (not the manager's), and
 * the Firecracker sockets this process bound. */
void listen_unlink(void);
/* Accept clients until a signal says stop; returns the exit code. */
int listen_run(void);

/* ---- firecracker.c: Firecracker's page-fault handler handshake ---------- */

/* Open each configured memory file; -errno (logged) when one cannot be. */
int fc_init(void);
/* The name of the sessions of pair i (session_new()'s fc_name). */
const char *fc_name(unsigned int i, char *buf, size_t size);
/* A VM connected to pair i's socket: wait for its handshake. */
void fc_accepted(struct session *s);
/* A VM's session taken over after a restart: its handshake served again
 * when no daemon finished serving it, else what of it is left on the
 * connection dropped. */
void fc_taken_over(struct session *s);
/* How long a VM has from connect() to its handshake: Firecracker sends it at
 * once (push.c ends a session that waits longer). */
#define UFFDD_FC_HANDSHAKE_MS 5000
/* The handler of a Firecracker session's connection. */
void fc_handle(struct session *s);
/* A VM's session that was served ends: its working set, as offsets in its
 * memory file, replaces what its pair kept; the next VM restored from that
 * same file (device, inode, size, mtime) gets it replayed first. */
void fc_ended(struct session *s);
/* At start: the kept working set stored as w<number> in fd (closed), for
 * the pair of that number (1 for the first); dropped from the store when
 * it is no longer valid. */
void fc_wset_adopt(uint64_t number, int fd);

/* ---- fcgmem.c: the guest_memfd variant of the handshake ------------------ */

/* Its descriptors: the userfaultfd, the guest_memfd, the userfault bitmap. */
#define FC_GMEM_FDS 3
struct fcmsg;
struct fc_map;
/* Why the guest_memfd VM of m (its n mappings v, of page-byte pages) is
 * refused: its descriptors checked, and what this kernel allows probed;
 * -errno with why filled in. */
int fcgmem_refusal(const struct fcmsg *m, const struct fc_map *v, size_t n, uint64_t page,
		   char *why, size_t whylen);

/* ---- fcwset.c: working sets kept between Firecracker VMs ---------------- */

/* A guest memory mapping of a Firecracker handshake, checked. */
struct fc_map {
	uint64_t addr, len, off;
};

/* s, a VM's session of pair i over memfd, ends: its working set replaces
 * what the pair kept. */
void fcwset_keep(struct session *s, unsigned int pair, int memfd);
/* The working set kept for the snapshot memfd holds, as ranges of the n
 * mappings of v in recorded order (free()); NULL when none is kept. */
Uffdd__Range *fcwset_ranges(int memfd, const struct fc_map *v, size_t n, size_t *ret_n);
/* At start: the kept set the fd store held as w<pair + 1> in fd (not
 * taken), checked, becomes pair's when the pair's memfd holds the same
 * snapshot; 0, or -errno with why filled in (-ESTALE: another snapshot,
 * -EEXIST: the pair has one already, -EBADMSG: not a valid set). */
int fcwset_adopt(unsigned int pair, int memfd, int fd, char *why, size_t whylen);

/* ---- fcmsg.c: the Firecracker handshake's message, read and checked ---- */

/* The largest handshake taken: Firecracker's own example handlers read it
 * into 1 KiB; a mapping is some 100 bytes. */
#define FC_MSG_MAX (64 * 1024)
/* Descriptors read with it, at most: one is Firecracker's; newer variants
 * (guest_memfd) send three; more are read only to be closed. */
#define FC_FDS_MAX 8

/* What came: the bytes and the descriptors, until none is left or more
 * than FC_MSG_MAX bytes came. */
struct fcmsg {
	char *buf;
	size_t len;
	int fds[FC_FDS_MAX];
	size_t nfds;
	bool hup; /* the peer closed its end */
};

struct json_object;

void fcmsg_free(struct fcmsg *m);
/* Peek at what waits on sock, or take it with take: 0, or -errno. */
int fcmsg_read(int sock, struct fcmsg *m, bool take);
/* The mappings of the parsed handshake arr, checked against the memory
 * file's size, sorted by address into v (json_object_array_length(arr)
 * entries), their page size, and whether they say they are of a
 * guest_memfd (is_guest_memfd): 0, or -errno with why. */
int fcmsg_check_maps(struct json_object *arr, uint64_t file_size, struct fc_map *v, size_t *ret_n,
		     uint64_t *ret_page, bool *ret_gmem, char *why, size_t whylen);
/* m as one JSON array (json_object_put()): 0, or -errno with why. */
int fcmsg_parse(const struct fcmsg *m, struct json_object **ret, char *why, size_t whylen);

/* ---- control.c --------------------------------------------------------- */

/* The session's socket is readable (or hung up): the handler of its watch. */
void control_handle(struct session *s);
/* Handle m as if s's client had sent it (firecracker.c): its error, and
 * the reply's text in why. */
int control_request(struct session *s, const Uffdd__Msg *m, int *fds, size_t nfds, char *why,
		    size_t whylen);

/* A request being handled: its session, message, the fds that came with it
 * (those not taken are closed), and the reply text on failure. */
struct req {
	struct session *s;
	const Uffdd__Msg *m;
	int *fds;
	size_t nfds;
	char text[160];
	/* DirtyGet with reset: the bits to clear once the reply is committed. */
	struct region *reset;
	uint64_t reset_first, reset_n;
};

/* Set the reply text and return the error, for one-line failure paths. */
static inline int fail(struct req *q, int error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline int fail(struct req *q, int error, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q->text, sizeof(q->text), fmt, ap);
	va_end(ap);
	return error;
}

/* The first descriptor sent with q, taken: the request keeps it. */
static inline int take_fd(struct req *q)
{
	int fd = q->fds[0];

	q->nfds = 0;
	return fd;
}

/* ---- dirty.c: wp-async regions (WP_ASYNC, PAGEMAP_SCAN) ------------------ */

/* Whether fd is a /proc/PID/pagemap file. */
bool dirty_is_pagemap(int fd);
/* Whether r is tracked without faults: WP on a WP_ASYNC userfaultfd. */
bool dirty_async(const struct session *s, const struct region *r);
/* Record pages [first, first + n) of r dirty, counting the new ones. */
void dirty_mark(struct region *r, uint64_t first, uint64_t n);
/*
 * Move the pages of [addr, addr + len) (inside wp-async region r) that the
 * kernel saw written into r's dirty bitmap (the record), and with reset
 * write-protect those pages again, after their bits are recorded: a daemon
 * that dies in between loses no write.  Fills why on failure.
 */
int dirty_scan(struct session *s, struct region *r, uint64_t addr, uint64_t len, bool reset,
	       char *why, size_t whylen);

/* ---- control-region.c: RegionAdd, RegionRemove, DirtyGet ---------------- */

/* The requests of their names: 0 or the error, its text in q->text. */
int do_region_add(struct req *q);
int do_region_add_batch(struct req *q);
int do_region_remove(struct req *q);
/* The dirty bitmap in rep (*ret_buf: free() after the reply is sent). */
int do_dirty_get(struct req *q, Uffdd__Reply *rep, uint8_t **ret_buf);

/* ---- control-reply.c --------------------------------------------------- */

/* Messages a session may have waiting for room in its socket: a request's
 * reply, one per WaitPopulated and Replay it may have waiting, and stale
 * notices.  Past that the client is not reading, and is cut off. */
#define UFFDD_OUTQ_MAX 256
/* notify_reply() and notify_stale(). */
int control_reply(struct session *s, uint64_t seq, int error, const char *text);
void control_replayed(struct session *s, uint64_t seq, int error, uint64_t placed);
void control_ended(struct session *s, uint64_t seq, int error, const char *text);
void control_stale(struct session *s, uint64_t start, uint64_t end, uint32_t event);
/* A session taken over after a restart: tell its client the last request
 * committed (Resume), and send that request's reply again. */
void control_resume(struct session *s);

/* A reply, encoded: the bytes sent, and committed with the request. */
struct packed {
	uint8_t *buf;
	size_t len;
};

/* Watch the session's socket for room (EPOLLOUT, requests left unread)
 * or for requests (EPOLLIN). */
void watch_for(struct session *s, uint32_t events);
/* The client is gone: so is its session, unless it said Goodbye (then the
 * daemon finishes it without the connection). */
void hung_up(struct session *s, const char *why);
/* Send an encoded message, in order after those waiting (queued while the
 * socket has no room): 0 or -errno. */
int reply_out(struct session *s, const void *buf, size_t len);
/* Send what waits while the socket has room: true when nothing is left. */
bool flush(struct session *s);
/* Encode a Reply to request seq into p (p->buf: free()); one too large
 * for a message becomes an -EMSGSIZE Reply.  0 or -ENOMEM. */
int pack_reply(uint64_t seq, Uffdd__Reply *rep, struct packed *p);

/* ---- inspect.c: requests that read any session --------------------------- */

/* Parts of a ListGet page, in struct list. */
enum { LIST_ENTRIES, LIST_PTRS, LIST_RANGES, LIST_STATS, LIST_LAT, LIST_NAMES, LIST_PARTS };

/* A ListGet page under construction (inspect.c); every part is freed with it. */
struct list {
	const Uffdd__ListGet *g;
	Uffdd__Reply *rep;
	struct session *caller;
	bool all;     /* the caller sees every session */
	size_t limit; /* entries in this page, at most */
	size_t n;     /* entries in it */
	void *part[LIST_PARTS];
	int error;
};

int do_stats(struct req *q, Uffdd__Reply *rep, Uffdd__Stats *st, uint64_t *lat);
/* ListGet; l's pieces are freed with list_free() after the reply is sent. */
int do_list(struct req *q, struct list *l);
void list_free(struct list *l);
/* The most entries of a kind (ListGet.What) that one reply holds: a page of
 * them, with the rest of the reply at its largest, fits one datagram. */
size_t list_limit_max(int what);
/* Entries [from, from + n) of the recorded working set; *ret_buf and
 * rep->working_set are the caller's to free. */
int do_working_set_get(struct req *q, Uffdd__Reply *rep, Uffdd__Range **ret_buf);

/* ---- fault.c ----------------------------------------------------------- */

#define UFFDD_RA_MAX   512 /* pages: the largest readahead window, and run */
#define UFFDD_PUSH_MAX 256 /* pages: the largest push or Prefetch run a thread places */
/* Replay requests a session may have under way, and what one worker round
 * gives a Replay (push.c, replay_step()): pages handled (64 MiB: a few ms of
 * copying, then other sessions); runs placed, so that a slice of whole runs
 * (UFFDD_PUSH_MAX pages each) is bounded by its pages, and one of pages the
 * process has already, an ioctl each (EEXIST, a microsecond or two), by its
 * runs (some 100 us); and pages of bitmaps looked at (a word per 64 pages:
 * some 10 us for 2^20). */
#define UFFDD_REPLAYS_MAX  4
#define UFFDD_REPLAY_SLICE (1u << 14)
#define UFFDD_REPLAY_RUNS  (UFFDD_REPLAY_SLICE / UFFDD_PUSH_MAX)
#define UFFDD_REPLAY_SCAN  (1ull << 20)
/* Events read from a userfaultfd at once; the first size of a fault queue. */
#define UFFDD_MAX_EVENTS 256
/* Faults a session may have waiting (outside every region, or behind a
 * pending event): each is a blocked thread, once per page. */
#define UFFDD_FAULTS_MAX 16384

/* The bytes of the largest run: a worker's read buffer, fault.c's zeroes. */
static inline size_t uffdd_run_bytes(void)
{
	return (size_t)UFFDD_RA_MAX << uffdd_page_shift;
}

/* The huge pages of a hugetlbfs mapping that uffdd places (x86-64's and
 * arm64's 2 MiB beside 4 KiB pages): whole, one UFFDIO_COPY each, which
 * takes nothing less (and UFFDIO_ZEROPAGE nothing at all).  One must fit a
 * run (uffdd_run_bytes()). */
#define UFFDD_HUGE_PAGE (2ull << 20)

/* The pages (of uffdd_page) that r places at once: a huge page's, or one. */
static inline uint64_t region_unit(const struct region *r)
{
	return r->huge ? UFFDD_HUGE_PAGE >> uffdd_page_shift : 1;
}

/* The userfaultfd is readable: read events in batches and serve them.
 * Returns the events read, or -errno when the userfaultfd failed. */
int fault_handle(struct session *s);
/* Serve the faults queued, reading no event: a request's handler does so
 * (what an event changed then would be committed only with its reply, after
 * the event was recorded as applied). */
void fault_serve(struct session *s);
/* fault_handle() as the handler stored with a userfaultfd's watch. */
void fault_ready(struct session *s);
/* Wake faults in [start, end) and forget them, counted as finished: their
 * mapping is gone. */
void fault_drop(struct session *s, uint64_t start, uint64_t end);
/* A REMAP, REMOVE or UNMAP applied to the session's regions, and told to
 * its client's pins; any other event is not one. */
void fault_apply_event(struct session *s, const struct pin_uffd_event *ev);
/* ---- place.c ----------------------------------------------------------- */

/* The address of page i of r. */
static inline void *region_page_addr(const struct region *r, uint64_t i)
{
	return (void *)(uintptr_t)(r->start + (i << uffdd_page_shift));
}

/* Zeroes to copy from (a WP region's zero pages); before the workers start. */
int place_init(void);
/* Placer threads besides the workers, at most (crew.c), and the pieces one
 * run is cut into, at most: two per thread, and one for the rest of each
 * of the run's two parts (place.c, fill_wide()). */
#define UFFDD_PLACERS_MAX  7
#define UFFDD_PLACE_PIECES (2 * (UFFDD_PLACERS_MAX + 1) + 2)
/* The threads that may place one run of r at once (crew.c): a bulk run of
 * r may be as many times UFFDD_PUSH_MAX pages, and take no longer. */
unsigned int place_width(const struct region *r);
/*
 * Place pages [first, first + n) of r, each from its source or as zero (but
 * those in place already, which a push run may span), with
 * DONTWAKE: the caller wakes, unless *ret_woken (when not NULL) says that one
 * ioctl placed them all and woke their threads.  A run of 2 x 32 pages or
 * more is cut into disjoint pieces placed by the crew at once (crew.c),
 * when place_width(r) allows; without ret_woken (not a fault's run) the
 * worker does UFFDD_PUSH_MAX pages of them at most, and the pages handled
 * may end short of the run with no error.  n is
 * UFFDD_PUSH_MAX x place_width(r) at most.  Returns the pages handled
 * (placed, or found there already), or -errno when none were (-EAGAIN: retry
 * later; -EINPROGRESS: their data is being read, retry once reader_done();
 * -ESRCH: the process is gone).
 */
int64_t fault_fill(struct session *s, struct region *r, uint64_t first, uint64_t n, bool push,
		   bool *ret_woken);

/* ---- push.c ------------------------------------------------------------ */

/*
 * Replay: queue the placing of the missing pages of ranges, done in slices
 * between faults (runs of up to UFFDD_PUSH_MAX pages with DONTWAKE, then one
 * WAKE per slice); notify_replayed() answers seq with the pages it placed.
 * -EBUSY when UFFDD_REPLAYS_MAX are under way.
 */
int push_replay(struct session *s, uint64_t seq, Uffdd__Range *const *ranges, size_t n);
/* WaitPopulated: reply now or later. */
void push_wait(struct session *s, uint64_t seq, uint64_t addr, uint64_t len, uint32_t timeout_ms);
/* Background work of one worker round: a run of prefetch or push. */
void push_step(struct worker *w);
/* How long the worker may sleep, in ms (-1: until something happens). */
int push_timeout(struct worker *w);

/* ---- worker.c ---------------------------------------------------------- */

struct worker {
	pthread_t thread;
	_Atomic uint64_t beat; /* ns: when its loop last went round */
	int ep;
	int efd; /* eventfd: new sessions are queued */
	struct watch wevent;
	pthread_mutex_t qlock;
	struct session *queue; /* handed over by the main thread */
	struct session *sessions;
	_Atomic unsigned int nsessions;
	uint64_t last_busy;	/* ns: keep polling for a while after work */
	struct session *hot;	/* whose userfaultfd had events last */
	uint64_t bulk_last;	/* the session whose bulk work went last (push.c) */
	void *buf;		/* source reads and zero pages for WP regions */
	struct remote *remotes; /* page-server sources its epoll watches */
	struct pin_uffd_event *events;
};

int workers_start(unsigned int n);
/*
 * The daemon exits: each worker ends its loop (waited for a bounded time: a
 * worker blocked in a call is left as it is), then, when all did, every
 * session's record is unmapped (an exit need not touch a page of it, which
 * valgrind's leak check at exit does: it read each 1 GiB record whole).
 * What the store holds stays for the next daemon.
 */
void workers_stop(void);
/* Whether every worker's loop went round at or after since (ns); else the
 * index of one that did not, in *ret_stuck. */
bool workers_alive(uint64_t since, unsigned int *ret_stuck);
/* Give a new session to the least loaded worker, or to the one that reads
 * its page-server sources (remote_home()). */
void workers_assign(struct session *s);
/* Watch a session's socket or userfaultfd (worker only), with the handler
 * stored in wt. */
int worker_watch(struct worker *w, struct watch *wt, int fd);
/* notify_child(): a fork child's session joins its parent's worker. */
void worker_adopt_child(struct session *parent, struct session *c, int fd);

#endif /* UFFDD_H */
