// SPDX-License-Identifier: MIT
/*
 * uffdd as Firecracker's page-fault handler (uffdd/firecracker.c), against
 * the fake VMM of fc-vmm.c: the test process is the VMM; it touches the
 * guest memory as a guest would, and checks every byte against the memory
 * file.  Handshakes refused, the balloon, a daemon killed mid-restore
 * (test-firecracker-wset.c: the working sets kept for the next VM).
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fc-vmm.h"
#include "libpin-private.h"
#include "manager.h"
#include "test-common.h"
#include "uffdd-harness.h"

#define CASE_TIMEOUT_S 120
/* A balloon deflating part of region 1: pages from, count. */
#define BALLOON_FIRST 100
#define BALLOON_PAGES 64
/* How long a refused VM waits for uffdd to close its connection (a bound,
 * not a measure: the daemon reads the handshake at once). */
#define CLOSE_WAIT_S 30
/* How long uffdd may take to free a session whose connection closed
 * (natively; scaled by test_time_scale()). */
#define SETTLE_POLLS   1000
#define SETTLE_POLL_MS 10
/* What count_session_fds() finds with no session: the two listening
 * sockets and uffdd's own copy of the memory file. */
#define SETTLED_FDS 3

static size_t page;

/* How uffdd closes a VM's connection, as the VM's recv() sees it. */
enum closed {
	CLOSED_EOF,   /* end-of-file: uffdd read everything that was sent */
	CLOSED_RESET, /* ECONNRESET: uffdd left what was sent unread (it peeks) */
	/* Either: the kernel reports the reset once, to whichever call on s
	 * comes first (a sender's, or this recv()). */
	CLOSED_EITHER,
};

static void wait_closed(int s, enum closed how)
{
	struct timeval tv = { .tv_sec = CLOSE_WAIT_S * (time_t)test_time_scale() };
	char b;

	ck_assert_int_eq(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	errno = 0;
	ssize_t n = recv(s, &b, 1, 0);
	bool eof = n == 0, reset = n == -1 && errno == ECONNRESET;
	ck_assert_msg(how == CLOSED_EOF	    ? eof
		      : how == CLOSED_RESET ? reset
					    : eof || reset,
		      "recv() after uffdd closed: %zd, %s", n, strerror(errno));
}

/*
 * uffdd's descriptors of the kinds a session holds, counted the same before
 * any session and once every session is freed: sockets (its two listening
 * ones stay), sessions' records (memfds), userfaultfds, and the memory file
 * (its own copy stays; a session's source holds another).  session_free()
 * closes the memory file last: counting sockets and records alone, a test
 * compared the daemon's descriptors while it was still open (issue 15).
 */
static int count_session_fds(const struct fc *f)
{
	char path[300], link[64];
	struct stat mem, st;
	int n = 0;

	ck_assert_int_eq(fstat(f->memfd, &mem), 0);
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)f->d.pid);
	DIR *d = opendir(path);
	ck_assert_ptr_nonnull(d);
	for (struct dirent *e; (e = readdir(d));) {
		snprintf(path, sizeof(path), "/proc/%d/fd/%s", (int)f->d.pid, e->d_name);
		ssize_t k = readlink(path, link, sizeof(link) - 1);
		if (k <= 0)
			continue;
		link[k] = '\0';
		if (!strncmp(link, "socket:", 7) || strstr(link, "memfd:uffdd-state") ||
		    !strcmp(link, "anon_inode:[userfaultfd]"))
			n++;
		else if (!stat(path, &st) && st.st_dev == mem.st_dev && st.st_ino == mem.st_ino)
			n++;
	}
	closedir(d);
	return n;
}

/* Sessions are freed by their workers once their connections close: wait
 * until none is left (count_session_fds() down to SETTLED_FDS), and return
 * the daemon's descriptors then. */
static int settled_fds(const struct fc *f)
{
	unsigned int polls = SETTLE_POLLS * test_time_scale();
	int n = -1;

	for (unsigned int i = 0; i < polls && (n = count_session_fds(f)) != SETTLED_FDS; i++)
		test_sleep_ms(SETTLE_POLL_MS);
	ck_assert_msg(n == SETTLED_FDS,
		      "uffdd has %d sockets, records, userfaultfds and memory files, not its 2 "
		      "listening sockets and its memory file",
		      n);
	return test_count_fds(f->d.pid);
}

/* ---- tests ---- */

/* Every byte of both regions comes from the memory file, touched in a
 * random order; uffdctl lists the VM's session like any other. */
