// SPDX-License-Identifier: MIT
/*
 * uffdctl: what uffdd serves, asked over its own protocol (StatsGet,
 * ListGet) through libpin's client, whose list calls walk every page of a
 * list.  It shows the sessions of its user (all of them to root and the
 * daemon's admin group).  It connects as an inspection connection
 * (PIN_CLIENT_INSPECT): it is not a session and lists nowhere.  Human tables
 * by default, JSON with --json.  When the daemon cannot be reached it says
 * what to check.  See uffdctl(8).
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "libpin.h"

#define BAR_WIDTH 40

static const char *socket_opt;
static bool json;
/* While connecting: libpin's last error, said only when no hint replaces it. */
static char connect_msg[512];

static void log_stderr(enum pin_log_level level, const char *msg, void *userdata)
{
	if (level <= PIN_LOG_WARN)
		fprintf(stderr, "uffdctl: %s\n", msg);
}

static void log_keep(enum pin_log_level level, const char *msg, void *userdata)
{
	if (level <= PIN_LOG_WARN)
		snprintf(connect_msg, sizeof(connect_msg), "%s", msg);
}

/* Why the socket at path refuses us, when its owner and mode say so. */
static void hint_access(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		fprintf(stderr,
			"uffdctl: a directory on the way to %s is closed to you (%s): ask root\n",
			path, strerror(errno));
		return;
	}
	struct group *g = getgrgid(st.st_gid);
	char gid[16];

	snprintf(gid, sizeof(gid), "%u", (unsigned int)st.st_gid);
	const char *name = g ? g->gr_name : gid;
	fprintf(stderr,
		"uffdctl: the socket is mode %04o, group %s: connect as root or as a member of "
		"group %s\n"
		"uffdctl: (`id -nG` lists your groups; `usermod -aG %s USER` adds one, from the "
		"next login on)\n",
		(unsigned int)(st.st_mode & 07777), name, name, name);
}

/* The daemon cannot be reached at path (err): say what to check. */
static void say_unreachable(const char *path, int err)
{
	struct stat st;

	switch (err) {
	case ECONNREFUSED:
		if (stat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			fprintf(stderr, "uffdctl: %s is not a socket: is it uffdd's?\n", path);
			break;
		}
		/* fall through */
	case ENOENT:
		fprintf(stderr,
			"uffdctl: uffdd is not running at %s (%s)\n"
			"uffdctl: `systemctl status uffdd.socket uffdd.service` says why; a uffdd "
			"started by hand listens where its --socket says: give uffdctl the same "
			"--socket, or set UFFDD_SOCKET\n",
			path, err == ENOENT ? "no socket there" : "nobody listens there");
		break;
	case EACCES:
	case EPERM:
		fprintf(stderr, "uffdctl: you may not connect to uffdd at %s (%s)\n", path,
			strerror(err));
		hint_access(path);
		break;
	default:
		if (connect_msg[0])
			fprintf(stderr, "uffdctl: %s\n", connect_msg);
		else
			fprintf(stderr, "uffdctl: connecting to uffdd at %s: %s\n", path,
				strerror(err));
		break;
	}
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: uffdctl [--socket PATH] [--json] COMMAND [SESSION]\n"
		   "\n"
		   "Commands:\n"
		   "  status            the daemon, its clients and counters, summed up\n"
		   "  clients           one line per session\n"
		   "  regions [SESSION] the regions and their restore progress\n"
		   "  pins [SESSION]    the pinned ranges clients reported\n"
		   "  stats [SESSION]   fault counters and the latency histogram\n"
		   "\n"
		   "  -s, --socket PATH  the daemon's socket (default: $UFFDD_SOCKET, else\n"
		   "                     " PIN_CLIENT_SOCKET_DEFAULT ")\n"
		   "  -j, --json         print JSON\n"
		   "  -h, --help         this text\n"
		   "      --version      the version\n");
}

