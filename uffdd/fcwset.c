// SPDX-License-Identifier: MIT
/*
 * The working sets kept between Firecracker VMs: when a served VM's session
 * ends, its working set (state.c's record, in the order its pages were
 * first wanted) is kept as runs of offsets in its memory file, with the
 * file's identity (device, inode, size, mtime: the snapshot it holds); a
 * VM restored next from that same snapshot gets those runs as ranges of its
 * own guest memory, to replay (firecracker.c).  One set per pair, bounded.
 * Under a service manager each kept set is also a sealed memfd in the fd
 * store, named w<pair number> (the file's layout below): a restarted daemon
 * takes it back (fcwset_adopt(), checked as untrusted input) when its pair
 * is configured and the pair's memory file still holds the same snapshot,
 * else drops it.  Kept sets are a cache: a daemon that dies while it
 * replaces one loses it, never a VM's memory.  It may call session.c,
 * state.c, store.c, log.c and util.c.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* A kept set in the fd store: this header, then its n runs (struct
 * state_range: offset, end), nothing after. */
#define WSET_MAGIC   "UFFDDWS1"
#define WSET_VERSION 1u
struct wset_hdr {
	char magic[8];
	uint32_t version;
	uint32_t pad;
	uint64_t dev, ino;
	int64_t size, mtime_sec, mtime_nsec;
	uint64_t n;
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

/* The memfd that holds k in the fd store (sealed: nothing changes it
 * after); -errno. */
static int wset_file(const struct kept *k)
{
	struct wset_hdr h = {
		.magic = WSET_MAGIC,
		.version = WSET_VERSION,
		.dev = (uint64_t)k->id.dev,
		.ino = (uint64_t)k->id.ino,
		.size = (int64_t)k->id.size,
		.mtime_sec = (int64_t)k->id.mtime.tv_sec,
		.mtime_nsec = (int64_t)k->id.mtime.tv_nsec,
		.n = k->n,
	};
	size_t runs = k->n * sizeof(*k->v);
	_cleanup_close_ int fd = memfd_create("uffdd-fcwset", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		return -errno;
	ssize_t a = pwrite(fd, &h, sizeof(h), 0);
	if (a < 0)
		return -errno;
	ssize_t b = pwrite(fd, k->v, runs, sizeof(h));
	if (b < 0)
		return -errno;
	if (a != (ssize_t)sizeof(h) || b != (ssize_t)runs)
		return -EIO;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return -errno;
	int r = fd;
	fd = -1;
	return r;
}

/* Pair's kept set replaces what the fd store held for it (kept_lock held:
 * two VMs of a pair that end at once store their sets in turn, never both). */
static void wset_store(struct session *s, unsigned int pair)
{
	if (!store_enabled())
		return;
	store_remove("w%u", pair + 1);
	int fd = wset_file(&kept[pair]);
	if (fd < 0) {
		slog(s, LOG_WARNING,
		     "its working set (%zu runs) is not kept across a restart: memfd: %s",
		     kept[pair].n, strerror(-fd));
		return;
	}
	if (store_put(fd, "w%u", pair + 1) < 0)
		slog(s, LOG_WARNING,
		     "its working set is not kept across a restart: the fd store "
		     "did not take it");
	close(fd);
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
	wset_store(s, pair);
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

/* The kept set the fd store held in fd, checked: its header and its runs
 * (inside a file of the size it names, in whole pages); 0 or -EBADMSG with
 * why filled in. */
static int wset_read(int fd, struct kept *ret, char *why, size_t whylen)
{
	struct wset_hdr h;
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    memcmp(h.magic, WSET_MAGIC, sizeof(h.magic)) || h.version != WSET_VERSION) {
		snprintf(why, whylen, "not a kept working set of version %u", WSET_VERSION);
		return -EBADMSG;
	}
	if (!h.n || h.n > FC_WSET_MAX ||
	    (uint64_t)st.st_size != sizeof(h) + h.n * sizeof(struct state_range)) {
		snprintf(why, whylen, "n %" PRIu64 " (1 to %u runs, the file's size %jd)", h.n,
			 FC_WSET_MAX, (intmax_t)st.st_size);
		return -EBADMSG;
	}
	if (h.size <= 0 || h.mtime_nsec < 0 || h.mtime_nsec >= 1000000000) {
		snprintf(why, whylen, "the snapshot's size %" PRId64 " or mtime nsec %" PRId64,
			 h.size, h.mtime_nsec);
		return -EBADMSG;
	}
	size_t bytes = h.n * sizeof(struct state_range);
	struct state_range *v = malloc(bytes);
	if (!v)
		return -ENOMEM;
	if (pread(fd, v, bytes, sizeof(h)) != (ssize_t)bytes) {
		free(v);
		snprintf(why, whylen, "its %" PRIu64 " runs: short", h.n);
		return -EBADMSG;
	}
	for (uint64_t i = 0; i < h.n; i++)
		if (v[i].addr >= v[i].end || v[i].end > (uint64_t)h.size ||
		    (v[i].addr | v[i].end) & (uffdd_page - 1)) {
			snprintf(why, whylen,
				 "run %" PRIu64 " [%#" PRIx64 ", %#" PRIx64
				 "): not whole pages inside the snapshot's %" PRId64 " bytes",
				 i, v[i].addr, v[i].end, h.size);
			free(v);
			return -EBADMSG;
		}
	ret->id = (struct snap_id){ (dev_t)h.dev,
				    (ino_t)h.ino,
				    (off_t)h.size,
				    { (time_t)h.mtime_sec, (long)h.mtime_nsec } };
	ret->v = v;
	ret->n = h.n;
	return 0;
}

int fcwset_adopt(unsigned int pair, int memfd, int fd, char *why, size_t whylen)
{
	struct snap_id now = { 0 };
	struct kept k = { 0 };

	int r = snap_id(memfd, &now);
	if (r < 0) {
		snprintf(why, whylen, "fstat(%s): %s", uffdd_cfg.fc[pair].mem_file, strerror(-r));
		return r;
	}
	r = wset_read(fd, &k, why, whylen);
	if (r < 0)
		return r;
	if (!same_snap(&k.id, &now)) {
		free(k.v);
		snprintf(why, whylen, "%s holds another snapshot now", uffdd_cfg.fc[pair].mem_file);
		return -ESTALE;
	}
	pthread_mutex_lock(&kept_lock);
	if (kept[pair].n)
		r = -EEXIST;
	else
		kept[pair] = k;
	pthread_mutex_unlock(&kept_lock);
	if (r < 0) {
		free(k.v);
		snprintf(why, whylen, "stored twice; the first is kept");
		return r;
	}
	ulog(LOG_INFO, "kept working set of %s taken over: %zu runs", uffdd_cfg.fc[pair].mem_file,
	     k.n);
	return 0;
}
