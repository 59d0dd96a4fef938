// SPDX-License-Identifier: MIT
/*
 * Suite restore: uffdd-lazy-pages in the place of `criu lazy-pages`, driven
 * exactly as `criu restore --lazy-pages` drives it, over the real CRIU 4.2
 * dumps of ../shared/criu-images.  The restored tasks are child processes
 * that map the dump's mappings where they were and check every byte.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"
#include "criu-split.h"
#include "fake-page-server.h"
#include "uffdd-harness.h"

#define RSTF 0x52535446u
#define CRIU_FEATURES                                                                              \
	(PIN_UFFD_FEATURE_EVENT_FORK | PIN_UFFD_FEATURE_EVENT_REMAP |                              \
	 PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP)

/* The fixture's regions (../shared/criu-images/README.md). */
#define REGION_A       0x7e0000000000ull
#define REGION_B       0x7e0000800000ull
#define REGION_C       0x7e0000a00000ull
#define REGION_D       0x7e0000c00000ull
#define FORK_CHILD_PID 27448 /* its first 16 pages of A hold the pattern ^ 1 */

static size_t page;
static char images[512];

struct lazy_pages {
	pid_t pid;
	int out; /* its stdout */
	char work[64];
};

/* With ps_port, one more argument of uffdd-lazy-pages (NULL: none). */
static const char *ps_extra;

/* With ps_port, its lazy pages from the page server at 127.0.0.1:ps_port. */
static void lazy_pages_start(struct lazy_pages *lp, const struct test_daemon *d, const char *dump,
			     uint16_t ps_port)
{
	char port[8];
	int pfd[2];

	snprintf(lp->work, sizeof(lp->work), "/tmp/uffdd-lp-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(lp->work));
	ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
	lp->pid = fork();
	ck_assert_int_ge(lp->pid, 0);
	if (lp->pid == 0) {
		dup2(pfd[1], 1);
		snprintf(port, sizeof(port), "%u", ps_port);
		if (ps_port)
			execl(getenv("UFFDD_LAZY_PAGES"), "uffdd-lazy-pages", "-D", dump, "-W",
			      lp->work, "--socket", d->sock, "--page-server", "--address",
			      "127.0.0.1", "--port", port, ps_extra, (char *)NULL);
		else
			execl(getenv("UFFDD_LAZY_PAGES"), "uffdd-lazy-pages", "-D", dump, "-W",
			      lp->work, "--socket", d->sock, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	lp->out = pfd[0];
}

/* Connect as CRIU's restore side does: a stream socket in the work dir. */
static int lazy_pages_connect(const struct lazy_pages *lp)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/lazy-pages.socket", lp->work);
	for (unsigned int i = 0; i < 1000 * test_time_scale(); i++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		ck_assert_int_ge(fd, 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		ck_assert_int_eq(waitpid(lp->pid, NULL, WNOHANG), 0);
		test_sleep_ms(10);
	}
	ck_abort_msg("uffdd-lazy-pages did not listen in %s", lp->work);
	return -1;
}

/* Its exit status, and all it printed (until EOF: it exited). */
static int lazy_pages_wait(struct lazy_pages *lp, char *out, size_t outlen)
{
	size_t len = 0;
	ssize_t n;
	int st;

	while ((n = read(lp->out, out + len, outlen - 1 - len)) > 0 && len + (size_t)n < outlen - 1)
		len += (size_t)n;
	ck_assert_msg(n == 0, "reading uffdd-lazy-pages' output: %s",
		      n < 0 ? strerror(errno) : "more than the buffer holds");
	out[len] = '\0';
	close(lp->out);
	ck_assert_int_eq(waitpid(lp->pid, &st, 0), lp->pid);
	unlink(strcat(lp->work, "/lazy-pages.socket"));
	*strrchr(lp->work, '/') = '\0';
	rmdir(lp->work);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void send_all(int sock, const void *buf, size_t len)
{
	ck_assert_int_eq(send(sock, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* The int32 pid, then one byte carrying the userfaultfd. */
static void send_task(int sock, int32_t pid, int fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl = { 0 };
	char byte = 0;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	send_all(sock, &pid, sizeof(pid));
	if (fd < 0)
		return;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(fd));
	ck_assert_int_eq(sendmsg(sock, &mh, MSG_NOSIGNAL), 1);
}

static int recv_fd(int sock)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf) };
	int fd;

	if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) != 1 || !CMSG_FIRSTHDR(&mh))
		return -1;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(fd));
	return fd;
}

/* ---- the restored task (a child process) ---- */

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: task %d: %s failed\n", __FILE__, __LINE__, pid,    \
				#c);                                                               \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

static uint64_t word_at(uint64_t a)
{
	return *(volatile uint64_t *)(uintptr_t)a;
}

