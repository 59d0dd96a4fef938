// SPDX-License-Identifier: MIT
/*
 * Suite pin, area pin-lazy (issue 18): pinning memory that uffdd is still
 * restoring.  The region is served from a patterned memfd without the
 * background push, so every page a pin finds in place was placed by the
 * one Replay that the cache's miss sent (pin_client_connect(3), opts ctx):
 * the session counts no fault, with the io_uring backend and with mlock.
 * READ_FIXED/WRITE_FIXED through the pin
 * move every byte; a DONTNEED under a held pin during the restore makes it
 * stale (the daemon's notice) and the next look-up pins anew, the
 * discarded page now zero.  A cached pin that a DONTNEED, a munmap and mmap
 * or an mremap made stale is never returned by the look-up right after it,
 * in the same thread, with no report and no notice: the daemon's event log
 * (struct pin_evlog) tells the cache first, its monitor or none; held open
 * (UFFDD_HOLD), the window between the daemon's read of the event and its
 * log of it makes the look-up wait, not take the old pin.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin.h"
#include "test-common.h"
#include "test-pin-util.h"
#include "uffdd-harness.h"

#define MiB	  (1ul << 20)
#define LEN	  (32 * MiB)
#define SEED	  51
#define SEED_IN	  52
#define COOKIE	  0x18
#define NOTICE_MS 10000
/* The page the DONTNEED case discards. */
#define DISCARDED 100
/* Changes under a cached pin, each over its own slice of the region: enough
 * rounds that a look-up racing the daemon's log of the change shows, fewer
 * discards than the cache remembers for a second (PIN_REMOVE_LOG: past it,
 * every new pin would be kept out of the cache, the counts below with it). */
#define ROUNDS 1000
/* Under valgrind (test_time_scale() > 1) each round takes ~50 times longer:
 * the held window (dontneed_read_not_logged) is what shows the race there. */
#define ROUNDS_TRACED 50
#define SLICE	      (8 * page)

static size_t page;

struct lazy {
	struct test_daemon d;
	struct test_stale_seen seen;
	struct pin_ctx *ctx;
	struct pin_uffd *u;
	struct pin_client *c;
	char *p;
	int src;
};

static void setup(void)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
}

/* LEN bytes of anonymous memory, not one page in place, registered MISSING
 * and handed to a fresh uffdd, served from a memfd patterned with SEED and
 * never pushed; a cache that pins through backend, the client's. */
static void lazy_open_flags(struct lazy *z, int backend, unsigned int ctx_flags)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP |
			    PIN_UFFD_FEATURE_EVENT_REMAP,
	};

	memset(&z->seen, 0, sizeof(z->seen));
	test_daemon_start(&z->d, NULL);
	/* The range is the session's: its stale notices stand in for a monitor. */
	z->ctx = test_pin_ctx_new(backend, ctx_flags);
	struct pin_client_opts co = {
		.sz = sizeof(co),
		.socket = z->d.sock,
		.name = "test-pin-lazy",
		.stale_fn = test_on_stale,
		.stale_data = &z->seen,
		.ctx = z->ctx,
	};
	z->p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(z->p, MAP_FAILED);
	ck_assert_int_eq(madvise(z->p, LEN, MADV_NOHUGEPAGE), 0);
	z->src = test_pattern_file(LEN, SEED);
	struct pin_client_region reg = {
		.sz = sizeof(reg),
		.addr = z->p,
		.len = LEN,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH,
		.fd = z->src,
	};
	ck_assert_int_eq(pin_uffd_new(&uo, &z->u), 0);
	ck_assert_int_eq(pin_client_connect(&co, &z->c), 0);
	ck_assert_int_eq(pin_client_handover(z->c, z->u), 0);
	ck_assert_int_eq(pin_client_region_add(z->c, &reg), 0);
}

static void lazy_open(struct lazy *z, int backend)
{
	lazy_open_flags(z, backend, PIN_CTX_NO_MONITOR);
}

static void lazy_close(struct lazy *z)
{
	ck_assert_int_eq(pin_client_goodbye(z->c), 0);
	pin_client_free(z->c);
	pin_ctx_free(z->ctx);
	pin_uffd_free(z->u);
	close(z->src);
	ck_assert_int_eq(munmap(z->p, LEN), 0);
	test_daemon_stop(&z->d);
}

static struct pin_client_stats stats_of(struct lazy *z)
{
	struct pin_client_stats st;

