// SPDX-License-Identifier: MIT
/*
 * Suite restore, area image: the real CRIU 4.2 dumps in
 * $UFFDD_CRIU_IMAGES decoded to the byte, damaged copies of them rejected,
 * and our own checkpoint format round-tripped from a live child process.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"

#define PG    4096ul
#define REG_A 0x7e0000000000ull
#define REG_B 0x7e0000800000ull
#define REG_C 0x7e0000a00000ull
#define REG_D 0x7e0000c00000ull
#define LEN_A (4ul << 20)
#define LEN_B (1ul << 20)
#define LEN_C (1ul << 20)
#define LEN_D (64ul << 10)

/* The environment variable naming the directory of the CRIU dumps. */
#define CRIU_IMAGES_ENV "UFFDD_CRIU_IMAGES"

static char fixture[300], fork_dir[300];
static char last_log[512];

static void capture_log(enum pin_log_level level, const char *msg, void *userdata)
{
	snprintf(last_log, sizeof(last_log), "%s", msg);
}

/* What the fixture program left at page p: the pattern's seed, or -1 for a
 * zero page.  child: the forked task, whose first 16 pages of A use seed 1. */
static int fixture_seed(uint64_t p, bool child)
{
	if (p >= REG_A && p < REG_A + LEN_A)
		return child && p < REG_A + 16 * PG ? 1 : 0;
	if (p >= REG_B && p < REG_B + LEN_B)
		return (p - REG_B) / PG % 2 ? -1 : 0;
	if (p >= REG_D && p < REG_D + LEN_D)
		return 0;
	return -1;
}

static void check_page(const uint64_t *w, uint64_t addr, int seed)
{
	for (size_t k = 0; k < PG / 8; k++) {
		uint64_t want = seed < 0 ? 0 : test_pattern(addr + 8 * k, (uint64_t)seed);

		if (w[k] != want)
			ck_abort_msg("word at 0x%llx is 0x%llx, expected 0x%llx",
				     (unsigned long long)(addr + 8 * k), (unsigned long long)w[k],
				     (unsigned long long)want);
	}
}

static const struct pin_image_region *find_region(const struct pin_image *img, uint64_t addr)
{
	for (size_t i = 0; i < pin_image_nr_regions(img); i++)
		if (pin_image_region(img, i)->addr == addr)
			return pin_image_region(img, i);
	return NULL;
}

/*
 * Walk the segments of the region at addr (which must cover it exactly,
 * without gaps) and check every page against the fixture.  Returns the
 * number of pages that came from the pages file.
 */
static size_t check_region(const struct pin_image *img, uint64_t addr, uint64_t len, bool child,
			   uint32_t prot)
{
	const struct pin_image_region *r = find_region(img, addr);
	uint64_t pos = addr;
	size_t data = 0;
	uint64_t buf[PG / 8];

	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(r->len, len);
	ck_assert_uint_eq(r->prot, prot);
	ck_assert_uint_eq(r->flags, MAP_PRIVATE | MAP_ANONYMOUS);
	for (size_t i = 0; i < r->nr_segments; i++) {
		const struct pin_image_segment *s = &r->segments[i];

		ck_assert_uint_eq(s->addr, pos);
		for (uint64_t p = s->addr; p < s->addr + s->len; p += PG) {
			int seed = fixture_seed(p, child);

			if (s->flags & PIN_IMAGE_SEG_DATA) {
				ck_assert_uint_eq(s->flags,
						  PIN_IMAGE_SEG_DATA | PIN_IMAGE_SEG_LAZY);
				ck_assert_int_eq(pread(pin_image_pages_fd(img), buf, PG,
						       (off_t)(s->offset + (p - s->addr))),
						 (ssize_t)PG);
				data++;
			} else {
				ck_assert_uint_eq(s->flags, 0);
				memset(buf, 0, sizeof(buf));
			}
			check_page(buf, p, seed);
		}
		pos += s->len;
	}
	ck_assert_uint_eq(pos, addr + len);
	return data;
}

