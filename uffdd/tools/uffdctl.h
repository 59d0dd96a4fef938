/* SPDX-License-Identifier: MIT */
/*
 * uffdctl's files and what each offers the others: uffdctl.c (arguments,
 * the connection, the hints, the commands) calls uffdctl-print.c, which
 * calls back into nothing.
 */
#ifndef UFFDCTL_H
#define UFFDCTL_H

#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "libpin.h"

/* The histogram's bars in `uffdctl stats`. */
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
void ctl_print_histogram(const struct pin_client_stats *st, unsigned int bar_width);

#endif
