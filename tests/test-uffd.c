// SPDX-License-Identifier: MIT
/*
 * Suite uffd: libpin's userfaultfd calls against the real kernel, on
 * anonymous and on shmem (memfd) memory.
 *
 * Valgrind runs one thread at a time, and a thread blocked in a user-mode
 * fault never gives the turn back: its handler, a thread of the same
 * process, would never run.  So here a user-mode fault is always taken by a
 * forked "faulter" that hands its userfaultfd to the test over a socket; the
 * test, a separate process, serves it and asserts.  Threads of the test
 * itself fault through syscalls (pwrite, write, read), which valgrind runs
 * without holding its lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

/* /proc/PID/pagemap bits (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_PRESENT (1ull << 63)
#define PM_SWAP	   (1ull << 62)
#define PM_UFFD_WP (1ull << 57)

/* What a MISSING registration allows on anonymous and shmem memory. */
#define IOCTLS_MISSING                                                                             \
	(PIN_UFFD_IOCTL_WAKE | PIN_UFFD_IOCTL_COPY | PIN_UFFD_IOCTL_ZEROPAGE |                     \
	 PIN_UFFD_IOCTL_MOVE | PIN_UFFD_IOCTL_POISON)

/*
 * A case whose faults all come from user mode opens its userfaultfds with
 * USER_MODE_ONLY, which vm.unprivileged_userfaultfd=0 still allows any user:
 * such a case runs as an ordinary user too.  A case whose faults come from
 * syscalls needs a userfaultfd that takes kernel-mode faults.
 */
#define USER_FAULTS   PIN_UFFD_USER_MODE_ONLY
#define KERNEL_FAULTS 0

/* The features this suite uses; new_granted_features finds them all offered. */
#define FEATURES_USED                                                                              \
	(PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP | PIN_UFFD_FEATURE_EVENT_FORK |                        \
	 PIN_UFFD_FEATURE_EVENT_REMAP | PIN_UFFD_FEATURE_EVENT_REMOVE |                            \
	 PIN_UFFD_FEATURE_MISSING_SHMEM | PIN_UFFD_FEATURE_EVENT_UNMAP |                           \
	 PIN_UFFD_FEATURE_THREAD_ID | PIN_UFFD_FEATURE_MINOR_SHMEM |                               \
	 PIN_UFFD_FEATURE_EXACT_ADDRESS | PIN_UFFD_FEATURE_WP_HUGETLBFS_SHMEM |                    \
	 PIN_UFFD_FEATURE_WP_UNPOPULATED | PIN_UFFD_FEATURE_POISON | PIN_UFFD_FEATURE_MOVE)

static size_t page;

/* ---- memory ------------------------------------------------------------ */

/* Loop tests run once per kind: _i is the kind. */
enum mem_kind { MEM_ANON, MEM_SHMEM };

struct mem {
	unsigned char *p;
	size_t len;
	int fd; /* the memfd behind MEM_SHMEM, else -1 */
};

static struct mem mem_map(enum mem_kind kind, size_t len)
{
	struct mem m = { .len = len, .fd = -1 };

	if (kind == MEM_SHMEM) {
		m.fd = memfd_create("test-uffd", MFD_CLOEXEC);
		ck_assert_int_ge(m.fd, 0);
		ck_assert_int_eq(ftruncate(m.fd, (off_t)len), 0);
	}
	m.p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   kind == MEM_SHMEM ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS, m.fd, 0);
	ck_assert_ptr_ne(m.p, MAP_FAILED);
	return m;
}

static void mem_unmap(struct mem *m)
{
	ck_assert_int_eq(munmap(m->p, m->len), 0);
	if (m->fd >= 0)
		close(m->fd);
}

/* The features a registration on this kind of memory rests on. */
static uint64_t kind_features(enum mem_kind kind)
{
	return kind == MEM_SHMEM
		       ? PIN_UFFD_FEATURE_MISSING_SHMEM | PIN_UFFD_FEATURE_WP_HUGETLBFS_SHMEM
		       : 0;
}

/* Fill buf with the pattern of the addresses [addr, addr + len). */
static void pattern_fill(void *buf, uintptr_t addr, size_t len, uint64_t seed)
{
	uint64_t *w = buf;

	for (size_t i = 0; i < len / sizeof(*w); i++)
		w[i] = test_pattern(addr + i * sizeof(*w), seed);
}

/* A page-sized buffer holding the pattern of the page at addr. */
static unsigned char *pattern_page(const void *addr, uint64_t seed)
{
	unsigned char *buf = malloc(page);

	ck_assert_ptr_nonnull(buf);
	pattern_fill(buf, (uintptr_t)addr, page, seed);
	return buf;
}

/* Offset of the first byte of buf that is not the pattern of addr, or -1. */
static long pattern_diff(const void *buf, uintptr_t addr, size_t len, uint64_t seed)
{
	const uint64_t *w = buf;

	for (size_t i = 0; i < len / sizeof(*w); i++)
		if (w[i] != test_pattern(addr + i * sizeof(*w), seed))
			return (long)(i * sizeof(*w));
	return -1;
}

static long zero_diff(const void *buf, size_t len)
{
	const unsigned char *b = buf;

	for (size_t i = 0; i < len; i++)
		if (b[i])
			return (long)i;
	return -1;
}

static uint64_t pagemap(const void *addr)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &e, sizeof(e), (off_t)((uintptr_t)addr / page * sizeof(e))),
			 sizeof(e));
	close(fd);
	return e;
}

/* ---- userfaultfds ------------------------------------------------------ */

static struct pin_uffd *uffd_new(uint64_t features, unsigned int flags)
{
	struct pin_uffd_opts o = { .sz = sizeof(o),
				   .flags = PIN_UFFD_CLOEXEC | flags,
				   .features = features };
	struct pin_uffd *u = NULL;

	ck_assert_int_eq(pin_uffd_new(&o, &u), 0);
	ck_assert_uint_eq(pin_uffd_features(u), features);
	return u;
}

/* The next event; blocks (the tcase timeout ends a test whose fault never comes). */
static struct pin_uffd_event next_event(struct pin_uffd *u)
{
	struct pin_uffd_event ev;

	ck_assert_int_eq(pin_uffd_read_events(u, &ev, 1), 1);
	return ev;
}

static void assert_pagefault(const struct pin_uffd_event *ev, const void *addr, unsigned int flags)
{
	ck_assert_uint_eq(ev->type, PIN_UFFD_EVENT_PAGEFAULT);
	ck_assert_uint_eq(ev->arg.pagefault.address, (uintptr_t)addr);
	ck_assert_uint_eq(ev->arg.pagefault.flags, flags);
}

/*
 * poll() on a userfaultfd in blocking mode always says POLLERR (a queued
 * fault may be woken before it is read), so poll it non-blocking.
 */
static bool uffd_poll(struct pin_uffd *u, int timeout_ms)
{
	struct pollfd p = { .fd = pin_uffd_fd(u), .events = POLLIN };
	int flags = fcntl(p.fd, F_GETFL);

	ck_assert_int_ge(flags, 0);
	ck_assert_int_eq(fcntl(p.fd, F_SETFL, flags | O_NONBLOCK), 0);
	int r = poll(&p, 1, timeout_ms);
	ck_assert_int_eq(fcntl(p.fd, F_SETFL, flags), 0);
	ck_assert_int_ge(r, 0);
	ck_assert_uint_eq(p.revents & ~POLLIN, 0);
	return r == 1;
}

static bool has_event(struct pin_uffd *u)
{
	return uffd_poll(u, 0);
}

/* The last message of the library's log, for the cases that must explain. */
static char last_log[512];

static void keep_log(enum pin_log_level level, const char *msg, void *userdata)
{
	snprintf(last_log, sizeof(last_log), "%s", msg);
}

/* ---- forked faulters --------------------------------------------------- */

/*
 * A faulter maps nothing itself: the test maps before fork(), so addresses
 * are the same on both sides.  It opens a userfaultfd on its own memory,
 * hands it over, faults, and reports back what it read on the socket.  It
 * cannot use ck_assert: a failed check prints why and exits 3.
 */
struct faulter_args {
	unsigned char *p;
	unsigned char *q; /* a second address, when a case needs one */
	uint64_t features;
};

typedef void (*faulter_fn)(int sock, const struct faulter_args *a);

struct peer {
	pid_t pid;
	int sock;
};

#define CHILD_CHECK(cond)                                                                          \
	do {                                                                                       \
		if (!(cond))                                                                       \
			child_fail(__LINE__, #cond);                                               \
	} while (0)

static void __attribute__((noreturn)) child_fail(int line, const char *what)
{
	fprintf(stderr, "faulter %d, line %d: %s failed (errno: %s)\n", (int)getpid(), line, what,
		strerror(errno));
	_exit(3);
}

static void child_send(int sock, const void *buf, size_t len)
{
	CHILD_CHECK(send(sock, buf, len, MSG_NOSIGNAL) == (ssize_t)len);
}

static struct pin_uffd *child_uffd(uint64_t features, void *addr, size_t len, unsigned int mode)
{
	struct pin_uffd_opts o = { .sz = sizeof(o),
				   .flags = PIN_UFFD_CLOEXEC | USER_FAULTS,
				   .features = features };
	struct pin_uffd *u;

	CHILD_CHECK(pin_uffd_new(&o, &u) == 0);
	CHILD_CHECK(pin_uffd_register(u, addr, len, mode, NULL) == 0);
	return u;
}

/*
 * Send the userfaultfd and close ours: the test then holds the only
 * reference, so if it dies the context goes and no fault here waits forever.
 */
static void child_handover(int sock, struct pin_uffd *u)
{
	int fd = pin_uffd_fd(u);
	char tag = 'u';
	struct iovec iov = { .iov_base = &tag, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	struct msghdr msg = { .msg_iov = &iov,
			      .msg_iovlen = 1,
			      .msg_control = c.buf,
			      .msg_controllen = sizeof(c.buf) };

	memset(&c, 0, sizeof(c));
	struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof(fd));
	CHILD_CHECK(sendmsg(sock, &msg, MSG_NOSIGNAL) == 1);
	pin_uffd_free(u);
}

/*
 * Valgrind's leak check reads all memory at exit: a registered page never
 * touched would fault there with nobody left to serve it.
 */
static void child_unmap(void *p, size_t len)
{
	CHILD_CHECK(munmap(p, len) == 0);
}

/* A userfaultfd over [a->p, a->p + len) of this process, handed over. */
static void child_serve(int sock, const struct faulter_args *a, size_t len, unsigned int mode)
{
	child_handover(sock, child_uffd(a->features, a->p, len, mode));
}

static void peer_start(struct peer *peer, faulter_fn fn, const struct faulter_args *a)
{
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	peer->pid = fork();
	ck_assert_int_ge(peer->pid, 0);
	if (peer->pid == 0) {
		close(sv[0]);
		/* A test that failed and exited must not leave us behind. */
		CHILD_CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0);
		fn(sv[1], a);
		_exit(0);
	}
	close(sv[1]);
	peer->sock = sv[0];
}

