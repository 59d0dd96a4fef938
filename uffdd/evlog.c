// SPDX-License-Identifier: MIT
/*
 * A session's event log (issue 18): the page of the memfd its client handed
 * over with its userfaultfd (UffdHandover.evlog), where each REMOVE, UNMAP
 * and REMAP read from that userfaultfd is written, so that the client's pin
 * cache drops the pins they made stale before its next look-up, with no
 * message.  The kernel completes those events as they are read: around
 * every read the log says "busy" (libpin-private.h, struct pin_evlog, says
 * why that is enough).  The daemon only writes the page: what the client
 * writes there (it maps it read-only, but it owns the memfd) is never read
 * but once, at adoption, where any value is harmless.  It calls log.c only.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "uffdd.h"

int evlog_adopt(struct session *s, int fd, char *why, size_t whylen)
{
	struct stat st;
	int seals = fcntl(fd, F_GET_SEALS);

	/* Only a memfd (or another shmem file) has seals; without the one
	 * against shrinking, a client could cost the daemon a SIGBUS. */
	if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
		snprintf(why, whylen, "the event log is not a memfd sealed against shrinking");
		return -EBADF;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < PIN_EVLOG_SIZE) {
		snprintf(why, whylen, "the event log's memfd is smaller than %d bytes",
			 PIN_EVLOG_SIZE);
		return -EINVAL;
	}
	void *m = mmap(NULL, PIN_EVLOG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		int err = errno;
		snprintf(why, whylen, "mmap of the event log: %s", strerror(err));
		return -err;
	}
	s->evlog = m;
	s->evlog_fd = fd;
	/* Where the previous daemon (or none) left it; busy until the caller
	 * has applied what may be pending (evlog_end()). */
	s->evlog_head = atomic_load(&s->evlog->head);
	s->evlog_busy = atomic_load(&s->evlog->busy) | 1;
	atomic_store(&s->evlog->busy, s->evlog_busy);
	return 0;
}

void evlog_begin(struct session *s)
{
	if (!s->evlog || (s->evlog_busy & 1))
		return;
	/* Before the read: a look-up after a madvise() that this read
	 * completes sees it odd, or even again after the log. */
	atomic_store(&s->evlog->busy, ++s->evlog_busy);
}

void evlog_put(struct session *s, const struct pin_uffd_event *ev)
{
	if (!s->evlog)
		return;
	struct pin_evlog_entry *e = &s->evlog->ent[s->evlog_head % PIN_EVLOG_ENTRIES];
	uint64_t start, end, to = 0;

	switch (ev->type) {
	case PIN_UFFD_EVENT_REMAP:
		start = ev->arg.remap.from;
		end = start + ev->arg.remap.len;
		to = ev->arg.remap.to;
		break;
	case PIN_UFFD_EVENT_REMOVE:
		start = ev->arg.remove.start;
		end = ev->arg.remove.end;
		break;
	case PIN_UFFD_EVENT_UNMAP:
		start = ev->arg.unmap.start;
		end = ev->arg.unmap.end;
		break;
	default:
		return;
	}
	atomic_store_explicit(&e->start, start, memory_order_relaxed);
	atomic_store_explicit(&e->end, end, memory_order_relaxed);
	atomic_store_explicit(&e->to, to, memory_order_relaxed);
	atomic_store_explicit(&e->type, (uint32_t)ev->type, memory_order_relaxed);
	atomic_store_explicit(&s->evlog->head, ++s->evlog_head, memory_order_release);
}

void evlog_end(struct session *s)
{
	if (!s->evlog || !(s->evlog_busy & 1))
		return;
	atomic_store_explicit(&s->evlog->busy, ++s->evlog_busy, memory_order_release);
}

void evlog_close(struct session *s)
{
	if (s->evlog)
		munmap(s->evlog, PIN_EVLOG_SIZE);
	s->evlog = NULL;
	if (s->evlog_fd >= 0)
		close(s->evlog_fd);
	s->evlog_fd = -1;
}