START_TEST(restore_every_byte)
{
	struct fc f = { 0 };

	fc_up(&f);
	vmm_memory(&f);
	vmm_handshake(&f);
	vmm_touch(&f, 0, 0, f.len[0] / page, test_seed());
	vmm_touch(&f, 1, 0, f.len[1] / page, test_seed() + 1);

	char *out = test_uffdctl(&f.d, "--json clients"), name[160];

	snprintf(name, sizeof(name), "\"name\":\"firecracker %s\"", f.sock);
	ck_assert_msg(strstr(out, name), "uffdctl clients does not list \"%s\":\n%s", name, out);
	free(out);
	fc_down(&f);
}
END_TEST

/* The balloon takes pages back (MADV_DONTNEED: a REMOVE event): they read
 * as zero from then on, and the rest as the file. */
START_TEST(balloon_remove_reads_zero)
{
	struct fc f = { 0 };

	fc_up(&f);
	vmm_memory(&f);
	vmm_handshake(&f);
	vmm_touch(&f, 1, 0, f.len[1] / page, test_seed());
	ck_assert_int_eq(
		madvise(f.reg[1] + BALLOON_FIRST * page, BALLOON_PAGES * page, MADV_DONTNEED), 0);
	for (size_t i = 0; i < f.len[1] / page; i++)
		vmm_check_page(&f, 1, i, i >= BALLOON_FIRST && i < BALLOON_FIRST + BALLOON_PAGES);
	/* Pages removed before they were ever touched: zero too. */
	ck_assert_int_eq(madvise(f.reg[0], BALLOON_PAGES * page, MADV_DONTNEED), 0);
	for (size_t i = 0; i < f.len[0] / page; i++)
		vmm_check_page(&f, 0, i, i < BALLOON_PAGES);
	/* The guest writes a removed page: it keeps what was written. */
	memset(f.reg[1] + BALLOON_FIRST * page, 0x5a, page);
	ck_assert_uint_eq(f.reg[1][BALLOON_FIRST * page + page - 1], 0x5a);
	fc_down(&f);
}
END_TEST

/* The handshake of region 0 alone, its page size under key ("page_size", or
 * "page_size_kib" alone as releases before page_size sent it): served, every
 * page of it right. */
static void serve_region0(struct fc *f, const char *key)
{
	char json[512];
	int n = snprintf(json, sizeof(json),
			 "[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":0,"
			 "\"%s\":%zu}]",
			 (uint64_t)(uintptr_t)f->reg[0], f->len[0], key, page);

	ck_assert_int_lt(n, (int)sizeof(json));
	f->conn = vmm_connect(f->sock);
	vmm_send(f->conn, json, (size_t)n, &f->uffd, 1);
	vmm_touch(f, 0, 0, f->len[0] / page, test_seed());
}

/* Firecracker releases before page_size sent page_size_kib alone. */
START_TEST(old_handshake_page_size_kib)
{
	struct fc f = { 0 };

	fc_up(&f);
	vmm_memory(&f);
	serve_region0(&f, "page_size_kib");
	fc_down(&f);
}
END_TEST

/* A handshake refused: sent as given, the connection closed by uffdd, the
 * log line exactly as expected, and no descriptor left behind. */
static void refused(struct fc *f, const char *body, size_t len, size_t nfds, const char *line)
{
	int fds[4] = { f->uffd, f->uffd, f->uffd, f->uffd };
	int base = settled_fds(f);
	int s = vmm_connect(f->sock);

	vmm_send(s, body, len, fds, nfds);
	wait_closed(s, CLOSED_RESET);
	close(s);
	int n = settled_fds(f);
	ck_assert_msg(n == base, "uffdd has %d descriptors after refusing \"%s\", %d before", n,
		      line, base);
	char *log = fc_read_log(f), want[512];
	snprintf(want, sizeof(want), "Firecracker handshake (pid %d) refused: %s\n", (int)getpid(),
		 line);
	ck_assert_msg(strstr(log, want), "no line \"%s\" in uffdd's log:\n%s", want, log);
	free(log);
}