static struct pin_uffd *peer_uffd(struct peer *peer, uint64_t features)
{
	char tag;
	struct iovec iov = { .iov_base = &tag, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	struct msghdr msg = { .msg_iov = &iov,
			      .msg_iovlen = 1,
			      .msg_control = c.buf,
			      .msg_controllen = sizeof(c.buf) };
	struct pin_uffd *u;
	int fd;

	ck_assert_int_eq(recvmsg(peer->sock, &msg, MSG_CMSG_CLOEXEC), 1);
	ck_assert_int_eq(tag, 'u');
	struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(h->cmsg_type, SCM_RIGHTS);
	memcpy(&fd, CMSG_DATA(h), sizeof(fd));
	ck_assert_int_eq(pin_uffd_from_fd(fd, features, &u), 0);
	return u;
}

static void peer_recv(struct peer *peer, void *buf, size_t len)
{
	ck_assert_int_eq(recv(peer->sock, buf, len, 0), (ssize_t)len);
}

/* The faulter sends a page after its access: it must be want. */
static void peer_expect_page(struct peer *peer, const void *want)
{
	unsigned char *got = malloc(page);

	ck_assert_ptr_nonnull(got);
	peer_recv(peer, got, page);
	ck_assert_mem_eq(got, want, page);
	free(got);
}

static int peer_wait(struct peer *peer)
{
	int status;

	ck_assert_int_eq(waitpid(peer->pid, &status, 0), peer->pid);
	close(peer->sock);
	return status;
}

static void peer_end(struct peer *peer)
{
	int status = peer_wait(peer);

	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "faulter ended with status %#x", status);
}

/* The faulter exited 0, and left nothing behind to serve. */
static void peer_finish(struct peer *peer, struct pin_uffd *u)
{
	peer_end(peer);
	ck_assert(!has_event(u));
	pin_uffd_free(u);
}

/* Wait until thread tid sleeps in handle_userfault(), the fault's wait. */
static void wait_in_fault(pid_t tid)
{
	char path[64], wchan[64] = "";

	snprintf(path, sizeof(path), "/proc/%d/wchan", (int)tid);
	for (int tries = 0; tries < 10000; tries++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ck_assert_int_ge(fd, 0);
		ssize_t n = read(fd, wchan, sizeof(wchan) - 1);
		close(fd);
		wchan[n > 0 ? n : 0] = '\0';
		if (!strcmp(wchan, "handle_userfault"))
			return;
		usleep(1000);
	}
	ck_abort_msg("thread %d never slept in handle_userfault (wchan '%s')", (int)tid, wchan);
}

/* ---- the API handshake ------------------------------------------------- */

START_TEST(api_bad_version)
{
	struct pin_uffd *u;
	struct uffdio_api api = { .api = 0xbad, .features = 0 };

	ck_assert_int_eq(pin_uffd_open(PIN_UFFD_CLOEXEC | USER_FAULTS, &u), 0);
	ck_assert_int_eq(ioctl(pin_uffd_fd(u), UFFDIO_API, &api), -1);
	ck_assert_int_eq(errno, EINVAL);
	/* A refused handshake tells nothing and leaves the fd unconfigured. */
	ck_assert_uint_eq(api.features, 0);
	ck_assert_uint_eq(api.ioctls, 0);
	ck_assert_int_eq(pin_uffd_api(u, PIN_UFFD_FEATURE_MOVE), 0);
	ck_assert_uint_eq(pin_uffd_features(u), PIN_UFFD_FEATURE_MOVE);
	pin_uffd_free(u);
}
END_TEST

START_TEST(api_unknown_feature)
{
	struct pin_uffd *u;

	ck_assert_int_eq(pin_uffd_open(PIN_UFFD_CLOEXEC | USER_FAULTS, &u), 0);
	ck_assert_int_eq(pin_uffd_api(u, 1ull << 40), -EINVAL);
	ck_assert_int_eq(pin_uffd_api(u, PIN_UFFD_FEATURE_THREAD_ID | (1ull << 63)), -EINVAL);
	ck_assert_uint_eq(pin_uffd_features(u), 0);
	ck_assert_int_eq(pin_uffd_api(u, PIN_UFFD_FEATURE_THREAD_ID), 0);
	ck_assert_uint_eq(pin_uffd_features(u), PIN_UFFD_FEATURE_THREAD_ID);
	pin_uffd_free(u);
}
END_TEST

START_TEST(api_twice)
{
	struct pin_uffd *u;
	struct uffdio_api api = { .api = UFFD_API };

	ck_assert_int_eq(pin_uffd_open(PIN_UFFD_CLOEXEC | USER_FAULTS, &u), 0);
	ck_assert_int_eq(pin_uffd_api(u, PIN_UFFD_FEATURE_EVENT_REMOVE), 0);
	ck_assert_int_eq(pin_uffd_api(u, PIN_UFFD_FEATURE_EVENT_REMOVE), -EINVAL);
	ck_assert_int_eq(ioctl(pin_uffd_fd(u), UFFDIO_API, &api), -1);
	ck_assert_int_eq(errno, EINVAL);
	/* The first handshake stands. */
	ck_assert_uint_eq(pin_uffd_features(u), PIN_UFFD_FEATURE_EVENT_REMOVE);
	pin_uffd_free(u);
}
END_TEST

START_TEST(new_missing_feature)
{
	struct pin_uffd_opts o = { .sz = sizeof(o),
				   .features = PIN_UFFD_FEATURE_MOVE | (1ull << 40) };
	struct pin_uffd *u = (struct pin_uffd *)&o;
	uint64_t avail;

	/* No kernel offers bit 40 (the last is 16, MOVE). */
	ck_assert_int_eq(pin_uffd_probe(&avail, NULL), 0);
	ck_assert_uint_eq(avail & (1ull << 40), 0);
	pin_log_set(keep_log, NULL);
	ck_assert_int_eq(pin_uffd_new(&o, &u), -EOPNOTSUPP);
	pin_log_set(NULL, NULL);
	ck_assert_ptr_eq(u, (struct pin_uffd *)&o);
	ck_assert_str_eq(last_log,
			 "userfaultfd features missing from this kernel: ? (0x10000000000)");
}
END_TEST

START_TEST(new_granted_features)
{
	uint64_t avail, ioctls;
	struct pin_uffd_opts o = {
		.sz = sizeof(o),
		.features = PIN_UFFD_FEATURE_MOVE | PIN_UFFD_FEATURE_POISON,
		.optional = PIN_UFFD_FEATURE_THREAD_ID | (1ull << 40),
	};
	struct pin_uffd *u;

	ck_assert_int_eq(pin_uffd_probe(&avail, &ioctls), 0);
	ck_assert_uint_eq(avail & FEATURES_USED, FEATURES_USED);
	/* Before the handshake only API, REGISTER and UNREGISTER exist. */
	ck_assert_uint_eq(ioctls, (1ull << _UFFDIO_API) | (1ull << _UFFDIO_REGISTER) |
					  (1ull << _UFFDIO_UNREGISTER));
	/* Granted: what was required, plus the optional ones this kernel has. */
	ck_assert_int_eq(pin_uffd_new(&o, &u), 0);
	ck_assert_uint_eq(pin_uffd_features(u), PIN_UFFD_FEATURE_MOVE | PIN_UFFD_FEATURE_POISON |
							PIN_UFFD_FEATURE_THREAD_ID);
	pin_uffd_free(u);
}
END_TEST

static const unsigned int open_flags[] = {
	PIN_UFFD_CLOEXEC,
	PIN_UFFD_SYSCALL | PIN_UFFD_NONBLOCK,
};

/* _i 0: /dev/userfaultfd, 1: the syscall. */
START_TEST(open_paths)
{
	struct pin_uffd *u;
	unsigned int flags = open_flags[_i];

	/* Valgrind 3.19 has no wrapper for userfaultfd(2): it answers ENOSYS. */
	if (RUNNING_ON_VALGRIND && (flags & PIN_UFFD_SYSCALL)) {
		ck_assert_int_eq(pin_uffd_open(flags, &u), -ENOSYS);
		return;
	}
	last_log[0] = '\0';
	pin_log_set(keep_log, NULL);
	ck_assert_int_eq(pin_uffd_open(flags, &u), 0);
	pin_log_set(NULL, NULL);
	/* No fallback happened: a failed /dev/userfaultfd would have said so. */
	ck_assert_str_eq(last_log, "");
	int fd = pin_uffd_fd(u);
	ck_assert_int_eq(!!(fcntl(fd, F_GETFD) & FD_CLOEXEC), !!(flags & PIN_UFFD_CLOEXEC));
	ck_assert_int_eq(!!(fcntl(fd, F_GETFL) & O_NONBLOCK), !!(flags & PIN_UFFD_NONBLOCK));
	char path[64], link[64] = "";
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ck_assert_int_gt(readlink(path, link, sizeof(link) - 1), 0);
	ck_assert_str_eq(link, "anon_inode:[userfaultfd]");
	ck_assert_int_eq(pin_uffd_api(u, PIN_UFFD_FEATURE_EVENT_UNMAP), 0);
	pin_uffd_free(u);
}
END_TEST

