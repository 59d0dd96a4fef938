// SPDX-License-Identifier: MIT
/*
 * The multi-task workload suite criu dumps with real CRIU and restores
 * lazily: `criu-workload DIR`.  A parent with two threads and two forked
 * children, each task's memory patterned so that every byte can be checked
 * after a restore: word w of a patterned page at address a (where the page
 * was when it was written) holds a + 8w ^ MAGIC ^ tag, tag naming the task
 * and the region.
 *
 *   parent  A: 16 MiB patterned, then B: 4 MiB patterned and mremap'd to a
 *           new place, grown to 8 MiB (the second half zero), C: 8 MiB
 *           patterned with every third page discarded (MADV_DONTNEED: zero);
 *           each thread its own 4 MiB.
 *   child 1 (fork after A, B and C): rewrites the first 64 pages of A with
 *           its tag and maps 8 MiB of its own; checks all of it when told.
 *   child 2 (the same fork, its copy of A untouched): looks for
 *           DIR/exit-child2 every millisecond and exits when it is there
 *           (made after the dump): the moment it runs after the restore,
 *           long before its pages are all in.
 *
 * SIGUSR2 (between `criu pre-dump` and `criu dump --prev-images-dir`) tells
 * the parent to write every REWRITE_EVERY-th page of A again, with another
 * tag, and to say so in DIR/rewritten-parent: the dump holds those pages, and
 * leaves the others to the pre-dump, which holds the old ones.
 *
 * Every thread waits with its stack pointer off a page boundary, the same
 * in every run (STACK_AT): CRIU 4.2 dumps none of a task's pages lazy when
 * one of its threads was seized with its stack pointer on a boundary
 * (is_stack() in criu/mem.c compares a page with the stack pointer's offset
 * in its page, not with its page, so a page-aligned stack pointer matches
 * every page); with the stack starting at a random place (16-byte steps),
 * one dump in 256 restored the parent and child 1 eagerly (issue 13).
 *
 * Each task writes its pid to DIR/pid-ROLE, then waits.  After the restore,
 * SIGUSR1 tells a task to check every byte and write DIR/result-ROLE: "ok
 * PAGES" or "bad WRONG PAGES first ADDR" (the parent after both threads
 * checked theirs).  Child 1 exits after that; the parent waits to be
 * killed.
 */
#include <alloca.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG	    4096ul
#define MAGIC	    0x9e3779b97f4a7c15ull
#define MIB	    (1ul << 20)
#define NTHREADS    2
#define CHILD_PAGES 64 /* of A that child 1 rewrites */
/* Where in a page the calls after STACK_MID_PAGE() start: each wait goes
 * less than this deeper (nothing on a wait's way holds a large buffer), so
 * no waiting thread's stack pointer is on a page boundary. */
#define STACK_AT (PG / 2)
/* Take from the stack what puts the calls after it STACK_AT past a page
 * boundary: alloca()'s block starts at the stack pointer. */
#define STACK_MID_PAGE()                                                                           \
	do {                                                                                       \
		volatile char *pad_ = alloca(((uintptr_t)alloca(1) - STACK_AT) % PG + 1);          \
		pad_[0] = 0;                                                                       \
	} while (0)
/* SIGUSR2: the parent rewrites pages 1, 1 + this, 1 + 2 * this... of A. */
#define REWRITE_EVERY 4

/* Tags: the task in the high byte, the region in the low one. */
enum { TAG_A = 1, TAG_B = 2, TAG_C = 3, TAG_T = 4, TAG_D = 5, TAG_A2 = 6 };
#define TAG_PARENT 0x100u
#define TAG_CHILD  0x200u

/* What a range should hold: patterned with base's addresses and tag, zero
 * where zero() says. */
struct expect {
	uintptr_t at, len;	 /* where it is now */
	uintptr_t base;		 /* where it was patterned */
	uint64_t tag;		 /* of its first part */
	uintptr_t tag2_len;	 /* bytes at the start that hold tag2 instead */
	uint64_t tag2;		 /* child 1's rewrite */
	uintptr_t patterned_len; /* bytes from at that were patterned; the rest zero */
	unsigned int zero_every; /* 0, or every n-th page was discarded */
	/* 0, or page n with n % rewrite_every == 1 holds rewrite_tag */
	unsigned int rewrite_every;
	uint64_t rewrite_tag;
};

