// SPDX-License-Identifier: MIT
/*
 * Suite restore: the full cycle of examples/restore-workload through a real
 * uffdd (checkpoint, lazy restore, every byte checked), and working-set
 * record and replay with exact fault counts.  The workload's random touch
 * reads each page once in an order where no page follows the one before, so
 * every fault brings exactly one page: a restore without background push
 * takes one fault per page, and a replay of what it recorded none.  The
 * sequential record is this process reading the pages, waiting after each
 * fault until uffdd is idle, so that its faults are the readahead rule's.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

/* More pages than one WorkingSetGet reply (8192 runs) or one Replay
 * request carries: both go in several messages. */
#define MIB   72
#define PAGES (MIB * 256) /* of the checkpoint: a header page and the table */
#define PAGE  4096
/* Pages uffdd's background push places per worker round (UFFDD_PUSH_MAX). */
#define PUSH_RUN 256
/* uffdd's readahead: the largest window in pages (UFFDD_RA_MAX), and how many
 * windows past a fault it queues (AHEAD in uffdd/fault.c). */
#define RA_MAX	 512
#define RA_AHEAD 4
/* Polls of uffdd's threads, 1 ms apart, before giving up on it going idle. */
#define IDLE_TRIES 10000

struct run {
	int status; /* the exit code */
	char out[4096];
	char err[4096];
};

static struct test_daemon d;
static char ck[64];

/* Read all of fd into buf (NUL-terminated). */
static void slurp(int fd, char *buf, size_t len)
{
	size_t n = 0;
	ssize_t k;

	while (n + 1 < len && (k = read(fd, buf + n, len - 1 - n)) > 0)
		n += (size_t)k;
	buf[n] = '\0';
	close(fd);
}

/* Run restore-workload with args (NULL-terminated) and collect its output. */
static void workload(struct run *r, const char *const *args)
{
	const char *argv[16] = { "restore-workload" };
	int out[2], err[2], st, n = 1;

	for (; args[n - 1]; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(err, O_CLOEXEC), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		execv(getenv("RESTORE_WORKLOAD"), (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	/* Small outputs: a pipe holds them, so reading one after the other
	 * cannot block the child. */
	slurp(out[0], r->out, sizeof(r->out));
	slurp(err[0], r->err, sizeof(r->err));
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st));
	r->status = WEXITSTATUS(st);
}

/* The value of the `name VALUE` line; fails when there is none. */
static uint64_t figure(const struct run *r, const char *name)
{
	size_t len = strlen(name);

	for (const char *p = r->out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, name, len) && p[len] == ' ')
			return strtoull(p + len + 1, NULL, 10);
	ck_abort_msg("no %s in the output:\n%s\n%s", name, r->out, r->err);
	return 0;
}

static void restore(struct run *r, const char *touch, const char *a, const char *b)
{
	const char *args[] = { "restore", ck, "--socket", d.sock, "--touch", touch, a, b, NULL };

	workload(r, args);
}

