// SPDX-License-Identifier: MIT
/*
 * The stale-pin monitor: a userfaultfd of our own, registered on every pinned
 * range, and a thread that reads its REMOVE, UNMAP and REMAP events.  When
 * the process discards (MADV_DONTNEED), unmaps or moves pinned memory, the
 * kernel keeps the old pages pinned while the process sees new ones; the
 * event tells us to drop the cache entry.
 *
 * Registration mode: MISSING would take over the faults of unpopulated
 * pages and MINOR is refused on anonymous memory.  WP registration with
 * nothing write-protected takes over no fault at all: the kernel only
 * reports a WP fault on a PTE that carries the uffd-wp bit, and nobody sets
 * one (UFFDIO_WRITEPROTECT is never called).  WP_ASYNC, when offered, also
 * lets WP-only registration cover file mappings, and would resolve in the
 * kernel any WP fault that still happened.  tests/test-pin.c checks that
 * touching registered memory raises no event.
 *
 * UFFD_USER_MODE_ONLY only when the kernel refuses this user a userfaultfd
 * that sees kernel faults (vm.unprivileged_userfaultfd=0, no CAP_SYS_PTRACE,
 * no access to /dev/userfaultfd): WP registration with nothing
 * write-protected hands the userfaultfd no fault at all, so the pages the
 * kernel faults in to pin them (GUP) fault as they would unregistered, and
 * the REMOVE, UNMAP and REMAP events come all the same (tests/unprivileged.sh
 * runs the io_uring backend as uid 65534).  A userfaultfd that takes faults
 * (uffdd's MISSING regions) must never be user-mode only: there, GUP would
 * fail with EFAULT.
 *
 * The kernel blocks the caller of munmap/madvise/mremap until the event is
 * read, so this thread never waits for its owner's lock: it queues what it
 * reads and hands the queue over when the lock is free, and every lookup
 * has it handed over first (pin_monitor_sync).  `busy` covers the window
 * between read() taking an event, which lets munmap return, and the event
 * sitting in the queue.
 *
 * REMOVE comes before the zap (the owner's rule for it: PIN_REMOVE_RACE_NS
 * in pin-internal.h), UNMAP and REMAP after the change.
 *
 * When no event waits, the thread also runs the owner's background
 * unregistration of the ranges no pin covers any more.  It never calls
 * free(): a heap trim could discard memory it watches and wait for itself.
 *
 * It calls uffd.c and util.c, and its owner (pin.c) only through the
 * callbacks of struct pin_monitor_owner (pin-monitor.h), always with the
 * owner's lock held.  It sees nothing of the pin context.
 *
 * Valgrind runs one thread at a time and keeps its lock across munmap and
 * mremap (not across madvise): the monitor could never read their events
 * and the caller would hang.  Under valgrind, then, only REMOVE is watched.
 */
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "pin-monitor.h"

#define QUEUE_LEN 256

struct pin_monitor {
	struct pin_monitor_owner owner;
	uintptr_t page;
	struct pin_uffd *uffd;
	int stop_fd;
	int kick_fd; /* unregistrations are pending */
	pthread_t thread;
	pthread_mutex_t qlock; /* never held across a syscall */
	struct pin_monitor_change queue[QUEUE_LEN];
	unsigned int qlen;
	bool overflow; /* events were lost to a full queue: tell owner.lost() */
	atomic_bool pending;
	atomic_int busy;
	atomic_uint_fast64_t events;
	atomic_uint_fast64_t faults;
};

static void enqueue(struct pin_monitor *m, const struct pin_uffd_event *ev, uint64_t read_ns)
{
	struct pin_monitor_change c = { .type = ev->type, .read_ns = read_ns };

	switch (ev->type) {
	case PIN_UFFD_EVENT_REMOVE:
	case PIN_UFFD_EVENT_UNMAP:
		c.start = ev->arg.remove.start;
		c.end = ev->arg.remove.end;
		break;
	case PIN_UFFD_EVENT_REMAP:
		c.start = ev->arg.remap.from;
		c.end = ev->arg.remap.from + ev->arg.remap.len;
		c.to = ev->arg.remap.to;
		break;
	default:
		return;
	}
	pthread_mutex_lock(&m->qlock);
	if (m->qlen < QUEUE_LEN)
		m->queue[m->qlen++] = c;
	else
		m->overflow = true;
	atomic_store(&m->pending, true);
	pthread_mutex_unlock(&m->qlock);
}

/*
 * A page fault means a registration took one over, which the WP mode must
 * not do.  Let the thread go on rather than hang it: clear the page's WP bit
 * and wake it.
 */