static void print_json(struct json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
						       JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void jadd_u64(struct json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

/* A list entry's common part: whose, and where. */
static struct json_object *range_json(uint64_t session, uint64_t addr, uint64_t len)
{
	struct json_object *o = json_object_new_object();

	jadd_u64(o, "session", session);
	jadd_u64(o, "start", addr);
	jadd_u64(o, "end", addr + len);
	jadd_u64(o, "len", len);
	return o;
}

/* 1536 -> "1.5K": sizes in tables stay narrow. */
static const char *human_size(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "BKMGTPE";
	double d = (double)v;
	int u = 0;

	while (d >= 1024 && units[u + 1]) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 "B", v);
	else
		snprintf(buf, len, "%.*f%c", d < 10 ? 1 : 0, d, units[u]);
	return buf;
}

/* Lower bound of latency bucket i (2^i us) as "512us", "2ms", "1s". */
static const char *bucket_label(unsigned int i, char *buf, size_t len)
{
	uint64_t us = 1ull << i;

	if (us < 1000)
		snprintf(buf, len, "%" PRIu64 "us", us);
	else if (us < 1000000)
		snprintf(buf, len, "%.*fms", us < 10000 ? 1 : 0, us / 1e3);
	else
		snprintf(buf, len, "%.*fs", us < 10000000 ? 1 : 0, us / 1e6);
	return buf;
}

static void print_bar(uint64_t part, uint64_t whole, unsigned int width)
{
	unsigned int n = whole ? (unsigned int)((double)part / (double)whole * width + 0.5) : 0;

	for (unsigned int i = 0; i < width; i++)
		putchar(i < n ? '#' : '.');
}

/*
 * s as a terminal may show it: bytes outside printable ASCII as \xNN (a
 * daemon of another version may pass them on); "-" when empty.
 */
static const char *printable(const char *s, char *buf, size_t size)
{
	size_t k = 0;

	if (!*s)
		return "-";
	for (; *s && k + sizeof("\\xNN") <= size; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= ' ' && c <= '~' && c != '\\')
			buf[k++] = (char)c;
		else
			k += (size_t)snprintf(buf + k, size - k, "\\x%02x", c);
	}
	buf[k] = '\0';
	return buf;
}

static const char *mode_name(uint32_t mode)
{
	switch (mode & (PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP)) {
	case PIN_UFFD_REGISTER_MISSING:
		return "missing";
	case PIN_UFFD_REGISTER_WP:
		return "wp";
	case PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP:
		return "missing+wp";
	default:
		return "?";
	}
}

static struct json_object *stats_json(const struct pin_client_stats *st)
{
	struct json_object *o = json_object_new_object(), *h = json_object_new_array();
	unsigned int last = 0;

	jadd_u64(o, "faults", st->faults);
	jadd_u64(o, "wp_faults", st->wp_faults);
	jadd_u64(o, "pages_copied", st->pages_copied);
	jadd_u64(o, "pages_zeroed", st->pages_zeroed);
	jadd_u64(o, "bytes_copied", st->bytes_copied);
	jadd_u64(o, "pages_pushed", st->pages_pushed);
	jadd_u64(o, "eagain", st->eagain);
	jadd_u64(o, "eexist", st->eexist);
	jadd_u64(o, "pages_total", st->pages_total);
	jadd_u64(o, "pages_populated", st->pages_populated);
	for (unsigned int i = 0; i < PIN_CLIENT_LATENCY_BUCKETS; i++)
		if (st->latency_us_log2[i])
			last = i + 1;
	/* Trailing empty buckets say nothing; index i is still [2^i, 2^(i+1)) us. */
	for (unsigned int i = 0; i < last; i++)
		json_object_array_add(h, json_object_new_uint64(st->latency_us_log2[i]));
	json_object_object_add(o, "latency_us_log2", h);
	return o;
}

static void print_histogram(const struct pin_client_stats *st)
{
	unsigned int first = PIN_CLIENT_LATENCY_BUCKETS, last = 0;
	uint64_t max = 0, total = 0;

	for (unsigned int i = 0; i < PIN_CLIENT_LATENCY_BUCKETS; i++) {
		uint64_t n = st->latency_us_log2[i];

		if (!n)
			continue;
		if (first == PIN_CLIENT_LATENCY_BUCKETS)
			first = i;
		last = i;
		total += n;
		if (n > max)
			max = n;
	}
	if (!total) {
		puts("latency: no faults served yet");
		return;
	}
	puts("latency (from the read of each fault, log2 buckets):");
	for (unsigned int i = first; i <= last; i++) {
		char lo[16], hi[16];

		bucket_label(i, lo, sizeof(lo));
		if (i == PIN_CLIENT_LATENCY_BUCKETS - 1)
			snprintf(hi, sizeof(hi), "...");
		else
			bucket_label(i + 1, hi, sizeof(hi));
		printf("  %7s - %-7s %10" PRIu64 " %5.1f%% |", i ? lo : "0us", hi,
		       st->latency_us_log2[i],
		       100.0 * (double)st->latency_us_log2[i] / (double)total);
		print_bar(st->latency_us_log2[i], max, BAR_WIDTH);
		puts("|");
	}
}

