// SPDX-License-Identifier: MIT
/*
 * Suite restore, area chain: incremental checkpoints (issue 17, item 2).  A
 * workload process tracks its region with an async write-protect userfaultfd
 * and, step by step, writes known pages, writes zeros, discards pages
 * (MADV_DONTNEED) and reads some discarded ones back (the zero page); after
 * each step a checkpoint with the one before as its parent.  Each must hold
 * exactly the pages a model of the steps says changed; the chain of five
 * must read back, restore lazily through a real uffdd in random order, and
 * squash into one image, byte for byte; damaged chains (a parent missing,
 * swapped for another checkpoint, a cycle) are refused naming the file.
 * After fork and mremap the record does not follow (no EVENT_FORK nor
 * EVENT_REMAP), so the region goes in whole: checked too; and the caller's
 * list of written pages in place of the kernel's record.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

#define REGION	0x530000000000ull /* below ASan's allocator (0x600000000000) */
#define REGION2 0x531000000000ull /* where the mremap case moves it */
#define PG	4096ull
#define NPAGES	512
#define LEN	(NPAGES * PG)
#define CHAIN	5 /* a full checkpoint and four incremental ones */
#define MAX_LOG 512

enum pstate {
	P_PRESENT,  /* a page of its own */
	P_ABSENT,   /* discarded: no page, reads zero */
	P_ZEROPAGE, /* discarded, then read: the shared zero page */
};

struct model {
	int64_t seed[NPAGES]; /* the pattern's seed of each page; -1: zero bytes */
	enum pstate st[NPAGES];
	bool written[NPAGES]; /* since the last checkpoint */
};

static uint64_t seed_base;
static char tmp[64], last_log[MAX_LOG];
static char ck[CHAIN][96];
/* The content at each checkpoint, and the pages each holds. */
static int64_t snap[CHAIN][NPAGES];
static bool held[CHAIN][NPAGES];

static void capture_log(enum pin_log_level level, const char *msg, void *userdata)
{
	snprintf(last_log, sizeof(last_log), "%s", msg);
}

static void fill(uint8_t *base, size_t p, int64_t seed, uint64_t at)
{
	uint64_t *w = (uint64_t *)(base + p * PG);

	for (size_t i = 0; i < PG / 8; i++)
		w[i] = seed < 0 ? 0 : test_pattern(at + p * PG + i * 8, (uint64_t)seed);
}

static void set_page(struct model *m, uint8_t *base, size_t p, int64_t seed)
{
	m->seed[p] = seed;
	m->st[p] = P_PRESENT;
	m->written[p] = true;
	if (base)
		fill(base, p, seed, REGION);
}

static void discard(struct model *m, uint8_t *base, size_t p, bool read_back)
{
	m->seed[p] = -1;
	m->st[p] = read_back ? P_ZEROPAGE : P_ABSENT;
	if (!base)
		return;
	if (madvise(base + p * PG, PG, MADV_DONTNEED) < 0)
		abort();
	if (read_back)
		(void)*(volatile uint8_t *)(base + p * PG);
}

/* Step k on the model, and on the memory at base when not NULL. */
static void step(struct model *m, uint8_t *base, int k)
{
	for (size_t p = 0; p < NPAGES; p++) {
		if (!k) {
			set_page(m, base, p, p % 9 ? (int64_t)(seed_base + 0) : -1);
			continue;
		}
		if ((p * 13 + (size_t)k * 7) % 10 == 0)
			set_page(m, base, p, (int64_t)(seed_base + (uint64_t)k));
		if ((p * 5 + (size_t)k) % 41 == 0)
			set_page(m, base, p, -1);
		if ((p + 3 * (size_t)k) % 37 == 0)
			discard(m, base, p, false);
		if ((p + (size_t)k) % 53 == 0)
			discard(m, base, p, true);
	}
}

/* ---- the workload ---- */

struct workload {
	pid_t pid;
	int cmd, ack;
};

