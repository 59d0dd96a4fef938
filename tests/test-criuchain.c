// SPDX-License-Identifier: MIT
/*
 * Suite restore, area criuchain (issue 17): CRIU pre-dump chains, made from
 * the real CRIU 4.2 dump in $UFFDD_CRIU_IMAGES by criu-split.c as CRIU
 * writes them, read by pin_image_open_criu(): every byte of the chain's
 * image equals the single dump's, each page from the newest dump that holds
 * it (an older copy holds stale bytes), and a chain that is broken (a
 * missing or dangling parent link, a cycle, a parent without the task's
 * pagemap or without the page) is refused with an error that names it.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "criu-split.h"
#include "libpin-private.h"
#include "test-common.h"

#define PID 25997
/* The fixture's region A (README.md). */
#define REGION_A 0x7e0000000000ull
/* Pages of the fixture's pagemap entries (README.md: pages-1.img). */
#define FIXTURE_PAGES	1184
#define CRIU_IMAGES_ENV "UFFDD_CRIU_IMAGES"

static char fixture[300], tmp[64], last_log[1024];

static void capture_log(enum pin_log_level level, const char *msg, void *userdata)
{
	snprintf(last_log, sizeof(last_log), "%s", msg);
}

static void make_tmp(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/test-criuchain-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	last_log[0] = '\0';
	pin_log_set(capture_log, NULL);
}

static void remove_tmp(void)
{
	pin_log_set(NULL, NULL);
	test_rm_tree(tmp);
}

/* tmp/<k>[/name], in a buffer the next call reuses. */
static const char *dump(unsigned int k, const char *name)
{
	static char path[160];

	snprintf(path, sizeof(path), "%s/%u%s%s", tmp, k, name ? "/" : "", name ? name : "");
	return path;
}

static struct criu_split split(unsigned int n)
{
	struct criu_split st;

	ck_assert_int_eq(criu_split(fixture, PID, tmp, n, &st), 0);
	return st;
}

/* Every data page of img's regions comes from the dump criu_split_newest()
 * names; returns how many came from each. */
static void check_sources(const struct pin_image *img, unsigned int n, uint64_t *from)
{
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);

		for (size_t k = 0; k < g->nr_segments; k++) {
			const struct pin_image_segment *s = &g->segments[k];

			if (!(s->flags & PIN_IMAGE_SEG_DATA))
				continue;
			for (uint64_t a = s->addr; a < s->addr + s->len; a += 4096) {
				ck_assert_msg(s->source == criu_split_newest(a, n),
					      "page %#llx from dump %u, its newest copy is in %u",
					      (unsigned long long)a, s->source,
					      criu_split_newest(a, n));
				from[s->source]++;
			}
		}
	}
}

/* The chain of n at tmp/0 reads as the fixture, to the byte, each page
 * from the newest dump that holds it. */
static void check_chain(unsigned int n)
{
	struct criu_split st = split(n);
	struct pin_image *want, *got;
	uint64_t from[CRIU_SPLIT_MAX] = { 0 }, total = 0;

	ck_assert_int_eq(pin_image_open_criu(fixture, PID, &want), 0);
	ck_assert_int_eq(pin_image_open_criu(dump(0, NULL), PID, &got), 0);
	ck_assert_uint_eq(pin_image_nr_regions(got), pin_image_nr_regions(want));
	for (size_t i = 0; i < pin_image_nr_regions(want); i++) {
		const struct pin_image_region *w = pin_image_region(want, i);
		const struct pin_image_region *g = pin_image_region(got, i);
		uint8_t *a = malloc(w->len), *b = malloc(w->len);

		ck_assert(a && b);
		ck_assert_uint_eq(g->addr, w->addr);
		ck_assert_uint_eq(g->len, w->len);
		ck_assert_uint_eq(g->prot, w->prot);
		ck_assert_uint_eq(g->flags, w->flags);
		ck_assert_int_eq(pin_image_read(want, w->addr, a, w->len), 0);
		ck_assert_int_eq(pin_image_read(got, g->addr, b, g->len), 0);
		ck_assert_msg(!memcmp(a, b, w->len), "region %#llx differs from the single dump",
			      (unsigned long long)w->addr);
		free(a);
		free(b);
	}
	check_sources(got, n, from);
	for (unsigned int k = 0; k < n; k++) {
		/* Every dump gives some of the pages read. */
		ck_assert_uint_gt(from[k], 0);
		total += st.newest[k];
	}
	ck_assert_uint_eq(total, FIXTURE_PAGES);
	ck_assert_uint_eq(st.held[n - 1], FIXTURE_PAGES);
	pin_image_free(want);
	pin_image_free(got);
}

START_TEST(chain_of_two_byte_exact)
{
	check_chain(2);
}
END_TEST

START_TEST(chain_of_five_byte_exact)
{
	check_chain(5);
}
END_TEST

/* The oldest dump alone is a plain dump: its pages that a newer dump
 * holds again read stale, as the first pre-dump saw them. */
START_TEST(oldest_alone_holds_stale_pages)
{
	const uint64_t a0 = 0x7e0000000000ull, len = 4 << 20;
	uint64_t *want = malloc(len), *got = malloc(len), stale = 0;
	struct pin_image *w, *g;

	ck_assert(want && got);
	split(3);
	ck_assert_int_eq(pin_image_open_criu(fixture, PID, &w), 0);
	ck_assert_int_eq(pin_image_open_criu(dump(2, NULL), PID, &g), 0);
	ck_assert_int_eq(pin_image_read(w, a0, want, len), 0);
	ck_assert_int_eq(pin_image_read(g, a0, got, len), 0);
	for (uint64_t i = 0; i < len / 8; i++) {
		uint64_t mask = criu_split_stale(a0 + 8 * i, 2, 3);

		ck_assert_uint_eq(got[i], want[i] ^ mask);
		stale += mask != 0;
	}
	ck_assert_uint_gt(stale, 0);
	pin_image_free(w);
	pin_image_free(g);
	free(want);
	free(got);
}
END_TEST

