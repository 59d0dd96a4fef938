// SPDX-License-Identifier: MIT
/* Helpers that tests of several areas share (see test-common.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libpin.h"
#include "test-common.h"

void test_pattern_write(int fd, size_t len, uint64_t seed)
{
	uint64_t *buf = malloc(len);

	ck_assert_ptr_nonnull(buf);
	for (size_t i = 0; i < len / 8; i++)
		buf[i] = test_pattern(i * 8, seed);
	ck_assert_int_eq(pwrite(fd, buf, len, 0), (ssize_t)len);
	free(buf);
}

int test_pattern_source(const char *dir, const char *name, size_t len, uint64_t seed)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(unlink(path), 0);
	test_pattern_write(fd, len, seed);
	return fd;
}

void test_rm_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[PATH_MAX];

	if (!d)
		return;
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
			test_rm_tree(path);
		else
			unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

pid_t test_spawn(int (*fn)(const struct test_daemon *d, void *arg), const struct test_daemon *d,
		 void *arg)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(fn(d, arg));
	return pid;
}

int test_reap(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

bool test_page_ok(const uint8_t *base, size_t i, uint64_t seed)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const uint64_t *w = (const uint64_t *)(base + i * page);

	for (size_t j = 0; j < page / 8; j++)
		if (w[j] != test_pattern(i * page + j * 8, seed))
			return false;
	return true;
}

bool test_page_zero(const uint8_t *base, size_t i)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const uint64_t *w = (const uint64_t *)(base + i * page);

	for (size_t j = 0; j < page / 8; j++)
		if (w[j])
			return false;
	return true;
}

long test_pid_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	long kb = -1;
	size_t n = strlen(field);

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n) && line[n] == ':')
			kb = strtol(line + n + 1, NULL, 10);
	fclose(f);
	ck_assert_int_ge(kb, 0);
	return kb;
}

long test_status_kb(const char *field)
{
	return test_pid_status_kb(getpid(), field);
}

long test_anon_huge_kb(uint64_t addr, uint64_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool inside = false;
	long kb = 0, v;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		uint64_t start, end;

		/* A mapping's first line: "start-end perms ..." in hex. */
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " ", &start, &end) == 2)
			inside = start >= addr && end <= addr + len;
		else if (inside && sscanf(line, "AnonHugePages: %ld kB", &v) == 1)
			kb += v;
	}
	fclose(f);
	return kb;
}

int test_count_fds(pid_t pid)
{
	char path[64];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *dir = opendir(path);
	ck_assert_ptr_nonnull(dir);
	for (struct dirent *e; (e = readdir(dir));)
		n += e->d_name[0] != '.' && atoi(e->d_name) < TEST_VALGRIND_FDS;
	closedir(dir);
	return n;
}

void test_each_task(pid_t pid, bool (*fn)(pid_t pid, const char *tid, void *arg), void *arg)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *dir = opendir(path);
	ck_assert_ptr_nonnull(dir);
	for (struct dirent *e; (e = readdir(dir));)
		if (e->d_name[0] != '.' && !fn(pid, e->d_name, arg))
			break;
	closedir(dir);
}

void test_task_read(pid_t pid, const char *tid, const char *name, char *buf, size_t size)
{
	char path[96];

	snprintf(path, sizeof(path), "/proc/%d/task/%.20s/%.20s", (int)pid, tid, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = '\0';
}

int test_count_fd_links(pid_t pid, const char *pattern)
{
	char path[64], link[PATH_MAX];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *dir = opendir(path);
	ck_assert_ptr_nonnull(dir);
	for (struct dirent *e; (e = readdir(dir));) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] == '.' || fd <= STDERR_FILENO || fd >= TEST_VALGRIND_FDS)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
		ssize_t k = readlink(path, link, sizeof(link) - 1);
		if (k <= 0)
			continue; /* closed meanwhile */
		link[k] = '\0';
		n += fnmatch(pattern, link, 0) == 0;
	}
	closedir(dir);
	return n;
}

