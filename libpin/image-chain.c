// SPDX-License-Identifier: MIT
/*
 * Chains of incremental images (uffdd-image(5)): an image and the parents
 * its manifest names, each checked to be the one its child was written
 * against (its id), no directory twice, then flattened into one region list
 * whose segments each name the pages file they come from: the newest image
 * that holds the page.  A lazy restore adds one uffdd region per run of one
 * source (restore.c), so the daemon serves a chain as plain fd regions and
 * its readahead, push, replay and durable state need nothing new.  Calls
 * image.c.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "libpin-private.h"

int pin_image_new_id(char out[PIN_IMAGE_ID_LEN + 1])
{
	unsigned char raw[PIN_IMAGE_ID_LEN / 2];
	size_t got = 0;

	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

void pin_image_chain_free(struct pin_image_link *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		pin_image_free(v[i].img);
		free(v[i].dir);
	}
	free(v);
}

/* The directory a child's manifest names, for messages: canonical where it
 * exists, else after the child's canonical one. */
static char *parent_name(const char *child, const char *path)
{
	char *c = path[0] == '/' ? NULL : realpath(child, NULL), *s, *real;

	if (asprintf(&s, "%s%s%s",
		     path[0] == '/' ? ""
		     : c	    ? c
				    : child,
		     path[0] == '/' ? "" : "/", path) < 0)
		s = NULL;
	free(c);
	real = s ? realpath(s, NULL) : NULL;
	if (real) {
		free(s);
		return real;
	}
	return s;
}

struct walk {
	struct pin_image_link *v;
	size_t n, cap;
	struct stat *seen; /* each image's directory, to find a cycle */
};

static int walk_add(struct walk *w, struct pin_image *img, char *dir, const struct stat *st)
{
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 8;
		struct pin_image_link *v = reallocarray(w->v, cap, sizeof(*v));
		struct stat *seen;

		if (!v)
			return -ENOMEM;
		w->v = v;
		seen = reallocarray(w->seen, cap, sizeof(*seen));
		if (!seen)
			return -ENOMEM;
		w->seen = seen;
		w->cap = cap;
	}
	w->v[w->n] = (struct pin_image_link){ .img = img, .dir = dir };
	w->seen[w->n++] = *st;
	return 0;
}

/* The image in dfd (named dir, which the walk owns from now on). */
static int walk_one(struct walk *w, int dfd, char *dir)
{
	struct pin_image *img;
	struct stat st;
	int r;

	if (fstat(dfd, &st) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "stat %s: %s", dir, strerror(errno));
		free(dir);
		return r;
	}
	for (size_t i = 0; i < w->n; i++)
		if (w->seen[i].st_dev == st.st_dev && w->seen[i].st_ino == st.st_ino) {
			pin_log(PIN_LOG_ERR,
				"%s/%s names parent %s, which is %s again: the chain is a cycle",
				w->v[w->n - 1].dir, PIN_IMAGE_MANIFEST, dir, w->v[i].dir);
			free(dir);
			return -ELOOP;
		}
	r = pin_image_open_one(dfd, dir, &img);
	if (r < 0) {
		free(dir);
		return r;
	}
	r = walk_add(w, img, dir, &st);
	if (r < 0) {
		pin_image_free(img);
		free(dir);
	}
	return r;
}

/* The child names its parent by id: a parent swapped for another
 * checkpoint (even of the same process) is refused. */
static int check_parent(const struct pin_image_link *child, const struct pin_image_link *parent)
{
	if (!strcmp(child->img->parent_id, parent->img->id))
		return 0;
	pin_log(PIN_LOG_ERR,
		"%s/%s names parent %s with id %s, but that image's id is %s: not the "
		"checkpoint it was written against",
		child->dir, PIN_IMAGE_MANIFEST, parent->dir, child->img->parent_id,
		parent->img->id[0] ? parent->img->id : "none");
	return -ESTALE;
}