static void setup(void)
{
	const char *args[] = { "checkpoint", ck, "--mib", "72", NULL };
	struct run r;

	test_daemon_start(&d, NULL);
	snprintf(ck, sizeof(ck), "/tmp/uffdd-replay-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(ck));
	workload(&r, args);
	ck_assert_msg(r.status == 0, "checkpoint: %s", r.err);
	ck_assert_uint_eq(figure(&r, "checkpoint_regions"), 1);
	ck_assert_uint_eq(figure(&r, "state_bytes"), (uint64_t)MIB << 20);
}

static void teardown(void)
{
	char p[128];

	test_daemon_stop(&d);
	for (const char *f = "manifest\0pages\0working-set\0"; *f; f += strlen(f) + 1) {
		snprintf(p, sizeof(p), "%s/%s", ck, f);
		unlink(p);
	}
	rmdir(ck);
}

/* Every page checked, every key found, all pages in place at the end. */
static void assert_complete(const struct run *r)
{
	ck_assert_msg(r->status == 0, "exit %d: %s%s", r->status, r->out, r->err);
	ck_assert_msg(strstr(r->out, "verified ok\n"), "%s", r->out);
	ck_assert_uint_eq(figure(r, "pages_checked"), PAGES);
	ck_assert_uint_eq(figure(r, "bad_pages"), 0);
	ck_assert_uint_eq(figure(r, "lookups_missing"), 0);
	ck_assert_uint_eq(figure(r, "pages_total"), PAGES);
	ck_assert_uint_eq(figure(r, "pages_populated"), PAGES);
	ck_assert_uint_eq(figure(r, "pages_copied"), PAGES);
	ck_assert_uint_eq(figure(r, "pages_zeroed"), 0);
}

START_TEST(lazy_restore_sequential_checks_every_byte)
{
	struct run r;

	restore(&r, "seq", NULL, NULL);
	assert_complete(&r);
	/* Each fault brings a readahead run, and the push may have been
	 * first: far fewer faults than pages. */
	ck_assert_uint_lt(figure(&r, "faults"), PAGES / 8);
}
END_TEST

/* The region page the random touch reads k-th: the header page, then table
 * pages from the middle on, STRIDE (7919, coprime with 18431) pages apart,
 * modulo 18431; table page i is region page i + 1. */
static uint64_t first_touched(uint64_t k)
{
	return k ? 1 + ((k - 1) * 7919 + (PAGES - 1) / 2) % (PAGES - 1) : 0;
}

/*
 * The most pages the faults of the random touch can place while uffdd pushes:
 * the workload has one thread, so one fault outstanding, and every worker
 * round that serves a fault then pushes one run of up to PUSH_RUN missing
 * pages in address order, ending at a page that is there.  The fastest
 * process faults again at once; a slower one leaves the push more rounds.
 */
static uint64_t most_pages_by_faults(void)
{
	bool *placed = calloc(PAGES, sizeof(*placed));
	uint64_t next = 0, faults = 0;

	ck_assert_ptr_nonnull(placed);
	for (uint64_t k = 0; k < PAGES; k++) {
		uint64_t p = first_touched(k);
		if (placed[p])
			continue;
		placed[p] = true;
		faults++;
		while (next < PAGES && placed[next])
			next++;
		for (uint64_t n = 0; n < PUSH_RUN && next < PAGES && !placed[next]; n++)
			placed[next++] = true;
	}
	free(placed);
	return faults;
}

START_TEST(lazy_restore_random_completes_by_push)
{
	struct run r;

	restore(&r, "random", NULL, NULL);
	assert_complete(&r);
	/* Every page went in once (pages_copied), by the push or by a fault.
	 * A fault brings at most one page, none when the push placed it
	 * first (eexist). */
	uint64_t by_faults = PAGES - figure(&r, "pages_pushed");
	ck_assert_uint_le(figure(&r, "faults") - figure(&r, "eexist"), by_faults);
	/* The push did all the rest: without it, every page is a fault. */
	ck_assert_uint_le(by_faults, most_pages_by_faults());
}
END_TEST

/* A replay of the working set recorded in ck places every page before the
 * process runs, and no fault is left. */
static void replay_all(const char *touch)
{
	struct run rep;

	restore(&rep, touch, "--no-push", "--replay");
	assert_complete(&rep);
	ck_assert_uint_eq(figure(&rep, "replay_pages"), PAGES);
	ck_assert_uint_eq(figure(&rep, "pages_pushed"), PAGES);
	ck_assert_uint_eq(figure(&rep, "faults"), 0);
}

/* A restore on demand only records the working set.  No page follows the
 * one before: one fault per page, no readahead. */
START_TEST(record_then_replay_random)
{
	struct run rec;

	restore(&rec, "random", "--no-push", "--record");
	assert_complete(&rec);
	ck_assert_uint_eq(figure(&rec, "faults"), PAGES);
	ck_assert_uint_eq(figure(&rec, "pages_pushed"), 0);
	ck_assert_uint_eq(figure(&rec, "working_set_pages"), PAGES);
	replay_all("random");
}
END_TEST

/*
 * The faults of a sequential read of n pages by uffdd's readahead rule
 * (uffdd/fault.c), when what it queues is placed before the next read: a
 * fault in or right after what the last one placed or queued doubles the
 * window, from 1 page up to RA_MAX; a fault with a window of 2 or more places
 * it and queues RA_AHEAD more windows after it.
 */
static uint64_t sequential_faults(uint64_t n)
{
	uint64_t faults = 0, window = 0;

	for (uint64_t i = 0; i < n; faults++) {
		window = !window ? 1 : 2 * window < RA_MAX ? 2 * window : RA_MAX;
		i = i + window < n ? i + window : n;
		if (window >= 2)
			i = i + RA_AHEAD * window < n ? i + RA_AHEAD * window : n;
	}
	return faults;
}

/* Where daemon_idle() says which thread is busy. */
struct busy {
	char *text;
	size_t len;
};

/* Whether thread tid of uffdd (pid) sleeps, if a worker: a worker sleeps
 * only in epoll_wait(), when it has nothing left to do (with readahead
 * queued its timeout is 0); an io_uring worker of its source reads
 * (uffdd/source-ra.c) waits for work in io_wq_worker.  A placer
 * (uffdd/crew.c) places only while a worker waits for it, so when every
 * worker sleeps, it does too.  Else says which thread is busy. */
static bool thread_idle(pid_t pid, const char *tid, void *arg)
{
	struct busy *b = arg;
	char wchan[64];

	if (test_daemon_placer(pid, tid))
		return true;
	test_task_read(pid, tid, "wchan", wchan, sizeof(wchan));
	if (!strcmp(wchan, "do_epoll_wait") || !strcmp(wchan, "io_wq_worker"))
		return true;
	snprintf(b->text, b->len, "thread %.20s in '%s'", tid, wchan);
	return false;
}

/* Whether every worker of uffdd sleeps; else says which thread is busy,
 * in busy. */
static bool daemon_idle(pid_t pid, char *busy, size_t len)
{
	struct busy b = { .text = busy, .len = len };

	busy[0] = '\0';
	test_each_task(pid, thread_idle, &b);
	return !busy[0];
}

static void wait_daemon_idle(pid_t pid)
{
	char busy[128] = "";

	for (int tries = 0; tries < IDLE_TRIES; tries++) {
		if (daemon_idle(pid, busy, sizeof(busy)))
			return;
		test_sleep_ms(1);
	}
	ck_abort_msg("uffdd never went idle: %s", busy);
}

/*
 * Restore on demand and record, reading the pages in order from this process
 * as the workload's sequential touch does, but after each fault waiting until
 * uffdd is idle: its readahead is then always ahead of the reader, and the
 * faults are the rule's.  Returns the faults uffdd counted: those seen here.
 */
static uint64_t record_sequential_settled(void)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d.sock };
	struct pin_client_stats st;
	struct pin_image *img;
	struct pin_client *c;
	struct pin_uffd *u;
	uint64_t faults = 0;

	ck_assert_int_eq(pin_image_open(ck, &img), 0);
	ck_assert_int_eq(pin_uffd_new(&uo, &u), 0);
	ck_assert_int_eq(pin_image_map_region(img, 0, u), 0);
	ck_assert_int_eq(pin_client_connect(&co, &c), 0);
	ck_assert_int_eq(pin_client_handover(c, u), 0);
	ck_assert_int_eq(pin_client_add_image_region(c, img, 0, PIN_CLIENT_REGION_NO_PUSH), 1);
	const struct pin_image_region *g = pin_image_region(img, 0);
	ck_assert_uint_eq(g->len, (uint64_t)PAGES * PAGE);
	volatile uint8_t *base = (volatile uint8_t *)(uintptr_t)g->addr;
	for (uint64_t i = 0; i < PAGES; i++) {
		unsigned char in;
		ck_assert_int_eq(mincore((void *)(uintptr_t)(base + i * PAGE), PAGE, &in), 0);
		(void)base[i * PAGE];
		if (in & 1)
			continue;
		faults++;
		wait_daemon_idle(d.pid);
	}
	uint8_t *want = malloc(g->len);
	ck_assert_ptr_nonnull(want);
	ck_assert_int_eq(pin_image_read(img, g->addr, want, g->len), 0);
	ck_assert(!memcmp((const void *)(uintptr_t)g->addr, want, g->len));
	free(want);
	ck_assert_int_eq(pin_client_stats(c, 0, &st), 0);
	ck_assert_uint_eq(st.faults, faults);
	ck_assert_uint_eq(st.pages_copied, PAGES);
	ck_assert_uint_eq(st.pages_pushed, 0);
	ck_assert_int_eq(pin_client_working_set_save(c, ck), PAGES);
	pin_client_free(c);
	ck_assert_int_eq(munmap((void *)(uintptr_t)g->addr, g->len), 0);
	pin_uffd_free(u);
	pin_image_free(img);
	return faults;
}

