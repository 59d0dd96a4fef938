// SPDX-License-Identifier: MIT
/*
 * uffdd's entry point: the options, start (the log, the notify handlers, the
 * supervisor unless a service manager runs us, the listening sockets, the
 * workers, the takeover of what the fd store kept, READY=1) and the stop that
 * listen_run() returns on a signal.  The top of the daemon: it may call any
 * file.
 */
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "uffdd.h"

/* How the layers below the requests reach a client or a worker. */
static const struct notify_ops notify_ops = {
	.reply = control_reply,
	.replayed = control_replayed,
	.ended = control_ended,
	.stale = control_stale,
	.child = worker_adopt_child,
	.vm_ended = fc_ended,
};

/* --no-supervisor: serve in this process, even without a service manager. */
static bool no_supervisor;
/* What the fd store gave back at start, for takeover_run(). */
static struct stored_fd *stored;
static size_t nstored;

static void usage(FILE *f)
{
	fprintf(f, "Usage: uffdd [--socket PATH] [--workers N] [--max-regions-per-uid N]\n"
		   "             [--max-pinned-per-uid BYTES] [--max-sessions-per-uid N]\n"
		   "             [--max-connections-per-uid N] [--max-fds-per-uid N]\n"
		   "             [--max-bytes-per-uid BYTES] [--admin-group GROUP]\n"
		   "             [--firecracker-socket PATH --mem-file FILE]...\n"
		   "             [--no-supervisor] [-v] [--version]\n"
		   "Serve the page faults of client processes through the userfaultfds they\n"
		   "hand over.  Unless systemd runs it (NOTIFY_SOCKET) or --no-supervisor is\n"
		   "given, a supervisor process keeps the descriptors clients depend on and\n"
		   "restarts the serving process when it dies.  Firecracker VMs restored with\n"
		   "a Uffd memory backend connect to a --firecracker-socket, and are served\n"
		   "from the --mem-file that follows it.  See uffdd(8).\n");
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end || *s == '-')
		return -EINVAL;
	*ret = v;
	return 0;
}