	ck_assert_int_eq(pin_client_stats(z->c, 0, &st), 0);
	return st;
}

/* The LEN bytes of a memfd, read-only. */
static const char *map_file(int fd)
{
	const char *m = mmap(NULL, LEN, PROT_READ, MAP_SHARED, fd, 0);

	ck_assert_ptr_ne(m, MAP_FAILED);
	return m;
}

/* Bytes [off, off + len) of a and b are the same; else the first that
 * differs is named.  memcmp() first: a word-by-word assert over 32 MiB
 * takes minutes under valgrind. */
static void assert_bytes(const char *a, const char *b, size_t off, size_t len)
{
	if (!memcmp(a + off, b + off, len))
		return;
	size_t i = off;
	while (a[i] == b[i])
		i++;
	ck_abort_msg("byte %zu is %#x, not %#x", i, (unsigned char)a[i], (unsigned char)b[i]);
}

/* The miss places every page with one request, and the pin faults none;
 * I/O through it then moves every byte both ways. */
START_TEST(pin_places_then_pins)
{
	struct pin_range *r;
	struct lazy z;

	lazy_open(&z, PIN_BACKEND_IO_URING);
	struct pin_client_stats st = stats_of(&z);
	ck_assert_uint_eq(st.pages_populated, 0);
	ck_assert_uint_eq(st.pages_total, LEN / page);

	ck_assert_int_eq(pin_range_get(z.ctx, z.p, LEN, &r), 0);
	st = stats_of(&z);
	ck_assert_uint_eq(st.faults, 0);
	ck_assert_uint_eq(st.pages_populated, LEN / page);
	ck_assert_uint_eq(st.pages_copied, LEN / page);
	/* A Replay's pages count as pushed; nothing else pushes here. */
	ck_assert_uint_eq(st.pages_pushed, LEN / page);
	struct pin_ctx_stats cs = test_pin_stats(z.ctx);
	ck_assert_uint_eq(cs.misses, 1);
	ck_assert_uint_eq(cs.pinned_bytes, LEN);

	/* The device writes out what the restore placed... */
	int index = pin_range_buf_index(r, z.p, LEN);
	ck_assert_int_ge(index, 0);
	int out = memfd_create("out", MFD_CLOEXEC);
	ck_assert_int_ge(out, 0);
	ck_assert_int_eq(test_io_fixed(z.ctx, true, out, z.p, LEN, index), (int)LEN);
	const char *src = map_file(z.src), *got = map_file(out);
	assert_bytes(got, src, 0, LEN);
	/* ...and reads into the pinned pages, which the process sees. */
	int in = test_pattern_file(LEN, SEED_IN);
	ck_assert_int_eq(test_io_fixed(z.ctx, false, in, z.p, LEN, index), (int)LEN);
	const char *want = map_file(in);
	assert_bytes(z.p, want, 0, LEN);
	pin_range_put(r);
	ck_assert_uint_eq(stats_of(&z).faults, 0);

	/* Resident now: a new pin takes one kernel pin per page and gives
	 * each back, exactly. */
	ck_assert_int_eq(pin_ctx_invalidate(z.ctx, z.p, LEN), 1);
	test_assert_small_pins(z.ctx, z.p, LEN);
	ck_assert_uint_eq(stats_of(&z).faults, 0);
	ck_assert_int_eq(munmap((void *)src, LEN), 0);
	ck_assert_int_eq(munmap((void *)got, LEN), 0);
	ck_assert_int_eq(munmap((void *)want, LEN), 0);
	close(in);
	close(out);
	lazy_close(&z);
}
END_TEST

/* mlock(2) faults the pages in as a pin does: the Replay first here too. */
START_TEST(mlock_places_then_locks)
{
	struct pin_range *r;
	struct lazy z;

	lazy_open(&z, PIN_BACKEND_MLOCK);
	ck_assert_int_eq(pin_range_get(z.ctx, z.p, LEN, &r), 0);
	struct pin_client_stats st = stats_of(&z);
	ck_assert_uint_eq(st.faults, 0);
	ck_assert_uint_eq(st.pages_populated, LEN / page);
	ck_assert_uint_eq(st.pages_pushed, LEN / page);
	const char *src = map_file(z.src);
	assert_bytes(z.p, src, 0, LEN);
	ck_assert_int_eq(munmap((void *)src, LEN), 0);
	pin_range_put(r);
	lazy_close(&z);
}
END_TEST

