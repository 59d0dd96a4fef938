// SPDX-License-Identifier: MIT
/*
 * Suite restore: shared snapshots (issue 14, item 2).  A 4 MiB region with
 * holes (pages never written) is checkpointed, loaded once into a sealed
 * memfd by pin_image_snapshot(), and restored by child processes, each
 * mapping the memfd MAP_PRIVATE, registered MISSING and MINOR, served by a
 * real uffdd with UFFDIO_CONTINUE (the image's pages) and zero pages (its
 * holes).  Each checks every byte, in random order, and what the kernel
 * gives: pages shared with the page cache until written (no anonymous page
 * in the mapping), a write private to its process, the memfd unchanged
 * (pread), a page after MADV_DONTNEED the image's again (a hole zero).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "manager.h"
#include "test-common.h"
#include "uffdd-harness.h"

#define REGION_ADDR  0x530000000000ull /* below ASan's allocator (0x600000000000) */
#define PAGE	     4096ull
#define PAGES	     1024ull
#define REGION_BYTES (PAGES * PAGE)
/* Page k is a hole of the image (never written) when k % HOLE_EVERY is
 * HOLE_AT: 146 of the 1024 pages. */
#define HOLE_EVERY 7
#define HOLE_AT	   3
#define HOLES	   ((PAGES - HOLE_AT - 1) / HOLE_EVERY + 1)
#define DATA_PAGES (PAGES - HOLES)
#define FEATURES   (PIN_UFFD_FEATURE_MINOR_SHMEM | PIN_UFFD_FEATURE_EVENT_REMOVE)
/* Written by a restore over every page: no image word has it. */
#define MARK 0xa5a5a5a5a5a5a5a4ull
/* A child's exit, at most (its faults wait for a daemon restart, once). */
#define CHILD_WAIT_MS 30000

static char ck[64];
static uint64_t seed;
static struct pin_image *img;
static int snap = -1;

static bool hole(uint64_t k)
{
	return k % HOLE_EVERY == HOLE_AT;
}

static uint64_t image_word(uint64_t a)
{
	return hole((a - REGION_ADDR) / PAGE) ? 0 : test_pattern(a, seed) | 1;
}

static volatile uint64_t *word(uint64_t a)
{
	return (volatile uint64_t *)(uintptr_t)a;
}

/* The region as checkpointed: its holes never touched. */
static void checkpoint(void)
{
	test_map_fixed(REGION_ADDR, REGION_BYTES);
	for (uint64_t a = REGION_ADDR; a < REGION_ADDR + REGION_BYTES; a += 8)
		if (!hole((a - REGION_ADDR) / PAGE))
			*word(a) = image_word(a);
	test_checkpoint_region(ck, sizeof(ck), "snapshot", REGION_ADDR, REGION_BYTES);
}

/* The image loaded once: its data in the memfd, its holes holes. */
static void load(void)
{
	struct stat st;

	seed = test_seed();
	checkpoint();
	ck_assert_int_eq(pin_image_open(ck, &img), 0);
	snap = pin_image_snapshot(img, -1);
	ck_assert_int_ge(snap, 0);
	ck_assert_int_eq(fstat(snap, &st), 0);
	ck_assert_int_eq(st.st_size, REGION_BYTES);
	ck_assert_int_eq(st.st_blocks * 512, DATA_PAGES * PAGE);
	ck_assert_int_eq(pin_image_snapshot(img, -1), -EBUSY);
}

static void unload(void)
{
	char p[128];

	pin_image_free(img);
	for (const char *f = "manifest\0pages\0"; *f; f += strlen(f) + 1) {
		snprintf(p, sizeof(p), "%s/%s", ck, f);
		unlink(p);
	}
	rmdir(ck);
}

/* Every word of the memfd is the image's, and its holes are still holes
 * (the MISSING registration kept the kernel from filling them). */
static void assert_memfd_unchanged(void)
{
	uint64_t buf[PAGE / 8];
	struct stat st;

	ck_assert_int_eq(fstat(snap, &st), 0);
	ck_assert_int_eq(st.st_blocks * 512, DATA_PAGES * PAGE);

	for (uint64_t k = 0; k < PAGES; k++) {
		ck_assert_int_eq(pread(snap, buf, PAGE, (off_t)(k * PAGE)), PAGE);
		for (uint64_t w = 0; w < PAGE / 8; w++)
			ck_assert_uint_eq(buf[w], image_word(REGION_ADDR + k * PAGE + w * 8));
	}
}