/* Regions A to D hold what fixture.c wrote, word for word. */
static int check_fixture(int pid)
{
	for (uint64_t a = REGION_A; a < REGION_A + (4 << 20); a += 8) {
		uint64_t seed = pid == FORK_CHILD_PID && a < REGION_A + 16 * page;
		CHECK(word_at(a) == test_pattern(a, seed));
	}
	for (uint64_t a = REGION_B; a < REGION_B + (1 << 20); a += 8) {
		bool odd = (a - REGION_B) / page % 2;
		CHECK(word_at(a) == (odd ? 0 : test_pattern(a, 0)));
	}
	for (uint64_t a = REGION_C; a < REGION_C + (1 << 20); a += 8)
		CHECK(word_at(a) == 0);
	for (uint64_t a = REGION_D; a < REGION_D + (64 << 10); a += 8)
		CHECK(word_at(a) == test_pattern(a, 0));
	return 0;
}

static bool in_fixture(uint64_t addr)
{
	return addr >= REGION_A && addr < REGION_D + (64 << 10);
}

/* Every byte of what was mapped equals the dump's. */
static int check_image(const struct pin_image *img, const bool *mapped, int pid)
{
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);
		uint8_t *want;
		int r;

		if (!mapped[i])
			continue;
		want = malloc(g->len);
		CHECK(want);
		r = pin_image_read(img, g->addr, want, g->len);
		if (r == 0)
			r = memcmp((void *)(uintptr_t)g->addr, want, g->len) ? -EIO : 0;
		free(want);
		CHECK(r == 0);
	}
	return 0;
}

/*
 * The restored task: hand the userfaultfd to the restore side (our parent,
 * the same way it hands it on), map and register the dump's mappings when
 * told to, then, when told to, read every byte.
 */
static int task_main(const char *dump, int pid, int ctl)
{
	struct pin_uffd_opts o = { .sz = sizeof(o),
				   .flags = PIN_UFFD_CLOEXEC,
				   .features = CRIU_FEATURES };
	struct pin_image *img;
	struct pin_uffd *u;
	bool mapped[64] = { false };
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	char go;

	/* A poisoned page kills it as it kills a restored task (a sanitizer's
	 * own SIGBUS handler would make that an exit). */
	CHECK(sigaction(SIGBUS, &dfl, NULL) == 0);
	CHECK(pin_image_open_criu(dump, pid, &img) == 0);
	CHECK(pin_image_nr_regions(img) <= PIN_ARRAY_SIZE(mapped));
	CHECK(pin_uffd_new(&o, &u) == 0);
	send_task(ctl, pid, pin_uffd_fd(u));
	CHECK(read(ctl, &go, 1) == 1);
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		int r = pin_image_map_region(img, i, u);
		/* This process's own stack may sit where the dump's was; the
		 * fixture's regions are where nothing of ours is. */
		CHECK(r == 0 || (r == -EEXIST && !in_fixture(pin_image_region(img, i)->addr)));
		mapped[i] = r == 0;
	}
	/* As CRIU's restorer does: only the daemon keeps the userfaultfd, so
	 * the mappings stop reporting faults once it lets go. */
	pin_uffd_free(u);
	CHECK(write(ctl, "r", 1) == 1);
	CHECK(read(ctl, &go, 1) == 1);
	/* A task that exits right after the restore, one page of it read (one
	 * fault: no readahead yet), its pages not all in. */
	if (go == 'x') {
		CHECK(word_at(REGION_A) == test_pattern(REGION_A, pid == FORK_CHILD_PID));
		pin_image_free(img);
		return 0;
	}
	char verify = go;
	CHECK(check_fixture(pid) == 0);
	CHECK(check_image(img, mapped, pid) == 0);
	/* 'h': huge pages wanted for A again, as a restorer that gives back a
	 * mapping its own advice would leave it (A had none: THP eligible). */
	CHECK(go != 'h' || madvise((void *)(uintptr_t)REGION_A, 4 << 20, MADV_HUGEPAGE) == 0);
	CHECK(write(ctl, "v", 1) == 1);
	/* Stay until the restore side is done with our memory. */
	CHECK(read(ctl, &go, 1) == 0);
	/* uffdd-lazy-pages collapsed A's two runs, and every byte stayed. */
	CHECK(verify != 'h' || test_anon_huge_kb(REGION_A, 4 << 20) == 4 << 10);
	CHECK(verify != 'h' || check_fixture(pid) == 0);
	pin_image_free(img);
	return 0;
}

/* ---- the restore side ---- */

enum order {
	VERIFY_BEFORE_END, /* every page arrives by a fault */
	VERIFY_AFTER_END,  /* every page was pushed, and uffdd let go */
	/* As VERIFY_AFTER_END, but the last task exits (and is reaped)
	 * before the end of restore, one page of it read. */
	LAST_EXITS_BEFORE_END,
};

struct restore {
	struct test_daemon d;
	struct lazy_pages lp;
	char dump[600];
	int pids[4];
	int npids;
	pid_t tasks[4];
	int ctl[4];
	char verify;	   /* what tells a task to check its memory: 'g', or 'h' (task_main) */
	bool at_dump_pids; /* the tasks are at the dump's pids (restore_begin()) */
	char out[2048];
};