/* Dispatch the daemon's notices until one came. */
static void wait_notice(struct lazy *z)
{
	struct pollfd pfd = { .fd = pin_client_fd(z->c), .events = POLLIN };

	while (z->seen.n == 0) {
		ck_assert_int_eq(poll(&pfd, 1, NOTICE_MS), 1);
		ck_assert_int_ge(pin_client_process(z->c), 0);
	}
}

/* A page discarded under a held pin while the restore goes on: the pin is
 * stale, and the next look-up pins the pages the process sees now. */
START_TEST(dontneed_under_pin_repins)
{
	struct pin_range *r, *r2;
	struct lazy z;

	lazy_open(&z, PIN_BACKEND_IO_URING);
	ck_assert_int_eq(pin_range_get(z.ctx, z.p, LEN, &r), 0);
	ck_assert_int_eq(pin_client_pin_report(z.c, z.p, LEN, COOKIE), 0);
	char *gone = z.p + DISCARDED * page;
	ck_assert_int_eq(madvise(gone, page, MADV_DONTNEED), 0);
	wait_notice(&z);
	ck_assert_int_eq(z.seen.n, 1);
	ck_assert_uint_eq(z.seen.cookie, COOKIE);
	ck_assert_uint_eq(z.seen.addr, (uintptr_t)gone);
	ck_assert_uint_eq(z.seen.len, page);
	ck_assert_uint_eq(z.seen.event, PIN_UFFD_EVENT_REMOVE);
	ck_assert_int_eq(pin_range_stale(r), 1);

	ck_assert_int_eq(pin_range_get(z.ctx, z.p, LEN, &r2), 0);
	ck_assert_int_eq(pin_range_stale(r2), 0);
	struct pin_ctx_stats cs = test_pin_stats(z.ctx);
	ck_assert_uint_eq(cs.misses, 2);
	ck_assert_uint_eq(cs.hits, 0);
	ck_assert_uint_eq(cs.invalidations, 1);
	/* The old pin and the new one, until the old handle goes. */
	ck_assert_uint_eq(cs.pinned_bytes, 2 * LEN);
	pin_range_put(r);
	ck_assert_uint_eq(test_pin_stats(z.ctx).pinned_bytes, LEN);
	/* The discarded page reads zero now: the re-pin faulted it in as such
	 * (the Replay skips it), the only fault of the session. */
	struct pin_client_stats st = stats_of(&z);
	ck_assert_uint_eq(st.faults, 1);
	ck_assert_uint_eq(st.pages_zeroed, 1);

	int out = memfd_create("out", MFD_CLOEXEC);
	ck_assert_int_ge(out, 0);
	ck_assert_int_eq(
		test_io_fixed(z.ctx, true, out, z.p, LEN, pin_range_buf_index(r2, z.p, LEN)),
		(int)LEN);
	const char *got = map_file(out), *src = map_file(z.src);
	char *zero = calloc(1, page);
	ck_assert_ptr_nonnull(zero);
	assert_bytes(got, src, 0, DISCARDED * page);
	assert_bytes(got + DISCARDED * page, zero, 0, page);
	assert_bytes(got, src, (DISCARDED + 1) * page, LEN - (DISCARDED + 1) * page);
	free(zero);
	ck_assert_int_eq(munmap((void *)got, LEN), 0);
	ck_assert_int_eq(munmap((void *)src, LEN), 0);
	pin_range_put(r2);
	ck_assert_int_eq(pin_client_pin_release(z.c, COOKIE), 0);
	close(out);
	lazy_close(&z);
}
END_TEST

enum change { DONTNEED, REMAP_MMAP, MUNMAP_MMAP };

/* Memory at p again, new and not registered, every page present (written
 * by this thread, not placed by the daemon). */
