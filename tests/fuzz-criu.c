// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over CRIU's image decoding (libpin/criu.c,
 * criu-chain.c, criu-img.c): pstree.img through pin_image_criu_pids(),
 * pagemap-PID.img through pin_criu_pagemap_read(), and both with mm-PID.img
 * through pin_image_open_criu(), all read from a scratch directory, with
 * pre-dump chains: the PE_PARENT entries of a pagemap are looked up in the
 * dump its `parent` names.
 *
 * Input: image files one after the other.  It is cut before every
 * IMG_COMMON_MAGIC and each piece becomes the file its second magic names
 * (pagemap-1.img, mm-1.img, pstree.img), so a real image file, or several
 * concatenated, is an input as it is.  The first pagemap is the dump's, the
 * second that of its parent dump (the directory parent/), the third the
 * parent's parent (parent/parent/); more are left out.  A piece with the
 * second magic PARENT_LOOP_MAGIC (not one of CRIU's) makes the oldest
 * dump's parent link point back at the dump before it (a cycle).  Each
 * dump's pages file is sparse and holds exactly what its pagemap's PRESENT
 * entries need, unless (the dump's only) a piece with the second magic
 * PAGES_SIZE_MAGIC (not one of CRIU's) gives its size in the next 8 bytes
 * (little-endian); either way at most MAX_PAGES_SIZE.
 *
 * What must hold: an accepted pagemap has page aligned, ascending,
 * non-overlapping entries whose PRESENT pages follow each other in the
 * pages file; an accepted image passes fuzz_check_image() with each data
 * segment in the pages file of its dump of the chain; no descriptor is
 * left open.
 */
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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
/* This target's own: the oldest dump's parent link makes a cycle. */
#define PARENT_LOOP_MAGIC 1u
/* Dumps of a chain here, and where each is: the scratch directory, then
 * each parent inside its child. */
#define MAX_DUMPS 3
static const char *const dump_dirs[MAX_DUMPS] = { ".", "parent", "parent/parent" };

#define PID	   1
#define MAGICS_LEN (2 * sizeof(uint32_t))
/* pin_image_criu_pids() fills at most this many; more are only counted. */
#define MAX_PIDS 4
/* A sparse pages file larger than this tests nothing more (and the file
 * system may refuse one: EFBIG). */
#define MAX_PAGES_SIZE (1ull << 40)

static char pages_names[MAX_DUMPS][64];

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

/* dump_dirs[k]/name, into out. */
static void dump_path(char *out, size_t len, unsigned int k, const char *name)
{
	snprintf(out, len, "%s/%s", dump_dirs[k], name);
}

/*
 * Write each piece as its file; returns whether a pages size was given.
 * *ret_ndumps: the dumps a pagemap was written for; *ret_loop: whether the
 * oldest's parent link is to make a cycle.
 */
static bool write_pieces(const uint8_t *data, size_t size, uint64_t *ret_pages_size,
			 unsigned int *ret_ndumps, bool *ret_loop)
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
			if (*ret_ndumps == MAX_DUMPS)
				continue;
			if (*ret_ndumps) {
				int dfd;

				fuzz_scratch_dir(&dfd);
				if (mkdirat(dfd, dump_dirs[*ret_ndumps], 0700) < 0)
					fuzz_die("mkdir of a parent dump");
			}
			dump_path(name, sizeof(name), (*ret_ndumps)++, "pagemap-1.img");
			break;
		case PARENT_LOOP_MAGIC:
			*ret_loop = true;
			continue;
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

/* The pages file of dump k; returns the size it gave the file. */
static uint64_t make_pages_file(unsigned int k, uint32_t pages_id, uint64_t size)
{
	char name[64];
	int dfd, fd;

	if (size > MAX_PAGES_SIZE)
		size = MAX_PAGES_SIZE;
	fuzz_scratch_dir(&dfd);
	snprintf(name, sizeof(name), "pages-%" PRIu32 ".img", pages_id);
	dump_path(pages_names[k], sizeof(pages_names[k]), k, name);
	fd = openat(dfd, pages_names[k], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		fuzz_die("the sparse pages file");
	close(fd);
	return size;
}

/* Every file and directory an input made, the oldest dump's first; a
 * dump's path that is a cycle's link is that link, removed (not followed). */
static void clean(void)
{
	char path[64];
	struct stat st;
	int dfd;

	fuzz_scratch_dir(&dfd);
	fuzz_remove_file("pstree.img");
	fuzz_remove_file("mm-1.img");
	for (unsigned int k = MAX_DUMPS; k-- > 0;) {
		if (k && fstatat(dfd, dump_dirs[k], &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (k && S_ISLNK(st.st_mode)) {
			fuzz_remove_file(dump_dirs[k]);
			continue;
		}
		dump_path(path, sizeof(path), k, "pagemap-1.img");
		fuzz_remove_file(path);
		if (pages_names[k][0])
			fuzz_remove_file(pages_names[k]);
		pages_names[k][0] = '\0';
		/* The oldest dump's cycle link (the parent of a newer one is
		 * gone already). */
		dump_path(path, sizeof(path), k, "parent");
		if (fstatat(dfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
			fuzz_remove_file(path);
		if (k && unlinkat(dfd, dump_dirs[k], AT_REMOVEDIR) < 0)
			fuzz_die("rmdir of a parent dump");
	}
}

/* The oldest dump's parent link back to the dump before it (itself when
 * there is one dump). */
static void make_loop(unsigned int ndumps)
{
	char path[64];
	int dfd;

	fuzz_scratch_dir(&dfd);
	dump_path(path, sizeof(path), ndumps - 1, "parent");
	if (symlinkat(ndumps > 1 ? ".." : ".", dfd, path) < 0)
		fuzz_die("symlink of a parent link");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t sizes[MAX_DUMPS] = { 0 }, pages_size = 0;
	struct pin_image *img = NULL;
	int dfd, pids[MAX_PIDS], r;
	const char *dir = fuzz_scratch_dir(&dfd);
	int before = fuzz_open_fds();
	unsigned int ndumps = 0, nread = 0;
	bool sized, loop = false;

	clean();
	sized = write_pieces(data, size, &pages_size, &ndumps, &loop);
	if (loop && ndumps)
		make_loop(ndumps);
	r = pin_image_criu_pids(dir, pids, MAX_PIDS);
	if (r < 0 && r != -ENOENT && r != -EBADMSG)
		fuzz_die("pin_image_criu_pids failed other than ENOENT or EBADMSG");
	for (; nread < ndumps; nread++) {
		struct pin_criu_pagemap_entry *e;
		uint32_t pages_id;
		size_t ne;
		int kfd = openat(dfd, dump_dirs[nread], O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (kfd < 0)
			fuzz_die("open of a dump's directory");
		r = pin_criu_pagemap_read(kfd, PID, &pages_id, &e, &ne);
		close(kfd);
		if (r < 0)
			break;
		sizes[nread] = check_pagemap(e, ne);
		free(e);
		if (!nread && sized)
			sizes[nread] = pages_size;
		sizes[nread] = make_pages_file(nread, pages_id, sizes[nread]);
	}
	if (nread && pin_image_open_criu(dir, PID, &img) == 0) {
		fuzz_check_image(img, sizes, nread);
		pin_image_free(img);
	}
	clean();
	if (fuzz_open_fds() != before)
		fuzz_die("a descriptor leaked");
	return 0;
}