START_TEST(malformed_refused)
{
	struct fc f = { 0 };
	char json[1024], line[512];
	uint64_t a0, a1;

	fc_up(&f);
	vmm_memory(&f);
	a0 = (uintptr_t)f.reg[0];
	a1 = (uintptr_t)f.reg[1];
	int n = vmm_json(&f, json, sizeof(json));

	/* Overlapping regions: region 1 said to start inside region 0. */
	n = snprintf(json, sizeof(json),
		     "[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":0,"
		     "\"page_size\":%zu},{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,"
		     "\"offset\":0,\"page_size\":%zu}]",
		     a0, f.len[0], page, a0 + page, f.len[0], page);
	snprintf(line, sizeof(line),
		 "mappings [%#" PRIx64 ", +%#zx) and [%#" PRIx64
		 ", +%#zx) overlap: Invalid argument",
		 a0, f.len[0], a0 + page, f.len[0]);
	refused(&f, json, (size_t)n, 1, line);

	/* Past the end of the memory file. */
	n = snprintf(json, sizeof(json),
		     "[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":%zu,"
		     "\"page_size\":%zu}]",
		     a1, f.len[1], (size_t)(MEM_MIB * MIB) - f.len[1] + page, page);
	snprintf(line, sizeof(line),
		 "mapping 0: offset %#zx + size %#zx is past the end of the memory file (%#zx "
		 "bytes): Invalid argument",
		 (size_t)(MEM_MIB * MIB) - f.len[1] + page, f.len[1], (size_t)(MEM_MIB * MIB));
	refused(&f, json, (size_t)n, 1, line);

	/* A page size no guest has. */
	n = snprintf(json, sizeof(json),
		     "[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":0,"
		     "\"page_size\":8192}]",
		     a0, f.len[0]);
	refused(&f, json, (size_t)n, 1,
		"mapping 0: page size 8192; 4096 or 2097152: Invalid argument");

	/* 2 MiB pages (hugetlbfs) at an address that is not a huge page's
	 * (bit 12 set). */
	n = snprintf(json, sizeof(json),
		     "[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":0,"
		     "\"page_size\":2097152}]",
		     a0 | page, (size_t)(2 * MIB));
	snprintf(line, sizeof(line),
		 "mapping 0 [%#" PRIx64 ", +0x200000) at offset 0: empty or not aligned to its "
		 "2097152-byte pages: Invalid argument",
		 a0 | page);
	refused(&f, json, (size_t)n, 1, line);

	/* Not aligned. */
	n = snprintf(json, sizeof(json),
		     "[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":0,"
		     "\"page_size\":4096}]",
		     a0 + 8, f.len[0] - page);
	snprintf(line, sizeof(line),
		 "mapping 0 [%#" PRIx64 ", +%#zx) at offset 0: empty or not aligned to its "
		 "4096-byte pages: Invalid argument",
		 a0 + 8, f.len[0] - page);
	refused(&f, json, (size_t)n, 1, line);

	/* page_size and page_size_kib disagree. */
	n = snprintf(json, sizeof(json),
		     "[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":0,"
		     "\"page_size\":4096,\"page_size_kib\":2097152}]",
		     a0, f.len[0]);
	refused(&f, json, (size_t)n, 1,
		"mapping 0: \"page_size\" 4096 and \"page_size_kib\" 2097152 disagree: Invalid "
		"argument");

	/* A negative size. */
	n = snprintf(json, sizeof(json),
		     "[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":-4096,\"offset\":0,"
		     "\"page_size\":4096}]",
		     a0);
	refused(&f, json, (size_t)n, 1,
		"mapping 0: \"size\" is not an integer in [0, 2^63 - 1): Invalid argument");

	/* Truncated JSON. */
	n = vmm_json(&f, json, sizeof(json));
	snprintf(line, sizeof(line), "truncated JSON (%d bytes): Bad message", n - 5);
	refused(&f, json, (size_t)n - 5, 1, line);

	/* Not JSON. */
	refused(&f, "hello", 5, 1, "not JSON: unexpected character at byte 0: Bad message");

	/* A JSON object, not the array. */
	refused(&f, "{}", 2, 1, "not a JSON array of mappings: Invalid argument");

	/* No userfaultfd attached. */
	n = vmm_json(&f, json, sizeof(json));
	refused(&f, json, (size_t)n, 0,
		"0 descriptors; Firecracker sends its userfaultfd alone, or with its guest_memfd "
		"and userfault bitmap: Bad file descriptor");

	/* Three, the guest_memfd variant's count, for mappings that are not of a
	 * guest_memfd (test-firecracker-gmem.c: the variant itself). */
	refused(&f, json, (size_t)n, 3,
		"3 descriptors, and its mappings say \"is_guest_memfd\": false: Bad file "
		"descriptor");

	/* A descriptor that is no userfaultfd. */
	int fd = f.uffd;
	f.uffd = f.memfd;
	refused(&f, json, (size_t)n, 1, "the descriptor is not a userfaultfd: Bad file descriptor");
	f.uffd = fd;
	fc_down(&f);
}
END_TEST

