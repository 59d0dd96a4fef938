// SPDX-License-Identifier: MIT
/*
 * The start after a restart: the descriptors the fd store handed back
 * (store.c's names) become sessions again.  Source files and page-server
 * connections (r<id>.sock with its record r<id>.state: remote-adopt.c,
 * whose sources the regions claim) first, then each
 * session from its record (state.c, checked as untrusted input), its
 * connection and its userfaultfd; a session that does not hold together is
 * dropped from the store with one log line and costs no other.  Every
 * registered range is woken, so that threads whose faults the dead daemon
 * had read fault again, to us; each client is told the last request
 * committed (control_resume()); a Firecracker VM's session is told nothing
 * (firecracker.c), and the working sets kept for the next VMs go back to
 * fcwset.c through firecracker.c.  It may call firecracker.c, control.c,
 * control-reply.c (Resume), fault.c, worker.c, session.c, state.c,
 * source.c, remote-adopt.c, store.c, evlog.c, log.c and util.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uffdd.h"

enum part { CONN, UFFD, STATE, PAGEMAP, EVLOG, NPARTS };

static const char *const part_name[NPARTS] = { "conn", "uffd", "state", "pagemap", "evlog" };

struct group {
	uint64_t id;
	int fd[NPARTS];
	uint64_t parent;   /* a fork child's uffd came as s<id>.fork<parent> */
	struct session *s; /* rebuilt */
};

/* "<prefix><decimal id><rest>": the id, and where rest begins; NULL when not. */
static const char *parse_id(const char *name, char prefix, uint64_t *ret)
{
	char *end;

	if (name[0] != prefix || name[1] < '0' || name[1] > '9')
		return NULL;
	errno = 0;
	unsigned long long v = strtoull(name + 1, &end, 10);
	if (errno || !v)
		return NULL;
	*ret = v;
	return end;
}

static void drop(const char *why_what, const char *name, int fd)
{
	ulog(LOG_WARNING, "fd store: %s: %s; dropped", name, why_what);
	store_remove("%s", name);
	close(fd);
}

/* Its names leave the store record last (as session.c's do): a fork
 * child's userfaultfd left behind would look like a child being made. */
static void drop_group(struct group *g, const char *why)
{
	ulog(LOG_ERR, "session %" PRIu64 ": not taken over: %s", g->id, why);
	if (g->parent)
		store_remove("s%" PRIu64 ".fork%" PRIu64, g->id, g->parent);
	for (int k = 0; k < NPARTS; k++) {
		store_remove("s%" PRIu64 ".%s", g->id, part_name[k]);
		if (g->fd[k] >= 0)
			close(g->fd[k]);
	}
}

static int cmp_group(const void *a, const void *b)
{
	const struct group *x = a, *y = b;

	return (x->id > y->id) - (x->id < y->id);
}

/* The page-server connections r<id>.sock with r<id>.state, adopted now
 * (marked taken in v: fd -1). */
static void adopt_remotes(struct stored_fd *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t id, id2;
		const char *rest = parse_id(v[i].name, 'r', &id);
		if (!rest || v[i].fd < 0)
			continue;
		int sock = -1, rec = -1;
		for (size_t j = i; j < n; j++) {
			const char *r2 = parse_id(v[j].name, 'r', &id2);
			if (!r2 || id2 != id || v[j].fd < 0)
				continue;
			int *to = !strcmp(r2, ".sock")	  ? &sock
				  : !strcmp(r2, ".state") ? &rec
							  : NULL;
			/* The same name twice: the first is as good. */
			if (to && *to < 0)
				*to = v[j].fd;
			else
				close(v[j].fd);
			v[j].fd = -1;
		}
		remote_conn_adopt(id, sock, rec);
	}
}

/* Group the session descriptors by id (sorted); source files are adopted now. */
static struct group *collect(struct stored_fd *v, size_t n, size_t *ret_n)
{
	struct group *g = calloc(n ? n : 1, sizeof(*g));
	size_t ng = 0;