static void read_byte(int fd, char want)
{
	char c = 0;

	ck_assert_int_eq(read(fd, &c, 1), 1);
	ck_assert_int_eq(c, want);
}

/*
 * A task child: at pid (as CRIU places a task at its dumped pid, with
 * clone3's set_tid) when at_pid, else wherever fork puts it.  -errno of
 * clone3 when pid is taken.
 */
static pid_t fork_task(pid_t pid, bool at_pid)
{
	struct clone_args a = { .exit_signal = SIGCHLD,
				.set_tid = (uint64_t)(uintptr_t)&pid,
				.set_tid_size = 1 };
	long r;

	if (!at_pid)
		return fork();
	r = syscall(SYS_clone3, &a, sizeof(a));
	return r < 0 ? -errno : (pid_t)r;
}

/* Start the restore of dump `which`, of npids tasks (README.md), the tasks
 * at the dump's pids when at_dump_pids and none of them is taken; with
 * ps_port, from the page server there. */
static void restore_begin(struct restore *rs, const char *which, int npids, bool at_dump_pids,
			  uint16_t ps_port)
{
	rs->verify = 'g';
	rs->at_dump_pids = at_dump_pids;
	/* A path of its own (a chain criu-split.c made), else a dump of images. */
	if (which[0] == '/')
		snprintf(rs->dump, sizeof(rs->dump), "%s", which);
	else
		snprintf(rs->dump, sizeof(rs->dump), "%s/%s", images, which);
	rs->npids = pin_image_criu_pids(rs->dump, rs->pids, PIN_ARRAY_SIZE(rs->pids));
	ck_assert_int_eq(rs->npids, npids);
	test_daemon_start(&rs->d, NULL);
	lazy_pages_start(&rs->lp, &rs->d, rs->dump, ps_port);
	for (int i = 0; i < rs->npids; i++) {
		int sv[2];
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		rs->tasks[i] = fork_task(rs->pids[i], rs->at_dump_pids);
		if (rs->tasks[i] == -EEXIST || rs->tasks[i] == -ENOSYS) {
			/* Taken here (or no clone3: valgrind): the task goes
			 * elsewhere, as in a pid namespace, and nothing is to
			 * be collapsed. */
			rs->tasks[i] = fork();
			rs->at_dump_pids = false;
		}
		ck_assert_int_ge(rs->tasks[i], 0);
		if (rs->tasks[i] == 0) {
			/* Only its own end: the restore side's ends of the
			 * other tasks must reach EOF when it closes them. */
			close(sv[0]);
			close(rs->lp.out);
			for (int j = 0; j < i; j++)
				close(rs->ctl[j]);
			_exit(task_main(rs->dump, rs->pids[i], sv[1]));
		}
		close(sv[1]);
		rs->ctl[i] = sv[0];
	}
}

static void restore_start(struct restore *rs, const char *which, int npids, uint16_t ps_port)
{
	restore_begin(rs, which, npids, false, ps_port);
}

/* Play `criu restore --lazy-pages` for every task of the dump. */
static int restore_run(struct restore *rs, enum order order, bool zombie)
{
	int sock = lazy_pages_connect(&rs->lp);
	uint32_t end = RSTF;

	if (zombie)
		send_task(sock, -1, -1);
	for (int i = 0; i < rs->npids; i++) {
		int32_t pid;
		ck_assert_int_eq(read(rs->ctl[i], &pid, sizeof(pid)), sizeof(pid));
		ck_assert_int_eq(pid, rs->pids[i]);
		int fd = recv_fd(rs->ctl[i]);
		ck_assert_int_ge(fd, 0);
		send_task(sock, pid, fd);
		close(fd);
		ck_assert_int_eq(write(rs->ctl[i], "g", 1), 1);
	}
	for (int i = 0; i < rs->npids; i++)
		read_byte(rs->ctl[i], 'r');
	for (int i = 0; order == VERIFY_BEFORE_END && i < rs->npids; i++) {
		ck_assert_int_eq(write(rs->ctl[i], &rs->verify, 1), 1);
		read_byte(rs->ctl[i], 'v');
	}
	if (order == LAST_EXITS_BEFORE_END) {
		int st, last = --rs->npids;
		ck_assert_int_eq(write(rs->ctl[last], "x", 1), 1);
		ck_assert_int_eq(waitpid(rs->tasks[last], &st, 0), rs->tasks[last]);
		ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		close(rs->ctl[last]);
	}
	send_all(sock, &end, sizeof(end));
	int status = lazy_pages_wait(&rs->lp, rs->out, sizeof(rs->out));
	close(sock);
	for (int i = 0; order != VERIFY_BEFORE_END && i < rs->npids; i++) {
		ck_assert_int_eq(write(rs->ctl[i], "g", 1), 1);
		read_byte(rs->ctl[i], 'v');
	}
	return status;
}

