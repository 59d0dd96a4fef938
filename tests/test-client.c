// SPDX-License-Identifier: MIT
/*
 * Suite daemon, area client: libpin's client against the real uffdd ($UFFDD)
 * on a temporary socket, with a real userfaultfd and real regions: the
 * automatic reconnect after the daemon is killed and started again, stale-pin
 * notices from real MADV_DONTNEED and munmap dropping pins of a real
 * registration cache, what uffdctl ($UFFDCTL) prints about a daemon with
 * content, and the counters and fallbacks of the fault service (EAGAIN,
 * EEXIST; a source cut short: test-stranded.c).  The test process is the client; its
 * faults are served by the daemon, another process, so nothing here deadlocks
 * under valgrind.  The fake daemon of test-proto.c keeps only the replies a
 * real daemon never sends.  Durable sessions from the client's side (a
 * restarted daemon's Resume on the same connection, the end of the
 * connection when it is stopped) are played by hand by a scripted daemon
 * here, so that each comes exactly where a case wants it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

static size_t page;

/* Every bounded wait on kernel state polls this often, this many times. */
#define POLL_MS	   10
#define POLL_TRIES 1000
/* How long a reconnect retries: a daemon restarted under valgrind takes
 * seconds to listen. */
#define RECONNECT_MS 60000
/* How long a wait for what the daemon must do (a notice, a populated range) lasts. */
#define DAEMON_TIMEOUT_MS 10000

/* ---- helpers ---- */

/* A source file of npages patterned pages (word at offset o: test_pattern(o, seed)). */
static int make_source(const struct test_daemon *d, size_t npages, uint64_t seed)
{
	return test_pattern_source(d->dir, "src", npages * page, seed);
}

/* Every thread of pid is stopped (SIGSTOP took effect). */
static void wait_stopped(pid_t pid)
{
	char path[64], stat[64 + sizeof(((struct dirent *)0)->d_name) + sizeof("/stat")], buf[256];

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	for (int tries = 0;; tries++) {
		DIR *dir = opendir(path);
		int running = 0;

		ck_assert_ptr_nonnull(dir);
		for (struct dirent *e; (e = readdir(dir));) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(stat, sizeof(stat), "%s/%s/stat", path, e->d_name);
			FILE *f = fopen(stat, "r");
			ck_assert_ptr_nonnull(f);
			ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
			fclose(f);
			const char *st = strrchr(buf, ')');
			running += !st || (st[2] != 'T' && st[2] != 't');
		}
		closedir(dir);
		if (!running)
			return;
		ck_assert_msg(tries < POLL_TRIES, "%d thread(s) of pid %d did not stop", running,
			      (int)pid);
		test_sleep_ms(POLL_MS);
	}
}

/* Thread tid of this process sleeps in kernel function fn. */
static void wait_wchan(pid_t tid, const char *fn)
{
	char path[64], buf[128] = "";

	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", (int)tid);
	for (int tries = 0;; tries++) {
		FILE *f = fopen(path, "r");
		ck_assert_ptr_nonnull(f);
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		if (!strcmp(buf, fn))
			return;
		ck_assert_msg(tries < POLL_TRIES, "thread %d sleeps in '%s', not in %s", (int)tid,
			      buf, fn);
		test_sleep_ms(POLL_MS);
	}
}

/* Where a thread waits for a reply on the uffdd socket, and where a thread
 * waits for its non-cooperative event (MADV_DONTNEED) to be read. */
#define WCHAN_RECV	 "__skb_wait_for_more_packets"
#define WCHAN_UFFD_EVENT "userfaultfd_event_wait_completion"

/* A request made by another thread, to look at while it waits. */
struct inflight {
	pthread_t thread;
	_Atomic pid_t tid;
	int (*fn)(struct inflight *f);
	struct pin_client *c;
	void *arg;
	int ret;
};

static void *inflight_main(void *arg)
{
	struct inflight *f = arg;

	f->tid = (pid_t)syscall(SYS_gettid);
	f->ret = f->fn(f);
	return NULL;
}

/* Start fn in a thread and return once it waits in the kernel in wchan. */
static void inflight_start(struct inflight *f, const char *wchan)
{
	f->tid = 0;
	ck_assert_int_eq(pthread_create(&f->thread, NULL, inflight_main, f), 0);
	for (int tries = 0; !f->tid; tries++) {
		ck_assert_msg(tries < POLL_TRIES, "the request thread did not start");
		test_sleep_ms(POLL_MS);
	}
	wait_wchan(f->tid, wchan);
}

static int inflight_join(struct inflight *f)
{
	ck_assert_int_eq(pthread_join(f->thread, NULL), 0);
	return f->ret;
}

struct conn {
	struct pin_client *c;
	struct pin_uffd *u;
	struct test_stale_seen seen;
};

/* A userfaultfd with the features given, handed over on a new connection. */
static void conn_open(const struct test_daemon *d, struct conn *k, uint64_t features,
		      unsigned int flags, struct pin_ctx *ctx)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo),
				    .flags = PIN_UFFD_CLOEXEC,
				    .features = features };
	struct pin_client_opts co = {
		.sz = sizeof(co),
		.socket = d->sock,
		.name = "test-client",
		.flags = flags,
		.reconnect_ms = RECONNECT_MS,
		.stale_fn = test_on_stale,
		.stale_data = &k->seen,
		.ctx = ctx,
	};

	memset(&k->seen, 0, sizeof(k->seen));
	ck_assert_int_eq(pin_uffd_new(&uo, &k->u), 0);
	ck_assert_uint_eq(pin_uffd_features(k->u) & features, features);
	ck_assert_int_eq(pin_client_connect(&co, &k->c), 0);
	ck_assert_int_eq(pin_client_handover(k->c, k->u), 0);
}

static void conn_close(struct conn *k)
{
	ck_assert_int_eq(pin_client_goodbye(k->c), 0);
	pin_client_free(k->c);
	pin_uffd_free(k->u);
}

/* Register [base, +npages) MISSING ourselves and have the daemon serve it
 * from fd (-1: zero pages), without the background push. */
static void add_region(struct conn *k, uint8_t *base, size_t npages, int fd)
{
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = base,
		.len = npages * page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH,
		.fd = fd,
	};

	ck_assert_int_eq(
		pin_uffd_register(k->u, base, npages * page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_client_region_add(k->c, &r), 0);
}

static struct pin_client_stats stats_of(struct conn *k)
{
	struct pin_client_stats st;

	ck_assert_int_eq(pin_client_stats(k->c, 0, &st), 0);
	return st;
}

/* Not EVENT_FORK: the harness forks this process to start a daemon, and a
 * FORK event that no daemon reads blocks fork() for good. */
#define EVENTS_NO_FORK                                                                             \
	(PIN_UFFD_FEATURE_EVENT_REMAP | PIN_UFFD_FEATURE_EVENT_REMOVE |                            \
	 PIN_UFFD_FEATURE_EVENT_UNMAP)

/* ---- connecting, and errors the daemon answers ---- */

#define NO_REGION ((void *)0x900000) /* where the test maps nothing */

/* $UFFDD_SOCKET when the options name no socket, the option before it;
 * what a session answers before it has a userfaultfd or a region, and after
 * Goodbye. */
START_TEST(connect_env_and_errors)
{
	struct pin_client_opts bad = { .sz = sizeof(bad), .socket = "/nonexistent/uffdd.sock" };
	struct pin_client *c = NULL, *c2 = (struct pin_client *)0x1;
	struct test_daemon d;

	test_daemon_start(&d, NULL);
	ck_assert_int_eq(setenv("UFFDD_SOCKET", d.sock, 1), 0);
	ck_assert_int_eq(pin_client_connect(NULL, &c), 0);
	/* Session 1 was the harness's Hello. */
	ck_assert_uint_eq(pin_client_session(c), 2);
	ck_assert_int_ge(pin_client_fd(c), 0);
	ck_assert_int_eq(pin_client_connect(&bad, &c2), -ENOENT);
	ck_assert_ptr_eq(c2, (struct pin_client *)0x1);
	bad.flags = 0x80;
	ck_assert_int_eq(pin_client_connect(&bad, &c2), -EINVAL);
	ck_assert_int_eq(unsetenv("UFFDD_SOCKET"), 0);

	ck_assert_int_eq(pin_client_prefetch(c, NO_REGION, page), -EBADFD);
	ck_assert_int_eq(pin_client_region_remove(c, NO_REGION, page), -ENOENT);
	ck_assert_int_eq(pin_client_wait_populated(c, NO_REGION, page, DAEMON_TIMEOUT_MS), -ENOENT);
	ck_assert_int_eq(pin_client_goodbye(c), 0);
	ck_assert_int_eq(pin_client_prefetch(c, NO_REGION, page), -ENOTCONN);
	pin_client_free(c);
	pin_client_free(NULL);
	test_daemon_stop(&d);
}
END_TEST

/* ---- reconnect ---- */

#define RC_PAGES      64
#define RC_SEED	      0x5eed
#define RC_CUT	      16 /* pages 16 to 23 are removed from the region */
#define RC_CUT_PAGES  8
#define RC_ZERO_PAGES 8 /* a zero region the daemon registers */
#define RC_PIN_PAGE   40
#define RC_PIN_PAGES  4
#define RC_PIN_COOKIE 0xfeedull

static bool rc_cut(size_t i)
{
	return i >= RC_CUT && i < RC_CUT + RC_CUT_PAGES;
}

static int stats_request(struct inflight *f)
{
	return pin_client_stats(f->c, 0, f->arg);
}

static const struct pin_client_region_info *region_at(const struct pin_client_region_info *v,
						      size_t n, const void *addr)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].addr == (uintptr_t)addr)
			return &v[i];
	ck_abort_msg("no region at %p", addr);
	return NULL;
}

/* The daemon dies with a request in flight and comes back: the request
 * reconnects by itself, hands the userfaultfd, the regions (the pieces a
 * removal left, and one the daemon registered) and the pin over again, and
 * is sent again; the rest is served byte-exact by the new daemon. */
