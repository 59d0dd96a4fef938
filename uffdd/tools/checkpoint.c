// SPDX-License-Identifier: MIT
/*
 * uffdd-checkpoint PID DIR: write a checkpoint (uffdd-image(5)) of a live
 * process, stopped with SIGSTOP while its memory is copied, then list what
 * went in.  With --parent, an incremental one: the pages changed since the
 * parent (the kernel's async write-protect record, PAGEMAP_SCAN); with
 * --rearm the record starts again from this checkpoint for the next.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "libpin.h"

/* A usage error's exit status, as every program of uffdd's. */
#define EXIT_USAGE 2

/* How long to wait for SIGSTOP to take effect, in 1 ms polls. */
#define STOP_POLLS 2000

static void log_stderr(enum pin_log_level level, const char *msg, void *userdata)
{
	fprintf(stderr, "uffdd-checkpoint: %s\n", msg);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: uffdd-checkpoint [-r] [-f] [-a ADDR -l LEN] [-p PARENT] [-R] PID DIR\n"
		   "Write a checkpoint of process PID's private memory into DIR.\n"
		   "  -p, --parent PARENT  only what changed since checkpoint PARENT\n"
		   "  -R, --rearm  write-protect the written pages again afterwards\n"
		   "  -r          also read-only mappings\n"
		   "  -f          also file-backed private mappings\n"
		   "  -a ADDR     only mappings within [ADDR, ADDR+LEN) (with -l)\n"
		   "  -l LEN\n"
		   "  -h, --help  this help\n"
		   "  --version   the version\n"
		   "Exit status: 0 done, 1 failed, 2 usage error.\n");
}

/* The state letter of /proc/PID/stat: 'T' once SIGSTOP has taken effect. */
static int proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: the state follows
	 * the last ')'. */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2])
		return -EBADMSG;
	return p[2];
}

static int wait_stopped(pid_t pid)
{
	struct timespec ms = { .tv_nsec = 1000000 };

	for (int i = 0; i < STOP_POLLS; i++) {
		int s = proc_state(pid);

		if (s < 0 || s == 'T' || s == 't')
			return s < 0 ? s : 0;
		nanosleep(&ms, NULL);
	}
	return -ETIMEDOUT;
}

static void prot_letters(uint32_t prot, char out[4])
{
	out[0] = prot & PROT_READ ? 'r' : '-';
	out[1] = prot & PROT_WRITE ? 'w' : '-';
	out[2] = prot & PROT_EXEC ? 'x' : '-';
	out[3] = '\0';
}

/* One line per region, then the totals; data is what the pages file holds,
 * and of an incremental checkpoint the bytes its parents give. */
static int report(const char *dir)
{
	struct pin_image *img;
	uint64_t data = 0, zero = 0, inherited = 0;
	size_t n;
	int r = pin_image_open(dir, &img);

	if (r < 0)
		return r;
	n = pin_image_nr_regions(img);
	for (size_t i = 0; i < n; i++) {
		const struct pin_image_region *reg = pin_image_region(img, i);
		uint64_t d = 0, p = 0;
		char prot[4];

		for (size_t s = 0; s < reg->nr_segments; s++) {
			const struct pin_image_segment *sg = &reg->segments[s];

			if ((sg->flags & PIN_IMAGE_SEG_DATA) && sg->source)
				p += sg->len;
			else if (sg->flags & PIN_IMAGE_SEG_DATA)
				d += sg->len;
		}
		prot_letters(reg->prot, prot);
		printf("0x%012" PRIx64 "-0x%012" PRIx64 " %s %10" PRIu64 " data bytes %10" PRIu64
		       " zero bytes %s\n",
		       reg->addr, reg->addr + reg->len, prot, d, reg->len - d - p, reg->name);
		data += d;
		zero += reg->len - d - p;
		inherited += p;
	}
	printf("%zu regions, %" PRIu64 " bytes written, %" PRIu64 " zero bytes left as holes", n,
	       data, zero);
	if (inherited)
		printf(", %" PRIu64 " bytes from the parents", inherited);
	printf("\n");
	pin_image_free(img);
	return 0;
}

static bool parse_u64(const char *s, uint64_t *ret)
{
	char *end;

	errno = 0;
	*ret = strtoull(s, &end, 0);
	return !errno && *s && !*end;
}

int main(int argc, char **argv)
{
	struct pin_image_write_opts o = { .sz = sizeof(o) };
	bool stopped_before, have_addr = false, have_len = false;
	uint64_t pid;
	int c, r, s;

	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "parent", required_argument, NULL, 'p' },
		{ "rearm", no_argument, NULL, 'R' },
		{ 0 },
	};

	while ((c = getopt_long(argc, argv, "rfa:l:p:Rh", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			o.parent = optarg;
			break;
		case 'R':
			o.flags |= PIN_IMAGE_WRITE_REARM;
			break;
		case 'r':
			o.flags |= PIN_IMAGE_WRITE_READONLY;
			break;
		case 'f':
			o.flags |= PIN_IMAGE_WRITE_FILE;
			break;
		case 'a':
			if (!parse_u64(optarg, &o.addr))
				goto bad_usage;
			have_addr = true;
			break;
		case 'l':
			if (!parse_u64(optarg, &o.len) || !o.len)
				goto bad_usage;
			have_len = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		case 'V':
			puts("uffdd-checkpoint " PIN_PACKAGE_VERSION);
			return EXIT_SUCCESS;
		default:
			goto bad_usage;
		}
	}
	if (argc - optind != 2 || !parse_u64(argv[optind], &pid) || !pid || pid > INT32_MAX ||
	    have_addr != have_len)
		goto bad_usage;
	pin_log_set(log_stderr, NULL);

	s = proc_state((pid_t)pid);
	if (s < 0) {
		fprintf(stderr, "uffdd-checkpoint: /proc/%" PRIu64 "/stat: %s\n", pid,
			strerror(-s));
		return EXIT_FAILURE;
	}
	/* A process that was stopped already stays stopped afterwards. */
	stopped_before = s == 'T' || s == 't';
	if (!stopped_before) {
		if (kill((pid_t)pid, SIGSTOP) < 0) {
			fprintf(stderr, "uffdd-checkpoint: kill(%" PRIu64 ", SIGSTOP): %s\n", pid,
				strerror(errno));
			return EXIT_FAILURE;
		}
		r = wait_stopped((pid_t)pid);
		if (r < 0) {
			fprintf(stderr, "uffdd-checkpoint: pid %" PRIu64 " did not stop: %s\n", pid,
				strerror(-r));
			kill((pid_t)pid, SIGCONT);
			return EXIT_FAILURE;
		}
	}
	r = pin_image_write((int)pid, argv[optind + 1], &o);
	if (!stopped_before && kill((pid_t)pid, SIGCONT) < 0)
		fprintf(stderr, "uffdd-checkpoint: kill(%" PRIu64 ", SIGCONT): %s\n", pid,
			strerror(errno));
	if (r < 0) {
		fprintf(stderr, "uffdd-checkpoint: checkpoint of pid %" PRIu64 " into %s: %s\n",
			pid, argv[optind + 1], strerror(-r));
		return EXIT_FAILURE;
	}
	r = report(argv[optind + 1]);
	if (r < 0) {
		fprintf(stderr, "uffdd-checkpoint: reading back %s: %s\n", argv[optind + 1],
			strerror(-r));
		return EXIT_FAILURE;
	}
	return EXIT_SUCCESS;

bad_usage:
	usage(stderr);
	return EXIT_USAGE;
}
