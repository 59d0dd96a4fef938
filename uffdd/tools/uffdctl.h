/* SPDX-License-Identifier: MIT */
/*
 * uffdctl's files and what each offers the others: uffdctl.c (arguments,
 * the connection, the hints, the one-shot commands) calls uffdctl-watch.c
 * and uffdctl-print.c; uffdctl-watch.c calls uffdctl-print.c; uffdctl-print.c
 * calls neither.
 */
#ifndef UFFDCTL_H
#define UFFDCTL_H

#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "libpin.h"

/* The histogram's bars in `uffdctl stats`; watch fits them to the terminal. */
#define CTL_BAR_WIDTH 40

/* uffdctl-print.c: tables, JSON, the histogram. */
void ctl_print_json(struct json_object *o);
void ctl_jadd_u64(struct json_object *o, const char *key, uint64_t v);
struct json_object *ctl_range_json(uint64_t session, uint64_t addr, uint64_t len);
struct json_object *ctl_stats_json(const struct pin_client_stats *st);
const char *ctl_human_size(uint64_t v, char *buf, size_t len);
const char *ctl_printable(const char *s, char *buf, size_t size);
const char *ctl_mode_name(uint32_t mode);
void ctl_print_bar(uint64_t part, uint64_t whole, unsigned int width);
void ctl_print_counters(const struct pin_client_stats *st);
/* Lines ctl_print_histogram() prints for st. */
unsigned int ctl_histogram_lines(const struct pin_client_stats *st);
void ctl_print_histogram(const struct pin_client_stats *st, unsigned int bar_width);
/* A histogram line's width less its bar's. */
#define CTL_HISTOGRAM_FIXED 40

/* uffdctl-watch.c: redraw the sessions' progress and the histogram every
 * interval until count frames or SIGINT/SIGTERM (then 0); -errno when a
 * request fails (the daemon gone: pin_client_fd() < 0). */
struct ctl_watch_opts {
	const char *path; /* the daemon's socket, for the header */
	uint64_t session; /* 0: every session */
	unsigned int interval_ms;
	unsigned int count; /* frames; 0: until SIGINT */
};
int ctl_watch(struct pin_client *c, const struct ctl_watch_opts *o);

#endif