	if (!g)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		uint64_t id;
		if (v[i].fd < 0)
			continue;
		const char *rest = parse_id(v[i].name, 'f', &id);
		if (rest && !*rest) {
			int r = source_file_adopt(id, v[i].fd);
			if (r < 0)
				drop(strerror(-r), v[i].name, v[i].fd);
			continue;
		}
		rest = parse_id(v[i].name, 'w', &id);
		if (rest && !*rest) {
			fc_wset_adopt(id, v[i].fd);
			continue;
		}
		rest = parse_id(v[i].name, 's', &id);
		int k = NPARTS;
		uint64_t parent = 0;
		for (int j = 0; rest && *rest == '.' && j < NPARTS; j++)
			if (!strcmp(rest + 1, part_name[j]))
				k = j;
		if (rest && !strncmp(rest, ".fork", 5)) {
			const char *end = parse_id(rest + 4, 'k', &parent);
			if (end && !*end)
				k = UFFD;
		}
		if (k == NPARTS) {
			drop("not a name this daemon gives", v[i].name, v[i].fd);
			continue;
		}
		size_t j = 0;
		while (j < ng && g[j].id != id)
			j++;
		if (j == ng) {
			g[ng] = (struct group){ .id = id };
			for (int p = 0; p < NPARTS; p++)
				g[ng].fd[p] = -1;
			ng++;
		}
		if (parent)
			g[j].parent = parent;
		if (g[j].fd[k] >= 0) {
			/* The same name twice: the store kept a descriptor a
			 * dead daemon gave twice; the first is as good. */
			close(v[i].fd);
			continue;
		}
		g[j].fd[k] = v[i].fd;
	}
	qsort(g, ng, sizeof(*g), cmp_group);
	*ret_n = ng;
	return g;
}

/*
 * The client's pagemap (wp-async regions), as the record says: one it does
 * not name came with a handover never committed (the client sends it
 * again); one it names and the store lacks leaves those regions' DirtyGet
 * failing, the rest of the session served.
 */
static void adopt_pagemap(struct group *g)
{
	struct session *s = g->s;
	bool said = state_meta(s->st)->flags & STATE_PAGEMAP;
	int fd = g->fd[PAGEMAP];

	g->fd[PAGEMAP] = -1;
	if (fd >= 0 && (!said || !dirty_is_pagemap(fd))) {
		ulog(LOG_WARNING, "fd store: s%" PRIu64 ".pagemap: %s; dropped", s->id,
		     said ? "not a /proc/PID/pagemap" : "its handover was never committed");
		store_remove("s%" PRIu64 ".pagemap", s->id);
		close(fd);
		fd = -1;
	}
	if (said && fd < 0)
		ulog(LOG_ERR,
		     "session %" PRIu64 ": its record says a pagemap, the store has none: "
		     "DirtyGet of its wp-async regions fails",
		     s->id);
	s->pagemap = fd;
}

/*
 * The client's event log, as the record says, busy until its session is
 * served (serve_again()): the events the dead daemon read and did not log
 * are applied, and logged, first.  One the record names and the store lacks,
 * or that does not map, leaves the client's pin cache blind to the changes
 * from now on: said, the session served all the same.
 */
static void adopt_evlog(struct group *g)
{
	struct session *s = g->s;
	bool said = state_meta(s->st)->flags & STATE_EVLOG;
	int fd = g->fd[EVLOG];
	char why[160];

	g->fd[EVLOG] = -1;
	if (fd >= 0 && !said) {
		ulog(LOG_WARNING,
		     "fd store: s%" PRIu64 ".evlog: its handover was never "
		     "committed; dropped",
		     s->id);
		store_remove("s%" PRIu64 ".evlog", s->id);
		close(fd);
		return;
	}
	if (fd >= 0 && evlog_adopt(s, fd, why, sizeof(why)) < 0) {
		ulog(LOG_ERR, "fd store: s%" PRIu64 ".evlog: %s; dropped", s->id, why);
		store_remove("s%" PRIu64 ".evlog", s->id);
		close(fd);
		fd = -1;
	}
	if (said && fd < 0)
		ulog(LOG_ERR,
		     "session %" PRIu64 ": its record says an event log, none could be taken: "
		     "its client's pin cache no longer learns of discards and unmaps",
		     s->id);
}

