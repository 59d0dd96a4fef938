/* SPDX-License-Identifier: MIT */
/* Where a restored task is on this host (lazy-task.c). */
#ifndef UFFDD_LAZY_TASK_H
#define UFFDD_LAZY_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A lazy mapping of the dump: [addr, addr + len) of the task. */
struct lazy_range {
	uint64_t addr, len;
};

/*
 * A pidfd of the restored task that had pid in the dump and whose lazy
 * mappings are v[0..n): the process at pid here when it holds them, else the
 * one process of a pid namespace below ours, traced by nobody, whose pid
 * there (the last of its NSpid) is pid and that holds them; *ret_host is its pid here.  -ESRCH when
 * none does, -ENOTUNIQ when several do, else -errno.
 */
int lazy_task_pidfd(int pid, const struct lazy_range *v, size_t n, int *ret_host);

#endif
