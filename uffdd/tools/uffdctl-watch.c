// SPDX-License-Identifier: MIT
/*
 * `uffdctl watch`: every interval, one frame: a header, one line per session
 * (its process, name, a bar of its pages populated out of its regions', the
 * pages per second since the last frame, its faults and retries) and the
 * latency histogram.  On a terminal it redraws in place (cursor home, clear)
 * and fits the terminal's width and height; otherwise, or with a frame
 * count, frames follow each other plainly, a blank line between two, 80
 * columns wide.  Everything it asks goes through libpin's paged list and
 * stats calls on uffdctl's inspection connection (which reconnects after a
 * daemon restart).  It calls uffdctl-print.c only.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "uffdctl.h"

/* Plain frames are as wide as a classic terminal. */
#define PLAIN_COLS 80
/* A session line less its name and bar: session, pid, brackets, percentage,
 * pages, pages/s, faults, retries, with their separators; 80 columns leave
 * NAME_MIN and BAR_MIN. */
#define LINE_FIXED 60
#define NAME_MIN   10
#define NAME_MAX   16
#define BAR_MIN	   10
#define BAR_MAX	   60
/* Header, column titles and the cursor's line after the last: a frame that
 * leaves it free does not scroll its header out. */
#define FRAME_LINES 3
/* A count of this much or more is shown as 12.3K, 123K or 1.2M. */
#define COUNT_EXACT_BELOW 10000.0
/* The PAGES column: "populated/total" exactly while it fits. */
#define PAGES_W 11
/* A socket path longer than sun_path connects nowhere; each byte may show
 * as \xNN. */
#define PATH_SHOWN (4 * 108)

/* What a session had populated at the last frame, for its rate. */
struct seen {
	uint64_t session;
	uint64_t populated;
};

struct watch {
	struct pin_client *c;
	const struct ctl_watch_opts *o;
	bool redraw; /* a terminal, no frame count: draw over the last frame */
	unsigned int cols, rows;
	struct seen *seen;
	size_t nseen;
	struct timespec when; /* of the last frame's list */
	unsigned int frame;
};

static int by_session(const void *a, const void *b)
{
	uint64_t x = ((const struct pin_client_info *)a)->session;
	uint64_t y = ((const struct pin_client_info *)b)->session;

	return x < y ? -1 : x > y;
}

static const struct seen *seen_find(const struct watch *w, uint64_t session)
{
	size_t lo = 0, hi = w->nseen;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (w->seen[mid].session == session)
			return &w->seen[mid];
		if (w->seen[mid].session < session)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Remember this frame's sessions (v sorted by session) for the next one. */
static int seen_keep(struct watch *w, const struct pin_client_info *v, size_t n)
{
	struct seen *s = n ? calloc(n, sizeof(*s)) : NULL;

	if (n && !s)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		s[i] = (struct seen){ v[i].session, v[i].stats.pages_populated };
	free(w->seen);
	w->seen = s;
	w->nseen = n;
	return 0;
}

static void measure(struct watch *w)
{
	struct winsize ws;

	w->cols = PLAIN_COLS;
	w->rows = 0;
	if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col) {
		w->cols = ws.ws_col;
		w->rows = ws.ws_row;
	}
}

static unsigned int clamp(long v, unsigned int lo, unsigned int hi)
{
	return v < (long)lo ? lo : v > (long)hi ? hi : (unsigned int)v;
}

/* 9999, 12.3K, 123K, 1.2M, 12G: four or five characters. */
static const char *count(double v, char *buf, size_t len)
{
	static const char units[] = " KMGTPE";
	int u = 0;

	if (v < COUNT_EXACT_BELOW) {
		snprintf(buf, len, "%.0f", v);
		return buf;
	}
	while (v >= 1000 && units[u + 1]) {
		v /= 1000;
		u++;
	}
	snprintf(buf, len, "%.*f%c", v < 100 ? 1 : 0, v, units[u]);
	return buf;
}

/* "-" on a session's first frame, "done" once every page is in, else pages/s. */
static const char *rate(const struct watch *w, const struct pin_client_info *s, double dt,
			char *buf, size_t len)
{
	const struct seen *before = seen_find(w, s->session);
	const struct pin_client_stats *st = &s->stats;

	if (st->pages_total && st->pages_populated >= st->pages_total)
		return "done";
	if (!before || dt <= 0)
		return "-";
	double r = st->pages_populated > before->populated
			   ? (double)(st->pages_populated - before->populated) / dt
			   : 0;
	return count(r, buf, len);
}

static void print_session(const struct watch *w, const struct pin_client_info *s, double dt,
			  unsigned int name_w, unsigned int bar_w)
{
	const struct pin_client_stats *st = &s->stats;
	char name[4 * sizeof(s->name)], pages[48], r[16], retries[48], pop[16], total[16];

	/* Millions of pages do not fit exactly: then both counted short. */
	if (snprintf(pages, sizeof(pages), "%" PRIu64 "/%" PRIu64, st->pages_populated,
		     st->pages_total) > PAGES_W)
		snprintf(pages, sizeof(pages), "%s/%s",
			 count((double)st->pages_populated, pop, sizeof(pop)),
			 count((double)st->pages_total, total, sizeof(total)));
	snprintf(retries, sizeof(retries), "%" PRIu64 "/%" PRIu64, st->eagain, st->eexist);
	printf("%5" PRIu64 " %7d %-*.*s [", s->session, s->pid, (int)name_w, (int)name_w,
	       ctl_printable(s->name, name, sizeof(name)));
	ctl_print_bar(st->pages_populated, st->pages_total, bar_w);
	printf("] %5.1f%% %*s %7s %7" PRIu64 " %7s\n",
	       st->pages_total ? 100.0 * (double)st->pages_populated / (double)st->pages_total
			       : 0.0,
	       PAGES_W, pages, rate(w, s, dt, r, sizeof(r)), st->faults, retries);
}

