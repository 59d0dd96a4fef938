// SPDX-License-Identifier: MIT
/*
 * uffdd-lazy-pages: takes the place of `criu lazy-pages` for
 * `criu restore --lazy-pages`.  CRIU's restore side connects to
 * lazy-pages.socket in the work directory and, for each restored task, sends
 * its pid (int32) and then one byte carrying the task's userfaultfd (already
 * through UFFDIO_API) by SCM_RIGHTS; a zombie comes as a negative pid with no
 * descriptor.  When every task is restored it sends the uint32 0x52535446.
 *
 * This front end reads the task's memory layout from the dump (pagemap and
 * mm images) and hands the userfaultfd to uffdd with one region per part of
 * each anonymous private mapping: PE_LAZY pages from pages-N.img, the rest as
 * zero pages, all in one request (the restorer's first touches wait for
 * them).  A dump made with --prev-images-dir after `criu pre-dump` is read
 * through its chain of parent dumps (libpin/criu-chain.c): each page from
 * the newest dump that holds it, one request per pages file.  uffdd serves
 * the faults.  After the final word each task's
 * session says Goodbye and waits: uffdd pushes what was not touched and ends
 * the session when every page is in place, or when the task is gone (a task
 * may exit before its pages are all in: the others go on).  A task some
 * of whose pages could not be read from their source fails the restore
 * (-EIO): uffdd poisoned them, though CRIU asks for no POISON feature (a
 * kernel that has UFFDIO_POISON poisons all the same), so its process meets
 * SIGBUS there, or runs on if it never touches them.  On a kernel that
 * refuses UFFDIO_POISON (before Linux 6.6) its threads there wait for ever,
 * for uffdd makes up no page: uffdd answers -ENOTRECOVERABLE (the session is
 * stranded), and this program kills it (SIGKILL) and says so.  The page file
 * descriptors go to uffdd, so uffdd itself never opens a path.  A restarted
 * uffdd keeps the connections and the sessions (the userfaultfds and sources
 * sit in its fd store, a page server's connection too), so nothing kept
 * here needs handing over again; a stopped one ends them, and the restore
 * fails.  Should this program die
 * after a Goodbye, uffdd finishes the sessions all the same.
 *
 * Then each task whose pages are all in gets its huge pages back: its lazy
 * mappings' aligned 2 MiB runs go through process_madvise(MADV_COLLAPSE) on a
 * pidfd of the process that holds them (lazy-task.c: at the dump's pid, or
 * at that pid in a pid namespace below ours, where CRIU restores a tree
 * dumped in one).  That needs CAP_SYS_NICE and ptrace
 * read access to the task, which this program has beside `criu restore`;
 * uffdd itself never asks for them.
 *
 * With --page-server --address A --port P the lazy pages come from CRIU's
 * page server at A:P (`criu dump --lazy-pages` or `criu page-server
 * --lazy-pages`): one connection, made before the socket is listened on.
 * Each task's lazy runs are regions whose source is that connection
 * (SOURCE_PAGE_SERVER, the task's pid in its GETs): every task hands over
 * the same socket, and uffdd asks for the pages of all of them over one
 * connection (CRIU's page server takes one for the whole tree), as they are
 * touched or pushed; nothing is fetched here.  The images directory needs
 * the metadata only (and pages-N.img for the pages CRIU restores eagerly).
 * Once it handed the connection over, this program neither reads nor writes
 * it: the end belongs to whoever uses the stream last, and uffdd's GETs may
 * still be in flight when a task ends (one that exits early leaves its GETs
 * to the others).  uffdd ends it when the last session using it ended: it
 * reads the answers in flight, sends PS_IOV_CLOSE (which ends a lazy dump),
 * reads CRIU's status and shuts its side down; CRIU then closes its own.
 * This program waits for that end, bounded, after its sessions said
 * Goodbye.  With no task handed over it sends PS_IOV_CLOSE itself.  A
 * uffdd restart keeps such a connection (uffdd journals the stream).  With
 * --fetch-all each task's lazy pages are fetched whole as it arrives (many
 * GETs in flight) into a sealed memfd that takes the pages file's place.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "libpin-private.h"
#include "lazy-sock.h"
#include "lazy-task.h"

#define RESTORE_FINISHED 0x52535446u /* "RSTF" */
/* include/uapi/asm-generic/mman-common.h, since Linux 6.1; glibc 2.36 lacks it. */
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
/* What MADV_COLLAPSE builds: a PMD huge page with 4 KiB pages. */
#define HUGE_RUN  (2ull << 20)
#define MAX_TASKS 1024
/* A page server that moves no byte for this long is taken for dead. */
#define PS_TIMEOUT_MS 30000
/* uffdd's end of a connection handed over: its wait for the answers in
 * flight and for CRIU's status (10 s each, uffdd-protocol(7)), and margin. */
