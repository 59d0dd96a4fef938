// SPDX-License-Identifier: MIT
/*
 * Checkpoint images: the region list every image format (criu.c too) is
 * read into, and our own format's manifest (uffdd-image(5)) read back: a full
 * image, or one link of a chain whose pages not held are its parent's
 * (image-chain.c resolves those).  Writing is image-write.c's.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "libpin-private.h"

#define MANIFEST PIN_IMAGE_MANIFEST
#define PAGES	 PIN_IMAGE_PAGES

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

int pin_image_open_dir(const char *dir)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd < 0) {
		dfd = -errno;
		pin_log(PIN_LOG_ERR, "open %s: %s", dir, strerror(errno));
	}
	return dfd;
}

int pin_image_new_at(int dfd, const char *dir, const char *pages, struct pin_image **ret,
		     uint64_t *ret_size)
{
	_cleanup_close_ int fd = openat(dfd, pages, O_RDONLY | O_CLOEXEC);
	struct pin_image *img;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = -errno;

		pin_log(PIN_LOG_ERR, "open %s/%s: %s", dir, pages, strerror(errno));
		return r;
	}
	img = pin_image_new_fd(fd);
	if (!img)
		return -ENOMEM;
	fd = -1;
	*ret = img;
	*ret_size = (uint64_t)st.st_size;
	return 0;
}

struct pin_image *pin_image_new_fd(int fd)
{
	struct pin_image *img = calloc(1, sizeof(*img));

	if (img) {
		img->pages_fd = fd;
		img->snapshot_fd = -1;
	}
	return img;
}

int pin_image_source_fd(const struct pin_image *img, uint32_t source)
{
	if (!source)
		return img->pages_fd;
	return source <= img->nr_parents ? img->parent_fds[source - 1] : -EINVAL;
}

PIN_EXPORT int pin_image_segment_fd(const struct pin_image *img, const struct pin_image_segment *s)
{
	if (!img || !s || !(s->flags & PIN_IMAGE_SEG_DATA))
		return -EINVAL;
	return pin_image_source_fd(img, s->source);
}

int pin_image_snapshot_fd(const struct pin_image *img)
{
	return img->snapshot_fd;
}

void pin_image_snapshot_set(struct pin_image *img, int fd)
{
	img->snapshot_fd = fd;
}

int pin_image_add_region(struct pin_image *img, uint64_t addr, uint64_t len, uint32_t prot,
			 uint32_t flags, const char *name)
{
	struct image_region *r;

	if (!len || addr + len < addr)
		return -EINVAL;
	if (img->nr) {
		const struct pin_image_region *last = &img->regions[img->nr - 1].pub;

		if (addr < last->addr + last->len)
			return -EINVAL;
	}
	if (img->nr == img->cap) {
		size_t cap = img->cap ? 2 * img->cap : 16;
		struct image_region *n = reallocarray(img->regions, cap, sizeof(*n));

		if (!n)
			return -ENOMEM;
		img->regions = n;
		img->cap = cap;
	}
	r = &img->regions[img->nr];
	*r = (struct image_region){ 0 };
	r->name = strdup(name);
	if (!r->name)
		return -ENOMEM;
	r->pub = (struct pin_image_region){
		.addr = addr, .len = len, .prot = prot, .flags = flags, .name = r->name
	};
	img->nr++;
	return 0;
}

int pin_image_add_segment(struct pin_image *img, uint64_t len, uint64_t offset, uint32_t flags)
{
	return pin_image_add_source_segment(img, len, offset, flags, 0);
}

int pin_image_add_source_segment(struct pin_image *img, uint64_t len, uint64_t offset,
				 uint32_t flags, uint32_t source)
{
	struct image_region *r;
	uint64_t addr, end;

	if (!img->nr || !len)
		return -EINVAL;
	r = &img->regions[img->nr - 1];
	addr = r->pub.addr;
	if (r->pub.nr_segments) {
		const struct pin_image_segment *last = &r->segs[r->pub.nr_segments - 1];

		addr = last->addr + last->len;
	}
	end = r->pub.addr + r->pub.len;
	if (len > end - addr)
		return -EINVAL;
	if (r->pub.nr_segments == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 4;
		struct pin_image_segment *n = reallocarray(r->segs, cap, sizeof(*n));

		if (!n)
			return -ENOMEM;
		r->segs = n;
		r->cap = cap;
		r->pub.segments = n;
	}
	r->segs[r->pub.nr_segments++] = (struct pin_image_segment){
		.addr = addr,
		.len = len,
		.offset = flags & PIN_IMAGE_SEG_DATA ? offset : 0,
		.flags = flags,
		.source = flags & PIN_IMAGE_SEG_DATA ? source : 0,
	};
	return 0;
}

PIN_EXPORT void pin_image_free(struct pin_image *img)
{
	if (!img)
		return;
	for (size_t i = 0; i < img->nr; i++) {
		free(img->regions[i].segs);
		free(img->regions[i].name);
	}
	free(img->regions);
	if (img->pages_fd >= 0)
		close(img->pages_fd);
	for (size_t i = 0; i < img->nr_parents; i++)
		if (img->parent_fds[i] >= 0)
			close(img->parent_fds[i]);
	free(img->parent_fds);
	free(img->parent_path);
	if (img->snapshot_fd >= 0)
		close(img->snapshot_fd);
	free(img);
}

PIN_EXPORT size_t pin_image_nr_regions(const struct pin_image *img)
{
	return img->nr;
}

PIN_EXPORT const struct pin_image_region *pin_image_region(const struct pin_image *img, size_t i)
{
	return i < img->nr ? &img->regions[i].pub : NULL;
}

PIN_EXPORT int pin_image_pages_fd(const struct pin_image *img)
{
	return img->pages_fd;
}

/* The segment holding addr, by binary search; NULL outside every region. */
const struct pin_image_segment *pin_image_find_segment(const struct pin_image *img, uint64_t addr)
{
	size_t lo = 0, hi = img->nr;
	const struct pin_image_region *r = NULL;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct pin_image_region *m = &img->regions[mid].pub;

		if (addr < m->addr) {
			hi = mid;
		} else if (addr - m->addr >= m->len) {
			lo = mid + 1;
		} else {
			r = m;
			break;
		}
	}
	if (!r)
		return NULL;
	lo = 0;
	hi = r->nr_segments;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct pin_image_segment *s = &r->segments[mid];

		if (addr < s->addr)
			hi = mid;
		else if (addr - s->addr >= s->len)
			lo = mid + 1;
		else
			return s;
	}
	return NULL;
}