static void check_fixture_memory(const char *dir, int pid, bool child)
{
	struct pin_image *img;
	const struct pin_image_region *c;
	size_t data;

	ck_assert_int_eq(pin_image_open_criu(dir, pid, &img), 0);
	data = check_region(img, REG_A, LEN_A, child, PROT_READ | PROT_WRITE);
	ck_assert_uint_eq(data, 1024);
	data += check_region(img, REG_B, LEN_B, child, PROT_READ | PROT_WRITE);
	ck_assert_uint_eq(data, 1024 + 128);
	data += check_region(img, REG_C, LEN_C, child, PROT_READ | PROT_WRITE);
	data += check_region(img, REG_D, LEN_D, child, PROT_READ);
	ck_assert_uint_eq(data, 1168);
	c = find_region(img, REG_C);
	ck_assert_uint_eq(c->nr_segments, 1);
	ck_assert_uint_eq(c->segments[0].flags, 0);
	pin_image_free(img);
}

/* ---- CRIU images, as the README says they are ------------------------- */

START_TEST(criu_pids)
{
	int pids[2] = { 0, 0 };

	ck_assert_int_eq(pin_image_criu_pids(fixture, pids, 2), 1);
	ck_assert_int_eq(pids[0], 25997);
	ck_assert_int_eq(pin_image_criu_pids(fork_dir, pids, 1), 2);
	ck_assert_int_eq(pids[0], 27447);
	ck_assert_int_eq(pids[1], 0);
	ck_assert_int_eq(pin_image_criu_pids(fork_dir, pids, 2), 2);
	ck_assert_int_eq(pids[1], 27448);
	ck_assert_int_eq(pin_image_criu_pids(fork_dir, NULL, 0), 2);
}
END_TEST

/* Pages of the pagemap entries inside [addr, addr + len), and their count. */
static uint64_t entry_pages(const struct pin_criu_pagemap_entry *e, size_t n, uint64_t addr,
			    uint64_t len, size_t *ret_count)
{
	uint64_t pages = 0;

	*ret_count = 0;
	for (size_t i = 0; i < n; i++)
		if (e[i].vaddr >= addr && e[i].vaddr < addr + len) {
			pages += e[i].nr_pages;
			++*ret_count;
		}
	return pages;
}

START_TEST(criu_pagemap_entries)
{
	_cleanup_close_ int dfd = open(fixture, O_RDONLY | O_DIRECTORY);
	static const uint64_t split_a[] = { 251, 256, 256, 256, 5 };
	struct pin_criu_pagemap_entry *e;
	size_t n, lazy = 0, present = 0, count, first_a = 0, first_b = 0;
	uint64_t sum = 0, pages;
	uint32_t pages_id;
	struct stat st;

	ck_assert_int_ge(dfd, 0);
	ck_assert_int_eq(pin_criu_pagemap_read(dfd, 25997, &pages_id, &e, &n), 0);
	ck_assert_uint_eq(pages_id, 1);
	ck_assert_uint_eq(n, 141);
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_eq(e[i].offset, sum * PG);
		sum += e[i].nr_pages;
		if (e[i].flags == (PIN_CRIU_PE_LAZY | PIN_CRIU_PE_PRESENT))
			lazy++;
		else if (e[i].flags == PIN_CRIU_PE_PRESENT)
			present++;
		if (e[i].vaddr == REG_A)
			first_a = i;
		if (e[i].vaddr == REG_B)
			first_b = i;
	}
	ck_assert_uint_eq(lazy, 138);
	ck_assert_uint_eq(present, 3);
	for (size_t i = 0; i < PIN_ARRAY_SIZE(split_a); i++)
		ck_assert_uint_eq(e[first_a + i].nr_pages, split_a[i]);
	for (size_t i = 0; i < 128; i++) {
		ck_assert_uint_eq(e[first_b + i].vaddr, REG_B + 2 * i * PG);
		ck_assert_uint_eq(e[first_b + i].nr_pages, 1);
	}
	pages = entry_pages(e, n, REG_A, LEN_A, &count);
	ck_assert_uint_eq(count, 5);
	pages += entry_pages(e, n, REG_B, LEN_B, &count);
	ck_assert_uint_eq(count, 128);
	ck_assert_uint_eq(entry_pages(e, n, REG_C, LEN_C, &count), 0);
	ck_assert_uint_eq(count, 0);
	pages += entry_pages(e, n, REG_D, LEN_D, &count);
	ck_assert_uint_eq(count, 1);
	ck_assert_uint_eq(pages, 1168);
	ck_assert_uint_eq(sum, 1184);
	ck_assert_int_eq(fstatat(dfd, "pages-1.img", &st, 0), 0);
	ck_assert_int_eq(st.st_size, 4849664);
	ck_assert_uint_eq(sum * PG, (uint64_t)st.st_size);
	free(e);
}
END_TEST