bool test_read_all(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

bool test_send_all(int fd, const void *buf, size_t len)
{
	return send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len;
}

int test_listen_loopback(uint16_t *ret_port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int lsk = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(lsk, 0);
	ck_assert_int_eq(bind(lsk, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(lsk, 1), 0);
	ck_assert_int_eq(getsockname(lsk, (struct sockaddr *)&sa, &len), 0);
	*ret_port = ntohs(sa.sin_port);
	return lsk;
}

uint64_t test_rand(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

void test_permutation(size_t *v, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		v[i] = i;
	/* Fisher-Yates. */
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)(test_rand(&seed) % i), t = v[i - 1];
		v[i - 1] = v[j];
		v[j] = t;
	}
}

uint64_t test_seed(void)
{
	const char *e = getenv(TEST_SEED_ENV);
	/* Odd: never 0, which xorshift would keep forever. */
	uint64_t seed = (e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL)) | 1;

	fprintf(stderr, "seed %" PRIu64 " (%s=%" PRIu64 " replays this run)\n", seed, TEST_SEED_ENV,
		seed);
	return seed;
}

void *test_map_fixed(uint64_t addr, uint64_t len)
{
	void *want = (void *)(uintptr_t)addr;
	void *p = mmap(want, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	ck_assert_ptr_eq(p, want);
	return p;
}

void test_checkpoint_region(char *ck, size_t size, const char *name, uint64_t addr, uint64_t len)
{
	struct pin_image_write_opts o = { .sz = sizeof(o), .addr = addr, .len = len };

	ck_assert_int_lt(snprintf(ck, size, "/tmp/uffdd-%s-XXXXXX", name), (int)size);
	ck_assert_ptr_nonnull(mkdtemp(ck));
	ck_assert_int_eq(pin_image_write(0, ck, &o), 1);
	ck_assert_int_eq(munmap((void *)(uintptr_t)addr, len), 0);
}

const char *test_thp_skip_reason(void)
{
	static char why[128];
	char mode[96] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");

	if (!f)
		return "no transparent huge pages (no /sys/kernel/mm/transparent_hugepage/enabled)";
	if (!fgets(mode, sizeof(mode), f))
		mode[0] = '\0';
	fclose(f);
	mode[strcspn(mode, "\n")] = '\0';
	if (strstr(mode, "[always]") || strstr(mode, "[madvise]"))
		return NULL;
	snprintf(why, sizeof(why), "transparent huge pages are off: enabled is %s", mode);
	return why;
}

char test_proc_state(const char *path)
{
	char buf[512];
	FILE *f = fopen(path, "re");

	ck_assert_msg(f, "%s: %s", path, strerror(errno));
	ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
	fclose(f);
	const char *paren = strrchr(buf, ')');
	ck_assert_ptr_nonnull(paren);
	return paren[2];
}

const char *test_uffd_skip_reason(void)
{
	struct pin_uffd *u;

	if (pin_uffd_open(PIN_UFFD_CLOEXEC, &u) < 0)
		return "userfaultfd is not available to this user (needs /dev/userfaultfd "
		       "access or CAP_SYS_PTRACE)";
	pin_uffd_free(u);
	return NULL;
}

const char *test_uffd_features_skip_reason(uint64_t features, const char *why)
{
	const char *no_uffd = test_uffd_skip_reason();
	uint64_t offered = 0;

	if (no_uffd)
		return no_uffd;
	if (pin_uffd_probe(&offered, NULL) < 0 || (offered & features) != features)
		return why;
	return NULL;
}

uint8_t *test_map_pages(size_t npages)
{
	size_t len = npages * (size_t)sysconf(_SC_PAGESIZE);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_eq(madvise(p, len, MADV_NOHUGEPAGE), 0);
	return p;
}

void *test_map_region(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* A partly filled range must not become a huge page: see uffdd(8). */
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

bool test_read_bus(const volatile uint8_t *p)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	volatile bool bus = false;

	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(bus_jmp, 1))
		bus = true;
	else
		(void)*p;
	sigaction(SIGBUS, &old, NULL);
	return bus;
}
