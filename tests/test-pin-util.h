/* SPDX-License-Identifier: MIT */
/* What the pin areas (test-pin.c, test-pin-gup.c) share: the kernel's pin
 * counters, patterned files, and one fixed-buffer I/O through a context. */
#ifndef TEST_PIN_UTIL_H
#define TEST_PIN_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libpin.h"
#include "test-common.h"

/* Anonymous memory in small pages only, filled with 0x5a (at hint exactly, when
 * not NULL): a THP folio would make the kernel's pin counters move per folio
 * instead of per page. */
char *test_map_small(void *hint, size_t len);

/* A context of that backend and flags; the test fails if there is none. */
struct pin_ctx *test_pin_ctx_new(int backend, unsigned int flags);

/* The context's counters (a stats call syncs the monitor's events as a
 * look-up does). */
struct pin_ctx_stats test_pin_stats(struct pin_ctx *ctx);

/* The last message libpin logged at level max or more severe, since
 * test_pin_log_capture(max) emptied it and set the log callback. */
extern char test_pin_last_log[1024];
void test_pin_log_capture(enum pin_log_level max);

/* A tcase of its own per need, so that each skips alone with its reason,
 * with setup as its checked fixture. */
TCase *test_pin_tcase(Suite *s, const char *name, const struct test_needs *needs,
		      void (*setup)(void));

/* nr_foll_pin_acquired/released after folding the per-CPU deltas in. */
void test_foll_pins(uint64_t *acquired, uint64_t *released);

/* A memfd of len bytes whose 64-bit word at offset o is test_pattern(o, seed). */
int test_pattern_file(size_t len, uint64_t seed);

/* The words of [p, p + len) are test_pattern(o, seed), o counted from p. */
void test_assert_pattern(const void *p, size_t len, uint64_t seed);

/* One READ_FIXED or WRITE_FIXED at offset 0 of fd through the context's ring,
 * with buffer index; returns cqe->res. */
int test_io_fixed(struct pin_ctx *ctx, bool write, int fd, void *buf, size_t len, int index);

/* What the kernel's counters moved by while a range was pinned, then unpinned. */
struct test_deltas {
	uint64_t pin_acquired, pin_released;
	uint64_t unpin_acquired, unpin_released;
};

/*
 * Pin [p, p + len) through ctx and drop the pin again (pin_range_put() and
 * pin_ctx_invalidate()), until a round's counters move by want exactly: they
 * are system-wide, and other processes may pin meanwhile.  Returns what
 * pin_range_get() returned, the last round's deltas in *got.
 */
int test_pin_counted(struct pin_ctx *ctx, void *p, size_t len, const struct test_deltas *want,
		     struct test_deltas *got);
void test_assert_deltas(const struct test_deltas *got, const struct test_deltas *want);
/* Small pages each take one pin and give it back at the unpin. */
void test_assert_small_pins(struct pin_ctx *ctx, void *p, size_t len);

/*
 * For test_skip_reason(): root, and io_uring unless it is absent (ENOSYS)
 * or turned off for this process (EPERM with kernel.io_uring_disabled set).
 * Any other error is a failure: the suite runs and every case reports it.
 */
const char *test_pin_skip_reason(void);

#endif /* TEST_PIN_UTIL_H */
