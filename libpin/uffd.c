// SPDX-License-Identifier: MIT
/* The userfaultfd wrapper: open, handshake, register, resolve, read events. */
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "libpin-private.h"

struct pin_uffd {
	int fd;
	uint64_t features;
	/* Opened here: its faults are this process's memory's (not one from
	 * pin_uffd_from_fd(), which may be another process's). */
	bool own;
};

static const char *const feature_names[] = {
	"PAGEFAULT_FLAG_WP",
	"EVENT_FORK",
	"EVENT_REMAP",
	"EVENT_REMOVE",
	"MISSING_HUGETLBFS",
	"MISSING_SHMEM",
	"EVENT_UNMAP",
	"SIGBUS",
	"THREAD_ID",
	"MINOR_HUGETLBFS",
	"MINOR_SHMEM",
	"EXACT_ADDRESS",
	"WP_HUGETLBFS_SHMEM",
	"WP_UNPOPULATED",
	"POISON",
	"WP_ASYNC",
	"MOVE",
};

PIN_EXPORT const char *pin_uffd_feature_name(uint64_t feature)
{
	if (!feature || (feature & (feature - 1)))
		return NULL;
	unsigned int bit = __builtin_ctzll(feature);
	return bit < PIN_ARRAY_SIZE(feature_names) ? feature_names[bit] : NULL;
}

static int open_fd(unsigned int flags)
{
	int kflags = ((flags & PIN_UFFD_CLOEXEC) ? O_CLOEXEC : 0) |
		     ((flags & PIN_UFFD_NONBLOCK) ? O_NONBLOCK : 0) |
		     ((flags & PIN_UFFD_USER_MODE_ONLY) ? UFFD_USER_MODE_ONLY : 0);

	if (!(flags & PIN_UFFD_SYSCALL)) {
		_cleanup_close_ int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			int fd = ioctl(dev, USERFAULTFD_IOC_NEW, kflags);
			if (fd >= 0)
				return fd;
			pin_log(PIN_LOG_DEBUG, "USERFAULTFD_IOC_NEW: %s, trying the syscall",
				strerror(errno));
		} else {
			pin_log(PIN_LOG_DEBUG, "open /dev/userfaultfd: %s, trying the syscall",
				strerror(errno));
		}
	}
	int fd = syscall(SYS_userfaultfd, kflags);
	if (fd < 0 && errno == EPERM && (flags & PIN_UFFD_QUIET_EPERM))
		return -EPERM;
	if (fd < 0) {
		int err = errno;
		pin_log(PIN_LOG_ERR, "userfaultfd(%#x): %s%s", kflags, strerror(err),
			err == EPERM ? " (vm.unprivileged_userfaultfd=0 needs CAP_SYS_PTRACE, "
				       "or UFFD_USER_MODE_ONLY)"
				     : "");
		return -err;
	}
	return fd;
}

static int uffd_alloc(int fd, struct pin_uffd **ret)
{
	struct pin_uffd *u = calloc(1, sizeof(*u));

	if (!u)
		return -ENOMEM;
	u->fd = fd;
	*ret = u;
	return 0;
}

PIN_EXPORT int pin_uffd_open(unsigned int flags, struct pin_uffd **ret)
{
	if (!ret || (flags & ~(PIN_UFFD_CLOEXEC | PIN_UFFD_NONBLOCK | PIN_UFFD_USER_MODE_ONLY |
			       PIN_UFFD_SYSCALL | PIN_UFFD_QUIET_EPERM)))
		return -EINVAL;
	int fd = open_fd(flags);
	if (fd < 0)
		return fd;
	int r = uffd_alloc(fd, ret);
	if (r < 0)
		close(fd);
	else
		(*ret)->own = true;
	return r;
}

PIN_EXPORT int pin_uffd_api(struct pin_uffd *u, uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };

	if (!u)
		return -EINVAL;
	int r = pin_ioctl(u->fd, UFFDIO_API, &api);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "UFFDIO_API(features %#llx): %s", (unsigned long long)features,
			strerror(-r));
		return r;
	}
	/* The kernel turns WP_UNPOPULATED on with WP_ASYNC, which relies on it. */
	if (features & PIN_UFFD_FEATURE_WP_ASYNC)
		features |= PIN_UFFD_FEATURE_WP_UNPOPULATED;
	/* The kernel reports everything it offers; only what we asked is on. */
	u->features = features & api.features;
	return 0;
}