START_TEST(reconnect_after_kill)
{
	struct test_daemon d;
	struct pin_client_region_info *ri = NULL;
	struct pin_client_pin_info *pi = NULL;
	struct pin_client_stats st;
	struct conn k;
	size_t n = 0;

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, RC_PAGES, RC_SEED);
	conn_open(&d, &k, EVENTS_NO_FORK, PIN_CLIENT_RECONNECT, NULL);
	uint8_t *base = test_map_pages(RC_PAGES), *zero = test_map_pages(RC_ZERO_PAGES);
	add_region(&k, base, RC_PAGES, fd);
	ck_assert_int_eq(pin_client_region_remove(k.c, base + RC_CUT * page, RC_CUT_PAGES * page),
			 0);
	struct pin_client_region zr = {
		.sz = sizeof(zr),
		.addr = zero,
		.len = RC_ZERO_PAGES * page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER,
		.fd = -1,
	};
	ck_assert_int_eq(pin_client_region_add(k.c, &zr), 0);
	/* Every other page: no two faults look sequential, so no readahead
	 * places a page that was not asked for. */
	for (size_t i = 0; i < RC_PAGES; i += 2)
		if (!rc_cut(i))
			ck_assert(test_page_ok(base, i, RC_SEED));
	st = stats_of(&k);
	ck_assert_uint_eq(st.faults, (RC_PAGES - RC_CUT_PAGES) / 2);
	ck_assert_uint_eq(st.pages_copied, (RC_PAGES - RC_CUT_PAGES) / 2);
	ck_assert_int_eq(pin_client_pin_report(k.c, base + RC_PIN_PAGE * page, RC_PIN_PAGES * page,
					       RC_PIN_COOKIE),
			 0);

	/* A request reaches the stopped daemon, which dies before it answers. */
	struct inflight req = { .fn = stats_request, .c = k.c, .arg = &st };
	ck_assert_int_eq(kill(d.pid, SIGSTOP), 0);
	wait_stopped(d.pid);
	inflight_start(&req, WCHAN_RECV);
	ck_assert_int_eq(kill(d.pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(d.pid, NULL, 0), d.pid);
	test_daemon_spawn(&d, NULL);
	ck_assert_int_eq(inflight_join(&req), 0);

	/* The new daemon knows the regions and the pin from the hand-over. */
	ck_assert_uint_eq(st.pages_total, RC_PAGES - RC_CUT_PAGES + RC_ZERO_PAGES);
	ck_assert_uint_eq(st.faults, 0);
	ck_assert_int_eq(pin_client_list_regions(k.c, 0, &ri, &n), 0);
	ck_assert_uint_eq(n, 3);
	const struct pin_client_region_info *r = region_at(ri, n, base);
	ck_assert_uint_eq(r->len, RC_CUT * page);
	ck_assert_uint_eq(r->source, 1);
	r = region_at(ri, n, base + (RC_CUT + RC_CUT_PAGES) * page);
	ck_assert_uint_eq(r->len, (RC_PAGES - RC_CUT - RC_CUT_PAGES) * page);
	ck_assert_uint_eq(r->source, 1);
	r = region_at(ri, n, zero);
	ck_assert_uint_eq(r->len, RC_ZERO_PAGES * page);
	ck_assert_uint_eq(r->source, 0);
	ck_assert_uint_eq(r->session, pin_client_session(k.c));
	free(ri);
	ck_assert_int_eq(pin_client_list_pins(k.c, 0, &pi, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(pi[0].session, pin_client_session(k.c));
	ck_assert_uint_eq(pi[0].addr, (uintptr_t)(base + RC_PIN_PAGE * page));
	ck_assert_uint_eq(pi[0].len, RC_PIN_PAGES * page);
	ck_assert_uint_eq(pi[0].cookie, RC_PIN_COOKIE);
	free(pi);

	/* The others come from the new daemon, one fault each, from the
	 * offsets the pieces kept; the zero region backwards, for the same
	 * reason as above. */
	for (size_t i = 1; i < RC_PAGES; i += 2)
		if (!rc_cut(i))
			ck_assert(test_page_ok(base, i, RC_SEED));
	for (size_t i = RC_ZERO_PAGES; i-- > 0;)
		ck_assert(test_page_zero(zero, i));
	for (size_t i = 0; i < RC_PAGES; i++)
		ck_assert_msg(rc_cut(i) || test_page_ok(base, i, RC_SEED), "page %zu", i);
	st = stats_of(&k);
	ck_assert_uint_eq(st.faults, (RC_PAGES - RC_CUT_PAGES) / 2 + RC_ZERO_PAGES);
	ck_assert_uint_eq(st.pages_copied, (RC_PAGES - RC_CUT_PAGES) / 2);
	ck_assert_uint_eq(st.bytes_copied, (RC_PAGES - RC_CUT_PAGES) / 2 * page);
	ck_assert_uint_eq(st.pages_zeroed, RC_ZERO_PAGES);
	ck_assert_uint_eq(st.eexist, 0);
	conn_close(&k);
	munmap(base, RC_PAGES * page);
	munmap(zero, RC_ZERO_PAGES * page);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- stale-pin notices into a registration cache ---- */

#define SN_PAGES       16
#define SN_SEED	       0xabcd
#define SN_COOKIE      0x51a1eull
#define SN_DISCARD     4 /* MADV_DONTNEED of pages 4 and 5 */
#define SN_DISCARD_LEN 2
#define SN_UNMAP       12 /* munmap of pages 12 to 15 */
#define SN_UNMAP_LEN   4

/* Real pins (io_uring registered buffers) of memory the daemon serves: a
 * REMOVE notice and an UNMAP notice each drop the cached pin, and the next
 * lookup pins anew.  VmPin counts the pages pinned, stale ones included
 * until their handle is put. */
START_TEST(notice_drops_cached_pin)
{
	struct pin_ctx_opts po = { .sz = sizeof(po),
				   .backend = PIN_BACKEND_IO_URING,
				   .flags = PIN_CTX_NO_MONITOR };
	struct pin_ctx_stats cs = { .sz = sizeof(cs) };
	struct pin_range *pr, *again, *third;
	struct pin_ctx *ctx;
	struct test_daemon d;
	struct conn k;

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, SN_PAGES, SN_SEED);
	ck_assert_int_eq(pin_ctx_new(&po, &ctx), 0);
	long kb = (long)(page / 1024), pin0 = test_status_kb("VmPin");
	conn_open(&d, &k, EVENTS_NO_FORK, 0, ctx);
	uint8_t *base = test_map_pages(SN_PAGES);
	add_region(&k, base, SN_PAGES, fd);

	/* Pinning faults the pages in through the daemon. */
	ck_assert_int_eq(pin_range_get(ctx, base, SN_PAGES * page, &pr), 0);
	ck_assert_int_eq(pin_client_pin_report(k.c, base, SN_PAGES * page, SN_COOKIE), 0);
	ck_assert_int_eq(pin_range_get(ctx, base, SN_PAGES * page, &again), 0);
	ck_assert_ptr_eq(again, pr);
	pin_range_put(again);
	ck_assert_int_eq(pin_ctx_stats(ctx, &cs), 0);
	ck_assert_uint_eq(cs.misses, 1);
	ck_assert_uint_eq(cs.hits, 1);
	ck_assert_int_eq(test_status_kb("VmPin") - pin0, SN_PAGES * kb);
	for (size_t i = 0; i < SN_PAGES; i++)
		ck_assert(test_page_ok(base, i, SN_SEED));

	/* madvise() returns once the daemon read the REMOVE, and it sends the
	 * notice before it reads its socket again: the next reply comes after. */
	ck_assert_int_eq(madvise(base + SN_DISCARD * page, SN_DISCARD_LEN * page, MADV_DONTNEED),
			 0);
	struct pin_client_stats st = stats_of(&k);
	ck_assert_int_eq(k.seen.n, 1);
	ck_assert_uint_eq(k.seen.cookie, SN_COOKIE);
	ck_assert_uint_eq(k.seen.addr, (uintptr_t)(base + SN_DISCARD * page));
	ck_assert_uint_eq(k.seen.len, SN_DISCARD_LEN * page);
	ck_assert_uint_eq(k.seen.event, PIN_UFFD_EVENT_REMOVE);
	ck_assert_int_eq(pin_range_stale(pr), 1);
	ck_assert_int_eq(pin_ctx_stats(ctx, &cs), 0);
	ck_assert_uint_eq(cs.invalidations, 1);
	ck_assert_uint_eq(st.pages_copied, SN_PAGES);

	/* The lookup pins anew: the discarded pages fault in as zero pages. */
	ck_assert_int_eq(pin_range_get(ctx, base, SN_PAGES * page, &again), 0);
	ck_assert_ptr_ne(again, pr);
	ck_assert_int_eq(pin_range_stale(again), 0);
	ck_assert_int_eq(pin_ctx_stats(ctx, &cs), 0);
	ck_assert_uint_eq(cs.misses, 2);
	ck_assert_uint_eq(cs.hits, 1);
	ck_assert_int_eq(test_status_kb("VmPin") - pin0, 2 * SN_PAGES * kb);
	pin_range_put(pr);
	ck_assert_int_eq(test_status_kb("VmPin") - pin0, SN_PAGES * kb);
	st = stats_of(&k);
	ck_assert_uint_eq(st.pages_zeroed, SN_DISCARD_LEN);
	for (size_t i = 0; i < SN_PAGES; i++)
		ck_assert(i >= SN_DISCARD && i < SN_DISCARD + SN_DISCARD_LEN
				  ? test_page_zero(base, i)
				  : test_page_ok(base, i, SN_SEED));

	/* munmap under the pin: an UNMAP notice, read by an event loop. */
	ck_assert_int_eq(munmap(base + SN_UNMAP * page, SN_UNMAP_LEN * page), 0);
	struct pollfd p = { .fd = pin_client_fd(k.c), .events = POLLIN };
	ck_assert_int_eq(poll(&p, 1, DAEMON_TIMEOUT_MS), 1);
	ck_assert_int_eq(pin_client_process(k.c), 1);
	ck_assert_int_eq(k.seen.n, 2);
	ck_assert_uint_eq(k.seen.cookie, SN_COOKIE);
	ck_assert_uint_eq(k.seen.addr, (uintptr_t)(base + SN_UNMAP * page));
	ck_assert_uint_eq(k.seen.len, SN_UNMAP_LEN * page);
	ck_assert_uint_eq(k.seen.event, PIN_UFFD_EVENT_UNMAP);
	ck_assert_int_eq(pin_range_stale(again), 1);
	ck_assert_int_eq(pin_ctx_stats(ctx, &cs), 0);
	ck_assert_uint_eq(cs.invalidations, 2);
	ck_assert_int_eq(pin_range_get(ctx, base, SN_UNMAP * page, &third), 0);
	ck_assert_ptr_ne(third, again);
	ck_assert_int_eq(pin_range_stale(third), 0);
	ck_assert_int_eq(pin_ctx_stats(ctx, &cs), 0);
	ck_assert_uint_eq(cs.misses, 3);
	pin_range_put(again);
	ck_assert_int_eq(test_status_kb("VmPin") - pin0, SN_UNMAP * kb);

	/* Taken within a second of the discard its range overlaps (the
	 * session's event log tells the cache of it, as a monitor would): the
	 * caller's only, its put unpins. */
	pin_range_put(third);
	ck_assert_int_eq(test_status_kb("VmPin") - pin0, 0);
	conn_close(&k);
	pin_ctx_free(ctx);
	ck_assert_int_eq(test_status_kb("VmPin"), pin0);
	munmap(base, SN_UNMAP * page);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- the fault service's fallbacks and counters ---- */

/* A source cut short under a userfaultfd without POISON (poisoned all the
 * same): test-stranded.c. */

#define BA_PAGES 6
#define BA_SEED	 0x0ba

/* Fault on f->arg through write(2): a thread blocked in a fault of its own
 * would hold valgrind's lock, and no other thread would run. */
static int touch(struct inflight *f)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	ssize_t n = write(p[1], f->arg, 1);
	close(p[0]);
	close(p[1]);
	return (int)n;
}

/*
 * RegionAddBatch: BA_PAGES one-page regions, zero and file sources in turn,
 * in one request; a thread that faulted on the last of them before it was
 * added is served once the batch is in.  A batch whose second region
 * overlaps one fails (-EEXIST), and its first region stays.
 */
START_TEST(region_add_batch)
{
	struct test_daemon d;
	struct conn k;
	struct pin_client_region v[BA_PAGES], w[3];
	struct pin_client_region_info *ri;
	struct inflight f = { .fn = touch };
	size_t n;

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, BA_PAGES, BA_SEED);
	conn_open(&d, &k, EVENTS_NO_FORK, 0, NULL);
	uint8_t *base = test_map_pages(BA_PAGES + 2);
	ck_assert_int_eq(pin_uffd_register(k.u, base, (BA_PAGES + 2) * page,
					   PIN_UFFD_REGISTER_MISSING, NULL),
			 0);
	for (size_t i = 0; i < BA_PAGES; i++)
		v[i] = (struct pin_client_region){
			.sz = sizeof(v[i]),
			.addr = base + i * page,
			.len = page,
			.mode = PIN_UFFD_REGISTER_MISSING,
			.flags = PIN_CLIENT_REGION_NO_PUSH,
			.fd = i % 2 ? fd : -1,
			.offset = i * page,
		};
	f.arg = base + (BA_PAGES - 1) * page;
	inflight_start(&f, "handle_userfault");
	ck_assert_int_eq(pin_client_region_add_many(k.c, v, BA_PAGES), 0);
	ck_assert_int_eq(inflight_join(&f), 1);
	for (size_t i = BA_PAGES; i-- > 0;)
		ck_assert(i % 2 ? test_page_ok(base, i, BA_SEED) : test_page_zero(base, i));
	struct pin_client_stats st = stats_of(&k);
	ck_assert_uint_eq(st.faults, BA_PAGES);
	ck_assert_uint_eq(st.pages_copied, BA_PAGES / 2);
	ck_assert_uint_eq(st.pages_zeroed, BA_PAGES / 2);

	for (size_t i = 0; i < PIN_ARRAY_SIZE(w); i++)
		w[i] = (struct pin_client_region){
			.sz = sizeof(w[i]),
			.addr = base + (i == 1 ? 0 : (BA_PAGES + i / 2) * page),
			.len = i == 1 ? 2 * page : page,
			.mode = PIN_UFFD_REGISTER_MISSING,
			.flags = PIN_CLIENT_REGION_NO_PUSH,
			.fd = -1,
		};
	ck_assert_int_eq(pin_client_region_add_many(k.c, w, PIN_ARRAY_SIZE(w)), -EEXIST);
	ck_assert_int_eq(pin_client_list_regions(k.c, pin_client_session(k.c), &ri, &n), 0);
	ck_assert_uint_eq(n, BA_PAGES + 1);
	ck_assert_uint_eq(ri[BA_PAGES].addr, (uintptr_t)(base + BA_PAGES * page));
	ck_assert_uint_eq(ri[BA_PAGES].len, page);
	free(ri);
	conn_close(&k);
	munmap(base, (BA_PAGES + 2) * page);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

#define GB_PAGES 64
#define GB_SEED	 0x0b7

/* Whether session id is still listed (asked on another connection). */
static bool listed(struct pin_client *c, uint64_t id)
{
	struct pin_client_info *v;
	size_t n;
	bool found = false;

	ck_assert_int_eq(pin_client_list_clients(c, &v, &n), 0);
	for (size_t i = 0; i < n; i++)
		found |= v[i].session == id;
	free(v);
	return found;
}

/*
 * Goodbye hands the session over: with pages of a region (added without
 * the push) never touched and the client's own userfaultfd closed, every
 * page still reads as its source says, and the session ends once all are
 * in (freed at the end of its worker's round: waited for).
 * pin_client_finish() answers at that end, with the counters.
 */
START_TEST(goodbye_places_the_rest)
{
	struct test_daemon d;
	struct conn k;
	struct pin_client_stats st;
	struct pin_client_opts co = { .sz = sizeof(co) };
	struct pin_client *watcher;

	test_daemon_start(&d, NULL);
	co.socket = d.sock;
	ck_assert_int_eq(pin_client_connect(&co, &watcher), 0);
	int fd = make_source(&d, GB_PAGES, GB_SEED);
	for (int wait = 0; wait < 2; wait++) {
		conn_open(&d, &k, EVENTS_NO_FORK, 0, NULL);
		uint8_t *base = test_map_pages(GB_PAGES);
		add_region(&k, base, GB_PAGES, fd);
		ck_assert(test_page_ok(base, 0, GB_SEED));
		uint64_t id = pin_client_session(k.c);
		if (wait) {
			ck_assert_int_eq(pin_client_finish(k.c, &st), 0);
			ck_assert_uint_eq(st.pages_copied, GB_PAGES);
			ck_assert_uint_eq(st.pages_populated, GB_PAGES);
		} else {
			ck_assert_int_eq(pin_client_goodbye(k.c), 0);
		}
		pin_client_free(k.c);
		pin_uffd_free(k.u);
		for (size_t i = GB_PAGES; i-- > 0;)
			ck_assert_msg(test_page_ok(base, i, GB_SEED), "page %zu", i);
		for (int tries = 0; listed(watcher, id); tries++) {
			ck_assert_msg(tries < POLL_TRIES, "session %" PRIu64 " did not end", id);
			test_sleep_ms(POLL_MS);
		}
		munmap(base, GB_PAGES * page);
	}
	pin_client_free(watcher);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

#define UR_PAGES 4
#define UR_SEED	 0x0b5

/* A source fd the daemon cannot read (write-only, O_PATH) is refused when
 * the region is added (-EBADF), not met at every fault; a readable one of
 * the same file then serves. */
START_TEST(unreadable_source_refused)
{
	static const int refused[] = { O_WRONLY, O_PATH };
	struct test_daemon d;
	struct conn k;
	char path[128];

	test_daemon_start(&d, NULL);
	conn_open(&d, &k, EVENTS_NO_FORK, 0, NULL);
	snprintf(path, sizeof(path), "%s/src", d.dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	test_pattern_write(fd, UR_PAGES * page, UR_SEED);
	uint8_t *base = test_map_pages(UR_PAGES);
	ck_assert_int_eq(
		pin_uffd_register(k.u, base, UR_PAGES * page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		int bad = open(path, refused[i] | O_CLOEXEC);
		ck_assert_int_ge(bad, 0);
		struct pin_client_region r = { .sz = sizeof(r),
					       .addr = base,
					       .len = UR_PAGES * page,
					       .mode = PIN_UFFD_REGISTER_MISSING,
					       .flags = PIN_CLIENT_REGION_NO_PUSH,
					       .fd = bad };
		ck_assert_int_eq(pin_client_region_add(k.c, &r), -EBADF);
		close(bad);
	}
	ck_assert_int_eq(pin_uffd_unregister(k.u, base, UR_PAGES * page), 0);
	int rd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(rd, 0);
	add_region(&k, base, UR_PAGES, rd);
	for (size_t i = 0; i < UR_PAGES; i++)
		ck_assert(test_page_ok(base, i, UR_SEED));
	ck_assert_uint_eq(stats_of(&k).pages_copied, UR_PAGES);
	ck_assert_int_eq(unlink(path), 0);
	conn_close(&k);
	munmap(base, UR_PAGES * page);
	close(rd);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

#define EX_PAGES 8
#define EX_SEED	 0xe8157
#define EX_BYTE	 0x77 /* what the process wrote itself */

static bool ex_own(size_t i)
{
	return i == 2 || i == 5;
}

/* Pages the process populated before it registered the range: the
 * daemon's copy meets them (EEXIST, counted once per page) and leaves them
 * as they are. */
START_TEST(eexist_counted)
{
	struct test_daemon d;
	struct conn k;

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, EX_PAGES, EX_SEED);
	conn_open(&d, &k, EVENTS_NO_FORK, 0, NULL);
	uint8_t *base = test_map_pages(EX_PAGES);
	for (size_t i = 0; i < EX_PAGES; i++)
		if (ex_own(i))
			memset(base + i * page, EX_BYTE, page);
	add_region(&k, base, EX_PAGES, fd);
	ck_assert_int_eq(pin_client_prefetch(k.c, base, EX_PAGES * page), 0);
	ck_assert_int_eq(pin_client_wait_populated(k.c, base, EX_PAGES * page, DAEMON_TIMEOUT_MS),
			 0);
	struct pin_client_stats st = stats_of(&k);
	ck_assert_uint_eq(st.eexist, 2);
	ck_assert_uint_eq(st.pages_copied, EX_PAGES - 2);
	ck_assert_uint_eq(st.pages_populated, EX_PAGES);
	ck_assert_uint_eq(st.faults, 0);
	ck_assert_uint_eq(st.eagain, 0);
	for (size_t i = 0; i < EX_PAGES; i++) {
		if (!ex_own(i)) {
			ck_assert(test_page_ok(base, i, EX_SEED));
			continue;
		}
		for (size_t j = 0; j < page; j++)
			ck_assert_uint_eq(base[i * page + j], EX_BYTE);
	}
	conn_close(&k);
	munmap(base, EX_PAGES * page);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

#define EA_PAGES   8
#define EA_SEED	   0xea9a1
#define EA_DISCARD 6	 /* MADV_DONTNEED of pages 6 and 7 */
#define EA_WAIT_MS 10000 /* a prefetch of 8 pages: far more than it takes, even under valgrind */

static int replay_request(struct inflight *f)
{
	return pin_client_working_set_replay(f->c, f->arg);
}

static int discard(struct inflight *f)
{
	return madvise((uint8_t *)f->arg + EA_DISCARD * page, (EA_PAGES - EA_DISCARD) * page,
		       MADV_DONTNEED);
}

/* The kernel refuses to resolve while a non-cooperative event is pending
 * (mmap_changing: EAGAIN), as in its selftests.  With the daemon stopped, a
 * working-set replay request arrives, then a REMOVE: the daemon reads the
 * request first, its copy gets EAGAIN, counted once; the replay waits for the
 * REMOVE to be read, then places the pages kept (the discarded ones are done:
 * they fault in as zero), and says exactly how many it placed. */
START_TEST(eagain_counted)
{
	struct test_daemon d;
	struct conn k;
	char path[128];

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, EA_PAGES, EA_SEED);
	conn_open(&d, &k, EVENTS_NO_FORK, 0, NULL);
	uint8_t *base = test_map_pages(EA_PAGES);
	add_region(&k, base, EA_PAGES, fd);
	snprintf(path, sizeof(path), "%s/working-set", d.dir);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "uffdd-working-set 1\npage-size %zu\nrun %p %#zx\nend 1\n", page, (void *)base,
		EA_PAGES * page);
	ck_assert_int_eq(fclose(f), 0);

	struct inflight replay = { .fn = replay_request, .c = k.c, .arg = d.dir };
	struct inflight remove = { .fn = discard, .arg = base };
	ck_assert_int_eq(kill(d.pid, SIGSTOP), 0);
	wait_stopped(d.pid);
	inflight_start(&replay, WCHAN_RECV);
	inflight_start(&remove, WCHAN_UFFD_EVENT);
	ck_assert_int_eq(kill(d.pid, SIGCONT), 0);
	ck_assert_int_eq(inflight_join(&replay), EA_DISCARD);
	ck_assert_int_eq(inflight_join(&remove), 0);
	struct pin_client_stats st = stats_of(&k);
	ck_assert_uint_eq(st.eagain, 1);
	ck_assert_uint_eq(st.pages_copied, EA_DISCARD);
	ck_assert_uint_eq(st.pages_populated, EA_DISCARD);

	/* Nothing left for a prefetch to place; the discarded pages count as
	 * populated already and fault in as zero. */
	ck_assert_int_eq(pin_client_prefetch(k.c, base, EA_PAGES * page), 0);
	ck_assert_int_eq(pin_client_wait_populated(k.c, base, EA_PAGES * page, EA_WAIT_MS), 0);
	for (size_t i = EA_PAGES; i-- > 0;)
		ck_assert(i < EA_DISCARD ? test_page_ok(base, i, EA_SEED)
					 : test_page_zero(base, i));
	st = stats_of(&k);
	ck_assert_uint_eq(st.faults, EA_PAGES - EA_DISCARD);
	ck_assert_uint_eq(st.eagain, 1);
	ck_assert_uint_eq(st.pages_copied, EA_DISCARD);
	ck_assert_uint_eq(st.pages_zeroed, EA_PAGES - EA_DISCARD);
	ck_assert_int_eq(unlink(path), 0);
	conn_close(&k);
	munmap(base, EA_PAGES * page);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- uffdctl against a daemon with content ---- */

#define CTL_PAGES     16 /* region A: a file, 3 pages read */
#define CTL_WP_PAGES  8	 /* region B: zero pages, MISSING and WP, 1 page written */
#define CTL_PIN_PAGES 4
#define CTL_COOKIE    0xabcull
#define CTL_SEED      0xc7

static struct json_object *uffdctl_json(const struct test_daemon *d, const char *args)
{
	char full[128];

	snprintf(full, sizeof(full), "--json %s", args);
	char *out = test_uffdctl(d, full);
	struct json_object *o = json_tokener_parse(out);
	ck_assert_msg(o != NULL, "not JSON: %s", out);
	free(out);
	return o;
}

static uint64_t jget(struct json_object *o, const char *key)
{
	struct json_object *v;

	ck_assert_msg(json_object_object_get_ex(o, key, &v), "no %s", key);
	return json_object_get_uint64(v);
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	ck_assert_msg(json_object_object_get_ex(o, key, &v), "no %s", key);
	return json_object_get_string(v);
}

/* A name with a newline, a journal priority, a terminal escape and UTF-8:
 * the daemon keeps printable ASCII only, and uffdctl prints that. */
#define EVIL_NAME "a\n<0>b\x1b[31mc\xc3\xa9"
#define EVIL_SEEN "a?<0>b?[31mc??"

START_TEST(name_printable_only)
{
	struct test_daemon d;
	struct pin_client *c;
	struct pin_client_info *v;
	size_t n;

	test_daemon_start(&d, NULL);
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d.sock, .name = EVIL_NAME };
	ck_assert_int_eq(pin_client_connect(&co, &c), 0);
	ck_assert_int_eq(pin_client_list_clients(c, &v, &n), 0);
	/* Ours, whatever else is listed (the daemon may not have ended the
	 * session of test_daemon_start()'s probe yet). */
	size_t mine = n;
	for (size_t i = 0; i < n; i++)
		if (v[i].session == pin_client_session(c))
			mine = i;
	ck_assert_uint_lt(mine, n);
	ck_assert_str_eq(v[mine].name, EVIL_SEEN);
	free(v);
	char *out = test_uffdctl(&d, "clients");
	ck_assert_msg(strstr(out, " " EVIL_SEEN " ") != NULL, "uffdctl clients: %s", out);
	free(out);
	pin_client_free(c);
	test_daemon_stop(&d);
}
END_TEST

/* A region line of `uffdctl regions`, as uffdctl(8) shows it. */
static void region_line(char *buf, size_t len, uint64_t session, const void *addr, size_t npages,
			const char *size, const char *mode, const char *src, unsigned int dirty,
			unsigned int populated, const char *bar, const char *pct)
{
	char pop[32];

	snprintf(pop, sizeof(pop), "%u/%zu", populated, npages);
	snprintf(buf, len, "%8llu %016llx-%016llx %6s %-10s %-4s %8u %-22s [%s] %s\n",
		 (unsigned long long)session, (unsigned long long)(uintptr_t)addr,
		 (unsigned long long)((uintptr_t)addr + npages * page), size, mode, src, dirty, pop,
		 bar, pct);
}

/* A client with two regions, a pin, read faults and a write-protect fault:
 * every uffdctl listing shows exactly that, as a table and as JSON. */
START_TEST(uffdctl_shows_content)
{
	struct test_daemon d;
	struct conn k;
	char want[1024], args[64], line[256];

	test_daemon_start(&d, NULL);
	int fd = make_source(&d, CTL_PAGES, CTL_SEED);
	conn_open(&d, &k, EVENTS_NO_FORK | PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP, 0, NULL);
	uint8_t *a = test_map_pages(CTL_PAGES), *b = test_map_pages(CTL_WP_PAGES);
	add_region(&k, a, CTL_PAGES, fd);
	struct pin_client_region wr = {
		.sz = sizeof(wr),
		.addr = b,
		.len = CTL_WP_PAGES * page,
		.mode = PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP,
		.flags = PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER,
		.fd = -1,
	};
	ck_assert_int_eq(pin_client_region_add(k.c, &wr), 0);
	ck_assert_int_eq(pin_client_pin_report(k.c, a, CTL_PIN_PAGES * page, CTL_COOKIE), 0);
	/* Pages 5, 0, 10: none right after another, so no readahead. */
	ck_assert(test_page_ok(a, 5, CTL_SEED));
	ck_assert(test_page_ok(a, 0, CTL_SEED));
	ck_assert(test_page_ok(a, 10, CTL_SEED));
	/* A missing fault (a write-protected zero page), then a WP fault. */
	b[0] = 1;
	uint64_t me = pin_client_session(k.c);

	char *out = test_uffdctl(&d, "clients");
	snprintf(want, sizeof(want), "%8llu %8d %6u %-20s %7u %8s %12u %12s\n",
		 (unsigned long long)me, (int)getpid(), (unsigned int)getuid(), "test-client", 2,
		 "16K", 5, "4/24");
	ck_assert_msg(strstr(out, want), "clients:\n%s\nhas no line\n%s", out, want);
	snprintf(want, sizeof(want), "%8s %8s %6s %-20s %7s %8s %12s %12s\n", "SESSION", "PID",
		 "UID", "NAME", "REGIONS", "PINNED", "FAULTS", "POPULATED");
	ck_assert_msg(!strncmp(out, want, strlen(want)), "clients:\n%s", out);
	int lines = 0;
	for (const char *c = out; *c; c++)
		lines += *c == '\n';
	/* The header and us: uffdctl's inspection connection is no session. */
	ck_assert_int_eq(lines, 2);
	free(out);

	snprintf(args, sizeof(args), "regions %llu", (unsigned long long)me);
	out = test_uffdctl(&d, args);
	snprintf(want, sizeof(want), "%8s %-33s %6s %-10s %-4s %8s %s\n", "SESSION", "RANGE",
		 "SIZE", "MODE", "SRC", "DIRTY", "POPULATED");
	char ra[512], rb[512];
	region_line(ra, sizeof(ra), me, a, CTL_PAGES, "64K", "missing", "fd", 0, 3,
		    "####................", " 18.8%");
	region_line(rb, sizeof(rb), me, b, CTL_WP_PAGES, "32K", "missing+wp", "zero", 1, 1,
		    "###.................", " 12.5%");
	strcat(want, a < b ? ra : rb);
	strcat(want, a < b ? rb : ra);
	ck_assert_str_eq(out, want);
	free(out);

	snprintf(args, sizeof(args), "pins %llu", (unsigned long long)me);
	out = test_uffdctl(&d, args);
	snprintf(line, sizeof(line), "%8llu %016llx-%016llx %6s %18s\n", (unsigned long long)me,
		 (unsigned long long)(uintptr_t)a,
		 (unsigned long long)((uintptr_t)a + CTL_PIN_PAGES * page), "16K", "0xabc");
	snprintf(want, sizeof(want), "%8s %-33s %6s %18s\n%s", "SESSION", "RANGE", "SIZE", "COOKIE",
		 line);
	ck_assert_str_eq(out, want);
	free(out);

	snprintf(args, sizeof(args), "stats %llu", (unsigned long long)me);
	out = test_uffdctl(&d, args);
	snprintf(want, sizeof(want),
		 "session %llu\n"
		 "faults:          5 (write-protect 1)\n"
		 "pages copied:    3 (12K)\n"
		 "pages zeroed:    1\n"
		 "pages pushed:    0\n"
		 "populated:       4 of 24 pages\n"
		 "retries:         0 EAGAIN, 0 EEXIST\n"
		 "latency (from the read of each fault, log2 buckets):\n",
		 (unsigned long long)me);
	ck_assert_msg(!strncmp(out, want, strlen(want)), "stats:\n%s\nwanted first\n%s", out, want);
	free(out);

	/* status: ours only (uffdctl's own connection is no session). */
	out = test_uffdctl(&d, "status");
	snprintf(want, sizeof(want), "uffdd at %s\n", d.sock);
	ck_assert_msg(!strncmp(out, want, strlen(want)), "status:\n%s", out);
	ck_assert_str_eq(strchr(out, '\n') + 1, "clients:         1\n"
						"regions:         2\n"
						"pinned:          16K\n"
						"faults:          5 (write-protect 1)\n"
						"pages copied:    3 (12K)\n"
						"pages zeroed:    1\n"
						"pages pushed:    0\n"
						"populated:       4 of 24 pages\n"
						"retries:         0 EAGAIN, 0 EEXIST\n");
	free(out);
	struct json_object *o = uffdctl_json(&d, "status"), *h;
	ck_assert_str_eq(jstr(o, "socket"), d.sock);
	ck_assert_uint_eq(jget(o, "clients"), 1);
	ck_assert_uint_eq(jget(o, "regions"), 2);
	ck_assert_uint_eq(jget(o, "pinned_bytes"), CTL_PIN_PAGES * page);
	ck_assert(json_object_object_get_ex(o, "stats", &h));
	ck_assert_uint_eq(jget(h, "faults"), 5);
	ck_assert_uint_eq(jget(h, "pages_total"), CTL_PAGES + CTL_WP_PAGES);
	json_object_put(o);

	o = uffdctl_json(&d, args);
	ck_assert_uint_eq(jget(o, "session"), me);
	ck_assert_uint_eq(jget(o, "faults"), 5);
	ck_assert_uint_eq(jget(o, "wp_faults"), 1);
	ck_assert_uint_eq(jget(o, "pages_copied"), 3);
	ck_assert_uint_eq(jget(o, "bytes_copied"), 3 * page);
	ck_assert_uint_eq(jget(o, "pages_zeroed"), 1);
	ck_assert_uint_eq(jget(o, "pages_pushed"), 0);
	ck_assert_uint_eq(jget(o, "eagain"), 0);
	ck_assert_uint_eq(jget(o, "eexist"), 0);
	ck_assert_uint_eq(jget(o, "pages_total"), CTL_PAGES + CTL_WP_PAGES);
	ck_assert_uint_eq(jget(o, "pages_populated"), 4);
	ck_assert(json_object_object_get_ex(o, "latency_us_log2", &h));
	uint64_t lat = 0;
	for (size_t i = 0; i < json_object_array_length(h); i++)
		lat += json_object_get_uint64(json_object_array_get_idx(h, i));
	ck_assert_uint_eq(lat, 5);
	json_object_put(o);

	snprintf(args, sizeof(args), "regions %llu", (unsigned long long)me);
	o = uffdctl_json(&d, args);
	ck_assert_uint_eq(json_object_array_length(o), 2);
	struct json_object *ja = json_object_array_get_idx(o, a < b ? 0 : 1);
	struct json_object *jb = json_object_array_get_idx(o, a < b ? 1 : 0);
	ck_assert_uint_eq(jget(ja, "start"), (uintptr_t)a);
	ck_assert_uint_eq(jget(ja, "len"), CTL_PAGES * page);
	ck_assert_str_eq(jstr(ja, "mode"), "missing");
	ck_assert_str_eq(jstr(ja, "source"), "fd");
	ck_assert_uint_eq(jget(ja, "pages_populated"), 3);
	ck_assert_uint_eq(jget(ja, "pages_dirty"), 0);
	ck_assert_uint_eq(jget(jb, "start"), (uintptr_t)b);
	ck_assert_uint_eq(jget(jb, "end"), (uintptr_t)b + CTL_WP_PAGES * page);
	ck_assert_str_eq(jstr(jb, "mode"), "missing+wp");
	ck_assert_str_eq(jstr(jb, "source"), "zero");
	ck_assert_uint_eq(jget(jb, "pages_total"), CTL_WP_PAGES);
	ck_assert_uint_eq(jget(jb, "pages_populated"), 1);
	ck_assert_uint_eq(jget(jb, "pages_dirty"), 1);
	json_object_put(o);

	snprintf(args, sizeof(args), "pins %llu", (unsigned long long)me);
	o = uffdctl_json(&d, args);
	ck_assert_uint_eq(json_object_array_length(o), 1);
	ja = json_object_array_get_idx(o, 0);
	ck_assert_uint_eq(jget(ja, "session"), me);
	ck_assert_uint_eq(jget(ja, "start"), (uintptr_t)a);
	ck_assert_uint_eq(jget(ja, "len"), CTL_PIN_PAGES * page);
	ck_assert_uint_eq(jget(ja, "cookie"), CTL_COOKIE);
	json_object_put(o);

	/* Ours only: uffdctl's inspection connection is no session. */
	o = uffdctl_json(&d, "clients");
	ck_assert_uint_eq(json_object_array_length(o), 1);
	ja = json_object_array_get_idx(o, 0);
	ck_assert_uint_eq(jget(ja, "session"), me);
	ck_assert_uint_eq(jget(ja, "pid"), (uint64_t)getpid());
	ck_assert_uint_eq(jget(ja, "uid"), getuid());
	ck_assert_str_eq(jstr(ja, "name"), "test-client");
	ck_assert_uint_eq(jget(ja, "regions"), 2);
	ck_assert_uint_eq(jget(ja, "pinned_bytes"), CTL_PIN_PAGES * page);
	ck_assert(json_object_object_get_ex(ja, "stats", &h));
	ck_assert_uint_eq(jget(h, "faults"), 5);
	ck_assert_uint_eq(jget(h, "pages_populated"), 4);
	json_object_put(o);

	conn_close(&k);
	munmap(a, CTL_PAGES * page);
	munmap(b, CTL_WP_PAGES * page);
	close(fd);
	test_daemon_stop(&d);
}
END_TEST

/* ---- who sees what, and lists in pages ---- */

/* An ordinary uid, an admin group no user has here and a uid in it. */
#define SEEN_UID       65534
#define SEEN_ADMIN_GID 4242
#define SEEN_ADMIN_UID 65533
#define SEEN_REGIONS   2 /* the ordinary uid's, in its first session */
#define SEEN_COOKIE    0x5eeull
#define NO_SESSION     999999 /* no session has this id */

/* A client child: false from CHILD_REQUIRE is its exit status, the line. */
#define CHILD_REQUIRE(c)                                                                           \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: child: %s failed\n", __FILE__, __LINE__, #c);      \
			return __LINE__ % 255 + 1;                                                 \
		}                                                                                  \
	} while (0)

struct seen {
	const struct test_daemon *d;
	uint64_t root_sid; /* the test's own session, root's */
	int up[2];	   /* child -> test: ready, or checked */
	int down[2];	   /* test -> child: go on */
};

/* Become uid with only gid as its group, and nothing else (a uid of the
 * socket's group whom uffdd trusts with nothing). */
static bool become(uid_t uid, gid_t gid, const gid_t *groups, size_t ngroups)
{
	return setgroups(ngroups, groups) == 0 && setresgid(gid, gid, gid) == 0 &&
	       setresuid(uid, uid, uid) == 0;
}

static bool child_signal(struct seen *s)
{
	char c = 'x';

	return write(s->up[1], &c, 1) == 1;
}

static bool child_wait(struct seen *s)
{
	char c;

	return read(s->down[0], &c, 1) == 1;
}

/* The lines `uffdctl ARGS` prints (-1 when it fails), as this process's uid. */
static long uffdctl_lines(const struct test_daemon *d, const char *args)
{
	char cmd[512], buf[4096];
	long lines = 0;

	snprintf(cmd, sizeof(cmd), "'%s' --socket '%s' %s", getenv("UFFDCTL"), d->sock, args);
	FILE *f = popen(cmd, "r");
	if (!f)
		return -1;
	for (size_t n; (n = fread(buf, 1, sizeof(buf), f));)
		for (size_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	return pclose(f) == 0 ? lines : -1;
}

/*
 * The ordinary uid: connected after it became that uid, with two sessions
 * (one with two regions and a pin, one that asks); it sees those two and
 * nothing of root's, whose session it is told the id of: -ENOENT, as for an
 * id no session has.
 */
static int child_ordinary(struct seen *s)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = s->d->sock, .name = "ordinary" };
	struct pin_client *c1, *c2;
	struct pin_client_info *ci;
	struct pin_client_region_info *ri;
	struct pin_client_pin_info *pi;
	struct pin_client_stats st;
	struct pin_uffd *u;
	size_t n;

	/* Opening a userfaultfd needs root here; using it does not. */
	CHILD_REQUIRE(pin_uffd_new(&uo, &u) == 0);
	CHILD_REQUIRE(become(SEEN_UID, SEEN_UID, NULL, 0));
	CHILD_REQUIRE(pin_client_connect(&co, &c1) == 0);
	CHILD_REQUIRE(pin_client_handover(c1, u) == 0);
	uint8_t *base = test_map_pages(SEEN_REGIONS);
	CHILD_REQUIRE(pin_uffd_register(u, base, SEEN_REGIONS * page, PIN_UFFD_REGISTER_MISSING,
					NULL) == 0);
	for (size_t i = 0; i < SEEN_REGIONS; i++) {
		struct pin_client_region r = { .sz = sizeof(r),
					       .addr = base + i * page,
					       .len = page,
					       .mode = PIN_UFFD_REGISTER_MISSING,
					       .flags = PIN_CLIENT_REGION_NO_PUSH,
					       .fd = -1 };
		CHILD_REQUIRE(pin_client_region_add(c1, &r) == 0);
	}
	CHILD_REQUIRE(pin_client_pin_report(c1, base, page, SEEN_COOKIE) == 0);
	CHILD_REQUIRE(pin_client_connect(&co, &c2) == 0);
	CHILD_REQUIRE(child_signal(s) && child_wait(s));

	uint64_t me = pin_client_session(c1);
	CHILD_REQUIRE(pin_client_list_clients(c2, &ci, &n) == 0);
	CHILD_REQUIRE(n == 2);
	for (size_t i = 0; i < n; i++)
		CHILD_REQUIRE(ci[i].uid == SEEN_UID);
	free(ci);
	CHILD_REQUIRE(pin_client_list_regions(c2, 0, &ri, &n) == 0);
	CHILD_REQUIRE(n == SEEN_REGIONS && ri[0].session == me && ri[1].session == me);
	free(ri);
	CHILD_REQUIRE(pin_client_list_pins(c2, 0, &pi, &n) == 0);
	CHILD_REQUIRE(n == 1 && pi[0].session == me && pi[0].cookie == SEEN_COOKIE);
	free(pi);
	CHILD_REQUIRE(pin_client_list_regions(c2, s->root_sid, &ri, &n) == -ENOENT);
	CHILD_REQUIRE(pin_client_list_pins(c2, s->root_sid, &pi, &n) == -ENOENT);
	CHILD_REQUIRE(pin_client_list_regions(c2, NO_SESSION, &ri, &n) == -ENOENT);
	CHILD_REQUIRE(pin_client_stats(c2, s->root_sid, &st) == -ENOENT);
	CHILD_REQUIRE(pin_client_stats(c2, NO_SESSION, &st) == -ENOENT);
	CHILD_REQUIRE(pin_client_stats(c2, me, &st) == 0 && st.pages_total == SEEN_REGIONS);
	CHILD_REQUIRE(pin_client_stats(c2, PIN_CLIENT_SESSION_ALL, &st) == 0);
	CHILD_REQUIRE(st.pages_total == SEEN_REGIONS);
	/* uffdctl as this uid: the header and its two sessions (uffdctl's own
	 * connection is no session). */
	CHILD_REQUIRE(uffdctl_lines(s->d, "clients") == 3);
	CHILD_REQUIRE(uffdctl_lines(s->d, "regions") == 1 + SEEN_REGIONS);
	CHILD_REQUIRE(pin_client_goodbye(c2) == 0);
	CHILD_REQUIRE(pin_client_goodbye(c1) == 0);
	pin_client_free(c2);
	pin_client_free(c1);
	pin_uffd_free(u);
	return 0;
}

/* A uid in the admin group (a supplementary group only): it sees all. */
static int child_admin(struct seen *s)
{
	const gid_t groups[] = { SEEN_ADMIN_GID };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = s->d->sock, .name = "admin" };
	struct pin_client *c;
	struct pin_client_info *ci;
	struct pin_client_region_info *ri;
	struct pin_client_pin_info *pi;
	struct pin_client_stats st;
	size_t n;

	CHILD_REQUIRE(become(SEEN_ADMIN_UID, SEEN_ADMIN_UID, groups, PIN_ARRAY_SIZE(groups)));
	CHILD_REQUIRE(pin_client_connect(&co, &c) == 0);
	/* Root's, the ordinary uid's two, this one. */
	CHILD_REQUIRE(pin_client_list_clients(c, &ci, &n) == 0);
	CHILD_REQUIRE(n == 4);
	free(ci);
	/* Root's one region and the ordinary uid's two. */
	CHILD_REQUIRE(pin_client_list_regions(c, 0, &ri, &n) == 0);
	CHILD_REQUIRE(n == 1 + SEEN_REGIONS);
	free(ri);
	CHILD_REQUIRE(pin_client_list_regions(c, s->root_sid, &ri, &n) == 0);
	CHILD_REQUIRE(n == 1 && ri[0].session == s->root_sid);
	free(ri);
	CHILD_REQUIRE(pin_client_list_pins(c, 0, &pi, &n) == 0);
	CHILD_REQUIRE(n == 1 && pi[0].cookie == SEEN_COOKIE);
	free(pi);
	CHILD_REQUIRE(pin_client_stats(c, s->root_sid, &st) == 0 && st.pages_total == 1);
	CHILD_REQUIRE(pin_client_stats(c, PIN_CLIENT_SESSION_ALL, &st) == 0);
	CHILD_REQUIRE(st.pages_total == 1 + SEEN_REGIONS);
	CHILD_REQUIRE(child_signal(s) && child_wait(s));
	CHILD_REQUIRE(pin_client_goodbye(c) == 0);
	pin_client_free(c);
	return 0;
}

