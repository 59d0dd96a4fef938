// SPDX-License-Identifier: MIT
/*
 * The uffdd client's userfaultfd handover and its pins: the pins reported
 * (remembered for a reconnect) and released, the event log its registration
 * cache reads, and that cache's misses on memory the daemon serves
 * (populate_for_pin()).  Calls client.c, proto.c, uffd.c, util.c,
 * pin_ctx_set_populate() and pin_ctx_set_evlog() only.
 */
#include <fcntl.h>
#include <string.h>

#include "client-internal.h"

static bool overlaps_region(const struct pin_client *c, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < c->nr_regions; i++)
		if (c->regions[i].addr < end && c->regions[i].addr + c->regions[i].len > start)
			return true;
	return false;
}

/*
 * Issue 18: a miss of the client's registration cache on [start, end)
 * (pin_ctx_set_populate()), when our userfaultfd is this process's: one
 * Replay of the range, which the daemon places at once and ahead of its
 * background push, a COPY per run of missing pages, and answers once they
 * are in; the pin then finds every page in place instead of faulting each
 * through the daemon.  Memory no region of ours covers costs no request.
 */
static void populate_for_pin(void *arg, uintptr_t start, uintptr_t end)
{
	struct pin_client *c = arg;
	Uffdd__Range range = UFFDD__RANGE__INIT, *pv = &range;
	Uffdd__Replay rp = UFFDD__REPLAY__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	pthread_mutex_lock(&c->lock);
	bool ours = overlaps_region(c, start, end);
	pthread_mutex_unlock(&c->lock);
	if (!ours)
		return;
	range.addr = start;
	range.len = end - start;
	rp.n_ranges = 1;
	rp.ranges = &pv;
	req.body_case = UFFDD__MSG__BODY_REPLAY;
	req.replay = &rp;
	int r = pin_client_request(c, &req, NULL);
	/* After Goodbye the daemon places everything anyway. */
	if (r < 0 && r != -ENOTCONN)
		pin_log(PIN_LOG_WARN,
			"uffdd: Replay of [%#lx, %#lx) before pinning it: %s; its pages fault in "
			"one by one instead",
			(unsigned long)start, (unsigned long)end, strerror(-r));
}

PIN_EXPORT int pin_client_handover(struct pin_client *c, const struct pin_uffd *u)
{
	int r;

	if (!c || !u)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (c->uffd >= 0) {
		r = -EALREADY;
		goto out;
	}
	c->uffd = fcntl(pin_uffd_fd(u), F_DUPFD_CLOEXEC, 3);
	if (c->uffd < 0) {
		r = -errno;
		goto out;
	}
	c->features = pin_uffd_features(u);
	c->uffd_own = pin_uffd_own(u);
	/* Our own memory only: another process's userfaultfd (a restore
	 * tool's) is tracked through that process's pagemap, not ours. */
	if ((c->features & PIN_UFFD_FEATURE_WP_ASYNC) && c->uffd_own) {
		c->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		if (c->pagemap < 0) {
			r = -errno;
			pin_log(PIN_LOG_ERR, "open /proc/self/pagemap: %s", strerror(-r));
			close(c->uffd);
			c->uffd = -1;
			goto out;
		}
	}
	/* Our cache's pins of our memory learn of its changes from the log. */
	if (c->ctx && c->uffd_own) {
		r = client_evlog_open(c);
		if (r < 0) {
			close(c->uffd);
			c->uffd = -1;
			if (c->pagemap >= 0)
				close(c->pagemap);
			c->pagemap = -1;
			goto out;
		}
	}
	r = client_send_handover(c, false);
	if (r == -ECONNRESET && (c->flags & PIN_CLIENT_RECONNECT))
		r = client_reconnect_locked(c); /* which hands it over */
	if (r < 0) {
		close(c->uffd);
		c->uffd = -1;
		if (c->pagemap >= 0)
			close(c->pagemap);
		c->pagemap = -1;
		client_evlog_close(c);
	} else if (c->ctx && c->uffd_own) {
		/* Lock order: the client's, then the context's.  The log is
		 * new: the context reads it from its first entry. */
		pin_ctx_set_evlog(c->ctx, c->evlog, c);
		pin_ctx_set_populate(c->ctx, populate_for_pin, c);
		c->populates = true;
	}
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

PIN_EXPORT int pin_client_pin_report(struct pin_client *c, void *addr, size_t len, uint64_t cookie)
{
	uint64_t mask = (uint64_t)sysconf(_SC_PAGESIZE) - 1;
	uint64_t a = (uintptr_t)addr, e = a + len;
	struct client_pin p;
	struct client_pin *n;
	int r;

	if (!c || !len || e < a || e + mask < e)
		return -EINVAL;
	/* Pins hold whole pages; so does the daemon's bookkeeping. */
	p = (struct client_pin){ .addr = a & ~mask,
				 .len = ((e + mask) & ~mask) - (a & ~mask),
				 .cookie = cookie };
	r = pin_proto_check_range(p.addr, p.len);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	n = reallocarray(c->pins, c->nr_pins + 1, sizeof(*n));
	if (!n) {
		r = -ENOMEM;
		goto out;
	}
	c->pins = n;
	r = client_send_pin_report(c, &p, true);
	if (r == 0)
		c->pins[c->nr_pins++] = p;
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

PIN_EXPORT int pin_client_pin_release(struct pin_client *c, uint64_t cookie)
{
	Uffdd__PinRelease pr = UFFDD__PIN_RELEASE__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	int r;

	if (!c)
		return -EINVAL;
	pr.cookie = cookie;
	req.body_case = UFFDD__MSG__BODY_PIN_RELEASE;
	req.pin_release = &pr;
	pthread_mutex_lock(&c->lock);
	r = client_request(c, &req, NULL, 0, NULL);
	for (size_t i = 0; r == 0 && i < c->nr_pins; i++) {
		if (c->pins[i].cookie == cookie) {
			c->pins[i] = c->pins[--c->nr_pins];
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}
