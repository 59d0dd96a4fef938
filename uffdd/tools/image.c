// SPDX-License-Identifier: MIT
/*
 * uffdd-image: look inside a checkpoint (uffdd-image(5)) and compare two.
 * info: its regions, their pages with data and their zero pages (holes),
 * and the working set; verify: the manifest as pin_image_open() checks it,
 * every data page read back, the working set's runs inside the regions;
 * diff: page by page, what a checkpoint has that another has not (what an
 * incremental checkpoint would carry); squash: a chain of incremental
 * checkpoints as one full one, byte for byte.  Reads through libpin's image
 * calls (and its private working-set and chain readers).  See uffdd-image(8).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libpin-private.h"

#define EXIT_USAGE 2
/* Pages compared per read in diff. */
#define DIFF_CHUNK_PAGES 256

static uint64_t page;

static void log_stderr(enum pin_log_level level, const char *msg, void *userdata)
{
	if (level <= PIN_LOG_WARN)
		fprintf(stderr, "uffdd-image: %s\n", msg);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: uffdd-image info DIR\n"
		   "       uffdd-image verify DIR\n"
		   "       uffdd-image diff OLD NEW\n"
		   "       uffdd-image squash DIR OUT\n"
		   "       uffdd-image --version\n"
		   "Look inside a checkpoint (uffdd-image(5)), check it against its manifest,\n"
		   "compare two page by page, or write a chain of incremental checkpoints\n"
		   "as one.  Exit status: 0 done (diff: whether or not\n"
		   "pages differ), 1 failed or not valid, 2 usage error.  See uffdd-image(8).\n");
}

static int open_image(const char *dir, struct pin_image **ret)
{
	int r = pin_image_open(dir, ret);

	if (r < 0)
		fprintf(stderr, "uffdd-image: %s: %s\n", dir, strerror(-r));
	return r;
}

/* The working set, or none (n 0, *ret NULL) when DIR has no such file. */
static int working_set(const char *dir, struct pin_ws_run **ret, size_t *ret_nr)
{
	char path[4096];

	*ret = NULL;
	*ret_nr = 0;
	snprintf(path, sizeof(path), "%s/working-set", dir);
	if (access(path, F_OK) < 0 && errno == ENOENT)
		return 0;
	int r = pin_working_set_read(dir, ret, ret_nr);
	if (r < 0)
		fprintf(stderr, "uffdd-image: %s: %s\n", path, strerror(-r));
	return r;
}

static const char *prot_text(uint32_t prot, char buf[4])
{
	buf[0] = prot & 1 ? 'r' : '-'; /* PROT_READ */
	buf[1] = prot & 2 ? 'w' : '-'; /* PROT_WRITE */
	buf[2] = prot & 4 ? 'x' : '-'; /* PROT_EXEC */
	buf[3] = '\0';
	return buf;
}

/* Data pages of a region (the rest are zero pages: holes). */
static uint64_t data_pages(const struct pin_image_region *g)
{
	uint64_t n = 0;

	for (size_t k = 0; k < g->nr_segments; k++)
		if (g->segments[k].flags & PIN_IMAGE_SEG_DATA)
			n += g->segments[k].len / page;
	return n;
}

/* Pages of a link of a chain it holds itself, and of those the data ones. */
static void held_pages(const struct pin_image *img, uint64_t *ret_held, uint64_t *ret_data)
{
	*ret_held = *ret_data = 0;
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);

		for (size_t k = 0; k < g->nr_segments; k++) {
			const struct pin_image_segment *s = &g->segments[k];

			if (!(s->flags & PIN_IMAGE_SEG_PARENT))
				*ret_held += s->len / page;
			if (s->flags & PIN_IMAGE_SEG_DATA)
				*ret_data += s->len / page;
		}
	}
}

/* One line per image of a chain, newest first (none for a full image). */
static int print_chain(const char *dir)
{
	struct pin_image_link *v;
	size_t n;
	int r = pin_image_chain_open(dir, &v, &n);

	if (r < 0) {
		fprintf(stderr, "uffdd-image: %s: %s\n", dir, strerror(-r));
		return r;
	}
	for (size_t i = 0; n > 1 && i < n; i++) {
		uint64_t held, data;

		held_pages(v[i].img, &held, &data);
		printf("chain %zu id %s held pages %" PRIu64 " data %" PRIu64 " %s\n", i,
		       v[i].img->id, held, data, v[i].dir);
	}
	pin_image_chain_free(v, n);
	return 0;
}