int pin_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

PIN_EXPORT int pin_image_read(const struct pin_image *img, uint64_t addr, void *buf, size_t len)
{
	char *p = buf;

	if (!img || (!buf && len))
		return -EINVAL;
	while (len) {
		const struct pin_image_segment *s = pin_image_find_segment(img, addr);
		uint64_t in;
		size_t n;
		int r;

		if (!s)
			return -EFAULT;
		in = addr - s->addr;
		n = s->len - in < len ? (size_t)(s->len - in) : len;
		if (s->flags & PIN_IMAGE_SEG_DATA) {
			r = pin_pread_all(pin_image_source_fd(img, s->source), p, n,
					  s->offset + in);
			if (r < 0) {
				pin_log(PIN_LOG_ERR,
					"pread of the pages file at offset %" PRIu64
					" (%zu bytes): %s",
					s->offset + in, n, strerror(r == -ENODATA ? EIO : -r));
				return r == -ENODATA ? -EIO : r;
			}
		} else {
			memset(p, 0, n);
		}
		p += n;
		addr += n;
		len -= n;
	}
	return 0;
}

/* ---- reading ----------------------------------------------------------- */

/* Segments of [off, off + len) of the pages file: data where the file has
 * data, zero over its holes (page granular). */
static int add_file_segments(struct pin_image *img, uint64_t off, uint64_t len)
{
	uint64_t page = page_size(), pos = off, end = off + len;
	int fd = img->pages_fd;

	while (pos < end) {
		off_t data = lseek(fd, (off_t)pos, SEEK_DATA), hole;
		int r;

		if (data < 0 && errno != ENXIO)
			return -errno;
		if (data < 0 || (uint64_t)data >= end)
			return pin_image_add_segment(img, end - pos, 0, 0);
		data = (off_t)((uint64_t)data / page * page);
		if ((uint64_t)data > pos) {
			r = pin_image_add_segment(img, (uint64_t)data - pos, 0, 0);
			if (r < 0)
				return r;
			pos = (uint64_t)data;
		}
		hole = lseek(fd, (off_t)pos, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		hole = (off_t)(((uint64_t)hole + page - 1) / page * page);
		if ((uint64_t)hole > end)
			hole = (off_t)end;
		r = pin_image_add_segment(img, (uint64_t)hole - pos, pos, PIN_IMAGE_SEG_DATA);
		if (r < 0)
			return r;
		pos = (uint64_t)hole;
	}
	return 0;
}

static int parse_prot(const char *s, uint32_t *ret)
{
	if (strlen(s) != 3 || (s[0] != 'r' && s[0] != '-') || (s[1] != 'w' && s[1] != '-') ||
	    (s[2] != 'x' && s[2] != '-'))
		return -EBADMSG;
	*ret = (s[0] == 'r' ? PROT_READ : 0) | (s[1] == 'w' ? PROT_WRITE : 0) |
	       (s[2] == 'x' ? PROT_EXEC : 0);
	return 0;
}

/* One "region" line into img, checked against the page size, the previous
 * region and the size of the pages file.  A full image's region gets its
 * segments now, an incremental one's as its "held" lines come (struct
 * held_state). */
static int parse_region(struct pin_image *img, const char *line, uint64_t pages_size, bool full)
{
	uint64_t addr, len, off, page = page_size();
	char prot[8];
	uint32_t flags, p;
	const char *name;
	int pos = -1, r;

	if (sscanf(line, "region %" SCNx64 " %" SCNx64 " %7s %" SCNx32 " %" SCNx64 "%n", &addr,
		   &len, prot, &flags, &off, &pos) != 5 ||
	    pos < 0 || (line[pos] != '\0' && line[pos] != ' ') || parse_prot(prot, &p) < 0)
		return -EBADMSG;
	name = line[pos] ? line + pos + 1 : "";
	/* An incremental image's held lines place its pages: offset 0 here. */
	if (!len || addr % page || len % page || off % page || addr + len < addr ||
	    off + len < off || (full ? off + len > pages_size : off != 0))
		return -EBADMSG;
	r = pin_image_add_region(img, addr, len, p, flags, name);
	if (r < 0)
		return r == -EINVAL ? -EBADMSG : r;
	return full ? add_file_segments(img, off, len) : 0;
}

/* Where the held lines of the last region of an incremental image are. */
struct held_state {
	bool open;	     /* a region takes held lines */
	uint64_t pos;	     /* its first address no line covered yet */
	uint64_t pages_size; /* of the pages file */
};

static const struct pin_image_region *last_region(const struct pin_image *img)
{
	return &img->regions[img->nr - 1].pub;
}

/* The rest of the open region is its parent's. */
static int held_close(struct pin_image *img, struct held_state *h)
{
	const struct pin_image_region *g;

	if (!h->open)
		return 0;
	h->open = false;
	g = last_region(img);
	if (h->pos == g->addr + g->len)
		return 0;
	return pin_image_add_segment(img, g->addr + g->len - h->pos, 0, PIN_IMAGE_SEG_PARENT);
}

/* "held ADDR LEN OFFSET": pages of the open region this image holds, after
 * those of the line before, at OFFSET of the pages file (data, or zero
 * where it has a hole). */
static int parse_held(struct pin_image *img, const char *line, struct held_state *h)
{
	uint64_t addr, len, off, page = page_size();
	const struct pin_image_region *g;
	int pos = -1, r;

	if (!h->open ||
	    sscanf(line, "held %" SCNx64 " %" SCNx64 " %" SCNx64 "%n", &addr, &len, &off, &pos) !=
		    3 ||
	    pos < 0 || line[pos] != '\0')
		return -EBADMSG;
	g = last_region(img);
	if (!len || addr % page || len % page || off % page || addr < h->pos || addr + len < addr ||
	    addr + len > g->addr + g->len || off + len < off || off + len > h->pages_size)
		return -EBADMSG;
	if (addr > h->pos) {
		r = pin_image_add_segment(img, addr - h->pos, 0, PIN_IMAGE_SEG_PARENT);
		if (r < 0)
			return r;
	}
	h->pos = addr + len;
	return add_file_segments(img, off, len);
}

static bool parse_id(const char *s, char out[PIN_IMAGE_ID_LEN + 1])
{
	if (strspn(s, "0123456789abcdef") != PIN_IMAGE_ID_LEN)
		return false;
	memcpy(out, s, PIN_IMAGE_ID_LEN);
	out[PIN_IMAGE_ID_LEN] = '\0';
	return true;
}

/* "id ID" (both versions, optional in 1) or "parent ID PATH" (version 2). */
static int parse_link(struct pin_image *img, const char *line, int version, size_t lineno)
{
	if (lineno == 3 && !strncmp(line, "id ", 3))
		return parse_id(line + 3, img->id) && !line[3 + PIN_IMAGE_ID_LEN] ? 0 : -EBADMSG;
	if (lineno == 4 && version == 2 && !strncmp(line, "parent ", 7)) {
		const char *path = line + 7 + PIN_IMAGE_ID_LEN + 1;

		if (!parse_id(line + 7, img->parent_id) || line[7 + PIN_IMAGE_ID_LEN] != ' ' ||
		    !*path)
			return -EBADMSG;
		img->parent_path = strdup(path);
		return img->parent_path ? 0 : -ENOMEM;
	}
	return 1;
}

/* Version 2 (incremental) needs its id and parent before the regions. */
static int parse_line(struct pin_image *img, const char *line, int version, size_t lineno,
		      uint64_t pages_size, struct held_state *h)
{
	bool full = version == 1;
	int r = parse_link(img, line, version, lineno);

	if (r <= 0)
		return r;
	if (!full && (!img->id[0] || !img->parent_path))
		return -EBADMSG;
	if (!full && !strncmp(line, "held ", 5))
		return parse_held(img, line, h);
	r = held_close(img, h);
	if (r < 0)
		return r;
	r = parse_region(img, line, pages_size, full);
	if (r < 0 || full)
		return r;
	*h = (struct held_state){ .open = true,
				  .pos = last_region(img)->addr,
				  .pages_size = pages_size };
	return 0;
}

static int parse_manifest(struct pin_image *img, FILE *f, const char *dir, uint64_t pages_size)
{
	char *line = NULL, expect[64];
	size_t linesz = 0, lineno = 0, nr = 0;
	struct held_state h = { 0 };
	bool ended = false;
	int version = 0;
	ssize_t len;
	int r = 0;

	snprintf(expect, sizeof(expect), "page-size %zu", page_size());
	while ((len = getline(&line, &linesz, f)) > 0) {
		lineno++;
		if (line[len - 1] != '\n' || ended) {
			r = -EBADMSG;
			break;
		}
		line[len - 1] = '\0';
		if (lineno == 1) {
			version = !strcmp(line, PIN_IMAGE_HEADER_FULL)	 ? 1
				  : !strcmp(line, PIN_IMAGE_HEADER_INCR) ? 2
									 : 0;
			r = version ? 0 : -EBADMSG;
		} else if (lineno == 2) {
			r = strcmp(line, expect) ? -EBADMSG : 0;
		} else if (!strncmp(line, "end ", 4)) {
			ended = true;
			r = held_close(img, &h);
			if (!r)
				r = sscanf(line, "end %zu", &nr) == 1 && nr == img->nr &&
						    (version == 1 || img->parent_path)
					    ? 0
					    : -EBADMSG;
		} else {
			r = parse_line(img, line, version, lineno, pages_size, &h);
		}
		if (r < 0)
			break;
	}
	free(line);
	if (!r && !ended) {
		r = -EBADMSG;
		lineno++;
	}
	if (r < 0)
		pin_log(PIN_LOG_ERR, "%s/%s line %zu: %s", dir, MANIFEST, lineno,
			r == -EBADMSG ? "malformed, out of order, past the end of the pages file, "
					"or the manifest is truncated"
				      : strerror(-r));
	return r;
}

int pin_image_open_one(int dfd, const char *dir, struct pin_image **ret)
{
	struct pin_image *img;
	uint64_t pages_size;
	int mfd, r;
	FILE *f;

	r = pin_image_new_at(dfd, dir, PAGES, &img, &pages_size);
	if (r < 0)
		return r;
	mfd = openat(dfd, MANIFEST, O_RDONLY | O_CLOEXEC);
	f = mfd < 0 ? NULL : fdopen(mfd, "r");
	if (!f) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s/%s: %s", dir, MANIFEST, strerror(errno));
		if (mfd >= 0)
			close(mfd);
		pin_image_free(img);
		return r;
	}
	r = parse_manifest(img, f, dir, pages_size);
	fclose(f);
	if (r < 0) {
		pin_image_free(img);
		return r;
	}
	*ret = img;
	return 0;
}
