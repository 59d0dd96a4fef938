// SPDX-License-Identifier: MIT
/*
 * A session's regions: each with its bitmaps in the session's record
 * (state.c), the sorted array of them, lookups, insertion, and the cuts
 * that RegionRemove, munmap and mremap make (a region split in parts, each
 * recorded with a copy of its bits); the source files they hold, counted per
 * session for the per-uid caps.  Below session.c, it may call state.c,
 * source.c, log.c and util.c.
 */
#include <stdio.h>
#include <string.h>

#include "uffdd.h"

/* ---- regions ---- */

#define NO_SLOT UINT32_MAX

/* Index of the first of s's source files whose id is not below id. */
static size_t file_find(const struct session *s, uint64_t id)
{
	size_t lo = 0, hi = s->nfiles;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (s->files[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* One more region of s reads src's file (none for a zero source). */
static int file_hold(struct session *s, const struct source *src)
{
	uint64_t id = source_file_id(src);
	size_t i = file_find(s, id);

	if (!id)
		return 0;
	if (i < s->nfiles && s->files[i].id == id) {
		s->files[i].regions++;
		return 0;
	}
	struct file_use *v = realloc(s->files, (s->nfiles + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->files = v;
	memmove(&v[i + 1], &v[i], (s->nfiles - i) * sizeof(*v));
	v[i] = (struct file_use){ id, 1, src };
	s->nfiles++;
	return 0;
}

/* The source of some region of s over the file id (an entry whose source
 * went with its region: regions rebuilt after a restart each have their
 * own). */
static const struct source *file_src(const struct session *s, size_t i)
{
	for (size_t k = 0; !s->files[i].src && k < s->nregions; k++)
		if (source_file_id(s->regions[k]->src) == s->files[i].id)
			return s->regions[k]->src;
	return s->files[i].src;
}

/* One region less of s reads src's file. */
static void file_drop(struct session *s, const struct source *src)
{
	uint64_t id = source_file_id(src);
	size_t i = file_find(s, id);

	if (!id || i == s->nfiles || s->files[i].id != id)
		return;
	if (s->files[i].src == src)
		s->files[i].src = NULL;
	if (--s->files[i].regions)
		return;
	memmove(&s->files[i], &s->files[i + 1], (s->nfiles - i - 1) * sizeof(*s->files));
	s->nfiles--;
}

uint64_t regions_remote_sources(const struct session *s)
{
	uint64_t n = 0;

	/* Their ids have the top bit: they sort last. */
	for (size_t i = file_find(s, REMOTE_ID_BIT); i < s->nfiles; i++) {
		const struct source *src = file_src(s, i);
		n += src && remote_pays(source_remote(src));
	}
	return n;
}

/* Bitmaps of npages in the session's record, zeroed (the dirty one for WP):
 * 0, -EFBIG (over the record's size) or -ENOMEM. */
static int region_bitmaps(struct session *s, struct region *r)
{
	if (!(r->populated = state_bm_new(s->st, r->npages)) ||
	    !(r->zero = state_bm_new(s->st, r->npages)) ||
	    ((r->mode & PIN_UFFD_REGISTER_WP) && !(r->dirty = state_bm_new(s->st, r->npages))))
		return -errno;
	return 0;
}

int region_new(struct session *s, uint64_t start, uint64_t len, uint32_t mode, struct source *src,
	       uint64_t offset, bool push, struct region **ret)
{
	struct region *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	r->start = start;
	r->len = len;
	r->npages = len >> uffdd_page_shift;
	r->mode = mode;
	r->offset = offset;
	r->push = push;
	r->slot = NO_SLOT;
	r->ra_next = UINT64_MAX;
	r->ra_pages = 1;
	if ((err = region_bitmaps(s, r)) < 0 || (err = file_hold(s, src)) < 0) {
		region_free(s, r);
		return err;
	}
	r->src = source_ref(src);
	*ret = r;
	return 0;
}

void region_free(struct session *s, struct region *r)
{
	if (!r)
		return;
	if (s->st) {
		if (r->slot != NO_SLOT)
			state_del(s->st, r->slot);
		state_bm_free(s->st, r->populated, r->npages);
		state_bm_free(s->st, r->zero, r->npages);
		state_bm_free(s->st, r->dirty, r->npages);
	}
	if (r->src)
		file_drop(s, r->src);
	source_unref(r->src);
	free(r);
}

/* Add r to the record (it takes effect at the next commit). */
int region_record(struct session *s, struct region *r)
{
	struct state_rec rec = {
		.kind = STATE_REGION,
		.mode = r->mode,
		.flags = (r->push ? STATE_R_PUSH : 0) | (r->ours ? STATE_R_OURS : 0) |
			 (r->huge ? STATE_R_HUGE : 0) |
			 (source_covers(r->src) ? STATE_R_COVERED : 0),
		.start = r->start,
		.len = r->len,
		.offset = r->offset,
		.src = source_file_id(r->src),
		.populated = state_bm_off(s->st, r->populated),
		.zero = state_bm_off(s->st, r->zero),
		.dirty = r->dirty ? state_bm_off(s->st, r->dirty) : 0,
	};

	return state_add(s->st, &rec, &r->slot);
}

/* The pages [from, from + n) of r as a region of s (r's session, or a fork
 * child's) at start, not recorded yet. */
struct region *region_part(struct session *s, const struct region *r, uint64_t from, uint64_t n,
			   uint64_t start)
{
	struct region *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	*p = *r;
	p->start = start;
	p->len = n << uffdd_page_shift;
	p->npages = n;
	p->slot = NO_SLOT;
	p->offset = r->offset + (from << uffdd_page_shift);
	p->push_next = r->push_next > from ? r->push_next - from : 0;
	p->ra_next = UINT64_MAX;
	p->ra_pages = 1;
	p->populated = p->zero = p->dirty = NULL;
	p->src = NULL;
	int err = region_bitmaps(s, p);
	if (!err)
		err = file_hold(s, r->src);
	if (err < 0) {
		region_free(s, p);
		errno = -err;
		return NULL;
	}
	bm_copy(p->populated, r->populated, from, n);
	bm_copy(p->zero, r->zero, from, n);
	if (r->dirty)
		bm_copy(p->dirty, r->dirty, from, n);
	atomic_init(&p->n_populated, bm_count(p->populated, 0, n));
	atomic_init(&p->n_dirty, p->dirty ? bm_count(p->dirty, 0, n) : 0);
	p->src = source_ref(r->src);
	return p;
}

size_t session_first_after(const struct session *s, uint64_t addr)
{
	size_t lo = 0, hi = s->nregions;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (s->regions[mid]->start + s->regions[mid]->len <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct region *session_overlap(struct session *s, size_t *i, uint64_t start, uint64_t end,
			       uint64_t *ret_first, uint64_t *ret_n)
{
	if (*i >= s->nregions || s->regions[*i]->start >= end)
		return NULL;
	struct region *r = s->regions[(*i)++];
	uint64_t a = r->start > start ? r->start : start;
	uint64_t b = r->start + r->len < end ? r->start + r->len : end;
	*ret_first = (a - r->start) >> uffdd_page_shift;
	*ret_n = (b - a) >> uffdd_page_shift;
	return r;
}

struct region *session_find(struct session *s, uint64_t addr)
{
	size_t i = session_first_after(s, addr);

	if (i < s->nregions && s->regions[i]->start <= addr)
		return s->regions[i];
	return NULL;
}

/* Room for n more regions, so that inserting cannot fail half way. */
int regions_reserve(struct session *s, size_t n)
{
	struct region **v = realloc(s->regions, (s->nregions + n) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	s->regions = v;
	return 0;
}

/* Insert into reserved room; the caller checked for overlaps. */
void regions_insert_locked(struct session *s, struct region *r)
{
	size_t i = session_first_after(s, r->start);

	memmove(&s->regions[i + 1], &s->regions[i], (s->nregions - i) * sizeof(r));
	s->regions[i] = r;
	s->nregions++;
}

int session_insert(struct session *s, struct region *r)
{
	size_t i = session_first_after(s, r->start);

	if (i < s->nregions && s->regions[i]->start < r->start + r->len)
		return -EEXIST;
	pthread_mutex_lock(&s->lock);
	int ret = regions_reserve(s, 1);
	if (!ret)
		ret = region_record(s, r);
	if (!ret)
		regions_insert_locked(s, r);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* Replace the region at i by its parts outside [a, b); the part inside,
 * shifted by move, goes to *ret_mid when move is not 0. */
static int64_t cut_one(struct session *s, size_t i, uint64_t a, uint64_t b, int64_t move,
		       struct region **ret_mid)
{
	struct region *r = s->regions[i], *head = NULL, *tail = NULL, *mid = NULL;
	uint64_t fa = (a - r->start) >> uffdd_page_shift, fb = (b - r->start) >> uffdd_page_shift;
	int err = regions_reserve(s, 1);

	if (!err && fa && !(head = region_part(s, r, 0, fa, r->start)))
		err = -errno;
	if (!err && fb < r->npages && !(tail = region_part(s, r, fb, r->npages - fb, b)))
		err = -errno;
	if (!err && move && !(mid = region_part(s, r, fa, fb - fa, (uint64_t)((int64_t)a + move))))
		err = -errno;
	if (!err && head)
		err = region_record(s, head);
	if (!err && tail)
		err = region_record(s, tail);
	if (err < 0) {
		region_free(s, head);
		region_free(s, tail);
		region_free(s, mid);
		return err;
	}
	memmove(&s->regions[i], &s->regions[i + 1], (s->nregions - i - 1) * sizeof(r));
	s->nregions--;
	region_free(s, r);
	if (head)
		regions_insert_locked(s, head);
	if (tail)
		regions_insert_locked(s, tail);
	*ret_mid = mid;
	return (int64_t)(fb - fa);
}

int64_t session_cut(struct session *s, uint64_t start, uint64_t end, int64_t move, bool unregister)
{
	struct region **moved = NULL;
	size_t nmoved = 0;
	int64_t cut = 0, ret = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = session_first_after(s, start); i < s->nregions;) {
		struct region *r = s->regions[i], *mid = NULL;
		if (r->start >= end)
			break;
		uint64_t a = r->start > start ? r->start : start;
		uint64_t b = r->start + r->len < end ? r->start + r->len : end;
		struct region **m = realloc(moved, (nmoved + 1) * sizeof(*m));
		if (!m) {
			ret = -ENOMEM;
			break;
		}
		moved = m;
		bool ours = r->ours;
		ret = cut_one(s, i, a, b, move, &mid);
		if (ret < 0)
			break;
		/* Once cut: a cut refused leaves the region as it was. */
		if (unregister && ours && s->uffd)
			pin_uffd_unregister(s->uffd, (void *)(uintptr_t)a, b - a);
		cut += ret;
		if (mid)
			moved[nmoved++] = mid;
		i = session_first_after(s, b);
	}
	for (size_t k = 0; k < nmoved; k++) {
		struct region *r = moved[k];
		size_t i = session_first_after(s, r->start);
		if ((i < s->nregions && s->regions[i]->start < r->start + r->len) ||
		    regions_reserve(s, 1) < 0 || region_record(s, r) < 0) {
			ulog(LOG_WARNING,
			     "session %" PRIu64 ": region moved to [%#" PRIx64 ", +%#" PRIx64
			     ") overlaps another or no memory; dropped",
			     s->id, r->start, r->len);
			region_free(s, r);
			continue;
		}
		regions_insert_locked(s, r);
	}
	pthread_mutex_unlock(&s->lock);
	free(moved);
	if (ret < 0) {
		ulog(LOG_ERR, "session %" PRIu64 ": cut [%#" PRIx64 ", %#" PRIx64 "): %s", s->id,
		     start, end, strerror(-ret));
		return ret;
	}
	return cut;
}