START_TEST(opts_rejected)
{
	struct {
		struct pin_uffd_opts o;
		uint64_t newer;
	} big = { .o = { .sz = sizeof(big) }, .newer = 1 };
	struct pin_uffd_opts small = { .sz = 4 };
	struct pin_uffd_opts bad = { .sz = sizeof(bad), .flags = 0x100 };
	struct pin_uffd *u = (struct pin_uffd *)&bad;

	ck_assert_int_eq(pin_uffd_new(&big.o, &u), -E2BIG);
	ck_assert_int_eq(pin_uffd_new(&small, &u), -EINVAL);
	ck_assert_int_eq(pin_uffd_new(&bad, &u), -EINVAL);
	ck_assert_int_eq(pin_uffd_open(0x100, &u), -EINVAL);
	ck_assert_ptr_eq(u, (struct pin_uffd *)&bad);
	/* Zero bytes past what we know are fine: an older field set. */
	big.newer = 0;
	ck_assert_int_eq(pin_uffd_new(&big.o, &u), 0);
	pin_uffd_free(u);
	pin_uffd_free(NULL);
}
END_TEST

START_TEST(api_wp_async)
{
	struct pin_uffd *u;
	struct mem m = mem_map(MEM_ANON, page);

	ck_assert_int_eq(pin_uffd_open(PIN_UFFD_CLOEXEC | USER_FAULTS, &u), 0);
	ck_assert_int_eq(pin_uffd_api(u, PIN_UFFD_FEATURE_WP_ASYNC), 0);
	/* The kernel adds WP_UNPOPULATED, which WP_ASYNC relies on... */
	ck_assert_uint_eq(pin_uffd_features(u),
			  PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_UNPOPULATED);
	/* ...and it is on: an empty page gets a write-protected marker. */
	ck_assert_int_eq(pin_uffd_register(u, m.p, page, PIN_UFFD_REGISTER_WP, NULL), 0);
	ck_assert_int_eq(pin_uffd_writeprotect(u, m.p, page, PIN_UFFD_WP), 0);
	ck_assert_uint_eq(pagemap(m.p) & (PM_PRESENT | PM_UFFD_WP), PM_UFFD_WP);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

static void clobber_errno(enum pin_log_level level, const char *msg, void *userdata)
{
	errno = ENOENT;
}

START_TEST(read_error_kept)
{
	struct pin_uffd *u;
	struct pin_uffd_event ev;

	/* Before the handshake a read is refused; the log may not change why. */
	ck_assert_int_eq(pin_uffd_open(PIN_UFFD_CLOEXEC | USER_FAULTS, &u), 0);
	pin_log_set(clobber_errno, NULL);
	ck_assert_int_eq(pin_uffd_read_events(u, &ev, 1), -EINVAL);
	pin_log_set(NULL, NULL);
	pin_uffd_free(u);
}
END_TEST

/* In a child as uid 65534: what pin_uffd_new() gives with and without USER_MODE_ONLY. */
static void unprivileged_new(int fd)
{
	struct pin_uffd_opts o = { .sz = sizeof(o), .flags = PIN_UFFD_USER_MODE_ONLY };
	struct pin_uffd *u;
	int r[3];

	CHILD_CHECK(setresgid(65534, 65534, 65534) == 0 && setresuid(65534, 65534, 65534) == 0);
	r[0] = pin_uffd_new(&o, &u);
	if (r[0] == 0)
		pin_uffd_free(u);
	o.flags = 0;
	r[1] = pin_uffd_new(&o, &u);
	if (r[1] == 0)
		pin_uffd_free(u);
	r[2] = access("/dev/userfaultfd", R_OK | W_OK) ? -errno : 0;
	CHILD_CHECK(write(fd, r, sizeof(r)) == sizeof(r));
}

START_TEST(new_unprivileged)
{
	char sysctl = '0';
	int pfd[2], r[3], status;

	int fd = open("/proc/sys/vm/unprivileged_userfaultfd", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(read(fd, &sysctl, 1), 1);
	close(fd);
	ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		unprivileged_new(pfd[1]);
		_exit(0);
	}
	ck_assert_int_eq(read(pfd[0], r, sizeof(r)), sizeof(r));
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(status, 0);
	if (RUNNING_ON_VALGRIND) {
		/* No /dev/userfaultfd for uid 65534, and valgrind lacks the syscall. */
		ck_assert_int_eq(r[0], r[2] ? -ENOSYS : 0);
	} else {
		/* The syscall always allows USER_MODE_ONLY. */
		ck_assert_int_eq(r[0], 0);
		/* A full one needs the device, the sysctl, or CAP_SYS_PTRACE. */
		ck_assert_int_eq(r[1], r[2] == 0 || sysctl == '1' ? 0 : -EPERM);
	}
	close(pfd[0]);
	close(pfd[1]);
}
END_TEST

/* ---- register, unregister ---------------------------------------------- */

START_TEST(register_ioctls)
{
	static const struct {
		unsigned int mode;
		uint64_t ioctls;
	} want[] = {
		{ PIN_UFFD_REGISTER_MISSING, IOCTLS_MISSING },
		{ PIN_UFFD_REGISTER_WP, IOCTLS_MISSING | PIN_UFFD_IOCTL_WRITEPROTECT },
		{ PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP,
		  IOCTLS_MISSING | PIN_UFFD_IOCTL_WRITEPROTECT },
		/* shmem only: anonymous memory has no page cache to map from */
		{ PIN_UFFD_REGISTER_MINOR, IOCTLS_MISSING | PIN_UFFD_IOCTL_CONTINUE },
		{ PIN_UFFD_REGISTER_MINOR | PIN_UFFD_REGISTER_WP,
		  IOCTLS_MISSING | PIN_UFFD_IOCTL_CONTINUE | PIN_UFFD_IOCTL_WRITEPROTECT },
	};
	struct pin_uffd *u = uffd_new(kind_features(_i) | PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP |
					      (_i == MEM_SHMEM ? PIN_UFFD_FEATURE_MINOR_SHMEM : 0),
				      USER_FAULTS);
	struct mem m = mem_map(_i, 4 * page);

	for (size_t i = 0; i < PIN_ARRAY_SIZE(want); i++) {
		uint64_t ioctls = 0;
		int r = pin_uffd_register(u, m.p, m.len, want[i].mode, &ioctls);

		if (_i == MEM_ANON && (want[i].mode & PIN_UFFD_REGISTER_MINOR)) {
			ck_assert_int_eq(r, -EINVAL);
			continue;
		}
		ck_assert_msg(r == 0, "mode %#x: %d", want[i].mode, r);
		ck_assert_msg(ioctls == want[i].ioctls, "mode %#x: ioctls %#llx, want %#llx",
			      want[i].mode, (unsigned long long)ioctls,
			      (unsigned long long)want[i].ioctls);
		ck_assert_int_eq(pin_uffd_unregister(u, m.p, m.len), 0);
	}
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(register_minor_anon)
{
	struct pin_uffd *u = uffd_new(PIN_UFFD_FEATURE_MINOR_SHMEM, USER_FAULTS);
	struct mem m = mem_map(MEM_ANON, 2 * page);
	uint64_t ioctls = 0x5a5a;

	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, PIN_UFFD_REGISTER_MINOR, &ioctls),
			 -EINVAL);
	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len,
					   PIN_UFFD_REGISTER_MINOR | PIN_UFFD_REGISTER_MISSING,
					   &ioctls),
			 -EINVAL);
	/* A failed registration reports nothing. */
	ck_assert_uint_eq(ioctls, 0x5a5a);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(register_bad_args)
{
	struct pin_uffd *u = uffd_new(0, USER_FAULTS);
	struct mem m = mem_map(MEM_ANON, 4 * page);

	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, 0, NULL), -EINVAL);
	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, 0x8, NULL), -EINVAL);
	ck_assert_int_eq(pin_uffd_register(NULL, m.p, m.len, PIN_UFFD_REGISTER_MISSING, NULL),
			 -EINVAL);
	ck_assert_int_eq(pin_uffd_register(u, m.p + 1, page, PIN_UFFD_REGISTER_MISSING, NULL),
			 -EINVAL);
	ck_assert_int_eq(pin_uffd_register(u, m.p, page + 1, PIN_UFFD_REGISTER_MISSING, NULL),
			 -EINVAL);
	ck_assert_int_eq(pin_uffd_register(u, m.p, 0, PIN_UFFD_REGISTER_MISSING, NULL), -EINVAL);
	/* Holes are skipped, but there must be a mapping in the range. */
	ck_assert_int_eq(munmap(m.p + page, page), 0);
	ck_assert_int_eq(munmap(m.p + 3 * page, page), 0);
	ck_assert_int_eq(
		pin_uffd_register(u, m.p + 3 * page, page, PIN_UFFD_REGISTER_MISSING, NULL),
		-EINVAL);
	ck_assert_int_eq(pin_uffd_register(u, m.p, 4 * page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_uffd_zeropage(u, m.p + 2 * page, page, 0, NULL), 0);
	ck_assert_int_eq(pin_uffd_unregister(u, m.p, 4 * page), 0);
	ck_assert_int_eq(munmap(m.p, 4 * page), 0);
	pin_uffd_free(u);
}
END_TEST