static void restore_finish(struct restore *rs)
{
	for (int i = 0; i < rs->npids; i++) {
		int st;
		close(rs->ctl[i]);
		ck_assert_int_eq(waitpid(rs->tasks[i], &st, 0), rs->tasks[i]);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "task %d failed", rs->pids[i]);
	}
	test_daemon_stop(&rs->d);
}

/* PE_LAZY pages of the dump: what a full push places. */
static unsigned long lazy_page_count(const char *dump, int pid)
{
	struct pin_image *img;
	unsigned long n = 0;

	ck_assert_int_eq(pin_image_open_criu(dump, pid, &img), 0);
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);
		for (size_t k = 0; k < g->nr_segments; k++)
			if (g->segments[k].flags & PIN_IMAGE_SEG_LAZY)
				n += g->segments[k].len / page;
	}
	pin_image_free(img);
	return n;
}

/* What uffdd-lazy-pages says uffdd placed for a task before the end. */
struct placed {
	unsigned long faults, copied, zeroed, pushed, found, populated, total;
};

static struct placed placed_before_end(const struct restore *rs, int pid)
{
	char head[64];
	struct placed p;

	snprintf(head, sizeof(head), "task %d: before the end: ", pid);
	const char *s = strstr(rs->out, head);
	ck_assert_msg(s, "no '%s' in: %s", head, rs->out);
	ck_assert_int_eq(sscanf(s + strlen(head),
				"%lu faults, %lu pages copied, %lu zeroed, %lu pushed, %lu found "
				"there, %lu of %lu populated",
				&p.faults, &p.copied, &p.zeroed, &p.pushed, &p.found, &p.populated,
				&p.total),
			 7);
	return p;
}

/*
 * VERIFY_BEFORE_END: the faults (and their readahead) placed every page of
 * every region uffdd was given, each once: the lazy pages from the dump, the
 * rest as zero pages; nothing pushed, nothing there before.  The number of
 * faults depends on how far readahead got ahead of the reading task: at least
 * one, at most one per page.  With remote, a fault waits for its page to come
 * from the page server, and the page may fault again meanwhile (a fault the
 * kernel sends again, seen under ASan's pace): the second finds the page
 * there, at most once a fault.
 */
static void assert_placed_by_faults(const struct restore *rs, bool remote)
{
	for (int i = 0; i < rs->npids; i++) {
		struct placed p = placed_before_end(rs, rs->pids[i]);
		ck_assert_uint_eq(p.copied, lazy_page_count(rs->dump, rs->pids[i]));
		ck_assert_uint_eq(p.zeroed, p.total - p.copied);
		ck_assert_uint_eq(p.pushed, 0);
		if (remote)
			ck_assert_uint_le(p.found, p.faults);
		else
			ck_assert_uint_eq(p.found, 0);
		ck_assert_uint_eq(p.populated, p.total);
		ck_assert_uint_ge(p.faults, 1);
		ck_assert_uint_le(p.faults, p.total);
	}
	ck_assert_msg(strstr(rs->out, " 0 pages pushed after it"), "%s", rs->out);
}

START_TEST(criu_faults_serve_every_byte)
{
	struct restore rs;

	restore_start(&rs, "fixture", 1, 0);
	ck_assert_int_eq(restore_run(&rs, VERIFY_BEFORE_END, false), 0);
	ck_assert_msg(strstr(rs.out, "1 tasks restored"), "%s", rs.out);
	assert_placed_by_faults(&rs, false);
	restore_finish(&rs);
}
END_TEST

START_TEST(criu_push_after_restore_completes_it)
{
	struct restore rs;
	char want[64];

	restore_start(&rs, "fixture", 1, 0);
	ck_assert_int_eq(restore_run(&rs, VERIFY_AFTER_END, false), 0);
	/* Nothing touched before the end: the push placed every lazy page. */
	struct placed p = placed_before_end(&rs, rs.pids[0]);
	ck_assert_uint_eq(p.faults, 0);
	ck_assert_uint_eq(p.copied + p.zeroed + p.pushed + p.found + p.populated, 0);
	snprintf(want, sizeof(want), " %lu pages pushed", lazy_page_count(rs.dump, rs.pids[0]));
	ck_assert_msg(strstr(rs.out, want), "want '%s' in: %s", want, rs.out);
	restore_finish(&rs);
}
END_TEST

START_TEST(criu_two_tasks_and_a_zombie)
{
	struct restore rs;

	restore_start(&rs, "fixture-fork", 2, 0);
	ck_assert_int_eq(restore_run(&rs, VERIFY_BEFORE_END, true), 0);
	ck_assert_msg(strstr(rs.out, "2 tasks restored"), "%s", rs.out);
	assert_placed_by_faults(&rs, false);
	restore_finish(&rs);
}
END_TEST

/* Wait until uffdd holds regions for a session: the one request of
 * uffdd-lazy-pages' for its task went in. */