/* A kB field of the smaps entry of the mapping at REGION_ADDR; -1: none. */
static long smaps_kb(const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512], name[64];
	bool inside = false;
	long kb = -1, v;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		uint64_t start, end;
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " ", &start, &end) == 2)
			inside = start == REGION_ADDR && end == REGION_ADDR + REGION_BYTES;
		else if (inside && sscanf(line, "%63[^:]: %ld kB", name, &v) == 2 &&
			 !strcmp(name, field))
			kb = v;
	}
	fclose(f);
	return kb;
}

struct restore {
	struct pin_uffd *u;
	struct pin_client *c;
};

/* In a child: map the region from the snapshot, hand it to uffdd at sock
 * (flags: PIN_CLIENT_REGION_*). */
static int restore_start(struct restore *rs, const char *sock, unsigned int flags)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo),
				    .flags = PIN_UFFD_CLOEXEC,
				    .features = FEATURES };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = sock, .name = "snapshot" };

	REQUIRE_EQ(pin_uffd_new(&uo, &rs->u), 0);
	REQUIRE_EQ(pin_image_map_region(img, 0, rs->u), 0);
	REQUIRE_EQ(pin_client_connect(&co, &rs->c), 0);
	REQUIRE_EQ(pin_client_handover(rs->c, rs->u), 0);
	REQUIRE_EQ(pin_client_add_image_region(rs->c, img, 0, flags), 1);
	return 0;
}

/* Pages [from, to) of a random order of all, each read whole and checked. */
static int read_pages(const size_t *order, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++) {
		uint64_t base = REGION_ADDR + order[i] * PAGE;
		for (uint64_t a = base; a < base + PAGE; a += 8)
			REQUIRE_EQ(*word(a), image_word(a));
	}
	return 0;
}

static int read_all_random(void)
{
	size_t *order = malloc(PAGES * sizeof(*order));

	REQUIRE(order);
	test_permutation(order, PAGES, seed ^ (uint64_t)getpid());
	int r = read_pages(order, 0, PAGES);
	free(order);
	return r;
}

/* Every page placed: the image's by CONTINUE (no byte copied), the holes as
 * zero pages. */
static int assert_stats(struct restore *rs)
{
	struct pin_client_stats st;

	REQUIRE_EQ(
		pin_client_wait_populated(rs->c, (void *)(uintptr_t)REGION_ADDR, REGION_BYTES, 0),
		0);
	REQUIRE_EQ(pin_client_stats(rs->c, 0, &st), 0);
	REQUIRE_EQ(st.pages_copied, DATA_PAGES);
	REQUIRE_EQ(st.pages_zeroed, HOLES);
	REQUIRE_EQ(st.bytes_copied, 0);
	REQUIRE_EQ(st.pages_populated, PAGES);
	return 0;
}

static void restore_end(struct restore *rs)
{
	pin_client_free(rs->c);
	pin_uffd_free(rs->u);
}

/* Read all in random order: exact, and nothing private: every page mapped
 * is the page cache's (Anonymous 0), the holes the zero page (not in Rss). */