static int cmd_info(const char *dir)
{
	struct pin_image *img;
	struct pin_ws_run *ws;
	size_t nws;
	uint64_t pages = 0, data = 0, ws_pages = 0;

	if (open_image(dir, &img) < 0)
		return EXIT_FAILURE;
	if (working_set(dir, &ws, &nws) < 0) {
		pin_image_free(img);
		return EXIT_FAILURE;
	}
	size_t n = pin_image_nr_regions(img);
	for (size_t i = 0; i < n; i++) {
		const struct pin_image_region *g = pin_image_region(img, i);
		pages += g->len / page;
		data += data_pages(g);
	}
	printf("regions %zu, pages %" PRIu64 ", data pages %" PRIu64 ", zero pages %" PRIu64 "\n",
	       n, pages, data, pages - data);
	for (size_t i = 0; i < n; i++) {
		const struct pin_image_region *g = pin_image_region(img, i);
		uint64_t d = data_pages(g);
		char prot[4];

		printf("region %#" PRIx64 "-%#" PRIx64 " %s pages %" PRIu64 " data %" PRIu64
		       " zero %" PRIu64 "%s%s\n",
		       g->addr, g->addr + g->len, prot_text(g->prot, prot), g->len / page, d,
		       g->len / page - d, g->name[0] ? " " : "", g->name);
	}
	if (print_chain(dir) < 0) {
		free(ws);
		pin_image_free(img);
		return EXIT_FAILURE;
	}
	for (size_t i = 0; i < nws; i++)
		ws_pages += ws[i].len / page;
	if (ws)
		printf("working-set runs %zu, pages %" PRIu64 "\n", nws, ws_pages);
	else
		printf("working-set none\n");
	free(ws);
	pin_image_free(img);
	return EXIT_SUCCESS;
}

/* Whether [addr, addr + len) lies within the regions. */
static bool inside(const struct pin_image *img, uint64_t addr, uint64_t len)
{
	uint64_t end = addr + len;

	for (size_t i = 0; i < pin_image_nr_regions(img) && addr < end; i++) {
		const struct pin_image_region *g = pin_image_region(img, i);
		if (g->addr <= addr && addr < g->addr + g->len)
			addr = g->addr + g->len;
	}
	return addr >= end;
}

static int cmd_verify(const char *dir)
{
	char *buf = malloc(DIFF_CHUNK_PAGES * page);
	struct pin_image *img;
	struct pin_ws_run *ws = NULL;
	size_t nws = 0, bad = 0;
	uint64_t pages = 0;

	if (!buf || open_image(dir, &img) < 0) {
		free(buf);
		return EXIT_FAILURE;
	}
	/* Every page read back: a data page the file cannot give fails. */
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);
		for (uint64_t a = g->addr; a < g->addr + g->len;) {
			uint64_t n = g->addr + g->len - a;
			if (n > DIFF_CHUNK_PAGES * page)
				n = DIFF_CHUNK_PAGES * page;
			int r = pin_image_read(img, a, buf, n);
			if (r < 0) {
				printf("region %#" PRIx64 "-%#" PRIx64 ": pages at %#" PRIx64
				       " unreadable: %s\n",
				       g->addr, g->addr + g->len, a, strerror(-r));
				bad++;
				break;
			}
			a += n;
		}
		pages += g->len / page;
	}
	if (working_set(dir, &ws, &nws) < 0)
		bad++;
	for (size_t i = 0; i < nws; i++)
		if (!inside(img, ws[i].addr, ws[i].len)) {
			printf("working-set run %#" PRIx64 "+%#" PRIx64 ": outside every region\n",
			       ws[i].addr, ws[i].len);
			bad++;
		}
	if (!bad)
		printf("ok: %zu regions, %" PRIu64 " pages, working set %s%zu runs\n",
		       pin_image_nr_regions(img), pages, ws ? "" : "none, ", nws);
	free(ws);
	free(buf);
	pin_image_free(img);
	return bad ? EXIT_FAILURE : EXIT_SUCCESS;
}

struct diff_count {
	uint64_t pages, same, changed, added;
};