static void release_fault(struct pin_monitor *m, const struct pin_uffd_event *ev)
{
	uintptr_t page = ev->arg.pagefault.address & ~(m->page - 1);

	atomic_fetch_add(&m->faults, 1);
	pin_log(PIN_LOG_ERR, "pin monitor: unexpected page fault at %#llx (flags %#x)",
		(unsigned long long)ev->arg.pagefault.address, ev->arg.pagefault.flags);
	if (pin_uffd_writeprotect(m->uffd, (void *)page, m->page, 0) < 0)
		pin_uffd_wake(m->uffd, (void *)page, m->page);
}

static void read_events(struct pin_monitor *m)
{
	struct pin_uffd_event evs[64];

	atomic_store(&m->busy, 1);
	int n = pin_uffd_read_events(m->uffd, evs, PIN_ARRAY_SIZE(evs));
	/* After the read: the later, the safer for the owner's discard rule. */
	uint64_t read_ns = pin_now_ns();
	for (int i = 0; i < n; i++) {
		if (evs[i].type == PIN_UFFD_EVENT_PAGEFAULT)
			release_fault(m, &evs[i]);
		else
			enqueue(m, &evs[i], read_ns);
	}
	atomic_store(&m->busy, 0);
	if (n > 0)
		atomic_fetch_add(&m->events, (uint_fast64_t)n);
}

static void *monitor_main(void *arg)
{
	struct pin_monitor *m = arg;
	struct pollfd fds[3] = {
		{ .fd = pin_uffd_fd(m->uffd), .events = POLLIN },
		{ .fd = m->stop_fd, .events = POLLIN },
		{ .fd = m->kick_fd, .events = POLLIN },
	};
	bool unwatch = false;
	int timeout = -1;

	for (;;) {
		int r = poll(fds, 3, timeout);
		if (r < 0 && errno != EINTR) {
			pin_log(PIN_LOG_ERR, "pin monitor: poll: %s", strerror(errno));
			break;
		}
		if (fds[1].revents)
			break;
		if (fds[0].revents & POLLIN)
			read_events(m);
		if (fds[2].revents & POLLIN) {
			uint64_t n;
			if (read(m->kick_fd, &n, sizeof(n)) == sizeof(n))
				unwatch = true;
		}
		timeout = -1;
		if (!atomic_load(&m->pending) && !unwatch)
			continue;
		/* While work waits for the lock, retry it every millisecond. */
		if (pthread_mutex_trylock(m->owner.lock) != 0) {
			timeout = 1;
			continue;
		}
		pin_monitor_sync(m, true);
		/* Events first: the background unregistration only when none wait. */
		if (unwatch)
			unwatch = m->owner.unwatch_step(m->owner.arg);
		pthread_mutex_unlock(m->owner.lock);
		if (unwatch || atomic_load(&m->pending))
			timeout = 0;
	}
	return NULL;
}

int pin_monitor_new(const struct pin_monitor_owner *owner, struct pin_monitor **ret)
{
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC | PIN_UFFD_NONBLOCK,
		.features = PIN_UFFD_FEATURE_EVENT_REMAP | PIN_UFFD_FEATURE_EVENT_REMOVE |
			    PIN_UFFD_FEATURE_EVENT_UNMAP,
		.optional = PIN_UFFD_FEATURE_WP_ASYNC | PIN_UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
	};
	struct pin_monitor *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	if (RUNNING_ON_VALGRIND) {
		uo.features = PIN_UFFD_FEATURE_EVENT_REMOVE;
		pin_log(PIN_LOG_WARN,
			"pin monitor: under valgrind, munmap and mremap of pinned "
			"memory are not seen: call %s first",
			owner->remedy);
	}
	m->owner = *owner;
	m->page = (uintptr_t)sysconf(_SC_PAGESIZE);
	m->stop_fd = m->kick_fd = -1;
	pthread_mutex_init(&m->qlock, NULL);
	uo.flags |= PIN_UFFD_QUIET_EPERM;
	r = pin_uffd_new(&uo, &m->uffd);
	if (r == -EPERM) {
		pin_log(PIN_LOG_DEBUG,
			"pin monitor: this user may not have a userfaultfd that "
			"sees kernel faults: a user-mode-only one, which takes none");
		uo.flags = (uo.flags & ~PIN_UFFD_QUIET_EPERM) | PIN_UFFD_USER_MODE_ONLY;
		r = pin_uffd_new(&uo, &m->uffd);
	}
	if (r < 0) {
		pin_log(PIN_LOG_ERR,
			"pin monitor: no userfaultfd (%s); without one, use "
			"PIN_CTX_NO_MONITOR and %s",
			strerror(-r), owner->remedy);
		goto fail;
	}
	m->stop_fd = eventfd(0, EFD_CLOEXEC);
	m->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->stop_fd < 0 || m->kick_fd < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "pin monitor: eventfd: %s", strerror(-r));
		goto fail;
	}
	r = -pthread_create(&m->thread, NULL, monitor_main, m);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "pin monitor: pthread_create: %s", strerror(-r));
		goto fail;
	}
	*ret = m;
	return 0;