START_TEST(record_then_replay_sequential)
{
	ck_assert_uint_eq(record_sequential_settled(), sequential_faults(PAGES));
	replay_all("seq");
}
END_TEST

/* Write a working set of n one-page runs, run k at region page page_of(k),
 * restore with it replayed and random touch, and check that exactly those
 * pages were placed and every other one faulted. */
static void replay_pages(uint64_t (*page_of)(uint64_t k), uint64_t n)
{
	char p[128];
	struct run r;
	FILE *f;

	snprintf(p, sizeof(p), "%s/working-set", ck);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "uffdd-working-set 1\npage-size 4096\n");
	for (uint64_t k = 0; k < n; k++)
		fprintf(f, "run 0x%" PRIx64 " 0x1000\n",
			(uint64_t)(0x500000000000ull + page_of(k) * 4096));
	fprintf(f, "end %" PRIu64 "\n", n);
	ck_assert_int_eq(fclose(f), 0);
	restore(&r, "random", "--no-push", "--replay");
	assert_complete(&r);
	ck_assert_uint_eq(figure(&r, "replay_pages"), n);
	ck_assert_uint_eq(figure(&r, "faults"), PAGES - n);
}

/* A partial working set: only what it names is placed, the rest faults.
 * The 17 pages the random touch reads first. */