/* The VM is charged to its uid like any client: a guest of two regions
 * over a limit of one is refused, and the first region is given back. */
START_TEST(over_uid_limit_refused)
{
	static const char *const limit[] = { "--max-regions-per-uid", "1", NULL };
	struct fc f = { 0 };
	char json[1024];

	fc_up_with(&f, limit);
	vmm_memory(&f);
	int n = vmm_json(&f, json, sizeof(json));
	char line[160];
	snprintf(line, sizeof(line),
		 "its regions: region 1 of 2: uid %u has 1 regions, the limit is 1: Disk quota "
		 "exceeded",
		 (unsigned int)getuid());
	refused(&f, json, (size_t)n, 1, line);
	/* Given back: a guest of one region is served. */
	serve_region0(&f, "page_size");
	fc_down(&f);
}
END_TEST

/* A message over the bound: read no further than it, and refused. */
START_TEST(huge_message_refused)
{
	struct fc f = { 0 };
	size_t len = 1 << 20;

	fc_up(&f);
	vmm_memory(&f);
	int base = settled_fds(&f);
	int s = vmm_connect(f.sock);
	char *big = malloc(len);
	ck_assert_ptr_nonnull(big);
	memset(big, ' ', len);
	big[0] = '[';
	/* Sent from a child: the socket's buffer holds less, and uffdd stops
	 * reading past the bound; the child ends when the connection does. */
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int))];
		} cm = { 0 };
		struct iovec iov = { big, len };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = cm.b,
				     .msg_controllen = sizeof(cm.b) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &f.uffd, sizeof(int));
		sendmsg(s, &mh, MSG_NOSIGNAL);
		_exit(0);
	}
	wait_closed(s, CLOSED_EITHER);
	close(s);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	free(big);
	ck_assert_int_eq(settled_fds(&f), base);
	char *log = fc_read_log(&f), want[256];
	snprintf(want, sizeof(want),
		 "Firecracker handshake (pid %d) refused: a message over 65536 bytes: Message too "
		 "long\n",
		 (int)getpid());
	ck_assert_msg(strstr(log, want), "no line \"%s\" in uffdd's log:\n%s", want, log);
	free(log);
	fc_down(&f);
}
END_TEST

/* A VM that connects and says nothing is closed after the handshake's time. */
START_TEST(silent_vm_closed)
{
	struct fc f = { 0 };

	fc_up(&f);
	int s = vmm_connect(f.sock);
	wait_closed(s, CLOSED_EOF);
	close(s);
	char *log = fc_read_log(&f);
	ck_assert_msg(strstr(log, "Firecracker handshake refused: none came within 5000 ms: "
				  "Connection timed out\n"),
		      "no time-out line in uffdd's log:\n%s", log);
	free(log);
	fc_down(&f);
}
END_TEST

/* Pages of [p, p + n pages) not in this process's memory (mincore). */
static size_t absent(const uint8_t *p, size_t n)
{
	unsigned char v[4096];
	size_t k = 0;

	ck_assert_uint_le(n, sizeof(v));
	ck_assert_int_eq(mincore((void *)p, n * page, v), 0);
	for (size_t i = 0; i < n; i++)
		k += !(v[i] & 1);
	return k;
}

/*
 * uffdd killed (-9) halfway through a restore and started again by its
 * service manager: the VM's session is taken over from the fd store (its
 * connection, userfaultfd and record: no Resume is sent to the VM), the
 * rest of its memory arrives byte for byte, pages the balloon removed
 * before the kill still read as zero, and the successor reads the balloon's
 * next REMOVE (madvise() waits for that) and serves the refault as zero.
 */