#define PS_END_TIMEOUT_MS 30000
/* The features CRIU's restore side asks for on each task's userfaultfd. */
#define CRIU_FEATURES                                                                              \
	(PIN_UFFD_FEATURE_EVENT_FORK | PIN_UFFD_FEATURE_EVENT_REMAP |                              \
	 PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP)

struct task {
	int pid;
	struct pin_image *img;
	struct pin_client *client;
	int pidfd;			/* < 0: none (not found, or not looked for yet) */
	struct pin_client_stats before; /* when the restore ended */
	bool have_before;
};

static const char *images_dir, *work_dir, *uffdd_socket;
/* --page-server: the connection to it, else NULL. */
static struct pin_ps *page_server;
/* --fetch-all: its pages fetched into memfds, not asked by uffdd. */
static bool fetch_all;
/* The page server's connection was handed to uffdd (a task's regions take
 * pages from it): uffdd ends it, not this program. */
static bool handed_over;
static int verbose;
static void log_stderr(enum pin_log_level level, const char *msg, void *userdata)
{
	if (level <= PIN_LOG_WARN || verbose)
		fprintf(stderr, "uffdd-lazy-pages: %s\n", msg);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/*
 * Whether CRIU's restorer registers this mapping: it restores a mapping with
 * pages but none of them PE_LAZY (locked memory, say) eagerly and leaves it
 * alone.  A mapping with no pages at all is registered and reads as zero.
 */
static bool lazy_mapping(const struct pin_image_region *g)
{
	bool data = false;

	for (size_t k = 0; k < g->nr_segments; k++) {
		if (g->segments[k].flags & PIN_IMAGE_SEG_LAZY)
			return true;
		data |= g->segments[k].flags & PIN_IMAGE_SEG_DATA;
	}
	return !data;
}

/* The bytes of the image's PE_LAZY pages: with a page server, what stays
 * there (or came from there with --fetch-all). */
static uint64_t lazy_bytes(const struct pin_image *img)
{
	uint64_t n = 0;

	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);

		for (size_t k = 0; k < g->nr_segments; k++)
			if (g->segments[k].flags & PIN_IMAGE_SEG_LAZY)
				n += g->segments[k].len;
	}
	return n;
}

/* Read task pid's image (its lazy pages left on the page server when
 * there is one) and connect to uffdd for it. */
static int task_open(struct task *t, int pid)
{
	struct pin_client_opts copts = { .sz = sizeof(copts), .socket = uffdd_socket };
	char name[32];
	int r;

	t->pid = pid;
	if (page_server && fetch_all)
		r = pin_image_open_criu_remote(images_dir, pid, page_server, PS_TIMEOUT_MS,
					       &t->img);
	else if (page_server)
		r = pin_image_open_criu_lazy(images_dir, pid, &t->img);
	else
		r = pin_image_open_criu(images_dir, pid, &t->img);
	if (r < 0)
		return r;
	if (page_server)
		fprintf(stderr, "uffdd-lazy-pages: task %d: %" PRIu64 " pages %s the page server\n",
			pid, lazy_bytes(t->img) / (uint64_t)sysconf(_SC_PAGESIZE),
			fetch_all ? "from" : "on");
	snprintf(name, sizeof(name), "criu-%d", pid);
	copts.name = name;
	return pin_client_connect(&copts, &t->client);
}

/* Hand one task's userfaultfd and layout to uffdd (its image and connection
 * made now unless prepare() made them); no push before RSTF: the restorer
 * registers the mappings after the userfaultfd came (vma_remap() in CRIU's
 * criu/pie/restorer.c), and a push before that meets ENOENT for nothing. */
