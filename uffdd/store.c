// SPDX-License-Identifier: MIT
/*
 * The fd store: the service manager's (systemd's, or supervise.c's, which
 * speaks the same protocol), reached through libsystemd.  store_put() hands a
 * copy of a descriptor over under a name (FDSTORE=1, FDNAME=), store_remove()
 * drops a name (FDSTOREREMOVE=1), and store_start() takes back what the
 * manager passed at start (LISTEN_FDS, LISTEN_FDNAMES) and splits it into
 * the listening sockets and the stored descriptors.  Built without
 * libsystemd there is no store: nothing is kept and nothing comes back.  It
 * may call log.c and util.c only.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "uffdd.h"

bool store_name_valid(const char *name)
{
	size_t n = 0;

	/* As systemd's fdname_is_valid(): no control characters (a newline
	 * would end the FDNAME= line), no ':' (LISTEN_FDNAMES's separator). */
	for (; name[n]; n++)
		if (name[n] < ' ' || name[n] > '~' || name[n] == ':')
			return false;
	return n > 0 && n < STORE_NAME_MAX;
}

/* The name fmt makes, into buf (STORE_NAME_MAX bytes): 0, or -EINVAL. */
static int store_name(char *buf, const char *fmt, va_list ap)
{
	int n = vsnprintf(buf, STORE_NAME_MAX, fmt, ap);

	if (n < 0 || n >= STORE_NAME_MAX || !store_name_valid(buf)) {
		ulog(LOG_ERR, "fd store: invalid name \"%.*s\"", STORE_NAME_MAX - 1, buf);
		return -EINVAL;
	}
	return 0;
}

bool store_enabled(void)
{
#ifdef HAVE_SYSTEMD
	const char *e = getenv("NOTIFY_SOCKET");

	return e && *e;
#else
	return false;
#endif
}

int store_put(int fd, const char *fmt, ...)
{
	char name[STORE_NAME_MAX];
	va_list ap;

	va_start(ap, fmt);
	int r = store_name(name, fmt, ap);
	va_end(ap);
	if (r < 0 || !store_enabled())
		return r;
#ifdef HAVE_SYSTEMD
	char msg[sizeof("FDSTORE=1\nFDNAME=") + STORE_NAME_MAX];

	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	r = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
	if (r < 0) {
		ulog(LOG_ERR, "sd_pid_notify_with_fds(FDSTORE=1, FDNAME=%s, fd %d): %s", name, fd,
		     strerror(-r));
		return r;
	}
#endif
	return 0;
}

void store_remove(const char *fmt, ...)
{
	char name[STORE_NAME_MAX];
	va_list ap;

	va_start(ap, fmt);
	int r = store_name(name, fmt, ap);
	va_end(ap);
	if (r < 0 || !store_enabled())
		return;
#ifdef HAVE_SYSTEMD
	r = sd_notifyf(0, "FDSTOREREMOVE=1\nFDNAME=%s", name);
	if (r < 0)
		ulog(LOG_ERR, "sd_notifyf(FDSTOREREMOVE=1, FDNAME=%s): %s", name, strerror(-r));
#endif
}

#ifdef HAVE_SYSTEMD
/* Whether the decimal id at s (at least one digit) is followed by the
 * suffix exactly. */
static bool id_then(const char *s, const char *suffix)
{
	size_t n = strspn(s, "0123456789");

	return n > 0 && !strcmp(s + n, suffix);
}

/* s<id>.conn, s<id>.uffd, s<id>.state, s<id>.pagemap, s<id>.evlog,
 * s<id>.fork<parent id>, f<id>, w<pair> (a kept working set, fcwset.c),
 * r<id>.sock and r<id>.state (a page server's connection, remote-conn.c)
 * are stored descriptors. */
static bool stored_name(const char *name)
{
	if (!store_name_valid(name))
		return false;
	if (name[0] == 'f' || name[0] == 'w')
		return id_then(name + 1, "");
	if (name[0] == 'r')
		return id_then(name + 1, ".sock") || id_then(name + 1, ".state");
	if (name[0] != 's')
		return false;
	size_t n = strspn(name + 1, "0123456789");
	return id_then(name + 1, ".conn") || id_then(name + 1, ".uffd") ||
	       id_then(name + 1, ".state") || id_then(name + 1, ".pagemap") ||
	       id_then(name + 1, ".evlog") ||
	       (n && !strncmp(name + 1 + n, ".fork", 5) && id_then(name + 6 + n, ""));
}

static void strv_free(char **v, int n)
{
	for (int i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}
#endif

int store_start(int **ret_listen, size_t *ret_nlisten, struct stored_fd **ret_stored,
		size_t *ret_nstored)
{
	int *lfds = NULL;
	struct stored_fd *sfds = NULL;
	size_t nl = 0, ns = 0;
	int r = 0;

#ifdef HAVE_SYSTEMD
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);

	if (n < 0) {
		ulog(LOG_ERR, "sd_listen_fds_with_names: %s", strerror(-n));
		return n;
	}
	if (n > 0) {
		lfds = calloc((size_t)n, sizeof(*lfds));
		sfds = calloc((size_t)n, sizeof(*sfds));
		if (!lfds || !sfds) {
			ulog(LOG_ERR, "store_start: %d descriptors: %s", n, strerror(ENOMEM));
			r = -ENOMEM;
			goto out;
		}
	}
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = names && names[i] ? names[i] : "unknown";

		if (stored_name(name)) {
			sfds[ns].fd = fd;
			strcpy(sfds[ns++].name, name);
			continue;
		}
		/* SOCK_STREAM: a --firecracker-socket (listen.c matches it). */
		int k = sd_is_socket(fd, AF_UNIX, SOCK_SEQPACKET, 1);
		if (k == 0)
			k = sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 1);
		if (k <= 0) {
			ulog(LOG_ERR,
			     "socket-activation fd %d (%s) is not a listening AF_UNIX "
			     "SOCK_SEQPACKET or SOCK_STREAM socket%s%s",
			     fd, name, k < 0 ? ": " : "", k < 0 ? strerror(-k) : "");
			r = -EINVAL;
			goto out;
		}
		lfds[nl++] = fd;
	}
out:
	strv_free(names, n);
	if (r < 0) {
		free(lfds);
		free(sfds);
		return r;
	}
#endif
	*ret_listen = lfds;
	*ret_nlisten = nl;
	*ret_stored = sfds;
	*ret_nstored = ns;
	return r;
}