START_TEST(kill9_mid_restore)
{
	struct fc f = { 0 };
	struct manager *mgr;
	size_t half;

	mgr = fc_managed(&f, NULL);
	size_t idle = manager_count(mgr, "*");
	vmm_memory(&f);
	vmm_handshake(&f);
	half = f.len[1] / page / 2;
	vmm_touch(&f, 1, 0, half, test_seed());
	ck_assert_int_eq(madvise(f.reg[0], BALLOON_PAGES * page, MADV_DONTNEED), 0);
	/* madvise() returns once the daemon has read the REMOVE, maybe before
	 * it recorded it (a kill then loses it: the kernel forgets an event
	 * once read); the refault of a removed page is served once it is. */
	vmm_check_page(&f, 0, 0, true);
	/* The daemon stopped where it is: what the kill leaves to its
	 * successor (the background push may have placed every page). */
	ck_assert_int_eq(manager_freeze(mgr), 0);
	printf("pages not in place at the kill: %zu of %zu\n",
	       absent(f.reg[0], f.len[0] / page) + absent(f.reg[1], f.len[1] / page),
	       (f.len[0] + f.len[1]) / page);
	ck_assert_int_eq(manager_kill9_restart(mgr), 0);
	/* The VM's connection, userfaultfd and record, kept and taken over. */
	ck_assert_uint_eq(manager_count(mgr, "s[0-9]*"), 3);
	vmm_touch(&f, 1, half, f.len[1] / page, test_seed() + 1);
	for (size_t i = 0; i < f.len[0] / page; i++)
		vmm_check_page(&f, 0, i, i < BALLOON_PAGES);
	for (size_t i = 0; i < half; i++)
		vmm_check_page(&f, 1, i, false);
	ck_assert_int_eq(
		madvise(f.reg[1] + BALLOON_FIRST * page, BALLOON_PAGES * page, MADV_DONTNEED), 0);
	for (size_t i = 0; i < f.len[1] / page; i++)
		vmm_check_page(&f, 1, i, i >= BALLOON_FIRST && i < BALLOON_FIRST + BALLOON_PAGES);
	/* The VM exits: its session and its descriptors leave the store; the
	 * working set it leaves for the next VM (w1) goes in. */
	fc_vm_exits(&f, mgr);
	ck_assert_int_eq(manager_wait_count(mgr, "f[0-9]*", 0, FC_READY_MS * test_time_scale()), 0);
	ck_assert_uint_eq(manager_count(mgr, "w1"), 1);
	ck_assert_uint_eq(manager_count(mgr, "*"), idle + 1);
	fc_managed_down(&f, mgr);
}
END_TEST

/* The daemon dies after it accepted and stored a VM's connection and before
 * it read the handshake (held there by UFFDD_HOLD): its successor reads the
 * handshake, still queued on the stored connection, and serves the VM. */
START_TEST(kill9_before_handshake_read)
{
	struct fc f = { 0 };
	struct manager *mgr;

	mgr = fc_managed(&f, "fc-accepted");
	vmm_memory(&f);
	vmm_handshake(&f);
	ck_assert_int_eq(manager_wait_stopped(mgr), 0);
	/* Its connection and record, no userfaultfd yet. */
	ck_assert_uint_eq(manager_count(mgr, "s[0-9]*.conn"), 1);
	ck_assert_uint_eq(manager_count(mgr, "s[0-9]*.state"), 1);
	ck_assert_uint_eq(manager_count(mgr, "s[0-9]*.uffd"), 0);
	ck_assert_int_eq(manager_kill9_restart(mgr), 0);
	vmm_touch(&f, 0, 0, f.len[0] / page, test_seed());
	vmm_touch(&f, 1, 0, f.len[1] / page, test_seed() + 1);
	ck_assert_uint_eq(manager_count(mgr, "s[0-9]*.uffd"), 1);
	fc_vm_exits(&f, mgr);
	fc_managed_down(&f, mgr);
}
END_TEST

/* The daemon dies after the VM's session is made and committed and before
 * the handshake is taken off the connection (held there by UFFDD_HOLD): the
 * successor serves the session as recorded and drops the handshake. */
START_TEST(kill9_before_handshake_taken)
{
	struct fc f = { 0 };
	struct manager *mgr = fc_managed(&f, "fc-served");

	vmm_memory(&f);
	vmm_handshake(&f);
	ck_assert_int_eq(manager_wait_stopped(mgr), 0);
	ck_assert_uint_eq(manager_count(mgr, "s[0-9]*.uffd"), 1);
	ck_assert_int_eq(manager_kill9_restart(mgr), 0);
	vmm_touch(&f, 1, 0, f.len[1] / page, test_seed());
	vmm_touch(&f, 0, 0, f.len[0] / page, test_seed() + 1);
	/* The connection is still the session's: closing it ends the session. */
	fc_vm_exits(&f, mgr);
	fc_managed_down(&f, mgr);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("firecracker");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, restore_every_byte, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, balloon_remove_reads_zero, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, old_handshake_page_size_kib, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, malformed_refused, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, over_uid_limit_refused, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, huge_message_refused, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, silent_vm_closed, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, kill9_mid_restore, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, kill9_before_handshake_read, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, kill9_before_handshake_taken, CASE_TIMEOUT_S);
	return s;
}

const char *test_skip_reason(void)
{
	return fc_skip_reason(FC_WHY_PAGE_JSON);
}