static pid_t seen_spawn(struct seen *s, int (*fn)(struct seen *s))
{
	ck_assert_int_eq(pipe2(s->up, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(s->down, O_CLOEXEC), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(fn(s));
	/* The child's ends: a child that fails is an end of file here. */
	close(s->up[1]);
	close(s->down[0]);
	s->up[1] = s->down[0] = -1;
	return pid;
}

static void seen_await(struct seen *s)
{
	char c;

	ck_assert_msg(read(s->up[0], &c, 1) == 1, "a client child failed: see its line above");
}

static void seen_go(struct seen *s)
{
	ck_assert_int_eq(write(s->down[1], "x", 1), 1);
}

static int seen_reap(struct seen *s, pid_t pid)
{
	int st;

	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	close(s->up[0]);
	close(s->down[1]);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/*
 * uffdd --admin-group: an ordinary uid sees its own sessions only, another
 * uid's asked by id as if there were none; a uid in the admin group, and
 * root, see every session; exact counts of clients, regions and pins.
 */
START_TEST(lists_seen_by_uid)
{
	char gid[16];
	const char *const extra[] = { "--admin-group", gid, NULL };
	struct test_daemon d;
	struct seen ord = { .d = &d }, adm = { .d = &d };
	struct pin_client_info *ci;
	struct pin_client_region_info *ri;
	struct pin_client_stats st;
	struct conn k;
	size_t n;

	snprintf(gid, sizeof(gid), "%d", SEEN_ADMIN_GID);
	test_daemon_start(&d, extra);
	/* The socket's mode is the access policy: let the other uids in. */
	ck_assert_int_eq(chmod(d.dir, 0711), 0);
	ck_assert_int_eq(chmod(d.sock, 0666), 0);
	conn_open(&d, &k, 0, 0, NULL);
	uint8_t *base = test_map_pages(1);
	add_region(&k, base, 1, -1);
	ord.root_sid = adm.root_sid = pin_client_session(k.c);

	pid_t po = seen_spawn(&ord, child_ordinary);
	seen_await(&ord);
	pid_t pa = seen_spawn(&adm, child_admin);
	seen_await(&adm);
	/* Root: itself, the ordinary uid's two, the admin's. */
	ck_assert_int_eq(pin_client_list_clients(k.c, &ci, &n), 0);
	ck_assert_uint_eq(n, 4);
	free(ci);
	ck_assert_int_eq(pin_client_list_regions(k.c, 0, &ri, &n), 0);
	ck_assert_uint_eq(n, 1 + SEEN_REGIONS);
	free(ri);
	ck_assert_int_eq(pin_client_stats(k.c, PIN_CLIENT_SESSION_ALL, &st), 0);
	ck_assert_uint_eq(st.pages_total, 1 + SEEN_REGIONS);
	seen_go(&adm);
	ck_assert_int_eq(seen_reap(&adm, pa), 0);
	seen_go(&ord);
	ck_assert_int_eq(seen_reap(&ord, po), 0);
	conn_close(&k);
	munmap(base, page);
	test_daemon_stop(&d);
}
END_TEST

/* More regions than one reply holds (some 3,700 fit a datagram). */
/* 100,000 regions make 27 pages of the list; under valgrind (a time scale
 * above 1) or ASan 10,000 make 3, in a tenth of the time. */
#define MANY_REGIONS	    100000
#define MANY_REGIONS_TRACED 10000

/*
 * A session of 100,000 one-page regions, under the default cap on regions
 * (uffdd(8), LIMITS): `uffdctl regions` walks every page of the list and
 * prints each region once, in address order, and libpin's list has them all.
 */
START_TEST(regions_paged)
{
	char cmd[512], line[256];
	struct test_daemon d;
	struct pin_client_region_info *ri;
	struct conn k;
	size_t n;
#ifdef __SANITIZE_ADDRESS__
	const size_t many = MANY_REGIONS_TRACED;
#else
	const size_t many = test_time_scale() > 1 ? MANY_REGIONS_TRACED : MANY_REGIONS;
#endif

	test_daemon_start(&d, NULL);
	conn_open(&d, &k, 0, 0, NULL);
	uint8_t *base = test_map_pages(many);
	ck_assert_int_eq(pin_uffd_register(k.u, base, many * page, PIN_UFFD_REGISTER_MISSING, NULL),
			 0);
	for (size_t i = 0; i < many; i++) {
		struct pin_client_region r = { .sz = sizeof(r),
					       .addr = base + i * page,
					       .len = page,
					       .mode = PIN_UFFD_REGISTER_MISSING,
					       .flags = PIN_CLIENT_REGION_NO_PUSH,
					       .fd = -1 };
		ck_assert_int_eq(pin_client_region_add(k.c, &r), 0);
	}
	uint64_t me = pin_client_session(k.c);
	ck_assert_int_eq(pin_client_list_regions(k.c, me, &ri, &n), 0);
	ck_assert_uint_eq(n, many);
	for (size_t i = 0; i < n; i++)
		ck_assert_uint_eq(ri[i].addr, (uintptr_t)base + i * page);
	free(ri);

	/* All sessions (uffdctl's own has none), then this one. */
	for (int pass = 0; pass < 2; pass++) {
		snprintf(cmd, sizeof(cmd), "'%s' --socket '%s' regions", getenv("UFFDCTL"), d.sock);
		if (pass)
			snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %llu",
				 (unsigned long long)me);
		FILE *f = popen(cmd, "r");
		ck_assert_ptr_nonnull(f);
		size_t lines = 0;
		while (fgets(line, sizeof(line), f)) {
			unsigned long long sid, start, end;
			ck_assert_ptr_nonnull(strchr(line, '\n'));
			if (lines++ == 0)
				continue; /* the header */
			ck_assert_int_eq(sscanf(line, "%llu %llx-%llx", &sid, &start, &end), 3);
			ck_assert_uint_eq(sid, me);
			ck_assert_uint_eq(start, (uintptr_t)base + (lines - 2) * page);
			ck_assert_uint_eq(end, start + page);
		}
		ck_assert_int_eq(pclose(f), 0);
		ck_assert_uint_eq(lines, 1 + many);
	}
	conn_close(&k);
	munmap(base, many * page);
	test_daemon_stop(&d);
}
END_TEST

/* ---- pins listed in pages, changed between pages ---- */

/* 100,000 pins, some 100 pages of PINS_LIMIT; under valgrind (a time scale
 * above 1) or ASan 10,000. */
#define MANY_PINS	 100000
#define MANY_PINS_TRACED 10000
/* Entries a page asks for: a page ends inside the session. */
#define PINS_LIMIT 997
/* Where the pins' one-page ranges lie (the daemon only records them). */
#define PINS_BASE 0x10000000ull

/* A connection that speaks the protocol itself: ListGet with a cursor is
 * what pin_client never sends page by page. */
struct raw {
	int sock;
	uint64_t seq;
};

/* Send m, return its reply (freed by the caller). */
static Uffdd__Msg *raw_call(struct raw *r, Uffdd__Msg *m)
{
	int fds[PIN_PROTO_MAX_FDS];
	Uffdd__Msg *rep;
	size_t nfds;

	m->has_seq = true;
	m->seq = ++r->seq;
	ck_assert_int_eq(pin_proto_send(r->sock, m, NULL, 0), 0);
	ck_assert_int_eq(pin_proto_recv(r->sock, &rep, fds, &nfds), 0);
	ck_assert_uint_eq(nfds, 0);
	ck_assert_int_eq(rep->body_case, UFFDD__MSG__BODY_REPLY);
	ck_assert_uint_eq(rep->seq, m->seq);
	ck_assert_msg(rep->reply->error == 0, "request %d: %s", (int)m->body_case,
		      rep->reply->text ? rep->reply->text : "");
	return rep;
}

static uint64_t raw_hello(struct raw *r, const struct test_daemon *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Hello hello = UFFDD__HELLO__INIT;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d->sock);
	r->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	r->seq = 0;
	ck_assert_int_ge(r->sock, 0);
	ck_assert_int_eq(connect(r->sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	hello.version = PIN_PROTO_VERSION;
	hello.name = "pins-paged";
	m.body_case = UFFDD__MSG__BODY_HELLO;
	m.hello = &hello;
	Uffdd__Msg *rep = raw_call(r, &m);
	ck_assert(rep->reply->has_session);
	uint64_t sid = rep->reply->session;
	pin_proto_free(rep);
	return sid;
}

static void raw_pin(struct raw *r, uint64_t cookie, bool report)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__PinReport pr = UFFDD__PIN_REPORT__INIT;
	Uffdd__PinRelease rel = UFFDD__PIN_RELEASE__INIT;
	Uffdd__Range range = UFFDD__RANGE__INIT;

	if (report) {
		range.addr = PINS_BASE + (cookie % MANY_PINS) * page;
		range.len = page;
		pr.range = &range;
		pr.cookie = cookie;
		m.body_case = UFFDD__MSG__BODY_PIN_REPORT;
		m.pin_report = &pr;
	} else {
		rel.cookie = cookie;
		m.body_case = UFFDD__MSG__BODY_PIN_RELEASE;
		m.pin_release = &rel;
	}
	pin_proto_free(raw_call(r, &m));
}

static uint64_t pins_rng_state; /* test_rand()'s, from test_seed() */

/* The cookies the session has, in order: want[0, n). */
struct pins_model {
	uint64_t *want;
	size_t n;
};

static size_t model_lower(const struct pins_model *pm, uint64_t c)
{
	size_t lo = 0, hi = pm->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (pm->want[mid] < c)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool model_has(const struct pins_model *pm, uint64_t c)
{
	size_t k = model_lower(pm, c);

	return k < pm->n && pm->want[k] == c;
}

/* Report cookie c (not there yet) or release it (there), in the daemon and
 * the model alike. */
static void model_set(struct raw *r, struct pins_model *pm, uint64_t c, bool report)
{
	size_t k = model_lower(pm, c);

	raw_pin(r, c, report);
	if (report) {
		memmove(pm->want + k + 1, pm->want + k, (pm->n - k) * sizeof(*pm->want));
		pm->want[k] = c;
		pm->n++;
	} else {
		memmove(pm->want + k, pm->want + k + 1, (pm->n - k - 1) * sizeof(*pm->want));
		pm->n--;
	}
}

/* A cookie in [lo, hi] the session has not (there is one). */
static uint64_t fresh_cookie(const struct pins_model *pm, uint64_t lo, uint64_t hi)
{
	for (;;) {
		uint64_t span = hi - lo + 1; /* 0: all 2^64 */
		uint64_t c = lo + (span ? test_rand(&pins_rng_state) % span
					: test_rand(&pins_rng_state));
		if (!model_has(pm, c))
			return c;
	}
}

static int cookie_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * A session of 100,000 pins with random cookies, listed in pages of
 * PINS_LIMIT: between two pages (every other time) the pin the next page
 * begins at is released, and one before the cursor and one after; one is
 * reported before the cursor and one after.  Each page holds exactly the pins there
 * at or after its cursor, in cookie order, up to the limit, and says
 * where the next begins: every pin there for the whole walk is listed once,
 * in order, one released before its page never, one reported after the
 * cursor in its place.
 */
START_TEST(pins_paged)
{
	struct test_daemon d;
	struct pins_model pm = { 0 };
	struct raw r;
#ifdef __SANITIZE_ADDRESS__
	const size_t many = MANY_PINS_TRACED;
#else
	const size_t many = test_time_scale() > 1 ? MANY_PINS_TRACED : MANY_PINS;
#endif
	/* Each page adds two and removes three at most. */
	pm.want = malloc((many + 2 * (many / PINS_LIMIT + 2)) * sizeof(*pm.want));
	ck_assert_ptr_nonnull(pm.want);
	pins_rng_state = test_seed();
	test_daemon_start(&d, NULL);
	uint64_t sid = raw_hello(&r, &d);
	/* Distinct: the generator's outputs are, as its states are. */
	while (pm.n < many) {
		pm.want[pm.n] = test_rand(&pins_rng_state);
		raw_pin(&r, pm.want[pm.n++], true);
	}
	qsort(pm.want, pm.n, sizeof(*pm.want), cookie_cmp);

	Uffdd__ListGet lg = UFFDD__LIST_GET__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	uint64_t key = 0, last = 0;
	size_t pages = 0;
	lg.what = UFFDD__LIST_GET__WHAT__PINS;
	lg.has_session = lg.has_cursor = lg.has_cursor_key = lg.has_limit = true;
	lg.session = lg.cursor = sid;
	lg.limit = PINS_LIMIT;
	m.body_case = UFFDD__MSG__BODY_LIST_GET;
	m.list_get = &lg;
	for (;; pages++) {
		lg.cursor_key = key;
		ck_assert_uint_le(pages, many);
		Uffdd__Msg *rep = raw_call(&r, &m);
		const Uffdd__Reply *p = rep->reply;
		size_t k = model_lower(&pm, key);
		size_t n = pm.n - k < PINS_LIMIT ? pm.n - k : PINS_LIMIT;
		ck_assert_uint_eq(p->n_pins, n);
		for (size_t i = 0; i < n; i++) {
			ck_assert_uint_eq(p->pins[i]->session, sid);
			ck_assert_uint_eq(p->pins[i]->cookie, pm.want[k + i]);
			ck_assert_uint_eq(p->pins[i]->range->addr,
					  PINS_BASE + (pm.want[k + i] % MANY_PINS) * page);
			ck_assert_uint_eq(p->pins[i]->range->len, page);
			ck_assert(p->pins[i]->cookie > last || (!pages && !i));
			last = p->pins[i]->cookie;
		}
		bool more = k + n < pm.n;
		ck_assert_uint_eq(p->has_next_cursor && p->next_cursor, more);
		if (!more) {
			pin_proto_free(rep);
			break;
		}
		ck_assert_uint_eq(p->next_cursor, sid);
		ck_assert_uint_eq(p->next_key, pm.want[k + n]);
		key = p->next_key;
		pin_proto_free(rep);
		/* The pin the next page begins at goes every other page: it
		 * begins after it then, at it otherwise. */
		if (pages % 2)
			model_set(&r, &pm, key, false);
		size_t at = model_lower(&pm, key);
		if (at < pm.n)
			model_set(&r, &pm, pm.want[at + test_rand(&pins_rng_state) % (pm.n - at)],
				  false);
		if (at)
			model_set(&r, &pm, pm.want[test_rand(&pins_rng_state) % at], false);
		model_set(&r, &pm, fresh_cookie(&pm, key + 1, UINT64_MAX), true);
		model_set(&r, &pm, fresh_cookie(&pm, 0, key - 1), true);
	}
	close(r.sock);
	free(pm.want);
	test_daemon_stop(&d);
}
END_TEST

/* ---- durable sessions, against a scripted daemon ---- */

/*
 * The test plays the daemon by hand on a temporary socket, so that a restart
 * (a Resume on the same connection) and a stop (the end of the connection)
 * come exactly where a case wants them; the client's calls block, so they run
 * in a thread of their own while this one plays and asserts.
 */

#define FAKE_SESSION 7 /* the id its Hello replies give */
#define FAKE_BACKLOG 1 /* a case has one connection at a time */
#define FAKE_COOKIE  0xc0c0ull
/* Where the region starts in its source: not 0, so that the offset shows. */
#define FAKE_OFFSET_PAGES 2
/* How long it waits for a message the client must have sent (times
 * test_time_scale()): only a client that failed to send it waits that long. */
#define FAKE_WAIT_MS 10000
/* Short: a case waits for a reconnect to give up. */
#define FAKE_RECONNECT_MS 100
/* A case's bound: every call fails at once or is answered by the test. */
#define FAKE_TIMEOUT_S 30

struct fake {
	char dir[64];
	char path[96];
	int lsock;
	int sock; /* the client's connection, -1 when none */
};

static void fake_listen(struct fake *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	f->lsock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(f->lsock, 0);
	ck_assert_int_eq(bind(f->lsock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(f->lsock, FAKE_BACKLOG), 0);
}

static void fake_start(struct fake *f)
{
	snprintf(f->dir, sizeof(f->dir), "/tmp/test-client-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/sock", f->dir);
	f->sock = -1;
	fake_listen(f);
}

/* The daemon is stopped: the client's connection ends, the socket goes. */
static void fake_stop(struct fake *f)
{
	if (f->sock >= 0)
		ck_assert_int_eq(close(f->sock), 0);
	f->sock = -1;
	ck_assert_int_eq(close(f->lsock), 0);
	ck_assert_int_eq(unlink(f->path), 0);
}

static void fake_end(struct fake *f)
{
	fake_stop(f);
	ck_assert_int_eq(rmdir(f->dir), 0);
}

/* The next message: body and seq as given, with the source descriptor in
 * *ret_fd when ret_fd is set, with none otherwise. */
static Uffdd__Msg *fake_recv(struct fake *f, Uffdd__Msg__BodyCase body, uint64_t seq, int *ret_fd)
{
	struct pollfd p = { .fd = f->sock, .events = POLLIN };
	int fds[PIN_PROTO_MAX_FDS];
	size_t nfds;
	Uffdd__Msg *m;

	ck_assert_int_eq(poll(&p, 1, (int)(FAKE_WAIT_MS * test_time_scale())), 1);
	ck_assert_int_eq(pin_proto_recv(f->sock, &m, fds, &nfds), 0);
	ck_assert_int_eq(m->body_case, body);
	ck_assert_uint_eq(m->seq, seq);
	ck_assert_uint_eq(nfds, ret_fd ? 1 : 0);
	if (ret_fd)
		*ret_fd = fds[0];
	return m;
}

static void fake_send(struct fake *f, Uffdd__Msg *m)
{
	ck_assert_int_eq(pin_proto_send(f->sock, m, NULL, 0), 0);
}

static void fake_reply(struct fake *f, uint64_t seq, int error)
{
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;

	rep.error = error;
	m.has_seq = 1;
	m.seq = seq;
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	fake_send(f, &m);
}

static void fake_resume(struct fake *f, uint64_t last_seq)
{
	Uffdd__Resume res = UFFDD__RESUME__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;

	res.last_seq = last_seq;
	m.body_case = UFFDD__MSG__BODY_RESUME;
	m.resume = &res;
	fake_send(f, &m);
}

/* Accept the connection and answer its Hello, which has seq. */
static void fake_accept(struct fake *f, uint64_t seq)
{
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;

	f->sock = accept4(f->lsock, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(f->sock, 0);
	Uffdd__Msg *hello = fake_recv(f, UFFDD__MSG__BODY_HELLO, seq, NULL);
	ck_assert_uint_eq(hello->hello->version, PIN_PROTO_VERSION);
	pin_proto_free(hello);
	rep.has_version = rep.has_session = 1;
	rep.version = PIN_PROTO_VERSION;
	rep.session = FAKE_SESSION;
	m.has_seq = 1;
	m.seq = seq;
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	fake_send(f, &m);
}

/* A client call made by another thread while this one plays the daemon. */
struct call {
	pthread_t thread;
	int (*fn)(struct call *k);
	const struct fake *f;
	unsigned int flags; /* pin_client_opts.flags */
	struct test_stale_seen seen;
	struct pin_client *c;
	int src; /* the source of the region added */
	int ret;
};

static void *call_main(void *arg)
{
	struct call *k = arg;

	k->ret = k->fn(k);
	return NULL;
}

static void call_start(struct call *k, int (*fn)(struct call *k))
{
	k->fn = fn;
	ck_assert_int_eq(pthread_create(&k->thread, NULL, call_main, k), 0);
}

static int call_join(struct call *k)
{
	ck_assert_int_eq(pthread_join(k->thread, NULL), 0);
	return k->ret;
}

static int call_connect(struct call *k)
{
	struct pin_client_opts co = {
		.sz = sizeof(co),
		.socket = k->f->path,
		.name = "test-durable",
		.flags = k->flags,
		.reconnect_ms = FAKE_RECONNECT_MS,
		.stale_fn = test_on_stale,
		.stale_data = &k->seen,
	};

	return pin_client_connect(&co, &k->c);
}

/* A region served from k->src, the kind of request that carries a descriptor. */
static int call_region_add(struct call *k)
{
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = NO_REGION,
		.len = page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH,
		.fd = k->src,
		.offset = FAKE_OFFSET_PAGES * page,
	};

	return pin_client_region_add(k->c, &r);
}

static int call_prefetch(struct call *k)
{
	return pin_client_prefetch(k->c, NO_REGION, page);
}

static int call_process(struct call *k)
{
	return pin_client_process(k->c);
}

static int call_goodbye(struct call *k)
{
	return pin_client_goodbye(k->c);
}

/* A new client of the fake daemon (its Hello is seq 1), with a source to add. */
static void fake_client(struct fake *f, struct call *k, unsigned int flags)
{
	memset(k, 0, sizeof(*k));
	k->f = f;
	k->flags = flags;
	k->src = memfd_create("test-durable-src", MFD_CLOEXEC);
	ck_assert_int_ge(k->src, 0);
	call_start(k, call_connect);
	fake_accept(f, 1);
	ck_assert_int_eq(call_join(k), 0);
	ck_assert_uint_eq(pin_client_session(k->c), FAKE_SESSION);
}

static void fake_client_free(struct call *k)
{
	pin_client_free(k->c);
	ck_assert_int_eq(close(k->src), 0);
}

/* A RegionAdd as call_region_add() sends it, with an fd of k->src. */
static void expect_region_add(struct fake *f, const struct call *k, uint64_t seq)
{
	struct stat want, got;
	int fd;
	Uffdd__Msg *m = fake_recv(f, UFFDD__MSG__BODY_REGION_ADD, seq, &fd);

	ck_assert_uint_eq(m->region_add->range->addr, (uintptr_t)NO_REGION);
	ck_assert_uint_eq(m->region_add->range->len, page);
	ck_assert_uint_eq(m->region_add->mode, PIN_UFFD_REGISTER_MISSING);
	ck_assert_int_eq(m->region_add->source, UFFDD__SOURCE_KIND__SOURCE_FD);
	ck_assert_uint_eq(m->region_add->offset, FAKE_OFFSET_PAGES * page);
	ck_assert_int_eq(m->region_add->push, 0);
	ck_assert_int_eq(m->region_add->registered, 1);
	pin_proto_free(m);
	ck_assert_int_eq(fstat(k->src, &want), 0);
	ck_assert_int_eq(fstat(fd, &got), 0);
	ck_assert_uint_eq(got.st_dev, want.st_dev);
	ck_assert_uint_eq(got.st_ino, want.st_ino);
	ck_assert_int_eq(close(fd), 0);
}

/* The next request is Goodbye with seq (nothing was sent again before it). */
static void expect_goodbye(struct fake *f, struct call *k, uint64_t seq)
{
	call_start(k, call_goodbye);
	pin_proto_free(fake_recv(f, UFFDD__MSG__BODY_GOODBYE, seq, NULL));
	fake_reply(f, seq, 0);
	ck_assert_int_eq(call_join(k), 0);
}

/* The INFO lines that say a restarted daemon kept the connection. */
static _Atomic unsigned int resumes_logged;

static void count_resumes(enum pin_log_level level, const char *msg, void *userdata)
{
	if (level == PIN_LOG_INFO && strstr(msg, "the daemon restarted"))
		resumes_logged++;
}

static void durable_setup(void)
{
	resumes_logged = 0;
	pin_log_set(count_resumes, NULL);
}

/* Restarted before it committed the request: the request goes again, the
 * same seq, the same file, and its reply ends the call. */
START_TEST(resume_sends_again)
{
	struct fake f;
	struct call k;

	durable_setup();
	fake_start(&f);
	fake_client(&f, &k, 0);
	call_start(&k, call_region_add);
	expect_region_add(&f, &k, 2);
	fake_resume(&f, 1);
	expect_region_add(&f, &k, 2);
	fake_reply(&f, 2, 0);
	ck_assert_int_eq(call_join(&k), 0);
	ck_assert_uint_eq(resumes_logged, 1);
	expect_goodbye(&f, &k, 3);
	fake_client_free(&k);
	fake_end(&f);
}
END_TEST

/* Restarted after it committed the request: the committed reply follows the
 * Resume, its error is the call's, and nothing is sent again. */
START_TEST(resume_committed_reply)
{
	struct fake f;
	struct call k;

	durable_setup();
	fake_start(&f);
	fake_client(&f, &k, 0);
	call_start(&k, call_region_add);
	expect_region_add(&f, &k, 2);
	fake_resume(&f, 2);
	fake_reply(&f, 2, -EEXIST);
	ck_assert_int_eq(call_join(&k), -EEXIST);
	ck_assert_uint_eq(resumes_logged, 1);
	expect_goodbye(&f, &k, 3);
	fake_client_free(&k);
	fake_end(&f);
}
END_TEST

/* Two restarts before the request was committed: it goes once per Resume. */
START_TEST(resume_twice)
{
	struct fake f;
	struct call k;

	durable_setup();
	fake_start(&f);
	fake_client(&f, &k, 0);
	call_start(&k, call_region_add);
	expect_region_add(&f, &k, 2);
	fake_resume(&f, 1);
	fake_resume(&f, 1);
	expect_region_add(&f, &k, 2);
	expect_region_add(&f, &k, 2);
	fake_reply(&f, 2, 0);
	ck_assert_int_eq(call_join(&k), 0);
	ck_assert_uint_eq(resumes_logged, 2);
	expect_goodbye(&f, &k, 3);
	fake_client_free(&k);
	fake_end(&f);
}
END_TEST

/* A restart while no request waits: pin_client_process() consumes the
 * Resume (no notice) and dispatches the notice after it; a Resume still
 * queued when a request starts is not about that request. */
START_TEST(resume_while_idle)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__StaleNotice sn = UFFDD__STALE_NOTICE__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	struct fake f;
	struct call k;

	durable_setup();
	fake_start(&f);
	fake_client(&f, &k, 0);
	fake_resume(&f, 1);
	range.addr = (uintptr_t)NO_REGION;
	range.len = page;
	sn.cookie = FAKE_COOKIE;
	sn.range = &range;
	sn.event = PIN_UFFD_EVENT_REMOVE;
	m.body_case = UFFDD__MSG__BODY_STALE;
	m.stale = &sn;
	fake_send(&f, &m);
	struct pollfd p = { .fd = pin_client_fd(k.c), .events = POLLIN };
	ck_assert_int_eq(poll(&p, 1, (int)(FAKE_WAIT_MS * test_time_scale())), 1);
	ck_assert_int_eq(pin_client_process(k.c), 1);
	ck_assert_uint_eq(resumes_logged, 1);
	ck_assert_int_eq(k.seen.n, 1);
	ck_assert_uint_eq(k.seen.cookie, FAKE_COOKIE);
	ck_assert_uint_eq(k.seen.addr, (uintptr_t)NO_REGION);
	ck_assert_uint_eq(k.seen.len, page);
	ck_assert_uint_eq(k.seen.event, PIN_UFFD_EVENT_REMOVE);
	ck_assert_int_eq(pin_client_process(k.c), 0);

	fake_resume(&f, 1);
	call_start(&k, call_region_add);
	expect_region_add(&f, &k, 2);
	fake_reply(&f, 2, 0);
	ck_assert_int_eq(call_join(&k), 0);
	ck_assert_uint_eq(resumes_logged, 2);
	expect_goodbye(&f, &k, 3);
	fake_client_free(&k);
	fake_end(&f);
}
END_TEST

/* The daemon is stopped (its successor would have kept the connection):
 * the call waiting fails with -ECONNRESET, and so does every later one at
 * once, without a round trip, until Goodbye; then -ENOTCONN.  A client
 * idle when the daemon stops finds out at its next call, before it sends. */
START_TEST(stop_fails_at_once)
{
	struct fake f;
	struct call k;

	durable_setup();
	fake_start(&f);
	fake_client(&f, &k, 0);
	call_start(&k, call_region_add);
	expect_region_add(&f, &k, 2);
	ck_assert_int_eq(close(f.sock), 0);
	f.sock = -1;
	ck_assert_int_eq(call_join(&k), -ECONNRESET);
	ck_assert_int_eq(call_region_add(&k), -ECONNRESET);
	ck_assert_int_eq(pin_client_prefetch(k.c, NO_REGION, page), -ECONNRESET);
	ck_assert_int_eq(pin_client_process(k.c), -ECONNRESET);
	ck_assert_int_ge(pin_client_fd(k.c), 0);
	ck_assert_int_eq(pin_client_goodbye(k.c), -ECONNRESET);
	ck_assert_int_eq(pin_client_fd(k.c), -ENOTCONN);
	ck_assert_int_eq(pin_client_prefetch(k.c, NO_REGION, page), -ENOTCONN);
	ck_assert_int_eq(pin_client_process(k.c), 0);
	fake_client_free(&k);

	fake_client(&f, &k, 0);
	ck_assert_int_eq(close(f.sock), 0);
	f.sock = -1;
	ck_assert_int_eq(pin_client_prefetch(k.c, NO_REGION, page), -ECONNRESET);
	ck_assert_int_eq(pin_client_process(k.c), -ECONNRESET);
	ck_assert_uint_eq(resumes_logged, 0);
	fake_client_free(&k);
	fake_end(&f);
}
END_TEST

/* With PIN_CLIENT_RECONNECT, a call after a stop reconnects; when no daemon
 * comes back within reconnect_ms it fails with the connect error, and the
 * next call tries again (it used to get -ENOTCONN for good).  An event loop
 * that finds the connection ended reconnects too. */
START_TEST(reconnect_after_stop)
{
	struct fake f;
	struct call k;

	durable_setup();
	fake_start(&f);
	fake_client(&f, &k, PIN_CLIENT_RECONNECT);
	fake_stop(&f);
	ck_assert_int_eq(pin_client_prefetch(k.c, NO_REGION, page), -ENOENT);
	ck_assert_int_eq(pin_client_fd(k.c), -ENOTCONN);
	fake_listen(&f);
	call_start(&k, call_prefetch);
	fake_accept(&f, 2);
	pin_proto_free(fake_recv(&f, UFFDD__MSG__BODY_PREFETCH, 3, NULL));
	fake_reply(&f, 3, 0);
	ck_assert_int_eq(call_join(&k), 0);
	ck_assert_int_ge(pin_client_fd(k.c), 0);

	ck_assert_int_eq(close(f.sock), 0);
	f.sock = -1;
	call_start(&k, call_process);
	fake_accept(&f, 4);
	ck_assert_int_eq(call_join(&k), 0);
	expect_goodbye(&f, &k, 5);
	fake_client_free(&k);
	fake_end(&f);
}
END_TEST

/* Names as a daemon of another version (or a fake one) may send them: a
 * newline, a terminal escape, a backslash, bytes >= 0x80, DEL and a control
 * byte; uffdctl shows each of those bytes as \xNN (uffdctl(8)). */
static const struct {
	const char *name, *shown;
} raw_names[] = {
	{ "a\nb", "a\\x0ab" },
	{ "\x1b[31mred", "\\x1b[31mred" },
	{ "back\\slash", "back\\x5cslash" },
	{ "caf\xc3\xa9\x80\xff", "caf\\xc3\\xa9\\x80\\xff" },
	{ "\x7f\x01", "\\x7f\\x01" },
};
#define RAW_NAMES PIN_ARRAY_SIZE(raw_names)

/* `uffdctl clients` against the fake daemon, which lists a session per name
 * of raw_names: one line per session, each name escaped, nothing but
 * printable ASCII and newlines printed. */
START_TEST(uffdctl_escapes_names)
{
	Uffdd__ClientInfo ci[RAW_NAMES], *cp[RAW_NAMES];
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	char cmd[512], line[256], want[128];
	struct fake f;
	size_t lines = 0;

	fake_start(&f);
	snprintf(cmd, sizeof(cmd), "'%s' --socket '%s' clients", getenv("UFFDCTL"), f.path);
	FILE *out = popen(cmd, "r");
	ck_assert_ptr_nonnull(out);
	fake_accept(&f, 1);
	Uffdd__Msg *lg = fake_recv(&f, UFFDD__MSG__BODY_LIST_GET, 2, NULL);
	ck_assert_int_eq(lg->list_get->what, UFFDD__LIST_GET__WHAT__CLIENTS);
	pin_proto_free(lg);
	for (size_t i = 0; i < RAW_NAMES; i++) {
		uffdd__client_info__init(&ci[i]);
		ci[i].session = i + 1;
		ci[i].pid = (int32_t)(100 + i);
		ci[i].uid = 1000;
		ci[i].name = (char *)raw_names[i].name;
		cp[i] = &ci[i];
	}
	rep.n_clients = RAW_NAMES;
	rep.clients = cp;
	m.has_seq = 1;
	m.seq = 2;
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	fake_send(&f, &m);
	/* uffdctl says Goodbye, then prints (its stdout, a pipe, is flushed at exit). */
	pin_proto_free(fake_recv(&f, UFFDD__MSG__BODY_GOODBYE, 3, NULL));
	fake_reply(&f, 3, 0);
	while (fgets(line, sizeof(line), out)) {
		ck_assert_msg(strchr(line, '\n'), "a line cut short: %s", line);
		for (const char *p = line; *p != '\n'; p++)
			ck_assert_msg(*p >= ' ' && *p <= '~', "byte %#x in: %s", (unsigned char)*p,
				      line);
		if (lines++ == 0)
			continue; /* the header */
		ck_assert_uint_le(lines - 1, RAW_NAMES);
		size_t i = lines - 2;
		snprintf(want, sizeof(want), "%8zu %8zu %6u %-20s ", i + 1, 100 + i, 1000u,
			 raw_names[i].shown);
		ck_assert_msg(!strncmp(line, want, strlen(want)), "\"%s\", not \"%s...\"", line,
			      want);
	}
	ck_assert_int_eq(pclose(out), 0);
	ck_assert_uint_eq(lines, 1 + RAW_NAMES);
	fake_end(&f);
}
END_TEST

/*
 * A connection over its uid's limits is answered with a Reply of seq 0,
 * -EDQUOT, and closed (uffdd(8), LIMITS).  When the daemon closes it with the
 * client's Hello unread, AF_UNIX sets ECONNRESET on the client's socket, and
 * the client's next receive gets that before the Reply queued for it: libpin
 * reads once more and says -EDQUOT.  The client (a child) is stopped while
 * the fake refuses, so its receive comes after the close whatever the
 * scheduler does.
 */
START_TEST(refusal_read_after_reset)
{
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	struct fake f;
	int st;

	fake_start(&f);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct pin_client_opts co = { .sz = sizeof(co), .socket = f.path, .name = "over" };
		struct pin_client *c;
		_exit(-pin_client_connect(&co, &c));
	}
	f.sock = accept4(f.lsock, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(f.sock, 0);
	/* Its Hello is queued here, unread. */
	struct pollfd p = { .fd = f.sock, .events = POLLIN };
	ck_assert_int_eq(poll(&p, 1, (int)(FAKE_WAIT_MS * test_time_scale())), 1);
	ck_assert_int_eq(kill(pid, SIGSTOP), 0);
	ck_assert_int_eq(waitpid(pid, &st, WUNTRACED), pid);
	ck_assert(WIFSTOPPED(st));
	rep.error = -EDQUOT;
	rep.text = "over a per-uid limit";
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	fake_send(&f, &m);
	/* Closed, and nothing listens: a client that took the reset for a
	 * daemon gone would fail to connect again, at once. */
	fake_stop(&f);
	ck_assert_int_eq(kill(pid, SIGCONT), 0);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(WEXITSTATUS(st), EDQUOT);
	ck_assert_int_eq(rmdir(f.dir), 0);
}
END_TEST

/* A case's bound: a daemon under valgrind starts and stops slowly. */
#define CASE_TIMEOUT_S 120

Suite *test_suite(void)
{
	Suite *s = suite_create("client");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, connect_env_and_errors, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, reconnect_after_kill, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, notice_drops_cached_pin, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, unreadable_source_refused, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, region_add_batch, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, goodbye_places_the_rest, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, eexist_counted, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, eagain_counted, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, uffdctl_shows_content, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, name_printable_only, CASE_TIMEOUT_S);
	/* Becoming another uid needs root; say so rather than pass. */
	if (geteuid() == 0)
		TEST_ADD_CASE(s, lists_seen_by_uid, CASE_TIMEOUT_S);
	else
		printf("lists_seen_by_uid: not run: needs root to become uid %d\n", SEEN_UID);
	TEST_ADD_CASE(s, regions_paged, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, pins_paged, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, resume_sends_again, FAKE_TIMEOUT_S);
	TEST_ADD_CASE(s, resume_committed_reply, FAKE_TIMEOUT_S);
	TEST_ADD_CASE(s, resume_twice, FAKE_TIMEOUT_S);
	TEST_ADD_CASE(s, resume_while_idle, FAKE_TIMEOUT_S);
	TEST_ADD_CASE(s, stop_fails_at_once, FAKE_TIMEOUT_S);
	TEST_ADD_CASE(s, reconnect_after_stop, FAKE_TIMEOUT_S);
	TEST_ADD_CASE(s, uffdctl_escapes_names, FAKE_TIMEOUT_S);
	TEST_ADD_CASE(s, refusal_read_after_reset, FAKE_TIMEOUT_S);
	return s;
}

const char *test_skip_reason(void)
{
	if (!getenv("UFFDD") || !getenv("UFFDCTL"))
		return "UFFDD and UFFDCTL (the binaries to test) are not set; run through meson "
		       "test";
	return test_uffd_skip_reason();
}
