// SPDX-License-Identifier: MIT
/*
 * uffd-handler: memory filled in lazily by a userfaultfd handler thread.
 *
 * A 4 MiB range is registered MISSING and holds nothing yet.  A worker thread
 * reads all of it; each first touch of a page blocks the worker in the kernel
 * and queues a fault, which the handler thread serves: pages with data get
 * them with UFFDIO_COPY, the pages of a hole get UFFDIO_ZEROPAGE.  Then the
 * range is checked byte for byte and the figures printed.  Exits 0 when every
 * byte and every counter is right.
 *
 * Not under valgrind: it runs one thread at a time, and a worker blocked in
 * its fault would never let the handler run.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <libpin.h>

#define PAGES	   1024u
#define HOLE_FIRST 384u /* pages [HOLE_FIRST, HOLE_FIRST + HOLE_PAGES) are zero */
#define HOLE_PAGES 256u

struct state {
	struct pin_uffd *uffd;
	unsigned char *range;  /* registered, filled on demand */
	unsigned char *source; /* the data pages, where a real program would read them */
	size_t page;
	int stop; /* eventfd: the worker is done */

	/* The handler's. */
	unsigned long faults, copied, zeroed, raced, reads, from_worker;
	int err;

	/* The worker's. */
	pid_t worker_tid;
	uint64_t sum;
	double seconds;
};

static bool in_hole(size_t pg)
{
	return pg >= HOLE_FIRST && pg < HOLE_FIRST + HOLE_PAGES;
}

/* The data of page pg, one 64-bit word at a time. */
static uint64_t word_of(size_t pg, size_t i)
{
	return (pg + 1) * 0x9e3779b97f4a7c15ull ^ i;
}

static void serve(struct state *s, const struct pin_uffd_event *ev)
{
	uintptr_t addr = ev->arg.pagefault.address & ~(uintptr_t)(s->page - 1);
	size_t pg = (addr - (uintptr_t)s->range) / s->page;
	int64_t done;
	int r;

	if (ev->type != PIN_UFFD_EVENT_PAGEFAULT)
		return;
	s->faults++;
	if (ev->arg.pagefault.tid == (uint32_t)s->worker_tid)
		s->from_worker++;
	if (in_hole(pg))
		r = pin_uffd_zeropage(s->uffd, (void *)addr, s->page, 0, &done);
	else
		r = pin_uffd_copy(s->uffd, (void *)addr, s->source + pg * s->page, s->page, 0,
				  &done);
	if (r == 0) {
		if (in_hole(pg))
			s->zeroed++;
		else
			s->copied++;
		return;
	}
	/* Someone filled it first: the faulting thread only needs waking. */
	if (r == -EEXIST) {
		s->raced++;
		r = pin_uffd_wake(s->uffd, (void *)addr, s->page);
	}
	if (r < 0 && !s->err)
		s->err = r;
}

static void *handler_main(void *arg)
{
	struct state *s = arg;
	struct pollfd fds[2] = {
		{ .fd = pin_uffd_fd(s->uffd), .events = POLLIN },
		{ .fd = s->stop, .events = POLLIN },
	};
	struct pin_uffd_event ev[32];

	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			s->err = -errno;
			return NULL;
		}
		if (fds[1].revents)
			return NULL;
		int n = pin_uffd_read_events(s->uffd, ev, sizeof(ev) / sizeof(ev[0]));
		/* A fault can be woken (and so gone) before we read it. */
		if (n == -EAGAIN)
			continue;
		if (n < 0) {
			s->err = n;
			return NULL;
		}
		s->reads++;
		for (int i = 0; i < n; i++)
			serve(s, &ev[i]);
	}
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The program's own work: read every word of the range. */
static void *worker_main(void *arg)
{
	struct state *s = arg;
	const volatile uint64_t *w = (const uint64_t *)s->range;
	size_t words = PAGES * s->page / sizeof(*w);
	double start = now();

	s->worker_tid = gettid();
	for (size_t i = 0; i < words; i++)
		s->sum += w[i];
	s->seconds = now() - start;
	return NULL;
}