/* GROUP of --admin-group: a group name, or a gid in decimal. */
static int parse_group(const char *s, gid_t *ret)
{
	uint64_t v;

	if (parse_u64(s, &v) == 0) {
		if (v >= UFFDD_NO_GROUP) {
			fprintf(stderr, "uffdd: --admin-group %s: not a gid\n", s);
			return -EINVAL;
		}
		*ret = (gid_t)v;
		return 0;
	}
	errno = 0;
	struct group *g = getgrnam(s);
	if (!g) {
		int err = errno;
		fprintf(stderr, "uffdd: --admin-group %s: %s\n", s,
			err ? strerror(err) : "no such group");
		return -ENOENT;
	}
	*ret = g->gr_gid;
	return 0;
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "workers", required_argument, NULL, 'w' },
		{ "max-regions-per-uid", required_argument, NULL, 'r' },
		{ "max-pinned-per-uid", required_argument, NULL, 'p' },
		{ "admin-group", required_argument, NULL, 'g' },
		{ "max-sessions-per-uid", required_argument, NULL, 'S' },
		{ "max-connections-per-uid", required_argument, NULL, 'C' },
		{ "max-fds-per-uid", required_argument, NULL, 'F' },
		{ "max-bytes-per-uid", required_argument, NULL, 'B' },
		{ "firecracker-socket", required_argument, NULL, 'f' },
		{ "mem-file", required_argument, NULL, 'm' },
		{ "no-supervisor", no_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	uint64_t v;
	int c;

	while ((c = getopt_long(argc, argv, "s:w:vh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			uffdd_cfg.socket_path = optarg;
			break;
		case 'w':
			if (parse_u64(optarg, &v) < 0 || !v || v > 1024)
				goto bad;
			uffdd_cfg.workers = (unsigned int)v;
			break;
		case 'r':
			if (parse_u64(optarg, &v) < 0 || v > UINT32_MAX)
				goto bad;
			uffdd_cfg.max_regions_per_uid = (uint32_t)v;
			break;
		case 'p':
			if (parse_u64(optarg, &v) < 0)
				goto bad;
			uffdd_cfg.max_pinned_per_uid = v;
			break;
		case 'g':
			if (parse_group(optarg, &uffdd_cfg.admin_gid) < 0)
				return -EINVAL;
			break;
		case 'S':
		case 'C':
		case 'F':
			if (parse_u64(optarg, &v) < 0 || v > UINT32_MAX)
				goto bad;
			*(c == 'S'   ? &uffdd_cfg.max_sessions_per_uid
			  : c == 'C' ? &uffdd_cfg.max_connections_per_uid
				     : &uffdd_cfg.max_fds_per_uid) = (uint32_t)v;
			break;
		case 'B':
			if (parse_u64(optarg, &v) < 0)
				goto bad;
			uffdd_cfg.max_bytes_per_uid = v;
			break;
		case 'f':
			if (uffdd_cfg.nfc == UFFDD_FC_MAX) {
				fprintf(stderr, "uffdd: at most %d --firecracker-socket\n",
					UFFDD_FC_MAX);
				return -EINVAL;
			}
			if (uffdd_cfg.nfc && !uffdd_cfg.fc[uffdd_cfg.nfc - 1].mem_file)
				goto no_mem_file;
			uffdd_cfg.fc[uffdd_cfg.nfc++].socket = optarg;
			break;
		case 'm':
			if (!uffdd_cfg.nfc || uffdd_cfg.fc[uffdd_cfg.nfc - 1].mem_file) {
				fprintf(stderr,
					"uffdd: --mem-file %s: give it after the "
					"--firecracker-socket it serves\n",
					optarg);
				return -EINVAL;
			}
			uffdd_cfg.fc[uffdd_cfg.nfc - 1].mem_file = optarg;
			break;
		case 'n':
			no_supervisor = true;
			break;
		case 'v':
			uffdd_cfg.verbose++;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			puts("uffdd " PIN_PACKAGE_VERSION);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "uffdd: unexpected argument: %s\n", argv[optind]);
		return -EINVAL;
	}
	if (uffdd_cfg.nfc && !uffdd_cfg.fc[uffdd_cfg.nfc - 1].mem_file)
		goto no_mem_file;
	return 0;
no_mem_file:
	fprintf(stderr, "uffdd: --firecracker-socket %s: no --mem-file follows it\n",
		uffdd_cfg.fc[uffdd_cfg.nfc - 1].socket);
	return -EINVAL;
bad:
	fprintf(stderr, "uffdd: bad value for --%s: %s\n",
		c == 'w'   ? "workers"
		: c == 'r' ? "max-regions-per-uid"
		: c == 'S' ? "max-sessions-per-uid"
		: c == 'C' ? "max-connections-per-uid"
		: c == 'F' ? "max-fds-per-uid"
		: c == 'B' ? "max-bytes-per-uid"
			   : "max-pinned-per-uid",
		optarg);
	return -EINVAL;
}

/*
 * Whether a supervisor process is to keep the fd store: not when a service
 * manager started us (NOTIFY_SOCKET: it keeps the store), nor with
 * --no-supervisor, nor without libsystemd (the serving child would find
 * neither its sockets nor a store to hand descriptors to).
 */
static bool want_supervisor(void)
{
#ifdef HAVE_SYSTEMD
	return !no_supervisor && !store_enabled();
#else
	return false;
#endif
}

/* The supervisor's start: the listening sockets (socket activation's, or
 * --socket PATH), then supervise(); returns 0 in the serving child. */
static int supervisor_start(void)
{
	struct stored_fd *sv;
	size_t nl, ns;
	int *lfds;
	int r = store_start(&lfds, &nl, &sv, &ns);

	if (r < 0)
		return r;
	/* No store kept these: nothing can take them over. */
	for (size_t i = 0; i < ns; i++) {
		ulog(LOG_WARNING, "%s (fd %d) passed without an fd store; closed", sv[i].name,
		     sv[i].fd);
		if (close(sv[i].fd) < 0) {
			int err = errno;
			ulog(LOG_ERR, "close(fd %d, %s): %s", sv[i].fd, sv[i].name, strerror(err));
		}
	}
	free(sv);
	r = listen_open(lfds, nl);
	free(lfds);
	if (r < 0)
		return r;
	const int *fds;
	size_t n = listen_get(&fds);
	return supervise(fds, n);
}

/* The serving process's sockets: what the store (or systemd) passed, else
 * --socket PATH; the stored descriptors wait for takeover_run(). */
static int serve_open(void)
{
	size_t nl;
	int *lfds;
	int r = store_start(&lfds, &nl, &stored, &nstored);

	if (r < 0)
		return r;
	r = listen_open(lfds, nl);
	free(lfds);
	if (r >= 0)
		r = fc_init();
	if (r >= 0)
		r = listen_open_firecracker();
	return r;
}

/* Where listening socket fd listens, into buf: its path, or "fd N". */
static const char *socket_name(int fd, char *buf, size_t size)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);

	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || sa.sun_family != AF_UNIX ||
	    len <= offsetof(struct sockaddr_un, sun_path) || !sa.sun_path[0])
		snprintf(buf, size, "fd %d", fd);
	else
		snprintf(buf, size, "%.*s", (int)(len - offsetof(struct sockaddr_un, sun_path)),
			 sa.sun_path);
	return buf;
}

