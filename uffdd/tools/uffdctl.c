// SPDX-License-Identifier: MIT
/*
 * uffdctl: what uffdd serves, asked over its own protocol (StatsGet,
 * ListGet) through libpin's client, whose list calls walk every page of a
 * list.  It shows the sessions of its user (all of them to root and the
 * daemon's admin group).  It connects as an inspection connection
 * (PIN_CLIENT_INSPECT): it is not a session and lists nowhere.  Human tables
 * by default, JSON with --json.  When the daemon cannot be reached it says
 * what to check.  This file: the arguments, the connection, the hints and
 * the one-shot commands; it calls uffdctl-print.c (tables, JSON, the
 * histogram) and uffdctl-watch.c (watch).  See uffdctl(8).
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "uffdctl.h"

/* Watch: a frame a second reads well; 10 ms at least, each frame walking
 * every page of the session list; an hour at most. */
#define WATCH_INTERVAL_MS     1000
#define WATCH_INTERVAL_MIN_MS 10
#define WATCH_INTERVAL_MAX_MS 3600000

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
		   "       uffdctl [--socket PATH] watch [SESSION] [--interval MS] [--count N]\n"
		   "\n"
		   "Commands:\n"
		   "  status            the daemon, its clients and counters, summed up\n"
		   "  clients           one line per session\n"
		   "  regions [SESSION] the regions and their restore progress\n"
		   "  pins [SESSION]    the pinned ranges clients reported\n"
		   "  stats [SESSION]   fault counters and the latency histogram\n"
		   "  watch [SESSION]   each session's restore progress and the histogram,\n"
		   "                    redrawn every interval\n"
		   "\n"
		   "  -s, --socket PATH  the daemon's socket (default: $UFFDD_SOCKET, else\n"
		   "                     " PIN_CLIENT_SOCKET_DEFAULT ")\n"
		   "  -j, --json         print JSON\n"
		   "  -i, --interval MS  watch: the time between frames (default 1000)\n"
		   "  -n, --count N      watch: stop after N frames, printed plainly\n"
		   "  -h, --help         this text\n"
		   "      --version      the version\n");
}

/* pin_client_region_info.source (libpin.h), as uffdctl prints it. */
static const char *source_name(uint32_t source)
{
	static const char *const names[] = { "zero", "fd", "ps" };

	return source < sizeof(names) / sizeof(names[0]) ? names[source] : "?";
}