static const char *dir;
static struct expect thread_mem[NTHREADS];
static unsigned long thread_bad[NTHREADS], thread_pages[NTHREADS];
static uintptr_t thread_first[NTHREADS];

static void die(const char *what)
{
	fprintf(stderr, "criu-workload: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap");
	/* Pages, not huge pages: CRIU and uffdd place 4 KiB pages. */
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

static void pattern(uintptr_t at, size_t len, uint64_t tag)
{
	for (uintptr_t a = at; a < at + len; a += 8)
		*(uint64_t *)a = (uint64_t)a ^ MAGIC ^ tag;
}

/* Check every byte of e: the pages checked, the wrong ones, the first. */
static void check(const struct expect *e, unsigned long *pages, unsigned long *bad,
		  uintptr_t *first)
{
	for (uintptr_t off = 0; off < e->len; off += PG) {
		bool zero = off >= e->patterned_len ||
			    (e->zero_every && (off / PG) % e->zero_every == 0);
		bool again = e->rewrite_every && (off / PG) % e->rewrite_every == 1;
		uint64_t tag = again ? e->rewrite_tag : off < e->tag2_len ? e->tag2 : e->tag;
		const uint64_t *w = (const uint64_t *)(e->at + off);
		bool ok = true;

		for (size_t k = 0; k < PG / 8 && ok; k++) {
			uint64_t want = zero ? 0 : (uint64_t)(e->base + off + 8 * k) ^ MAGIC ^ tag;
			ok = w[k] == want;
		}
		(*pages)++;
		if (!ok && !(*bad)++)
			*first = e->at + off;
	}
}

static void write_file(const char *role, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void write_file(const char *role, const char *what, const char *fmt, ...)
{
	char path[4096], tmp[4096 + 8], buf[256];
	va_list ap;
	int fd, n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	snprintf(path, sizeof(path), "%s/%s-%s", dir, what, role);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* Whole or not at all: the test reads it once it exists. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, n) != n || close(fd) < 0 || rename(tmp, path) < 0)
		die(path);
}

static void report(const char *role, unsigned long pages, unsigned long bad, uintptr_t first)
{
	if (bad)
		write_file(role, "result", "bad %lu %lu first %#lx\n", bad, pages,
			   (unsigned long)first);
	else
		write_file(role, "result", "ok %lu\n", pages);
}

/* Wait for one of the signals in set (blocked in every thread). */
static int wait_signal(const sigset_t *set)
{
	int sig;

	while (sigwait(set, &sig))
		;
	return sig;
}

static void *thread_main(void *arg)
{
	size_t i = (size_t)arg;

	/* Checked when the parent is told, the parent reads the result. */
	check(&thread_mem[i], &thread_pages[i], &thread_bad[i], &thread_first[i]);
	return NULL;
}

static pthread_barrier_t go;

static void *thread_wait(void *arg)
{
	STACK_MID_PAGE();
	pthread_barrier_wait(&go);
	return thread_main(arg);
}

/* Child 2: gone as soon as it runs after the restore. */
static void child_early(void)
{
	const struct timespec ms = { .tv_nsec = 1000000 };
	/* Not on the stack: its wait goes less than STACK_AT deeper. */
	static char path[4096];

	snprintf(path, sizeof(path), "%s/exit-child2", dir);
	write_file("child2", "pid", "%d\n", getpid());
	while (access(path, F_OK))
		nanosleep(&ms, NULL);
	_exit(0);
}

static void child(const char *role, const struct expect *v, size_t n)
{
	sigset_t set;
	unsigned long pages = 0, bad = 0;
	uintptr_t first = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	write_file(role, "pid", "%d\n", getpid());
	wait_signal(&set);
	for (size_t i = 0; i < n; i++)
		check(&v[i], &pages, &bad, &first);
	report(role, pages, bad, first);
	_exit(0);
}

