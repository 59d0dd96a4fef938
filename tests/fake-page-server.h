/* SPDX-License-Identifier: MIT */
/*
 * CRIU's page server as `criu page-server --lazy-pages` plays it, from a
 * dump's own images: a child process listening on 127.0.0.1 that takes one
 * connection and answers PS_IOV_GET with the dump's pages (never more than
 * max_pages at a time: short answers, as CRIU's at its buffers' ends) and
 * PS_IOV_CLOSE with status 0.  It checks what it is asked as CRIU would
 * (a GET of pages that are not PE_LAZY ends it, as CRIU hangs up then).
 */
#ifndef FAKE_PAGE_SERVER_H
#define FAKE_PAGE_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct fake_ps {
	pid_t pid;
	uint16_t port;
	int report; /* its verdict comes through this pipe */
};

void fake_ps_start(struct fake_ps *ps, const char *dump, uint64_t max_pages);
/* Once the client closed its connection: the pages it served, each GET
 * answered and the CLOSE too; else -1, why in why. */
long fake_ps_end(struct fake_ps *ps, char *why, size_t len);

#endif
