// SPDX-License-Identifier: MIT
/*
 * Sessions: identity, pins, counters, the record and the fd store entries of
 * each (sessions rebuilt from them after a restart are session-restore.c's;
 * the list of sessions and per-uid limits session-table.c's), and what the
 * layers above read and keep in them: which pages are in place, the recorded
 * working set, the queue of Prefetch requests.  Its regions are region.c's,
 * its pins pins.c's.  Below every file that serves requests or faults, it may
 * call session-table.c, region.c, pins.c, state.c, reader.c (to end its
 * reader), source.c, store.c, notify.c (the status line), evlog.c (to unmap
 * its event log), share.c (its uid's entry), log.c and util.c.
 */
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>

#include "uffdd.h"

/* ---- sessions ---- */

struct session *session_alloc(int sock, pid_t pid, uid_t uid)
{
	struct session *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->sock = sock;
	s->pagemap = -1;
	s->evlog_fd = -1;
	s->pid = pid;
	s->uid = uid;
	s->share = share_of(uid);
	s->wsock = (struct watch){ .s = s };
	s->wuffd = (struct watch){ .s = s };
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

/* The session's record, new, with its identity; parent: a fork child's. */
int session_state(struct session *s, uint64_t parent)
{
	struct state_ident ident = { .id = s->id, .parent = parent, .uid = s->uid };

	if (getrandom(ident.token, sizeof(ident.token), 0) != sizeof(ident.token))
		return -errno;
	int r = state_new(&ident, uffdd_cfg.max_state_bytes, &s->st);
	if (r < 0)
		return r;
	session_set_meta(s);
	return state_commit(s->st, 0, NULL, 0);
}

/*
 * Hand the session's descriptors to the fd store: the record, the
 * connection (a client's session) and the userfaultfd (once it has one).
 */
static int session_store(struct session *s)
{
	int r = store_put(state_fd(s->st), "s%" PRIu64 ".state", s->id);

	if (!r && s->sock >= 0)
		r = store_put(s->sock, "s%" PRIu64 ".conn", s->id);
	if (r < 0)
		slog(s, LOG_ERR, "the fd store refused it: %s", strerror(-r));
	return r;
}

/* The name a session's userfaultfd is stored under. */
static void store_remove_uffd(const struct session *s)
{
	if (s->parent)
		store_remove("s%" PRIu64 ".fork%" PRIu64, s->id, s->parent);
	else
		store_remove("s%" PRIu64 ".uffd", s->id);
}

/*
 * The record goes last: a death in between leaves a record that names what
 * the store lacks (the next daemon drops it), never a fork child's
 * userfaultfd without its record, which would look like a child a dead
 * daemon was making.
 */
static void session_unstore(struct session *s)
{
	if (s->uffd)
		store_remove_uffd(s);
	if (s->pagemap >= 0)
		store_remove("s%" PRIu64 ".pagemap", s->id);
	if (s->evlog_fd >= 0)
		store_remove("s%" PRIu64 ".evlog", s->id);
	if (s->sock >= 0)
		store_remove("s%" PRIu64 ".conn", s->id);
	store_remove("s%" PRIu64 ".state", s->id);
}

int session_new(int sock, pid_t pid, uid_t uid, const char *fc_name, struct session **ret)
{
	/* One line per window for every uid refused: a client retrying in a
	 * loop must not flood the journal.  The accepting thread's only. */
	static struct ratelimit rl;
	struct session *s = session_alloc(sock, pid, uid);
	char why[128];

	if (!s)
		return -ENOMEM;
	/* Checked before anything is made for it: its connection and record. */
	int r = session_charge(s, 0, 0, why, sizeof(why));
	if (r < 0) {
		ulog_rl(&rl, LOG_WARNING, "uid %u pid %d: connection refused: %s", uid, (int)pid,
			why);
		s->sock = -1; /* the caller's still */
		session_free(s);
		return r;
	}
	s->id = ids_take(1);
	/* In its record from the start: a successor knows what it is. */
	if (fc_name) {
		s->fc = true;
		snprintf(s->name, sizeof(s->name), "%s", fc_name);
	}
	r = session_state(s, 0);
	if (!r)
		session_charge(s, 0, 0, NULL, 0);
	if (r < 0 || (r = session_store(s)) < 0) {
		session_unstore(s);
		s->sock = -1; /* the caller's still */
		session_free(s);
		return r;
	}
	session_publish(s);
	*ret = s;
	return 0;
}

void session_inspect(struct session *s)
{
	pthread_mutex_lock(&glock);
	s->inspect = true;
	pthread_mutex_unlock(&glock);
	session_unstore(s);
	session_charge(s, 0, 0, NULL, 0);
	atomic_fetch_sub(&session_table_count, 1);
	notify_status(sessions_count());
}

int session_fork(struct session *parent, int fd, uint64_t id, struct session **ret)
{
	struct session *s = session_alloc(-1, 0, parent->uid);

	if (!s) {
		close(fd);
		return -ENOMEM;
	}
	s->id = id;
	id_taken(id);
	s->parent = parent->id;
	snprintf(s->name, sizeof(s->name), "%.50s (fork)", parent->name);
	struct stat st;
	if (fstat(fd, &st) == 0)
		s->uffd_ino = st.st_ino;
	int r = pin_uffd_from_fd(fd, pin_uffd_features(parent->uffd), &s->uffd);
	if (r < 0) {
		close(fd);
		session_free(s);
		return r;
	}
	/*
	 * The child's userfaultfd is in the store already (the caller's), and
	 * its parent's record names it as being made.  A record saying so goes
	 * to the store first: killed while the regions are copied, the next
	 * daemon makes the child again from its parent's record.
	 */
	s->forking = true;
	r = session_state(s, parent->id);
	if (!r)
		r = store_put(state_fd(s->st), "s%" PRIu64 ".state", s->id);
	for (size_t i = 0; !r && i < parent->nregions; i++) {
		struct region *p = parent->regions[i];
		struct region *c = region_part(s, p, 0, p->npages, p->start);
		if (!c || regions_reserve(s, 1) < 0 || region_record(s, c) < 0) {
			region_free(s, c);
			r = -ENOMEM;
			break;
		}
		regions_insert_locked(s, c);
	}
	/* A broken parent's child is as broken: its pages are as unknown. */
	s->forking = s->broken = parent->broken;
	session_set_meta(s);
	if (!r)
		r = session_commit(s, 0, NULL, 0);
	if (r < 0) {
		session_unstore(s);
		session_free(s);
		return r;
	}
	/* A fork cannot be refused: count the regions even past the limit. */
	session_charge(s, (int64_t)s->nregions, 0, NULL, 0);
	session_publish(s);
	*ret = s;
	return 0;
}

void session_set_meta(struct session *s)
{
	struct state_meta m = {
		.pid = s->pid,
		.flags = (s->hello ? STATE_HELLO : 0) | (s->uffd ? STATE_UFFD : 0) |
			 (s->forking ? STATE_FORKING : 0) | (s->finishing ? STATE_FINISHING : 0) |
			 (s->fc ? STATE_FC : 0) | (s->fc_ready ? STATE_FC_READY : 0) |
			 (s->pagemap >= 0 ? STATE_PAGEMAP : 0) |
			 (s->evlog_fd >= 0 ? STATE_EVLOG : 0),
		.features = s->uffd ? pin_uffd_features(s->uffd) : 0,
	};

	memcpy(m.name, s->name, sizeof(m.name));
	state_set_meta(s->st, &m);
}

int session_commit(struct session *s, uint64_t seq, const void *reply, size_t len)
{
	/* What an event changed while a request is handled goes with the
	 * request's reply. */
	if (!seq && s->in_request)
		return 0;
	int r = state_commit(s->st, seq, reply, len);
	if (r < 0)
		slog(s, LOG_ERR, "committing its record: %s", strerror(-r));
	return r;
}

/* ---- pins (pins.c), recorded ---- */

ssize_t session_pin_find(const struct session *s, uint64_t cookie)
{
	return pins_find(&s->pins, cookie);
}

int session_pin_add(struct session *s, uint64_t addr, uint64_t len, uint64_t cookie)
{
	struct state_rec rec = { .kind = STATE_PIN, .start = addr, .len = len, .offset = cookie };
	uint32_t slot;
	int r = state_add(s->st, &rec, &slot);

	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	r = pins_reserve(&s->pins);
	if (!r) {
		pins_add(&s->pins, addr, len, cookie, slot);
		s->pinned += len;
	}
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		state_del(s->st, slot);
	return r;
}

void session_pin_del(struct session *s, size_t i)
{
	state_del(s->st, s->pins.v[i].slot);
	pthread_mutex_lock(&s->lock);
	s->pinned -= s->pins.v[i].len;
	pins_del(&s->pins, i);
	pthread_mutex_unlock(&s->lock);
}

void session_unmap_record(struct session *s)
{
	state_free(s->st);
	s->st = NULL;
}

void session_free(struct session *s)
{
	/* Closed last: once its connection is gone, what the session cost is
	 * given back (a test that waits for the one sees the other). */
	int sock = s->sock;

	if (s->listed) {
		session_unpublish(s);
		session_unstore(s);
	}
	charge_release(s);
	/* A read under way (of a source that may never answer) is left to
	 * the reader: nothing here waits for it. */
	reader_free(s->rd);

	if (s->w) {
		if (s->sock >= 0)
			epoll_ctl(s->w->ep, EPOLL_CTL_DEL, s->sock, NULL);
		if (s->uffd)
			epoll_ctl(s->w->ep, EPOLL_CTL_DEL, pin_uffd_fd(s->uffd), NULL);
	}
	/* Closing the userfaultfd wakes the client's blocked threads: they
	 * fault again as if it had never been registered. */
	pin_uffd_free(s->uffd);
	if (s->pagemap >= 0)
		close(s->pagemap);
	evlog_close(s);
	/* The record goes whole: no region needs taking out of it. */
	state_free(s->st);
	s->st = NULL;
	for (size_t i = 0; i < s->nregions; i++)
		region_free(s, s->regions[i]);
	free(s->regions);
	free(s->files);
	pins_free(&s->pins);
	for (size_t i = 0; i < s->outq_n; i++)
		free(s->outq[(s->outq_head + i) % UFFDD_OUTQ_MAX].buf);
	free(s->outq);
	free(s->faults);
	free(s->waits);
	free(s->prefetch);
	for (size_t i = 0; i < s->nreplays; i++)
		free(s->replays[i].v);
	free(s->replays);
	pthread_mutex_destroy(&s->lock);
	free(s);
	/* What the client cost goes back to the system, not only to malloc:
	 * freed chunks in the middle of a thread's arena stay resident
	 * otherwise (a burst of 64 fork sessions left 1 to 3.5 MiB more each
	 * time).  It walks only the arenas' free lists. */
	malloc_trim(0);
	if (sock >= 0)
		close(sock);
	notify_status(sessions_count());
}

/* ---- what is in place, what to place ---- */

void session_record(struct session *s, uint64_t addr, uint64_t end)
{
	/* Full: the faults are served, just not recorded. */
	state_wset_add(s->st, addr, end);
}

int session_prefetch_add(struct session *s, uint64_t addr, uint64_t len)
{
	size_t i = session_first_after(s, addr);

	if (i == s->nregions || s->regions[i]->start >= addr + len)
		return -ENOENT;
	struct prefetch *p = realloc(s->prefetch, (s->nprefetch + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	s->prefetch = p;
	p[s->nprefetch++] = (struct prefetch){ addr, addr + len };
	return 0;
}

/* Adds s's counters to out (and lat, UFFDD_LAT_BUCKETS entries). */
void session_stats_fill(struct session *s, Uffdd__Stats *out, uint64_t *lat)
{
	const struct stats *st = &s->stats;
	uint64_t total = 0, populated = 0;

#define ADD(f)                                                                                     \
	do {                                                                                       \
		out->f += STAT_GET(st->f);                                                         \
		out->has_##f = true;                                                               \
	} while (0)
	ADD(faults);
	ADD(pages_copied);
	ADD(pages_zeroed);
	ADD(bytes_copied);
	ADD(pages_pushed);
	ADD(wp_faults);
	ADD(eagain);
	ADD(eexist);
	ADD(deferred);
	ADD(unreadable);
#undef ADD
	for (unsigned int i = 0; i < UFFDD_LAT_BUCKETS; i++)
		lat[i] += STAT_GET(st->lat[i]);
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nregions; i++) {
		total += s->regions[i]->npages;
		populated += STAT_GET(s->regions[i]->n_populated);
	}
	pthread_mutex_unlock(&s->lock);
	out->pages_total += total;
	out->has_pages_total = true;
	out->pages_populated += populated;
	out->has_pages_populated = true;
}