static void print_counters(const struct pin_client_stats *st)
{
	char b[16];

	printf("faults:          %" PRIu64 " (write-protect %" PRIu64 ")\n", st->faults,
	       st->wp_faults);
	printf("pages copied:    %" PRIu64 " (%s)\n", st->pages_copied,
	       human_size(st->bytes_copied, b, sizeof(b)));
	printf("pages zeroed:    %" PRIu64 "\n", st->pages_zeroed);
	printf("pages pushed:    %" PRIu64 "\n", st->pages_pushed);
	printf("populated:       %" PRIu64 " of %" PRIu64 " pages\n", st->pages_populated,
	       st->pages_total);
	printf("retries:         %" PRIu64 " EAGAIN, %" PRIu64 " EEXIST\n", st->eagain, st->eexist);
}

static int cmd_stats(struct pin_client *c, uint64_t session)
{
	struct pin_client_stats st;
	int r = pin_client_stats(c, session ? session : PIN_CLIENT_SESSION_ALL, &st);

	if (r < 0)
		return r;
	if (json) {
		struct json_object *o = stats_json(&st);

		/* null: the sum over every session the user may see. */
		json_object_object_add(o, "session",
				       session ? json_object_new_uint64(session) : NULL);
		print_json(o);
		return 0;
	}
	if (session)
		printf("session %" PRIu64 "\n", session);
	else
		puts("all sessions");
	print_counters(&st);
	print_histogram(&st);
	return 0;
}

static int cmd_clients(struct pin_client *c)
{
	struct pin_client_info *v = NULL;
	size_t n = 0;
	int r = pin_client_list_clients(c, &v, &n);

	if (r < 0)
		return r;
	if (json) {
		struct json_object *a = json_object_new_array();

		for (size_t i = 0; i < n; i++) {
			struct json_object *o = json_object_new_object();

			jadd_u64(o, "session", v[i].session);
			json_object_object_add(o, "pid", json_object_new_int(v[i].pid));
			jadd_u64(o, "uid", v[i].uid);
			json_object_object_add(o, "name", json_object_new_string(v[i].name));
			jadd_u64(o, "regions", v[i].regions);
			jadd_u64(o, "pinned_bytes", v[i].pinned_bytes);
			json_object_object_add(o, "stats", stats_json(&v[i].stats));
			json_object_array_add(a, o);
		}
		print_json(a);
	} else {
		printf("%8s %8s %6s %-20s %7s %8s %12s %12s\n", "SESSION", "PID", "UID", "NAME",
		       "REGIONS", "PINNED", "FAULTS", "POPULATED");
		for (size_t i = 0; i < n; i++) {
			char b[16], pop[32], name[4 * sizeof(v[i].name)];

			snprintf(pop, sizeof(pop), "%" PRIu64 "/%" PRIu64,
				 v[i].stats.pages_populated, v[i].stats.pages_total);
			printf("%8" PRIu64 " %8d %6u %-20.20s %7u %8s %12" PRIu64 " %12s\n",
			       v[i].session, v[i].pid, v[i].uid,
			       printable(v[i].name, name, sizeof(name)), v[i].regions,
			       human_size(v[i].pinned_bytes, b, sizeof(b)), v[i].stats.faults, pop);
		}
	}
	free(v);
	return 0;
}

static int cmd_regions(struct pin_client *c, uint64_t session)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	struct pin_client_region_info *v = NULL;
	size_t n = 0;
	int r = pin_client_list_regions(c, session, &v, &n);

	if (r < 0)
		return r;
	if (json) {
		struct json_object *a = json_object_new_array();

		for (size_t i = 0; i < n; i++) {
			struct json_object *o = range_json(v[i].session, v[i].addr, v[i].len);

			json_object_object_add(o, "mode",
					       json_object_new_string(mode_name(v[i].mode)));
			json_object_object_add(o, "source",
					       json_object_new_string(v[i].source ? "fd" : "zero"));
			jadd_u64(o, "pages_total", v[i].len / page);
			jadd_u64(o, "pages_populated", v[i].pages_populated);
			jadd_u64(o, "pages_dirty", v[i].pages_dirty);
			json_object_array_add(a, o);
		}
		print_json(a);
	} else {
		printf("%8s %-33s %6s %-10s %-4s %8s %s\n", "SESSION", "RANGE", "SIZE", "MODE",
		       "SRC", "DIRTY", "POPULATED");
		for (size_t i = 0; i < n; i++) {
			uint64_t total = v[i].len / page;
			char b[16], pop[32];

			snprintf(pop, sizeof(pop), "%" PRIu64 "/%" PRIu64, v[i].pages_populated,
				 total);
			printf("%8" PRIu64 " %016" PRIx64 "-%016" PRIx64 " %6s %-10s %-4s %8" PRIu64
			       " %-22s [",
			       v[i].session, v[i].addr, v[i].addr + v[i].len,
			       human_size(v[i].len, b, sizeof(b)), mode_name(v[i].mode),
			       v[i].source ? "fd" : "zero", v[i].pages_dirty, pop);
			print_bar(v[i].pages_populated, total, 20);
			printf("] %5.1f%%\n",
			       total ? 100.0 * (double)v[i].pages_populated / (double)total : 0.0);
		}
	}
	free(v);
	return 0;
}