int pin_image_chain_open(const char *dir, struct pin_image_link **ret, size_t *ret_n)
{
	struct walk w = { 0 };
	char *name = strdup(dir);
	int dfd, r;

	if (!name)
		return -ENOMEM;
	dfd = pin_image_open_dir(dir);
	if (dfd < 0) {
		free(name);
		return dfd;
	}
	for (;;) {
		const struct pin_image_link *child;
		int pfd;

		r = walk_one(&w, dfd, name);
		if (r < 0)
			break;
		child = &w.v[w.n - 1];
		if (w.n > 1) {
			r = check_parent(&w.v[w.n - 2], child);
			if (r < 0)
				break;
		}
		if (!child->img->parent_path)
			break;
		name = parent_name(child->dir, child->img->parent_path);
		if (!name) {
			r = -ENOMEM;
			break;
		}
		pfd = openat(dfd, child->img->parent_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (pfd < 0) {
			r = -errno;
			pin_log(PIN_LOG_ERR, "%s/%s names parent %s: %s", child->dir,
				PIN_IMAGE_MANIFEST, name, strerror(errno));
			free(name);
			break;
		}
		close(dfd);
		dfd = pfd;
	}
	close(dfd);
	free(w.seen);
	if (r < 0) {
		pin_image_chain_free(w.v, w.n);
		return r;
	}
	*ret = w.v;
	*ret_n = w.n;
	return 0;
}

/* ---- flattening -------------------------------------------------------- */

struct segs {
	struct pin_image_segment *v;
	size_t n, cap;
};

/* Append s, merged into the last when it continues it (zero after zero, or
 * the next bytes of the same pages file). */
static int segs_push(struct segs *o, const struct pin_image_segment *s)
{
	if (o->n) {
		struct pin_image_segment *l = &o->v[o->n - 1];
		bool data = l->flags & PIN_IMAGE_SEG_DATA;

		if (l->flags == s->flags &&
		    (!data || (l->source == s->source && l->offset + l->len == s->offset))) {
			l->len += s->len;
			return 0;
		}
	}
	if (o->n == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 8;
		struct pin_image_segment *v = reallocarray(o->v, cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		o->v = v;
		o->cap = cap;
	}
	o->v[o->n++] = *s;
	return 0;
}

/* [addr, addr + len) from parent (flattened already): its segments, each
 * source one further from the child. */
static int from_parent(struct segs *o, const struct pin_image *parent, uint64_t addr, uint64_t len,
		       const char *dir)
{
	for (uint64_t end = addr + len; addr < end;) {
		const struct pin_image_segment *s = pin_image_find_segment(parent, addr);
		struct pin_image_segment t;
		int r;

		if (!s) {
			pin_log(PIN_LOG_ERR,
				"%s/%s leaves the page at %#" PRIx64 " to its parent, which has "
				"none there",
				dir, PIN_IMAGE_MANIFEST, addr);
			return -EBADMSG;
		}
		t = *s;
		t.addr = addr;
		t.len = (s->addr + s->len < end ? s->addr + s->len : end) - addr;
		if (t.flags & PIN_IMAGE_SEG_DATA) {
			t.offset = s->offset + (addr - s->addr);
			t.source = s->source + 1;
		}
		r = segs_push(o, &t);
		if (r < 0)
			return r;
		addr += t.len;
	}
	return 0;
}

static int resolve_region(struct image_region *g, const struct pin_image *parent, const char *dir)
{
	struct segs o = { 0 };
	int r = 0;

	for (size_t k = 0; !r && k < g->pub.nr_segments; k++) {
		const struct pin_image_segment *s = &g->segs[k];

		if (s->flags & PIN_IMAGE_SEG_PARENT)
			r = from_parent(&o, parent, s->addr, s->len, dir);
		else
			r = segs_push(&o, s);
	}
	if (r < 0) {
		free(o.v);
		return r;
	}
	free(g->segs);
	g->segs = o.v;
	g->cap = o.cap;
	g->pub.segments = o.v;
	g->pub.nr_segments = o.n;
	return 0;
}

/* child's pages not held from parent, which hands child its pages files. */
static int resolve(struct pin_image *child, struct pin_image *parent, const char *dir)
{
	int *fds = calloc(parent->nr_parents + 1, sizeof(*fds));

	if (!fds)
		return -ENOMEM;
	for (size_t i = 0; i < child->nr; i++) {
		int r = resolve_region(&child->regions[i], parent, dir);

		if (r < 0) {
			free(fds);
			return r;
		}
	}
	fds[0] = parent->pages_fd;
	if (parent->nr_parents)
		memcpy(fds + 1, parent->parent_fds, parent->nr_parents * sizeof(*fds));
	child->parent_fds = fds;
	child->nr_parents = parent->nr_parents + 1;
	parent->pages_fd = -1;
	parent->nr_parents = 0;
	return 0;
}

int pin_image_chain_flatten(struct pin_image_link *v, size_t n, struct pin_image **ret)
{
	int r;

	/* From the oldest (a full image) up, each resolved by the one below. */
	for (size_t i = n - 1; i > 0; i--) {
		r = resolve(v[i - 1].img, v[i].img, v[i - 1].dir);
		if (r < 0) {
			pin_image_chain_free(v, n);
			return r;
		}
	}
	*ret = v[0].img;
	v[0].img = NULL;
	pin_image_chain_free(v, n);
	return 0;
}

PIN_EXPORT int pin_image_open(const char *dir, struct pin_image **ret)
{
	struct pin_image_link *v;
	size_t n;
	int r;

	if (!dir || !ret)
		return -EINVAL;
	r = pin_image_chain_open(dir, &v, &n);
	return r < 0 ? r : pin_image_chain_flatten(v, n, ret);
}