static void expect_refused(int err, const char *part)
{
	struct pin_image *img = (void *)1;

	ck_assert_int_eq(pin_image_open_criu(dump(0, NULL), PID, &img), err);
	ck_assert_ptr_eq(img, (void *)1);
	ck_assert_msg(strstr(last_log, part), "log \"%s\" does not name \"%s\"", last_log, part);
}

/* A chain of n whose dump k's parent link is a symlink to target instead,
 * or gone (NULL). */
static void split_relinked(unsigned int n, unsigned int k, const char *target)
{
	split(n);
	ck_assert_int_eq(unlink(dump(k, "parent")), 0);
	if (target)
		ck_assert_int_eq(symlink(target, dump(k, "parent")), 0);
}

START_TEST(missing_parent_link)
{
	char want[400];

	split_relinked(2, 0, NULL);
	snprintf(want, sizeof(want), "are in the parent dump, but %s: No such file",
		 dump(0, "parent"));
	expect_refused(-ENOENT, want);
}
END_TEST

START_TEST(dangling_parent_link)
{
	char want[400];

	split_relinked(2, 0, "../gone");
	snprintf(want, sizeof(want), "%s -> ../gone, the parent dump of", dump(0, "parent"));
	expect_refused(-ENOENT, want);
}
END_TEST

START_TEST(parent_cycle)
{
	char want[400];

	split_relinked(3, 1, "../0");
	snprintf(want, sizeof(want), "%s/0/parent/parent is %s/0 again", tmp, tmp);
	expect_refused(-ELOOP, "the chain of parent dumps is a cycle");
	ck_assert_msg(strstr(last_log, want), "log \"%s\" does not name \"%s\"", last_log, want);
}
END_TEST

START_TEST(parent_without_pagemap)
{
	char name[32];

	split(2);
	snprintf(name, sizeof(name), "pagemap-%d.img", PID);
	ck_assert_int_eq(unlink(dump(1, name)), 0);
	expect_refused(-ENOENT, "/0/parent, the parent dump of");
}
END_TEST

/* The first varint of a pagemap entry's message: its vaddr (field 1). */
static uint64_t entry_vaddr(const uint8_t *m)
{
	uint64_t v = 0;

	ck_assert_uint_eq(m[0], 0x08);
	for (int i = 1, shift = 0; shift < 64; i++, shift += 7) {
		v |= (uint64_t)(m[i] & 0x7f) << shift;
		if (!(m[i] & 0x80))
			break;
	}
	return v;
}

/* The parent's pagemap without its entry of region A's first pages, which
 * the child leaves to it: a hole between the parent's entries. */
START_TEST(parent_without_the_page)
{
	static uint8_t buf[1 << 16];
	size_t pos, len, kept;
	char name[32];
	uint32_t n;
	int fd;

	split(2);
	snprintf(name, sizeof(name), "pagemap-%d.img", PID);
	fd = open(dump(1, name), O_RDWR);
	ck_assert_int_ge(fd, 0);
	len = (size_t)read(fd, buf, sizeof(buf));
	ck_assert_uint_lt(len, sizeof(buf));
	memcpy(&n, buf + 8, sizeof(n));
	kept = pos = 8 + 4 + n;
	while (pos < len) {
		memcpy(&n, buf + pos, sizeof(n));
		if (entry_vaddr(buf + pos + 4) != REGION_A) {
			memmove(buf + kept, buf + pos, 4 + n);
			kept += 4 + n;
		}
		pos += 4 + n;
	}
	ck_assert_uint_lt(kept, len);
	ck_assert_int_eq(pwrite(fd, buf, kept, 0), (ssize_t)kept);
	ck_assert_int_eq(ftruncate(fd, (off_t)kept), 0);
	close(fd);
	expect_refused(-EBADMSG, "is in the parent dump, but ");
	ck_assert_msg(strstr(last_log, ": the page at 0x7e0000"), "%s", last_log);
	ck_assert_msg(strstr(last_log, "/0/parent/pagemap-25997.img has no entry for it"), "%s",
		      last_log);
}
END_TEST

/* A tcase of one test, named after it (CK_RUN_CASE=name runs it alone),
 * left out without the dumps. */
static void add(Suite *s, const char *name, const TTest *t)
{
	static const struct test_needs criu_images = { .path_env = CRIU_IMAGES_ENV };
	TCase *tc = test_tcase(s, name, &criu_images);

	tcase_add_checked_fixture(tc, make_tmp, remove_tmp);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t);
}

#define ADD(s, t) add(s, #t, t)

Suite *test_suite(void)
{
	const char *dir = getenv(CRIU_IMAGES_ENV);
	Suite *s = test_suite_new("criuchain");

	if (dir)
		snprintf(fixture, sizeof(fixture), "%s/fixture", dir);
	ADD(s, chain_of_two_byte_exact);
	ADD(s, chain_of_five_byte_exact);
	ADD(s, oldest_alone_holds_stale_pages);
	ADD(s, missing_parent_link);
	ADD(s, dangling_parent_link);
	ADD(s, parent_cycle);
	ADD(s, parent_without_pagemap);
	ADD(s, parent_without_the_page);
	return s;
}

const char *test_skip_reason(void)
{
	if (sysconf(_SC_PAGESIZE) != 4096)
		return "criu-split.c and the fixture are of 4 KiB pages; this machine's differ";
	return NULL;
}
