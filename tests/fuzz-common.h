/* SPDX-License-Identifier: MIT */
/* What the fuzz targets share (fuzz-common.c), and the checks of an image
 * a reader accepted (fuzz-image-check.c). */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "libpin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Print "fuzz: what" and abort(), which libFuzzer reports as a crash. */
__attribute__((noreturn)) void fuzz_die(const char *what);

/*
 * A fresh directory under $TMPDIR (else /tmp), made on the first call and
 * removed with what it holds at exit; the targets touch nothing else.
 * Returns its path; *ret_dfd (optional) gets an O_DIRECTORY fd of it.
 */
const char *fuzz_scratch_dir(int *ret_dfd);

/* How many descriptors the process has open (/proc/self/fd): a descriptor
 * an iteration leaks makes this grow. */
int fuzz_open_fds(void);

/* Replace file name in the scratch directory with len bytes of data. */
void fuzz_write_file(const char *name, const void *data, size_t len);
/* Remove file name from the scratch directory if it is there. */
void fuzz_remove_file(const char *name);

/*
 * What holds for every image a reader accepted: regions page aligned, in
 * ascending order and apart; each region tiled by its segments in order;
 * each data segment inside its pages file, source k of sizes[k] bytes
 * (nsizes of them); the first
 * and last byte of every segment readable through pin_image_read().
 */
void fuzz_check_image(const struct pin_image *img, const uint64_t *sizes, size_t nsizes);

#endif /* FUZZ_COMMON_H */