static void print_header(const struct watch *w, size_t n, unsigned int name_w, unsigned int bar_w)
{
	char path[PATH_SHOWN];

	printf("uffdd at %s: ", ctl_printable(w->o->path, path, sizeof(path)));
	if (w->o->session)
		printf("session %" PRIu64, w->o->session);
	else
		printf("%zu session%s", n, n == 1 ? "" : "s");
	printf(", every %u ms, frame %u", w->o->interval_ms, w->frame);
	if (w->o->count)
		printf(" of %u", w->o->count);
	putchar('\n');
	printf("%5s %7s %-*s %-*s %6s %*s %7s %7s %7s\n", "SESS", "PID", (int)name_w, "NAME",
	       (int)bar_w + 2, "PROGRESS", "", PAGES_W, "PAGES", "PAGES/S", "FAULTS", "RETRIES");
}

/*
 * The frame of the sessions in v (n, sorted) and the counters st.  On a
 * terminal the sessions that do not fit under its height are counted, not
 * shown.  -errno when standard output fails (a full disk, a closed file).
 */
static int print_frame(struct watch *w, const struct pin_client_info *v, size_t n,
		       const struct pin_client_stats *st, double dt)
{
	long room = (long)w->cols - LINE_FIXED;
	unsigned int name_w = clamp(room - BAR_MIN, NAME_MIN, NAME_MAX);
	unsigned int bar_w = clamp(room - name_w, BAR_MIN, BAR_MAX);
	size_t shown = n;

	if (w->redraw) {
		long fit = (long)w->rows - FRAME_LINES - (long)ctl_histogram_lines(st);

		/* The "more" line takes a session's place. */
		if ((long)n > fit)
			shown = fit > 1 ? (size_t)fit - 1 : 0;
		fputs("\033[H\033[2J", stdout);
	} else if (w->frame > 1) {
		putchar('\n');
	}
	print_header(w, n, name_w, bar_w);
	for (size_t i = 0; i < shown; i++)
		print_session(w, &v[i], dt, name_w, bar_w);
	if (shown < n)
		printf("(%zu more sessions)\n", n - shown);
	ctl_print_histogram(st, clamp((long)w->cols - CTL_HISTOGRAM_FIXED, BAR_MIN, BAR_MAX));
	return fflush(stdout) == EOF ? -errno : 0;
}

/* Keep only session id's entry of v; 0 when it is not there (it ended). */
static size_t only(struct pin_client_info *v, size_t n, uint64_t id)
{
	for (size_t i = 0; i < n; i++) {
		if (v[i].session == id) {
			v[0] = v[i];
			return 1;
		}
	}
	return 0;
}

static double seconds(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* One frame; 1 when the watched session ended (the frame says so). */
static int frame(struct watch *w)
{
	uint64_t id = w->o->session;
	struct pin_client_info *v = NULL;
	struct pin_client_stats st;
	struct timespec now;
	size_t n = 0;
	int r;

	r = pin_client_stats(w->c, id ? id : PIN_CLIENT_SESSION_ALL, &st);
	if (r == -ENOENT && id && w->frame > 0)
		goto ended;
	if (r < 0)
		return r;
	r = pin_client_list_clients(w->c, &v, &n);
	if (r < 0)
		return r;
	if (clock_gettime(CLOCK_MONOTONIC, &now) < 0) {
		r = -errno;
		free(v);
		return r;
	}
	if (id)
		n = only(v, n, id);
	if (id && !n) {
		free(v);
		goto ended;
	}
	qsort(v, n, sizeof(*v), by_session);
	w->frame++;
	measure(w);
	r = print_frame(w, v, n, &st, w->frame > 1 ? seconds(&w->when, &now) : 0);
	w->when = now;
	if (r == 0)
		r = seen_keep(w, v, n);
	free(v);
	return r;
ended:
	w->frame++;
	if (!w->redraw && w->frame > 1)
		putchar('\n');
	printf("session %" PRIu64 " ended\n", id);
	return fflush(stdout) == EOF ? -errno : 1;
}

/* Wait interval_ms, or less when SIGINT or SIGTERM arrives: then 1. */
static int pause_or_signal(const struct watch *w, const sigset_t *stop)
{
	struct timespec ts = { .tv_sec = w->o->interval_ms / 1000,
			       .tv_nsec = (long)(w->o->interval_ms % 1000) * 1000000L };

	for (;;) {
		if (sigtimedwait(stop, NULL, &ts) >= 0)
			return 1;
		if (errno == EAGAIN)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

int ctl_watch(struct pin_client *c, const struct ctl_watch_opts *o)
{
	struct watch w = { .c = c, .o = o };
	sigset_t stop;
	int r;

	w.redraw = isatty(STDOUT_FILENO) && !o->count;
	/* Taken with sigtimedwait() between frames: Ctrl-C ends the watch,
	 * with status 0, after a whole frame.  Blocked until uffdctl exits: a
	 * signal that came during the last frame must not kill it then. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &stop, NULL) < 0)
		return -errno;
	for (;;) {
		r = frame(&w);
		if (r != 0 || (o->count && w.frame >= o->count))
			break;
		r = pause_or_signal(&w, &stop);
		if (r != 0)
			break;
	}
	free(w.seen);
	return r < 0 ? r : 0;
}