static void map_anew(char *p)
{
	ck_assert_ptr_eq(mmap(p, SLICE, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
			 p);
	memset(p, 0x5a, SLICE);
}

static void change(enum change how, char *p, unsigned int round, char *scratch)
{
	switch (how) {
	case DONTNEED:
		ck_assert_int_eq(madvise(p + (round % (SLICE / page)) * page, page, MADV_DONTNEED),
				 0);
		break;
	case REMAP_MMAP:
		ck_assert_ptr_eq(mremap(p, SLICE, SLICE, MREMAP_MAYMOVE | MREMAP_FIXED, scratch),
				 scratch);
		map_anew(p);
		break;
	case MUNMAP_MMAP:
		ck_assert_int_eq(munmap(p, SLICE), 0);
		map_anew(p);
		break;
	}
}

/*
 * ROUNDS times, over a new slice each: a pin placed by the daemon and cached
 * (its second look-up hits), held while the slice changes, and the look-up
 * right after the change, in this thread: a new pin, the held one stale.  A
 * file read through the new pin (READ_FIXED) is what the process reads.
 */
static void stale_never_returned(enum change how, unsigned int ctx_flags)
{
	struct lazy z;
	struct pin_range *r, *r2;

	const unsigned int rounds = test_time_scale() > 1 ? ROUNDS_TRACED : ROUNDS;

	ck_assert_uint_le(ROUNDS * SLICE, LEN);
	lazy_open_flags(&z, PIN_BACKEND_IO_URING, ctx_flags);
	int in = test_pattern_file(SLICE, SEED_IN);
	char *scratch =
		mmap(NULL, SLICE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(scratch, MAP_FAILED);
	for (unsigned int i = 0; i < rounds; i++) {
		char *p = z.p + (size_t)i * SLICE;
		ck_assert_int_eq(pin_range_get(z.ctx, p, SLICE, &r), 0);
		pin_range_put(r);
		ck_assert_int_eq(pin_range_get(z.ctx, p, SLICE, &r), 0);
		change(how, p, i, scratch);
		ck_assert_int_eq(pin_range_get(z.ctx, p, SLICE, &r2), 0);
		ck_assert_msg(r2 != r, "round %u: the stale pin came back", i);
		/* Known once the daemon logged the change: a look-up that found
		 * it slow to (50 ms) pinned anew without waiting for that. */
		while (!pin_range_stale(r))
			test_pin_stats(z.ctx);
		ck_assert_int_eq(pin_range_stale(r2), 0);
		int index = pin_range_buf_index(r2, p, SLICE);
		ck_assert_int_ge(index, 0);
		ck_assert_int_eq(test_io_fixed(z.ctx, false, in, p, SLICE, index), (int)SLICE);
		test_assert_pattern(p, SLICE, SEED_IN);
		pin_range_put(r2);
		pin_range_put(r);
	}
	struct pin_ctx_stats cs = test_pin_stats(z.ctx);
	ck_assert_uint_eq(cs.hits, rounds);
	ck_assert_uint_eq(cs.misses, 2 * rounds);
	ck_assert_uint_eq(cs.invalidations, rounds);
	ck_assert_int_eq(munmap(scratch, SLICE), 0);
	close(in);
	lazy_close(&z);
}

START_TEST(dontneed_never_stale)
{
	stale_never_returned(DONTNEED, PIN_CTX_NO_MONITOR);
}
END_TEST

START_TEST(dontneed_never_stale_monitored)
{
	stale_never_returned(DONTNEED, 0);
}
END_TEST

START_TEST(munmap_mmap_never_stale)
{
	stale_never_returned(MUNMAP_MMAP, PIN_CTX_NO_MONITOR);
}
END_TEST

START_TEST(munmap_mmap_never_stale_monitored)
{
	stale_never_returned(MUNMAP_MMAP, 0);
}
END_TEST

START_TEST(mremap_never_stale)
{
	stale_never_returned(REMAP_MMAP, PIN_CTX_NO_MONITOR);
}
END_TEST

START_TEST(mremap_never_stale_monitored)
{
	stale_never_returned(REMAP_MMAP, 0);
}
END_TEST

/* uffdd's UFFDD_HOLD: it stops itself (SIGSTOP) at the point named. */
#define HOLD_ENV "UFFDD_HOLD"

struct resumer {
	pid_t daemon;
	pid_t tid; /* the thread that looks up */
	atomic_bool done;
};

/* The state letter of thread tid of this process in /proc. */
static char thread_state(pid_t tid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	return test_proc_state(path);
}

/* Let the held daemon go on once the look-up no longer runs: it sleeps
 * (waiting for the daemon's reply to the miss's Replay) or returned. */
static void *resume_main(void *arg)
{
	struct resumer *rs = arg;

	while (!atomic_load(&rs->done) && thread_state(rs->tid) != 'S')
		test_sleep_ms(1);
	ck_assert_int_eq(kill(rs->daemon, SIGCONT), 0);
	return NULL;
}

/*
 * The window the log's busy counter covers, held open: the daemon stops
 * itself right after the read that took the DONTNEED's event (which lets
 * madvise() return), before it has logged it.  The look-up right after, in
 * the same thread, must not take the cached pin: it sees the daemon busy,
 * waits, misses, and its Replay lets the daemon go on (logged then, the old
 * pin stale before the new one is made).  The file read through the new pin
 * is what the process reads.
 */
START_TEST(dontneed_read_not_logged)
{
	struct pin_range *r, *r2;
	struct resumer rs = { .tid = gettid() };
	pthread_t t;
	struct lazy z;
	int st;

	ck_assert_int_eq(setenv(HOLD_ENV, "events-read", 1), 0);
	lazy_open(&z, PIN_BACKEND_IO_URING);
	ck_assert_int_eq(unsetenv(HOLD_ENV), 0);
	rs.daemon = z.d.pid;
	int in = test_pattern_file(SLICE, SEED_IN);
	ck_assert_int_eq(pin_range_get(z.ctx, z.p, SLICE, &r), 0);
	pin_range_put(r);
	ck_assert_int_eq(pin_range_get(z.ctx, z.p, SLICE, &r), 0);
	ck_assert_uint_eq(test_pin_stats(z.ctx).hits, 1);

	ck_assert_int_eq(madvise(z.p, page, MADV_DONTNEED), 0);
	ck_assert_int_eq(waitpid(z.d.pid, &st, WUNTRACED), z.d.pid);
	ck_assert(WIFSTOPPED(st));
	ck_assert_int_eq(pthread_create(&t, NULL, resume_main, &rs), 0);
	int got = pin_range_get(z.ctx, z.p, SLICE, &r2);
	atomic_store(&rs.done, true);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(got, 0);
	ck_assert_msg(r2 != r, "the cached pin of the discarded page came back");
	ck_assert_int_eq(pin_range_stale(r), 1);
	ck_assert_int_eq(pin_range_stale(r2), 0);
	ck_assert_int_eq(
		test_io_fixed(z.ctx, false, in, z.p, SLICE, pin_range_buf_index(r2, z.p, SLICE)),
		(int)SLICE);
	test_assert_pattern(z.p, SLICE, SEED_IN);
	pin_range_put(r2);
	pin_range_put(r);

	/* The daemon would stop again at the next event (the unmap at the
	 * end): it goes first. */
	ck_assert_int_eq(pin_client_goodbye(z.c), 0);
	pin_client_free(z.c);
	pin_ctx_free(z.ctx);
	pin_uffd_free(z.u);
	ck_assert_int_eq(kill(z.d.pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(z.d.pid, &st, 0), z.d.pid);
	unlink(z.d.sock);
	rmdir(z.d.dir);
	close(z.src);
	close(in);
	ck_assert_int_eq(munmap(z.p, LEN), 0);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = test_suite_new("pin-lazy");
	const struct test_needs needs = { .what = TEST_NEED_ROOT | TEST_NEED_UFFD,
					  .uffd_features = PIN_UFFD_FEATURE_EVENT_REMOVE };
	TCase *tc = test_pin_tcase(s, "lazy", &needs, setup);

	tcase_add_test(tc, pin_places_then_pins);
	tcase_add_test(tc, dontneed_under_pin_repins);
	tcase_add_test(tc, mlock_places_then_locks);
	const struct test_needs remap = {
		.what = TEST_NEED_ROOT | TEST_NEED_UFFD,
		.uffd_features = PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP |
				 PIN_UFFD_FEATURE_EVENT_REMAP,
	};
	/* One tcase each: scripts/mutate runs them alone (CK_RUN_CASE). */
	const struct {
		const char *name;
		const TTest *t;
	} changes[] = {
		{ "dontneed_read_not_logged", dontneed_read_not_logged },
		{ "dontneed_never_stale", dontneed_never_stale },
		{ "dontneed_never_stale_monitored", dontneed_never_stale_monitored },
		{ "munmap_mmap_never_stale", munmap_mmap_never_stale },
		{ "munmap_mmap_never_stale_monitored", munmap_mmap_never_stale_monitored },
		{ "mremap_never_stale", mremap_never_stale },
		{ "mremap_never_stale_monitored", mremap_never_stale_monitored },
	};
	for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++)
		tcase_add_test(test_pin_tcase(s, changes[i].name, &remap, setup), changes[i].t);
	return s;
}

const char *test_skip_reason(void)
{
	return test_pin_skip_reason();
}
