/* SPDX-License-Identifier: MIT */
/* What every bench/bench-<what>.c shares: clocks and the metric line. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* Print `metric NAME VALUE UNIT`, the one output format of bench/. */
void bench_metric(const char *name, double value, const char *unit);

/* Median of n samples (sorts them in place). */
double bench_median(double *samples, unsigned int n);

#endif /* BENCH_COMMON_H */
