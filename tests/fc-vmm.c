// SPDX-License-Identifier: MIT
/*
 * The firecracker tests' fake VMM (fc-vmm.h): what Firecracker does when it
 * restores a snapshot with a Uffd memory backend (src/vmm/src/persist.rs):
 * a userfaultfd with UFFD_FEATURE_EVENT_REMOVE (close-on-exec,
 * non-blocking, not user-mode only), guest memory as anonymous private
 * mappings (of hugetlbfs pages for a guest with huge pages), each
 * registered MISSING, then a SOCK_STREAM connection to the handler's socket
 * and one sendmsg() of the JSON mappings with the userfaultfd; the
 * connection stays open.  And the uffdd it talks to.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>
#else
#define VALGRIND_DISABLE_ADDR_ERROR_REPORTING_IN_RANGE(addr, len) ((void)(addr), (void)(len))
#endif

#include "fc-uffd.h"
#include "fc-vmm.h"
#include "libpin-private.h"
#include "manager.h"
#include "test-common.h"

/*
 * Guest memory and its registration, as create_guest_memory() and
 * guest_memory_from_uffd() do.  Memcheck's leak search, at the exit of a
 * case that failed before it unmapped them, would read the pages no session
 * serves any more and wait in the kernel for ever (issue 15): it skips a
 * range whose address errors are not reported, and the guest's pages hold
 * no pointer to the heap.
 */
void vmm_map(struct fc *f, int i, size_t len, size_t off, int flags, size_t psize)
{
	if (f->uffd < 0) {
		f->uffd = fc_uffd_open();
		ck_assert_msg(f->uffd >= 0, "userfaultfd: %s", strerror(-f->uffd));
	}
	f->len[i] = len;
	f->off[i] = off;
	f->psize = psize;
	f->reg[i] = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, -1, 0);
	ck_assert_msg(f->reg[i] != MAP_FAILED, "mmap of %zu bytes, flags %#x: %s", len, flags,
		      strerror(errno));
	struct uffdio_register reg = {
		.range = { (uintptr_t)f->reg[i], len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	ck_assert_int_eq(ioctl(f->uffd, UFFDIO_REGISTER, &reg), 0);
	VALGRIND_DISABLE_ADDR_ERROR_REPORTING_IN_RANGE(f->reg[i], len);
}

void vmm_memory(struct fc *f)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	vmm_map(f, 0, REG0_MIB * MIB, 0, flags, page);
	vmm_map(f, 1, REG1_MIB * MIB, REG0_MIB * MIB, flags, page);
}

/* The mappings as serde_json writes Firecracker's GuestRegionUffdMapping
 * (page_size_kib holds bytes too, deprecated). */
int vmm_json(const struct fc *f, char *buf, size_t size)
{
	return snprintf(buf, size,
			"[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":%zu,"
			"\"page_size\":%zu,\"page_size_kib\":%zu},"
			"{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":%zu,"
			"\"page_size\":%zu,\"page_size_kib\":%zu}]",
			(uint64_t)(uintptr_t)f->reg[0], f->len[0], f->off[0], f->psize, f->psize,
			(uint64_t)(uintptr_t)f->reg[1], f->len[1], f->off[1], f->psize, f->psize);
}

