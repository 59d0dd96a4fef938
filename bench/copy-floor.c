// SPDX-License-Identifier: MIT
/*
 * bench-criu's floor: `copy-floor FILE` places the whole pages of FILE (a
 * dump's pages file, warm in the page cache) into an anonymous mapping
 * registered with a userfaultfd, by two threads at once, each one
 * UFFDIO_COPY of its half from FILE mapped shared: what two CPUs can do here
 * and now for those bytes, with no fault, no socket and no daemon (bench-
 * restore's bulk_copy_2t).  It prints the milliseconds from the first copy
 * to the last and exits 0, or says what failed and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin.h"

/* The two CPUs bench-criu's restores share. */
#define FLOOR_THREADS 2

struct part {
	struct pin_uffd *u;
	void *dst;
	const void *src;
	size_t len;
	int r;
};

static void *copy_part(void *arg)
{
	struct part *p = arg;

	p->r = pin_uffd_copy(p->u, p->dst, p->src, p->len, 0, NULL);
	return NULL;
}

int main(int argc, char **argv)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct stat st;
	int r;

	if (argc != 2) {
		fprintf(stderr, "usage: copy-floor FILE\n");
		return 2;
	}
	int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		bench_die(argv[1], errno);
	/* Whole pages, split into FLOOR_THREADS parts of whole pages. */
	size_t each = (size_t)st.st_size / page / FLOOR_THREADS * page, len = each * FLOOR_THREADS;
	if (!len)
		bench_die(argv[1], ENODATA);
	const uint8_t *src = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (src == MAP_FAILED)
		bench_die("mmap", errno);
	uint8_t *dst = bench_map_anon(len);
	struct pin_uffd *u = bench_uffd_new();
	if ((r = pin_uffd_register(u, dst, len, PIN_UFFD_REGISTER_MISSING, NULL)) < 0)
		bench_die("UFFDIO_REGISTER", r);

	struct part part[FLOOR_THREADS];
	pthread_t th[FLOOR_THREADS];
	uint64_t t0 = bench_now_ns();
	for (unsigned int i = 0; i < FLOOR_THREADS; i++) {
		part[i] = (struct part){ u, dst + i * each, src + i * each, each, 0 };
		if (i && (r = pthread_create(&th[i], NULL, copy_part, &part[i])))
			bench_die("pthread_create", r);
	}
	copy_part(&part[0]);
	for (unsigned int i = 1; i < FLOOR_THREADS; i++)
		pthread_join(th[i], NULL);
	uint64_t t1 = bench_now_ns();
	for (unsigned int i = 0; i < FLOOR_THREADS; i++)
		if (part[i].r < 0)
			bench_die("UFFDIO_COPY", part[i].r);
	printf("%.1f\n", (double)(t1 - t0) / 1e6);
	pin_uffd_free(u);
	return 0;
}
