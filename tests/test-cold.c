// SPDX-License-Identifier: MIT
/*
 * Sources on disk read from a cold page cache (issue 14 item 5): uffdd reads
 * a window's chunks ahead through io_uring (uffdd/source-ra.c) and a fault
 * on a chunk in flight waits for it to land.  Each source file is written,
 * fsync'd and dropped from the page cache (POSIX_FADV_DONTNEED), checked
 * with mincore(); the client (a child process) restores it and reads every
 * page in a random order:
 *  - with the push and without it, every page is the file's, byte for byte,
 *    and the daemon's rings completed a read (their fdinfo's CqTail);
 *  - a file truncated under the restore: each page past the new end raises
 *    SIGBUS (poisoned, never zero), each page before it is the file's;
 *  - a daemon whose io_uring_setup() fails (tests/no-uring: seccomp, EPERM)
 *    has no ring and serves the same restore byte for byte.
 * The files live in the test's directory, on TMPDIR's file system (else
 * /tmp): a tmpfs keeps its pages in memory, and the area is skipped there.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

/* 16 MiB: eight of the daemon's 2 MiB chunks, enough for a pattern. */
#define COLD_PAGES_BYTES (16u << 20)
/* Truncated to 3 MiB of 8: the cut falls inside a chunk. */
#define TR_BYTES       (8u << 20)
#define TR_KEEP	       (3u << 20)
#define CASE_TIMEOUT_S 600

static size_t page;

struct cold {
	int fd;
	size_t npages;
	uint64_t seed;
	unsigned int flags; /* the region's */
	size_t keep;	    /* truncate the file to this many pages first (0: not) */
};

/* The pages of fd's first len bytes in the page cache. */
static size_t cached_pages(int fd, size_t len)
{
	unsigned char *v = malloc(len / page);
	void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	size_t n = 0;

	ck_assert_ptr_nonnull(v);
	ck_assert_ptr_ne(m, MAP_FAILED);
	ck_assert_int_eq(mincore(m, len, v), 0);
	for (size_t i = 0; i < len / page; i++)
		n += v[i] & 1;
	munmap(m, len);
	free(v);
	return n;
}

/* Out of the page cache: written back, dropped. */
static void make_cold(int fd, size_t len)
{
	ck_assert_int_eq(fsync(fd), 0);
	ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	ck_assert_uint_eq(cached_pages(fd, len), 0);
}

/* A cold source file of npages patterned pages in d's directory. */
static int cold_source(const struct test_daemon *d, size_t npages, uint64_t seed)
{
	int fd = test_pattern_source(d->dir, "cold", npages * page, seed);

	make_cold(fd, npages * page);
	return fd;
}

/* The completions the daemon's io_uring rings posted, all told. */
static unsigned long ring_completions(pid_t pid)
{
	char path[96], link[64], line[128];
	unsigned long sum = 0, v;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *dir = opendir(path);
	ck_assert_ptr_nonnull(dir);
	for (struct dirent *e; (e = readdir(dir));) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd/%.20s", (int)pid, e->d_name);
		ssize_t k = readlink(path, link, sizeof(link) - 1);
		if (k <= 0)
			continue;
		link[k] = '\0';
		if (strcmp(link, "anon_inode:[io_uring]"))
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fdinfo/%.20s", (int)pid, e->d_name);
		FILE *f = fopen(path, "r");
		ck_assert_ptr_nonnull(f);
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "CqTail: %lu", &v) == 1)
				sum += v;
		fclose(f);
	}
	closedir(dir);
	return sum;
}

/* The client: restore the file into a region, read every page in a random
 * order, each as the file has it, or (past c->keep) SIGBUS. */
static int client_restore(const struct test_daemon *d, void *arg)
{
	const struct cold *c = arg;
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP |
			    PIN_UFFD_FEATURE_EVENT_REMAP | PIN_UFFD_FEATURE_POISON,
	};
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "test-cold" };
	size_t len = c->npages * page, *order = malloc(c->npages * sizeof(*order));
	struct pin_client *cl;
	struct pin_uffd *u;

	REQUIRE(order);
	uint8_t *base = test_map_region(len);
	REQUIRE(base);
	REQUIRE(pin_uffd_new(&uo, &u) == 0);
	REQUIRE(pin_client_connect(&co, &cl) == 0);
	REQUIRE(pin_client_handover(cl, u) == 0);
	REQUIRE(pin_uffd_register(u, base, len, PIN_UFFD_REGISTER_MISSING, NULL) == 0);
	struct pin_client_region r = { .sz = sizeof(r),
				       .addr = base,
				       .len = len,
				       .mode = PIN_UFFD_REGISTER_MISSING,
				       .flags = c->flags,
				       .fd = c->fd };
	REQUIRE(pin_client_region_add(cl, &r) == 0);
	if (c->keep) {
		/* After the daemon listed the whole file, and read some. */
		REQUIRE(test_page_ok(base, 0, c->seed));
		REQUIRE(ftruncate(c->fd, (off_t)(c->keep * page)) == 0);
	}
	test_permutation(order, c->npages, c->seed | 1);
	for (size_t k = 0; k < c->npages; k++) {
		size_t i = order[k];
		if (c->keep && i >= c->keep)
			REQUIRE_EQ(test_read_bus(base + i * page), true);
		else
			REQUIRE_EQ(test_page_ok(base, i, c->seed), true);
	}
	pin_client_free(cl);
	pin_uffd_free(u);
	free(order);
	return 0;
}