/* Commands: a step number ('0' + k), 'f' fork (the ack carries the new
 * pid), 'm' mremap to REGION2, each acknowledged; 'q' quit. */
static int workload_main(int cmd, int ack)
{
	struct pin_uffd_opts o = {
		.sz = sizeof(o),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_UNPOPULATED,
	};
	static struct model m;
	struct pin_uffd *u;
	uint8_t *base = mmap((void *)(uintptr_t)REGION, LEN, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	char c;

	REQUIRE(base == (void *)(uintptr_t)REGION);
	REQUIRE(madvise(base, LEN, MADV_NOHUGEPAGE) == 0);
	REQUIRE(pin_uffd_new(&o, &u) == 0);
	REQUIRE(pin_uffd_register(u, base, LEN, PIN_UFFD_REGISTER_WP, NULL) == 0);
	REQUIRE(pin_uffd_writeprotect(u, base, LEN, PIN_UFFD_WP) == 0);
	while (read(cmd, &c, 1) == 1) {
		pid_t child = 0;

		if (c == 'q')
			return 0;
		if (c == 'f') {
			pid_t self = getpid();

			child = fork();
			REQUIRE(child >= 0);
			if (!child) {
				/* Stays as it is until the workload goes. */
				if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != self)
					_exit(1);
				for (;;)
					pause();
			}
		} else if (c == 'm') {
			REQUIRE(mremap(base, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED,
				       (void *)(uintptr_t)REGION2) == (void *)(uintptr_t)REGION2);
		} else {
			step(&m, base, c - '0');
		}
		REQUIRE(write(ack, &child, sizeof(child)) == sizeof(child));
	}
	return 1;
}

static struct workload workload_start(void)
{
	int cmd[2], ack[2];
	struct workload w;

	seed_base = test_seed();
	ck_assert_int_eq(pipe2(cmd, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(ack, O_CLOEXEC), 0);
	w.pid = fork();
	ck_assert_int_ge(w.pid, 0);
	if (!w.pid) {
		close(cmd[1]);
		close(ack[0]);
		_exit(workload_main(cmd[0], ack[1]));
	}
	close(cmd[0]);
	close(ack[1]);
	w.cmd = cmd[1];
	w.ack = ack[0];
	return w;
}

/* Send a command; the pid its ack carries. */
static pid_t workload_do(const struct workload *w, char c)
{
	pid_t child = -1;

	ck_assert_int_eq(write(w->cmd, &c, 1), 1);
	ck_assert(test_read_all(w->ack, &child, sizeof(child)));
	return child;
}

static void workload_stop(struct workload *w)
{
	char q = 'q';
	int st;

	ck_assert_int_eq(write(w->cmd, &q, 1), 1);
	close(w->cmd);
	close(w->ack);
	ck_assert_int_eq(waitpid(w->pid, &st, 0), w->pid);
	ck_assert_int_eq(st, 0);
}

/* ---- checks ---- */

/* Page p of an image read back is snapshot s's (content at address at). */
static void assert_page(const struct pin_image *img, uint64_t at, size_t p, int64_t seed,
			const char *what)
{
	uint64_t buf[PG / 8];

	ck_assert_int_eq(pin_image_read(img, at + p * PG, buf, PG), 0);
	for (size_t i = 0; i < PG / 8; i++) {
		uint64_t want =
			seed < 0 ? 0 : test_pattern(REGION + p * PG + i * 8, (uint64_t)seed);

		if (buf[i] != want)
			ck_abort_msg("%s: page %zu word %zu: %#llx, not %#llx", what, p, i,
				     (unsigned long long)buf[i], (unsigned long long)want);
	}
}

/* The newest image of the chain at dir holds exactly the pages the model
 * says changed, with data exactly where they are not zero. */
static void assert_held(const char *dir, const struct model *m, uint64_t at, bool whole)
{
	struct pin_image_link *v;
	size_t n, nheld = 0;
	char path[200];
	struct stat st;

	ck_assert_int_eq(pin_image_chain_open(dir, &v, &n), 0);
	for (size_t p = 0; p < NPAGES; p++) {
		const struct pin_image_segment *s = pin_image_find_segment(v[0].img, at + p * PG);
		bool want = whole || m->written[p] || m->st[p] != P_PRESENT;

		nheld += want;
		ck_assert_ptr_nonnull(s);
		ck_assert_msg(!(s->flags & PIN_IMAGE_SEG_PARENT) == want,
			      "%s: page %zu (state %d, written %d) %s", dir, p, m->st[p],
			      m->written[p], want ? "not held" : "held");
		if (want)
			ck_assert_msg(!!(s->flags & PIN_IMAGE_SEG_DATA) == (m->seed[p] >= 0),
				      "%s: page %zu: data %d, seed %lld", dir, p,
				      !!(s->flags & PIN_IMAGE_SEG_DATA), (long long)m->seed[p]);
	}
	pin_image_chain_free(v, n);
	/* The held pages one after the other, nothing else. */
	snprintf(path, sizeof(path), "%s/pages", dir);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_size, (off_t)(nheld * PG));
}

