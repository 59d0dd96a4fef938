// SPDX-License-Identifier: MIT
/*
 * Suite uffd, area pagemap: async dirty tracking against the real kernel.  A
 * range registered write-protect with a WP_ASYNC userfaultfd is written
 * without any fault event, and pin_pagemap_scan_written() must return
 * exactly the pages written, merged into ranges, protect them again on
 * request, resume where a full buffer stopped it, and work on another
 * process's memory through a pagemap descriptor that process handed over.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"

#define NPAGES 64
/* Room for every range a scan of NPAGES pages can find (every other page). */
#define MAX_RANGES (NPAGES / 2)

static size_t page;

struct tracked {
	struct pin_uffd *u;
	uint8_t *p;
	int pagemap;
};

/* NPAGES pages registered for async write-protect and protected, none written yet. */
static struct tracked track(void)
{
	struct pin_uffd_opts o = {
		.sz = sizeof(o),
		.flags = PIN_UFFD_CLOEXEC | PIN_UFFD_USER_MODE_ONLY,
		.features = PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_UNPOPULATED,
	};
	struct tracked t = { .p = test_map_pages(NPAGES) };

	ck_assert_int_eq(pin_uffd_new(&o, &t.u), 0);
	ck_assert_int_eq(pin_uffd_register(t.u, t.p, NPAGES * page, PIN_UFFD_REGISTER_WP, NULL), 0);
	ck_assert_int_eq(pin_uffd_writeprotect(t.u, t.p, NPAGES * page, PIN_UFFD_WP), 0);
	t.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(t.pagemap, 0);
	return t;
}

static void untrack(struct tracked *t)
{
	close(t->pagemap);
	pin_uffd_free(t->u);
	ck_assert_int_eq(munmap(t->p, NPAGES * page), 0);
}

/* Scan all of t's pages; the ranges found as "first+count,..." in pages. */
static const char *scan(const struct tracked *t, unsigned int flags)
{
	static char text[MAX_RANGES * 8];
	struct pin_pagemap_range out[MAX_RANGES];
	uint64_t start = (uintptr_t)t->p, end = 0;
	int n = pin_pagemap_scan_written(t->pagemap, start, NPAGES * page, flags, out, MAX_RANGES,
					 &end);
	size_t at = 0;

	ck_assert_int_ge(n, 0);
	ck_assert_uint_eq(end, start + NPAGES * page);
	text[0] = '\0';
	for (int i = 0; i < n; i++)
		at += (size_t)snprintf(text + at, sizeof(text) - at, "%s%zu+%zu", i ? "," : "",
				       (size_t)((out[i].addr - start) / page),
				       (size_t)(out[i].len / page));
	return text;
}

static void write_pages(uint8_t *p, const size_t *pages, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[pages[i] * page + 1] = (uint8_t)(pages[i] + 1);
}

START_TEST(written_exact)
{
	struct tracked t = track();
	static const size_t first[] = { 3, 4, 5, 10, 63 }, second[] = { 0, 5 };
	volatile uint8_t sink = t.p[20 * page];

	(void)sink;
	/* Never touched and only read pages are not written. */
	ck_assert_str_eq(scan(&t, 0), "");
	write_pages(t.p, first, PIN_ARRAY_SIZE(first));
	ck_assert_str_eq(scan(&t, 0), "3+3,10+1,63+1");
	/* Without reset a scan changes nothing. */
	ck_assert_str_eq(scan(&t, 0), "3+3,10+1,63+1");
	ck_assert_str_eq(scan(&t, PIN_PAGEMAP_RESET), "3+3,10+1,63+1");
	ck_assert_str_eq(scan(&t, 0), "");
	write_pages(t.p, second, PIN_ARRAY_SIZE(second));
	ck_assert_str_eq(scan(&t, 0), "0+1,5+1");
	/* The data stayed: async protection loses no write. */
	ck_assert_uint_eq(t.p[5 * page + 1], 6);
	ck_assert_uint_eq(t.p[63 * page + 1], 64);
	untrack(&t);
}
END_TEST

/* A page dropped with MADV_DONTNEED reads zero from then on: it changed, so
 * it counts as written (its marker went with it), written before or not. */
START_TEST(dontneed_written)
{
	struct tracked t = track();
	static const size_t pages[] = { 7 };

	write_pages(t.p, pages, PIN_ARRAY_SIZE(pages));
	ck_assert_str_eq(scan(&t, PIN_PAGEMAP_RESET), "7+1");
	ck_assert_int_eq(madvise(t.p + 7 * page, 2 * page, MADV_DONTNEED), 0);
	ck_assert_str_eq(scan(&t, PIN_PAGEMAP_RESET), "7+2");
	ck_assert_str_eq(scan(&t, 0), "");
	ck_assert_uint_eq(t.p[7 * page + 1], 0);
	untrack(&t);
}
END_TEST