START_TEST(unregister)
{
	struct pin_uffd *u = uffd_new(kind_features(_i), USER_FAULTS);
	struct mem m = mem_map(_i, 2 * page);
	unsigned char *src = pattern_page(m.p, 1);
	int64_t done = 0;

	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_uffd_unregister(u, m.p, m.len), 0);
	/* Nothing of ours is there any more: the kernel finds no registration. */
	ck_assert_int_eq(pin_uffd_copy(u, m.p, src, page, 0, &done), -ENOENT);
	ck_assert_int_eq(done, -ENOENT);
	ck_assert_int_eq(pin_uffd_zeropage(u, m.p + page, page, 0, &done), -ENOENT);
	ck_assert_int_eq(done, -ENOENT);
	/* And a touch is an ordinary fault again (with no handler it would hang). */
	m.p[page + 7] = 0x77;
	ck_assert_int_eq(m.p[0], 0);
	ck_assert_int_eq(m.p[page + 7], 0x77);
	free(src);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

/* ---- the resolving calls, without a fault ------------------------------ */

START_TEST(copy_then_eexist)
{
	struct pin_uffd *u = uffd_new(kind_features(_i), USER_FAULTS);
	struct mem m = mem_map(_i, 2 * page);
	unsigned char *src = pattern_page(m.p, 1);
	int64_t done = 0;

	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_uffd_copy(u, m.p, src, page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	ck_assert_int_eq(pattern_diff(m.p, (uintptr_t)m.p, page, 1), -1);
	ck_assert_int_eq(pin_uffd_copy(u, m.p, src, page, 0, &done), -EEXIST);
	ck_assert_int_eq(done, -EEXIST);
	ck_assert_int_eq(pattern_diff(m.p, (uintptr_t)m.p, page, 1), -1);
	free(src);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(copy_partial)
{
	struct pin_uffd *u = uffd_new(kind_features(_i), USER_FAULTS);
	struct mem m = mem_map(_i, 4 * page);
	unsigned char *src = malloc(4 * page);
	unsigned char *third = pattern_page(m.p + 2 * page, 2);
	int64_t done = 0;

	ck_assert_ptr_nonnull(src);
	pattern_fill(src, (uintptr_t)m.p, 4 * page, 1);
	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_uffd_copy(u, m.p + 2 * page, third, page, 0, &done), 0);
	/* Pages 0 and 1 go in, page 2 stops it: progress, reported as EAGAIN. */
	ck_assert_int_eq(pin_uffd_copy(u, m.p, src, 4 * page, 0, &done), -EAGAIN);
	ck_assert_int_eq(done, (int64_t)(2 * page));
	/* Continuing where it stopped hits the page that is there. */
	ck_assert_int_eq(pin_uffd_copy(u, m.p + done, src + done, 2 * page, 0, &done), -EEXIST);
	ck_assert_int_eq(done, -EEXIST);
	ck_assert_int_eq(pin_uffd_copy(u, m.p + 3 * page, src + 3 * page, page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	ck_assert_int_eq(pattern_diff(m.p, (uintptr_t)m.p, 2 * page, 1), -1);
	ck_assert_int_eq(pattern_diff(m.p + 2 * page, (uintptr_t)m.p + 2 * page, page, 2), -1);
	ck_assert_int_eq(pattern_diff(m.p + 3 * page, (uintptr_t)m.p + 3 * page, page, 1), -1);
	free(third);
	free(src);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(zeropage)
{
	struct pin_uffd *u = uffd_new(kind_features(_i), USER_FAULTS);
	struct mem m = mem_map(_i, 3 * page);
	int64_t done = 0;

	if (_i == MEM_SHMEM) /* the cache holds data the zero pages must hide */
		ck_assert_int_eq(pwrite(m.fd, "x", 1, (off_t)(2 * page)), 1);
	ck_assert_int_eq(pin_uffd_register(u, m.p, 2 * page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_uffd_zeropage(u, m.p, 2 * page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)(2 * page));
	ck_assert_int_eq(zero_diff(m.p, 2 * page), -1);
	ck_assert_uint_eq(pagemap(m.p) & PM_PRESENT, PM_PRESENT);
	ck_assert_int_eq(pin_uffd_zeropage(u, m.p + page, page, 0, &done), -EEXIST);
	ck_assert_int_eq(done, -EEXIST);
	ck_assert_int_eq(pin_uffd_zeropage(u, m.p, page, PIN_UFFD_WP, &done), -EINVAL);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(copy_mode_wp)
{
	struct pin_uffd *u =
		uffd_new(kind_features(_i) | PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP, USER_FAULTS);
	struct mem m = mem_map(_i, 2 * page);
	unsigned char *src = pattern_page(m.p, 1);
	int64_t done = 0;

	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len,
					   PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP, NULL),
			 0);
	ck_assert_int_eq(pin_uffd_copy(u, m.p, src, page, PIN_UFFD_WP, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	ck_assert_int_eq(pin_uffd_copy(u, m.p + page, src, page, 0, &done), 0);
	ck_assert_uint_eq(pagemap(m.p) & (PM_PRESENT | PM_UFFD_WP), PM_PRESENT | PM_UFFD_WP);
	ck_assert_uint_eq(pagemap(m.p + page) & (PM_PRESENT | PM_UFFD_WP), PM_PRESENT);
	ck_assert_int_eq(pattern_diff(m.p, (uintptr_t)m.p, page, 1), -1);
	free(src);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(writeprotect)
{
	struct pin_uffd *u =
		uffd_new(kind_features(_i) | PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP, USER_FAULTS);
	struct mem m = mem_map(_i, 2 * page);

	memset(m.p, 0x11, m.len);
	/* A MISSING registration has no write protection to change. */
	ck_assert_int_eq(pin_uffd_register(u, m.p, page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_uffd_writeprotect(u, m.p, page, PIN_UFFD_WP), -ENOENT);
	ck_assert_int_eq(pin_uffd_unregister(u, m.p, page), 0);
	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, PIN_UFFD_REGISTER_WP, NULL), 0);
	ck_assert_int_eq(pin_uffd_writeprotect(u, m.p, m.len, PIN_UFFD_WP), 0);
	ck_assert_uint_eq(pagemap(m.p) & (PM_PRESENT | PM_UFFD_WP), PM_PRESENT | PM_UFFD_WP);
	ck_assert_uint_eq(pagemap(m.p + page) & PM_UFFD_WP, PM_UFFD_WP);
	ck_assert_int_eq(pin_uffd_writeprotect(u, m.p + page, page, 0), 0);
	ck_assert_uint_eq(pagemap(m.p + page) & (PM_PRESENT | PM_UFFD_WP), PM_PRESENT);
	ck_assert_uint_eq(pagemap(m.p) & PM_UFFD_WP, PM_UFFD_WP);
	/* Unprotected: a write is an ordinary one (protected, it would hang here). */
	m.p[page + 1] = 0x22;
	ck_assert_int_eq(m.p[page + 1], 0x22);
	ck_assert_int_eq(m.p[1], 0x11);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(wp_unpopulated)
{
	/* _i 0: without the feature an empty pte has nothing to carry the bit. */
	uint64_t features =
		PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP | (_i ? PIN_UFFD_FEATURE_WP_UNPOPULATED : 0);
	struct pin_uffd *u = uffd_new(features, USER_FAULTS);
	struct mem m = mem_map(MEM_ANON, 2 * page);

	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, PIN_UFFD_REGISTER_WP, NULL), 0);
	ck_assert_int_eq(pin_uffd_writeprotect(u, m.p, m.len, PIN_UFFD_WP), 0);
	if (!_i) {
		ck_assert_uint_eq(pagemap(m.p), 0);
	} else {
		/* A marker: not present, swap-like, write-protected. */
		ck_assert_uint_eq(pagemap(m.p) & (PM_PRESENT | PM_SWAP | PM_UFFD_WP),
				  PM_SWAP | PM_UFFD_WP);
		/* A read maps the zero page and keeps the protection. */
		ck_assert_int_eq(m.p[5], 0);
		ck_assert_uint_eq(pagemap(m.p) & (PM_PRESENT | PM_UFFD_WP),
				  PM_PRESENT | PM_UFFD_WP);
	}
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(continue_ioctl)
{
	struct pin_uffd *u =
		uffd_new(PIN_UFFD_FEATURE_MINOR_SHMEM | PIN_UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
				 PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP,
			 USER_FAULTS);
	struct mem m = mem_map(MEM_SHMEM, 2 * page);
	unsigned char *data = pattern_page(m.p, 3);
	int64_t done = 0;

	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len,
					   PIN_UFFD_REGISTER_MINOR | PIN_UFFD_REGISTER_WP, NULL),
			 0);
	/* Nothing in the page cache: CONTINUE has nothing to map. */
	ck_assert_int_eq(pin_uffd_continue(u, m.p, page, 0, &done), -EFAULT);
	ck_assert_int_eq(done, -EFAULT);
	ck_assert_int_eq(pwrite(m.fd, data, page, 0), (ssize_t)page);
	ck_assert_int_eq(pwrite(m.fd, data, page, (off_t)page), (ssize_t)page);
	ck_assert_int_eq(pin_uffd_continue(u, m.p, page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	ck_assert_int_eq(pattern_diff(m.p, (uintptr_t)m.p, page, 3), -1);
	ck_assert_int_eq(pin_uffd_continue(u, m.p, page, 0, &done), -EEXIST);
	ck_assert_int_eq(done, -EEXIST);
	ck_assert_int_eq(pin_uffd_continue(u, m.p + page, page, PIN_UFFD_WP, &done), 0);
	ck_assert_uint_eq(pagemap(m.p + page) & (PM_PRESENT | PM_UFFD_WP), PM_PRESENT | PM_UFFD_WP);
	ck_assert_uint_eq(pagemap(m.p) & (PM_PRESENT | PM_UFFD_WP), PM_PRESENT);
	free(data);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(poison_ioctl)
{
	struct pin_uffd *u = uffd_new(kind_features(_i) | PIN_UFFD_FEATURE_POISON, USER_FAULTS);
	struct mem m = mem_map(_i, 2 * page);
	int64_t done = 0;

	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_uffd_poison(u, m.p, page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	ck_assert_int_eq(pin_uffd_poison(u, m.p, page, 0, &done), -EEXIST);
	ck_assert_int_eq(done, -EEXIST);
	ck_assert_uint_eq(pagemap(m.p) & PM_PRESENT, 0);
	ck_assert_int_eq(pin_uffd_poison(u, m.p, page, PIN_UFFD_WP, &done), -EINVAL);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(move)
{
	struct pin_uffd *u =
		uffd_new(PIN_UFFD_FEATURE_MOVE | PIN_UFFD_FEATURE_MISSING_SHMEM, USER_FAULTS);
	struct mem dst = mem_map(MEM_ANON, 4 * page), src = mem_map(MEM_ANON, 4 * page);
	struct mem shm = mem_map(MEM_SHMEM, page);
	int64_t done = 0;

	/* Source pages 0 and 1 hold data, 2 and 3 were never touched. */
	pattern_fill(src.p, (uintptr_t)src.p, 2 * page, 4);
	ck_assert_int_eq(pin_uffd_register(u, dst.p, dst.len, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_uffd_move(u, dst.p, src.p, 2 * page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)(2 * page));
	/* The pages moved, bytes and all; the source is empty now. */
	ck_assert_int_eq(pattern_diff(dst.p, (uintptr_t)src.p, 2 * page, 4), -1);
	ck_assert_uint_eq(pagemap(src.p) & PM_PRESENT, 0);
	ck_assert_uint_eq(pagemap(src.p + page) & PM_PRESENT, 0);
	ck_assert_int_eq(zero_diff(src.p, 2 * page), -1);
	/* Over a hole: an error, unless holes are allowed (then skipped). */
	ck_assert_int_eq(pin_uffd_move(u, dst.p + 2 * page, src.p + 2 * page, page, 0, &done),
			 -ENOENT);
	ck_assert_int_eq(done, -ENOENT);
	ck_assert_int_eq(pin_uffd_move(u, dst.p + 2 * page, src.p + 2 * page, 2 * page,
				       PIN_UFFD_ALLOW_SRC_HOLES, &done),
			 0);
	ck_assert_int_eq(done, (int64_t)(2 * page));
	ck_assert_uint_eq(pagemap(dst.p + 2 * page) & PM_PRESENT, 0);
	/* Into a page that is there. */
	src.p[0] = 1;
	ck_assert_int_eq(pin_uffd_move(u, dst.p, src.p, page, 0, &done), -EEXIST);
	ck_assert_int_eq(done, -EEXIST);
	/* Only anonymous private memory moves. */
	ck_assert_int_eq(pin_uffd_register(u, shm.p, page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pin_uffd_move(u, shm.p, src.p, page, 0, &done), -EINVAL);
	ck_assert_int_eq(done, -EINVAL);
	ck_assert_int_eq(pin_uffd_move(u, dst.p, src.p, page, PIN_UFFD_WP, &done), -EINVAL);
	mem_unmap(&shm);
	mem_unmap(&src);
	mem_unmap(&dst);
	pin_uffd_free(u);
}
END_TEST

/* ---- faults of a forked faulter ---------------------------------------- */

/* Write to page 1 of a write-protected pair of pages. */
static void wp_faulter(int sock, const struct faulter_args *a)
{
	pattern_fill(a->p, (uintptr_t)a->p, 2 * page, 5);
	struct pin_uffd *u = child_uffd(a->features, a->p, 2 * page, PIN_UFFD_REGISTER_WP);
	CHILD_CHECK(pin_uffd_writeprotect(u, a->p, 2 * page, PIN_UFFD_WP) == 0);
	child_handover(sock, u);
	/* Reads are allowed: no event. */
	CHILD_CHECK(pattern_diff(a->p, (uintptr_t)a->p, 2 * page, 5) == -1);
	((volatile unsigned char *)a->p)[page + 100] = 0xff;
	child_send(sock, a->p + page, page);
	child_unmap(a->p, 2 * page);
}

START_TEST(wp_fault)
{
	struct mem m = mem_map(_i, 2 * page);
	struct faulter_args a = {
		.p = m.p,
		.features = kind_features(_i) | PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP,
	};
	unsigned char *want;
	struct peer peer;

	peer_start(&peer, wp_faulter, &a);
	/* Allocated after fork(): the faulter's leak check must not see them. */
	want = pattern_page(m.p + page, 5);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	struct pin_uffd_event ev = next_event(u);
	assert_pagefault(&ev, m.p + page, PIN_UFFD_PF_WP | PIN_UFFD_PF_WRITE);
	ck_assert_uint_eq(ev.arg.pagefault.tid, 0);
	/* Unprotect and wake: the write lands. */
	ck_assert_int_eq(pin_uffd_writeprotect(u, m.p + page, page, 0), 0);
	want[100] = 0xff;
	peer_expect_page(&peer, want);
	peer_finish(&peer, u);
	free(want);
	mem_unmap(&m);
}
END_TEST

/* Read page 1 of a MINOR registration whose page cache holds data. */
static void minor_faulter(int sock, const struct faulter_args *a)
{
	child_serve(sock, a, 2 * page, PIN_UFFD_REGISTER_MINOR);
	CHILD_CHECK(((volatile unsigned char *)a->p)[page + 8] != 0x5a);
	child_send(sock, a->p + page, page);
	child_unmap(a->p, 2 * page);
}

START_TEST(minor_continue)
{
	struct mem m = mem_map(MEM_SHMEM, 2 * page);
	struct faulter_args a = { .p = m.p, .features = PIN_UFFD_FEATURE_MINOR_SHMEM };
	unsigned char *old = pattern_page(m.p + page, 6), *new;
	struct peer peer;
	int64_t done = 0;

	/* Through the fd: the page cache is full, no page table maps it. */
	ck_assert_int_eq(pwrite(m.fd, old, page, (off_t)page), (ssize_t)page);
	free(old);
	peer_start(&peer, minor_faulter, &a);
	new = pattern_page(m.p + page, 7);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	struct pin_uffd_event ev = next_event(u);
	assert_pagefault(&ev, m.p + page, PIN_UFFD_PF_MINOR);
	/* The handler may change the cached page before it maps it. */
	ck_assert_int_eq(pwrite(m.fd, new, page, (off_t)page), (ssize_t)page);
	ck_assert_int_eq(pin_uffd_continue(u, m.p + page, page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	peer_expect_page(&peer, new);
	peer_finish(&peer, u);
	free(new);
	mem_unmap(&m);
}
END_TEST

static void poison_faulter(int sock, const struct faulter_args *a)
{
	/* ASan's SIGBUS handler would turn the death into exit(1). */
	signal(SIGBUS, SIG_DFL);
	child_serve(sock, a, page, PIN_UFFD_REGISTER_MISSING);
	CHILD_CHECK(((volatile unsigned char *)a->p)[16] == 0xde);
}

START_TEST(poison_sigbus)
{
	struct mem m = mem_map(MEM_ANON, page);
	struct faulter_args a = { .p = m.p, .features = PIN_UFFD_FEATURE_POISON };
	struct peer peer;
	int64_t done = 0;

	peer_start(&peer, poison_faulter, &a);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	struct pin_uffd_event ev = next_event(u);
	assert_pagefault(&ev, m.p, 0);
	ck_assert_int_eq(pin_uffd_poison(u, m.p, page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	int status = peer_wait(&peer);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS,
		      "faulter ended with status %#x, not SIGBUS", status);
	pin_uffd_free(u);
	mem_unmap(&m);
}
END_TEST

/* Read page 0, once. */
static void read_faulter(int sock, const struct faulter_args *a)
{
	child_serve(sock, a, 2 * page, PIN_UFFD_REGISTER_MISSING);
	CHILD_CHECK(((volatile unsigned char *)a->p)[0] != 0x5a);
	child_send(sock, a->p, page);
	child_unmap(a->p, 2 * page);
}

START_TEST(copy_dontwake_then_wake)
{
	struct mem m = mem_map(MEM_ANON, 2 * page);
	struct faulter_args a = { .p = m.p };
	unsigned char *src;
	struct peer peer;
	int64_t done = 0;

	peer_start(&peer, read_faulter, &a);
	src = pattern_page(m.p, 8);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	struct pin_uffd_event ev = next_event(u);
	assert_pagefault(&ev, m.p, 0);
	wait_in_fault(peer.pid);
	ck_assert_int_eq(pin_uffd_copy(u, m.p, src, page, PIN_UFFD_DONTWAKE, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	/* The page is in, the faulter still asleep: waking is now our call. */
	wait_in_fault(peer.pid);
	char wchan[64] = "";
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/wchan", (int)peer.pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_gt(read(fd, wchan, sizeof(wchan) - 1), 0);
	close(fd);
	ck_assert_str_eq(wchan, "handle_userfault");
	ck_assert_int_eq(pin_uffd_wake(u, m.p, page), 0);
	peer_expect_page(&peer, src);
	peer_finish(&peer, u);
	free(src);
	mem_unmap(&m);
}
END_TEST

static void *thread_reader(void *arg)
{
	const struct faulter_args *a = arg;
	int sock = (int)(intptr_t)a->q;
	pid_t tid = gettid();

	child_send(sock, &tid, sizeof(tid));
	CHILD_CHECK(((volatile unsigned char *)a->p)[page] != 0x5a);
	child_send(sock, a->p + page, page);
	return NULL;
}

/* A second thread faults; the event names it. */
static void thread_faulter(int sock, const struct faulter_args *a)
{
	struct faulter_args t = *a;
	pthread_t thread;

	t.q = (unsigned char *)(intptr_t)sock;
	child_serve(sock, a, 2 * page, PIN_UFFD_REGISTER_MISSING);
	CHILD_CHECK(pthread_create(&thread, NULL, thread_reader, &t) == 0);
	CHILD_CHECK(pthread_join(thread, NULL) == 0);
	child_unmap(a->p, 2 * page);
}

START_TEST(thread_id)
{
	struct mem m = mem_map(MEM_ANON, 2 * page);
	struct faulter_args a = { .p = m.p, .features = PIN_UFFD_FEATURE_THREAD_ID };
	unsigned char *src;
	struct peer peer;
	pid_t tid;
	int64_t done = 0;

	peer_start(&peer, thread_faulter, &a);
	src = pattern_page(m.p + page, 9);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	peer_recv(&peer, &tid, sizeof(tid));
	ck_assert_int_ne(tid, peer.pid);
	struct pin_uffd_event ev = next_event(u);
	assert_pagefault(&ev, m.p + page, 0);
	ck_assert_uint_eq(ev.arg.pagefault.tid, (uint32_t)tid);
	ck_assert_int_eq(pin_uffd_copy(u, m.p + page, src, page, 0, &done), 0);
	peer_expect_page(&peer, src);
	peer_finish(&peer, u);
	free(src);
	mem_unmap(&m);
}
END_TEST

/* Write one byte at offset 123 of page 1. */
static void write_faulter(int sock, const struct faulter_args *a)
{
	child_serve(sock, a, 2 * page, PIN_UFFD_REGISTER_MISSING);
	((volatile unsigned char *)a->p)[page + 123] = 0xee;
	child_send(sock, a->p + page, page);
	child_unmap(a->p, 2 * page);
}

/* _i 0: the page's address; 1: with EXACT_ADDRESS, the byte's. */
START_TEST(exact_address)
{
	struct mem m = mem_map(MEM_ANON, 2 * page);
	struct faulter_args a = { .p = m.p, .features = _i ? PIN_UFFD_FEATURE_EXACT_ADDRESS : 0 };
	unsigned char *src;
	struct peer peer;
	int64_t done = 0;

	peer_start(&peer, write_faulter, &a);
	src = pattern_page(m.p + page, 10);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	struct pin_uffd_event ev = next_event(u);
	assert_pagefault(&ev, m.p + page + (_i ? 123 : 0), PIN_UFFD_PF_WRITE);
	ck_assert_uint_eq(ev.arg.pagefault.tid, 0);
	ck_assert_int_eq(pin_uffd_copy(u, m.p + page, src, page, 0, &done), 0);
	src[123] = 0xee;
	peer_expect_page(&peer, src);
	peer_finish(&peer, u);
	free(src);
	mem_unmap(&m);
}
END_TEST

/* Fork a child that reads page 1; our fork() waits until the test read the event. */
static void fork_faulter(int sock, const struct faulter_args *a)
{
	int status;

	child_serve(sock, a, 2 * page, PIN_UFFD_REGISTER_MISSING);
	pid_t pid = fork();
	CHILD_CHECK(pid >= 0);
	if (pid == 0) {
		CHILD_CHECK(((volatile unsigned char *)a->p)[page] != 0x5a);
		child_send(sock, a->p + page, page);
		child_unmap(a->p, 2 * page);
		_exit(0);
	}
	CHILD_CHECK(waitpid(pid, &status, 0) == pid);
	CHILD_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	child_unmap(a->p, 2 * page);
}

START_TEST(event_fork)
{
	struct mem m = mem_map(MEM_ANON, 2 * page);
	struct faulter_args a = { .p = m.p, .features = PIN_UFFD_FEATURE_EVENT_FORK };
	unsigned char *src;
	struct pin_uffd *child;
	struct peer peer;
	int64_t done = 0;

	peer_start(&peer, fork_faulter, &a);
	src = pattern_page(m.p + page, 11);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	struct pin_uffd_event ev = next_event(u);
	ck_assert_uint_eq(ev.type, PIN_UFFD_EVENT_FORK);
	ck_assert_int_ge(ev.arg.fork.fd, 0);
	ck_assert_int_ne(ev.arg.fork.fd, pin_uffd_fd(u));
	ck_assert_int_eq(pin_uffd_from_fd(ev.arg.fork.fd, a.features, &child), 0);
	/* The child's fault arrives on the child's userfaultfd, and only there. */
	ev = next_event(child);
	assert_pagefault(&ev, m.p + page, 0);
	ck_assert_int_eq(pin_uffd_copy(child, m.p + page, src, page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	peer_expect_page(&peer, src);
	pin_uffd_free(child);
	peer_finish(&peer, u);
	free(src);
	mem_unmap(&m);
}
END_TEST

/* Move the registered pair of pages onto q, then read page 1 there. */
static void remap_faulter(int sock, const struct faulter_args *a)
{
	child_serve(sock, a, 2 * page, PIN_UFFD_REGISTER_MISSING);
	CHILD_CHECK(mremap(a->p, 2 * page, 2 * page, MREMAP_MAYMOVE | MREMAP_FIXED, a->q) == a->q);
	CHILD_CHECK(a->q[page] != 0x5a);
	child_send(sock, a->q + page, page);
	child_unmap(a->q, 2 * page);
}

START_TEST(event_remap)
{
	struct mem m = mem_map(MEM_ANON, 2 * page);
	unsigned char *q = mmap(NULL, 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct faulter_args a = { .p = m.p, .q = q, .features = PIN_UFFD_FEATURE_EVENT_REMAP };
	unsigned char *src;
	struct peer peer;
	int64_t done = 0;

	ck_assert_ptr_ne(q, MAP_FAILED);
	peer_start(&peer, remap_faulter, &a);
	src = pattern_page(q + page, 12);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	struct pin_uffd_event ev = next_event(u);
	ck_assert_uint_eq(ev.type, PIN_UFFD_EVENT_REMAP);
	ck_assert_uint_eq(ev.arg.remap.from, (uintptr_t)m.p);
	ck_assert_uint_eq(ev.arg.remap.to, (uintptr_t)q);
	ck_assert_uint_eq(ev.arg.remap.len, 2 * page);
	/* The registration moved with the pages. */
	ev = next_event(u);
	assert_pagefault(&ev, q + page, 0);
	ck_assert_int_eq(pin_uffd_copy(u, q + page, src, page, 0, &done), 0);
	peer_expect_page(&peer, src);
	peer_finish(&peer, u);
	free(src);
	ck_assert_int_eq(munmap(q, 2 * page), 0);
	mem_unmap(&m);
}
END_TEST

/* Drop pages 1 and 2 of four, then read page 1 again. */
static void remove_faulter(int sock, const struct faulter_args *a)
{
	pattern_fill(a->p, (uintptr_t)a->p, 4 * page, 13);
	child_serve(sock, a, 4 * page, PIN_UFFD_REGISTER_MISSING);
	int r = madvise(a->p + page, 2 * page, MADV_DONTNEED);
	child_send(sock, &r, sizeof(r));
	CHILD_CHECK(((volatile unsigned char *)a->p)[page] != 0x5a);
	child_send(sock, a->p + page, page);
	child_unmap(a->p, 4 * page);
}

START_TEST(event_remove)
{
	struct mem m = mem_map(_i, 4 * page);
	struct faulter_args a = {
		.p = m.p,
		.features = kind_features(_i) | PIN_UFFD_FEATURE_EVENT_REMOVE,
	};
	unsigned char *want;
	struct peer peer;
	int64_t done = 0;
	int r;

	peer_start(&peer, remove_faulter, &a);
	want = pattern_page(m.p + page, 13);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	struct pin_uffd_event ev = next_event(u);
	ck_assert_uint_eq(ev.type, PIN_UFFD_EVENT_REMOVE);
	ck_assert_uint_eq(ev.arg.remove.start, (uintptr_t)m.p + page);
	ck_assert_uint_eq(ev.arg.remove.end, (uintptr_t)m.p + 3 * page);
	peer_recv(&peer, &r, sizeof(r));
	ck_assert_int_eq(r, 0);
	if (_i == MEM_ANON) {
		/* The anonymous page is gone: it faults again and comes back as zeros. */
		ev = next_event(u);
		assert_pagefault(&ev, m.p + page, 0);
		ck_assert_int_eq(pin_uffd_zeropage(u, m.p + page, page, 0, &done), 0);
		memset(want, 0, page);
	}
	/* For shmem only the mapping went: the page cache maps again, no fault. */
	peer_expect_page(&peer, want);
	peer_finish(&peer, u);
	free(want);
	mem_unmap(&m);
}
END_TEST

/* Drop page 2 while the test wants to copy into page 0. */
static void changing_faulter(int sock, const struct faulter_args *a)
{
	child_serve(sock, a, 4 * page, PIN_UFFD_REGISTER_MISSING);
	int r = madvise(a->p + 2 * page, page, MADV_DONTNEED);
	child_send(sock, &r, sizeof(r));
	CHILD_CHECK(((volatile unsigned char *)a->p)[0] != 0x5a);
	child_send(sock, a->p, page);
	child_unmap(a->p, 4 * page);
}

START_TEST(eagain_while_remove_pending)
{
	struct mem m = mem_map(MEM_ANON, 4 * page);
	struct faulter_args a = { .p = m.p, .features = PIN_UFFD_FEATURE_EVENT_REMOVE };
	unsigned char *src;
	struct peer peer;
	int64_t done = 0;
	int r;

	peer_start(&peer, changing_faulter, &a);
	src = pattern_page(m.p, 14);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	/* The REMOVE is queued: the layout may be changing, nothing goes in. */
	ck_assert(uffd_poll(u, -1));
	ck_assert_int_eq(pin_uffd_copy(u, m.p, src, page, 0, &done), -EAGAIN);
	ck_assert_int_eq(done, -EAGAIN);
	ck_assert_int_eq(pin_uffd_zeropage(u, m.p, page, 0, &done), -EAGAIN);
	ck_assert_int_eq(done, -EAGAIN);
	struct pin_uffd_event ev = next_event(u);
	ck_assert_uint_eq(ev.type, PIN_UFFD_EVENT_REMOVE);
	ck_assert_uint_eq(ev.arg.remove.start, (uintptr_t)m.p + 2 * page);
	ck_assert_uint_eq(ev.arg.remove.end, (uintptr_t)m.p + 3 * page);
	/* Once madvise() returned, the copy goes in. */
	peer_recv(&peer, &r, sizeof(r));
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(pin_uffd_copy(u, m.p, src, page, 0, &done), 0);
	ck_assert_int_eq(done, (int64_t)page);
	peer_expect_page(&peer, src);
	peer_finish(&peer, u);
	free(src);
	mem_unmap(&m);
}
END_TEST

static void unmap_faulter(int sock, const struct faulter_args *a)
{
	child_serve(sock, a, 4 * page, PIN_UFFD_REGISTER_MISSING);
	int r = munmap(a->p + page, 2 * page);
	child_send(sock, &r, sizeof(r));
	/* The rest, with an event of its own. */
	r = munmap(a->p, 4 * page);
	child_send(sock, &r, sizeof(r));
}

START_TEST(event_unmap)
{
	struct mem m = mem_map(MEM_ANON, 4 * page);
	struct faulter_args a = { .p = m.p, .features = PIN_UFFD_FEATURE_EVENT_UNMAP };
	struct peer peer;
	int r;

	peer_start(&peer, unmap_faulter, &a);
	struct pin_uffd *u = peer_uffd(&peer, a.features);
	struct pin_uffd_event ev = next_event(u);
	ck_assert_uint_eq(ev.type, PIN_UFFD_EVENT_UNMAP);
	ck_assert_uint_eq(ev.arg.unmap.start, (uintptr_t)m.p + page);
	ck_assert_uint_eq(ev.arg.unmap.end, (uintptr_t)m.p + 3 * page);
	peer_recv(&peer, &r, sizeof(r));
	ck_assert_int_eq(r, 0);
	/* One event for the whole range asked, holes included. */
	ev = next_event(u);
	ck_assert_uint_eq(ev.type, PIN_UFFD_EVENT_UNMAP);
	ck_assert_uint_eq(ev.arg.unmap.start, (uintptr_t)m.p);
	ck_assert_uint_eq(ev.arg.unmap.end, (uintptr_t)m.p + 4 * page);
	peer_recv(&peer, &r, sizeof(r));
	ck_assert_int_eq(r, 0);
	peer_finish(&peer, u);
	mem_unmap(&m);
}
END_TEST

/* ---- threads of the test, faulting inside syscalls --------------------- */

struct access {
	int fd;
	void *buf;
	size_t len;
	bool write; /* write(fd, buf): the kernel reads buf; else read() into it */
	ssize_t ret;
	int err;
	pid_t tid;
};

static void *access_main(void *arg)
{
	struct access *a = arg;

	a->tid = gettid();
	a->ret = a->write ? write(a->fd, a->buf, a->len) : read(a->fd, a->buf, a->len);
	a->err = a->ret < 0 ? errno : 0;
	return NULL;
}

/* _i 1: with USER_MODE_ONLY a kernel-side access fails; 0: it is a fault. */
START_TEST(user_mode_only)
{
	static const char msg[] = "userfaultfd";
	struct pin_uffd *u = uffd_new(0, _i ? PIN_UFFD_USER_MODE_ONLY : KERNEL_FAULTS);
	struct mem m = mem_map(MEM_ANON, page);
	int pfd[2];
	int64_t done = 0;

	ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
	ck_assert_int_eq(write(pfd[1], msg, sizeof(msg)), sizeof(msg));
	ck_assert_int_eq(pin_uffd_register(u, m.p, page, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	if (_i) {
		ck_assert_int_eq(read(pfd[0], m.p, sizeof(msg)), -1);
		ck_assert_int_eq(errno, EFAULT);
		ck_assert(!has_event(u));
	} else {
		struct access a = { .fd = pfd[0], .buf = m.p, .len = sizeof(msg) };
		pthread_t thread;

		ck_assert_int_eq(pthread_create(&thread, NULL, access_main, &a), 0);
		struct pin_uffd_event ev = next_event(u);
		assert_pagefault(&ev, m.p, PIN_UFFD_PF_WRITE);
		ck_assert_int_eq(pin_uffd_zeropage(u, m.p, page, 0, &done), 0);
		ck_assert_int_eq(pthread_join(thread, NULL), 0);
		ck_assert_int_eq(a.ret, sizeof(msg));
		ck_assert_mem_eq(m.p, msg, sizeof(msg));
		ck_assert_int_eq(zero_diff(m.p + sizeof(msg), page - sizeof(msg)), -1);
	}
	close(pfd[0]);
	close(pfd[1]);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

/* Wait until n faults are queued, not yet read (fdinfo's "pending"). */
static void wait_pending(struct pin_uffd *u, unsigned long n)
{
	char path[64], buf[512];
	unsigned long pending = 0;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pin_uffd_fd(u));
	for (int tries = 0; tries < 10000; tries++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ck_assert_int_ge(fd, 0);
		ssize_t len = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		ck_assert_int_gt(len, 0);
		buf[len] = '\0';
		const char *s = strstr(buf, "pending:\t");
		ck_assert_ptr_nonnull(s);
		pending = strtoul(s + strlen("pending:\t"), NULL, 10);
		if (pending == n)
			return;
		usleep(1000);
	}
	ck_abort_msg("%lu faults pending, waited for %lu", pending, n);
}

#define BATCH 4

START_TEST(read_events_batch)
{
	struct pin_uffd *u = uffd_new(PIN_UFFD_FEATURE_THREAD_ID, KERNEL_FAULTS);
	struct mem m = mem_map(MEM_ANON, BATCH * page);
	unsigned char *src = malloc(m.len);
	struct access a[BATCH];
	pthread_t threads[BATCH];
	struct pin_uffd_event ev[16];
	int pipes[BATCH][2];
	int64_t done = 0;

	ck_assert_ptr_nonnull(src);
	pattern_fill(src, (uintptr_t)m.p, m.len, 15);
	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	/* One pipe each: a pipe's lock would let only one writer fault at a time. */
	for (int i = 0; i < BATCH; i++) {
		ck_assert_int_eq(pipe2(pipes[i], O_CLOEXEC), 0);
		a[i] = (struct access){
			.fd = pipes[i][1], .buf = m.p + i * page + 8 * i, .len = 8, .write = true
		};
		ck_assert_int_eq(pthread_create(&threads[i], NULL, access_main, &a[i]), 0);
	}
	wait_pending(u, BATCH);
	ck_assert_int_eq(pin_uffd_read_events(u, ev, PIN_ARRAY_SIZE(ev)), BATCH);
	/* Each thread's fault once, whatever the order. */
	unsigned int seen = 0;
	for (int i = 0; i < BATCH; i++) {
		ck_assert_uint_eq(ev[i].type, PIN_UFFD_EVENT_PAGEFAULT);
		ck_assert_uint_eq(ev[i].arg.pagefault.flags, 0);
		uintptr_t off = ev[i].arg.pagefault.address - (uintptr_t)m.p;
		ck_assert_uint_eq(off % page, 0);
		ck_assert_uint_lt(off / page, BATCH);
		seen |= 1u << (off / page);
		/* Runs of pages go in without waking; one WAKE at the end (as uffdd does). */
		ck_assert_int_eq(
			pin_uffd_copy(u, m.p + off, src + off, page, PIN_UFFD_DONTWAKE, &done), 0);
		ck_assert_int_eq(done, (int64_t)page);
	}
	ck_assert_uint_eq(seen, (1u << BATCH) - 1);
	ck_assert_int_eq(pin_uffd_wake(u, m.p, m.len), 0);
	for (int i = 0; i < BATCH; i++) {
		uint64_t word;

		ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
		ck_assert_int_eq(a[i].ret, 8);
		ck_assert_int_eq(read(pipes[i][0], &word, sizeof(word)), sizeof(word));
		ck_assert_uint_eq(word, test_pattern((uintptr_t)a[i].buf, 15));
		/* The tid of the thread that faulted on page i. */
		for (int e = 0; e < BATCH; e++)
			if (ev[e].arg.pagefault.address == (uintptr_t)m.p + i * page)
				ck_assert_uint_eq(ev[e].arg.pagefault.tid, (uint32_t)a[i].tid);
		close(pipes[i][0]);
		close(pipes[i][1]);
	}
	ck_assert(!has_event(u));
	free(src);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

START_TEST(read_events_nonblock)
{
	struct pin_uffd *u = uffd_new(0, USER_FAULTS | PIN_UFFD_NONBLOCK);
	struct pin_uffd_event ev[4];

	ck_assert_int_eq(pin_uffd_read_events(u, ev, 4), -EAGAIN);
	ck_assert_int_eq(pin_uffd_read_events(u, NULL, 4), -EINVAL);
	ck_assert_int_eq(pin_uffd_read_events(u, ev, 0), -EINVAL);
	ck_assert_int_eq(pin_uffd_read_events(NULL, ev, 4), -EINVAL);
	pin_uffd_free(u);
}
END_TEST

/*
 * The handler thread: pages in [hole, hole + holes) get ZEROPAGE, the others
 * their pattern by COPY.  It stops when every page came in; failures are
 * recorded (ck_assert belongs to the test's thread).
 */
struct handler {
	struct pin_uffd *u;
	unsigned char *base;
	size_t pages, hole, holes;
	const unsigned char *src;
	unsigned int copied, zeroed, faults, repeats, bad_events;
	uint32_t tid; /* of the last fault */
	int err;
};

static void *handler_main(void *arg)
{
	struct handler *h = arg;
	uint64_t seen = 0;

	while (h->copied + h->zeroed < h->pages && !h->err) {
		struct pin_uffd_event ev[8];
		int n = pin_uffd_read_events(h->u, ev, PIN_ARRAY_SIZE(ev));

		if (n < 0) {
			h->err = n;
			break;
		}
		for (int i = 0; i < n; i++) {
			uintptr_t off = ev[i].arg.pagefault.address - (uintptr_t)h->base;
			size_t pg = off / page;
			int64_t done;
			int r;

			if (ev[i].type != PIN_UFFD_EVENT_PAGEFAULT || off % page ||
			    pg >= h->pages || ev[i].arg.pagefault.flags) {
				h->bad_events++;
				continue;
			}
			h->faults++;
			h->tid = ev[i].arg.pagefault.tid;
			if (seen & (1ull << pg))
				h->repeats++;
			seen |= 1ull << pg;
			if (pg >= h->hole && pg < h->hole + h->holes) {
				r = pin_uffd_zeropage(h->u, h->base + off, page, 0, &done);
				h->zeroed += r == 0;
			} else {
				r = pin_uffd_copy(h->u, h->base + off, h->src + off, page, 0,
						  &done);
				h->copied += r == 0;
			}
			if (r < 0)
				h->err = r;
		}
	}
	return NULL;
}

START_TEST(threaded_handler)
{
	const size_t pages = 16;
	struct pin_uffd *u = uffd_new(PIN_UFFD_FEATURE_THREAD_ID, KERNEL_FAULTS);
	struct mem m = mem_map(MEM_ANON, pages * page);
	unsigned char *src = malloc(m.len), *out = malloc(m.len);
	struct handler h = {
		.u = u, .base = m.p, .pages = pages, .hole = 5, .holes = 4, .src = src
	};
	pthread_t thread;

	ck_assert_ptr_nonnull(src);
	ck_assert_ptr_nonnull(out);
	pattern_fill(src, (uintptr_t)m.p, m.len, 16);
	int fd = memfd_create("test-uffd-out", MFD_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pin_uffd_register(u, m.p, m.len, PIN_UFFD_REGISTER_MISSING, NULL), 0);
	ck_assert_int_eq(pthread_create(&thread, NULL, handler_main, &h), 0);
	/* The kernel reads the range for us: each page faults in this thread. */
	ck_assert_int_eq(pwrite(fd, m.p, m.len, 0), (ssize_t)m.len);
	ck_assert_int_eq(pthread_join(thread, NULL), 0);
	ck_assert_int_eq(h.err, 0);
	ck_assert_uint_eq(h.bad_events, 0);
	ck_assert_uint_eq(h.faults, pages);
	ck_assert_uint_eq(h.repeats, 0);
	ck_assert_uint_eq(h.copied, pages - h.holes);
	ck_assert_uint_eq(h.zeroed, h.holes);
	ck_assert_uint_eq(h.tid, (uint32_t)gettid());
	/* What the kernel read, and what the range holds now. */
	ck_assert_int_eq(pread(fd, out, m.len, 0), (ssize_t)m.len);
	memset(src + h.hole * page, 0, h.holes * page);
	ck_assert_mem_eq(out, src, m.len);
	ck_assert_mem_eq(m.p, src, m.len);
	close(fd);
	free(out);
	free(src);
	mem_unmap(&m);
	pin_uffd_free(u);
}
END_TEST

/* ---- the suite --------------------------------------------------------- */

/* What the shmem variants of the loop cases add to their tcase's needs. */
#define SHMEM_FEATURES (PIN_UFFD_FEATURE_MISSING_SHMEM | PIN_UFFD_FEATURE_WP_HUGETLBFS_SHMEM)

/* Each tcase needs what its cases use, so a case runs wherever it can. */
static const struct test_needs needs_api = {
	.what = TEST_NEED_UFFD_USER,
	.uffd_features = PIN_UFFD_FEATURE_MOVE | PIN_UFFD_FEATURE_THREAD_ID |
			 PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_WP_ASYNC |
			 PIN_UFFD_FEATURE_WP_UNPOPULATED,
};
/* pin_uffd_probe() and pin_uffd_new() without USER_MODE_ONLY. */
static const struct test_needs needs_api_full = {
	.what = TEST_NEED_UFFD,
	.uffd_features = FEATURES_USED,
};
/* new_unprivileged switches to uid 65534; open_paths opens a full userfaultfd
 * through /dev/userfaultfd (mode 0600, root's) and through the syscall. */
static const struct test_needs needs_privileged = {
	.what = TEST_NEED_ROOT | TEST_NEED_PTRACE | TEST_NEED_UFFD,
};
static const struct test_needs needs_register = {
	.what = TEST_NEED_UFFD_USER,
	.uffd_features =
		SHMEM_FEATURES | PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP | PIN_UFFD_FEATURE_MINOR_SHMEM,
};
static const struct test_needs needs_resolve = {
	.what = TEST_NEED_UFFD_USER,
	.uffd_features = SHMEM_FEATURES | PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			 PIN_UFFD_FEATURE_WP_UNPOPULATED | PIN_UFFD_FEATURE_MINOR_SHMEM,
};
static const struct test_needs needs_poison = {
	.what = TEST_NEED_UFFD_USER,
	.uffd_features = SHMEM_FEATURES | PIN_UFFD_FEATURE_POISON,
};
static const struct test_needs needs_move = {
	.what = TEST_NEED_UFFD_USER,
	.uffd_features = PIN_UFFD_FEATURE_MOVE | PIN_UFFD_FEATURE_MISSING_SHMEM,
};
static const struct test_needs needs_faults = {
	.what = TEST_NEED_UFFD_USER,
	.uffd_features = SHMEM_FEATURES | PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			 PIN_UFFD_FEATURE_MINOR_SHMEM | PIN_UFFD_FEATURE_THREAD_ID |
			 PIN_UFFD_FEATURE_EXACT_ADDRESS,
};
static const struct test_needs needs_events = {
	.what = TEST_NEED_UFFD_USER,
	.uffd_features = SHMEM_FEATURES | PIN_UFFD_FEATURE_EVENT_REMAP |
			 PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP,
};
/* The kernel enables EVENT_FORK only for CAP_SYS_PTRACE. */
static const struct test_needs needs_fork = {
	.what = TEST_NEED_UFFD_USER | TEST_NEED_PTRACE,
	.uffd_features = PIN_UFFD_FEATURE_EVENT_FORK,
};
static const struct test_needs needs_kernel_faults = {
	.what = TEST_NEED_UFFD,
	.uffd_features = PIN_UFFD_FEATURE_THREAD_ID,
};

static TCase *tcase(Suite *s, const char *name, const struct test_needs *needs)
{
	TCase *tc = test_tcase(s, name, needs);

	/* A lost wake-up must fail the case, not hang the run. */
	tcase_set_timeout(tc, 60);
	return tc;
}

Suite *test_suite(void)
{
	Suite *s = test_suite_new("uffd");
	TCase *tc;

	page = (size_t)sysconf(_SC_PAGESIZE);

	tc = tcase(s, "api", &needs_api);
	tcase_add_test(tc, api_bad_version);
	tcase_add_test(tc, api_unknown_feature);
	tcase_add_test(tc, api_twice);
	tcase_add_test(tc, api_wp_async);
	tcase_add_test(tc, read_error_kept);
	tcase_add_test(tc, read_events_nonblock);

	tc = tcase(s, "api-full", &needs_api_full);
	tcase_add_test(tc, new_missing_feature);
	tcase_add_test(tc, new_granted_features);
	tcase_add_test(tc, opts_rejected);

	tc = tcase(s, "privileged", &needs_privileged);
	tcase_add_loop_test(tc, open_paths, 0, PIN_ARRAY_SIZE(open_flags));
	tcase_add_test(tc, new_unprivileged);

	tc = tcase(s, "register", &needs_register);
	tcase_add_loop_test(tc, register_ioctls, MEM_ANON, MEM_SHMEM + 1);
	tcase_add_test(tc, register_minor_anon);
	tcase_add_test(tc, register_bad_args);
	tcase_add_loop_test(tc, unregister, MEM_ANON, MEM_SHMEM + 1);

	tc = tcase(s, "resolve", &needs_resolve);
	tcase_add_loop_test(tc, copy_then_eexist, MEM_ANON, MEM_SHMEM + 1);
	tcase_add_loop_test(tc, copy_partial, MEM_ANON, MEM_SHMEM + 1);
	tcase_add_loop_test(tc, zeropage, MEM_ANON, MEM_SHMEM + 1);
	tcase_add_loop_test(tc, copy_mode_wp, MEM_ANON, MEM_SHMEM + 1);
	tcase_add_loop_test(tc, writeprotect, MEM_ANON, MEM_SHMEM + 1);
	tcase_add_loop_test(tc, wp_unpopulated, 0, 2);
	tcase_add_test(tc, continue_ioctl);

	tc = tcase(s, "poison", &needs_poison);
	tcase_add_loop_test(tc, poison_ioctl, MEM_ANON, MEM_SHMEM + 1);
	tcase_add_test(tc, poison_sigbus);

	tc = tcase(s, "move", &needs_move);
	tcase_add_test(tc, move);

	tc = tcase(s, "faults", &needs_faults);
	tcase_add_loop_test(tc, wp_fault, MEM_ANON, MEM_SHMEM + 1);
	tcase_add_test(tc, minor_continue);
	tcase_add_test(tc, copy_dontwake_then_wake);
	tcase_add_test(tc, thread_id);
	tcase_add_loop_test(tc, exact_address, 0, 2);

	tc = tcase(s, "events", &needs_events);
	tcase_add_test(tc, event_remap);
	tcase_add_loop_test(tc, event_remove, MEM_ANON, MEM_SHMEM + 1);
	tcase_add_test(tc, eagain_while_remove_pending);
	tcase_add_test(tc, event_unmap);

	tc = tcase(s, "fork", &needs_fork);
	tcase_add_test(tc, event_fork);

	tc = tcase(s, "kernel-faults", &needs_kernel_faults);
	tcase_add_loop_test(tc, user_mode_only, 0, 2);
	tcase_add_test(tc, read_events_batch);
	tcase_add_test(tc, threaded_handler);
	return s;
}

/* Nothing the whole area needs: each tcase says what it needs. */
const char *test_skip_reason(void)
{
	return NULL;
}