/* The chain of checkpoints ck[0..CHAIN), the model's content at each in snap. */
static void make_chain(struct workload *w, struct model *m)
{
	struct pin_image_write_opts o = {
		.sz = sizeof(o), .flags = PIN_IMAGE_WRITE_REARM, .addr = REGION, .len = LEN
	};

	snprintf(tmp, sizeof(tmp), "/tmp/test-chain-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	for (int k = 0; k < CHAIN; k++) {
		workload_do(w, (char)('0' + k));
		step(m, NULL, k);
		snprintf(ck[k], sizeof(ck[k]), "%s/ck%d", tmp, k);
		o.parent = k ? ck[k - 1] : NULL;
		ck_assert_int_eq(pin_image_write(w->pid, ck[k], &o), 1);
		assert_held(ck[k], m, REGION, !k);
		memcpy(snap[k], m->seed, sizeof(snap[k]));
		for (size_t p = 0; p < NPAGES; p++)
			held[k][p] = !k || m->written[p] || m->st[p] != P_PRESENT;
		memset(m->written, 0, sizeof(m->written));
	}
}

static void rm_tree(const char *dir)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* tmp/name, in one of a few buffers: two may be used at once. */
static const char *in_tmp(const char *name)
{
	static char path[4][160];
	static unsigned int next;
	char *p = path[next++ % 4];

	snprintf(p, sizeof(path[0]), "%s/%s", tmp, name);
	return p;
}

/* Pages of the last checkpoint that read zero while an older one holds data
 * for them. */
static size_t discarded_over_data(void)
{
	size_t n = 0;

	for (size_t p = 0; p < NPAGES; p++) {
		bool older = false;

		for (int k = 0; k < CHAIN - 1; k++)
			older |= snap[k][p] >= 0;
		n += snap[CHAIN - 1][p] < 0 && older;
	}
	return n;
}

/* Every link of the chain reads back as its step left the memory. */
START_TEST(chain_reads_back)
{
	static struct model m;
	struct workload w = workload_start();

	make_chain(&w, &m);
	workload_stop(&w);
	for (int k = 0; k < CHAIN; k++) {
		struct pin_image *img;

		ck_assert_int_eq(pin_image_open(ck[k], &img), 0);
		ck_assert_uint_eq(img->nr_parents, (size_t)k);
		for (size_t p = 0; p < NPAGES; p++)
			assert_page(img, REGION, p, snap[k][p], ck[k]);
		pin_image_free(img);
	}
	/* Discarded pages the parents hold data for read zero: some there are. */
	ck_assert_uint_gt(discarded_over_data(), 0);
	rm_tree(tmp);
}
END_TEST

/* The newest image holding each page: how many uffdd regions a restore
 * adds (one per run of pages of one source, zero pages apart). */
