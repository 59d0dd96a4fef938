// SPDX-License-Identifier: MIT
/*
 * CRIU pre-dump chains: `criu dump --prev-images-dir` (and each pre-dump
 * after the first) writes a PE_PARENT entry, with no pages, for the pages
 * not written since the dump its `parent` link names; that dump's pagemap
 * for the same task holds them, or leaves them to its own parent.  This
 * file follows the links as far as PE_PARENT entries reach (a cycle, a
 * link that is missing or names nothing, a parent without the task's
 * pagemap, or one without the page, is an error naming it), opens each
 * dump's pages-<pages_id>.img, and resolves every PE_PARENT entry into the
 * entries of the newest dump that holds its pages, each naming its dump (its
 * source).  What the parent's entry says of its pages (PE_LAZY or not) is
 * what the resolved entry says.  Calls criu-img.c.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "criu-internal.h"

/* criu/include/image.h CR_PARENT_LINK: where a dump names its parent. */
#define CRIU_PARENT_LINK "parent"

/* One dump of the chain while it is read. */
struct level {
	int dfd;
	struct stat st; /* its directory, to find a cycle */
	struct pin_criu_pagemap_entry *e;
	size_t ne;
};

struct walk {
	struct level *lv;
	size_t n, cap;
	struct pin_criu_chain *c;
};

void pin_criu_chain_free(struct pin_criu_chain *c)
{
	for (size_t k = 0; k < c->n; k++) {
		if (c->pages_fds && c->pages_fds[k] >= 0)
			close(c->pages_fds[k]);
		if (c->dirs)
			free(c->dirs[k]);
	}
	free(c->dirs);
	free(c->pages_ids);
	free(c->pages_fds);
	free(c->pages_sizes);
	free(c->e);
	*c = (struct pin_criu_chain){ 0 };
}

static void walk_free(struct walk *w)
{
	for (size_t k = 0; k < w->n; k++) {
		close(w->lv[k].dfd);
		free(w->lv[k].e);
	}
	free(w->lv);
}

/* Room for one more dump in w and its chain. */
static int walk_grow(struct walk *w)
{
	struct pin_criu_chain *c = w->c;
	size_t cap = w->cap ? 2 * w->cap : 4;
	void *p;

	if (w->n < w->cap)
		return 0;
	if (!(p = reallocarray(w->lv, cap, sizeof(*w->lv))))
		return -ENOMEM;
	w->lv = p;
	if (!(p = reallocarray(c->dirs, cap, sizeof(*c->dirs))))
		return -ENOMEM;
	c->dirs = p;
	if (!(p = reallocarray(c->pages_ids, cap, sizeof(*c->pages_ids))))
		return -ENOMEM;
	c->pages_ids = p;
	if (!(p = reallocarray(c->pages_fds, cap, sizeof(*c->pages_fds))))
		return -ENOMEM;
	c->pages_fds = p;
	if (!(p = reallocarray(c->pages_sizes, cap, sizeof(*c->pages_sizes))))
		return -ENOMEM;
	c->pages_sizes = p;
	w->cap = cap;
	return 0;
}

/* Open the pages file the head of dump k names. */
static int open_pages(struct walk *w, size_t k)
{
	struct pin_criu_chain *c = w->c;
	char name[32];
	struct stat st;
	int fd, r;

	snprintf(name, sizeof(name), "pages-%" PRIu32 ".img", c->pages_ids[k]);
	fd = openat(w->lv[k].dfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s/%s: %s", c->dirs[k], name, strerror(-r));
		if (fd >= 0)
			close(fd);
		return r;
	}
	c->pages_fds[k] = fd;
	c->pages_sizes[k] = (uint64_t)st.st_size;
	return 0;
}

/* Add the dump in dfd (named dir; both the walk's now, whatever comes):
 * its pagemap of task pid and its pages file.  child: the dump whose
 * link led here, -1 for the first. */
static int walk_add(struct walk *w, int dfd, char *dir, int pid, ssize_t child)
{
	struct pin_criu_chain *c = w->c;
	struct level *l;
	int r = walk_grow(w);

	if (r < 0) {
		close(dfd);
		free(dir);
		return r;
	}
	l = &w->lv[w->n];
	*l = (struct level){ .dfd = dfd };
	c->dirs[w->n] = dir;
	c->pages_fds[w->n] = -1;
	w->n++;
	c->n = w->n;
	if (fstat(dfd, &l->st) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "stat %s: %s", dir, strerror(-r));
		return r;
	}
	for (size_t k = 0; k + 1 < w->n; k++)
		if (w->lv[k].st.st_dev == l->st.st_dev && w->lv[k].st.st_ino == l->st.st_ino) {
			pin_log(PIN_LOG_ERR,
				"%s/%s is %s again: the chain of parent dumps is a cycle",
				c->dirs[child], CRIU_PARENT_LINK, c->dirs[k]);
			return -ELOOP;
		}
	r = pin_criu_pagemap_read(dfd, pid, &c->pages_ids[w->n - 1], &l->e, &l->ne);
	if (r < 0) {
		if (child >= 0)
			pin_log(PIN_LOG_ERR,
				"%s, the parent dump of %s: no pagemap-%d.img to be read there "
				"(%s)",
				dir, c->dirs[child], pid, strerror(-r));
		return r;
	}
	return open_pages(w, w->n - 1);
}

/* The first PE_PARENT entry of dump k, or NULL. */
static const struct pin_criu_pagemap_entry *first_in_parent(const struct level *l)
{
	for (size_t i = 0; i < l->ne; i++)
		if (l->e[i].flags & PIN_CRIU_PE_PARENT)
			return &l->e[i];
	return NULL;
}