static int cmd_stats(struct pin_client *c, uint64_t session)
{
	struct pin_client_stats st;
	int r = pin_client_stats(c, session ? session : PIN_CLIENT_SESSION_ALL, &st);

	if (r < 0)
		return r;
	if (json) {
		struct json_object *o = ctl_stats_json(&st);

		/* null: the sum over every session the user may see. */
		json_object_object_add(o, "session",
				       session ? json_object_new_uint64(session) : NULL);
		ctl_print_json(o);
		return 0;
	}
	if (session)
		printf("session %" PRIu64 "\n", session);
	else
		puts("all sessions");
	ctl_print_counters(&st);
	ctl_print_histogram(&st, CTL_BAR_WIDTH);
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

			ctl_jadd_u64(o, "session", v[i].session);
			json_object_object_add(o, "pid", json_object_new_int(v[i].pid));
			ctl_jadd_u64(o, "uid", v[i].uid);
			json_object_object_add(o, "name", json_object_new_string(v[i].name));
			ctl_jadd_u64(o, "regions", v[i].regions);
			ctl_jadd_u64(o, "pinned_bytes", v[i].pinned_bytes);
			json_object_object_add(o, "stats", ctl_stats_json(&v[i].stats));
			json_object_array_add(a, o);
		}
		ctl_print_json(a);
	} else {
		printf("%8s %8s %6s %-20s %7s %8s %12s %12s\n", "SESSION", "PID", "UID", "NAME",
		       "REGIONS", "PINNED", "FAULTS", "POPULATED");
		for (size_t i = 0; i < n; i++) {
			char b[16], pop[32], name[4 * sizeof(v[i].name)];

			snprintf(pop, sizeof(pop), "%" PRIu64 "/%" PRIu64,
				 v[i].stats.pages_populated, v[i].stats.pages_total);
			printf("%8" PRIu64 " %8d %6u %-20.20s %7u %8s %12" PRIu64 " %12s\n",
			       v[i].session, v[i].pid, v[i].uid,
			       ctl_printable(v[i].name, name, sizeof(name)), v[i].regions,
			       ctl_human_size(v[i].pinned_bytes, b, sizeof(b)), v[i].stats.faults,
			       pop);
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
			struct json_object *o = ctl_range_json(v[i].session, v[i].addr, v[i].len);

			json_object_object_add(o, "mode",
					       json_object_new_string(ctl_mode_name(v[i].mode)));
			json_object_object_add(o, "source",
					       json_object_new_string(source_name(v[i].source)));
			ctl_jadd_u64(o, "pages_total", v[i].len / page);
			ctl_jadd_u64(o, "pages_populated", v[i].pages_populated);
			ctl_jadd_u64(o, "pages_dirty", v[i].pages_dirty);
			json_object_array_add(a, o);
		}
		ctl_print_json(a);
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
			       ctl_human_size(v[i].len, b, sizeof(b)), ctl_mode_name(v[i].mode),
			       source_name(v[i].source), v[i].pages_dirty, pop);
			ctl_print_bar(v[i].pages_populated, total, 20);
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
			struct json_object *o = ctl_range_json(v[i].session, v[i].addr, v[i].len);

			ctl_jadd_u64(o, "cookie", v[i].cookie);
			json_object_array_add(a, o);
		}
		ctl_print_json(a);
	} else {
		printf("%8s %-33s %6s %18s\n", "SESSION", "RANGE", "SIZE", "COOKIE");
		for (size_t i = 0; i < n; i++) {
			char b[16];

			printf("%8" PRIu64 " %016" PRIx64 "-%016" PRIx64 " %6s %#18" PRIx64 "\n",
			       v[i].session, v[i].addr, v[i].addr + v[i].len,
			       ctl_human_size(v[i].len, b, sizeof(b)), v[i].cookie);
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
		ctl_jadd_u64(o, "clients", n);
		ctl_jadd_u64(o, "regions", regions);
		ctl_jadd_u64(o, "pinned_bytes", pinned);
		json_object_object_add(o, "stats", ctl_stats_json(&st));
		ctl_print_json(o);
		return 0;
	}
	char b[16];

	printf("uffdd at %s\n", path);
	printf("clients:         %zu\n", n);
	printf("regions:         %" PRIu64 "\n", regions);
	printf("pinned:          %s\n", ctl_human_size(pinned, b, sizeof(b)));
	ctl_print_counters(&st);
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

/* --interval and --count: a decimal in [min, max]. */
static int parse_uint(const char *opt, const char *s, unsigned int min, unsigned int max,
		      unsigned int *ret)
{
	uint64_t v;

	if (parse_session(s, &v) < 0 || v < min || v > max) {
		fprintf(stderr, "uffdctl: %s takes a number from %u to %u, not %s\n", opt, min, max,
			s);
		return -EINVAL;
	}
	*ret = (unsigned int)v;
	return 0;
}

/* Watch's end by an error: the daemon gone for good (libpin's reconnect gave
 * up) gets the hints of a daemon not reached; anything else what libpin said. */
static int watch(struct pin_client *c, const struct ctl_watch_opts *o)
{
	int r;

	connect_msg[0] = '\0';
	r = ctl_watch(c, o);
	if (r >= 0)
		return 0;
	if (pin_client_fd(c) < 0)
		say_unreachable(o->path, -r);
	else if (connect_msg[0])
		fprintf(stderr, "uffdctl: %s\n", connect_msg);
	else
		fprintf(stderr, "uffdctl: watch: %s\n", strerror(-r));
	return r;
}

static bool known(const char *cmd)
{
	static const char *const cmds[] = {
		"status", "clients", "regions", "pins", "stats", "watch"
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(cmd, cmds[i]))
			return true;
	return false;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "interval", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct pin_client_opts opts = { .sz = sizeof(opts),
					.name = "uffdctl",
					.flags = PIN_CLIENT_INSPECT };
	struct ctl_watch_opts wo = { .interval_ms = WATCH_INTERVAL_MS };
	struct pin_client *c = NULL;
	const char *cmd, *path;
	bool watch_opt = false;
	uint64_t session = 0;
	int opt, r;

	while ((opt = getopt_long(argc, argv, "s:ji:n:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			socket_opt = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'i':
			if (parse_uint("--interval", optarg, WATCH_INTERVAL_MIN_MS,
				       WATCH_INTERVAL_MAX_MS, &wo.interval_ms) < 0)
				return 2;
			watch_opt = true;
			break;
		case 'n':
			if (parse_uint("--count", optarg, 1, UINT_MAX, &wo.count) < 0)
				return 2;
			watch_opt = true;
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
	if (!known(cmd)) {
		fprintf(stderr, "uffdctl: unknown command: %s\n", cmd);
		usage(stderr);
		return 2;
	}
	if ((!strcmp(cmd, "status") || !strcmp(cmd, "clients")) && argc - optind == 2) {
		fprintf(stderr, "uffdctl: %s takes no session\n", cmd);
		return 2;
	}
	if (!strcmp(cmd, "watch") ? json : watch_opt) {
		fprintf(stderr, "uffdctl: %s\n",
			json ? "watch prints no JSON" : "--interval and --count are watch's");
		return 2;
	}

	path = socket_opt ? socket_opt : getenv("UFFDD_SOCKET");
	if (!path || !*path)
		path = PIN_CLIENT_SOCKET_DEFAULT;
	opts.socket = path;
	/* Watch outlives a daemon restart: its requests reconnect. */
	if (!strcmp(cmd, "watch"))
		opts.flags |= PIN_CLIENT_RECONNECT;
	pin_log_set(log_keep, NULL);
	r = pin_client_connect(&opts, &c);
	if (r < 0) {
		say_unreachable(path, -r);
		return EXIT_FAILURE;
	}

	if (!strcmp(cmd, "watch")) {
		wo.path = path;
		wo.session = session;
		r = watch(c, &wo);
	} else {
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
	}
	pin_client_goodbye(c);
	pin_client_free(c);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
