// SPDX-License-Identifier: MIT
/*
 * The uffdd a test talks to: started from $UFFDD on a fresh socket with only
 * stdio open (with --no-supervisor, so that the process started is the one
 * serving, unless the test asks for the supervisor), up once it answers a
 * Hello, stopped with SIGTERM and its exit status checked (under the valgrind
 * setup, 99 is what valgrind makes it exit with when it found an error in the
 * daemon).  A test may start it through a wrapper program (a seccomp filter
 * that refuses a call).  Waits on the daemon scale by test_time_scale().
 */
#include <check.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

/* uffdd answers a Hello within this, natively; polled every UP_POLL_MS. */
#define UP_WAIT_MS 10000
#define UP_POLL_MS 10
/* A larger $TEST_TIME_SCALE is a typo, not a slower machine. */
#define TIME_SCALE_MAX 100

unsigned int test_time_scale(void)
{
	const char *s = getenv("TEST_TIME_SCALE");
	char *end;
	unsigned long v;

	if (!s)
		return 1;
	v = strtoul(s, &end, 10);
	ck_assert_msg(*s && !*end && v >= 1 && v <= TIME_SCALE_MAX,
		      "TEST_TIME_SCALE=%s: not a number from 1 to %d", s, TIME_SCALE_MAX);
	return (unsigned int)v;
}

void test_sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* $UFFDD while it names a wrapper (test_uffdd_wrap()), else NULL. */
static char *unwrapped;

void test_uffdd_wrap(const char *wrapper_env, const char *exec_env)
{
	const char *wrap = getenv(wrapper_env);

	ck_assert_msg(wrap && *wrap, "%s (a program to start uffdd through) is not set",
		      wrapper_env);
	ck_assert_ptr_null(unwrapped);
	unwrapped = strdup(getenv("UFFDD"));
	ck_assert_ptr_nonnull(unwrapped);
	ck_assert_int_eq(setenv(exec_env, unwrapped, 1), 0);
	ck_assert_int_eq(setenv("UFFDD", wrap, 1), 0);
}

void test_uffdd_unwrap(void)
{
	ck_assert_ptr_nonnull(unwrapped);
	ck_assert_int_eq(setenv("UFFDD", unwrapped, 1), 0);
	free(unwrapped);
	unwrapped = NULL;
}

/* supervised: uffdd's own supervisor runs (d->pid is the supervisor's);
 * else --no-supervisor, and d->pid serves. */
static void spawn(struct test_daemon *d, const char *const *extra, bool supervised)
{
	const char *argv[16] = { "uffdd", "--socket", d->sock, "--workers", "2" };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock };
	struct pin_client *c;
	size_t n = 5;

	if (!supervised)
		argv[n++] = "--no-supervisor";

	for (; extra && *extra && n < PIN_ARRAY_SIZE(argv) - 1; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	d->pid = fork();
	ck_assert_int_ge(d->pid, 0);
	if (d->pid == 0) {
		/* Only what a service manager would give it. */
		close_range(3, ~0u, 0);
		execv(getenv("UFFDD"), (char *const *)argv);
		_exit(127);
	}
	/* Up means answering a Hello: its workers run by then. */
	unsigned int wait_ms = UP_WAIT_MS * test_time_scale();

	for (unsigned int waited = 0; waited < wait_ms; waited += UP_POLL_MS) {
		if (pin_client_connect(&co, &c) == 0) {
			pin_client_free(c);
			return;
		}
		ck_assert_int_eq(waitpid(d->pid, NULL, WNOHANG), 0);
		test_sleep_ms(UP_POLL_MS);
	}
	ck_abort_msg("uffdd did not answer a Hello on %s within %u ms", d->sock, wait_ms);
}

void test_daemon_spawn(struct test_daemon *d, const char *const *extra)
{
	spawn(d, extra, false);
}

static void start(struct test_daemon *d, const char *const *extra, bool supervised)
{
	/* Under $TMPDIR when set and short enough for the socket's path:
	 * scripts/mutate removes what a killed test leaves there. */
	const char *tmp = getenv("TMPDIR");
	int n = snprintf(d->dir, sizeof(d->dir), "%s/uffdd-test-XXXXXX",
			 tmp && *tmp ? tmp : "/tmp");
	if (n < 0 || (size_t)n >= sizeof(d->dir))
		snprintf(d->dir, sizeof(d->dir), "/tmp/uffdd-test-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(d->dir));
	snprintf(d->sock, sizeof(d->sock), "%s/sock", d->dir);
	spawn(d, extra, supervised);
}

void test_daemon_start(struct test_daemon *d, const char *const *extra)
{
	start(d, extra, false);
}

void test_daemon_start_supervised(struct test_daemon *d, const char *const *extra)
{
	start(d, extra, true);
}

void test_daemon_stop(struct test_daemon *d)
{
	int st;

	kill(d->pid, SIGTERM);
	ck_assert_int_eq(waitpid(d->pid, &st, 0), d->pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		      "uffdd on %s: %s %d on SIGTERM, not exit 0", d->sock,
		      WIFEXITED(st) ? "exit" : "signal",
		      WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	unlink(d->sock);
	rmdir(d->dir);
}

void test_on_stale(struct pin_client *c, uint64_t cookie, uint64_t addr, uint64_t len,
		   uint32_t event, void *userdata)
{
	struct test_stale_seen *s = userdata;

	*s = (struct test_stale_seen){ cookie, addr, len, event, s->n + 1 };
}

char *test_uffdctl(const struct test_daemon *d, const char *args)
{
	char cmd[512], *out = calloc(1, TEST_UFFDCTL_OUT_MAX);

	ck_assert_ptr_nonnull(out);
	snprintf(cmd, sizeof(cmd), "'%s' --socket '%s' %s", getenv("UFFDCTL"), d->sock, args);
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	size_t n = fread(out, 1, TEST_UFFDCTL_OUT_MAX - 1, f);
	ck_assert_uint_lt(n, TEST_UFFDCTL_OUT_MAX - 1);
	ck_assert_int_eq(pclose(f), 0);
	return out;
}

const char *test_daemon_skip_reason(void)
{
	if (!getenv("UFFDD"))
		return "UFFDD (the uffdd binary to test) is not set; run through meson test";
	return test_uffd_skip_reason();
}

bool test_daemon_placer(pid_t pid, const char *tid)
{
	char comm[32];

	test_task_read(pid, tid, "comm", comm, sizeof(comm));
	return !strcmp(comm, "uffdd-placer");
}

int test_conn_open(struct test_conn *k, const struct pin_uffd_opts *uo,
		   const struct pin_client_opts *co)
{
	REQUIRE(pin_uffd_new(uo, &k->u) == 0);
	REQUIRE(pin_client_connect(co, &k->c) == 0);
	REQUIRE(pin_client_handover(k->c, k->u) == 0);
	return 0;
}

void test_conn_close(struct test_conn *k)
{
	pin_client_free(k->c);
	pin_uffd_free(k->u);
}
