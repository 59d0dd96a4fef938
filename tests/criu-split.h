/* SPDX-License-Identifier: MIT */
/*
 * A CRIU pre-dump chain made from one real dump (criu-split.c): what
 * `criu pre-dump` then `criu dump --prev-images-dir ../N` would have written
 * had the task written some of its pages again between the dumps.
 */
#ifndef TESTS_CRIU_SPLIT_H
#define TESTS_CRIU_SPLIT_H

#include <stddef.h>
#include <stdint.h>

/* Dumps a chain may have here. */
#define CRIU_SPLIT_MAX 8

struct criu_split {
	/* Pages whose newest copy is in dump k (0: the newest): where a lazy
	 * restore must take them from. */
	uint64_t newest[CRIU_SPLIT_MAX];
	/* Pages dump k holds (its pages file): the newest copies and the
	 * stale ones a newer dump holds again. */
	uint64_t held[CRIU_SPLIT_MAX];
};

/* The newest of n dumps that holds page vaddr: where a restore takes it. */
unsigned int criu_split_newest(uint64_t vaddr, unsigned int n);
/* What every word of page vaddr in dump k of n is XORed with: 0 where dump
 * k's copy is the newest, else the stale mask. */
uint64_t criu_split_stale(uint64_t vaddr, unsigned int k, unsigned int n);

/*
 * Split task pid of the dump in src into n dumps out/0 (the newest) to
 * out/<n-1> (the first pre-dump, which holds every page): 0 or -errno.
 */
int criu_split(const char *src, int pid, const char *out, unsigned int n, struct criu_split *ret);

#endif