static void wait_regions(const struct test_daemon *d)
{
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock, .name = "lister" };
	struct pin_client *c;
	bool any = false;

	ck_assert_int_eq(pin_client_connect(&co, &c), 0);
	for (unsigned int i = 0; i < 1000 * test_time_scale() && !any; i++) {
		struct pin_client_info *v;
		size_t n;

		ck_assert_int_eq(pin_client_list_clients(c, &v, &n), 0);
		for (size_t k = 0; k < n; k++)
			any |= v[k].regions > 0;
		free(v);
		if (!any)
			test_sleep_ms(10);
	}
	pin_client_free(c);
	ck_assert_msg(any, "uffdd-lazy-pages handed no region to uffdd");
}

/* How a restore whose pages file is cut short once uffdd has it goes on. */
enum cut {
	CUT_TOUCHED,	/* the task reads its memory before the end */
	CUT_UNTOUCHED,	/* nor after it, until uffdd-lazy-pages exited */
	CUT_UNPOISONED, /* as CUT_TOUCHED, on a kernel refusing UFFDIO_POISON */
};

/*
 * The pages file cut short once uffdd has it, and the task's userfaultfd
 * without the POISON feature, as CRIU's.  uffdd makes up no page: this
 * kernel poisons them all the same, so a task that reads one dies of
 * SIGBUS, and one that does not lives on; either way its Goodbye gets -EIO
 * and uffdd-lazy-pages exits 1, its task counted failed.  On a kernel that
 * refuses UFFDIO_POISON (uffdd under tests/no-poison) the task's thread that
 * reads one waits, its Goodbye gets -ENOTRECOVERABLE, and uffdd-lazy-pages
 * kills the task (SIGKILL) and exits 1; where the task is not at the dump's
 * pid the program cannot find it, says so, and the test kills it.
 */
static void restore_cut(enum cut how)
{
	struct restore rs;
	char dir[] = "/tmp/uffdd-cut-XXXXXX", cmd[700], path[600];
	uint32_t end = RSTF;
	int32_t pid;
	int st;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(cmd, sizeof(cmd), "cp -a '%s/fixture/.' '%s/'", images, dir);
	ck_assert_int_eq(system(cmd), 0);
	if (how == CUT_UNPOISONED)
		test_uffdd_wrap("NO_POISON", "NO_POISON_EXEC");
	restore_begin(&rs, dir, 1, true, 0);
	if (how == CUT_UNPOISONED)
		test_uffdd_unwrap();
	int sock = lazy_pages_connect(&rs.lp);
	ck_assert_int_eq(read(rs.ctl[0], &pid, sizeof(pid)), sizeof(pid));
	int fd = recv_fd(rs.ctl[0]);
	ck_assert_int_ge(fd, 0);
	send_task(sock, pid, fd);
	close(fd);
	ck_assert_int_eq(write(rs.ctl[0], "g", 1), 1);
	read_byte(rs.ctl[0], 'r');
	wait_regions(&rs.d);
	snprintf(path, sizeof(path), "%s/pages-1.img", dir);
	ck_assert_int_eq(truncate(path, 0), 0);
	/* It reads its memory: its first page is gone from the file. */
	if (how != CUT_UNTOUCHED)
		ck_assert_int_eq(write(rs.ctl[0], "g", 1), 1);
	send_all(sock, &end, sizeof(end));
	ck_assert_int_eq(lazy_pages_wait(&rs.lp, rs.out, sizeof(rs.out)), 1);
	close(sock);
	ck_assert_msg(strstr(rs.out, "1 tasks restored") &&
			      strstr(rs.out, "0 exited before, 1 failed"),
		      "%s", rs.out);
	if (how == CUT_UNTOUCHED) {
		/* Not killed: it lives, until it reads a page it lost. */
		ck_assert_int_eq(waitpid(rs.tasks[0], &st, WNOHANG), 0);
		ck_assert_int_eq(write(rs.ctl[0], "g", 1), 1);
	}
	if (how == CUT_UNPOISONED && !rs.at_dump_pids)
		ck_assert_int_eq(kill(rs.tasks[0], SIGKILL), 0);
	ck_assert_int_eq(waitpid(rs.tasks[0], &st, 0), rs.tasks[0]);
	int sig = how == CUT_UNPOISONED ? SIGKILL : SIGBUS;
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == sig, "task status %#x", st);
	close(rs.ctl[0]);
	test_daemon_stop(&rs.d);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(criu_unreadable_pages_poisoned)
{
	restore_cut(CUT_TOUCHED);
}
END_TEST

START_TEST(criu_unreadable_pages_poisoned_untouched)
{
	restore_cut(CUT_UNTOUCHED);
}
END_TEST

START_TEST(criu_unpoisoned_pages_kill_the_task)
{
	restore_cut(CUT_UNPOISONED);
}
END_TEST