static int check_range(const struct state *s, unsigned long *ret_bad)
{
	uint64_t *want = malloc(s->page);

	if (!want)
		return -ENOMEM;
	*ret_bad = 0;
	for (size_t pg = 0; pg < PAGES; pg++) {
		for (size_t i = 0; i < s->page / sizeof(*want); i++)
			want[i] = in_hole(pg) ? 0 : word_of(pg, i);
		if (memcmp(s->range + pg * s->page, want, s->page))
			(*ret_bad)++;
	}
	free(want);
	return 0;
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "uffd-handler: %s: %s\n", what, strerror(-err));
	return EXIT_FAILURE;
}

int main(void)
{
	struct state s = { .page = (size_t)sysconf(_SC_PAGESIZE) };
	struct pin_uffd_opts opts = {
		.sz = sizeof(opts),
		.flags = PIN_UFFD_CLOEXEC | PIN_UFFD_NONBLOCK,
		.optional = PIN_UFFD_FEATURE_THREAD_ID,
	};
	size_t len = PAGES * s.page;
	pthread_t handler, worker;
	unsigned long bad;
	int r;

	s.range = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	s.source = malloc(len);
	s.stop = eventfd(0, EFD_CLOEXEC);
	if (s.range == MAP_FAILED || !s.source || s.stop < 0)
		return fail("setting up", -errno);
	for (size_t pg = 0; pg < PAGES; pg++)
		for (size_t i = 0; i < s.page / sizeof(uint64_t); i++)
			((uint64_t *)(s.source + pg * s.page))[i] = word_of(pg, i);

	r = pin_uffd_new(&opts, &s.uffd);
	if (r < 0)
		return fail("pin_uffd_new", r);
	r = pin_uffd_register(s.uffd, s.range, len, PIN_UFFD_REGISTER_MISSING, NULL);
	if (r < 0)
		return fail("pin_uffd_register", r);
	printf("range: %u pages (%zu KiB) at %p, registered MISSING; pages %u-%u are a hole\n",
	       PAGES, len / 1024, (void *)s.range, HOLE_FIRST, HOLE_FIRST + HOLE_PAGES - 1);

	r = -pthread_create(&handler, NULL, handler_main, &s);
	if (r < 0)
		return fail("pthread_create", r);
	r = -pthread_create(&worker, NULL, worker_main, &s);
	if (r < 0)
		return fail("pthread_create", r);
	pthread_join(worker, NULL);
	if (eventfd_write(s.stop, 1) < 0)
		return fail("eventfd_write", -errno);
	pthread_join(handler, NULL);
	if (s.err < 0)
		return fail("serving a fault", s.err);

	printf("worker thread %d read the range in %.2f ms (checksum %016llx)\n", (int)s.worker_tid,
	       s.seconds * 1e3, (unsigned long long)s.sum);
	printf("handler thread: %lu faults in %lu reads, %lu from the worker%s\n", s.faults,
	       s.reads, s.from_worker,
	       pin_uffd_features(s.uffd) & PIN_UFFD_FEATURE_THREAD_ID ? "" : " (no THREAD_ID)");
	printf("  UFFDIO_COPY:     %lu pages\n", s.copied);
	printf("  UFFDIO_ZEROPAGE: %lu pages\n", s.zeroed);
	printf("  already there:   %lu\n", s.raced);
	printf("  per fault:       %.1f us (worker's time / faults)\n",
	       s.faults ? s.seconds * 1e6 / (double)s.faults : 0.0);

	r = check_range(&s, &bad);
	if (r < 0)
		return fail("check_range", r);
	bool ok = !bad && s.faults == PAGES && s.copied == PAGES - HOLE_PAGES &&
		  s.zeroed == HOLE_PAGES && !s.raced;
	printf("verified: %s, %zu bytes, %lu bad pages (want %u copied, %u zeroed, %u faults)\n",
	       ok ? "ok" : "FAILED", len, bad, PAGES - HOLE_PAGES, HOLE_PAGES, PAGES);

	pin_uffd_free(s.uffd);
	munmap(s.range, len);
	free(s.source);
	close(s.stop);
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
