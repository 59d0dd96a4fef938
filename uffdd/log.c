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

void ulog(int prio, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (prio > (uffdd_cfg.verbose ? LOG_DEBUG : LOG_NOTICE))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (journal)
		fprintf(stderr, "<%d>%s\n", prio, buf);
	else
		fprintf(stderr, "uffdd: %s\n", buf);
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
