// SPDX-License-Identifier: MIT
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-common.h"
#include "libpin.h"

/* The uffdd bench_uffdd_start() started and bench_uffdd_stop() did not
 * stop yet (0: none), which bench_die() stops. */
static pid_t running;

void bench_die(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
		strerror(err < 0 ? -err : err));
	if (running > 0)
		kill(running, SIGTERM);
	exit(1);
}

void *bench_map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		bench_die("mmap", errno);
	if (madvise(p, len, MADV_NOHUGEPAGE) < 0)
		bench_die("madvise(MADV_NOHUGEPAGE)", errno);
	return p;
}

int bench_memfd_source(size_t len, size_t page)
{
	int fd = memfd_create("bench-source", MFD_CLOEXEC);

	if (fd < 0 || ftruncate(fd, (off_t)len) < 0)
		bench_die("memfd", errno);
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		bench_die("mmap memfd", errno);
	for (size_t i = 0; i < len / page; i++)
		memset(p + i * page, (int)(i | 1), page);
	munmap(p, len);
	return fd;
}

struct pin_uffd *bench_uffd_new(void)
{
	struct pin_uffd_opts o = { .sz = sizeof(o), .flags = PIN_UFFD_CLOEXEC };
	struct pin_uffd *u;
	int r = pin_uffd_new(&o, &u);

	if (r < 0)
		bench_die("pin_uffd_new", r);
	return u;
}

void bench_restore_start(const char *ck, const char *sock, const struct pin_uffd_opts *uo,
			 unsigned int flags, struct pin_image **ret_img, struct pin_uffd **ret_u,
			 struct pin_client **ret_c)
{
	struct pin_client_opts co = { .sz = sizeof(co), .socket = sock, .name = "bench" };
	struct pin_image *img;
	struct pin_client *c;
	struct pin_uffd *u;
	int r;

	if ((r = pin_image_open(ck, &img)) < 0 || (r = pin_uffd_new(uo, &u)) < 0 ||
	    (r = pin_image_map_region(img, 0, u)) < 0 || (r = pin_client_connect(&co, &c)) < 0 ||
	    (r = pin_client_handover(c, u)) < 0 ||
	    (r = pin_client_add_image_region(c, img, 0, flags)) < 0)
		bench_die("restore", r);
	*ret_img = img;
	*ret_u = u;
	*ret_c = c;
}

bool bench_smoke(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--smoke"))
			return true;
	return false;
}

unsigned int bench_runs(int argc, char **argv, unsigned int dflt, uint64_t *bytes,
			uint64_t smoke_bytes)
{
	unsigned int runs = argc > 1 ? (unsigned int)atoi(argv[1]) : dflt;
	char what[32];

	if (bench_smoke(argc, argv)) {
		runs = 1;
		*bytes = smoke_bytes;
	}
	if (runs >= 1 && runs <= BENCH_MAX_RUNS)
		return runs;
	snprintf(what, sizeof(what), "runs: 1 to %d", BENCH_MAX_RUNS);
	bench_die(what, EINVAL);
}

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_metric(const char *name, double value, const char *unit)
{
	printf("metric %s %.4g %s\n", name, value, unit);
	fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double bench_median(double *samples, unsigned int n)
{
	qsort(samples, n, sizeof(*samples), cmp_double);
	return n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
}

double bench_percentile(double *samples, size_t n, double q)
{
	qsort(samples, n, sizeof(*samples), cmp_double);
	/* Nearest rank: the smallest sample with at least q of them at or
	 * below it. */
	size_t k = (size_t)((double)n * q);
	if ((double)k < (double)n * q)
		k++;
	return samples[k ? k - 1 : 0];
}

uint64_t bench_rand(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

uint32_t *bench_shuffled(size_t n, uint64_t seed)
{
	uint32_t *v = malloc(n * sizeof(*v));

	if (!v)
		bench_die("malloc of a permutation", ENOMEM);
	for (uint32_t i = 0; i < n; i++)
		v[i] = i;
	/* Fisher-Yates. */
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = bench_rand(&seed) % (i + 1);
		uint32_t t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
	return v;
}

int bench_in_child(void (*fn)(const void *arg, void *res), const void *arg, void *res, size_t size)
{
	int p[2], st;

	if (pipe(p) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		close(p[0]);
		fn(arg, res);
		_exit(write(p[1], res, size) == (ssize_t)size ? 0 : 1);
	}
	close(p[1]);
	ssize_t n = read(p[0], res, size);
	close(p[0]);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) || n != (ssize_t)size)
		return -EIO;
	return 0;
}

uint64_t bench_state_word(uint64_t a)
{
	return a * 0x9e3779b97f4a7c15ull | 1;
}

void bench_checkpoint_state(const char *ck, uint64_t addr, uint64_t len, size_t page)
{
	void *want = (void *)(uintptr_t)addr;
	uint64_t *p = mmap(want, len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (p == MAP_FAILED || (void *)p != want)
		bench_die("mmap of the state", p == MAP_FAILED ? errno : EEXIST);
	for (uint64_t off = 0; off < len; off += page)
		for (size_t k = 0; k < page / 8; k++)
			p[off / 8 + k] = bench_state_word(addr + off) + k;
	struct pin_image_write_opts o = { .sz = sizeof(o), .addr = addr, .len = len };
	int r = pin_image_write(0, ck, &o);
	if (r < 0)
		bench_die("pin_image_write", r);
	munmap(p, len);
}

void bench_checkpoint_remove(const char *dir)
{
	char p[PATH_MAX];

	for (const char *f = "manifest\0pages\0working-set\0"; *f; f += strlen(f) + 1) {
		snprintf(p, sizeof(p), "%s/%s", dir, f);
		unlink(p);
	}
	rmdir(dir);
}

void bench_uffdd_exe(char *buf, size_t len)
{
	char exe[PATH_MAX];
	const char *bin = getenv("UFFDD");

	if (bin) {
		snprintf(buf, len, "%s", bin);
		return;
	}
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0) {
		perror("bench: readlink /proc/self/exe");
		exit(1);
	}
	exe[n] = '\0';
	snprintf(buf, len, "%s/../uffdd/uffdd", dirname(exe));
}

void bench_uffdd_start(struct bench_uffdd *d)
{
	char bin[BENCH_PATH_MAX];

	bench_uffdd_exe(bin, sizeof(bin));
	snprintf(d->dir, sizeof(d->dir), "/tmp/bench-uffdd-XXXXXX");
	if (!mkdtemp(d->dir)) {
		perror("bench: mkdtemp");
		exit(1);
	}
	snprintf(d->sock, sizeof(d->sock), "%s/sock", d->dir);
	d->pid = fork();
	if (d->pid == 0) {
		execl(bin, "uffdd", "--socket", d->sock, (char *)NULL);
		_exit(127);
	}
	running = d->pid;
	struct pin_client_opts co = { .sz = sizeof(co), .socket = d->sock };
	for (int i = 0; i < 500; i++) {
		struct pin_client *c;
		if (pin_client_connect(&co, &c) == 0) {
			pin_client_free(c);
			return;
		}
		if (waitpid(d->pid, NULL, WNOHANG) == d->pid)
			break;
		usleep(10000);
	}
	fprintf(stderr, "bench: %s does not answer on %s\n", bin, d->sock);
	kill(d->pid, SIGTERM);
	exit(1);
}

void bench_uffdd_stop(struct bench_uffdd *d)
{
	kill(d->pid, SIGTERM);
	waitpid(d->pid, NULL, 0);
	running = 0;
	unlink(d->sock);
	rmdir(d->dir);
}