/*
 * The one line each serving process starts with, whatever -v says: what an
 * administrator checks first (which build, where it listens, the limits
 * clients meet, and whether a restart keeps the sessions).
 */
static void log_start(bool supervised)
{
	char socks[512] = "", name[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	const int *fds;
	size_t n = listen_get(&fds), k = 0;

	for (size_t i = 0; i < n && k < sizeof(socks); i++)
		k += (size_t)snprintf(socks + k, sizeof(socks) - k, "%s%s", i ? ", " : "",
				      socket_name(fds[i], name, sizeof(name)));
	ulog(LOG_NOTICE,
	     "version " PIN_PACKAGE_VERSION ", socket %s, workers %u; per uid (0: no "
	     "limit): %" PRIu32 " sessions, %" PRIu32 " connections, %" PRIu32 " regions, %" PRIu64
	     " bytes pinned, %" PRIu32 " descriptors, %" PRIu64 " bytes of records; supervisor %s",
	     socks, uffdd_cfg.workers, uffdd_cfg.max_sessions_per_uid,
	     uffdd_cfg.max_connections_per_uid, uffdd_cfg.max_regions_per_uid,
	     uffdd_cfg.max_pinned_per_uid, uffdd_cfg.max_fds_per_uid, uffdd_cfg.max_bytes_per_uid,
	     supervised	       ? "on (uffdd's own)"
	     : store_enabled() ? "on (the service manager's fd store)"
			       : "off (a restart loses the sessions)");
}

int main(int argc, char **argv)
{
	sigset_t mask;

	uffdd_page_init();
	/* A session's reader (reader.c), run by the daemon. */
	if (argc == 3 && !strcmp(argv[1], "--reader"))
		return reader_main(argv[2]);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uffdd_cfg.workers = cpus > 0 ? (unsigned int)cpus : 1;
	if (parse_args(argc, argv) < 0)
		return 2;
	log_init();
	notify_set(&notify_ops);

	/* Signals arrive through the main thread's signalfd; the workers
	 * inherit the mask.  A gone peer is an error return, not SIGPIPE. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	bool supervised = want_supervisor();
	if (supervised && supervisor_start() < 0)
		return 1;
	if (serve_open() < 0)
		return 1;
	log_start(supervised);
#ifdef HAVE_SYSTEMD
	/* WatchdogSec=: WATCHDOG=1 while every worker goes round (listen.c). */
	uint64_t usec;
	if (sd_watchdog_enabled(0, &usec) > 0)
		uffdd_cfg.watchdog_ns = usec * 1000;
#endif
	int r = place_init();
	if (r >= 0)
		r = workers_start(uffdd_cfg.workers);
	if (r < 0) {
		ulog(LOG_ERR, "starting %u workers: %s", uffdd_cfg.workers, strerror(-r));
		return 1;
	}
	takeover_run(stored, nstored);
	free(stored);
	stored = NULL;
	nstored = 0;
	ulog(LOG_INFO, "ready: %u workers", uffdd_cfg.workers);
#ifdef HAVE_SYSTEMD
	sd_notifyf(0, "READY=1\nSTATUS=Serving 0 sessions with %u workers", uffdd_cfg.workers);
#endif
	r = listen_run();
	workers_stop();
	return r;
}