/* Open the parent dump the link of dump k names, for its entry pe. */
static int open_parent(struct walk *w, size_t k, int pid, const struct pin_criu_pagemap_entry *pe)
{
	const char *dir = w->c->dirs[k];
	char target[PATH_MAX], *name;
	struct stat st;
	ssize_t len;
	int pfd, r;

	if (fstatat(w->lv[k].dfd, CRIU_PARENT_LINK, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR,
			"%s/pagemap-%d.img offset %" PRIu64 ": the pages at 0x%" PRIx64
			" are in the parent dump, but %s/%s: %s",
			dir, pid, pe->file_off, pe->vaddr, dir, CRIU_PARENT_LINK, strerror(-r));
		return r;
	}
	len = readlinkat(w->lv[k].dfd, CRIU_PARENT_LINK, target, sizeof(target) - 1);
	target[len < 0 ? 0 : len] = '\0';
	pfd = openat(w->lv[k].dfd, CRIU_PARENT_LINK, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "%s/%s%s%s, the parent dump of %s: %s", dir, CRIU_PARENT_LINK,
			len > 0 ? " -> " : "", target, dir, strerror(-r));
		return r;
	}
	if (asprintf(&name, "%s/%s", dir, CRIU_PARENT_LINK) < 0) {
		close(pfd);
		return -ENOMEM;
	}
	return walk_add(w, pfd, name, pid, (ssize_t)k);
}

struct out {
	struct pin_criu_pagemap_entry *e;
	size_t n, cap;
};

static int out_push(struct out *o, const struct pin_criu_pagemap_entry *e)
{
	if (o->n == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 64;
		struct pin_criu_pagemap_entry *v = reallocarray(o->e, cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		o->e = v;
		o->cap = cap;
	}
	o->e[o->n++] = *e;
	return 0;
}

/*
 * The pages of the PE_PARENT entry pe of dump k from p[0, np), the entries
 * of its parent resolved already (ascending, none PE_PARENT): each piece a
 * source further from dump k; *j moves along p.
 */
static int from_parent(struct out *o, const struct walk *w, size_t k, int pid,
		       const struct pin_criu_pagemap_entry *pe,
		       const struct pin_criu_pagemap_entry *p, size_t np, size_t *j)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t addr = pe->vaddr, end = pe->vaddr + pe->nr_pages * page;

	while (addr < end) {
		struct pin_criu_pagemap_entry t;
		uint64_t pend;
		int r;

		while (*j < np && p[*j].vaddr + p[*j].nr_pages * page <= addr)
			(*j)++;
		if (*j == np || p[*j].vaddr > addr) {
			pin_log(PIN_LOG_ERR,
				"%s/pagemap-%d.img offset %" PRIu64 ": the page at 0x%" PRIx64
				" is in the parent dump, but %s/pagemap-%d.img has no entry for it",
				w->c->dirs[k], pid, pe->file_off, addr, w->c->dirs[k + 1], pid);
			return -EBADMSG;
		}
		pend = p[*j].vaddr + p[*j].nr_pages * page;
		t = p[*j];
		t.vaddr = addr;
		t.nr_pages = ((pend < end ? pend : end) - addr) / page;
		t.offset = p[*j].offset + (addr - p[*j].vaddr);
		t.file_off = pe->file_off;
		t.source = p[*j].source + 1;
		r = out_push(o, &t);
		if (r < 0)
			return r;
		addr += t.nr_pages * page;
	}
	return 0;
}

/* Dump k's entries with its PE_PARENT ones resolved from p[0, np), its
 * parent's (resolved already), into *o. */
static int resolve(const struct walk *w, size_t k, int pid, const struct pin_criu_pagemap_entry *p,
		   size_t np, struct out *o)
{
	const struct level *l = &w->lv[k];
	size_t j = 0;

	for (size_t i = 0; i < l->ne; i++) {
		int r = l->e[i].flags & PIN_CRIU_PE_PARENT
				? from_parent(o, w, k, pid, &l->e[i], p, np, &j)
				: out_push(o, &l->e[i]);

		if (r < 0)
			return r;
	}
	return 0;
}

/* Resolve from the oldest dump (which has no PE_PARENT) to the newest. */
static int resolve_all(struct walk *w, int pid)
{
	struct level *oldest = &w->lv[w->n - 1];
	struct out cur = { .e = oldest->e, .n = oldest->ne, .cap = oldest->ne };

	oldest->e = NULL;
	for (size_t k = w->n - 1; k-- > 0;) {
		struct out next = { 0 };
		int r = resolve(w, k, pid, cur.e, cur.n, &next);

		free(cur.e);
		if (r < 0) {
			free(next.e);
			return r;
		}
		cur = next;
	}
	w->c->e = cur.e;
	w->c->ne = cur.n;
	return 0;
}

int pin_criu_chain_open(int dfd, const char *dir, int pid, struct pin_criu_chain *ret)
{
	struct pin_criu_chain c = { 0 };
	struct walk w = { .c = &c };
	int fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
	char *name = strdup(dir);
	int r;

	if (fd < 0 || !name) {
		r = fd < 0 ? -errno : -ENOMEM;
		if (fd >= 0)
			close(fd);
		free(name);
		return r;
	}
	r = walk_add(&w, fd, name, pid, -1);
	while (!r) {
		const struct pin_criu_pagemap_entry *pe = first_in_parent(&w.lv[w.n - 1]);

		if (!pe)
			break;
		r = open_parent(&w, w.n - 1, pid, pe);
	}
	if (!r)
		r = resolve_all(&w, pid);
	walk_free(&w);
	if (r < 0) {
		pin_criu_chain_free(&c);
		return r;
	}
	*ret = c;
	return 0;
}
