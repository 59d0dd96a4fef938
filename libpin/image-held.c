// SPDX-License-Identifier: MIT
/*
 * Which pages of a mapping an incremental checkpoint holds: all of them
 * unless the mapping is one of the parent's regions (same start and end) of
 * anonymous memory; then the pages written since the parent (the caller's
 * list, or the kernel's async write-protect record: not PAGE_IS_WRITTEN
 * where PAGE_IS_WPALLOWED) and every page that is not present now or is the
 * zero page, which covers the pages discarded since (MADV_DONTNEED and
 * MADV_REMOVE leave anonymous memory without a page; it reads zero, or as
 * the zero page once read).  Also write-protecting the record again after a
 * checkpoint.  Calls pagemap.c and image.c's lookups.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

#include "libpin-private.h"

struct ranges {
	struct pin_pagemap_range *v;
	size_t n, cap;
};

/* Append [addr, addr + len), merged into the last range it touches. */
static int ranges_add(struct ranges *o, uint64_t addr, uint64_t len)
{
	if (!len)
		return 0;
	if (o->n && o->v[o->n - 1].addr + o->v[o->n - 1].len >= addr) {
		struct pin_pagemap_range *l = &o->v[o->n - 1];
		uint64_t end = addr + len > l->addr + l->len ? addr + len : l->addr + l->len;

		l->len = end - l->addr;
		return 0;
	}
	if (o->n == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 64;
		struct pin_pagemap_range *v = reallocarray(o->v, cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		o->v = v;
		o->cap = cap;
	}
	o->v[o->n++] = (struct pin_pagemap_range){ addr, len };
	return 0;
}

static bool same_region(const struct pin_image *parent, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < pin_image_nr_regions(parent); i++) {
		const struct pin_image_region *g = pin_image_region(parent, i);

		if (g->addr == start)
			return g->len == end - start;
	}
	return false;
}

/* A page the parent's content stands for: present, not the zero page, and
 * (without the caller's list) not written since the record was armed. */
static bool clean(uint64_t c, bool record)
{
	if (!(c & PIN_PAGE_IS_PRESENT) || (c & PIN_PAGE_IS_PFNZERO))
		return false;
	return !record || ((c & PIN_PAGE_IS_WPALLOWED) && !(c & PIN_PAGE_IS_WRITTEN));
}

/* The union of the unclean runs and the written ranges within [start, end),
 * both in address order. */
static int held_ranges(const struct pin_pagemap_cat *cat, size_t nc,
		       const struct pin_pagemap_range *w, size_t nw, uint64_t start, uint64_t end,
		       struct ranges *o)
{
	size_t i = 0, j = 0;
	bool record = !w;
	int r = 0;

	while (!r && (i < nc || j < nw)) {
		if (i < nc && clean(cat[i].categories, record)) {
			i++;
			continue;
		}
		if (j < nw && (w[j].addr + w[j].len <= start || w[j].addr >= end)) {
			j++;
			continue;
		}
		if (j >= nw || (i < nc && cat[i].addr <= w[j].addr)) {
			r = ranges_add(o, cat[i].addr, cat[i].len);
			i++;
		} else {
			uint64_t a = w[j].addr < start ? start : w[j].addr;
			uint64_t e = w[j].addr + w[j].len > end ? end : w[j].addr + w[j].len;

			r = ranges_add(o, a, e - a);
			j++;
		}
	}
	return r;
}

int pin_image_held(int pagemap_fd, const struct pin_image *parent, uint64_t start, uint64_t end,
		   bool anon, const struct pin_pagemap_range *written, size_t nr_written,
		   struct pin_pagemap_range **ret, size_t *ret_n)
{
	struct pin_pagemap_cat *cat = NULL;
	struct ranges o = { 0 };
	size_t nc = 0;
	int r;

	if (!parent || !anon || !same_region(parent, start, end)) {
		r = ranges_add(&o, start, end - start);
	} else {
		r = pin_pagemap_scan_categories(pagemap_fd, start, end - start,
						PIN_PAGE_IS_WPALLOWED | PIN_PAGE_IS_WRITTEN |
							PIN_PAGE_IS_PRESENT | PIN_PAGE_IS_PFNZERO,
						&cat, &nc);
		if (!r)
			r = held_ranges(cat, nc, written, written ? nr_written : 0, start, end, &o);
		free(cat);
	}
	if (r < 0) {
		free(o.v);
		return r;
	}
	*ret = o.v;
	*ret_n = o.n;
	return 0;
}

int pin_image_rearm(int pagemap_fd, uint64_t start, uint64_t end)
{
	struct pin_pagemap_cat *cat = NULL;
	size_t nc = 0;
	int r;

	if (!pin_pagemap_scan_supported(pagemap_fd))
		return 0;
	r = pin_pagemap_scan_categories(pagemap_fd, start, end - start, PIN_PAGE_IS_WPALLOWED, &cat,
					&nc);

	for (size_t i = 0; !r && i < nc; i++)
		if (cat[i].categories & PIN_PAGE_IS_WPALLOWED) {
			r = pin_pagemap_scan_written(pagemap_fd, cat[i].addr, cat[i].len,
						     PIN_PAGEMAP_RESET, NULL, 0, NULL);
			r = r < 0 ? r : 0;
		}
	free(cat);
	return r;
}
