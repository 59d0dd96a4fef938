// SPDX-License-Identifier: MIT
/*
 * The daemon's tables of sessions, under one lock (glock): the list of
 * published sessions in id order, their count and the next id, lookups in
 * the list, and the per-uid table of what each uid is charged for against
 * its limits.  It may call region.c (a session's page-server sources),
 * state.c (its record's bytes), notify.c (the status line), log.c and util.c.
 */
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <linux/kcmp.h>

#include "uffdd.h"

struct uid_use {
	uid_t uid;
	uint64_t v[UFFDD_CHARGES]; /* enum charge */
};

/* Guards the session list and the per-uid table (control plane only). */
pthread_mutex_t glock = PTHREAD_MUTEX_INITIALIZER;
static struct session *all;
static struct uid_use *uses;
static size_t nuses;
static uint64_t next_id = 1;
_Atomic unsigned int session_table_count;

static struct uid_use *use_of(uid_t uid, bool create)
{
	for (size_t i = 0; i < nuses; i++)
		if (uses[i].uid == uid)
			return &uses[i];
	if (!create)
		return NULL;
	struct uid_use *u = realloc(uses, (nuses + 1) * sizeof(*u));
	if (!u)
		return NULL;
	uses = u;
	uses[nuses] = (struct uid_use){ .uid = uid };
	return &uses[nuses++];
}

static const char *const charge_names[UFFDD_CHARGES] = {
	[CHARGE_REGIONS] = "regions",
	[CHARGE_PINNED] = "bytes pinned",
	[CHARGE_SESSIONS] = "sessions",
	[CHARGE_CONNECTIONS] = "connections",
	[CHARGE_FDS] = "descriptors in uffdd",
	[CHARGE_BYTES] = "bytes of session records and page-server buffers",
};

/* The limit on kind k; 0: none. */
static uint64_t charge_limit(enum charge k)
{
	switch (k) {
	case CHARGE_REGIONS:
		return uffdd_cfg.max_regions_per_uid;
	case CHARGE_PINNED:
		return uffdd_cfg.max_pinned_per_uid;
	case CHARGE_SESSIONS:
		return uffdd_cfg.max_sessions_per_uid;
	case CHARGE_CONNECTIONS:
		return uffdd_cfg.max_connections_per_uid;
	case CHARGE_FDS:
		return uffdd_cfg.max_fds_per_uid;
	default:
		return uffdd_cfg.max_bytes_per_uid;
	}
}

/* What s holds now of kind k (CHARGE_SESSIONS and after). */
static uint64_t held(const struct session *s, enum charge k)
{
	switch (k) {
	case CHARGE_SESSIONS:
		return !s->inspect;
	case CHARGE_CONNECTIONS:
		return s->sock >= 0;
	case CHARGE_FDS:
		return (uint64_t)(s->sock >= 0) + (s->uffd != NULL) + (s->pagemap >= 0) +
		       (s->evlog_fd >= 0) + (s->st != NULL) + s->nfiles;
	case CHARGE_BYTES:
		/* A page server's buffers, at their most, are the session's. */
		return (s->st ? state_bytes(s->st) : 0) +
		       regions_remote_sources(s) * UFFDD_REMOTE_BYTES_MAX;
	default:
		return 0;
	}
}

/* Add d to u's and s's counts (d[k] may be negative). */
static void charge_apply(struct session *s, struct uid_use *u, const int64_t *d)
{
	for (int k = 0; k < UFFDD_CHARGES; k++) {
		s->charged[k] += (uint64_t)d[k];
		if (u)
			u->v[k] += (uint64_t)d[k];
	}
}

int session_charge(struct session *s, int64_t regions, int64_t pinned, char *why, size_t whylen)
{
	int64_t d[UFFDD_CHARGES] = { [CHARGE_REGIONS] = regions, [CHARGE_PINNED] = pinned };
	int ret = 0;

	for (int k = CHARGE_SESSIONS; k < UFFDD_CHARGES; k++)
		d[k] = (int64_t)(held(s, k) - s->charged[k]);
	pthread_mutex_lock(&glock);
	struct uid_use *u = use_of(s->uid, true);
	if (why && !u) {
		ret = -ENOMEM;
		snprintf(why, whylen, "out of memory");
	}
	for (int k = 0; why && u && k < UFFDD_CHARGES; k++) {
		uint64_t lim = charge_limit(k);
		if (d[k] <= 0 || !lim || ((uint64_t)d[k] <= lim && u->v[k] <= lim - (uint64_t)d[k]))
			continue;
		ret = -EDQUOT;
		snprintf(why, whylen, "uid %u has %" PRIu64 " %s, the limit is %" PRIu64, s->uid,
			 u->v[k], charge_names[k], lim);
		break;
	}
	if (!ret)
		charge_apply(s, u, d);
	pthread_mutex_unlock(&glock);
	return ret;
}