START_TEST(resume_when_full)
{
	struct tracked t = track();
	static const size_t pages[] = { 1, 2, 9, 30, 31, 32 };
	struct pin_pagemap_range out[2];
	uint64_t start = (uintptr_t)t.p, len = NPAGES * page, end = 0;

	write_pages(t.p, pages, PIN_ARRAY_SIZE(pages));
	ck_assert_int_eq(
		pin_pagemap_scan_written(t.pagemap, start, len, PIN_PAGEMAP_RESET, out, 2, &end),
		2);
	ck_assert_uint_eq(out[0].addr, start + page);
	ck_assert_uint_eq(out[0].len, 2 * page);
	ck_assert_uint_eq(out[1].addr, start + 9 * page);
	ck_assert_uint_eq(out[1].len, page);
	ck_assert_uint_eq(end, start + 30 * page);
	/* Only what was returned was protected again. */
	ck_assert_str_eq(scan(&t, 0), "30+3");
	ck_assert_int_eq(pin_pagemap_scan_written(t.pagemap, end, start + len - end,
						  PIN_PAGEMAP_RESET, out, 2, &end),
			 1);
	ck_assert_uint_eq(out[0].addr, start + 30 * page);
	ck_assert_uint_eq(out[0].len, 3 * page);
	ck_assert_uint_eq(end, start + len);
	ck_assert_str_eq(scan(&t, 0), "");
	untrack(&t);
}
END_TEST

/* out NULL with RESET protects the whole range: the written pages are clean again. */
START_TEST(reset_only)
{
	struct tracked t = track();
	static const size_t pages[] = { 0, 40 };
	uint64_t end = 0;

	write_pages(t.p, pages, PIN_ARRAY_SIZE(pages));
	ck_assert_int_eq(pin_pagemap_scan_written(t.pagemap, (uintptr_t)t.p, NPAGES * page,
						  PIN_PAGEMAP_RESET, NULL, 0, &end),
			 0);
	ck_assert_uint_eq(end, (uintptr_t)t.p + NPAGES * page);
	ck_assert_str_eq(scan(&t, 0), "");
	untrack(&t);
}
END_TEST

START_TEST(refused)
{
	struct tracked t = track();
	struct pin_pagemap_range out[1];
	uint8_t *plain = test_map_pages(1);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	ck_assert_int_eq(
		pin_pagemap_scan_written(t.pagemap, (uintptr_t)t.p, page, 0x2, out, 1, NULL),
		-EINVAL);
	ck_assert_int_eq(
		pin_pagemap_scan_written(t.pagemap, (uintptr_t)t.p + 1, page, 0, out, 1, NULL),
		-EINVAL);
	ck_assert_int_eq(
		pin_pagemap_scan_written(t.pagemap, (uintptr_t)t.p, page, 0, NULL, 0, NULL),
		-EINVAL);
	/* Memory not registered for async write-protect has no written state. */
	ck_assert_int_eq(
		pin_pagemap_scan_written(t.pagemap, (uintptr_t)plain, page, 0, out, 1, NULL),
		-EPERM);
	/* A descriptor that is no pagemap answers ENOTTY, as an old kernel does. */
	ck_assert_int_ge(null, 0);
	ck_assert_int_eq(pin_pagemap_scan_written(null, (uintptr_t)t.p, page, 0, out, 1, NULL),
			 -EOPNOTSUPP);
	close(null);
	ck_assert_int_eq(munmap(plain, page), 0);
	untrack(&t);
}
END_TEST

/* A synchronous WP registration is not async tracking: refused, not misread. */
START_TEST(refused_sync_wp)
{
	struct pin_uffd_opts o = { .sz = sizeof(o),
				   .flags = PIN_UFFD_CLOEXEC | PIN_UFFD_USER_MODE_ONLY,
				   .features = PIN_UFFD_FEATURE_WP_UNPOPULATED };
	struct pin_pagemap_range out[1];
	struct pin_uffd *u;
	uint8_t *p = test_map_pages(1);
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(pm, 0);
	ck_assert_int_eq(pin_uffd_new(&o, &u), 0);
	ck_assert_int_eq(pin_uffd_register(u, p, page, PIN_UFFD_REGISTER_WP, NULL), 0);
	ck_assert_int_eq(pin_pagemap_scan_written(pm, (uintptr_t)p, page, 0, out, 1, NULL), -EPERM);
	pin_uffd_free(u);
	close(pm);
	ck_assert_int_eq(munmap(p, page), 0);
}
END_TEST

