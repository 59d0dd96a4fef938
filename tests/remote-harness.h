/* SPDX-License-Identifier: MIT */
/*
 * Area remote's page server and clients (remote-harness.c).  The server's
 * pages are patterned by their address: the word at task address
 * REMOTE_BASE + o of task TASK + k is test_pattern(o, seed + k).
 */
#ifndef REMOTE_HARNESS_H
#define REMOTE_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "libpin.h"
#include "uffdd-harness.h"

/* Where the task's pages are on the server's side, and the task's id. */
#define REMOTE_BASE 0x7f1200000000ull
#define TASK	    4242

struct server_opts {
	size_t npages;
	uint64_t seed;
	uint64_t max_pages; /* pages per answer at most (short answers) */
	unsigned int hold;  /* answer nothing until this many GETs came */
	long hang_up_after; /* answers, then close (-1: never) */
	long lie_at;	    /* the answer (from 0) given another address (-1: none) */
	uint64_t ntasks;    /* tasks TASK, TASK + 1, ... (0: one), each seed + k */
};

struct report {
	long gets, pages, twice, most_held;
	long closes; /* PS_IOV_CLOSE: answered with status 0, then EOF checked */
	char why[160];
};

struct server {
	pid_t pid;
	uint16_t port;
	int report;
};

/* A server child with o, listening on loopback until it accepted one
 * connection; its report once the connection ends (asserted clean). */
void server_start(struct server *s, const struct server_opts *o);
void server_end(struct server *s, struct report *rp);

struct client {
	uint16_t port;
	size_t npages;
	uint64_t seed;
	unsigned int flags; /* PIN_CLIENT_REGION_* */
	bool wait;	    /* wait for the push, touching nothing */
	bool may_bus;	    /* pages may be poisoned: count them */
	int report;	    /* the client writes its counts here */
	uint64_t task;	    /* its GETs' (0: TASK) */
	int sk;		    /* the page server's socket, shared (0: its own connection) */
	size_t touch;	    /* pages touched (0: all) */
	/* Take the page at npages / 3 out of the region once it is handed
	 * over (RegionRemove: two regions that share one source), and touch
	 * the rest. */
	bool unmap_third;
	/* Say "half" here after the first half of the pages, then wait for a
	 * byte on go (-1: no pause). */
	int half, go;
	/* Fork at half (the userfaultfd with EVENT_FORK), before saying it:
	 * the child, its first page of the second half in, touches the rest
	 * of them too (its pages its own session's), and the client fails
	 * unless every page the child touched is right. */
	bool fork_half;
};

struct counts {
	long ok, bus, wrong;
	uint64_t copied;
};

/* The region of len bytes at base whose pages the server on sk serves from
 * task's REMOTE_BASE (registered MISSING; flags besides
 * PIN_CLIENT_REGION_PAGE_SERVER). */
struct pin_client_region remote_region(void *base, size_t len, unsigned int flags, int sk,
				       uint64_t task);
/* The process that serves for uffdd's supervisor sup (its only child). */
pid_t remote_serving_child(pid_t sup);
/* Map, hand the region over with the connected socket, touch the pages in
 * random order (or wait for the push), and write the counts to cl->report;
 * the process's exit status. */
int client_main(const struct test_daemon *d, struct client *cl);
/* client_main() in a child process: its pid. */
pid_t client_spawn(const struct test_daemon *d, struct client *cl);

#endif
