/* SPDX-License-Identifier: MIT */
/* What every tests/test-<area>.c provides to, and takes from, test-main.c. */
#ifndef TEST_COMMON_H
#define TEST_COMMON_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The area's suite. */
Suite *test_suite(void);

/* NULL when the area can run here; else why not (the binary exits 77). */
const char *test_skip_reason(void);

/*
 * Per-tcase needs, for an area whose tcases need different things.  Such an
 * area makes its suite with test_suite_new() and each tcase with
 * test_tcase(): a tcase whose needs are met is added to the suite; one whose
 * needs are not is left out, with one line "SKIP: <area>/<tcase>: <reason>".
 * The binary exits 77 only when every tcase was left out.
 */
enum test_need {
	TEST_NEED_ROOT = 1 << 0,      /* euid 0 */
	TEST_NEED_PTRACE = 1 << 1,    /* CAP_SYS_PTRACE in the effective set */
	TEST_NEED_UFFD_USER = 1 << 2, /* a userfaultfd; USER_MODE_ONLY is enough */
	TEST_NEED_UFFD = 1 << 3,      /* a userfaultfd that takes kernel-mode faults too */
};

struct test_needs {
	unsigned int what;	/* enum test_need bits */
	uint64_t uffd_features; /* PIN_UFFD_FEATURE_* the kernel must offer */
	const char *path_env;	/* names a file or directory that must exist */
	/* The area's own check, run last: NULL when met, else why not. */
	const char *(*check)(void);
};

Suite *test_suite_new(const char *area);

/* A tcase of s (made by test_suite_new()) if needs are met; else a tcase that never runs. */
TCase *test_tcase(Suite *s, const char *name, const struct test_needs *needs);

/* A tcase of one test, named after it, so that one test runs alone:
 * CK_RUN_CASE=name (scripts/mutate does). */