static size_t expected_runs(void)
{
	size_t runs = 0;
	int prev = -2;

	for (size_t p = 0; p < NPAGES; p++) {
		int key = -1;

		for (int k = CHAIN - 1; k >= 0 && snap[CHAIN - 1][p] >= 0; k--)
			if (held[k][p]) {
				key = k;
				break;
			}
		runs += key != prev;
		prev = key;
	}
	return runs;
}

/* Restored lazily through uffdd, pages touched in random order. */
START_TEST(chain_restores_lazily)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .name = "chain" };
	static struct model m;
	struct workload w = workload_start();
	struct test_daemon d;
	struct pin_image *img;
	struct pin_client *c;
	struct pin_uffd *u;
	size_t order[NPAGES];
	int added;

	make_chain(&w, &m);
	workload_stop(&w);
	test_daemon_start(&d, NULL);
	co.socket = d.sock;
	ck_assert_int_eq(pin_image_open(ck[CHAIN - 1], &img), 0);
	ck_assert_int_eq(pin_uffd_new(&uo, &u), 0);
	ck_assert_int_eq(pin_image_map_region(img, 0, u), 0);
	ck_assert_int_eq(pin_client_connect(&co, &c), 0);
	ck_assert_int_eq(pin_client_handover(c, u), 0);
	added = pin_client_add_image_region(c, img, 0, PIN_CLIENT_REGION_NO_PUSH);
	ck_assert_int_eq(added, (int)expected_runs());
	test_permutation(order, NPAGES, seed_base | 1);
	for (size_t i = 0; i < NPAGES; i++) {
		const uint64_t *wd = (const uint64_t *)(uintptr_t)(REGION + order[i] * PG);
		int64_t seed = snap[CHAIN - 1][order[i]];

		for (size_t j = 0; j < PG / 8; j++) {
			uint64_t want = seed < 0 ? 0
						 : test_pattern(REGION + order[i] * PG + j * 8,
								(uint64_t)seed);
			if (wd[j] != want)
				ck_abort_msg("restored page %zu word %zu: %#llx, not %#llx",
					     order[i], j, (unsigned long long)wd[j],
					     (unsigned long long)want);
		}
	}
	pin_client_free(c);
	pin_uffd_free(u);
	ck_assert_int_eq(munmap((void *)(uintptr_t)REGION, LEN), 0);
	pin_image_free(img);
	test_daemon_stop(&d);
	rm_tree(tmp);
}
END_TEST

/* Squashed into one full image: the same bytes, a pages file of its own. */
START_TEST(chain_squashes)
{
	static struct model m;
	struct workload w = workload_start();
	struct pin_image *img, *sq;
	struct stat st;

	make_chain(&w, &m);
	workload_stop(&w);
	ck_assert_int_eq(pin_image_open(ck[CHAIN - 1], &img), 0);
	ck_assert_int_eq(pin_image_save(img, in_tmp("squashed")), 0);
	ck_assert_int_eq(pin_image_save(img, in_tmp("squashed")), -EEXIST);
	pin_image_free(img);
	ck_assert_int_eq(pin_image_open(in_tmp("squashed"), &sq), 0);
	ck_assert_uint_eq(sq->nr_parents, 0);
	ck_assert_ptr_null(sq->parent_path);
	for (size_t p = 0; p < NPAGES; p++)
		assert_page(sq, REGION, p, snap[CHAIN - 1][p], "squashed");
	pin_image_free(sq);
	/* Its pages file holds the non-zero pages, nothing of the rest. */
	size_t data = 0;
	for (size_t p = 0; p < NPAGES; p++)
		data += snap[CHAIN - 1][p] >= 0;
	ck_assert_int_eq(stat(in_tmp("squashed/pages"), &st), 0);
	ck_assert_int_eq(st.st_size, LEN);
	ck_assert_int_ge(st.st_blocks * 512, (long long)(data * PG));
	ck_assert_int_le(st.st_blocks * 512, (long long)((data + 8) * PG));
	rm_tree(tmp);
}
END_TEST

/* After fork (no EVENT_FORK) and mremap (no EVENT_REMAP) the record is gone
 * with the registration: the region goes in whole, and reads right. */
