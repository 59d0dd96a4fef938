// SPDX-License-Identifier: MIT
/*
 * criu-split SRC PID OUT N: split task PID of the CRIU dump SRC into a
 * pre-dump chain of N dumps OUT/0 (the newest, whose parent link leads to
 * the others) to OUT/<N-1>, as criu-split.c says, for a real
 * `criu restore --lazy-pages` of a chain where `criu pre-dump` cannot run
 * (tests/criu-lazy.sh SPLIT=1).  Prints how many pages each dump holds and
 * how many of them are the newest copies.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "criu-split.h"

int main(int argc, char **argv)
{
	struct criu_split st;
	char *end;
	long pid, n;
	int r;

	if (argc != 5) {
		fprintf(stderr, "usage: criu-split SRC PID OUT N\n");
		return 2;
	}
	pid = strtol(argv[2], &end, 10);
	if (*end || pid <= 0)
		return 2;
	n = strtol(argv[4], &end, 10);
	if (*end || n < 1 || n > CRIU_SPLIT_MAX)
		return 2;
	if (mkdir(argv[3], 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "criu-split: mkdir %s: %s\n", argv[3], strerror(errno));
		return 1;
	}
	r = criu_split(argv[1], (int)pid, argv[3], (unsigned int)n, &st);
	if (r < 0) {
		fprintf(stderr, "criu-split: %s task %ld: %s\n", argv[1], pid, strerror(-r));
		return 1;
	}
	for (long k = 0; k < n; k++)
		printf("criu-split: dump %ld holds %llu pages, %llu of them the newest\n", k,
		       (unsigned long long)st.held[k], (unsigned long long)st.newest[k]);
	return 0;
}