START_TEST(criu_fork_pagemaps)
{
	_cleanup_close_ int dfd = open(fork_dir, O_RDONLY | O_DIRECTORY);
	static const struct {
		int pid;
		uint32_t pages_id;
		uint64_t first_a;
	} task[] = { { 27447, 1, 250 }, { 27448, 2, 252 } };

	ck_assert_int_ge(dfd, 0);
	for (size_t t = 0; t < PIN_ARRAY_SIZE(task); t++) {
		struct pin_criu_pagemap_entry *e;
		uint64_t pages = 0;
		uint32_t pages_id;
		size_t n, count;
		bool seen_a = false;

		ck_assert_int_eq(pin_criu_pagemap_read(dfd, task[t].pid, &pages_id, &e, &n), 0);
		ck_assert_uint_eq(pages_id, task[t].pages_id);
		for (size_t i = 0; i < n; i++)
			if (e[i].vaddr == REG_A) {
				ck_assert_uint_eq(e[i].nr_pages, task[t].first_a);
				seen_a = true;
			}
		ck_assert(seen_a);
		pages += entry_pages(e, n, REG_A, LEN_A, &count);
		pages += entry_pages(e, n, REG_B, LEN_B, &count);
		pages += entry_pages(e, n, REG_D, LEN_D, &count);
		ck_assert_uint_eq(pages, 1168);
		free(e);
	}
}
END_TEST

START_TEST(criu_fixture_memory)
{
	check_fixture_memory(fixture, 25997, false);
}
END_TEST

START_TEST(criu_fork_memory)
{
	check_fixture_memory(fork_dir, 27447, false);
	check_fixture_memory(fork_dir, 27448, true);
}
END_TEST

/* Only the 7 private anonymous VMAs become regions (bss, heap, A, B, C, D,
 * stack); the binary's file mappings, vvar, the vDSO and vsyscall do not. */
START_TEST(criu_regions_and_read)
{
	struct pin_image *img;
	uint64_t buf[3 * PG / 8];

	ck_assert_int_eq(pin_image_open_criu(fixture, 25997, &img), 0);
	ck_assert_uint_eq(pin_image_nr_regions(img), 7);
	ck_assert_str_eq(pin_image_region(img, 1)->name, "[heap]");
	ck_assert_str_eq(pin_image_region(img, 6)->name, "[stack]");
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *r = pin_image_region(img, i);

		ck_assert_uint_eq(r->flags & (MAP_PRIVATE | MAP_ANONYMOUS),
				  MAP_PRIVATE | MAP_ANONYMOUS);
		ck_assert(r->addr != 0x401000 && r->addr != 0x4a6000);
	}
	ck_assert_ptr_null(pin_image_region(img, pin_image_nr_regions(img)));
	/* Across a data page, a zero page and a data page of B. */
	ck_assert_int_eq(pin_image_read(img, REG_B + 2 * PG, buf, sizeof(buf)), 0);
	check_page(buf, REG_B + 2 * PG, 0);
	check_page(buf + PG / 8, REG_B + 3 * PG, -1);
	check_page(buf + 2 * PG / 8, REG_B + 4 * PG, 0);
	/* The gap between A and B is no region. */
	ck_assert_int_eq(pin_image_read(img, REG_A + LEN_A - PG, buf, 2 * PG), -EFAULT);
	ck_assert_int_eq(pin_image_read(img, REG_A + LEN_A, buf, 1), -EFAULT);
	pin_image_free(img);
}
END_TEST

START_TEST(criu_missing_pid)
{
	struct pin_image *img = (void *)1;

	ck_assert_int_eq(pin_image_open_criu(fixture, 4242, &img), -ENOENT);
	ck_assert_ptr_eq(img, (void *)1);
	ck_assert_int_eq(pin_image_open_criu(fixture, 0, &img), -EINVAL);
}
END_TEST

/* ---- a scratch directory; damaged copies of the fixture --------------- */