START_TEST(chain_fork_and_mremap_whole)
{
	struct pin_image_write_opts o = {
		.sz = sizeof(o), .flags = PIN_IMAGE_WRITE_REARM, .addr = REGION, .len = LEN
	};
	static struct model m;
	struct workload w = workload_start();
	struct pin_image *img;
	pid_t child;

	make_chain(&w, &m);
	child = workload_do(&w, 'f');
	ck_assert_int_gt(child, 0);
	o.parent = ck[CHAIN - 1];
	ck_assert_int_eq(pin_image_write(child, in_tmp("fork"), &o), 1);
	assert_held(in_tmp("fork"), &m, REGION, true);
	/* The parent's own record still holds: nothing written since. */
	ck_assert_int_eq(pin_image_write(w.pid, in_tmp("same"), &o), 1);
	assert_held(in_tmp("same"), &m, REGION, false);
	workload_do(&w, 'm');
	o.addr = REGION2;
	o.parent = in_tmp("same");
	ck_assert_int_eq(pin_image_write(w.pid, in_tmp("moved"), &o), 1);
	assert_held(in_tmp("moved"), &m, REGION2, true);
	ck_assert_int_eq(pin_image_open(in_tmp("moved"), &img), 0);
	for (size_t p = 0; p < NPAGES; p++)
		assert_page(img, REGION2, p, snap[CHAIN - 1][p], "moved");
	pin_image_free(img);
	workload_stop(&w);
	rm_tree(tmp);
}
END_TEST

/* The caller's list of written pages (as pin_client_dirty_get() of a
 * synchronous WP region gives) in place of the kernel's record: the same
 * pages held. */
START_TEST(chain_written_list)
{
	struct pin_image_write_opts o = { .sz = sizeof(o), .addr = REGION, .len = LEN };
	struct pin_pagemap_range v[NPAGES];
	static struct model m;
	struct workload w = workload_start();
	struct pin_image *img;
	size_t n = 0;

	make_chain(&w, &m);
	workload_do(&w, (char)('0' + CHAIN));
	step(&m, NULL, CHAIN);
	for (size_t p = 0; p < NPAGES; p++) {
		if (!m.written[p])
			continue;
		if (n && v[n - 1].addr + v[n - 1].len == REGION + p * PG)
			v[n - 1].len += PG;
		else
			v[n++] = (struct pin_pagemap_range){ REGION + p * PG, PG };
	}
	ck_assert_uint_gt(n, 1);
	o.parent = ck[CHAIN - 1];
	o.written = v;
	o.nr_written = n;
	ck_assert_int_eq(pin_image_write(w.pid, in_tmp("listed"), &o), 1);
	assert_held(in_tmp("listed"), &m, REGION, false);
	ck_assert_int_eq(pin_image_open(in_tmp("listed"), &img), 0);
	for (size_t p = 0; p < NPAGES; p++)
		assert_page(img, REGION, p, m.seed[p], "listed");
	pin_image_free(img);
	/* Unsorted, or not whole pages: refused. */
	v[0].len = 1;
	ck_assert_int_eq(pin_image_write(w.pid, in_tmp("bad"), &o), -EINVAL);
	v[0] = v[1];
	ck_assert_int_eq(pin_image_write(w.pid, in_tmp("bad"), &o), -EINVAL);
	workload_stop(&w);
	rm_tree(tmp);
}
END_TEST

/* ck[k]'s manifest with its parent line replaced by line. */
static void set_parent_line(int k, const char *line)
{
	char path[160], *text = NULL, *p, *e;
	size_t len = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/manifest", ck[k]);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_gt(getdelim(&text, &len, '\0', f), 0);
	fclose(f);
	p = strstr(text, "\nparent ");
	ck_assert_ptr_nonnull(p);
	e = strchr(p + 1, '\n');
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "%.*s\n%s%s", (int)(p - text), text, line, e + 1);
	fclose(f);
	free(text);
}