/* The session a group's record describes; a fork child left half made
 * (no record, or one marked forking) is only opened here: see remake(). */
static int take_one(struct group *g, bool *ret_half)
{
	char why[160];
	struct state *st;

	*ret_half = false;
	if (g->fd[STATE] < 0 && g->fd[CONN] < 0 && g->fd[UFFD] >= 0 && g->parent) {
		*ret_half = true;
		return 0;
	}
	if (g->fd[STATE] < 0) {
		drop_group(g, "no record (s<id>.state) in the store");
		return -EBADMSG;
	}
	int r = state_open(g->fd[STATE], uffdd_cfg.max_state_bytes, &st, why, sizeof(why));
	g->fd[STATE] = -1;
	if (r == 0 && state_ident(st)->id != g->id) {
		snprintf(why, sizeof(why), "its record is session %" PRIu64 "'s",
			 state_ident(st)->id);
		state_free(st);
		r = -EBADMSG;
	}
	if (r < 0) {
		drop_group(g, r == -EBADMSG ? why : strerror(-r));
		return r;
	}
	/* Marked forking by a daemon making it from its parent (an orphan's
	 * record names no parent: it stays poisoned). */
	if ((state_meta(st)->flags & STATE_FORKING) && state_ident(st)->parent && g->parent &&
	    g->fd[UFFD] >= 0) {
		state_free(st);
		*ret_half = true;
		return 0;
	}
	r = session_restore(st, g->fd[CONN], g->fd[UFFD], &g->s, why, sizeof(why));
	g->fd[CONN] = g->fd[UFFD] = -1;
	if (r < 0) {
		drop_group(g, r == -EBADMSG ? why : strerror(-r));
		return r;
	}
	g->s->parent = g->parent;
	adopt_pagemap(g);
	adopt_evlog(g);
	return 0;
}

/*
 * A fork child the dead daemon did not finish recording, made again from
 * its parent's record when that record still names it as being made:
 * nothing changed the parent since the fork was read then (its worker was
 * making the child, the events before it in that read are applied first:
 * replay_events(), and no session is served before the takeover is done).
 * Otherwise (the parent gone, itself half made, or served since: the child's
 * record was lost after it was complete) its pages are unknown: poisoned.
 */
static int remake(struct group *g, struct group *v, size_t n)
{
	struct session *parent = NULL;

	for (size_t i = 0; i < n && v[i].id < g->id; i++)
		if (v[i].id == g->parent && v[i].s && !v[i].s->broken &&
		    state_making(v[i].s->st, g->id))
			parent = v[i].s;
	store_remove("s%" PRIu64 ".state", g->id);
	int r = parent ? session_fork(parent, g->fd[UFFD], g->id, &g->s)
		       : session_orphan(g->id, g->fd[UFFD], &g->s);
	g->fd[UFFD] = -1;
	if (r < 0) {
		drop_group(g, strerror(-r));
		return r;
	}
	g->s->parent = g->parent;
	ulog(parent ? LOG_WARNING : LOG_ERR,
	     "session %" PRIu64 ": a fork child the dead daemon did not finish recording: %s",
	     g->id, parent ? "made again from its parent's record" : "its pages raise SIGBUS");
	return 0;
}

/*
 * The events of the dead daemon's last read of p's userfaultfd that it did
 * not apply (the read left them in the record), applied in their order; a
 * FORK's child that it left half made is made again at its place in that
 * order, from the parent's record as it was at that fork.
 */
static void replay_events(struct group *p, struct group *v, size_t n, bool *half)
{
	struct state *st = p->s->st;
	const struct pin_uffd_event *e;
	uint32_t at = 0, forks, k = 0;

	while ((e = state_event_pending(st, &at, &forks))) {
		if (e->type != PIN_UFFD_EVENT_FORK)
			fault_apply_event(p->s, e);
		for (size_t i = 0; e->type == PIN_UFFD_EVENT_FORK && i < n; i++)
			if (half[i] && v[i].parent == p->id && state_making(st, v[i].id) &&
			    v[i].id == state_making_first(st) + forks) {
				remake(&v[i], v, n);
				half[i] = false;
			}
		state_events_applied(st, ++at);
		k++;
	}
	if (k)
		ulog(LOG_WARNING,
		     "session %" PRIu64 ": applied %" PRIu32
		     " events (fork, mremap, discard, unmap) "
		     "that the dead daemon read but did not apply",
		     p->id, k);
}