static char tmp[64];

static void make_tmp(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/test-image-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
}

/* tmp/name, in a buffer that the next call reuses. */
static const char *in_tmp(const char *name)
{
	static char path[128];

	snprintf(path, sizeof(path), "%s/%s", tmp, name);
	return path;
}

static void copy_file(const char *from, const char *to)
{
	_cleanup_close_ int in = open(from, O_RDONLY);
	_cleanup_close_ int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	static char buf[1 << 16];
	ssize_t n;

	ck_assert_int_ge(in, 0);
	ck_assert_int_ge(out, 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		ck_assert_int_eq(write(out, buf, (size_t)n), n);
	ck_assert_int_eq(n, 0);
}

static void copy_fixture(void)
{
	DIR *d = opendir(fixture);
	struct dirent *de;
	char from[600], to[600];

	make_tmp();
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			snprintf(from, sizeof(from), "%s/%s", fixture, de->d_name);
			snprintf(to, sizeof(to), "%s/%s", tmp, de->d_name);
			copy_file(from, to);
		}
	closedir(d);
	last_log[0] = '\0';
	pin_log_set(capture_log, NULL);
}

static void remove_copy(void)
{
	pin_log_set(NULL, NULL);
	test_rm_tree(tmp);
}

static void patch(const char *name, off_t off, const void *bytes, size_t len)
{
	_cleanup_close_ int fd = open(in_tmp(name), O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, bytes, len, off), (ssize_t)len);
}

static void cut(const char *name, off_t size)
{
	ck_assert_int_eq(truncate(in_tmp(name), size), 0);
}

/* Opening the damaged copy fails with err, and the log names the place. */
static void expect_rejected(int err, const char *where)
{
	struct pin_image *img = (void *)1;

	ck_assert_int_eq(pin_image_open_criu(tmp, 25997, &img), err);
	ck_assert_ptr_eq(img, (void *)1);
	ck_assert_msg(strstr(last_log, where), "log \"%s\" does not name \"%s\"", last_log, where);
}

START_TEST(criu_bad_magic)
{
	static const uint8_t bad[4] = { 0x26, 0x40, 0x08, 0x56 };

	patch("pagemap-25997.img", 4, bad, sizeof(bad));
	expect_rejected(-EBADMSG, "pagemap-25997.img offset 0: magic");
}
END_TEST

START_TEST(criu_bad_mm_magic)
{
	static const uint8_t bad[4] = { 0 };

	patch("mm-25997.img", 0, bad, sizeof(bad));
	expect_rejected(-EBADMSG, "mm-25997.img offset 0: magic");
}
END_TEST

/* The head's entry is at 8 (length 2), the first PagemapEntry at 14. */
START_TEST(criu_length_past_end)
{
	static const uint8_t len[4] = { 0x00, 0x00, 0x01, 0x00 };

	patch("pagemap-25997.img", 14, len, sizeof(len));
	expect_rejected(-EBADMSG, "pagemap-25997.img offset 14: entry length 65536 past the end");
}
END_TEST

START_TEST(criu_truncated_entry)
{
	cut("pagemap-25997.img", 2542 - 3);
	expect_rejected(-EBADMSG, "past the end of the file (2539 bytes)");
}
END_TEST

START_TEST(criu_truncated_length)
{
	static const uint8_t tail[2] = { 0x05, 0x00 };

	patch("pagemap-25997.img", 2542, tail, sizeof(tail));
	expect_rejected(-EBADMSG, "pagemap-25997.img offset 2542: truncated entry, 2 bytes left");
}
END_TEST

START_TEST(criu_garbage_entry)
{
	static const uint8_t junk[11] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					  0xff, 0xff, 0xff, 0xff, 0xff };

	patch("pagemap-25997.img", 18, junk, sizeof(junk));
	expect_rejected(-EBADMSG, "pagemap-25997.img offset 14: entry of 11 bytes is not a valid");
}
END_TEST

static size_t varint(uint64_t v, uint8_t *out)
{
	size_t n = 0;

	do {
		out[n] = v & 0x7f;
		v >>= 7;
		if (v)
			out[n] |= 0x80;
		n++;
	} while (v);
	return n;
}

