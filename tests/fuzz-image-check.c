// SPDX-License-Identifier: MIT
/*
 * The checks every image a reader accepted must pass, for the fuzz targets
 * over image readers (fuzz-criu.c, fuzz-image.c).
 */
#include <unistd.h>

#include "fuzz-common.h"

static void check_byte_readable(const struct pin_image *img, uint64_t addr)
{
	unsigned char b;

	if (pin_image_read(img, addr, &b, sizeof(b)) < 0)
		fuzz_die("a byte of an accepted segment does not read");
}

static void check_segments(const struct pin_image *img, const struct pin_image_region *r,
			   const uint64_t *sizes, size_t nsizes)
{
	uint64_t pos = r->addr;

	if (!r->nr_segments)
		fuzz_die("a region without segments");
	for (size_t i = 0; i < r->nr_segments; i++) {
		const struct pin_image_segment *s = &r->segments[i];

		if (s->addr != pos || !s->len || s->len > r->addr + r->len - pos)
			fuzz_die("segments do not tile their region");
		if ((s->flags & PIN_IMAGE_SEG_DATA) && s->source >= nsizes)
			fuzz_die("a data segment of a pages file the image has not");
		if ((s->flags & PIN_IMAGE_SEG_DATA) &&
		    (s->offset > sizes[s->source] || s->len > sizes[s->source] - s->offset))
			fuzz_die("a data segment past the end of its pages file");
		check_byte_readable(img, s->addr);
		check_byte_readable(img, s->addr + s->len - 1);
		pos += s->len;
	}
	if (pos != r->addr + r->len)
		fuzz_die("segments end before their region");
}

void fuzz_check_image(const struct pin_image *img, const uint64_t *sizes, size_t nsizes)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), prev_end = 0;

	if (pin_image_pages_fd(img) < 0)
		fuzz_die("an image without a pages file");
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *r = pin_image_region(img, i);

		if (!r->len || r->addr % page || r->len % page || r->addr + r->len < r->addr)
			fuzz_die("a region empty, unaligned or wrapping");
		if (i && r->addr < prev_end)
			fuzz_die("regions out of order or overlapping");
		check_segments(img, r, sizes, nsizes);
		prev_end = r->addr + r->len;
	}
}
