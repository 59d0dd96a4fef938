/* SPDX-License-Identifier: MIT */
/* What every bench/bench-<what>.c shares: clocks and the metric line. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Whether to run as a smoke test (argument --smoke, anywhere): one round at
 * the smallest sizes, printing every metric line all the same, so that a
 * broken benchmark shows; the figures mean nothing then.
 */
bool bench_smoke(int argc, char **argv);

/* The most runs a benchmark makes (its arrays of samples are this long). */
#define BENCH_MAX_RUNS 64
/*
 * How many runs to make: argv[1] when given, else dflt; under --smoke
 * (bench_smoke()) one, and *bytes becomes smoke_bytes.  Dies unless 1 to
 * BENCH_MAX_RUNS.
 */
unsigned int bench_runs(int argc, char **argv, unsigned int dflt, uint64_t *bytes,
			uint64_t smoke_bytes);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* Print `metric NAME VALUE UNIT`, the one output format of bench/. */
void bench_metric(const char *name, double value, const char *unit);

/* Print "PROGRAM: what: the text of err" (err an errno, either sign), stop
 * the uffdd bench_uffdd_start() started (if it runs) and exit 1. */
_Noreturn void bench_die(const char *what, int err);

/* An anonymous private mapping of len bytes, without huge pages (pages
 * placed one by one must not be merged into huge ones); dies on failure. */
void *bench_map_anon(size_t len);

/* A memfd of len bytes (whole pages of size page), page i filled with the
 * byte i | 1: every page different, none zero; dies on failure. */
int bench_memfd_source(size_t len, size_t page);

/* A userfaultfd (close-on-exec, no features asked); dies on failure. */
struct pin_uffd *bench_uffd_new(void);

struct pin_client;
struct pin_image;
struct pin_uffd_opts;
/*
 * The restored process's side of a lazy restore of region 0 of the
 * checkpoint ck through the uffdd at sock: the image opened, a userfaultfd
 * of uo, the region mapped and registered, the userfaultfd handed over and
 * the region added with flags (pin_client_add_image_region()); dies on
 * failure.
 */
void bench_restore_start(const char *ck, const char *sock, const struct pin_uffd_opts *uo,
			 unsigned int flags, struct pin_image **ret_img, struct pin_uffd **ret_u,
			 struct pin_client **ret_c);

/* Median of n samples (sorts them in place). */
double bench_median(double *samples, unsigned int n);

/* The q-quantile (0 < q <= 1) of n > 0 samples by nearest rank (sorts them
 * in place): p99 is bench_percentile(v, n, 0.99). */
double bench_percentile(double *samples, size_t n, double q);

/* The next number of the xorshift64 sequence at *state (not 0). */
uint64_t bench_rand(uint64_t *state);

/* A random permutation of 0..n-1 (n > 0), the same for the same seed (not
 * 0; bench_rand()); malloc'd, exits when it cannot be. */
uint32_t *bench_shuffled(size_t n, uint64_t seed);

/*
 * Run fn(arg, res) in a fresh child process (as a restored process would be)
 * and copy its result of size bytes back into res: 0, or -EIO when the child
 * failed or wrote less, -errno when the pipe or the fork failed.
 */
int bench_in_child(void (*fn)(const void *arg, void *res), const void *arg, void *res, size_t size);

/* The first word of the page at address a in a state bench_checkpoint_state()
 * wrote (its word k is this + k): every page different, none zero. */
uint64_t bench_state_word(uint64_t a);

/* Map len bytes at addr (whole pages of size page; nothing may be there),
 * fill them with bench_state_word(), checkpoint them into the directory ck
 * with pin_image_write() and unmap them; dies on failure. */
void bench_checkpoint_state(const char *ck, uint64_t addr, uint64_t len, size_t page);

/* Remove a checkpoint directory pin_image_write() made (its manifest, pages
 * and any working set) and the directory itself. */
void bench_checkpoint_remove(const char *dir);

/* A uffdd of our own, on a socket in a fresh temporary directory. */
struct bench_uffdd {
	pid_t pid;
	char dir[64];
	char sock[96];
};

/* Room for a path to uffdd. */
#define BENCH_PATH_MAX 4096

/* $UFFDD, else the uffdd built next to this benchmark, into buf; exits on failure. */
void bench_uffdd_exe(char *buf, size_t len);

/* Start bench_uffdd_exe() and wait until it answers; exits on failure. */
void bench_uffdd_start(struct bench_uffdd *d);
/* SIGTERM, wait, and remove the socket and its directory. */
void bench_uffdd_stop(struct bench_uffdd *d);

#endif /* BENCH_COMMON_H */
