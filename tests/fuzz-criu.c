// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over CRIU's image decoding (libpin/criu.c): pstree.img
 * through pin_image_criu_pids(), pagemap-PID.img through
 * pin_criu_pagemap_read(), and both with mm-PID.img through
 * pin_image_open_criu(), all read from a scratch directory.
 *
 * Input: image files one after the other.  It is cut before every
 * IMG_COMMON_MAGIC and each piece becomes the file its second magic names
 * (pagemap-1.img, mm-1.img, pstree.img), so a real image file, or several
 * concatenated, is an input as it is.  The pages file is sparse and holds
 * exactly what the pagemap's PRESENT entries need, unless a piece with the
 * second magic PAGES_SIZE_MAGIC (not one of CRIU's) gives its size in the
 * next 8 bytes (little-endian); either way at most MAX_PAGES_SIZE.
 *
 * What must hold: an accepted pagemap has page aligned, ascending,
 * non-overlapping entries whose PRESENT pages follow each other in the
 * pages file; an accepted image passes fuzz_check_image(); no descriptor
 * is left open.
 */
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fuzz-common.h"
#include "libpin-private.h"

/* criu/include/magic.h */
#define IMG_COMMON_MAGIC 0x54564319u
#define PSTREE_MAGIC	 0x50273030u
#define MM_MAGIC	 0x57492820u
#define PAGEMAP_MAGIC	 0x56084025u
/* This target's own: the piece gives the pages file's size. */
#define PAGES_SIZE_MAGIC 0u

#define PID	   1
#define MAGICS_LEN (2 * sizeof(uint32_t))
/* pin_image_criu_pids() fills at most this many; more are only counted. */
#define MAX_PIDS 4
/* A sparse pages file larger than this tests nothing more (and the file
 * system may refuse one: EFBIG). */
#define MAX_PAGES_SIZE (1ull << 40)

static char pages_name[64];

static uint32_t le32_at(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

/* Where the next piece starts: the next IMG_COMMON_MAGIC after pos. */
static size_t next_piece(const uint8_t *data, size_t size, size_t pos)
{
	for (size_t i = pos + 1; i + sizeof(uint32_t) <= size; i++)
		if (le32_at(data + i) == IMG_COMMON_MAGIC)
			return i;
	return size;
}

/* Write each piece as its file; returns whether a pages size was given. */
static bool write_pieces(const uint8_t *data, size_t size, uint64_t *ret_pages_size)
{
	char name[64];
	bool sized = false;

	for (size_t pos = 0, end; pos < size; pos = end) {
		end = next_piece(data, size, pos);
		if (end - pos < MAGICS_LEN || le32_at(data + pos) != IMG_COMMON_MAGIC)
			continue;
		switch (le32_at(data + pos + sizeof(uint32_t))) {
		case PSTREE_MAGIC:
			snprintf(name, sizeof(name), "pstree.img");
			break;
		case MM_MAGIC:
			snprintf(name, sizeof(name), "mm-%d.img", PID);
			break;
		case PAGEMAP_MAGIC:
			snprintf(name, sizeof(name), "pagemap-%d.img", PID);
			break;
		case PAGES_SIZE_MAGIC:
			if (end - pos < MAGICS_LEN + sizeof(uint64_t))
				continue;
			memcpy(ret_pages_size, data + pos + MAGICS_LEN, sizeof(uint64_t));
			*ret_pages_size = le64toh(*ret_pages_size);
			sized = true;
			continue;
		default:
			continue;
		}
		fuzz_write_file(name, data + pos, end - pos);
	}
	return sized;
}

/* The pagemap's promises; returns the bytes its PRESENT entries take. */
static uint64_t check_pagemap(const struct pin_criu_pagemap_entry *e, size_t n)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), present = 0, prev_end = 0;

	for (size_t i = 0; i < n; i++) {
		if (e[i].vaddr % page || !e[i].nr_pages || e[i].vaddr < prev_end)
			fuzz_die("an accepted pagemap entry is unaligned, empty or out of order");
		if (e[i].nr_pages > (UINT64_MAX - e[i].vaddr) / page)
			fuzz_die("an accepted pagemap entry wraps");
		prev_end = e[i].vaddr + e[i].nr_pages * page;
		if (!(e[i].flags & PIN_CRIU_PE_PRESENT))
			continue;
		if (e[i].offset != present)
			fuzz_die("PRESENT pages do not follow each other in the pages file");
		present += e[i].nr_pages * page;
	}
	return present;
}

/* Returns the size it gave the file. */
static uint64_t make_pages_file(uint32_t pages_id, uint64_t size)
{
	int dfd, fd;

	if (size > MAX_PAGES_SIZE)
		size = MAX_PAGES_SIZE;
	fuzz_scratch_dir(&dfd);
	snprintf(pages_name, sizeof(pages_name), "pages-%" PRIu32 ".img", pages_id);
	fd = openat(dfd, pages_name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		fuzz_die("the sparse pages file");
	close(fd);
	return size;
}

static void clean(void)
{
	fuzz_remove_file("pstree.img");
	fuzz_remove_file("mm-1.img");
	fuzz_remove_file("pagemap-1.img");
	if (pages_name[0])
		fuzz_remove_file(pages_name);
	pages_name[0] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pin_criu_pagemap_entry *e = NULL;
	struct pin_image *img = NULL;
	uint64_t pages_size = 0, present;
	int dfd, pids[MAX_PIDS], r;
	const char *dir = fuzz_scratch_dir(&dfd);
	int before = fuzz_open_fds();
	uint32_t pages_id;
	size_t ne;
	bool sized;

	clean();
	sized = write_pieces(data, size, &pages_size);
	r = pin_image_criu_pids(dir, pids, MAX_PIDS);
	if (r < 0 && r != -ENOENT && r != -EBADMSG)
		fuzz_die("pin_image_criu_pids failed other than ENOENT or EBADMSG");
	if (pin_criu_pagemap_read(dfd, PID, &pages_id, &e, &ne) == 0) {
		present = check_pagemap(e, ne);
		free(e);
		pages_size = make_pages_file(pages_id, sized ? pages_size : present);
		if (pin_image_open_criu(dir, PID, &img) == 0) {
			fuzz_check_image(img, pages_size);
			pin_image_free(img);
		}
	}
	if (fuzz_open_fds() != before)
		fuzz_die("a descriptor leaked");
	return 0;
}