static int cmd_pins(struct pin_client *c, uint64_t session)
{
	struct pin_client_pin_info *v = NULL;
	size_t n = 0;
	int r = pin_client_list_pins(c, session, &v, &n);

	if (r < 0)
		return r;
	if (json) {
		struct json_object *a = json_object_new_array();

		for (size_t i = 0; i < n; i++) {
			struct json_object *o = range_json(v[i].session, v[i].addr, v[i].len);

			jadd_u64(o, "cookie", v[i].cookie);
			json_object_array_add(a, o);
		}
		print_json(a);
	} else {
		printf("%8s %-33s %6s %18s\n", "SESSION", "RANGE", "SIZE", "COOKIE");
		for (size_t i = 0; i < n; i++) {
			char b[16];

			printf("%8" PRIu64 " %016" PRIx64 "-%016" PRIx64 " %6s %#18" PRIx64 "\n",
			       v[i].session, v[i].addr, v[i].addr + v[i].len,
			       human_size(v[i].len, b, sizeof(b)), v[i].cookie);
		}
	}
	free(v);
	return 0;
}

static int cmd_status(struct pin_client *c, const char *path)
{
	struct pin_client_info *v = NULL;
	struct pin_client_stats st;
	uint64_t regions = 0, pinned = 0;
	size_t n = 0;
	int r;

	r = pin_client_list_clients(c, &v, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		regions += v[i].regions;
		pinned += v[i].pinned_bytes;
	}
	free(v);
	r = pin_client_stats(c, PIN_CLIENT_SESSION_ALL, &st);
	if (r < 0)
		return r;
	if (json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "socket", json_object_new_string(path));
		jadd_u64(o, "clients", n);
		jadd_u64(o, "regions", regions);
		jadd_u64(o, "pinned_bytes", pinned);
		json_object_object_add(o, "stats", stats_json(&st));
		print_json(o);
		return 0;
	}
	char b[16];

	printf("uffdd at %s\n", path);
	printf("clients:         %zu\n", n);
	printf("regions:         %" PRIu64 "\n", regions);
	printf("pinned:          %s\n", human_size(pinned, b, sizeof(b)));
	print_counters(&st);
	return 0;
}

static int parse_session(const char *s, uint64_t *ret)
{
	char *end;

	errno = 0;
	*ret = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -EINVAL;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct pin_client_opts opts = { .sz = sizeof(opts),
					.name = "uffdctl",
					.flags = PIN_CLIENT_INSPECT };
	struct pin_client *c = NULL;
	const char *cmd, *path;
	uint64_t session = 0;
	int opt, r;

	while ((opt = getopt_long(argc, argv, "s:jh", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			socket_opt = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		case 'V':
			puts("uffdctl " PIN_PACKAGE_VERSION);
			return EXIT_SUCCESS;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc || argc - optind > 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	if (argc - optind == 2 && parse_session(argv[optind + 1], &session) < 0) {
		fprintf(stderr, "uffdctl: not a session id: %s\n", argv[optind + 1]);
		return 2;
	}
	if (strcmp(cmd, "status") && strcmp(cmd, "clients") && strcmp(cmd, "regions") &&
	    strcmp(cmd, "pins") && strcmp(cmd, "stats")) {
		fprintf(stderr, "uffdctl: unknown command: %s\n", cmd);
		usage(stderr);
		return 2;
	}
	if ((!strcmp(cmd, "status") || !strcmp(cmd, "clients")) && argc - optind == 2) {
		fprintf(stderr, "uffdctl: %s takes no session\n", cmd);
		return 2;
	}

	path = socket_opt ? socket_opt : getenv("UFFDD_SOCKET");
	if (!path || !*path)
		path = PIN_CLIENT_SOCKET_DEFAULT;
	opts.socket = path;
	pin_log_set(log_keep, NULL);
	r = pin_client_connect(&opts, &c);
	if (r < 0) {
		say_unreachable(path, -r);
		return EXIT_FAILURE;
	}
	pin_log_set(log_stderr, NULL);

	if (!strcmp(cmd, "status"))
		r = cmd_status(c, path);
	else if (!strcmp(cmd, "clients"))
		r = cmd_clients(c);
	else if (!strcmp(cmd, "regions"))
		r = cmd_regions(c, session);
	else if (!strcmp(cmd, "pins"))
		r = cmd_pins(c, session);
	else
		r = cmd_stats(c, session);
	pin_client_goodbye(c);
	pin_client_free(c);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
