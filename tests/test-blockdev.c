// SPDX-License-Identifier: MIT
/*
 * Suite daemon, area blockdev: uffdd ($UFFDD) serving a region from a block
 * device, a source it does not map but reads with pread(2) (uffdd(8), page
 * sources).  The device is a loop device over a patterned file of ours,
 * detached when its last descriptor closes.  Its own binary because it needs
 * loop devices, which not every machine that runs the daemon suite has.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/loop.h>

#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

#define LOOP_CONTROL "/dev/loop-control"
/* Another process may take the free device before we configure it. */
#define LOOP_TRIES   16
#define DEV_PAGES    16 /* the device's size */
#define REGION_PAGES 16
#define REGION_OFF   4 /* the region starts at device page 4 */
#define SEED	     0xb10c

static size_t page;

/* A read-only loop device over fd; the caller closes the returned fd. */
static int loop_attach(int fd)
{
	struct loop_config cfg = { .fd = (uint32_t)fd };
	int ctl = open(LOOP_CONTROL, O_RDWR | O_CLOEXEC);
	char path[32];

	cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
	ck_assert_int_ge(ctl, 0);
	for (int i = 0; i < LOOP_TRIES; i++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		ck_assert_int_ge(n, 0);
		snprintf(path, sizeof(path), "/dev/loop%d", n);
		int dev = open(path, O_RDONLY | O_CLOEXEC);
		ck_assert_int_ge(dev, 0);
		if (ioctl(dev, LOOP_CONFIGURE, &cfg) == 0) {
			close(ctl);
			return dev;
		}
		ck_assert_int_eq(errno, EBUSY);
		close(dev);
	}
	ck_abort_msg("no free loop device after %d tries", LOOP_TRIES);
	return -1;
}

static bool page_ok(const uint8_t *base, size_t i, uint64_t off)
{
	const uint64_t *w = (const uint64_t *)(base + i * page);

	for (size_t j = 0; j < page / 8; j++)
		if (w[j] != test_pattern(off + i * page + j * 8, SEED))
			return false;
	return true;
}

/* The device's pages from REGION_OFF on, then zero pages past its end; a
 * pread at the wrong offset or of the wrong length shows in the bytes. */
START_TEST(block_device_read_with_pread)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co) };
	struct pin_client_stats st;
	struct pin_client *c;
	struct test_daemon d;
	struct pin_uffd *u;
	struct stat sb;
	char path[128];

	test_daemon_start(&d, NULL);
	snprintf(path, sizeof(path), "%s/backing", d.dir);
	int file = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(file, 0);
	ck_assert_int_eq(unlink(path), 0);
	test_pattern_write(file, DEV_PAGES * page, SEED);
	int dev = loop_attach(file);
	close(file);
	ck_assert_int_eq(fstat(dev, &sb), 0);
	ck_assert(S_ISBLK(sb.st_mode));

	co.socket = d.sock;
	ck_assert_int_eq(pin_uffd_new(&uo, &u), 0);
	ck_assert_int_eq(pin_client_connect(&co, &c), 0);
	ck_assert_int_eq(pin_client_handover(c, u), 0);
	uint8_t *base = test_map_pages(REGION_PAGES);
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = base,
		.len = REGION_PAGES * page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER,
		.fd = dev,
		.offset = REGION_OFF * page,
	};
	ck_assert_int_eq(pin_client_region_add(c, &r), 0);
	close(dev);

	/* Backwards: one fault and one page each, no readahead. */
	size_t data = DEV_PAGES - REGION_OFF;
	for (size_t i = REGION_PAGES; i-- > 0;) {
		if (i < data) {
			ck_assert_msg(page_ok(base, i, REGION_OFF * page), "page %zu", i);
			continue;
		}
		for (size_t j = 0; j < page; j++)
			ck_assert_uint_eq(base[i * page + j], 0);
	}
	ck_assert_int_eq(pin_client_stats(c, 0, &st), 0);
	ck_assert_uint_eq(st.faults, REGION_PAGES);
	ck_assert_uint_eq(st.pages_copied, data);
	ck_assert_uint_eq(st.bytes_copied, data * page);
	ck_assert_uint_eq(st.pages_zeroed, REGION_PAGES - data);

	ck_assert_int_eq(pin_client_goodbye(c), 0);
	pin_client_free(c);
	pin_uffd_free(u);
	munmap(base, REGION_PAGES * page);
	test_daemon_stop(&d);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("blockdev");
	TCase *tc = tcase_create("pread");

	page = (size_t)sysconf(_SC_PAGESIZE);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, block_device_read_with_pread);
	suite_add_tcase(s, tc);
	return s;
}

const char *test_skip_reason(void)
{
	static char why[128];

	if (!getenv("UFFDD"))
		return "UFFDD (the uffdd binary to test) is not set; run through meson test";
	const char *no_uffd = test_uffd_skip_reason();
	if (no_uffd)
		return no_uffd;
	int ctl = open(LOOP_CONTROL, O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		snprintf(why, sizeof(why), "no loop device to serve a block device from (%s: %s)",
			 LOOP_CONTROL, strerror(errno));
		return why;
	}
	close(ctl);
	return NULL;
}
