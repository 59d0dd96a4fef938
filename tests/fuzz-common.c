// SPDX-License-Identifier: MIT
/*
 * What the fuzz targets share: abort with a message, count descriptors, and
 * the scratch directory of the image readers' targets, the only place they
 * write, removed at exit.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz-common.h"

static char scratch[PATH_MAX];
static int scratch_fd = -1;

void fuzz_die(const char *what)
{
	fprintf(stderr, "fuzz: %s\n", what);
	abort();
}

static void remove_scratch(void)
{
	DIR *d = fdopendir(dup(scratch_fd));
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(scratch_fd, e->d_name, 0);
	closedir(d);
	close(scratch_fd);
	rmdir(scratch);
}

const char *fuzz_scratch_dir(int *ret_dfd)
{
	if (scratch_fd < 0) {
		const char *tmp = getenv("TMPDIR");

		snprintf(scratch, sizeof(scratch), "%s/fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(scratch))
			fuzz_die("mkdtemp of the scratch directory");
		scratch_fd = open(scratch, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (scratch_fd < 0)
			fuzz_die("open of the scratch directory");
		atexit(remove_scratch);
	}
	if (ret_dfd)
		*ret_dfd = scratch_fd;
	return scratch;
}

int fuzz_open_fds(void)
{
	/* /proc/self/fd kept open and read again from its start: opendir() per
	 * call cost an open, a close and a 32 KiB buffer, twice per input. */
	static int dfd = -1;
	char buf[4096] __attribute__((aligned(8)));
	ssize_t len;
	int n = 0;

	if (dfd < 0)
		dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || lseek(dfd, 0, SEEK_SET) < 0)
		fuzz_die("open or rewind of /proc/self/fd");
	while ((len = getdents64(dfd, buf, sizeof(buf))) > 0)
		for (ssize_t off = 0; off < len;) {
			const struct dirent64 *e = (const void *)(buf + off);

			n += e->d_name[0] != '.';
			off += e->d_reclen;
		}
	if (len < 0)
		fuzz_die("getdents64 of /proc/self/fd");
	/* Not counting the one read here. */
	return n - 1;
}

void fuzz_write_file(const char *name, const void *data, size_t len)
{
	int dfd, fd;
	const char *p = data;

	fuzz_scratch_dir(&dfd);
	fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		fuzz_die("open of a scratch file");
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			fuzz_die("write of a scratch file");
		p += n;
		len -= (size_t)n;
	}
	close(fd);
}

void fuzz_remove_file(const char *name)
{
	int dfd;

	fuzz_scratch_dir(&dfd);
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		fuzz_die("unlink of a scratch file");
}