#define TEST_ADD_CASE(s, t, timeout_s)                                                             \
	do {                                                                                       \
		TCase *tc_ = tcase_create(#t);                                                     \
		tcase_set_timeout(tc_, timeout_s);                                                 \
		tcase_add_test(tc_, t);                                                            \
		suite_add_tcase(s, tc_);                                                           \
	} while (0)

/* The 64-bit word stored at virtual address a in a patterned page. */
static inline uint64_t test_pattern(uintptr_t a, uint64_t seed)
{
	return (uint64_t)a ^ 0x9e3779b97f4a7c15ull ^ seed;
}

/* Write len bytes at offset 0 of fd: the word at offset o is test_pattern(o, seed). */
void test_pattern_write(int fd, size_t len, uint64_t seed);

/* A file of len bytes at dir/name written by test_pattern_write() with
 * seed, already unlinked (the descriptor returned holds it): a page source. */
int test_pattern_source(const char *dir, const char *name, size_t len, uint64_t seed);
/* dir and everything below it removed, as far as it can be; no dir is no error. */
void test_rm_tree(const char *dir);

struct test_daemon;
/* fn(d, arg) in a child process (a client: it runs no Check), which exits
 * with what fn returns. */
pid_t test_spawn(int (*fn)(const struct test_daemon *d, void *arg), const struct test_daemon *d,
		 void *arg);
/* Wait for pid: its exit status, 128 + the signal that ended it, or -1 when
 * waitpid() fails. */
int test_reap(pid_t pid);

/* Page i of a region over a patterned source at offset 0 (written by
 * test_pattern_write() with seed) holds the pattern. */
bool test_page_ok(const uint8_t *base, size_t i, uint64_t seed);

/* Page i of the region at base holds only zero bytes. */
bool test_page_zero(const uint8_t *base, size_t i);

/* AnonHugePages of /proc/self/smaps in kB, summed over the mappings inside
 * [addr, addr + len): the transparent huge pages mapped there. */
long test_anon_huge_kb(uint64_t addr, uint64_t len);
/* A field of /proc/self/status in kB (VmPin: the pages this process pins). */
long test_status_kb(const char *field);
/* The same of another process. */
long test_pid_status_kb(pid_t pid, const char *field);
/* Whether reading the first byte of p raises SIGBUS (caught here, so that
 * a sanitizer's own handler does not turn it into an abort). */
bool test_read_bus(const volatile uint8_t *p);
/*
 * A process's descriptors, those below TEST_VALGRIND_FDS: under the valgrind
 * setup (--trace-children) valgrind runs the daemon too, with a few
 * descriptors of its own just below the soft RLIMIT_NOFILE: not counted when
 * that is above 1024; at 1024 (1012 to 1018) they are, and being open all the
 * daemon's life, in every count alike.
 */
#define TEST_VALGRIND_FDS 1024
int test_count_fds(pid_t pid);
/* fn(pid, tid, arg) for each thread of process pid (/proc/PID/task), until
 * fn returns false. */
void test_each_task(pid_t pid, bool (*fn)(pid_t pid, const char *tid, void *arg), void *arg);
/* /proc/PID/task/TID/name of thread tid of pid into buf (at most size - 1
 * bytes, a trailing newline dropped). */
void test_task_read(pid_t pid, const char *tid, const char *name, char *buf, size_t size);
/* Of those past stdio, the ones whose link (/proc/PID/fd/N) matches the
 * fnmatch(3) pattern, whose "*" spans "/" too: "socket:*" counts sockets. */
int test_count_fd_links(pid_t pid, const char *pattern);
/* Read exactly len bytes from fd: false at an end of file or an error. */
bool test_read_all(int fd, void *buf, size_t len);
/* Send len bytes on socket fd in one send(), without SIGPIPE: whether all went. */
bool test_send_all(int fd, const void *buf, size_t len);
/* A TCP socket listening on a port of 127.0.0.1 the kernel picked (one
 * connection's backlog), returned with its port; asserts on failure. */
int test_listen_loopback(uint16_t *ret_port);
/* A new seed each run (patterns, orders), printed: set TEST_SEED_ENV to it
 * to replay a failure. */
#define TEST_SEED_ENV "UFFDD_TEST_SEED"
uint64_t test_seed(void);
/* The next number of the xorshift64 sequence at *state (not 0). */
uint64_t test_rand(uint64_t *state);
/* v[0..n) becomes a random permutation of 0..n-1, the same for the same
 * seed (not 0). */
void test_permutation(size_t *v, size_t n, uint64_t seed);

/* npages of private anonymous memory in small pages only: a partly filled
 * range must not become a huge page (see uffdd(8)). */
uint8_t *test_map_pages(size_t npages);
/* The same of len bytes for client processes, which run no Check: NULL
 * when the mmap() fails. */
void *test_map_region(size_t len);

/* len bytes of private anonymous memory at addr, where nothing may be: a
 * region to fill and then give to test_checkpoint_region(). */
void *test_map_fixed(uint64_t addr, uint64_t len);
/* The one region of len bytes at addr written by pin_image_write() into a
 * new directory /tmp/uffdd-NAME-XXXXXX (its path into ck, of size bytes),
 * then unmapped, for a restore to map it again. */
void test_checkpoint_region(char *ck, size_t size, const char *name, uint64_t addr, uint64_t len);

/* The state letter (R, S, T, Z, ...) in the stat file at path (a process's
 * /proc/PID/stat or a thread's /proc/PID/task/TID/stat). */
char test_proc_state(const char *path);

/* NULL when anonymous memory can have transparent huge pages
 * (/sys/kernel/mm/transparent_hugepage/enabled always or madvise); else why not. */
const char *test_thp_skip_reason(void);

/* NULL when this user can open a userfaultfd; else why not, for test_skip_reason(). */
const char *test_uffd_skip_reason(void);
/* test_uffd_skip_reason(), else why when the kernel does not offer every
 * one of features (PIN_UFFD_FEATURE_*). */
const char *test_uffd_features_skip_reason(uint64_t features, const char *why);

#endif /* TEST_COMMON_H */