/* Give back everything s was charged. */
void charge_release(struct session *s)
{
	int64_t d[UFFDD_CHARGES];

	for (int k = 0; k < UFFDD_CHARGES; k++)
		d[k] = -(int64_t)s->charged[k];
	pthread_mutex_lock(&glock);
	charge_apply(s, use_of(s->uid, false), d);
	pthread_mutex_unlock(&glock);
}

void id_taken(uint64_t id)
{
	pthread_mutex_lock(&glock);
	if (id >= next_id)
		next_id = id + 1;
	pthread_mutex_unlock(&glock);
}

uint64_t ids_take(size_t n)
{
	pthread_mutex_lock(&glock);
	uint64_t id = next_id;
	next_id += n;
	pthread_mutex_unlock(&glock);
	return id;
}

/*
 * Make s visible to other threads (inspection walks the global list from any
 * worker) and to the counts.  Only a complete session is published: one
 * filled while listed could be read half made.  The list is in id order
 * (a fork child or a session taken over may come after higher ids): a page
 * of a list walks it from its cursor, no sort.
 */
void session_publish(struct session *s)
{
	struct session **p = &all;

	pthread_mutex_lock(&glock);
	while (*p && (*p)->id < s->id)
		p = &(*p)->gnext;
	s->gnext = *p;
	*p = s;
	s->listed = true;
	pthread_mutex_unlock(&glock);
	atomic_fetch_add(&session_table_count, 1);
	notify_status(sessions_count());
}

/* Take a published session off the list and give back what it was charged. */
void session_unpublish(struct session *s)
{
	pthread_mutex_lock(&glock);
	for (struct session **p = &all; *p; p = &(*p)->gnext) {
		if (*p == s) {
			*p = s->gnext;
			break;
		}
	}
	pthread_mutex_unlock(&glock);
	if (!s->inspect)
		atomic_fetch_sub(&session_table_count, 1);
}

void sessions_lock(void)
{
	pthread_mutex_lock(&glock);
}

void sessions_unlock(void)
{
	pthread_mutex_unlock(&glock);
}

/* Whether a and b (ours) are the same open file: kcmp(), which needs
 * CONFIG_KCMP; 0 when it cannot tell (said once). */
static int same_file(int a, int b)
{
	static bool warned;
	pid_t me = getpid();
	long r = syscall(SYS_kcmp, me, me, KCMP_FILE, a, b);

	if (r >= 0)
		return r == 0;
	if (!warned) {
		int err = errno;
		warned = true;
		ulog(LOG_WARNING,
		     "kcmp(KCMP_FILE): %s: a userfaultfd handed over in two sessions is not "
		     "noticed",
		     strerror(err));
	}
	return 0;
}

bool sessions_uffd_taken_locked(int fd, ino_t ino)
{
	for (struct session *s = all; s; s = s->gnext) {
		/* Another inode, another file: no system call per session. */
		if (!s->uffd || (ino && s->uffd_ino && s->uffd_ino != ino))
			continue;
		if (same_file(pin_uffd_fd(s->uffd), fd) > 0)
			return true;
	}
	return false;
}

struct session *sessions_get_locked(uint64_t id)
{
	for (struct session *s = all; s; s = s->gnext)
		if (s->id == id)
			return s;
	return NULL;
}

struct session *sessions_from_locked(uint64_t id)
{
	struct session *s = all;

	while (s && s->id < id)
		s = s->gnext;
	return s;
}

void sessions_foreach(void (*fn)(struct session *s, void *data), void *data)
{
	pthread_mutex_lock(&glock);
	for (struct session *s = all; s; s = s->gnext)
		fn(s, data);
	pthread_mutex_unlock(&glock);
}

unsigned int sessions_count(void)
{
	return atomic_load(&session_table_count);
}
