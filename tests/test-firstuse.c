// SPDX-License-Identifier: MIT
/*
 * Suite daemon, area firstuse: what a new user meets first (issue 16).
 * uffdctl's inspection connection (PIN_CLIENT_INSPECT) is no session: it is
 * listed nowhere, counts against no session limit but still against the
 * connection limit, and may change nothing.  A region handed over is
 * registered by libpin unless the caller says it did
 * (PIN_CLIENT_REGION_REGISTERED), and then it is checked: a range nobody
 * registered would read as zero pages, never reaching the daemon.
 */
#include <errno.h>
#include <fcntl.h>
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

#define REG_PAGES 8
#define REG_SEED  0x16

/* A daemon, a client with a userfaultfd handed over, REG_PAGES fresh pages
 * and a patterned source of as many. */
struct reg {
	struct test_daemon d;
	struct pin_uffd *u;
	struct pin_client *c;
	uint8_t *base;
	int src;
};

static void reg_start(struct reg *g)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	char path[128];

	test_daemon_start(&g->d, NULL);
	g->c = connect_as(&g->d, "reg", 0);
	ck_assert_int_eq(pin_uffd_new(&uo, &g->u), 0);
	ck_assert_int_eq(pin_client_handover(g->c, g->u), 0);
	g->base = test_map_pages(REG_PAGES);
	ck_assert_ptr_nonnull(g->base);
	snprintf(path, sizeof(path), "%s/src", g->d.dir);
	g->src = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ck_assert_int_ge(g->src, 0);
	test_pattern_write(g->src, REG_PAGES * page, REG_SEED);
}

static void reg_stop(struct reg *g)
{
	ck_assert_int_eq(pin_client_goodbye(g->c), 0);
	pin_client_free(g->c);
	pin_uffd_free(g->u);
	munmap(g->base, REG_PAGES * page);
	close(g->src);
	test_daemon_stop(&g->d);
}

static int reg_add(struct reg *g, size_t first, size_t n, unsigned int flags)
{
	struct pin_client_region r = { .sz = sizeof(r),
				       .addr = g->base + first * page,
				       .len = n * page,
				       .mode = PIN_UFFD_REGISTER_MISSING,
				       .flags = PIN_CLIENT_REGION_NO_PUSH | flags,
				       .fd = g->src,
				       .offset = first * page };

	return pin_client_region_add(g->c, &r);
}

static size_t reg_regions(struct reg *g)
{
	struct pin_client_region_info *v;
	size_t n;

	ck_assert_int_eq(pin_client_list_regions(g->c, 0, &v, &n), 0);
	free(v);
	return n;
}

/*
 * Pages 0-1 never registered by the caller: libpin registers them and they
 * read as the source says (they read as zeros before, the daemon never
 * asked).  Pages 2-3 registered by the caller and added with the flag that
 * says so: served.  Pages 4-5 with that flag but never registered, and 6-7
 * registered only in half: refused with -EINVAL, no region made.
 */
START_TEST(region_registered_for_the_caller)
{
	struct reg g;

	reg_start(&g);
	ck_assert_int_eq(reg_add(&g, 0, 2, 0), 0);
	ck_assert(test_page_ok(g.base, 0, REG_SEED));
	ck_assert(test_page_ok(g.base, 1, REG_SEED));

	ck_assert_int_eq(pin_uffd_register(g.u, g.base + 2 * page, 2 * page,
					   PIN_UFFD_REGISTER_MISSING, NULL),
			 0);
	ck_assert_int_eq(reg_add(&g, 2, 2, PIN_CLIENT_REGION_REGISTERED), 0);
	ck_assert(test_page_ok(g.base, 3, REG_SEED));
	ck_assert(test_page_ok(g.base, 2, REG_SEED));
	ck_assert_uint_eq(reg_regions(&g), 2);

	ck_assert_int_eq(reg_add(&g, 4, 2, PIN_CLIENT_REGION_REGISTERED), -EINVAL);
	ck_assert_int_eq(
		pin_uffd_register(g.u, g.base + 6 * page, page, PIN_UFFD_REGISTER_MISSING, NULL),
		0);
	ck_assert_int_eq(reg_add(&g, 6, 2, PIN_CLIENT_REGION_REGISTERED), -EINVAL);
	/* WP was never registered on pages 2-3. */
	struct pin_client_region wp = { .sz = sizeof(wp),
					.addr = g.base + 2 * page,
					.len = 2 * page,
					.mode = PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP,
					.flags = PIN_CLIENT_REGION_REGISTERED,
					.fd = -1 };
	ck_assert_int_eq(pin_client_region_add(g.c, &wp), -EINVAL);
	ck_assert_int_eq(
		reg_add(&g, 4, 2, PIN_CLIENT_REGION_REGISTER | PIN_CLIENT_REGION_REGISTERED),
		-EINVAL);
	ck_assert_uint_eq(reg_regions(&g), 2);
	/* Pages 4-5 untouched by all this: still a plain anonymous zero page. */
	ck_assert(test_page_zero(g.base, 4));
	reg_stop(&g);
}
END_TEST

/* A range another userfaultfd has: -EBUSY from the registration, and the
 * daemon is not asked. */
START_TEST(region_of_another_uffd_refused)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_uffd *other;
	struct reg g;

	reg_start(&g);
	ck_assert_int_eq(pin_uffd_new(&uo, &other), 0);
	ck_assert_int_eq(
		pin_uffd_register(other, g.base, 2 * page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(reg_add(&g, 0, 2, 0), -EBUSY);
	ck_assert_uint_eq(reg_regions(&g), 0);
	pin_uffd_free(other);
	reg_stop(&g);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = test_suite_new("firstuse");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, inspect_is_no_session, 60);
	TEST_ADD_CASE(s, region_registered_for_the_caller, 60);
	TEST_ADD_CASE(s, region_of_another_uffd_refused, 60);
	return s;
}

const char *test_skip_reason(void)
{
	return test_daemon_skip_reason();
}