/* Region g of NEW against OLD, page by page; -errno on a read error. */
static int diff_region(const struct pin_image *old, const struct pin_image *new,
		       const struct pin_image_region *g, char *a, char *b, struct diff_count *c)
{
	for (uint64_t at = g->addr; at < g->addr + g->len; at += page) {
		int r = pin_image_read(new, at, b, page);
		if (r < 0)
			return r;
		r = pin_image_read(old, at, a, page);
		if (r == -EFAULT) {
			c->added++;
			continue;
		}
		if (r < 0)
			return r;
		if (memcmp(a, b, page))
			c->changed++;
		else
			c->same++;
	}
	c->pages += g->len / page;
	return 0;
}

static int cmd_diff(const char *old_dir, const char *new_dir)
{
	struct pin_image *old, *new;
	struct diff_count total = { 0 };
	char *a = malloc(page), *b = malloc(page);
	int ret = EXIT_FAILURE;

	if (!a || !b || open_image(old_dir, &old) < 0)
		goto out_buf;
	if (open_image(new_dir, &new) < 0)
		goto out_old;
	for (size_t i = 0; i < pin_image_nr_regions(new); i++) {
		const struct pin_image_region *g = pin_image_region(new, i);
		struct diff_count c = { 0 };
		int r = diff_region(old, new, g, a, b, &c);
		if (r < 0) {
			fprintf(stderr, "uffdd-image: region %#" PRIx64 "-%#" PRIx64 ": %s\n",
				g->addr, g->addr + g->len, strerror(-r));
			goto out_new;
		}
		if (c.changed || c.added)
			printf("region %#" PRIx64 "-%#" PRIx64 " pages %" PRIu64 " changed %" PRIu64
			       " new %" PRIu64 "\n",
			       g->addr, g->addr + g->len, c.pages, c.changed, c.added);
		total.pages += c.pages;
		total.same += c.same;
		total.changed += c.changed;
		total.added += c.added;
	}
	/* What OLD has and NEW has not. */
	uint64_t gone = 0;
	for (size_t i = 0; i < pin_image_nr_regions(old); i++) {
		const struct pin_image_region *g = pin_image_region(old, i);
		for (uint64_t at = g->addr; at < g->addr + g->len; at += page)
			gone += !inside(new, at, page);
	}
	printf("pages %" PRIu64 ": same %" PRIu64 ", changed %" PRIu64 ", new %" PRIu64
	       "; gone %" PRIu64 "; an incremental checkpoint carries %" PRIu64 " pages (%" PRIu64
	       " bytes)\n",
	       total.pages, total.same, total.changed, total.added, gone,
	       total.changed + total.added, (total.changed + total.added) * page);
	ret = EXIT_SUCCESS;
out_new:
	pin_image_free(new);
out_old:
	pin_image_free(old);
out_buf:
	free(a);
	free(b);
	return ret;
}

static int cmd_squash(const char *dir, const char *out)
{
	struct pin_image *img;
	int r;

	if (open_image(dir, &img) < 0)
		return EXIT_FAILURE;
	r = pin_image_save(img, out);
	if (r < 0)
		fprintf(stderr, "uffdd-image: squash %s into %s: %s\n", dir, out, strerror(-r));
	else
		printf("squashed %s into %s: regions %zu, images %zu\n", dir, out,
		       pin_image_nr_regions(img), img->nr_parents + 1);
	pin_image_free(img);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		case 'V':
			puts("uffdd-image " PIN_PACKAGE_VERSION);
			return EXIT_SUCCESS;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	page = (uint64_t)sysconf(_SC_PAGESIZE);
	pin_log_set(log_stderr, NULL);
	int n = argc - optind;
	const char *cmd = n ? argv[optind] : "";
	if (!strcmp(cmd, "info") && n == 2)
		return cmd_info(argv[optind + 1]);
	if (!strcmp(cmd, "verify") && n == 2)
		return cmd_verify(argv[optind + 1]);
	if (!strcmp(cmd, "diff") && n == 3)
		return cmd_diff(argv[optind + 1], argv[optind + 2]);
	if (!strcmp(cmd, "squash") && n == 3)
		return cmd_squash(argv[optind + 1], argv[optind + 2]);
	usage(stderr);
	return EXIT_USAGE;
}