static void restore_cold(unsigned int flags)
{
	struct test_daemon d;
	struct cold c = { .npages = COLD_PAGES_BYTES / page, .seed = test_seed(), .flags = flags };

	test_daemon_start(&d, NULL);
	c.fd = cold_source(&d, c.npages, c.seed);
	ck_assert_int_eq(test_reap(test_spawn(client_restore, &d, &c)), 0);
	/* Read ahead through the rings: the first chunk asked for at least
	 * (the kernel's readahead for it may bring the next ones too). */
	ck_assert_uint_ge(ring_completions(d.pid), 1);
	close(c.fd);
	test_daemon_stop(&d);
}

/* Faults at random, and the push behind them. */
START_TEST(cold_random_pushed)
{
	restore_cold(0);
}
END_TEST

/* Faults at random alone: once they are dense, the rest is streamed. */
START_TEST(cold_random_faults_only)
{
	restore_cold(PIN_CLIENT_REGION_NO_PUSH);
}
END_TEST

/* Read ahead or not, a page the file no longer has is poisoned. */
START_TEST(cold_truncated_poisons)
{
	struct test_daemon d;
	struct cold c = { .npages = TR_BYTES / page,
			  .seed = test_seed(),
			  .flags = PIN_CLIENT_REGION_NO_PUSH,
			  .keep = TR_KEEP / page };

	test_daemon_start(&d, NULL);
	c.fd = cold_source(&d, c.npages, c.seed);
	ck_assert_int_eq(test_reap(test_spawn(client_restore, &d, &c)), 0);
	close(c.fd);
	test_daemon_stop(&d);
}
END_TEST

/* io_uring_setup() refused: no ring, the same restore, copies reading. */
START_TEST(cold_without_io_uring)
{
	const char *wrap = getenv("NO_URING");
	struct test_daemon d;
	struct cold c = { .npages = COLD_PAGES_BYTES / page, .seed = test_seed() };

	char *uffdd = strdup(getenv("UFFDD"));
	ck_assert_ptr_nonnull(uffdd);
	ck_assert_int_eq(setenv("NO_URING_EXEC", uffdd, 1), 0);
	ck_assert_int_eq(setenv("UFFDD", wrap, 1), 0);
	test_daemon_start(&d, NULL);
	ck_assert_int_eq(setenv("UFFDD", uffdd, 1), 0);
	free(uffdd);
	c.fd = cold_source(&d, c.npages, c.seed);
	ck_assert_int_eq(test_reap(test_spawn(client_restore, &d, &c)), 0);
	ck_assert_int_eq(test_count_fd_links(d.pid, "anon_inode:\\[io_uring\\]"), 0);
	close(c.fd);
	test_daemon_stop(&d);
}
END_TEST

/* A tcase of one test, named after it (CK_RUN_CASE=name), if needs are met. */
static void add_case(Suite *s, const char *name, const TTest *t, const struct test_needs *needs)
{
	TCase *tc = test_tcase(s, name, needs);

	tcase_set_timeout(tc, CASE_TIMEOUT_S);
	tcase_add_test(tc, t);
}

Suite *test_suite(void)
{
	static const struct test_needs nothing;
	/* Only the case without io_uring starts uffdd through the wrapper. */
	static const struct test_needs wrapper = { .path_env = "NO_URING" };
	Suite *s = test_suite_new("cold");

	page = (size_t)sysconf(_SC_PAGESIZE);
	add_case(s, "cold_random_pushed", cold_random_pushed, &nothing);
	add_case(s, "cold_random_faults_only", cold_random_faults_only, &nothing);
	add_case(s, "cold_truncated_poisons", cold_truncated_poisons, &nothing);
	add_case(s, "cold_without_io_uring", cold_without_io_uring, &wrapper);
	return s;
}

/* Whether a page written to a file in TMPDIR (else /tmp) leaves the page
 * cache when dropped: not on a tmpfs. */
static const char *cache_skip_reason(void)
{
	const char *tmp = getenv("TMPDIR");
	char path[256];
	const char *why = NULL;

	snprintf(path, sizeof(path), "%s/uffdd-cold-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		return "cannot make a file in TMPDIR (or /tmp)";
	unlink(path);
	char buf[4096] = { 1 };
	unsigned char v = 0;
	void *m = MAP_FAILED;
	if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) || fsync(fd) < 0 ||
	    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) ||
	    (m = mmap(NULL, sizeof(buf), PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED ||
	    mincore(m, sizeof(buf), &v) < 0 || (v & 1))
		why = "TMPDIR's (or /tmp's) file system keeps its pages in memory (tmpfs): "
		      "nothing is cold there";
	if (m != MAP_FAILED)
		munmap(m, sizeof(buf));
	close(fd);
	return why;
}

const char *test_skip_reason(void)
{
	if (!getenv("UFFDD"))
		return "UFFDD (the uffdd binary to test) is not set; run through meson test";
	const char *why = test_uffd_skip_reason();
	return why ? why : cache_skip_reason();
}