/* The offer of this kernel, on a throw-away userfaultfd opened as flags
 * say: without CAP_SYS_PTRACE only a USER_MODE_ONLY one may be allowed. */
static int probe(unsigned int flags, uint64_t *ret_features, uint64_t *ret_ioctls)
{
	struct uffdio_api api = { .api = UFFD_API };
	_cleanup_close_ int fd = open_fd(flags | PIN_UFFD_CLOEXEC);

	if (fd < 0)
		return fd;
	int r = pin_ioctl(fd, UFFDIO_API, &api);
	if (r < 0)
		return r;
	if (ret_features)
		*ret_features = api.features;
	if (ret_ioctls)
		*ret_ioctls = api.ioctls;
	return 0;
}

PIN_EXPORT int pin_uffd_probe(uint64_t *ret_features, uint64_t *ret_ioctls)
{
	return probe(0, ret_features, ret_ioctls);
}

static void log_missing(uint64_t missing)
{
	char names[256] = "";
	size_t n = 0;

	for (uint64_t m = missing; m && n < sizeof(names); m &= m - 1) {
		const char *name = pin_uffd_feature_name(m & -m);
		n += snprintf(names + n, sizeof(names) - n, "%s%s", n ? "," : "",
			      name ? name : "?");
	}
	pin_log(PIN_LOG_ERR, "userfaultfd features missing from this kernel: %s (%#llx)", names,
		(unsigned long long)missing);
}

PIN_EXPORT int pin_uffd_new(const struct pin_uffd_opts *opts, struct pin_uffd **ret)
{
	struct pin_uffd_opts o = { .sz = sizeof(o), .flags = PIN_UFFD_CLOEXEC };
	uint64_t avail;
	struct pin_uffd *u;
	int r;

	if (!ret)
		return -EINVAL;
	r = pin_opts_copy(&o, sizeof(o), opts);
	if (r < 0)
		return r;
	/* One handshake per userfaultfd: learn the offer on a spare one. */
	r = probe(o.flags & (PIN_UFFD_USER_MODE_ONLY | PIN_UFFD_SYSCALL | PIN_UFFD_QUIET_EPERM),
		  &avail, NULL);
	if (r < 0)
		return r;
	if (o.features & ~avail) {
		log_missing(o.features & ~avail);
		return -EOPNOTSUPP;
	}
	r = pin_uffd_open(o.flags, &u);
	if (r < 0)
		return r;
	r = pin_uffd_api(u, o.features | (o.optional & avail));
	/* EVENT_FORK is offered to all but needs CAP_SYS_PTRACE to enable;
	 * optional means the call goes on without it.  A refused handshake
	 * leaves the userfaultfd waiting for another one. */
	if (r == -EPERM && (o.optional & avail & ~o.features & UFFD_FEATURE_EVENT_FORK))
		r = pin_uffd_api(u, o.features | (o.optional & avail & ~UFFD_FEATURE_EVENT_FORK));
	if (r < 0) {
		pin_uffd_free(u);
		return r;
	}
	*ret = u;
	return 0;
}

PIN_EXPORT int pin_uffd_from_fd(int fd, uint64_t features, struct pin_uffd **ret)
{
	if (fd < 0 || !ret)
		return -EINVAL;
	struct pin_uffd *u;
	int r = uffd_alloc(fd, &u);
	if (r < 0)
		return r;
	u->features = features;
	*ret = u;
	return 0;
}

PIN_EXPORT void pin_uffd_free(struct pin_uffd *u)
{
	if (!u)
		return;
	close(u->fd);
	free(u);
}

PIN_EXPORT int pin_uffd_fd(const struct pin_uffd *u)
{
	return u ? u->fd : -EINVAL;
}

PIN_EXPORT uint64_t pin_uffd_features(const struct pin_uffd *u)
{
	return u ? u->features : 0;
}

static struct uffdio_range range_of(const void *addr, size_t len)
{
	return (struct uffdio_range){ .start = (uintptr_t)addr, .len = len };
}

static void log_range_error(const char *call, const void *addr, size_t len, int err)
{
	pin_log(PIN_LOG_ERR, "%s [%p, +%#zx): %s", call, addr, len, strerror(-err));
}