static int task_start(struct task *t, int pid, int fd)
{
	struct pin_uffd *u;
	int r, nregions = 0;
	double t0 = now_ms();

	t->pid = pid;
	r = pin_uffd_from_fd(fd, CRIU_FEATURES, &u);
	if (r < 0) {
		close(fd);
		return r;
	}
	if (!t->client) {
		r = task_open(t, pid);
		if (r < 0)
			goto out;
	}
	r = pin_client_handover(t->client, u);
	size_t nmaps = pin_image_nr_regions(t->img), nlazy = 0;
	size_t *lazy = calloc(nmaps ? nmaps : 1, sizeof(*lazy));
	if (r >= 0 && !lazy)
		r = -ENOMEM;
	for (size_t i = 0; r >= 0 && i < nmaps; i++)
		if (lazy_mapping(pin_image_region(t->img, i)))
			lazy[nlazy++] = i;
	/* CRIU's restorer registered the lazy mappings: a task gone meanwhile
	 * ends its own session, not this call.  All in one request: the
	 * restorer's first touches wait for them. */
	unsigned int flags = PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTERED;
	if (r >= 0 && page_server && !fetch_all) {
		r = nregions =
			pin_client_add_image_regions_remote(t->client, t->img, lazy, nlazy, flags,
							    pin_ps_fd(page_server), (uint64_t)pid);
		handed_over |= r > 0 && lazy_bytes(t->img);
	} else if (r >= 0) {
		r = nregions = pin_client_add_image_regions(t->client, t->img, lazy, nlazy, flags);
	}
	free(lazy);
	if (r >= 0)
		fprintf(stderr,
			"uffdd-lazy-pages: task %d: %zu mappings, %d regions handed to uffdd in "
			"%.1f ms\n",
			pid, pin_image_nr_regions(t->img), nregions, now_ms() - t0);
out:
	/* uffdd holds its own copy of the descriptor now. */
	pin_uffd_free(u);
	return r;
}

/* After RSTF: say what the faults (and their readahead) placed before the
 * end. */
static void task_report(struct task *t)
{
	int r = pin_client_stats(t->client, 0, &t->before);

	t->have_before = r >= 0;
	if (r >= 0)
		printf("uffdd-lazy-pages: task %d: before the end: %" PRIu64 " faults, %" PRIu64
		       " pages copied, %" PRIu64 " zeroed, %" PRIu64 " pushed, %" PRIu64
		       " found there, %" PRIu64 " of %" PRIu64 " populated\n",
		       t->pid, t->before.faults, t->before.pages_copied, t->before.pages_zeroed,
		       t->before.pages_pushed, t->before.eexist, t->before.pages_populated,
		       t->before.pages_total);
}

/*
 * Goodbye, and wait until uffdd has placed every page of the task not
 * faulted in yet: 0, or -ESRCH when the task exited first (it needs no
 * more pages: not a failure), else -errno.  What went in meanwhile is the
 * copies since the report, counted for a task that exited too: a task
 * that reads its memory and exits while its push runs (the pages it never
 * reads still to come) had pages placed until it went, and the end's
 * counters say how many.  A daemon restart in between keeps the session
 * but not its counters (they are not in its record): then what the new
 * daemon copied is all that is known.
 */
static bool task_find(struct task *t);
static void task_kill(struct task *t);

static int task_finish(struct task *t, uint64_t *ret_pushed)
{
	struct pin_client_stats after = { 0 };
	int r = pin_client_finish(t->client, &after);
	uint64_t since = t->have_before ? t->before.pages_copied : 0;

	if (r == 0 || r == -ESRCH)
		*ret_pushed += after.pages_copied >= since ? after.pages_copied - since
							   : after.pages_copied;
	if (r == -ESRCH) {
		printf("uffdd-lazy-pages: task %d exited before its pages were all in (%" PRIu64
		       " of its %" PRIu64 " pages placed); its session ended\n",
		       t->pid, after.pages_populated, after.pages_total);
		return r;
	}
	/* The kernel refused to poison the pages uffdd could not read: it
	 * gave them no page at all, the task's threads there wait, and would
	 * for ever. */
	if (r == -ENOTRECOVERABLE)
		task_kill(t);
	else if (r < 0)
		fprintf(stderr, "uffdd-lazy-pages: task %d: its pages are not all in: %s\n", t->pid,
			strerror(-r));
	return r;
}

/*
 * uffdd ends the page server's connection it was handed once the last
 * session using it is gone (see the top): wait, bounded, until CRIU closed
 * its end (or uffdd cut the connection), reading nothing of the stream.
 */