fail:
	if (m->stop_fd >= 0)
		close(m->stop_fd);
	if (m->kick_fd >= 0)
		close(m->kick_fd);
	pin_uffd_free(m->uffd);
	pthread_mutex_destroy(&m->qlock);
	free(m);
	return r;
}

void pin_monitor_free(struct pin_monitor *m)
{
	uint64_t one = 1;

	if (!m)
		return;
	if (write(m->stop_fd, &one, sizeof(one)) != sizeof(one))
		pin_log(PIN_LOG_ERR, "pin monitor: eventfd write: %s", strerror(errno));
	pthread_join(m->thread, NULL);
	close(m->stop_fd);
	close(m->kick_fd);
	pin_uffd_free(m->uffd);
	pthread_mutex_destroy(&m->qlock);
	free(m);
}

void pin_monitor_forget(struct pin_monitor *m)
{
	if (!m)
		return;
	close(m->stop_fd);
	close(m->kick_fd);
	pin_uffd_free(m->uffd);
	free(m);
}

int pin_monitor_watch(struct pin_monitor *m, uintptr_t start, uintptr_t end)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = end - start },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	/* Through pin_ioctl, not pin_uffd_register(): a refusal is expected
	 * here and gets its own message. */
	int r = pin_ioctl(pin_uffd_fd(m->uffd), UFFDIO_REGISTER, &reg);

	if (r == -EBUSY)
		pin_log(PIN_LOG_WARN,
			"pin [%#lx, +%#lx): another userfaultfd (uffdd or the application's) "
			"owns the range, so changes to it are not seen here: call "
			"%s when it is unmapped, remapped or discarded",
			(unsigned long)start, (unsigned long)(end - start), m->owner.remedy);
	else if (r < 0)
		pin_log(PIN_LOG_WARN,
			"pin [%#lx, +%#lx): UFFDIO_REGISTER (WP): %s, so changes to it are not "
			"seen here: call %s when it is unmapped, remapped or discarded",
			(unsigned long)start, (unsigned long)(end - start), strerror(-r),
			m->owner.remedy);
	return r;
}

void pin_monitor_unwatch(struct pin_monitor *m, uintptr_t start, uintptr_t end)
{
	struct uffdio_range range = { .start = start, .len = end - start };
	/* Parts unmapped meanwhile lost their registration with their VMA. */
	int r = pin_ioctl(pin_uffd_fd(m->uffd), UFFDIO_UNREGISTER, &range);

	if (r < 0)
		pin_log(PIN_LOG_DEBUG, "pin monitor: UFFDIO_UNREGISTER [%#lx, +%#lx): %s",
			(unsigned long)start, (unsigned long)(end - start), strerror(-r));
}

void pin_monitor_kick(struct pin_monitor *m)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is full, the thread is woken anyway. */
	if (write(m->kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pin_log(PIN_LOG_ERR, "pin monitor: eventfd write: %s", strerror(errno));
}

/* Apart from pin_monitor_sync(), whose common case is a look at two flags. */
static __attribute__((noinline)) void drain(struct pin_monitor *m, bool on_monitor)
{
	struct pin_monitor_change q[QUEUE_LEN];
	unsigned int n;
	bool overflow;

	pthread_mutex_lock(&m->qlock);
	n = m->qlen;
	memcpy(q, m->queue, n * sizeof(q[0]));
	overflow = m->overflow;
	m->qlen = 0;
	m->overflow = false;
	atomic_store(&m->pending, false);
	pthread_mutex_unlock(&m->qlock);

	if (overflow)
		m->owner.lost(m->owner.arg, on_monitor);
	for (unsigned int i = 0; i < n; i++)
		m->owner.apply(m->owner.arg, &q[i], on_monitor);
}

void pin_monitor_sync(struct pin_monitor *m, bool on_monitor)
{
	/* A read in progress may hold an event whose munmap already returned. */
	while (!on_monitor && atomic_load(&m->busy))
		sched_yield();
	if (atomic_load(&m->pending))
		drain(m, on_monitor);
}

uint64_t pin_monitor_events(const struct pin_monitor *m)
{
	return atomic_load(&((struct pin_monitor *)m)->events);
}

uint64_t pin_monitor_faults(const struct pin_monitor *m)
{
	return atomic_load(&((struct pin_monitor *)m)->faults);
}