PIN_EXPORT int pin_uffd_register(struct pin_uffd *u, void *addr, size_t len, unsigned int mode,
				 uint64_t *ret_ioctls)
{
	struct uffdio_register reg = { .range = range_of(addr, len), .mode = mode };

	if (!u || !mode ||
	    (mode & ~(PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP | PIN_UFFD_REGISTER_MINOR)))
		return -EINVAL;
	int r = pin_ioctl(u->fd, UFFDIO_REGISTER, &reg);
	if (r < 0) {
		log_range_error("UFFDIO_REGISTER", addr, len, r);
		return r;
	}
	if (ret_ioctls)
		*ret_ioctls = reg.ioctls;
	return 0;
}

bool pin_uffd_own(const struct pin_uffd *u)
{
	return u->own;
}

int pin_uffd_register_fd(int fd, uintptr_t addr, size_t len, unsigned int mode)
{
	struct uffdio_register reg = { .range = range_of((void *)addr, len), .mode = mode };
	int r = pin_ioctl(fd, UFFDIO_REGISTER, &reg);

	if (r == -EBUSY)
		pin_log(PIN_LOG_ERR,
			"UFFDIO_REGISTER [%#lx, +%#zx): %s: another userfaultfd is registered on "
			"part of it",
			(unsigned long)addr, len, strerror(-r));
	else if (r == -ENOMEM || r == -EINVAL)
		pin_log(PIN_LOG_ERR,
			"UFFDIO_REGISTER [%#lx, +%#zx): %s: a part is not mapped, or its mapping "
			"cannot take userfaultfd faults (see ioctl_userfaultfd(2))",
			(unsigned long)addr, len, strerror(-r));
	else if (r < 0)
		log_range_error("UFFDIO_REGISTER", (void *)addr, len, r);
	return r;
}

/* The VmFlags (each " xx") a registration for mode sets (proc(5)). */
static bool flags_cover(const char *vmflags, unsigned int mode)
{
	return (!(mode & PIN_UFFD_REGISTER_MISSING) || strstr(vmflags, " um")) &&
	       (!(mode & PIN_UFFD_REGISTER_WP) || strstr(vmflags, " uw")) &&
	       (!(mode & PIN_UFFD_REGISTER_MINOR) || strstr(vmflags, " ui"));
}

int pin_uffd_covers(uintptr_t addr, size_t len, unsigned int mode, uintptr_t *ret_gap)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	uintptr_t cur = addr, end = addr + len;
	unsigned long start = 0, stop = 0;
	char *line = NULL;
	size_t cap = 0;
	int r = 0;

	if (!f) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open /proc/self/smaps: %s", strerror(-r));
		return r;
	}
	/* A mapping's first line names its range; its VmFlags line ends it. */
	while (cur < end && getline(&line, &cap, f) > 0) {
		if (strncmp(line, "VmFlags:", strlen("VmFlags:"))) {
			/* "Anonymous:" would give a first number alone. */
			unsigned long a, b;
			if (sscanf(line, "%lx-%lx ", &a, &b) == 2) {
				start = a;
				stop = b;
			}
			continue;
		}
		if (stop <= cur)
			continue;
		if (start > cur || !flags_cover(line + strlen("VmFlags:") - 1, mode))
			break;
		cur = stop;
	}
	free(line);
	fclose(f);
	if (cur >= end)
		return 1;
	*ret_gap = cur;
	return 0;
}

PIN_EXPORT int pin_uffd_unregister(struct pin_uffd *u, void *addr, size_t len)
{
	struct uffdio_range range = range_of(addr, len);

	if (!u)
		return -EINVAL;
	int r = pin_ioctl(u->fd, UFFDIO_UNREGISTER, &range);
	if (r < 0)
		log_range_error("UFFDIO_UNREGISTER", addr, len, r);
	return r;
}

/*
 * The resolving ioctls share a shape: the kernel writes its progress (bytes,
 * or -errno when nothing was done) into a field of the argument even when the
 * ioctl fails.  EEXIST and EAGAIN are expected by handlers, so not logged.
 */
static int resolve(struct pin_uffd *u, const char *call, unsigned long request, void *arg,
		   const int64_t *done, const void *addr, size_t len, int64_t *ret_done)
{
	if (!u)
		return -EINVAL;
	int r = pin_ioctl(u->fd, request, arg);
	if (ret_done)
		*ret_done = *done;
	if (r < 0 && r != -EEXIST && r != -EAGAIN)
		log_range_error(call, addr, len, r);
	return r;
}

#define DONE(x) ((const int64_t *)&(x))