static int wait_page_server_end(void)
{
	struct pollfd p = { .fd = pin_ps_fd(page_server), .events = POLLRDHUP };
	double until = now_ms() + PS_END_TIMEOUT_MS;

	for (;;) {
		double left = until - now_ms();
		int r = poll(&p, 1, left > 0 ? (int)left : 0);

		if (r > 0)
			return 0;
		if (r == 0) {
			fprintf(stderr,
				"uffdd-lazy-pages: page server: uffdd did not end the connection "
				"within %d ms of the last Goodbye\n",
				PS_END_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
		if (errno != EINTR) {
			int err = errno;
			fprintf(stderr, "uffdd-lazy-pages: page server: poll: %s\n", strerror(err));
			return -err;
		}
	}
}

/* One aligned run of the task's: -errno of process_madvise() or 0. */
static int collapse_run(int pidfd, uint64_t a)
{
	struct iovec iov = { .iov_base = (void *)(uintptr_t)a, .iov_len = HUGE_RUN };

	if (syscall(SYS_process_madvise, pidfd, &iov, 1, MADV_COLLAPSE, 0) < 0)
		return -errno;
	return 0;
}

/* The task's pidfd, found among the processes here (lazy-task.c); false,
 * said, when none is it. */
static bool task_find(struct task *t)
{
	size_t n = pin_image_nr_regions(t->img), k = 0;
	struct lazy_range *v = calloc(n ? n : 1, sizeof(*v));
	int host = 0;

	if (!v)
		return false;
	for (size_t i = 0; i < n; i++) {
		const struct pin_image_region *g = pin_image_region(t->img, i);
		if (lazy_mapping(g))
			v[k++] = (struct lazy_range){ g->addr, g->len };
	}
	t->pidfd = k ? lazy_task_pidfd(t->pid, v, k, &host) : -ENOENT;
	free(v);
	if (t->pidfd == -ESRCH || t->pidfd == -ENOTUNIQ)
		printf("uffdd-lazy-pages: task %d: %s holds its mappings, at pid %d or at pid %d "
		       "of a pid namespace below; no huge pages for it\n",
		       t->pid, t->pidfd == -ESRCH ? "no process here" : "more than one process",
		       t->pid, t->pid);
	else if (t->pidfd < 0 && t->pidfd != -ENOENT)
		fprintf(stderr, "uffdd-lazy-pages: task %d: finding its process: %s\n", t->pid,
			strerror(-t->pidfd));
	else if (t->pidfd >= 0 && host != t->pid && verbose)
		fprintf(stderr, "uffdd-lazy-pages: task %d is process %d here\n", t->pid, host);
	return t->pidfd >= 0;
}

/*
 * Pages of the task could not be read from their source, and the kernel
 * refused to poison them (before Linux 6.6): uffdd placed nothing there
 * and its threads that touch them wait in the kernel, for ever.  It can
 * never run right, and a restore that fails beats a task hung or wrong:
 * SIGKILL (its session ends when uffdd sees it gone).
 */
static void task_kill(struct task *t)
{
	if (!task_find(t)) {
		fprintf(stderr,
			"uffdd-lazy-pages: task %d: some of its pages could not be read from "
			"their source and the kernel refused to poison them: its threads touching "
			"them wait; its process was not found to kill\n",
			t->pid);
		return;
	}
	if (syscall(SYS_pidfd_send_signal, t->pidfd, SIGKILL, NULL, 0) < 0) {
		int err = errno;
		fprintf(stderr,
			"uffdd-lazy-pages: task %d: some of its pages could not be read nor "
			"poisoned; pidfd_send_signal(SIGKILL): %s\n",
			t->pid, strerror(err));
		return;
	}
	fprintf(stderr,
		"uffdd-lazy-pages: task %d: some of its pages could not be read from their source "
		"and the kernel refused to poison them (its threads touching them would wait "
		"for ever): killed with SIGKILL\n",
		t->pid);
}

/*
 * The task's pages are all in: make each aligned 2 MiB run of its lazy
 * mappings a huge page.  The mappings are unregistered now (uffdd closed its
 * userfaultfd), so a collapse fills what is not present with zeros: right,
 * since every page was placed and one missing now was discarded by the task.
 * A mapping left MADV_NOHUGEPAGE cannot be changed from here (process_madvise
 * takes only COLD, PAGEOUT, WILLNEED and COLLAPSE for another process).
 */
static void task_collapse(struct task *t, bool *denied)
{
	unsigned int runs = 0, huge = 0, refused = 0;

	if (*denied || !task_find(t))
		return;
	for (size_t i = 0; i < pin_image_nr_regions(t->img); i++) {
		const struct pin_image_region *g = pin_image_region(t->img, i);
		uint64_t a = (g->addr + HUGE_RUN - 1) & ~(HUGE_RUN - 1);

		if (!lazy_mapping(g))
			continue;
		for (; a + HUGE_RUN <= g->addr + g->len; a += HUGE_RUN) {
			int r = collapse_run(t->pidfd, a);

			runs++;
			huge += r == 0;
			refused += r == -EINVAL;
			if (r == -EPERM) {
				*denied = true;
				fprintf(stderr,
					"uffdd-lazy-pages: process_madvise(MADV_COLLAPSE) of task "
					"%d: %s (it needs CAP_SYS_NICE); huge pages not "
					"collapsed\n",
					t->pid, strerror(-r));
				return;
			}
			if (r == -ESRCH)
				return;
			/* EBUSY, EAGAIN, ENOMEM: no huge page to be had now. */
			if (r < 0 && r != -EINVAL && r != -EBUSY && r != -EAGAIN && r != -ENOMEM)
				fprintf(stderr,
					"uffdd-lazy-pages: process_madvise(MADV_COLLAPSE) of task "
					"%d [%#" PRIx64 ", +%#llx): %s\n",
					t->pid, a, HUGE_RUN, strerror(-r));
		}
	}
	printf("uffdd-lazy-pages: task %d: %u of %u 2 MiB runs collapsed into huge pages, %u "
	       "refused (MADV_NOHUGEPAGE, or no THP)\n",
	       t->pid, huge, runs, refused);
}

static void task_free(struct task *t)
{
	if (t->pidfd >= 0)
		close(t->pidfd);
	if (t->client)
		pin_client_goodbye(t->client);
	pin_client_free(t->client);
	pin_image_free(t->img);
	*t = (struct task){ .pidfd = -1 };
}

/*
 * Before the restore side sends a task: each task of the dump (pstree.img)
 * with its image read and its connection to uffdd made, so that its
 * userfaultfd, when it comes, costs two requests while the restorer waits
 * (issue 13).  A task that fails here is tried again, and its error said,
 * when it comes.
 */
static void prepare(struct task *ready, size_t *nready)
{
	int pids[MAX_TASKS];
	int n = pin_image_criu_pids(images_dir, pids, MAX_TASKS);

	for (int i = 0; i < n && i < MAX_TASKS; i++) {
		ready[*nready] = (struct task){ .pidfd = -1 };
		if (pids[i] <= 0 || task_open(&ready[*nready], pids[i]) < 0) {
			task_free(&ready[*nready]);
			continue;
		}
		(*nready)++;
	}
}

/* Into *t, task pid as prepare() made it, if it did. */
static void take_ready(struct task *ready, size_t nready, int pid, struct task *t)
{
	for (size_t i = 0; i < nready; i++) {
		if (ready[i].pid != pid || !ready[i].client)
			continue;
		*t = ready[i];
		ready[i] = (struct task){ .pidfd = -1 };
		return;
	}
}

/* Take the restore side's tasks until RSTF; *ntasks counts those started,
 * to be freed whatever the outcome. */
static int serve(int sock, struct task *tasks, size_t *ntasks, struct task *ready, size_t nready)
{
	for (;;) {
		uint32_t word;
		int r = lazy_sock_read_word(sock, &word), fd;

		if (r < 0) {
			fprintf(stderr,
				"uffdd-lazy-pages: restore side: %s before the end of restore\n",
				strerror(-r));
			return r;
		}
		if (word == RESTORE_FINISHED)
			return 0;
		if ((int32_t)word < 0)
			continue; /* a zombie: no memory, no descriptor */
		fd = lazy_sock_read_fd(sock);
		if (fd < 0) {
			fprintf(stderr, "uffdd-lazy-pages: task %d: no userfaultfd: %s\n",
				(int)word, strerror(-fd));
			return fd;
		}
		if (*ntasks == MAX_TASKS) {
			close(fd);
			fprintf(stderr, "uffdd-lazy-pages: more than %d tasks\n", MAX_TASKS);
			return -E2BIG;
		}
		take_ready(ready, nready, (int)word, &tasks[*ntasks]);
		r = task_start(&tasks[(*ntasks)++], (int)word, fd);
		if (r < 0) {
			fprintf(stderr, "uffdd-lazy-pages: task %d: %s\n", (int)word, strerror(-r));
			return r;
		}
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uffdd-lazy-pages -D IMAGES_DIR [-W WORK_DIR] [--socket UFFDD_SOCKET] [-v]\n"
		"                        [--page-server --address ADDR --port PORT [--fetch-all]]\n"
		"       uffdd-lazy-pages --version\n"
		"Serve `criu restore --lazy-pages` through uffdd.\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "images-dir", required_argument, NULL, 'D' },
		{ "work-dir", required_argument, NULL, 'W' },
		{ "socket", required_argument, NULL, 's' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "page-server", no_argument, NULL, 'P' },
		{ "fetch-all", no_argument, NULL, 'F' },
		{ "address", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	static struct task tasks[MAX_TASKS], ready[MAX_TASKS];
	static bool finished[MAX_TASKS]; /* its pages all in: collapse it */
	bool denied = false;		 /* no CAP_SYS_NICE: not tried again */
	uint64_t pushed = 0;
	size_t ntasks = 0, nready = 0, exited = 0, failed = 0;
	int c, lsock, sock, r;
	double t0, t1;
	bool remote = false;
	const char *address = NULL;
	long port = 0;
	char *end;

	while ((c = getopt_long(argc, argv, "D:W:s:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'D':
			images_dir = optarg;
			break;
		case 'W':
			work_dir = optarg;
			break;
		case 's':
			uffdd_socket = optarg;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'P':
			remote = true;
			break;
		case 'F':
			fetch_all = true;
			break;
		case 'a':
			address = optarg;
			break;
		case 'p':
			errno = 0;
			port = strtol(optarg, &end, 10);
			if (errno || *end || port <= 0 || port > UINT16_MAX) {
				fprintf(stderr, "uffdd-lazy-pages: --port %s: not a port\n",
					optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			puts("uffdd-lazy-pages " PIN_PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!images_dir || optind != argc || remote != (address && port) ||
	    (fetch_all && !remote)) {
		usage(stderr);
		return 2;
	}
	pin_log_set(log_stderr, NULL);
	if (remote && pin_ps_connect(address, (uint16_t)port, PS_TIMEOUT_MS, &page_server) < 0)
		return 1;
	lsock = lazy_sock_listen(work_dir ? work_dir : images_dir);
	if (lsock < 0) {
		pin_ps_free(page_server);
		return 1;
	}
	prepare(ready, &nready);
	do
		sock = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
	while (sock < 0 && errno == EINTR);
	int err = errno;
	close(lsock);
	/* One restore side only: nobody else is to find the socket. */
	lazy_sock_remove();
	if (sock < 0) {
		fprintf(stderr, "uffdd-lazy-pages: accept: %s\n", strerror(err));
		pin_ps_free(page_server);
		return 1;
	}
	t0 = now_ms();
	r = serve(sock, tasks, &ntasks, ready, nready);
	close(sock);
	t1 = now_ms();
	/* Tasks of the dump the restore side did not send (zombies). */
	for (size_t i = 0; i < nready; i++)
		task_free(&ready[i]);
	if (r < 0) {
		/* Goodbye all the same: uffdd places the pages of the tasks
		 * restored so far. */
		for (size_t i = 0; i < ntasks; i++)
			task_free(&tasks[i]);
		pin_ps_free(page_server);
		return 1;
	}
	for (size_t i = 0; i < ntasks; i++)
		task_report(&tasks[i]);
	/* One task gone, or failed, ends only its own session.  Huge pages
	 * once every task's pages are in: a collapse (a copy of the mapping)
	 * before the next task's Goodbye would hold back that task's push. */
	for (size_t i = 0; i < ntasks; i++) {
		int f = task_finish(&tasks[i], &pushed);
		exited += f == -ESRCH;
		failed += f < 0 && f != -ESRCH;
		finished[i] = f == 0;
	}
	for (size_t i = 0; i < ntasks; i++)
		if (finished[i])
			task_collapse(&tasks[i], &denied);
	for (size_t i = 0; i < ntasks; i++)
		task_free(&tasks[i]);
	/* Every session said Goodbye: uffdd ends the connection it holds
	 * once they are gone; else nobody asks the page server for more
	 * (with --fetch-all, nothing was handed over). */
	if (page_server && handed_over && !failed)
		failed += wait_page_server_end() < 0;
	else if (page_server && !handed_over)
		failed += pin_ps_close(page_server, PS_TIMEOUT_MS) < 0;
	pin_ps_free(page_server);
	printf("uffdd-lazy-pages: %zu tasks restored in %.1f ms, %" PRIu64
	       " pages pushed after it in %.1f ms; %zu exited before, %zu failed\n",
	       ntasks, t1 - t0, pushed, now_ms() - t1, exited, failed);
	return failed ? 1 : 0;
}
