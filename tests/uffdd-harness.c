// SPDX-License-Identifier: MIT
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libpin-private.h"
#include "uffdd-harness.h"

void test_sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

void test_daemon_spawn(struct test_daemon *d, const char *const *extra)
{
	const char *argv[16] = { "uffdd", "--socket", d->sock, "--workers", "2" };
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock };
	struct pin_client *c;
	size_t n = 5;

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
	for (int i = 0; i < 1000; i++) {
		if (pin_client_connect(&co, &c) == 0) {
			pin_client_free(c);
			return;
		}
		ck_assert_int_eq(waitpid(d->pid, NULL, WNOHANG), 0);
		test_sleep_ms(10);
	}
	ck_abort_msg("uffdd did not come up on %s", d->sock);
}

void test_daemon_start(struct test_daemon *d, const char *const *extra)
{
	/* Under $TMPDIR when set and short enough for the socket's path:
	 * scripts/mutate removes what a killed test leaves there. */
	const char *tmp = getenv("TMPDIR");
	int n = snprintf(d->dir, sizeof(d->dir), "%s/uffdd-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (n < 0 || (size_t)n >= sizeof(d->dir))
		snprintf(d->dir, sizeof(d->dir), "/tmp/uffdd-test-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(d->dir));
	snprintf(d->sock, sizeof(d->sock), "%s/sock", d->dir);
	test_daemon_spawn(d, extra);
}

void test_daemon_stop(struct test_daemon *d)
{
	int st;

	kill(d->pid, SIGTERM);
	ck_assert_int_eq(waitpid(d->pid, &st, 0), d->pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	unlink(d->sock);
	rmdir(d->dir);
}

void test_on_stale(struct pin_client *c, uint64_t cookie, uint64_t addr, uint64_t len,
		   uint32_t event, void *userdata)
{
	struct test_stale_seen *s = userdata;

	*s = (struct test_stale_seen){ cookie, addr, len, event, s->n + 1 };
}