static int send_fd(int sock, int fd, uint64_t addr)
{
	char control[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { &addr, sizeof(addr) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = sizeof(control) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &mh, 0) == sizeof(addr) ? 0 : -1;
}

static int recv_fd(int sock, uint64_t *ret_addr)
{
	char control[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { ret_addr, sizeof(*ret_addr) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = sizeof(control) };
	int fd = -1;

	if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) != sizeof(*ret_addr))
		return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	if (cm && cm->cmsg_type == SCM_RIGHTS)
		memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/* The child: track, hand its pagemap over, write pages 1, 2 and 9 when told,
 * then wait to be told to go. */
static int tracked_child(int sock)
{
	struct tracked t = track();
	static const size_t pages[] = { 1, 2, 9 };
	char c;

	if (send_fd(sock, t.pagemap, (uintptr_t)t.p) < 0 || read(sock, &c, 1) != 1)
		return 1;
	close(t.pagemap);
	write_pages(t.p, pages, PIN_ARRAY_SIZE(pages));
	if (write(sock, "w", 1) != 1 || read(sock, &c, 1) != 1)
		return 1;
	return 0;
}

/* What a daemon does: scan another process's memory through the pagemap
 * descriptor that process opened and sent; no path opened, no ptrace. */
START_TEST(other_process)
{
	struct pin_pagemap_range out[4];
	int sv[2];
	uint64_t addr = 0, end = 0;
	char c;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		close(sv[0]);
		_exit(tracked_child(sv[1]));
	}
	close(sv[1]);
	int pm = recv_fd(sv[0], &addr);
	ck_assert_int_ge(pm, 0);
	ck_assert_int_eq(pin_pagemap_scan_written(pm, addr, NPAGES * page, 0, out, 4, &end), 0);
	ck_assert_int_eq(write(sv[0], "g", 1), 1);
	ck_assert_int_eq(read(sv[0], &c, 1), 1);
	ck_assert_int_eq(
		pin_pagemap_scan_written(pm, addr, NPAGES * page, PIN_PAGEMAP_RESET, out, 4, &end),
		2);
	ck_assert_uint_eq(out[0].addr, addr + page);
	ck_assert_uint_eq(out[0].len, 2 * page);
	ck_assert_uint_eq(out[1].addr, addr + 9 * page);
	ck_assert_uint_eq(out[1].len, page);
	ck_assert_uint_eq(end, addr + NPAGES * page);
	ck_assert_int_eq(pin_pagemap_scan_written(pm, addr, NPAGES * page, 0, out, 4, &end), 0);
	ck_assert_int_eq(write(sv[0], "x", 1), 1);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(status, 0);
	/* The process is gone: its memory with it. */
	ck_assert_int_eq(pin_pagemap_scan_written(pm, addr, NPAGES * page, 0, out, 4, &end),
			 -ESRCH);
	close(pm);
	close(sv[0]);
}
END_TEST

static const char *scan_skip_reason(void)
{
	struct pin_pagemap_range out[1];
	void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int r = p == MAP_FAILED ? -ENOMEM
		: pm < 0	? -errno
				: pin_pagemap_scan_written(pm, (uintptr_t)p, page, 0, out, 1, NULL);

	if (pm >= 0)
		close(pm);
	if (p != MAP_FAILED)
		munmap(p, page);
	/* Not registered: -EPERM means the ioctl is there. */
	return r == -EOPNOTSUPP ? "no PAGEMAP_SCAN in this kernel (Linux 6.7+)" : NULL;
}

static const struct test_needs needs_scan = {
	.what = TEST_NEED_UFFD_USER,
	.uffd_features = PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_UNPOPULATED,
	.check = scan_skip_reason,
};

Suite *test_suite(void)
{
	Suite *s = test_suite_new("pagemap");
	TCase *tc;

	page = (size_t)sysconf(_SC_PAGESIZE);
	tc = test_tcase(s, "scan", &needs_scan);
	tcase_add_test(tc, written_exact);
	tcase_add_test(tc, dontneed_written);
	tcase_add_test(tc, resume_when_full);
	tcase_add_test(tc, reset_only);
	tcase_add_test(tc, refused);
	tcase_add_test(tc, refused_sync_wp);
	tcase_add_test(tc, other_process);
	return s;
}

const char *test_skip_reason(void)
{
	return NULL;
}