/* Serve s: wake what the dead daemon read, tell its client where it was. */
static void serve_again(struct session *s)
{
	uint64_t start, end;

	/* Pages the dead daemon may have placed without recording them. */
	if (s->uffd && state_placing(s->st, &start, &end) &&
	    session_prefetch_add(s, start, end - start) == -ENOMEM)
		ulog(LOG_WARNING,
		     "session %" PRIu64 ": no memory to check [%#" PRIx64 ", %#" PRIx64
		     "), which the dead daemon was placing; a WaitPopulated of it may wait",
		     s->id, start, end);
	if (s->sock >= 0)
		s->wsock.handle = control_handle;
	if (s->fc && s->sock >= 0)
		fc_taken_over(s);
	/* What the dead daemon read is logged now (replay_events()). */
	evlog_end(s);
	if (s->uffd) {
		s->wuffd.handle = fault_ready;
		for (size_t i = 0; i < s->nregions; i++) {
			struct region *rg = s->regions[i];
			int w = pin_uffd_wake(s->uffd, (void *)(uintptr_t)rg->start, rg->len);
			if (w < 0 && w != -ENOENT)
				ulog(LOG_WARNING,
				     "session %" PRIu64 ": UFFDIO_WAKE [%#" PRIx64 ", +%#" PRIx64
				     "): %s",
				     s->id, rg->start, rg->len, strerror(-w));
		}
	}
	if (s->broken)
		ulog(LOG_ERR,
		     "session %" PRIu64 ": a fork child whose regions the dead daemon never "
		     "recorded; each page it faults on raises SIGBUS",
		     s->id);
	/* A VM reads nothing from its connection. */
	if (s->sock >= 0 && !s->fc)
		control_resume(s);
	ulog(LOG_INFO, "session %" PRIu64 " (pid %d, %s): taken over, %zu regions, %zu pins", s->id,
	     (int)s->pid, s->name[0] ? s->name : "unnamed", s->nregions, s->pins.n);
	workers_assign(s);
}

void takeover_run(struct stored_fd *v, size_t n)
{
	size_t ng = 0, taken = 0;
	uint64_t regions = 0;

	if (!n)
		return;
	adopt_remotes(v, n);
	struct group *g = collect(v, n, &ng);
	if (!g) {
		ulog(LOG_ERR, "fd store: no memory to take over %zu descriptors", n);
		for (size_t i = 0; i < n; i++)
			close(v[i].fd);
		return;
	}
	/* No new session may take the id of one in the store, kept or not. */
	for (size_t i = 0; i < ng; i++)
		id_taken(g[i].id);
	/* Every record first, then the events a dead daemon read and did not
	 * apply (the half made children at their forks among them), then the
	 * other half made children from their parents, and only then is any
	 * session served. */
	bool *half = calloc(ng ? ng : 1, sizeof(*half));
	for (size_t i = 0; half && i < ng; i++)
		take_one(&g[i], &half[i]);
	for (size_t i = 0; half && i < ng; i++)
		if (g[i].s)
			replay_events(&g[i], g, ng, half);
	for (size_t i = 0; half && i < ng; i++)
		if (half[i])
			remake(&g[i], g, ng);
	/* Made, or never to be made again: served from now on, a parent's
	 * record changes. */
	for (size_t i = 0; i < ng; i++)
		if (g[i].s)
			state_making_set(g[i].s->st, 0, 0);
	for (size_t i = 0; i < ng; i++) {
		if (!half)
			drop_group(&g[i], "no memory");
		if (!g[i].s)
			continue;
		regions += g[i].s->nregions;
		taken++;
		serve_again(g[i].s);
	}
	free(half);
	free(g);
	source_files_unadopted_release();
	remotes_unclaimed_release();
	ulog(LOG_INFO, "restart: took over %zu of %zu sessions (%" PRIu64 " regions)", taken, ng,
	     regions);
}