/*
 * A task that exits before its pages are all in ends its own session: the
 * other gets every page (checked after uffdd let go), and uffdd-lazy-pages
 * says which task went, how many of its pages were in when it went (the
 * Goodbye's -ESRCH still carries the session's counters: the page it read),
 * and exits 0.
 */
START_TEST(criu_task_gone_before_the_end)
{
	struct restore rs;
	char want[128];

	restore_start(&rs, "fixture-fork", 2, 0);
	int gone = rs.pids[1];
	ck_assert_int_eq(restore_run(&rs, LAST_EXITS_BEFORE_END, false), 0);
	/* Gone before the end: what was in then is what was in at its end
	 * (the page it read, and under valgrind what its leak check read). */
	struct placed p = placed_before_end(&rs, gone);
	ck_assert_uint_ge(p.populated, 1);
	ck_assert_uint_lt(p.populated, p.total);
	snprintf(want, sizeof(want),
		 "task %d exited before its pages were all in (%lu of its %lu pages placed)", gone,
		 p.populated, p.total);
	ck_assert_msg(strstr(rs.out, want), "want '%s' in: %s", want, rs.out);
	ck_assert_msg(strstr(rs.out, "2 tasks restored"), "%s", rs.out);
	ck_assert_msg(strstr(rs.out, "; 1 exited before, 0 failed"), "%s", rs.out);
	snprintf(want, sizeof(want), " %lu pages pushed", lazy_page_count(rs.dump, rs.pids[0]));
	ck_assert_msg(strstr(rs.out, want), "want '%s' in: %s", want, rs.out);
	restore_finish(&rs);
}
END_TEST

/* What uffdd-lazy-pages says of the collapse of task pid: nothing when the
 * task is not at that pid (no process of it collapsed). */
static void assert_collapsed(const struct restore *rs, int pid, int huge, int refused)
{
	char want[160];

	if (!rs->at_dump_pids) {
		ck_assert_msg(!strstr(rs->out, "runs collapsed"), "%s", rs->out);
		return;
	}
	snprintf(want, sizeof(want),
		 "task %d: %d of 2 2 MiB runs collapsed into huge pages, %d refused", pid, huge,
		 refused);
	ck_assert_msg(strstr(rs->out, want), "want '%s' in: %s", want, rs->out);
}

/*
 * Once a task's pages are all in, uffdd-lazy-pages collapses the aligned
 * 2 MiB runs of its lazy mappings (process_madvise(MADV_COLLAPSE)): A's two
 * when the task made A eligible again (the task then finds A huge pages and
 * every byte as before); both refused while A is MADV_NOHUGEPAGE as
 * pin_image_map_region() left it.  The task sits at its dumped pid, as CRIU
 * places it; when that pid is taken here, at another, and then
 * uffdd-lazy-pages must find that the pid is not the task's and leave it be.
 */
START_TEST(criu_collapse_after_restore)
{
	struct restore rs;

	restore_begin(&rs, "fixture", 1, true, 0);
	rs.verify = rs.at_dump_pids ? 'h' : 'g';
	ck_assert_int_eq(restore_run(&rs, VERIFY_BEFORE_END, false), 0);
	assert_collapsed(&rs, rs.pids[0], 2, 0);
	restore_finish(&rs);

	restore_begin(&rs, "fixture", 1, true, 0);
	ck_assert_int_eq(restore_run(&rs, VERIFY_BEFORE_END, false), 0);
	assert_collapsed(&rs, rs.pids[0], 0, 2);
	restore_finish(&rs);
}
END_TEST

/* The restore of the fixture-fork dump from the page server there, served
 * 5 pages at most per GET: each lazy page of both tasks asked for once,
 * every byte right, placed by faults. */
static void restore_from_page_server(bool remote)
{
	struct restore rs;
	struct fake_ps ps;
	char dump[600], why[300];

	snprintf(dump, sizeof(dump), "%s/fixture-fork", images);
	fake_ps_start(&ps, dump, 5);
	restore_start(&rs, "fixture-fork", 2, ps.port);
	ck_assert_int_eq(restore_run(&rs, VERIFY_BEFORE_END, true), 0);
	long served = fake_ps_end(&ps, why, sizeof(why));
	ck_assert_msg(served >= 0, "the page server: %s", why);
	ck_assert_int_eq(served, lazy_page_count(rs.dump, rs.pids[0]) +
					 lazy_page_count(rs.dump, rs.pids[1]));
	assert_placed_by_faults(&rs, remote);
	restore_finish(&rs);
}

/*
 * The lazy pages from a page server (fake-page-server.c), one connection
 * for the tree: both tasks' sessions hand over its socket and uffdd asks for
 * their pages over it as they fault, each GET with its task's pid; the
 * connection closed with PS_IOV_CLOSE once all are in.  The images' own
 * pages files are not read for them.
 */
START_TEST(criu_remote_pages_from_a_page_server)
{
	restore_from_page_server(true);
}
END_TEST

/* With --fetch-all, every lazy page fetched first into memfds (what
 * survives a uffdd restart), then served as files. */