static void refused(int k, int err, const char *names)
{
	struct pin_image *img = (void *)1;

	last_log[0] = '\0';
	ck_assert_int_eq(pin_image_open(ck[k], &img), err);
	ck_assert_ptr_eq(img, (void *)1);
	ck_assert_msg(strstr(last_log, names), "log \"%s\" does not name %s", last_log, names);
}

START_TEST(chain_damaged_refused)
{
	struct pin_image_write_opts o = { .sz = sizeof(o), .addr = REGION, .len = LEN };
	static struct model m;
	struct workload w = workload_start();
	struct pin_image *img;
	char want[400], id2[PIN_IMAGE_ID_LEN + 1];

	make_chain(&w, &m);
	pin_log_set(capture_log, NULL);

	/* A parent missing. */
	ck_assert_int_eq(rename(ck[2], in_tmp("away")), 0);
	snprintf(want, sizeof(want), "%s/manifest names parent %s/../ck2", ck[3], ck[3]);
	refused(4, -ENOENT, want);
	ck_assert_int_eq(rename(in_tmp("away"), ck[2]), 0);

	/* A parent swapped for another checkpoint of the same process. */
	ck_assert_int_eq(rename(ck[2], in_tmp("away")), 0);
	ck_assert_int_eq(pin_image_write(w.pid, ck[2], &o), 1);
	snprintf(want, sizeof(want), "%s/manifest names parent %s with id", ck[3], ck[2]);
	refused(4, -ESTALE, want);
	rm_tree(ck[2]);
	ck_assert_int_eq(rename(in_tmp("away"), ck[2]), 0);
	ck_assert_int_eq(pin_image_open(ck[4], &img), 0);
	pin_image_free(img);

	/* Its own parent, or an older image of the parent's chain, is refused
	 * when written. */
	o.parent = ck[3];
	ck_assert_int_eq(pin_image_write(w.pid, ck[3], &o), -EINVAL);
	ck_assert_msg(strstr(last_log, "its own parent"), "%s", last_log);
	ck_assert_int_eq(pin_image_write(w.pid, ck[0], &o), -EINVAL);
	snprintf(want, sizeof(want),
		 "%s: an image cannot be its own parent (it is %s of the chain)", ck[0], ck[0]);
	ck_assert_msg(strstr(last_log, want), "log \"%s\" does not name %s", last_log, want);
	ck_assert_int_eq(pin_image_open(ck[3], &img), 0);
	pin_image_free(img);
	o.parent = NULL;

	/* A cycle: ck1 names ck2 (with its right id) as its parent. */
	ck_assert_int_eq(pin_image_open(ck[2], &img), 0);
	memcpy(id2, img->id, sizeof(id2));
	pin_image_free(img);
	snprintf(want, sizeof(want), "parent %s ../ck2\n", id2);
	set_parent_line(1, want);
	snprintf(want, sizeof(want), "%s/manifest names parent %s, which is %s again", ck[1], ck[2],
		 ck[2]);
	refused(2, -ELOOP, want);

	pin_log_set(NULL, NULL);
	workload_stop(&w);
	rm_tree(tmp);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("chain");

	TEST_ADD_CASE(s, chain_reads_back, 60);
	TEST_ADD_CASE(s, chain_restores_lazily, 60);
	TEST_ADD_CASE(s, chain_squashes, 60);
	TEST_ADD_CASE(s, chain_fork_and_mremap_whole, 60);
	TEST_ADD_CASE(s, chain_damaged_refused, 60);
	TEST_ADD_CASE(s, chain_written_list, 60);
	return s;
}

const char *test_skip_reason(void)
{
	const uint64_t async = PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_UNPOPULATED;

	if (sysconf(_SC_PAGESIZE) != (long)PG)
		return "the chain cases assume 4 KiB pages; this machine's page size differs";
	if (!getenv("UFFDD"))
		return "UFFDD (the uffdd binary to test) is not set; run through meson test";
	return test_uffd_features_skip_reason(
		async, "the kernel has no UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
}