static int workload(int argc, char **argv)
{
	struct expect a, b, c, d;
	pthread_t th[NTHREADS];
	sigset_t set;

	if (argc != 2) {
		fprintf(stderr, "usage: criu-workload DIR\n");
		return 2;
	}
	dir = argv[1];
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		die("sigprocmask");

	a = (struct expect){ .len = 16 * MIB, .tag = TAG_PARENT | TAG_A };
	a.at = a.base = (uintptr_t)map(a.len);
	a.patterned_len = a.len;
	pattern(a.at, a.len, a.tag);

	/* Patterned at one place, moved and grown: the tail reads zero. */
	b = (struct expect){ .len = 8 * MIB, .tag = TAG_PARENT | TAG_B, .patterned_len = 4 * MIB };
	b.base = (uintptr_t)map(4 * MIB);
	pattern(b.base, 4 * MIB, b.tag);
	void *hole = map(b.len); /* a place to move it to */
	b.at = (uintptr_t)mremap((void *)b.base, 4 * MIB, b.len, MREMAP_MAYMOVE | MREMAP_FIXED,
				 hole);
	if (b.at != (uintptr_t)hole)
		die("mremap");

	c = (struct expect){ .len = 8 * MIB, .tag = TAG_PARENT | TAG_C, .zero_every = 3 };
	c.at = c.base = (uintptr_t)map(c.len);
	c.patterned_len = c.len;
	pattern(c.at, c.len, c.tag);
	for (uintptr_t off = 0; off < c.len; off += 3 * PG)
		if (madvise((void *)(c.at + off), PG, MADV_DONTNEED))
			die("madvise");

	for (size_t i = 0; i < NTHREADS; i++) {
		struct expect *t = &thread_mem[i];
		*t = (struct expect){ .len = 4 * MIB, .tag = TAG_PARENT | (TAG_T + 16 * i) };
		t->at = t->base = (uintptr_t)map(t->len);
		t->patterned_len = t->len;
		pattern(t->at, t->len, t->tag);
	}

	/* Child 1: its own A (first pages rewritten), B, C and D. */
	pid_t k1 = fork();
	if (k1 < 0)
		die("fork");
	if (k1 == 0) {
		struct expect v[4] = { a, b, c };
		v[0].tag2_len = CHILD_PAGES * PG;
		v[0].tag2 = TAG_CHILD | TAG_A;
		pattern(a.at, v[0].tag2_len, v[0].tag2);
		d = (struct expect){ .len = 8 * MIB, .tag = TAG_CHILD | TAG_D };
		d.at = d.base = (uintptr_t)map(d.len);
		d.patterned_len = d.len;
		pattern(d.at, d.len, d.tag);
		v[3] = d;
		child("child1", v, 4);
	}
	pid_t k2 = fork();
	if (k2 < 0)
		die("fork");
	if (k2 == 0)
		child_early();

	if (pthread_barrier_init(&go, NULL, NTHREADS + 1))
		die("pthread_barrier_init");
	for (size_t i = 0; i < NTHREADS; i++)
		if (pthread_create(&th[i], NULL, thread_wait, (void *)i))
			die("pthread_create");
	write_file("parent", "pid", "%d\n", getpid());
	while (wait_signal(&set) == SIGUSR2) {
		a.rewrite_every = REWRITE_EVERY;
		a.rewrite_tag = TAG_PARENT | TAG_A2;
		for (uintptr_t off = PG; off < a.len; off += REWRITE_EVERY * PG)
			pattern(a.at + off, PG, a.rewrite_tag);
		write_file("parent", "rewritten", "%lu\n", a.len / PG / REWRITE_EVERY);
	}
	pthread_barrier_wait(&go);

	unsigned long pages = 0, bad = 0;
	uintptr_t first = 0;
	check(&a, &pages, &bad, &first);
	check(&b, &pages, &bad, &first);
	check(&c, &pages, &bad, &first);
	for (size_t i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		pages += thread_pages[i];
		if (thread_bad[i] && !bad)
			first = thread_first[i];
		bad += thread_bad[i];
	}
	report("parent", pages, bad, first);
	for (;;)
		if (waitpid(-1, NULL, 0) < 0 && errno == ECHILD)
			pause();
}

int main(int argc, char **argv)
{
	/* Every task's main thread waits below this (the children are forks);
	 * not a tail call, which would give the pad back first. */
	STACK_MID_PAGE();
	exit(workload(argc, argv));
}