START_TEST(criu_remote_pages_fetched_all)
{
	ps_extra = "--fetch-all";
	restore_from_page_server(false);
}
END_TEST

/* process_madvise() on another process: CAP_SYS_NICE (mm/madvise.c). */
static const char *thp_and_nice(void)
{
	return geteuid() == 0 ? test_thp_skip_reason() : "process_madvise needs CAP_SYS_NICE";
}

/* The index of the image's region at addr. */
static size_t region_index(const struct pin_image *img, uint64_t addr)
{
	for (size_t i = 0; i < pin_image_nr_regions(img); i++)
		if (pin_image_region(img, i)->addr == addr)
			return i;
	ck_abort_msg("no region at %#llx in the image", (unsigned long long)addr);
	return 0;
}

/*
 * pin_client_add_image_region() hands a run of segments to uffdd as one
 * region: the fixture's region A (five pagemap entries, their pages one
 * after the other in pages-1.img) is one region of 4 MiB; region B (data and
 * zero pages in turn: 128 entries of one page) stays 256 regions.  Every
 * byte the faults bring in is the dump's.
 */
START_TEST(criu_runs_of_segments_one_region_each)
{
	struct pin_uffd_opts uo = { .sz = sizeof(uo), .flags = PIN_UFFD_CLOEXEC };
	struct pin_client_opts co = { .sz = sizeof(co) };
	struct pin_client_region_info *ri;
	struct test_daemon d;
	struct pin_image *img;
	struct pin_client *c;
	struct pin_uffd *u;
	char dump[600];
	size_t n;

	snprintf(dump, sizeof(dump), "%s/fixture", images);
	ck_assert_int_eq(pin_image_open_criu(dump, 25997, &img), 0);
	size_t a = region_index(img, REGION_A), b = region_index(img, REGION_B);
	ck_assert_uint_eq(pin_image_region(img, a)->nr_segments, 5);
	ck_assert_uint_eq(pin_image_region(img, b)->nr_segments, 256);
	test_daemon_start(&d, NULL);
	co.socket = d.sock;
	ck_assert_int_eq(pin_uffd_new(&uo, &u), 0);
	ck_assert_int_eq(pin_image_map_region(img, a, u), 0);
	ck_assert_int_eq(pin_image_map_region(img, b, u), 0);
	ck_assert_int_eq(pin_client_connect(&co, &c), 0);
	ck_assert_int_eq(pin_client_handover(c, u), 0);
	ck_assert_int_eq(pin_client_add_image_region(c, img, a, PIN_CLIENT_REGION_NO_PUSH), 1);
	ck_assert_int_eq(pin_client_add_image_region(c, img, b, PIN_CLIENT_REGION_NO_PUSH), 256);
	ck_assert_int_eq(pin_client_list_regions(c, pin_client_session(c), &ri, &n), 0);
	ck_assert_uint_eq(n, 257);
	ck_assert_uint_eq(ri[0].addr, REGION_A);
	ck_assert_uint_eq(ri[0].len, 4ull << 20);
	ck_assert_uint_eq(ri[0].source, 1);
	for (size_t k = 0; k < 256; k++) {
		ck_assert_uint_eq(ri[1 + k].addr, REGION_B + k * page);
		ck_assert_uint_eq(ri[1 + k].len, page);
		ck_assert_uint_eq(ri[1 + k].source, k % 2 == 0);
	}
	free(ri);
	for (size_t i = 0; i < 2; i++) {
		const struct pin_image_region *g = pin_image_region(img, i ? b : a);
		uint8_t *want = malloc(g->len);
		ck_assert_ptr_nonnull(want);
		ck_assert_int_eq(pin_image_read(img, g->addr, want, g->len), 0);
		ck_assert_int_eq(memcmp((void *)(uintptr_t)g->addr, want, g->len), 0);
		free(want);
		ck_assert_int_eq(munmap((void *)(uintptr_t)g->addr, g->len), 0);
	}
	pin_client_free(c);
	pin_uffd_free(u);
	pin_image_free(img);
	test_daemon_stop(&d);
}
END_TEST

START_TEST(criu_restore_side_gone_fails)
{
	struct test_daemon d;
	struct lazy_pages lp;
	char dump[600], out[512];
	int32_t pid = 25997;

	snprintf(dump, sizeof(dump), "%s/fixture", images);
	test_daemon_start(&d, NULL);
	lazy_pages_start(&lp, &d, dump, 0);
	int sock = lazy_pages_connect(&lp);
	/* A pid and then no descriptor: the restore side died. */
	send_all(sock, &pid, sizeof(pid));
	close(sock);
	ck_assert_int_eq(lazy_pages_wait(&lp, out, sizeof(out)), 1);
	test_daemon_stop(&d);
}
END_TEST

/* ---- CRIU pre-dump chains (issue 17) ---- */

#define CHAIN_DUMPS 3

