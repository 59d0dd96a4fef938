// SPDX-License-Identifier: MIT
/*
 * Where a restored task is on this host, for uffdd-lazy-pages' huge-page
 * collapse (lazy-pages.c), which needs a pidfd of it.  CRIU's restore side
 * names each task by its pid in the dump; a tree dumped in a pid namespace
 * of its own is restored into a new one, where the task has that pid, while
 * the process at that pid here is another one (pid 1 is our init).  A
 * process is taken for the task when each lazy mapping of the dump lies
 * inside its mappings (/proc/PID/maps: inside a run of adjacent ones, since
 * the kernel may merge neighbours the dump had apart and split what it had
 * whole) and the pidfd opened before that check still names a live process
 * after it (the pid not reused meanwhile); in a pid namespace below ours,
 * only a process nobody traces (the dumped tree may live on beside the
 * restored one, seized by criu).  It calls libc only.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lazy-task.h"

/* Mark each of v that lies inside [start, end). */
static void mark_inside(const struct lazy_range *v, size_t n, bool *in, uint64_t start,
			uint64_t end)
{
	for (size_t i = 0; i < n; i++)
		in[i] |= v[i].addr >= start && v[i].addr + v[i].len <= end;
}

/* Whether every range of v lies inside a run of adjacent mappings of host. */
static bool maps_hold(int host, const struct lazy_range *v, size_t n)
{
	char path[64], line[512];
	unsigned long long start, end, run_start = 0, run_end = 0;
	bool *in = calloc(n ? n : 1, sizeof(*in)), all = true;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", host);
	f = in ? fopen(path, "re") : NULL;
	if (!f) {
		free(in);
		return false;
	}
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx", &start, &end) != 2)
			continue;
		if (start != run_end) {
			mark_inside(v, n, in, run_start, run_end);
			run_start = start;
		}
		run_end = end;
	}
	mark_inside(v, n, in, run_start, run_end);
	fclose(f);
	for (size_t i = 0; i < n; i++)
		all &= in[i];
	free(in);
	return all;
}

/* A pidfd of host when it holds v, else -ESRCH (or -errno of pidfd_open). */
static int open_checked(int host, const struct lazy_range *v, size_t n)
{
	int fd = (int)syscall(SYS_pidfd_open, host, 0);

	if (fd < 0)
		return -errno;
	if (maps_hold(host, v, n) && syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) == 0)
		return fd;
	close(fd);
	return -ESRCH;
}

/* Whether host lives in a pid namespace below ours with pid there, and is
 * traced by nobody: a tree dumped by `criu dump --lazy-pages` lives on,
 * seized by criu (TracerPid), with the same pids and mappings, until its
 * pages are all taken. */
static bool inner_pid_is(int host, int pid)
{
	char path[64], line[512];
	bool ns = false, traced = true;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", host);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char *p = line + strlen("NSpid:"), *end;
		long last = 0;
		int fields = 0;

		if (!strncmp(line, "TracerPid:", strlen("TracerPid:"))) {
			traced = strtol(line + strlen("TracerPid:"), NULL, 10) != 0;
			continue;
		}
		if (strncmp(line, "NSpid:", strlen("NSpid:")))
			continue;
		for (;; p = end, fields++) {
			long x = strtol(p, &end, 10);
			if (end == p)
				break;
			last = x;
		}
		ns = fields >= 2 && last == pid;
	}
	fclose(f);
	return ns && !traced;
}

int lazy_task_pidfd(int pid, const struct lazy_range *v, size_t n, int *ret_host)
{
	int fd = open_checked(pid, v, n), found = -ESRCH;
	struct dirent *de;
	DIR *d;

	if (fd >= 0) {
		*ret_host = pid;
		return fd;
	}
	d = opendir("/proc");
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		int host = atoi(de->d_name);
		if (host == pid || !inner_pid_is(host, pid))
			continue;
		fd = open_checked(host, v, n);
		if (fd < 0)
			continue;
		if (found >= 0) {
			/* Restores of one dump in several namespaces: which
			 * one is ours is not known here. */
			close(fd);
			close(found);
			found = -ENOTUNIQ;
			break;
		}
		found = fd;
		*ret_host = host;
	}
	closedir(d);
	return found;
}
