// SPDX-License-Identifier: MIT
/*
 * Checkpoint images: our own format (uffdd-image(5)), written from a live
 * process's memory and read back, and the region list every image format
 * (criu.c too) is read into.
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

#define MANIFEST     "manifest"
#define MANIFEST_TMP "manifest.tmp"
#define PAGES	     "pages"
#define HEADER	     "uffdd-image 1"
/* process_vm_readv() granule: large enough to amortize the syscall. */
#define COPY_CHUNK (1u << 20)

struct image_region {
	struct pin_image_region pub;
	struct pin_image_segment *segs; /* pub.segments, writable */
	size_t cap;
	char *name;
};

struct pin_image {
	int pages_fd;
	int snapshot_fd; /* pin_image_snapshot()'s memfd; -1: none */
	size_t nr, cap;
	struct image_region *regions;
};

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
static const struct pin_image_segment *find_segment(const struct pin_image *img, uint64_t addr)
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

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
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
		const struct pin_image_segment *s = find_segment(img, addr);
		uint64_t in;
		size_t n;
		int r;

		if (!s)
			return -EFAULT;
		in = addr - s->addr;
		n = s->len - in < len ? (size_t)(s->len - in) : len;
		if (s->flags & PIN_IMAGE_SEG_DATA) {
			r = pin_pread_all(img->pages_fd, p, n, s->offset + in);
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

/* ---- writing ----------------------------------------------------------- */

struct mapping {
	uint64_t start, end;
	uint32_t prot, flags;
	char *name;
};

static bool special_mapping(const char *name)
{
	static const char *const names[] = { "[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]",
					     "[uprobes]" };

	for (size_t i = 0; i < PIN_ARRAY_SIZE(names); i++)
		if (!strcmp(name, names[i]))
			return true;
	return false;
}

/*
 * One line of /proc/PID/maps.  Returns 1 and *m when it is a mapping to
 * take, 0 when not, -EBADMSG when the line does not parse.
 */
static int parse_maps_line(char *line, unsigned int flags, struct mapping *m)
{
	uint64_t start, end, inode;
	char perms[5], *name;
	int pos = -1;
	bool anon;

	if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %*x %*s %" SCNu64 " %n", &start, &end, perms,
		   &inode, &pos) != 4 ||
	    pos < 0 || strlen(perms) != 4)
		return -EBADMSG;
	name = line + pos;
	name[strcspn(name, "\n")] = '\0';
	anon = inode == 0 && (name[0] == '\0' || name[0] == '[');
	/* Unreadable (PROT_NONE guards) and shared mappings are not ours to copy. */
	if (perms[0] != 'r' || perms[3] != 'p' || special_mapping(name))
		return 0;
	if (!anon && !(flags & PIN_IMAGE_WRITE_FILE))
		return 0;
	if (perms[1] != 'w' && !(flags & PIN_IMAGE_WRITE_READONLY))
		return 0;
	*m = (struct mapping){
		.start = start,
		.end = end,
		.prot = PROT_READ | (perms[1] == 'w' ? PROT_WRITE : 0) |
			(perms[2] == 'x' ? PROT_EXEC : 0),
		.flags = MAP_PRIVATE | (anon ? MAP_ANONYMOUS : 0) |
			 (!strcmp(name, "[stack]") ? MAP_GROWSDOWN : 0),
		.name = name,
	};
	return 1;
}

static void free_mappings(struct mapping *maps, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(maps[i].name);
	free(maps);
}

/* Clip m to [addr, addr + len); false when nothing is left. */
static bool clip(struct mapping *m, uint64_t addr, uint64_t len)
{
	uint64_t end = addr + len;

	if (!len)
		return true;
	if (m->end <= addr || m->start >= end)
		return false;
	if (m->start < addr)
		m->start = addr;
	if (m->end > end)
		m->end = end;
	return true;
}

