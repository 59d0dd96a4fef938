// SPDX-License-Identifier: MIT
/*
 * The notify interface, below the sessions: how the fault path and the
 * background work reach what sits above them without calling it.  A reply to
 * a client (a finished WaitPopulated, the end of a session that said
 * Goodbye), a stale-pin notice, the end of a Firecracker VM's session, and
 * a fork child's session with its userfaultfd, which goes to a worker, travel through the
 * handlers main.c sets once at start; the service manager's status line and
 * its watchdog's WATCHDOG=1 are sent from here.  It calls nothing else of uffdd.
 */
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "uffdd.h"

static const struct notify_ops *ops;

void notify_set(const struct notify_ops *o)
{
	ops = o;
}

int notify_reply(struct session *s, uint64_t seq, int error, const char *text)
{
	return ops->reply(s, seq, error, text);
}

void notify_replayed(struct session *s, uint64_t seq, int error, uint64_t placed)
{
	ops->replayed(s, seq, error, placed);
}

void notify_ended(struct session *s, uint64_t seq, int error, const char *text)
{
	ops->ended(s, seq, error, text);
}

void notify_stale(struct session *s, uint64_t start, uint64_t end, uint32_t event)
{
	ops->stale(s, start, end, event);
}

void notify_child(struct session *parent, struct session *child, int fd)
{
	ops->child(parent, child, fd);
}

void notify_vm_ended(struct session *s)
{
	ops->vm_ended(s);
}

void notify_watchdog(void)
{
#ifdef HAVE_SYSTEMD
	sd_notify(0, "WATCHDOG=1");
#endif
}

void notify_status(unsigned int nsessions)
{
#ifdef HAVE_SYSTEMD
	sd_notifyf(0, "STATUS=Serving %u session(s)", nsessions);
#endif
}