PIN_EXPORT int pin_uffd_copy(struct pin_uffd *u, void *dst, const void *src, size_t len,
			     unsigned int flags, int64_t *ret_done)
{
	struct uffdio_copy c = {
		.dst = (uintptr_t)dst,
		.src = (uintptr_t)src,
		.len = len,
		.mode = ((flags & PIN_UFFD_DONTWAKE) ? UFFDIO_COPY_MODE_DONTWAKE : 0) |
			((flags & PIN_UFFD_WP) ? UFFDIO_COPY_MODE_WP : 0),
	};

	if (flags & ~(PIN_UFFD_DONTWAKE | PIN_UFFD_WP))
		return -EINVAL;
	return resolve(u, "UFFDIO_COPY", UFFDIO_COPY, &c, DONE(c.copy), dst, len, ret_done);
}

PIN_EXPORT int pin_uffd_zeropage(struct pin_uffd *u, void *dst, size_t len, unsigned int flags,
				 int64_t *ret_done)
{
	struct uffdio_zeropage z = {
		.range = range_of(dst, len),
		.mode = (flags & PIN_UFFD_DONTWAKE) ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0,
	};

	if (flags & ~PIN_UFFD_DONTWAKE)
		return -EINVAL;
	return resolve(u, "UFFDIO_ZEROPAGE", UFFDIO_ZEROPAGE, &z, DONE(z.zeropage), dst, len,
		       ret_done);
}

PIN_EXPORT int pin_uffd_continue(struct pin_uffd *u, void *addr, size_t len, unsigned int flags,
				 int64_t *ret_done)
{
	struct uffdio_continue c = {
		.range = range_of(addr, len),
		.mode = ((flags & PIN_UFFD_DONTWAKE) ? UFFDIO_CONTINUE_MODE_DONTWAKE : 0) |
			((flags & PIN_UFFD_WP) ? UFFDIO_CONTINUE_MODE_WP : 0),
	};

	if (flags & ~(PIN_UFFD_DONTWAKE | PIN_UFFD_WP))
		return -EINVAL;
	return resolve(u, "UFFDIO_CONTINUE", UFFDIO_CONTINUE, &c, DONE(c.mapped), addr, len,
		       ret_done);
}

PIN_EXPORT int pin_uffd_poison(struct pin_uffd *u, void *addr, size_t len, unsigned int flags,
			       int64_t *ret_done)
{
	struct uffdio_poison p = {
		.range = range_of(addr, len),
		.mode = (flags & PIN_UFFD_DONTWAKE) ? UFFDIO_POISON_MODE_DONTWAKE : 0,
	};

	if (flags & ~PIN_UFFD_DONTWAKE)
		return -EINVAL;
	return resolve(u, "UFFDIO_POISON", UFFDIO_POISON, &p, DONE(p.updated), addr, len, ret_done);
}

PIN_EXPORT int pin_uffd_move(struct pin_uffd *u, void *dst, void *src, size_t len,
			     unsigned int flags, int64_t *ret_done)
{
	struct uffdio_move m = {
		.dst = (uintptr_t)dst,
		.src = (uintptr_t)src,
		.len = len,
		.mode = ((flags & PIN_UFFD_DONTWAKE) ? UFFDIO_MOVE_MODE_DONTWAKE : 0) |
			((flags & PIN_UFFD_ALLOW_SRC_HOLES) ? UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES : 0),
	};

	if (flags & ~(PIN_UFFD_DONTWAKE | PIN_UFFD_ALLOW_SRC_HOLES))
		return -EINVAL;
	return resolve(u, "UFFDIO_MOVE", UFFDIO_MOVE, &m, DONE(m.move), dst, len, ret_done);
}

PIN_EXPORT int pin_uffd_writeprotect(struct pin_uffd *u, void *addr, size_t len, unsigned int flags)
{
	struct uffdio_writeprotect wp = {
		.range = range_of(addr, len),
		.mode = ((flags & PIN_UFFD_DONTWAKE) ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0) |
			((flags & PIN_UFFD_WP) ? UFFDIO_WRITEPROTECT_MODE_WP : 0),
	};

	if (!u || (flags & ~(PIN_UFFD_DONTWAKE | PIN_UFFD_WP)))
		return -EINVAL;
	int r = pin_ioctl(u->fd, UFFDIO_WRITEPROTECT, &wp);
	if (r < 0)
		log_range_error("UFFDIO_WRITEPROTECT", addr, len, r);
	return r;
}