static int read_maps(int pid, const struct pin_image_write_opts *o, struct mapping **ret,
		     size_t *ret_n)
{
	char path[64], *line = NULL;
	size_t linesz = 0, n = 0, cap = 0, lineno = 0;
	struct mapping *maps = NULL;
	FILE *f;
	int r = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s: %s", path, strerror(errno));
		return r;
	}
	while (getline(&line, &linesz, f) > 0) {
		struct mapping m;

		lineno++;
		r = parse_maps_line(line, o->flags, &m);
		if (r < 0) {
			pin_log(PIN_LOG_ERR, "%s line %zu does not parse", path, lineno);
			break;
		}
		if (!r || !clip(&m, o->addr, o->len))
			continue;
		if (n == cap) {
			size_t c = cap ? 2 * cap : 32;
			struct mapping *nm = reallocarray(maps, c, sizeof(*nm));

			if (!nm) {
				r = -ENOMEM;
				break;
			}
			maps = nm;
			cap = c;
		}
		m.name = strdup(m.name);
		if (!m.name) {
			r = -ENOMEM;
			break;
		}
		maps[n++] = m;
		r = 0;
	}
	if (!r && ferror(f)) {
		r = -EIO;
		pin_log(PIN_LOG_ERR, "read %s: %s", path, strerror(EIO));
	}
	free(line);
	fclose(f);
	if (r < 0) {
		free_mappings(maps, n);
		return r;
	}
	*ret = maps;
	*ret_n = n;
	return 0;
}

static bool page_is_zero(const unsigned char *p, size_t page)
{
	return p[0] == 0 && !memcmp(p, p + 1, page - 1);
}

/* Write the non-zero pages of buf (len a page multiple) at off; zero pages
 * stay holes of the sparse file. */
static int write_nonzero(int fd, const unsigned char *buf, size_t len, uint64_t off)
{
	size_t page = page_size();

	for (size_t i = 0; i < len;) {
		size_t j;
		int r;

		if (page_is_zero(buf + i, page)) {
			i += page;
			continue;
		}
		for (j = i + page; j < len && !page_is_zero(buf + j, page); j += page)
			;
		r = pwrite_all(fd, buf + i, j - i, off + i);
		if (r < 0) {
			pin_log(PIN_LOG_ERR,
				"pwrite of the pages file at offset %" PRIu64 " (%zu bytes): %s",
				off + i, j - i, strerror(-r));
			return r;
		}
		i = j;
	}
	return 0;
}

static int copy_mapping(int pid, int fd, unsigned char *buf, const struct mapping *m, uint64_t off)
{
	size_t page = page_size();
	uint64_t len = m->end - m->start;

	for (uint64_t done = 0; done < len;) {
		size_t want = len - done < COPY_CHUNK ? (size_t)(len - done) : COPY_CHUNK;
		struct iovec local = { .iov_base = buf, .iov_len = want };
		struct iovec remote = { .iov_base = (void *)(uintptr_t)(m->start + done),
					.iov_len = want };
		ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
		size_t n;
		int r;

		if (got < 0 && errno == EINTR)
			continue;
		n = got < 0 ? 0 : (size_t)got / page * page;
		if (!n) {
			r = got < 0 ? -errno : -EFAULT;
			pin_log(PIN_LOG_ERR,
				"process_vm_readv of pid %d at 0x%" PRIx64 "-0x%" PRIx64
				": %s (did the mapping change?)",
				pid, m->start + done, m->start + done + want, strerror(-r));
			return r;
		}
		r = write_nonzero(fd, buf, n, off + done);
		if (r < 0)
			return r;
		done += n;
	}
	return 0;
}

static void prot_letters(uint32_t prot, char out[4])
{
	out[0] = prot & PROT_READ ? 'r' : '-';
	out[1] = prot & PROT_WRITE ? 'w' : '-';
	out[2] = prot & PROT_EXEC ? 'x' : '-';
	out[3] = '\0';
}

/* The manifest goes to a temporary name first so that a reader never sees
 * one that describes a pages file still being written. */
