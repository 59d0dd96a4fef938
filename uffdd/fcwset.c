// SPDX-License-Identifier: MIT
/*
 * The working sets kept between Firecracker VMs: when a served VM's session
 * ends, its working set (state.c's record, in the order its pages were
 * first wanted) is kept as runs of offsets in its memory file, with the
 * file's identity (device, inode, size, mtime: the snapshot it holds); a
 * VM restored next from that same snapshot gets those runs as ranges of its
 * own guest memory, to replay (firecracker.c).  One set per pair, bounded,
 * in the daemon's memory only: a restarted daemon forgets them.  It may
 * call session.c, state.c and log.c.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "uffdd.h"

/* Runs of a working set kept per pair, at most (16 bytes each: 1 MiB); a
 * VM's runs past it are dropped, the first ones kept.  Per pair, so what
 * the daemon keeps is bounded by its configuration, not by its clients. */
#define FC_WSET_MAX (1u << 16)

/* Which snapshot a memory file holds: a file rewritten is another. */
struct snap_id {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

/* The working set the last served VM of a pair left, as runs of offsets
 * into the memory file of identity id, in recorded order. */
struct kept {
	struct snap_id id;
	struct state_range *v;
	size_t n;
};

static struct kept kept[UFFDD_FC_MAX];
/* The workers of two VMs end and start sessions at once. */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;

static int snap_id(int fd, struct snap_id *ret)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*ret = (struct snap_id){ st.st_dev, st.st_ino, st.st_size, st.st_mtim };
	return 0;
}

static bool same_snap(const struct snap_id *a, const struct snap_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Add [off, end) to the n runs of v (merged with the last when it goes on
 * from it); false when v is full. */
static bool add_run(struct state_range *v, size_t *n, uint64_t off, uint64_t end)
{
	if (*n && v[*n - 1].end == off) {
		v[*n - 1].end = end;
		return true;
	}
	if (*n == FC_WSET_MAX)
		return false;
	v[(*n)++] = (struct state_range){ off, end };
	return true;
}

/* s's working set as offsets in its memory file: runs of its regions, in
 * recorded order, at most FC_WSET_MAX. */
static size_t wset_offsets(const struct session *s, struct state_range *out)
{
	size_t nw, n = 0;
	const struct state_range *w = state_wset(s->st, &nw);

	for (size_t k = 0; k < nw; k++)
		for (size_t i = session_first_after(s, w[k].addr);
		     i < s->nregions && s->regions[i]->start < w[k].end; i++) {
			const struct region *r = s->regions[i];
			uint64_t lo = w[k].addr > r->start ? w[k].addr : r->start;
			uint64_t hi = w[k].end < r->start + r->len ? w[k].end : r->start + r->len;
			if (lo < hi && !add_run(out, &n, r->offset + (lo - r->start),
						r->offset + (hi - r->start)))
				return n;
		}
	return n;
}

void fcwset_keep(struct session *s, unsigned int pair, int memfd)
{
	struct snap_id id = { 0 };

	if (snap_id(memfd, &id) < 0)
		return;
	struct state_range *v = malloc(FC_WSET_MAX * sizeof(*v));
	if (!v) {
		slog(s, LOG_WARNING, "no memory to keep its working set: the next VM has none");
		return;
	}
	size_t n = wset_offsets(s, v);
	if (!n) {
		free(v);
		return;
	}
	struct state_range *fit = realloc(v, n * sizeof(*v));
	v = fit ? fit : v;
	pthread_mutex_lock(&kept_lock);
	struct kept *k = &kept[pair];
	free(k->v);
	*k = (struct kept){ id, v, n };
	pthread_mutex_unlock(&kept_lock);
	slog(s, LOG_INFO, "kept its working set for the next VM of %s: %zu runs",
	     uffdd_cfg.fc[pair].mem_file, n);
}

/*
 * The working set kept from the last VM of this memory file, mapped onto
 * the n mappings of v: address ranges in recorded order (a run over many
 * mappings in their address order), at most FC_WSET_MAX; NULL when none is
 * kept for this snapshot.
 */
Uffdd__Range *fcwset_ranges(int memfd, const struct fc_map *v, size_t n, size_t *ret_n)
{
	struct snap_id id = { 0 };
	Uffdd__Range *out = NULL;
	size_t k = 0;

	*ret_n = 0;
	if (snap_id(memfd, &id) < 0)
		return NULL;
	pthread_mutex_lock(&kept_lock);
	const struct kept *kp = NULL;
	for (unsigned int j = 0; j < uffdd_cfg.nfc && !kp; j++)
		if (kept[j].n && same_snap(&kept[j].id, &id))
			kp = &kept[j];
	if (kp)
		out = calloc(FC_WSET_MAX, sizeof(*out));
	for (size_t w = 0; out && w < kp->n && k < FC_WSET_MAX; w++)
		for (size_t i = 0; i < n && k < FC_WSET_MAX; i++) {
			uint64_t lo = kp->v[w].addr > v[i].off ? kp->v[w].addr : v[i].off;
			uint64_t hi = kp->v[w].end < v[i].off + v[i].len ? kp->v[w].end
									 : v[i].off + v[i].len;
			if (lo >= hi)
				continue;
			uffdd__range__init(&out[k]);
			out[k].addr = v[i].addr + (lo - v[i].off);
			out[k++].len = hi - lo;
		}
	pthread_mutex_unlock(&kept_lock);
	if (out && !k) {
		free(out);
		out = NULL;
	}
	*ret_n = k;
	return out;
}