/* B's second entry (vaddr B + 2 pages) moved onto its first. */
START_TEST(criu_overlapping_entries)
{
	uint8_t file[4096], from[11] = { 0x08 }, to[11] = { 0x08 };
	size_t nfrom = 1 + varint(REG_B + 2 * PG, from + 1);
	size_t nto = 1 + varint(REG_B, to + 1);
	_cleanup_close_ int fd = open(in_tmp("pagemap-25997.img"), O_RDONLY);
	ssize_t size;
	uint8_t *at;

	ck_assert_uint_eq(nfrom, nto);
	size = read(fd, file, sizeof(file));
	ck_assert_int_eq(size, 2542);
	at = memmem(file, (size_t)size, from, nfrom);
	ck_assert_ptr_nonnull(at);
	patch("pagemap-25997.img", at - file, to, nto);
	expect_rejected(-EBADMSG, "overlaps or precedes the entry before");
	ck_assert_ptr_nonnull(strstr(last_log, "pagemap-25997.img offset "));
}
END_TEST

START_TEST(criu_pages_past_end)
{
	cut("pages-1.img", 1183 * PG);
	expect_rejected(-EBADMSG, "/pages-1.img, past its end (4845568 bytes)");
	ck_assert_ptr_nonnull(strstr(last_log, "pagemap-25997.img offset "));
}
END_TEST

START_TEST(criu_bad_pstree)
{
	static const uint8_t len[4] = { 0xff, 0, 0, 0 };

	patch("pstree.img", 8, len, sizeof(len));
	ck_assert_int_eq(pin_image_criu_pids(tmp, NULL, 0), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(last_log, "pstree.img offset 8: entry length 255"));
}
END_TEST

/* ---- our own format, from a live child -------------------------------- */

#define RT_PAGES 48
#define RT_SEED	 5

/* Page i of the round-trip area: patterned when i % 3 == 1; else zero,
 * either never touched (0) or written and cleared (2). */
static bool rt_data(size_t i)
{
	return i % 3 == 1;
}

static void rt_fill(unsigned char *area)
{
	for (size_t i = 0; i < RT_PAGES; i++) {
		uint64_t *w = (uint64_t *)(area + i * PG);

		if (i % 3 == 0)
			continue;
		for (size_t k = 0; k < PG / 8; k++)
			w[k] = test_pattern((uintptr_t)&w[k], RT_SEED);
		if (!rt_data(i))
			memset(w, 0, PG);
	}
	/* A VMA of its own in the middle, read-only. */
	ck_assert_int_eq(mprotect(area + 16 * PG, 16 * PG, PROT_READ), 0);
}

