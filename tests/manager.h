/* SPDX-License-Identifier: MIT */
/*
 * A service manager for durable-session tests and benchmarks: uffdd run the
 * way systemd 252 runs uffdd.socket + uffdd.service (Type=notify,
 * NotifyAccess=main, a file descriptor store), with kill -9 and restart on
 * demand.  No Check: every call returns 0 or -errno, and says why on stderr.
 */
#ifndef MANAGER_H
#define MANAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct manager;

struct manager_opts {
	const char *dir;	    /* an existing directory for the two sockets */
	const char *exe;	    /* uffdd */
	const char *const *args;    /* after "--no-supervisor"; NULL-terminated, may be NULL */
	unsigned int store_max;	    /* FileDescriptorStoreMax= */
	unsigned int ready_ms;	    /* how long a start may take until READY=1 */
	unsigned int watchdog_usec; /* WatchdogSec= (WATCHDOG_USEC, WATCHDOG_PID); 0: none */
};

/* What the manager did with what it was sent, since manager_new(). */
struct manager_stats {
	unsigned long stored;	/* descriptors added to the store */
	unsigned long dups;	/* not added: the same open file was stored already */
	unsigned long removed;	/* dropped by FDSTOREREMOVE=1 */
	unsigned long hangups;	/* dropped on EPOLLHUP or EPOLLERR, as systemd does */
	unsigned long refused;	/* closed: the store was full, or the message invalid */
	unsigned long foreign;	/* messages from another pid than the daemon's, ignored */
	unsigned long starts;	/* daemons started */
	unsigned long watchdog; /* WATCHDOG=1 messages (nothing is done when they stop) */
};

/*
 * Bind the listening SOCK_SEQPACKET socket at dir/sock and the notify
 * datagram socket at dir/notify, and start the thread that reads the
 * notifications.  No daemon runs yet: manager_start().
 */
int manager_new(const struct manager_opts *o, struct manager **ret);
/* Start the daemon with the listening socket and every stored descriptor;
 * wait for its READY=1.  -ECHILD: it exited first (its status on stderr);
 * -ETIMEDOUT. */
int manager_start(struct manager *m);
/* SIGKILL the daemon, reap it, and take in what it sent before it died. */
int manager_kill9(struct manager *m);
/* manager_kill9(), then manager_start(): Restart=always without a delay. */
int manager_kill9_restart(struct manager *m);
/* SIGSTOP the daemon and wait until every thread of it is stopped. */
int manager_freeze(struct manager *m);
/* The same for any process, within timeout_ms. */
int manager_freeze_pid(pid_t pid, unsigned int timeout_ms);
/* Wait until every thread of the daemon is stopped: it stopped itself
 * (uffdd's UFFDD_HOLD); -ETIMEDOUT after ready_ms. */
int manager_wait_stopped(struct manager *m);
/* Drop every stored descriptor of that name with no word from the daemon,
 * as a store that lost it would; how many. */
size_t manager_lose(struct manager *m, const char *name);
/*
 * SIGTERM, reap; 0 when it exited 0, else -ECHILD (said on stderr).  Then the
 * store is emptied, as `systemctl stop` does on systemd 252.
 */
int manager_stop(struct manager *m);
/* Kill a daemon still running, stop the thread, close everything and remove
 * the sockets; accepts NULL. */
void manager_free(struct manager *m);

pid_t manager_pid(struct manager *m);

/* Child pid exited and is not reaped yet (waitid WNOWAIT; valgrind 3.19 has no
 * pidfd_open). */
bool manager_pid_exited(pid_t pid);
/* Reap child pid within timeout_ms: 0 and its status, or -ETIMEDOUT (left as is). */
int manager_wait_pid(pid_t pid, unsigned int timeout_ms, int *ret_status);
const char *manager_socket(const struct manager *m);
void manager_stats(struct manager *m, struct manager_stats *ret);
/* Stored descriptors whose name matches the fnmatch(3) pattern glob ("s*":
 * every session's, "*": all), after taking in every notification already sent. */
size_t manager_count(struct manager *m, const char *glob);
/* Wait until manager_count(m, glob) == want; -ETIMEDOUT after timeout_ms
 * (the names then on stderr). */
int manager_wait_count(struct manager *m, const char *glob, size_t want, unsigned int timeout_ms);
/* Bytes waiting to be read on the stored sockets whose name matches glob
 * (SIOCINQ): a request sent that no daemon has read yet. */
size_t manager_queued(struct manager *m, const char *glob);
/* The stored names, space-separated, into buf (for messages). */
void manager_names(struct manager *m, char *buf, size_t len);

#endif /* MANAGER_H */