static int run_read(const char *sock, int in, int out)
{
	struct restore rs;

	(void)in;
	(void)out;
	REQUIRE(restore_start(&rs, sock, PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(read_all_random() == 0);
	REQUIRE(assert_stats(&rs) == 0);
	REQUIRE_EQ(smaps_kb("Anonymous"), 0);
	REQUIRE_EQ(smaps_kb("Rss"), DATA_PAGES * PAGE / 1024);
	restore_end(&rs);
	return 0;
}

static pid_t spawn(int (*fn)(const char *, int, int), const char *sock, int in, int out)
{
	pid_t parent = getpid(), pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(1);
		_exit(fn(sock, in, out));
	}
	return pid;
}

static int reap(pid_t pid)
{
	int st;

	for (unsigned int ms = 0; ms < CHILD_WAIT_MS * test_time_scale(); ms += 10) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		ck_assert_int_ge(r, 0);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		test_sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	ck_abort_msg("restore %d did not finish", (int)pid);
	return -1;
}

static int step(int fd)
{
	char b = 0;

	return write(fd, &b, 1) == 1 ? 0 : -1;
}

static int await(int fd)
{
	char b;

	return read(fd, &b, 1) == 1 ? 0 : -1;
}

/* A restore in a child process told when to go on: step(to[1]) tells it;
 * it says it is ready on from. */
struct told {
	pid_t pid;
	int to[2], from[2];
};

/* fn started in a child process with a pipe each way, ready (its first
 * step(out) heard). */
static void told_start(struct told *t, int (*fn)(const char *, int, int), const char *sock)
{
	ck_assert_int_eq(pipe2(t->to, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(t->from, O_CLOEXEC), 0);
	t->pid = spawn(fn, sock, t->to[0], t->from[1]);
	ck_assert_int_eq(await(t->from[0]), 0);
}

/* The child exits 0; its pipes closed. */
static void told_end(struct told *t)
{
	ck_assert_int_eq(reap(t->pid), 0);
	for (int i = 0; i < 2; i++) {
		close(t->to[i]);
		close(t->from[i]);
	}
}

/* A case of one restore: fn in a child process against a uffdd of its own,
 * which exits 0, and the image's memfd as loaded after it. */
static void one_restore(int (*fn)(const char *, int, int))
{
	struct test_daemon d;

	load();
	test_daemon_start(&d, NULL);
	ck_assert_int_eq(reap(spawn(fn, d.sock, -1, -1)), 0);
	assert_memfd_unchanged();
	test_daemon_stop(&d);
	unload();
}

START_TEST(every_byte_exact_in_random_order)
{
	one_restore(run_read);
}
END_TEST

/* Placed ahead of any touch (Prefetch: the path of push and Replay too):
 * the image's pages mapped by CONTINUE, no fault, then every byte exact. */
static int run_prefetch(const char *sock, int in, int out)
{
	struct restore rs;
	struct pin_client_stats st;
	void *base = (void *)(uintptr_t)REGION_ADDR;

	REQUIRE(restore_start(&rs, sock, PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE_EQ(pin_client_prefetch(rs.c, base, REGION_BYTES), 0);
	REQUIRE_EQ(pin_client_wait_populated(rs.c, base, REGION_BYTES, 0), 0);
	REQUIRE_EQ(smaps_kb("Rss"), DATA_PAGES * PAGE / 1024);
	/* uffdctl looks at the region meanwhile. */
	REQUIRE(step(out) == 0 && await(in) == 0);
	REQUIRE(read_all_random() == 0);
	REQUIRE_EQ(pin_client_stats(rs.c, 0, &st), 0);
	REQUIRE_EQ(st.faults, 0);
	REQUIRE_EQ(st.pages_copied, DATA_PAGES);
	REQUIRE_EQ(st.pages_zeroed, HOLES);
	REQUIRE_EQ(st.bytes_copied, 0);
	REQUIRE_EQ(smaps_kb("Anonymous"), 0);
	restore_end(&rs);
	return 0;
}

START_TEST(prefetch_continues_ahead_of_faults)
{
	struct test_daemon d;
	struct told c;

	load();
	test_daemon_start(&d, NULL);
	told_start(&c, run_prefetch, d.sock);
	char *out = test_uffdctl(&d, "regions");
	ck_assert_msg(strstr(out, "4.0M missing+minor fd "), "uffdctl regions: %s", out);
	free(out);
	ck_assert_int_eq(step(c.to[1]), 0);
	told_end(&c);
	test_daemon_stop(&d);
	unload();
}
END_TEST

/* A: every page written (its own copy, MARK), then B restores and reads. */
static int run_writer(const char *sock, int in, int out)
{
	struct restore rs;

	REQUIRE(restore_start(&rs, sock, PIN_CLIENT_REGION_NO_PUSH) == 0);
	for (uint64_t a = REGION_ADDR; a < REGION_ADDR + REGION_BYTES; a += 8)
		*word(a) = MARK ^ a;
	REQUIRE_EQ(smaps_kb("Anonymous"), REGION_BYTES / 1024);
	REQUIRE(step(out) == 0 && await(in) == 0);
	/* B read the image meanwhile: A's pages are still its own. */
	for (uint64_t a = REGION_ADDR; a < REGION_ADDR + REGION_BYTES; a += 8)
		REQUIRE_EQ(*word(a), MARK ^ a);
	restore_end(&rs);
	return 0;
}

/* B: reads every page, then stays until told. */
static int run_read_and_stay(const char *sock, int in, int out)
{
	struct restore rs;

	REQUIRE(restore_start(&rs, sock, PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(read_all_random() == 0);
	REQUIRE(assert_stats(&rs) == 0);
	REQUIRE_EQ(smaps_kb("Anonymous"), 0);
	REQUIRE(step(out) == 0 && await(in) == 0);
	restore_end(&rs);
	return 0;
}

START_TEST(two_restores_see_not_each_others_writes)
{
	struct test_daemon d;
	struct told a, b;

	load();
	test_daemon_start(&d, NULL);
	told_start(&a, run_writer, d.sock);
	assert_memfd_unchanged();
	told_start(&b, run_read_and_stay, d.sock);
	/* Both sessions name the image: the daemon holds its memfd once. */
	ck_assert_int_eq(test_count_fd_links(d.pid, "/memfd:pin-snapshot*"), 1);
	ck_assert_int_eq(step(b.to[1]), 0);
	told_end(&b);
	ck_assert_int_eq(step(a.to[1]), 0);
	told_end(&a);
	assert_memfd_unchanged();
	test_daemon_stop(&d);
	unload();
}
END_TEST

/* Written, then MADV_DONTNEED: a page refaults as the image has it (MINOR,
 * CONTINUE), a hole as zero (MISSING), as the file mapping would give them
 * without a userfaultfd; the writes are gone. */
static int run_dontneed(const char *sock, int in, int out)
{
	struct restore rs;
	void *base = (void *)(uintptr_t)REGION_ADDR;

	(void)in;
	(void)out;
	REQUIRE(restore_start(&rs, sock, PIN_CLIENT_REGION_NO_PUSH) == 0);
	REQUIRE(read_all_random() == 0);
	for (uint64_t a = REGION_ADDR; a < REGION_ADDR + REGION_BYTES; a += 8)
		*word(a) = MARK ^ a;
	REQUIRE_EQ(madvise(base, REGION_BYTES, MADV_DONTNEED), 0);
	REQUIRE_EQ(smaps_kb("Rss"), 0);
	REQUIRE(read_all_random() == 0);
	REQUIRE_EQ(smaps_kb("Anonymous"), 0);
	REQUIRE_EQ(pin_client_wait_populated(rs.c, (void *)(uintptr_t)REGION_ADDR, REGION_BYTES, 0),
		   0);
	restore_end(&rs);
	return 0;
}

START_TEST(dontneed_gives_the_image_page_again)
{
	one_restore(run_dontneed);
}
END_TEST

/* Half the pages read, the daemon killed (-9) and started again while the
 * restore goes on reading: every byte exact, every page placed. */
static int run_across_restart(const char *sock, int in, int out)
{
	struct restore rs;
	size_t *order = malloc(PAGES * sizeof(*order));

	REQUIRE(order);
	/* Pushed: a kill between a CONTINUE and its bit in the record leaves
	 * a page in place that the next daemon does not know of and that never
	 * faults; its push meets it (EEXIST) and counts it. */
	REQUIRE(restore_start(&rs, sock, 0) == 0);
	test_permutation(order, PAGES, seed);
	REQUIRE(read_pages(order, 0, PAGES / 2) == 0);
	REQUIRE(step(out) == 0 && await(in) == 0);
	REQUIRE(read_pages(order, PAGES / 2, PAGES) == 0);
	free(order);
	REQUIRE_EQ(pin_client_wait_populated(rs.c, (void *)(uintptr_t)REGION_ADDR, REGION_BYTES, 0),
		   0);
	REQUIRE_EQ(smaps_kb("Anonymous"), 0);
	restore_end(&rs);
	return 0;
}

START_TEST(kill9_and_restart_mid_restore)
{
	static const char *const args[] = { "--workers", "2", NULL };
	struct manager *mgr;
	char dir[64], sock[96];
	struct told c;

	load();
	snprintf(dir, sizeof(dir), "/tmp/uffdd-snapshot-d-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/sock", dir);
	struct manager_opts o = { .dir = dir,
				  .exe = getenv("UFFDD"),
				  .args = args,
				  .store_max = 4096,
				  .ready_ms = CHILD_WAIT_MS * test_time_scale() };
	ck_assert_int_eq(manager_new(&o, &mgr), 0);
	ck_assert_int_eq(manager_start(mgr), 0);
	told_start(&c, run_across_restart, sock);
	/* Killed while the child's next faults wait for it. */
	ck_assert_int_eq(step(c.to[1]), 0);
	ck_assert_int_eq(manager_kill9_restart(mgr), 0);
	told_end(&c);
	assert_memfd_unchanged();
	ck_assert_int_eq(manager_stop(mgr), 0);
	manager_free(mgr);
	ck_assert_int_eq(rmdir(dir), 0);
	unload();
}
END_TEST

/* What is refused, and why: a memfd a restore takes that is not sealed or
 * not the image's size; a userfaultfd without MINOR_SHMEM; a MINOR region
 * whose source is not a sealed memfd (the daemon's check). */
static int run_refusals(const char *sock, int in, int out)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = sock, .name = "refusals" };
	struct pin_image *other;
	struct pin_uffd *u;
	struct pin_client *c;
	int plain = memfd_create("plain", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	(void)in;
	(void)out;
	REQUIRE(plain >= 0 && ftruncate(plain, REGION_BYTES) == 0);
	REQUIRE_EQ(pin_image_open(ck, &other), 0);
	REQUIRE_EQ(pin_image_snapshot(other, plain), -EINVAL);
	REQUIRE_EQ(pin_image_snapshot(other, -2), -EINVAL);
	int small = memfd_create("small", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	REQUIRE(small >= 0 && ftruncate(small, PAGE) == 0);
	REQUIRE_EQ(fcntl(small, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW), 0);
	REQUIRE_EQ(pin_image_snapshot(other, small), -EINVAL);
	int taken = pin_image_snapshot(other, snap);
	REQUIRE(taken >= 0 && taken != snap);

	REQUIRE_EQ(pin_uffd_new(&uo, &u), 0);
	REQUIRE_EQ(pin_image_map_region(other, 0, u), -EOPNOTSUPP);
	pin_uffd_free(u);
	uo.features = FEATURES;
	REQUIRE_EQ(pin_uffd_new(&uo, &u), 0);
	REQUIRE_EQ(pin_image_map_region(other, 0, u), 0);
	REQUIRE_EQ(pin_client_connect(&co, &c), 0);
	REQUIRE_EQ(pin_client_handover(c, u), 0);
	struct pin_client_region r = { .sz = sizeof(r),
				       .addr = (void *)(uintptr_t)REGION_ADDR,
				       .len = REGION_BYTES,
				       .mode = PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_MINOR,
				       .fd = plain };
	REQUIRE_EQ(pin_client_region_add(c, &r), -EINVAL);
	r.fd = -1;
	REQUIRE_EQ(pin_client_region_add(c, &r), -EINVAL);
	r.fd = plain;
	r.mode = PIN_UFFD_REGISTER_MINOR;
	REQUIRE_EQ(pin_client_region_add(c, &r), -EINVAL);
	REQUIRE_EQ(pin_client_add_image_region(c, other, 0, PIN_CLIENT_REGION_NO_PUSH), 1);
	/* Unmapped while its holes are still served: a read of one, once no
	 * session serves them (valgrind's leak search reads every mapping at
	 * exit), would fill it in the shared memfd. */
	REQUIRE(munmap((void *)(uintptr_t)REGION_ADDR, REGION_BYTES) == 0);
	pin_client_free(c);
	pin_uffd_free(u);
	pin_image_free(other);
	close(plain);
	close(small);
	return 0;
}

START_TEST(refused_without_seals_or_minor)
{
	one_restore(run_refusals);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("snapshot");

	TEST_ADD_CASE(s, every_byte_exact_in_random_order, 120);
	TEST_ADD_CASE(s, prefetch_continues_ahead_of_faults, 120);
	TEST_ADD_CASE(s, two_restores_see_not_each_others_writes, 120);
	TEST_ADD_CASE(s, dontneed_gives_the_image_page_again, 120);
	TEST_ADD_CASE(s, kill9_and_restart_mid_restore, 120);
	TEST_ADD_CASE(s, refused_without_seals_or_minor, 120);
	return s;
}

const char *test_skip_reason(void)
{
	if (sysconf(_SC_PAGESIZE) != PAGE)
		return "the image's layout is in 4 KiB pages: needs 4 KiB pages";
	return test_uffd_features_skip_reason(
		PIN_UFFD_FEATURE_MINOR_SHMEM,
		"MINOR faults on shmem: needs UFFD_FEATURE_MINOR_SHMEM (Linux 5.14)");
}