/* A child that fills the area and waits to be killed. */
static pid_t rt_child(unsigned char *area)
{
	int p[2];
	char c;
	pid_t pid;

	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		rt_fill(area);
		if (write(p[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	ck_assert_int_eq(read(p[0], &c, 1), 1);
	close(p[0]);
	return pid;
}

static void rt_check_region(const struct pin_image *img, size_t idx, const unsigned char *area,
			    size_t first, size_t n, uint32_t prot)
{
	const struct pin_image_region *r = pin_image_region(img, idx);
	uint64_t buf[PG / 8], addr = (uintptr_t)area + first * PG;
	size_t seg = 0;

	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(r->addr, addr);
	ck_assert_uint_eq(r->len, n * PG);
	ck_assert_uint_eq(r->prot, prot);
	ck_assert_uint_eq(r->flags, MAP_PRIVATE | MAP_ANONYMOUS);
	ck_assert_str_eq(r->name, "");
	/* One segment per run of data or zero pages, no more. */
	for (size_t i = first; i < first + n; seg++) {
		const struct pin_image_segment *s = &r->segments[seg];
		size_t j = i + 1;

		while (j < first + n && rt_data(j) == rt_data(i))
			j++;
		ck_assert_uint_lt(seg, r->nr_segments);
		ck_assert_uint_eq(s->addr, (uintptr_t)area + i * PG);
		ck_assert_uint_eq(s->len, (j - i) * PG);
		ck_assert_uint_eq(s->flags, rt_data(i) ? PIN_IMAGE_SEG_DATA : 0);
		i = j;
	}
	ck_assert_uint_eq(seg, r->nr_segments);
	for (size_t i = first; i < first + n; i++) {
		uint64_t a = (uintptr_t)area + i * PG;

		ck_assert_int_eq(pin_image_read(img, a, buf, PG), 0);
		check_page(buf, a, rt_data(i) ? RT_SEED : -1);
	}
}

/* Pages file offsets [0, 48 pages): data exactly where rt_data() says. */
static void rt_check_holes(const char *dir)
{
	char path[160];
	_cleanup_close_ int fd = -1;
	struct stat st;

	snprintf(path, sizeof(path), "%s/pages", dir);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(st.st_size, RT_PAGES * PG);
	for (size_t i = 0; i < RT_PAGES; i++) {
		off_t data = lseek(fd, (off_t)(i * PG), SEEK_DATA);

		if (rt_data(i))
			ck_assert_int_eq(data, (off_t)(i * PG));
		else if (data < 0)
			ck_assert_int_eq(errno, ENXIO); /* no data up to the end */
		else
			ck_assert_int_gt(data, (off_t)(i * PG));
	}
	/* 16 data pages; a few blocks of extent tree at most besides. */
	ck_assert_int_ge(st.st_blocks * 512, 16 * PG);
	ck_assert_int_le(st.st_blocks * 512, 18 * PG);
}

START_TEST(own_round_trip)
{
	unsigned char *area = mmap(NULL, RT_PAGES * PG, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct pin_image_write_opts o = { .sz = sizeof(o),
					  .addr = (uintptr_t)area,
					  .len = RT_PAGES * PG };
	char dir[128], dir_rw[128];
	struct pin_image *img;
	pid_t child;

	ck_assert_ptr_ne(area, MAP_FAILED);
	make_tmp();
	snprintf(dir, sizeof(dir), "%s/all", tmp);
	snprintf(dir_rw, sizeof(dir_rw), "%s/rw", tmp);
	child = rt_child(area);
	ck_assert_int_eq(pin_image_write(child, dir_rw, &o), 2);
	o.flags = PIN_IMAGE_WRITE_READONLY;
	ck_assert_int_eq(pin_image_write(child, dir, &o), 3);
	kill(child, SIGKILL);
	ck_assert_int_eq(waitpid(child, NULL, 0), child);

	ck_assert_int_eq(pin_image_open(dir, &img), 0);
	ck_assert_uint_eq(pin_image_nr_regions(img), 3);
	rt_check_region(img, 0, area, 0, 16, PROT_READ | PROT_WRITE);
	rt_check_region(img, 1, area, 16, 16, PROT_READ);
	rt_check_region(img, 2, area, 32, 16, PROT_READ | PROT_WRITE);
	pin_image_free(img);
	rt_check_holes(dir);

	ck_assert_int_eq(pin_image_open(dir_rw, &img), 0);
	ck_assert_uint_eq(pin_image_nr_regions(img), 2);
	rt_check_region(img, 0, area, 0, 16, PROT_READ | PROT_WRITE);
	rt_check_region(img, 1, area, 32, 16, PROT_READ | PROT_WRITE);
	pin_image_free(img);
	test_rm_tree(dir);
	test_rm_tree(dir_rw);
	rmdir(tmp);
	munmap(area, RT_PAGES * PG);
}
END_TEST

START_TEST(own_self)
{
	uint64_t *area =
		mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct pin_image_write_opts o = { .sz = sizeof(o), .addr = (uintptr_t)area, .len = 4 * PG };
	uint64_t buf[4 * PG / 8];
	struct pin_image *img;
	struct stat st;
	char dir[128];

	ck_assert_ptr_ne(area, MAP_FAILED);
	area[0] = 0x1122334455667788ull;
	area[3 * PG / 8 + 511] = 42;
	make_tmp();
	snprintf(dir, sizeof(dir), "%s/self", tmp);
	ck_assert_int_eq(pin_image_write(0, dir, &o), 1);
	ck_assert_int_eq(pin_image_open(dir, &img), 0);
	ck_assert_uint_eq(pin_image_region(img, 0)->nr_segments, 3);
	ck_assert_int_eq(pin_image_read(img, (uintptr_t)area, buf, sizeof(buf)), 0);
	ck_assert_mem_eq(buf, area, sizeof(buf));
	pin_image_free(img);
	/* Written again over the old one: the new content, one data page. */
	area[0] = 0;
	ck_assert_int_eq(pin_image_write(0, dir, &o), 1);
	ck_assert_int_eq(pin_image_open(dir, &img), 0);
	ck_assert_uint_eq(pin_image_region(img, 0)->nr_segments, 2);
	ck_assert_int_eq(pin_image_read(img, (uintptr_t)area, buf, sizeof(buf)), 0);
	ck_assert_mem_eq(buf, area, sizeof(buf));
	pin_image_free(img);
	ck_assert_int_eq(stat(in_tmp("self/pages"), &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	/* One data page; less than the file's 4 pages whatever the fs adds. */
	ck_assert_int_ge(st.st_blocks * 512, PG);
	ck_assert_int_lt(st.st_blocks * 512, 4 * PG);
	test_rm_tree(dir);
	rmdir(tmp);
	munmap(area, 4 * PG);
}
END_TEST

START_TEST(own_bad_args)
{
	struct {
		struct pin_image_write_opts o;
		uint64_t future;
	} big = { .o = { .sz = sizeof(big) }, .future = 1 };
	struct pin_image_write_opts o = { .sz = sizeof(o), .flags = 0x80 };

	ck_assert_int_eq(pin_image_write(0, "/nonexistent/x", &big.o), -E2BIG);
	ck_assert_int_eq(pin_image_write(0, "/nonexistent/x", &o), -EINVAL);
	ck_assert_int_eq(pin_image_write(-1, "/nonexistent/x", NULL), -EINVAL);
	ck_assert_int_eq(pin_image_write(0, "/nonexistent/x", NULL), -ENOENT);
	pin_image_free(NULL);
}
END_TEST

/* A manifest line by line: the image must be refused at the named line. */
static void manifest_case(const char *text, int err, const char *where)
{
	struct pin_image *img = (void *)1;
	FILE *f = fopen(in_tmp("manifest"), "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	last_log[0] = '\0';
	ck_assert_int_eq(pin_image_open(tmp, &img), err);
	if (err)
		ck_assert_ptr_eq(img, (void *)1);
	else
		pin_image_free(img);
	ck_assert_msg(strstr(last_log, where), "log \"%s\" does not name \"%s\"", last_log, where);
}

START_TEST(own_bad_manifest)
{
	make_tmp();
	ck_assert_int_eq(close(open(in_tmp("pages"), O_WRONLY | O_CREAT, 0644)), 0);
	cut("pages", 4 * PG);
	pin_log_set(capture_log, NULL);
	manifest_case("uffdd-image 1\npage-size 4096\nregion 0x10000 0x4000 rw- 0x22 0x0\nend 1\n",
		      0, "");
	manifest_case("uffdd-image 1\npage-size 4096\nregion 0x10000 0x4000 rw- 0x22 0x0\n",
		      -EBADMSG, "manifest line 4");
	manifest_case("uffdd-image 3\npage-size 4096\nend 0\n", -EBADMSG, "manifest line 1");
	/* Incremental (version 2): its id, then its parent, before anything. */
	manifest_case("uffdd-image 2\npage-size 4096\nend 0\n", -EBADMSG, "manifest line 3");
	manifest_case("uffdd-image 2\npage-size 4096\nid 0123456789abcdef0123456789abcdef\n"
		      "region 0x10000 0x4000 rw- 0x22 0x0\nend 1\n",
		      -EBADMSG, "manifest line 4");
	manifest_case("uffdd-image 1\npage-size 4096\nid 0123456789abcdef0123456789abcdeg\n"
		      "end 0\n",
		      -EBADMSG, "manifest line 3");
	manifest_case("uffdd-image 1\npage-size 4096\nid 0123456789abcdef0123456789abcdef\n"
		      "region 0x10000 0x4000 rw- 0x22 0x0\nheld 0x10000 0x1000\nend 1\n",
		      -EBADMSG, "manifest line 5");
	manifest_case("uffdd-image 2\npage-size 4096\nid 0123456789abcdef0123456789abcdef\n"
		      "parent 0123456789abcdef0123456789abcdee ../p\n"
		      "region 0x10000 0x4000 rw- 0x22 0x0\nheld 0x11000 0x1000 0x0\n"
		      "held 0x10000 0x1000 0x1000\nend 1\n",
		      -EBADMSG, "manifest line 7");
	manifest_case("uffdd-image 2\npage-size 4096\nid 0123456789abcdef0123456789abcdef\n"
		      "parent 0123456789abcdef0123456789abcdee ../p\n"
		      "region 0x10000 0x4000 rw- 0x22 0x1000\nend 1\n",
		      -EBADMSG, "manifest line 5");
	manifest_case("uffdd-image 2\npage-size 4096\nid 0123456789abcdef0123456789abcdef\n"
		      "parent 0123456789abcdef0123456789abcdee ../p\n"
		      "region 0x10000 0x4000 rw- 0x22 0x0\nheld 0x10000 0x1000 0x4000\nend 1\n",
		      -EBADMSG, "manifest line 6");
	manifest_case("uffdd-image 2\npage-size 4096\nid 0123456789abcdef0123456789abcdef\n"
		      "parent 0123456789abcdef0123456789abcdee ../p\n"
		      "region 0x10000 0x4000 rw- 0x22 0x0\nheld 0x13000 0x2000 0x0\nend 1\n",
		      -EBADMSG, "manifest line 6");
	manifest_case("uffdd-image 1\npage-size 4096\nregion 0x10000 0x5000 rw- 0x22 0x0\nend 1\n",
		      -EBADMSG, "manifest line 3");
	manifest_case("uffdd-image 1\npage-size 4096\nregion 0x10000 0x1000 rw- 0x22 0x0\n"
		      "region 0xf000 0x1000 rw- 0x22 0x1000\nend 2\n",
		      -EBADMSG, "manifest line 4");
	manifest_case("uffdd-image 1\npage-size 4096\nregion 0x10000 0x1000 rwq 0x22 0x0\nend 1\n",
		      -EBADMSG, "manifest line 3");
	manifest_case("uffdd-image 1\npage-size 4096\nend 1\n", -EBADMSG, "manifest line 3");
	pin_log_set(NULL, NULL);
	test_rm_tree(tmp);
}
END_TEST

Suite *test_suite(void)
{
	/* Only the CRIU cases read the dumps; our own format's cases make their images. */
	static const struct test_needs criu_images = { .path_env = CRIU_IMAGES_ENV };
	static const struct test_needs nothing;
	const char *dir = getenv(CRIU_IMAGES_ENV);
	Suite *s = test_suite_new("image");
	TCase *criu = test_tcase(s, "criu", &criu_images);
	TCase *damaged = test_tcase(s, "criu-damaged", &criu_images);
	TCase *own = test_tcase(s, "own", &nothing);

	if (dir) {
		snprintf(fixture, sizeof(fixture), "%s/fixture", dir);
		snprintf(fork_dir, sizeof(fork_dir), "%s/fixture-fork", dir);
	}

	tcase_add_test(criu, criu_pids);
	tcase_add_test(criu, criu_pagemap_entries);
	tcase_add_test(criu, criu_fork_pagemaps);
	tcase_add_test(criu, criu_fixture_memory);
	tcase_add_test(criu, criu_fork_memory);
	tcase_add_test(criu, criu_regions_and_read);
	tcase_add_test(criu, criu_missing_pid);

	tcase_add_checked_fixture(damaged, copy_fixture, remove_copy);
	tcase_add_test(damaged, criu_bad_magic);
	tcase_add_test(damaged, criu_bad_mm_magic);
	tcase_add_test(damaged, criu_length_past_end);
	tcase_add_test(damaged, criu_truncated_entry);
	tcase_add_test(damaged, criu_truncated_length);
	tcase_add_test(damaged, criu_garbage_entry);
	tcase_add_test(damaged, criu_overlapping_entries);
	tcase_add_test(damaged, criu_pages_past_end);
	tcase_add_test(damaged, criu_bad_pstree);

	tcase_add_test(own, own_round_trip);
	tcase_add_test(own, own_self);
	tcase_add_test(own, own_bad_args);
	tcase_add_test(own, own_bad_manifest);
	return s;
}

/* Every case, own format too, writes and reads 4 KiB pages. */
const char *test_skip_reason(void)
{
	if (sysconf(_SC_PAGESIZE) != (long)PG)
		return "the image cases assume 4 KiB pages; this machine's page size differs";
	return NULL;
}
