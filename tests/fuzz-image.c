// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over our own image's manifest reader (libpin/image.c,
 * uffdd-image(5)): pin_image_open() of a scratch directory.
 *
 * Input: the manifest, then optionally a NUL byte and the pages file's
 * layout, one byte per page (at most MAX_PAGES): odd, a page of data that
 * starts with DATA_MARK; even, a hole.  Without the NUL the pages file is
 * empty.
 *
 * What must hold: an accepted image passes fuzz_check_image(), and its data
 * segments cover data pages of the pages file, each starting with DATA_MARK;
 * no descriptor is left open.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "fuzz-common.h"

/* Room for regions, data and holes to interleave; more pages only make
 * each run slower. */
#define MAX_PAGES 64
/* The first byte of each data page: not zero, so a hole never reads as it. */
#define DATA_MARK 0xa5

static void make_pages_file(const uint8_t *layout, size_t n, size_t page)
{
	static const unsigned char mark = DATA_MARK;
	int dfd, fd;

	fuzz_scratch_dir(&dfd);
	fd = openat(dfd, "pages", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)(n * page)) < 0)
		fuzz_die("the pages file");
	for (size_t i = 0; i < n; i++)
		if ((layout[i] & 1) && pwrite(fd, &mark, sizeof(mark), (off_t)(i * page)) != 1)
			fuzz_die("a data page of the pages file");
	close(fd);
}

static void check_data(const struct pin_image *img, const uint8_t *layout, size_t n, size_t page)
{
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *r = pin_image_region(img, i);

		for (size_t k = 0; k < r->nr_segments; k++) {
			const struct pin_image_segment *s = &r->segments[k];
			unsigned char b;

			if (!(s->flags & PIN_IMAGE_SEG_DATA))
				continue;
			for (uint64_t off = s->offset; off < s->offset + s->len; off += page)
				if (off / page >= n || !(layout[off / page] & 1))
					fuzz_die("a data segment over a hole");
			if (pin_image_read(img, s->addr, &b, sizeof(b)) < 0 || b != DATA_MARK)
				fuzz_die("a data segment does not read the page's first byte");
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), mlen = size, n = 0;
	const uint8_t *nul = memchr(data, '\0', size), *layout = NULL;
	const char *dir = fuzz_scratch_dir(NULL);
	int before = fuzz_open_fds();
	struct pin_image *img;

	if (nul) {
		mlen = (size_t)(nul - data);
		layout = nul + 1;
		n = size - mlen - 1;
		if (n > MAX_PAGES)
			n = MAX_PAGES;
	}
	fuzz_write_file("manifest", data, mlen);
	make_pages_file(layout, n, page);
	if (pin_image_open(dir, &img) == 0) {
		uint64_t pages_size = n * page;

		fuzz_check_image(img, &pages_size, 1);
		check_data(img, layout, n, page);
		pin_image_free(img);
	}
	if (fuzz_open_fds() != before)
		fuzz_die("a descriptor leaked");
	return 0;
}