/* The fixture split into a chain of CHAIN_DUMPS in a new directory *top,
 * its newest dump's path in dump. */
static void make_chain(char *top, size_t toplen, char *dump, size_t dumplen)
{
	struct criu_split st;
	char fixture[600];

	snprintf(top, toplen, "/tmp/uffdd-chain-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(top));
	snprintf(fixture, sizeof(fixture), "%s/fixture", images);
	ck_assert_int_eq(criu_split(fixture, 25997, top, CHAIN_DUMPS, &st), 0);
	snprintf(dump, dumplen, "%s/0", top);
}

static void remove_chain(const char *top)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
	ck_assert_int_eq(system(cmd), 0);
}

/* Regions one per run of one pages file: "N regions handed to uffdd". */
static void assert_regions_of_sources(const struct restore *rs)
{
	struct pin_image *img;
	unsigned int sources[CHAIN_DUMPS] = { 0 };

	ck_assert_int_eq(pin_image_open_criu(rs->dump, rs->pids[0], &img), 0);
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);

		for (size_t k = 0; k < g->nr_segments; k++)
			if (g->segments[k].flags & PIN_IMAGE_SEG_DATA)
				sources[g->segments[k].source]++;
	}
	for (int k = 0; k < CHAIN_DUMPS; k++)
		ck_assert_uint_gt(sources[k], 0);
	pin_image_free(img);
}

/* Every byte by faults, each page from the newest dump that holds it: the
 * older copies are stale (criu-split.c), and check_fixture() knows the
 * task's bytes. */
START_TEST(criu_chain_faults_serve_every_byte)
{
	struct restore rs;
	char top[64], dump[128];

	make_chain(top, sizeof(top), dump, sizeof(dump));
	restore_start(&rs, dump, 1, 0);
	assert_regions_of_sources(&rs);
	ck_assert_int_eq(restore_run(&rs, VERIFY_BEFORE_END, false), 0);
	assert_placed_by_faults(&rs, false);
	restore_finish(&rs);
	remove_chain(top);
}
END_TEST

/* Nothing touched before the end: the push places every lazy page from
 * the three pages files. */
START_TEST(criu_chain_push_completes_it)
{
	struct restore rs;
	char top[64], dump[128], want[64];

	make_chain(top, sizeof(top), dump, sizeof(dump));
	restore_start(&rs, dump, 1, 0);
	ck_assert_int_eq(restore_run(&rs, VERIFY_AFTER_END, false), 0);
	snprintf(want, sizeof(want), " %lu pages pushed", lazy_page_count(rs.dump, rs.pids[0]));
	ck_assert_msg(strstr(rs.out, want), "want '%s' in: %s", want, rs.out);
	restore_finish(&rs);
	remove_chain(top);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = test_suite_new("restore");
	TCase *tc = tcase_create("criu-lazy-pages");
	const struct test_needs collapse_needs = { .check = thp_and_nice };
	TCase *tcc = test_tcase(s, "criu-collapse", &collapse_needs);

	page = (size_t)sysconf(_SC_PAGESIZE);
	snprintf(images, sizeof(images), "%s", getenv("UFFDD_CRIU_IMAGES"));
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, criu_faults_serve_every_byte);
	tcase_add_test(tc, criu_push_after_restore_completes_it);
	tcase_add_test(tc, criu_two_tasks_and_a_zombie);
	tcase_add_test(tc, criu_restore_side_gone_fails);
	tcase_add_test(tc, criu_remote_pages_from_a_page_server);
	tcase_add_test(tc, criu_remote_pages_fetched_all);
	tcase_add_test(tc, criu_runs_of_segments_one_region_each);
	tcase_add_test(tc, criu_chain_faults_serve_every_byte);
	tcase_add_test(tc, criu_chain_push_completes_it);
	suite_add_tcase(s, tc);
	/* A case of its own: scripts/mutate runs it alone. */
	TEST_ADD_CASE(s, criu_task_gone_before_the_end, 120);
	TEST_ADD_CASE(s, criu_unreadable_pages_poisoned, 120);
	TEST_ADD_CASE(s, criu_unreadable_pages_poisoned_untouched, 120);
	TEST_ADD_CASE(s, criu_unpoisoned_pages_kill_the_task, 120);
	tcase_set_timeout(tcc, 120);
	tcase_add_test(tcc, criu_collapse_after_restore);
	return s;
}

const char *test_skip_reason(void)
{
	static char why[600];
	const char *dir = getenv("UFFDD_CRIU_IMAGES");
	struct stat st;

	if (!dir || stat(dir, &st) < 0) {
		snprintf(why, sizeof(why), "no CRIU images at %s (shared/ beside the checkout)",
			 dir ? dir : "$UFFDD_CRIU_IMAGES");
		return why;
	}
	if (access("/dev/userfaultfd", R_OK | W_OK) < 0 && geteuid() != 0)
		return "userfaultfd needs /dev/userfaultfd access or root";
	return NULL;
}