PIN_EXPORT int pin_uffd_wake(struct pin_uffd *u, void *addr, size_t len)
{
	struct uffdio_range range = range_of(addr, len);

	if (!u)
		return -EINVAL;
	int r = pin_ioctl(u->fd, UFFDIO_WAKE, &range);
	if (r < 0)
		log_range_error("UFFDIO_WAKE", addr, len, r);
	return r;
}

_Static_assert(sizeof(struct uffd_msg) == PIN_UFFD_MSG_BYTES, "a userfaultfd message's size");

int pin_uffd_decode(const void *raw, struct pin_uffd_event *ev)
{
	struct uffd_msg mb;
	const struct uffd_msg *m = &mb;

	memcpy(&mb, raw, sizeof(mb));
	memset(ev, 0, sizeof(*ev));
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		ev->type = PIN_UFFD_EVENT_PAGEFAULT;
		ev->arg.pagefault.address = m->arg.pagefault.address;
		ev->arg.pagefault.flags = m->arg.pagefault.flags;
		ev->arg.pagefault.tid = m->arg.pagefault.feat.ptid;
		break;
	case UFFD_EVENT_FORK:
		ev->type = PIN_UFFD_EVENT_FORK;
		ev->arg.fork.fd = (int)m->arg.fork.ufd;
		break;
	case UFFD_EVENT_REMAP:
		ev->type = PIN_UFFD_EVENT_REMAP;
		ev->arg.remap.from = m->arg.remap.from;
		ev->arg.remap.to = m->arg.remap.to;
		ev->arg.remap.len = m->arg.remap.len;
		break;
	case UFFD_EVENT_REMOVE:
		ev->type = PIN_UFFD_EVENT_REMOVE;
		ev->arg.remove.start = m->arg.remove.start;
		ev->arg.remove.end = m->arg.remove.end;
		break;
	case UFFD_EVENT_UNMAP:
		ev->type = PIN_UFFD_EVENT_UNMAP;
		ev->arg.unmap.start = m->arg.remove.start;
		ev->arg.unmap.end = m->arg.remove.end;
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

int pin_uffd_read_raw(struct pin_uffd *u, void *raw, struct pin_uffd_event *events, size_t max)
{
	if (!u || !raw || !events || !max || max > INT32_MAX / PIN_UFFD_MSG_BYTES)
		return -EINVAL;
	for (;;) {
		ssize_t got = read(u->fd, raw, max * PIN_UFFD_MSG_BYTES);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int err = errno;
			if (err != EAGAIN)
				pin_log(PIN_LOG_ERR, "read userfaultfd: %s", strerror(err));
			return -err;
		}
		if (got == 0 || got % PIN_UFFD_MSG_BYTES)
			return -EIO;
		size_t n = (size_t)got / PIN_UFFD_MSG_BYTES;
		for (size_t i = 0; i < n; i++)
			pin_uffd_decode((const uint8_t *)raw + i * PIN_UFFD_MSG_BYTES, &events[i]);
		return (int)n;
	}
}

static bool readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

PIN_EXPORT int pin_uffd_read_events(struct pin_uffd *u, struct pin_uffd_event *events, size_t max)
{
	struct uffd_msg msgs[64];
	size_t n = 0;

	if (!u || !events || !max)
		return -EINVAL;
	if (max > INT32_MAX)
		max = INT32_MAX;
	while (n < max) {
		size_t want = max - n < PIN_ARRAY_SIZE(msgs) ? max - n : PIN_ARRAY_SIZE(msgs);
		/* After the first batch, read on only what is already queued;
		 * a blocking userfaultfd polls as POLLERR: one read() a call. */
		if (n && !readable(u->fd))
			break;
		ssize_t got = read(u->fd, msgs, want * sizeof(msgs[0]));
		if (got < 0) {
			/* Kept: the log callback may change errno. */
			int err = errno;
			if (err == EINTR)
				continue;
			/* Events already taken must reach the caller first. */
			if (n)
				break;
			if (err != EAGAIN)
				pin_log(PIN_LOG_ERR, "read userfaultfd: %s", strerror(err));
			return -err;
		}
		if (got == 0 || got % sizeof(msgs[0]))
			return n ? (int)n : -EIO;
		size_t k = (size_t)got / sizeof(msgs[0]);
		for (size_t i = 0; i < k; i++)
			pin_uffd_decode(&msgs[i], &events[n + i]);
		n += k;
		if (k < want)
			break;
	}
	return (int)n;
}