START_TEST(replay_of_a_partial_set_leaves_the_rest_to_faults)
{
	replay_pages(first_touched, 17);
}
END_TEST

static uint64_t every_other(uint64_t k)
{
	return 2 * k;
}

/* 9216 runs that no merging joins, in two Replay requests. */
START_TEST(replay_of_every_other_page)
{
	replay_pages(every_other, PAGES / 2);
}
END_TEST

START_TEST(a_changed_page_is_caught)
{
	char p[128];
	struct run r;
	uint8_t b;

	snprintf(p, sizeof(p), "%s/pages", ck);
	int fd = open(p, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	/* A byte in table page 100 (page 101 of the region). */
	ck_assert_int_eq(pread(fd, &b, 1, 101 * 4096 + 123), 1);
	b ^= 0x40;
	ck_assert_int_eq(pwrite(fd, &b, 1, 101 * 4096 + 123), 1);
	close(fd);
	restore(&r, "random", NULL, NULL);
	ck_assert_int_eq(r.status, 1);
	ck_assert_uint_eq(figure(&r, "bad_pages"), 1);
	ck_assert_msg(strstr(r.out, "verified FAILED\n"), "%s", r.out);
	ck_assert_msg(strstr(r.err, "page 100 "), "%s", r.err);
}
END_TEST

/* A checkpoint of other memory: the workload refuses it before it maps. */
START_TEST(a_foreign_checkpoint_is_refused)
{
	uint8_t *p =
		mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct pin_image_write_opts o = { .sz = sizeof(o), .addr = (uintptr_t)p, .len = 4 * 4096 };
	struct run r;

	ck_assert_ptr_ne(p, MAP_FAILED);
	memset(p, 0x5a, 4 * 4096);
	ck_assert_int_eq(pin_image_write(0, ck, &o), 1);
	restore(&r, "seq", NULL, NULL);
	ck_assert_msg(r.status == 3, "exit %d: %s%s", r.status, r.out, r.err);
	ck_assert_msg(strstr(r.err, "not a checkpoint of restore-workload's state"), "%s", r.err);
	munmap(p, 4 * 4096);
}
END_TEST

START_TEST(replay_without_a_working_set_fails)
{
	struct run r;

	restore(&r, "seq", "--replay", NULL);
	ck_assert_msg(r.status == 3, "exit %d: %s%s", r.status, r.out, r.err);
	ck_assert_msg(strstr(r.err, "pin_client_working_set_replay: No such file or directory"),
		      "%s", r.err);
}
END_TEST

START_TEST(a_malformed_working_set_is_refused)
{
	static const char *const bad[] = {
		"uffdd-working-set 2\npage-size 4096\nend 0\n",
		"uffdd-working-set 1\npage-size 65536\nend 0\n",
		"uffdd-working-set 1\npage-size 4096\nrun 0x500000000800 0x1000\nend 1\n",
		"uffdd-working-set 1\npage-size 4096\nrun 0x500000000000 0x0\nend 1\n",
		"uffdd-working-set 1\npage-size 4096\nrun 0xfffffffffffff000 0x2000\nend 1\n",
		"uffdd-working-set 1\npage-size 4096\nrun 0x500000000000 0x1000\nend 2\n",
		"uffdd-working-set 1\npage-size 4096\nrun 0x500000000000 0x1000\n",
	};
	static const char *const line[] = { "line 1:", "line 2:", "line 3:", "line 3:",
					    "line 3:", "line 4:", "line 4:" };
	char p[128];

	snprintf(p, sizeof(p), "%s/working-set", ck);
	for (size_t i = 0; i < PIN_ARRAY_SIZE(bad); i++) {
		struct run r;
		FILE *f = fopen(p, "w");
		ck_assert_ptr_nonnull(f);
		fputs(bad[i], f);
		ck_assert_int_eq(fclose(f), 0);
		restore(&r, "seq", "--replay", NULL);
		ck_assert_msg(r.status == 3, "%zu: exit %d: %s%s", i, r.status, r.out, r.err);
		ck_assert_msg(strstr(r.err, line[i]) && strstr(r.err, "Bad message"), "%zu: %s", i,
			      r.err);
	}
}
END_TEST

/* The daemon's answers to the requests themselves, before any restore. */
START_TEST(working_set_requests_are_checked_by_the_daemon)
{
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d.sock };
	Uffdd__WorkingSetGet g = UFFDD__WORKING_SET_GET__INIT;
	Uffdd__Range range = UFFDD__RANGE__INIT, *v[1] = { &range };
	Uffdd__Replay rp = UFFDD__REPLAY__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	Uffdd__Msg *rep = NULL;
	struct pin_client *c;

	ck_assert_int_eq(pin_client_connect(&co, &c), 0);
	/* Nothing recorded yet: an empty set, and nothing past its end. */
	req.body_case = UFFDD__MSG__BODY_WORKING_SET_GET;
	req.working_set_get = &g;
	ck_assert_int_eq(pin_client_request(c, &req, &rep), 0);
	ck_assert_uint_eq(rep->reply->n_working_set, 0);
	ck_assert_uint_eq(rep->reply->working_set_total, 0);
	pin_proto_free(rep);
	g.has_from = 1;
	g.from = 1;
	ck_assert_int_eq(pin_client_request(c, &req, NULL), -ERANGE);
	/* No userfaultfd handed over: nothing to place pages with. */
	range.addr = 0x500000000000ull;
	range.len = 4096;
	rp.n_ranges = 1;
	rp.ranges = v;
	req.body_case = UFFDD__MSG__BODY_REPLAY;
	req.replay = &rp;
	ck_assert_int_eq(pin_client_request(c, &req, NULL), -EBADFD);
	ck_assert_int_eq(pin_client_working_set_save(c, "/nonexistent/dir"), -ENOENT);
	/* An empty set is a file like any other, and replays as nothing. */
	char p[128], buf[128] = "";
	ck_assert_int_eq(pin_client_working_set_save(c, ck), 0);
	snprintf(p, sizeof(p), "%s/working-set", ck);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(read(fd, buf, sizeof(buf) - 1), 41);
	close(fd);
	ck_assert_str_eq(buf, "uffdd-working-set 1\npage-size 4096\nend 0\n");
	ck_assert_int_eq(pin_client_working_set_replay(c, ck), 0);
	pin_client_free(c);
}
END_TEST

