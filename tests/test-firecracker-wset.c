// SPDX-License-Identifier: MIT
/*
 * The working sets uffdd keeps between Firecracker VMs of one memory file
 * (uffdd/fcwset.c), against the fake VMM of fc-vmm.c: the next VM restored
 * from the same snapshot has the last one's set placed before it runs, by
 * the same daemon or by one restarted after a kill -9 (the set kept in the
 * fd store); a memory file rewritten is another snapshot: no replay.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fc-vmm.h"
#include "libpin-private.h"
#include "manager.h"
#include "test-common.h"
#include "uffdd-harness.h"

#define CASE_TIMEOUT_S 120

/*
 * The working set the first VM faults on before its handshake is read:
 * away from where each region's push begins (it places one run of 256
 * pages a worker round, the lower region's first, before the faults are
 * read), and 3 pages apart (no fault is sequential to another: each places
 * its own page, no readahead).  So it is recorded as 6 runs of a page.
 */
static const struct vmm_page first_wset[] = {
	{ 0, 520 }, { 0, 600 }, { 0, 606 }, { 1, 600 }, { 1, 603 }, { 1, 700 },
};
#define WSET_N PIN_ARRAY_SIZE(first_wset)

static const char *const replaying = "replaying the working set the last VM of ";
/* Its sessions' lines of LOG_INFO. */
static const char *const verbose[] = { "--verbose", NULL };

/* The line a VM's session that ends leaves, and the one a replay of the
 * first VM's set ends with. */
static void wset_lines(const struct fc *f, char *kept, size_t klen, char *replayed, size_t rlen)
{
	snprintf(kept, klen, "kept its working set for the next VM of %s: %zu runs\n", f->mem,
		 WSET_N);
	snprintf(replayed, rlen, "working set replayed: %zu pages placed\n", WSET_N);
}

/* The second VM has the first one's set in place: every page of it reads
 * as the memory file's, and uffdctl (on socket) counts not one fault. */
static void check_replayed(const struct fc *f, const char *socket)
{
	struct test_daemon d = { 0 };

	for (size_t k = 0; k < WSET_N; k++)
		vmm_check_page(f, first_wset[k].r, first_wset[k].i, false);
	snprintf(d.sock, sizeof(d.sock), "%s", socket);
	char *out = test_uffdctl(&d, "--json stats");
	ck_assert_msg(strstr(out, "\"faults\":0,"), "the second VM faulted on its set:\n%s", out);
	free(out);
}

/* The memory file rewritten: the same bytes, another mtime. */
static void rewrite_snapshot(const struct fc *f)
{
	struct timespec old[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = 1 } };

	ck_assert_int_eq(futimens(f->memfd, old), 0);
}

/* The VM exits (its connection closed first) once the daemon kept its
 * working set: the kept line n times in the log. */
static void exit_kept(struct fc *f, const char *kept, unsigned int n)
{
	close(f->conn);
	f->conn = -1;
	free(fc_wait_log(f, kept, n));
	vmm_exit(f);
}

/* The next VM restored from the same memory file has the first one's
 * working set placed before it runs: not one fault on it; a memory file
 * rewritten (another mtime) is another snapshot: no replay. */
START_TEST(second_restore_replays_working_set)
{
	struct fc f = { 0 };
	char kept[300], replayed[100];

	fc_up_with(&f, verbose);
	wset_lines(&f, kept, sizeof(kept), replayed, sizeof(replayed));
	vmm_memory(&f);
	vmm_handshake_after_faults(&f, first_wset, WSET_N);
	exit_kept(&f, kept, 1);

	/* The second VM, its guest at other addresses: the set is in place
	 * before it touches it. */
	vmm_memory(&f);
	vmm_handshake(&f);
	free(fc_wait_log(&f, replayed, 1));
	check_replayed(&f, f.d.sock);
	/* It leaves the same set: the replayed one is its own too. */
	exit_kept(&f, kept, 2);

	/* The snapshot rewritten: a third VM gets no replay. */
	rewrite_snapshot(&f);
	vmm_memory(&f);
	vmm_handshake(&f);
	for (size_t k = 0; k < WSET_N; k++)
		vmm_check_page(&f, first_wset[k].r, first_wset[k].i, false);
	char *log = fc_read_log(&f);
	ck_assert_msg(fc_count(log, replaying) == 1, "a rewritten snapshot was replayed:\n%s", log);
	free(log);
	fc_down(&f);
}
END_TEST

/* kill -9 and a start by the service manager, the daemon's log in f's. */
static void restart(const struct fc *f, struct manager *mgr)
{
	int saved = fc_log_begin(f);

	ck_assert_int_eq(manager_kill9_restart(mgr), 0);
	fc_log_end(saved);
}

/*
 * The kept set survives a restart: the first VM leaves it (in the fd store
 * as w1), uffdd is killed (-9) and started again, and the second VM, served
 * by the successor, has it placed before it runs.  It leaves it again; the
 * memory file is rewritten and uffdd restarted: the successor drops the set
 * (another snapshot), and a third VM gets no replay.
 */
START_TEST(working_set_survives_restart)
{
	struct fc f = { 0 };
	char kept[300], replayed[100], taken[300], dropped[300];
	struct manager *mgr;

	mgr = fc_managed_with(&f, NULL, verbose);
	wset_lines(&f, kept, sizeof(kept), replayed, sizeof(replayed));
	snprintf(taken, sizeof(taken), "kept working set of %s taken over: %zu runs\n", f.mem,
		 WSET_N);
	snprintf(dropped, sizeof(dropped), "fd store: w1: %s holds another snapshot now; dropped\n",
		 f.mem);

	vmm_memory(&f);
	vmm_handshake_after_faults(&f, first_wset, WSET_N);
	fc_vm_exits(&f, mgr);
	vmm_exit(&f);
	free(fc_wait_log(&f, kept, 1));
	ck_assert_uint_eq(manager_count(mgr, "w1"), 1);

	restart(&f, mgr);
	free(fc_wait_log(&f, taken, 1));
	vmm_memory(&f);
	vmm_handshake(&f);
	free(fc_wait_log(&f, replayed, 1));
	check_replayed(&f, manager_socket(mgr));
	fc_vm_exits(&f, mgr);
	vmm_exit(&f);
	free(fc_wait_log(&f, kept, 2));
	/* Replaced, not added to. */
	ck_assert_uint_eq(manager_count(mgr, "w1"), 1);

	rewrite_snapshot(&f);
	restart(&f, mgr);
	free(fc_wait_log(&f, dropped, 1));
	ck_assert_uint_eq(manager_count(mgr, "w1"), 0);
	vmm_memory(&f);
	vmm_handshake(&f);
	for (size_t k = 0; k < WSET_N; k++)
		vmm_check_page(&f, first_wset[k].r, first_wset[k].i, false);
	fc_vm_exits(&f, mgr);
	vmm_exit(&f);
	char *log = fc_read_log(&f);
	ck_assert_msg(fc_count(log, replaying) == 1, "a rewritten snapshot was replayed:\n%s", log);
	free(log);
	fc_managed_down(&f, mgr);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("firecracker-wset");

	TEST_ADD_CASE(s, second_restore_replays_working_set, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, working_set_survives_restart, CASE_TIMEOUT_S);
	return s;
}

const char *test_skip_reason(void)
{
	return fc_skip_reason(FC_WHY_PAGE_JSON);
}
