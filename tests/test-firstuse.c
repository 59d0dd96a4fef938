// SPDX-License-Identifier: MIT
/*
 * Suite daemon, area firstuse: what a new user meets first (issue 16).
 * uffdctl's inspection connection (PIN_CLIENT_INSPECT) is no session: it is
 * listed nowhere, counts against no session limit but still against the
 * connection limit, and may change nothing.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

static size_t page;

/* Tries 10 ms apart while the session test_daemon_start() said Hello with
 * is freed (asynchronously): until then it counts against the limits. */
#define CONNECT_TRIES 500

static struct pin_client *connect_as(const struct test_daemon *d, const char *name,
				     unsigned int flags)
{
	struct pin_client_opts co = {
		.sz = sizeof(co), .socket = d->sock, .name = name, .flags = flags
	};
	struct pin_client *c = NULL;
	int r = -EDQUOT;

	for (int i = 0; i < CONNECT_TRIES && r == -EDQUOT; i++) {
		r = pin_client_connect(&co, &c);
		if (r == -EDQUOT)
			test_sleep_ms(10);
	}
	ck_assert_int_eq(r, 0);
	return c;
}

/*
 * Two sessions allowed per uid, three connections: two inspection
 * connections and a session fit (an inspection connection counts as a
 * session only until its Hello is done); a fourth connection does not, for
 * the connections.  The session sees no inspection connection in the lists,
 * and the inspection connection sees only the session; what would change
 * something is refused with -EPERM.
 */
START_TEST(inspect_is_no_session)
{
	const char *const extra[] = { "--max-sessions-per-uid", "2", "--max-connections-per-uid",
				      "3", NULL };
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co), .name = "third" };
	struct test_daemon d;
	struct pin_client_info *ci;
	struct pin_client_stats st;
	struct pin_client *third = NULL;
	struct pin_uffd *u, *u2;
	size_t n;

	test_daemon_start(&d, extra);
	co.socket = d.sock;
	struct pin_client *look = connect_as(&d, "look", PIN_CLIENT_INSPECT);
	struct pin_client *work = connect_as(&d, "work", 0);
	struct pin_client *look2 = connect_as(&d, "look2", PIN_CLIENT_INSPECT);
	ck_assert_int_eq(pin_uffd_new(&uo, &u), 0);
	ck_assert_int_eq(pin_client_handover(work, u), 0);
	uint8_t *base =
		mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(base, MAP_FAILED);
	ck_assert_int_eq(pin_uffd_register(u, base, page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	struct pin_client_region r = { .sz = sizeof(r),
				       .addr = base,
				       .len = page,
				       .mode = PIN_UFFD_REGISTER_MISSING,
				       .flags = PIN_CLIENT_REGION_NO_PUSH,
				       .fd = -1 };
	ck_assert_int_eq(pin_client_region_add(work, &r), 0);

	ck_assert_int_eq(pin_client_list_clients(look, &ci, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ci[0].session, pin_client_session(work));
	ck_assert_str_eq(ci[0].name, "work");
	ck_assert_uint_eq(ci[0].regions, 1);
	free(ci);
	ck_assert_int_eq(pin_client_list_clients(work, &ci, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ci[0].session, pin_client_session(work));
	free(ci);
	ck_assert_int_eq(pin_client_stats(work, pin_client_session(look), &st), -ENOENT);
	ck_assert_int_eq(pin_client_stats(look, PIN_CLIENT_SESSION_ALL, &st), 0);
	ck_assert_uint_eq(st.pages_total, 1);

	/* The connection limit counts the inspection connections (two sessions
	 * would be allowed). */
	ck_assert_int_eq(pin_client_connect(&co, &third), -EDQUOT);
	ck_assert_ptr_null(third);

	ck_assert_int_eq(pin_uffd_new(&uo, &u2), 0);
	ck_assert_int_eq(pin_client_handover(look, u2), -EPERM);
	ck_assert_int_eq(pin_client_region_add(look, &r), -EPERM);
	ck_assert_int_eq(pin_client_pin_report(look, base, page, 1), -EPERM);
	ck_assert_int_eq(pin_client_prefetch(look, base, page), -EPERM);

	ck_assert_int_eq(pin_client_goodbye(look), 0);
	pin_client_free(look);
	pin_client_free(look2);
	ck_assert_int_eq(pin_client_goodbye(work), 0);
	pin_client_free(work);
	pin_uffd_free(u2);
	pin_uffd_free(u);
	munmap(base, page);
	test_daemon_stop(&d);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = test_suite_new("firstuse");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, inspect_is_no_session, 60);
	return s;
}

const char *test_skip_reason(void)
{
	if (!getenv("UFFDD"))
		return "UFFDD (the uffdd binary to test) is not set; run through meson test";
	return test_uffd_skip_reason();
}