int vmm_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(s, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ck_assert_int_eq(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return s;
}

void vmm_send(int s, const void *body, size_t len, const int *fds, size_t nfds)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(4 * sizeof(int))];
	} cm;
	struct iovec iov = { (void *)body, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	/* The padding after the descriptors is sent too. */
	memset(&cm, 0, sizeof(cm));

	ck_assert_uint_le(nfds, 4);
	if (nfds) {
		mh.msg_control = cm.b;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	ck_assert_int_eq(sendmsg(s, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

void vmm_handshake(struct fc *f)
{
	char json[1024];
	int n = vmm_json(f, json, sizeof(json));

	ck_assert_int_lt(n, (int)sizeof(json));
	f->conn = vmm_connect(f->sock);
	vmm_send(f->conn, json, (size_t)n, &f->uffd, 1);
}

void vmm_check_page(const struct fc *f, int r, size_t i, bool zero)
{
	uint8_t want[4096];
	size_t page = (size_t)sysconf(_SC_PAGESIZE), off = f->off[r] + i * page;

	if (zero)
		memset(want, 0, page);
	else
		ck_assert_int_eq(pread(f->memfd, want, page, (off_t)off), (ssize_t)page);
	ck_assert_msg(!memcmp(f->reg[r] + i * page, want, page),
		      "region %d page %zu (file offset %#zx) is not the %s", r, i, off,
		      zero ? "zero page" : "memory file's");
}

void vmm_touch(const struct fc *f, int r, size_t from, size_t to, uint64_t seed)
{
	size_t n = to - from, *order = malloc(n * sizeof(*order));

	ck_assert_ptr_nonnull(order);
	for (size_t i = 0; i < n; i++)
		order[i] = from + i;
	for (size_t i = n; i > 1; i--) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		size_t j = (size_t)(seed >> 33) % i, t = order[i - 1];
		order[i - 1] = order[j];
		order[j] = t;
	}
	for (size_t i = 0; i < n; i++)
		vmm_check_page(f, r, order[i], false);
	free(order);
}

/* How long a thread may take to start and fault, and the daemon to log a
 * line (a bound, not a measure), natively: polls of POLL_MS. */
#define POLL_MS	   10
#define POLL_TRIES 1000

/* A guest's vCPU faulting on one page: a byte of it written to a pipe, so
 * that the fault is taken in a system call (under valgrind a thread that
 * faults in user space keeps its one-thread turn and nothing else runs). */
struct vcpu {
	pthread_t thread;
	_Atomic pid_t tid;
	const uint8_t *p;
	ssize_t ret;
};

static void *vcpu_main(void *arg)
{
	struct vcpu *v = arg;
	int p[2];

	v->tid = (pid_t)syscall(SYS_gettid);
	if (pipe2(p, O_CLOEXEC)) {
		v->ret = -errno;
		return NULL;
	}
	v->ret = write(p[1], v->p, 1);
	close(p[0]);
	close(p[1]);
	return NULL;
}

/* Thread tid of this process sleeps in kernel function fn. */
static void wait_wchan(pid_t tid, const char *fn)
{
	unsigned int tries = POLL_TRIES * test_time_scale();
	char path[64], buf[128] = "";

	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", (int)tid);
	for (unsigned int k = 0;; k++) {
		FILE *f = fopen(path, "r");
		ck_assert_ptr_nonnull(f);
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		if (!strcmp(buf, fn))
			return;
		ck_assert_msg(k < tries, "thread %d sleeps in '%s', not in %s", (int)tid, buf, fn);
		test_sleep_ms(POLL_MS);
	}
}

void vmm_handshake_after_faults(struct fc *f, const struct vmm_page *set, size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct vcpu *v = calloc(n, sizeof(*v));

	ck_assert_ptr_nonnull(v);
	for (size_t k = 0; k < n; k++) {
		v[k].p = f->reg[set[k].r] + set[k].i * page;
		ck_assert_int_eq(pthread_create(&v[k].thread, NULL, vcpu_main, &v[k]), 0);
		for (unsigned int t = 0; !v[k].tid; t++) {
			ck_assert_msg(t < POLL_TRIES * test_time_scale(), "vCPU %zu did not start",
				      k);
			test_sleep_ms(POLL_MS);
		}
		wait_wchan(v[k].tid, "handle_userfault");
	}
	vmm_handshake(f);
	for (size_t k = 0; k < n; k++) {
		ck_assert_int_eq(pthread_join(v[k].thread, NULL), 0);
		ck_assert_int_eq(v[k].ret, 1);
		vmm_check_page(f, set[k].r, set[k].i, false);
	}
	free(v);
}

void vmm_exit(struct fc *f)
{
	if (f->conn >= 0)
		close(f->conn);
	f->conn = -1;
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(munmap(f->reg[i], f->len[i]), 0);
		f->reg[i] = NULL;
	}
	close(f->uffd);
	f->uffd = -1;
}

/* ---- the daemon ---- */

const char *fc_skip_reason(const char *why_page)
{
	if (!getenv("UFFDD") || !getenv("UFFDCTL"))
		return "UFFDD and UFFDCTL (the programs to run) are not set; run through meson "
		       "test";
	if (sysconf(_SC_PAGESIZE) != 4096)
		return why_page;
	return test_uffd_skip_reason();
}

void fc_files(struct fc *f)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(f->dir, sizeof(f->dir), "%s/uffdd-fc-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (strlen(f->dir) + 8 >= sizeof(f->sock))
		snprintf(f->dir, sizeof(f->dir), "/tmp/uffdd-fc-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/fc.sock", f->dir);
	snprintf(f->mem, sizeof(f->mem), "%s/mem", f->dir);
	snprintf(f->log, sizeof(f->log), "%s/log", f->dir);
	f->memfd = open(f->mem, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ck_assert_int_ge(f->memfd, 0);
	test_pattern_write(f->memfd, MEM_MIB * MIB, test_seed());
	f->uffd = f->conn = -1;
}

void fc_up_with(struct fc *f, const char *const *more)
{
	const char *args[12] = { "--firecracker-socket", f->sock, "--mem-file", f->mem };
	size_t n = 4;

	fc_files(f);
	for (; more && *more; more++) {
		ck_assert_uint_lt(n, PIN_ARRAY_SIZE(args) - 1);
		args[n++] = *more;
	}
	args[n] = NULL;
	int log = open(f->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int saved = dup(STDERR_FILENO);
	ck_assert_int_ge(log, 0);
	ck_assert_int_eq(dup2(log, STDERR_FILENO), STDERR_FILENO);
	test_daemon_start(&f->d, args);
	ck_assert_int_eq(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	close(log);
}

void fc_up(struct fc *f)
{
	fc_up_with(f, NULL);
}

void fc_cleanup(struct fc *f)
{
	for (int i = 0; i < 2; i++)
		if (f->reg[i])
			munmap(f->reg[i], f->len[i]);
	if (f->conn >= 0)
		close(f->conn);
	if (f->uffd >= 0)
		close(f->uffd);
	close(f->memfd);
	unlink(f->mem);
	unlink(f->log);
	unlink(f->sock);
	rmdir(f->dir);
}

void fc_down(struct fc *f)
{
	test_daemon_stop(&f->d);
	fc_cleanup(f);
}

char *fc_read_log(const struct fc *f)
{
	FILE *in = fopen(f->log, "r");
	char *buf = NULL;
	size_t len = 0;

	ck_assert_ptr_nonnull(in);
	FILE *m = open_memstream(&buf, &len);
	ck_assert_ptr_nonnull(m);
	for (int c; (c = fgetc(in)) != EOF;)
		fputc(c, m);
	fclose(in);
	fclose(m);
	return buf;
}

unsigned int fc_count(const char *log, const char *line)
{
	unsigned int n = 0;

	for (const char *p = log; (p = strstr(p, line)); p += strlen(line))
		n++;
	return n;
}

char *fc_wait_log(const struct fc *f, const char *line, unsigned int n)
{
	unsigned int tries = POLL_TRIES * test_time_scale();

	for (unsigned int k = 0;; k++) {
		char *log = fc_read_log(f);
		if (fc_count(log, line) >= n)
			return log;
		ck_assert_msg(k < tries, "uffdd's log does not hold \"%s\" %u times:\n%s", line, n,
			      log);
		free(log);
		test_sleep_ms(POLL_MS);
	}
}

/* Descriptors the manager's store may hold: a few sessions' worth. */
#define STORE_MAX 64

/* fc_managed_with(), its daemon's stderr in f->log when log. */
static struct manager *managed(struct fc *f, const char *hold, const char *const *more, bool log)
{
	/* The manager keeps the pointer: static, as the test's own. */
	static const char *args[12] = { "--workers", "2", "--firecracker-socket", NULL,
					"--mem-file" };
	size_t n = 6;
	struct manager *mgr;

	fc_files(f);
	snprintf(f->mdir, sizeof(f->mdir), "%s/m", f->dir);
	ck_assert_int_eq(mkdir(f->mdir, 0700), 0);
	args[3] = f->sock;
	args[5] = f->mem;
	for (; more && *more; more++) {
		ck_assert_uint_lt(n, PIN_ARRAY_SIZE(args) - 1);
		args[n++] = *more;
	}
	args[n] = NULL;
	struct manager_opts o = { .dir = f->mdir,
				  .exe = getenv("UFFDD"),
				  .args = args,
				  .store_max = STORE_MAX,
				  .ready_ms = FC_READY_MS * test_time_scale() };
	ck_assert_int_eq(manager_new(&o, &mgr), 0);
	if (hold)
		ck_assert_int_eq(setenv("UFFDD_HOLD", hold, 1), 0);
	int saved = log ? fc_log_begin(f) : -1;
	ck_assert_int_eq(manager_start(mgr), 0);
	if (log)
		fc_log_end(saved);
	ck_assert_int_eq(unsetenv("UFFDD_HOLD"), 0);
	return mgr;
}

struct manager *fc_managed(struct fc *f, const char *hold)
{
	return managed(f, hold, NULL, false);
}

struct manager *fc_managed_with(struct fc *f, const char *hold, const char *const *more)
{
	return managed(f, hold, more, true);
}

int fc_log_begin(const struct fc *f)
{
	int log = open(f->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	int saved = dup(STDERR_FILENO);

	ck_assert_int_ge(log, 0);
	ck_assert_int_ge(saved, 0);
	ck_assert_int_eq(dup2(log, STDERR_FILENO), STDERR_FILENO);
	close(log);
	return saved;
}

void fc_log_end(int saved)
{
	ck_assert_int_eq(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
}

void fc_vm_exits(struct fc *f, struct manager *mgr)
{
	close(f->conn);
	f->conn = -1;
	ck_assert_int_eq(manager_wait_count(mgr, "s[0-9]*", 0, FC_READY_MS * test_time_scale()), 0);
}

void fc_managed_down(struct fc *f, struct manager *mgr)
{
	ck_assert_int_eq(manager_stop(mgr), 0);
	manager_free(mgr);
	rmdir(f->mdir);
	fc_cleanup(f);
}