/* The decoder's rules for the new messages, without a daemon. */
static int decode(Uffdd__Msg *m)
{
	uint8_t buf[256];
	Uffdd__Msg *out = NULL;
	size_t len = uffdd__msg__pack(m, buf);
	int r = pin_proto_decode(buf, len, 0, &out);

	pin_proto_free(out);
	return r;
}

START_TEST(replay_and_working_set_ranges_are_checked)
{
	Uffdd__Range ok = UFFDD__RANGE__INIT, odd = UFFDD__RANGE__INIT, wrap = UFFDD__RANGE__INIT;
	Uffdd__Range *v[2] = { &ok, &ok };
	Uffdd__Replay rp = UFFDD__REPLAY__INIT;
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;

	ok.addr = 0x10000;
	ok.len = 0x1000;
	odd.addr = 0x10800;
	odd.len = 0x1000;
	wrap.addr = UINT64_MAX & ~0xfffull;
	wrap.len = 0x2000;
	m.body_case = UFFDD__MSG__BODY_REPLAY;
	m.replay = &rp;
	ck_assert_int_eq(decode(&m), -EINVAL); /* no range */
	rp.n_ranges = 2;
	rp.ranges = v;
	ck_assert_int_eq(decode(&m), 0);
	v[1] = &odd;
	ck_assert_int_eq(decode(&m), -EINVAL);
	v[1] = &wrap;
	ck_assert_int_eq(decode(&m), -EINVAL);

	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	rep.n_working_set = 2;
	rep.working_set = v;
	v[1] = &ok;
	rep.has_working_set_total = 1;
	rep.working_set_total = 2;
	ck_assert_int_eq(decode(&m), 0);
	rep.working_set_total = 1; /* more runs than it says there are */
	ck_assert_int_eq(decode(&m), -EINVAL);
	rep.working_set_total = 5;
	v[0] = &odd;
	ck_assert_int_eq(decode(&m), -EINVAL);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("replay");
	TCase *tc = tcase_create("restore-workload");
	TCase *tp = tcase_create("decoding");

	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, lazy_restore_sequential_checks_every_byte);
	tcase_add_test(tc, lazy_restore_random_completes_by_push);
	tcase_add_test(tc, record_then_replay_random);
	tcase_add_test(tc, record_then_replay_sequential);
	tcase_add_test(tc, replay_of_a_partial_set_leaves_the_rest_to_faults);
	tcase_add_test(tc, replay_of_every_other_page);
	tcase_add_test(tc, a_changed_page_is_caught);
	tcase_add_test(tc, a_foreign_checkpoint_is_refused);
	tcase_add_test(tc, replay_without_a_working_set_fails);
	tcase_add_test(tc, a_malformed_working_set_is_refused);
	tcase_add_test(tc, working_set_requests_are_checked_by_the_daemon);
	suite_add_tcase(s, tc);
	tcase_add_test(tp, replay_and_working_set_ranges_are_checked);
	suite_add_tcase(s, tp);
	return s;
}

const char *test_skip_reason(void)
{
	if (sysconf(_SC_PAGESIZE) != 4096)
		return "the workload's checkpoint assumes 4 KiB pages";
	if (access("/dev/userfaultfd", R_OK | W_OK) < 0 && geteuid() != 0)
		return "userfaultfd needs /dev/userfaultfd access or root";
	return NULL;
}
