// SPDX-License-Identifier: MIT
/*
 * The daemon's log: ulog() to stderr (with the journal's priority prefix when
 * systemd reads it), filtered by -v, and the bridge that turns libpin's own
 * messages into debug lines.  It may call util.c only (for the settings).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "uffdd.h"

static bool journal; /* stderr goes to the journal: prefix the priority */

/* A client may drive this many lines per window; the rest are counted. */
#define RL_BURST     10
#define RL_WINDOW_NS (5 * 1000000000ull)

static bool shown(int prio)
{
	return prio <= (uffdd_cfg.verbose ? LOG_DEBUG : LOG_NOTICE);
}

static void vlog(int prio, const char *fmt, va_list ap)
{
	char buf[512];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (journal)
		fprintf(stderr, "<%d>%s\n", prio, buf);
	else
		fprintf(stderr, "uffdd: %s\n", buf);
}

void ulog(int prio, const char *fmt, ...)
{
	va_list ap;

	if (!shown(prio))
		return;
	va_start(ap, fmt);
	vlog(prio, fmt, ap);
	va_end(ap);
}

void ulog_rl(struct ratelimit *rl, int prio, const char *fmt, ...)
{
	va_list ap;
	uint64_t now = uffdd_now_ns();

	if (!shown(prio))
		return;
	if (now - rl->start >= RL_WINDOW_NS) {
		if (rl->suppressed)
			ulog(LOG_WARNING,
			     "%u similar lines suppressed in %llu s (the next names the session)",
			     rl->suppressed, RL_WINDOW_NS / 1000000000ull);
		rl->start = now;
		rl->n = rl->suppressed = 0;
	}
	if (rl->n >= RL_BURST) {
		rl->suppressed++;
		return;
	}
	rl->n++;
	va_start(ap, fmt);
	vlog(prio, fmt, ap);
	va_end(ap);
}

void ulog_rl_end(struct ratelimit *rl, const char *who)
{
	if (rl->suppressed)
		ulog(LOG_WARNING, "%s: %u similar lines suppressed in its last %llu s", who,
		     rl->suppressed, RL_WINDOW_NS / 1000000000ull);
	rl->suppressed = 0;
}

/* libpin's own messages repeat what the daemon logs: detail for -v only. */
static void libpin_log(enum pin_log_level level, const char *msg, void *userdata)
{
	ulog(LOG_DEBUG, "libpin: %s", msg);
}

void log_init(void)
{
	journal = getenv("JOURNAL_STREAM") != NULL;
	pin_log_set(libpin_log, NULL);
}
