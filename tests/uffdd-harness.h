/* SPDX-License-Identifier: MIT */
/* Tests that talk to a real uffdd: start the one meson built ($UFFDD) on a
 * temporary socket, stop it, and wait on it; how long to wait for a program
 * the test started. */
#ifndef UFFDD_HARNESS_H
#define UFFDD_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

/* Inside client processes (children of the test that run no Check): report
 * what failed, with the client's pid, and return 1 from the function. */
#define REQUIRE(c)                                                                                 \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: client %d: %s failed\n", __FILE__, __LINE__,       \
				(int)getpid(), #c);                                                \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

/* The same for a value the client knows exactly: says what it was instead. */
#define REQUIRE_EQ(expr, want)                                                                     \
	do {                                                                                       \
		long long got_ = (long long)(expr), want_ = (long long)(want);                     \
		if (got_ != want_) {                                                               \
			fprintf(stderr, "%s:%d: client %d: %s is %lld, not %lld\n", __FILE__,      \
				__LINE__, (int)getpid(), #expr, got_, want_);                      \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

struct test_daemon {
	pid_t pid;
	char dir[64];  /* a fresh temporary directory */
	char sock[96]; /* dir/sock */
};

/* Start uffdd with extra arguments (NULL-terminated, may be NULL) and
 * --no-supervisor, and wait until it answers a Hello. */
void test_daemon_start(struct test_daemon *d, const char *const *extra);
/* The same with uffdd's supervisor: d->pid is the supervisor, which serves
 * through a child. */
void test_daemon_start_supervised(struct test_daemon *d, const char *const *extra);
/* From now on test_daemon_start() and the like run uffdd through the program
 * at $wrapper_env (tests/no-poison.c), which execs $exec_env, set to $UFFDD;
 * test_uffdd_unwrap() goes back to uffdd itself. */
void test_uffdd_wrap(const char *wrapper_env, const char *exec_env);
void test_uffdd_unwrap(void);
/* Start it again on the same socket (after a stop, or a kill). */
void test_daemon_spawn(struct test_daemon *d, const char *const *extra);
/* SIGTERM, and check it exits 0. */
void test_daemon_stop(struct test_daemon *d);
/* What $UFFDCTL prints for args (appended to its --socket option), which
 * must exit 0 and print less than TEST_UFFDCTL_OUT_MAX bytes; the caller
 * frees it. */
#define TEST_UFFDCTL_OUT_MAX 8192
char *test_uffdctl(const struct test_daemon *d, const char *args);
void test_sleep_ms(unsigned int ms);
/* How many times slower than native the programs a test starts run:
 * $TEST_TIME_SCALE, which the valgrind setup sets (they run under valgrind
 * too), else 1.  A wait for such a program's progress is this many times its
 * native bound. */
unsigned int test_time_scale(void);

/* The last stale-pin notice uffdd sent (n: how many came). */
struct test_stale_seen {
	uint64_t cookie, addr, len;
	uint32_t event;
	int n;
};

struct pin_client;
/* A pin_client_opts.stale_fn: records the notice in the struct test_stale_seen
 * that stale_data points to. */
void test_on_stale(struct pin_client *c, uint64_t cookie, uint64_t addr, uint64_t len,
		   uint32_t event, void *userdata);

struct pin_uffd;
struct pin_uffd_opts;
struct pin_client_opts;
/* A client of uffdd: its connection, and the userfaultfd handed over on it. */
struct test_conn {
	struct pin_client *c;
	struct pin_uffd *u;
};
/* In a client process: a userfaultfd opened with uo, a connection made with
 * co, the one handed over on the other.  0, or -1 (REQUIRE said which call
 * failed). */
int test_conn_open(struct test_conn *k, const struct pin_uffd_opts *uo,
		   const struct pin_client_opts *co);
/* Frees the connection and the userfaultfd. */
void test_conn_close(struct test_conn *k);

/* NULL when $UFFDD names the daemon to test and this user can open a
 * userfaultfd; else why not, for test_skip_reason(). */
const char *test_daemon_skip_reason(void);

/* Whether thread tid of uffdd (pid) is one of its placers (uffdd/crew.c). */
bool test_daemon_placer(pid_t pid, const char *tid);

#endif /* UFFDD_HARNESS_H */
