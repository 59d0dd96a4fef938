// SPDX-License-Identifier: MIT
/*
 * The workload bench-criu dumps with real CRIU and restores lazily:
 * `criu-touch DIR MIB`.  It maps MIB MiB, writes every page (word w of the
 * page at a holds a + 8w ^ MAGIC), writes its pid to DIR/pid and waits.
 * After the restore, SIGUSR1 has it read one word of every page in address
 * order, SIGUSR2 in a random order (a full-period LCG modulo the number of
 * pages: a permutation that needs no memory of its own, so the restore
 * serves the mapping and nothing else).  Then it writes DIR/result:
 * "ok PAGES END_NS" or "bad WRONG PAGES END_NS", END_NS the CLOCK_REALTIME
 * at the last page (the monotonic clock does not survive a restore), and
 * waits to be killed.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG    4096ul
#define MAGIC 0x9e3779b97f4a7c15ull
#define MIB   (1ul << 20)
/* An LCG mod 2^k visits every residue once when the multiplier is 1 mod 4
 * and the increment odd (Hull-Dobell). */
#define LCG_MUL 6364136223846793005ull
#define LCG_INC 1442695040888963407ull

static volatile sig_atomic_t order; /* 0: none yet, else the signal */

static void die(const char *what)
{
	fprintf(stderr, "criu-touch: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void on_signal(int sig)
{
	order = sig;
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[4096], tmp[4096];
	FILE *f;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s", dir, name) >= sizeof(tmp)) {
		errno = ENAMETOOLONG;
		die(dir);
	}
	f = fopen(tmp, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, path) < 0)
		die(path);
}

static uint64_t word_at(uintptr_t a)
{
	return (uint64_t)a ^ MAGIC;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	char text[128];
	sigset_t block, old;
	struct timespec end;

	if (argc != 3 || atol(argv[2]) <= 0) {
		fprintf(stderr, "usage: criu-touch DIR MIB\n");
		return 2;
	}
	size_t len = (size_t)atol(argv[2]) * MIB, npages = len / PG;
	if (npages & (npages - 1)) {
		fprintf(stderr, "criu-touch: MIB must be a power of two (the random order)\n");
		return 2;
	}
	uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		die("mmap");
	for (size_t w = 0; w < len / sizeof(*m); w++)
		m[w] = word_at((uintptr_t)&m[w]);
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &block, &old) < 0 || sigaction(SIGUSR1, &sa, NULL) < 0 ||
	    sigaction(SIGUSR2, &sa, NULL) < 0)
		die("signals");
	snprintf(text, sizeof(text), "%d\n", (int)getpid());
	write_file(argv[1], "pid", text);
	while (!order)
		sigsuspend(&old);

	uint64_t bad = 0, x = 0;
	for (size_t i = 0; i < npages; i++) {
		size_t p = i;
		if (order == SIGUSR2) {
			x = (x * LCG_MUL + LCG_INC) & (npages - 1);
			p = (size_t)x;
		}
		/* Word p * 64 + p % 512 of the mapping: one in each page, at
		 * a different place in each. */
		uint64_t *wp = &m[p * (PG / sizeof(*m)) + p % (PG / sizeof(*m))];
		bad += *wp != word_at((uintptr_t)wp);
	}
	clock_gettime(CLOCK_REALTIME, &end);
	uint64_t end_ns = (uint64_t)end.tv_sec * 1000000000ull + (uint64_t)end.tv_nsec;
	if (bad)
		snprintf(text, sizeof(text), "bad %llu %zu %llu\n", (unsigned long long)bad, npages,
			 (unsigned long long)end_ns);
	else
		snprintf(text, sizeof(text), "ok %zu %llu\n", npages, (unsigned long long)end_ns);
	write_file(argv[1], "result", text);
	for (;;)
		pause();
}
