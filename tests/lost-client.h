/* SPDX-License-Identifier: MIT */
/*
 * The client of areas stranded and durable-lost (lost-client.c): a
 * userfaultfd without the POISON feature, as CRIU's restorer opens them, a
 * region over a source file cut short once added, raw requests on the
 * client's own socket for what the library's structs have no room for
 * (stats unreadable), and a lister of the daemon's sessions.
 */
#ifndef LOST_CLIENT_H
#define LOST_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "libpin-private.h"
#include "uffdd-harness.h"

/* Seqs of the raw requests on the client's socket: past any the library used. */
#define LOST_RAW_SEQ0 (1ull << 32)

/* The source file a region is added over. */
struct lost_source {
	int fd;
	size_t pages;
	uint64_t seed; /* its pattern: test_pattern_source()'s */
};

/* Connect to sock as name without POISON, add a region of src at
 * *ret_base, read its page 0 (a first fault: no readahead), then cut the
 * file to that page.  0 when every step held. */
int lost_client_begin(struct test_conn *k, const char *sock, const char *name,
		      const struct lost_source *src, uint8_t **ret_base);

/* The reply to the raw request m (seq) on sock, past what a restarted
 * daemon sends first (a Resume, the last reply it committed again); NULL
 * when none came or it carries no stats. */
Uffdd__Msg *lost_client_request(int sock, Uffdd__Msg *m, uint64_t seq);

/* The reply to a raw StatsGet (seq) on sock, as lost_client_request(). */
Uffdd__Msg *lost_client_stats(int sock, uint64_t seq);

/* The session's stats once the daemon counted a page unreadable with
 * populated pages in place (poisoned ones count), or the last reply when
 * that never came (NULL: no reply came). */
Uffdd__Msg *lost_client_stats_unreadable(const struct test_conn *k, uint64_t populated);

/* The session of process pid, listed by the daemon at sock: its counters
 * at *ret, true; false when it is not listed. */
bool lost_client_listed(const char *sock, pid_t pid, struct pin_client_stats *ret);

#endif