static int write_manifest(int dfd, const struct mapping *maps, size_t n)
{
	int fd = openat(dfd, MANIFEST_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	uint64_t off = 0;
	FILE *f;
	int r = 0;

	if (fd < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s: %s", MANIFEST_TMP, strerror(errno));
		return r;
	}
	f = fdopen(fd, "w");
	if (!f) {
		r = -errno;
		close(fd);
		return r;
	}
	fprintf(f, "%s\npage-size %zu\n", HEADER, page_size());
	for (size_t i = 0; i < n; i++) {
		char prot[4];

		prot_letters(maps[i].prot, prot);
		fprintf(f,
			"region 0x%" PRIx64 " 0x%" PRIx64 " %s 0x%" PRIx32 " 0x%" PRIx64 "%s%s\n",
			maps[i].start, maps[i].end - maps[i].start, prot, maps[i].flags, off,
			maps[i].name[0] ? " " : "", maps[i].name);
		off += maps[i].end - maps[i].start;
	}
	fprintf(f, "end %zu\n", n);
	if (fflush(f) || ferror(f))
		r = -errno ?: -EIO;
	if (fclose(f) && !r)
		r = -errno;
	if (!r && renameat(dfd, MANIFEST_TMP, dfd, MANIFEST) < 0)
		r = -errno;
	if (r < 0)
		pin_log(PIN_LOG_ERR, "write %s: %s", MANIFEST, strerror(-r));
	return r;
}

PIN_EXPORT int pin_image_write(int pid, const char *dir, const struct pin_image_write_opts *opts)
{
	struct pin_image_write_opts o = { .sz = sizeof(o) };
	_cleanup_close_ int dfd = -1;
	_cleanup_close_ int fd = -1;
	_cleanup_free_ unsigned char *buf = NULL;
	struct mapping *maps = NULL;
	size_t n = 0;
	uint64_t total = 0;
	int r;

	r = pin_opts_copy(&o, sizeof(o), opts);
	if (r < 0)
		return r;
	if (pid < 0 || !dir || o.flags & ~(PIN_IMAGE_WRITE_READONLY | PIN_IMAGE_WRITE_FILE) ||
	    o.addr + o.len < o.addr)
		return -EINVAL;
	if (!pid)
		pid = getpid();
	/* A process's memory may hold secrets: only the owner reads it. */
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "mkdir %s: %s", dir, strerror(errno));
		return r;
	}
	dfd = pin_image_open_dir(dir);
	if (dfd < 0)
		return dfd;
	buf = aligned_alloc(page_size(), COPY_CHUNK);
	if (!buf)
		return -ENOMEM;
	r = read_maps(pid, &o, &maps, &n);
	if (r < 0)
		return r;
	/* An old manifest must not describe the pages file being rewritten. */
	if (unlinkat(dfd, MANIFEST, 0) < 0 && errno != ENOENT) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "unlink %s/%s: %s", dir, MANIFEST, strerror(errno));
		goto out;
	}
	fd = openat(dfd, PAGES, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s/%s: %s", dir, PAGES, strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		total += maps[i].end - maps[i].start;
	/* The whole size first: pages never written stay holes. */
	if (ftruncate(fd, (off_t)total) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "ftruncate %s/%s to %" PRIu64 ": %s", dir, PAGES, total,
			strerror(errno));
		goto out;
	}
	total = 0;
	for (size_t i = 0; i < n; i++) {
		r = copy_mapping(pid, fd, buf, &maps[i], total);
		if (r < 0)
			goto out;
		total += maps[i].end - maps[i].start;
	}
	r = write_manifest(dfd, maps, n);
out:
	free_mappings(maps, n);
	return r < 0 ? r : (int)n;
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
 * region and the size of the pages file. */
static int parse_region(struct pin_image *img, const char *line, uint64_t pages_size)
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
	if (!len || addr % page || len % page || off % page || addr + len < addr ||
	    off + len < off || off + len > pages_size)
		return -EBADMSG;
	r = pin_image_add_region(img, addr, len, p, flags, name);
	if (r < 0)
		return r == -EINVAL ? -EBADMSG : r;
	return add_file_segments(img, off, len);
}

static int parse_manifest(struct pin_image *img, FILE *f, const char *dir, uint64_t pages_size)
{
	char *line = NULL, expect[64];
	size_t linesz = 0, lineno = 0, nr = 0;
	bool ended = false;
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
		if (lineno == 1)
			r = strcmp(line, HEADER) ? -EBADMSG : 0;
		else if (lineno == 2)
			r = strcmp(line, expect) ? -EBADMSG : 0;
		else if (!strncmp(line, "end ", 4)) {
			ended = true;
			r = sscanf(line, "end %zu", &nr) == 1 && nr == img->nr ? 0 : -EBADMSG;
		} else {
			r = parse_region(img, line, pages_size);
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

PIN_EXPORT int pin_image_open(const char *dir, struct pin_image **ret)
{
	_cleanup_close_ int dfd = -1;
	struct pin_image *img;
	uint64_t pages_size;
	int mfd, r;
	FILE *f;

	if (!dir || !ret)
		return -EINVAL;
	dfd = pin_image_open_dir(dir);
	if (dfd < 0)
		return dfd;
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
