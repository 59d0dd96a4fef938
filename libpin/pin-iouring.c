// SPDX-License-Identifier: MIT
/*
 * The io_uring backend: each pin is one or more registered buffers in a
 * sparse table (IORING_REGISTER_BUFFERS2 with IORING_RSRC_REGISTER_SPARSE,
 * filled and emptied slot by slot with IORING_REGISTER_BUFFERS_UPDATE).
 * Registering a buffer pins its pages with FOLL_PIN | FOLL_LONGTERM; the
 * kernel caps a buffer at 1 GiB, so larger ranges take several slots.
 *
 * The table starts small and doubles when it fills, up to
 * PIN_IOURING_SLOTS: for each huge page a registration holds, the kernel
 * scans every slot of the table (io_uring/rsrc.c, headpage_already_acct),
 * which at 16384 slots cost more than the pin itself.  It grows with
 * IORING_REGISTER_CLONE_BUFFERS onto itself (IORING_REGISTER_DST_REPLACE):
 * one empty slot, always the last one, is cloned to the new last slot, and
 * every buffer keeps its index.  A kernel without that gets the whole table
 * at once.
 *
 * Or the caller's own ring (pin_ctx_opts.ring_nslots > 0), known by its
 * descriptor only, so that libpin does not depend on liburing's struct
 * io_uring layout there: its table is the caller's (registered sparse by
 * the caller, with buffers of its own in other slots), and libpin fills
 * the fixed range of slots the caller gave it, emptied when the context
 * starts, and never grows it.  libpin holds a duplicate of the descriptor,
 * so that a ring the caller closes stays the one the slots are in, not
 * another file that got its number.  The monitor thread never touches the
 * caller's ring (unpin_on_monitor false): an IORING_SETUP_SINGLE_ISSUER ring
 * refuses other threads (-EEXIST), so a stale idle pin's slot is emptied by
 * the next call on the context instead.
 *
 * Updates carry tag 0: a tag would post a CQE when the kernel drops the old
 * buffer, and that CQE would land in the caller's completion queue, since
 * the caller issues READ_FIXED/WRITE_FIXED on this very ring.  With no
 * request in flight the kernel unpins during the update itself; a request in
 * flight keeps the old buffer until it completes.
 */
#include <fcntl.h>
#include <liburing.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pin-internal.h"

/* The table a context starts with; the probe of growth starts at half. */
#define INITIAL_SLOTS 64u
/* Empty slots per update when a caller's range is emptied: 4 KiB of iovecs. */
#define EMPTY_CHUNK 256u

/* Kernel ABI newer than Debian 12's headers (include/uapi/linux/io_uring.h, 6.13). */
#define PIN_IORING_REGISTER_CLONE_BUFFERS 30
#define PIN_IORING_REGISTER_DST_REPLACE	  (1u << 1)
struct pin_io_uring_clone_buffers {
	uint32_t src_fd;
	uint32_t flags;
	uint32_t src_off;
	uint32_t dst_off;
	uint32_t nr;
	uint32_t pad[3];
};

struct iouring {
	struct io_uring ring; /* libpin's own; unused with the caller's ring */
	int fd;		      /* ring.ring_fd, or libpin's duplicate of the caller's */
	bool caller;	      /* the caller's ring: a fixed range of slots */
	uint32_t first;	      /* the caller's ring: the range's first slot */
	uint32_t size;	      /* own: slots in the kernel's table; caller's: in the range */
	uint32_t nfree;	      /* own: below the last slot, which stays empty until full size */
	uint32_t free_slots[PIN_IOURING_SLOTS]; /* a stack of empty slots, the lowest on top */
};

/* Fill slots [slot, slot + n) with iov[0..n) (an empty iovec empties a slot). */
static int update_slots(int fd, uint32_t slot, const struct iovec *iov, uint32_t n)
{
	for (uint32_t done = 0; done < n;) {
		struct io_uring_rsrc_update2 up = {
			.offset = slot + done,
			.data = (uint64_t)(uintptr_t)(iov + done),
			.nr = n - done,
		};
		long r = syscall(SYS_io_uring_register, fd, IORING_REGISTER_BUFFERS_UPDATE, &up,
				 sizeof(up));
		if (r < 0)
			return -errno;
		done += (uint32_t)r;
	}
	return 0;
}

/* What a refusal of the caller's ring means (io_uring/register.c, rsrc.c). */
static const char *ring_cause(int err)
{
	switch (err) {
	case -EBADF:
		return "not an open file descriptor";
	case -EOPNOTSUPP:
		return "not an io_uring";
	case -ENXIO:
		return "the ring has no buffer table: register a sparse one first "
		       "(IORING_REGISTER_BUFFERS2 with IORING_RSRC_REGISTER_SPARSE)";
	case -EINVAL:
		return "the ring's buffer table ends before the range";
	case -EEXIST:
		return "an IORING_SETUP_SINGLE_ISSUER ring takes registrations from its "
		       "submitter thread only";
	case -EACCES:
		return "the ring's restrictions forbid IORING_REGISTER_BUFFERS_UPDATE";
	}
	return NULL;
}

/* Grow the kernel's table to size slots: clone the empty last slot onto the
 * new last one.  Returns 0 or -errno. */
static int clone_grow(struct iouring *u, uint32_t size)
{
	struct pin_io_uring_clone_buffers c = {
		.src_fd = (uint32_t)u->ring.ring_fd,
		.flags = PIN_IORING_REGISTER_DST_REPLACE,
		.src_off = u->size - 1,
		.dst_off = size - 1,
		.nr = 1,
	};

	if (syscall(SYS_io_uring_register, u->ring.ring_fd, PIN_IORING_REGISTER_CLONE_BUFFERS, &c,
		    1) < 0)
		return -errno;
	return 0;
}

/* Slots [from, to) are free now: under the ones free already, which are lower. */
static void add_free(struct iouring *u, uint32_t from, uint32_t to)
{
	uint32_t n = to - from;

	memmove(u->free_slots + n, u->free_slots, u->nfree * sizeof(u->free_slots[0]));
	for (uint32_t i = 0; i < n; i++)
		u->free_slots[i] = to - 1 - i;
	u->nfree += n;
}

/* Double the table (to full size at most); -ENOSPC when it is full size or
 * the caller's range. */
static int grow(struct iouring *u)
{
	uint32_t size = u->size * 2 < PIN_IOURING_SLOTS ? u->size * 2 : PIN_IOURING_SLOTS;

	if (u->caller || u->size == PIN_IOURING_SLOTS)
		return -ENOSPC;
	int r = clone_grow(u, size);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "io_uring buffer table: clone of slot %u to %u: %s",
			u->size - 1, size - 1, strerror(-r));
		return r;
	}
	/* The old last slot is free now; at full size the last one is too. */
	add_free(u, u->size - 1, size == PIN_IOURING_SLOTS ? size : size - 1);
	u->size = size;
	return 0;
}

/* A small table that grows, else (no clone in this kernel) the whole one. */
static int register_table(struct iouring *u)
{
	int r = io_uring_register_buffers_sparse(&u->ring, INITIAL_SLOTS / 2);

	if (r < 0) {
		pin_log(PIN_LOG_ERR, "io_uring_register_buffers_sparse(%u): %s", INITIAL_SLOTS / 2,
			strerror(-r));
		return r;
	}
	u->size = INITIAL_SLOTS / 2;
	if (clone_grow(u, INITIAL_SLOTS) == 0) {
		u->size = INITIAL_SLOTS;
		add_free(u, 0, INITIAL_SLOTS - 1);
		return 0;
	}
	pin_log(PIN_LOG_DEBUG, "io_uring: no IORING_REGISTER_CLONE_BUFFERS with offsets: a "
			       "full buffer table from the start");
	r = io_uring_unregister_buffers(&u->ring);
	if (r == 0)
		r = io_uring_register_buffers_sparse(&u->ring, PIN_IOURING_SLOTS);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "io_uring_register_buffers_sparse(%u): %s", PIN_IOURING_SLOTS,
			strerror(-r));
		return r;
	}
	u->size = PIN_IOURING_SLOTS;
	add_free(u, 0, PIN_IOURING_SLOTS);
	return 0;
}

static int iouring_open(struct pin_ctx *ctx)
{
	struct iouring *u = calloc(1, sizeof(*u));
	int r;

	if (!u)
		return -ENOMEM;
	r = io_uring_queue_init(ctx->ring_entries, &u->ring, 0);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "io_uring_queue_init(%u): %s", ctx->ring_entries,
			strerror(-r));
		free(u);
		return r;
	}
	r = register_table(u);
	if (r < 0) {
		io_uring_queue_exit(&u->ring);
		free(u);
		return r;
	}
	u->fd = u->ring.ring_fd;
	ctx->be_data = u;
	return 0;
}

static void iouring_close(struct pin_ctx *ctx)
{
	struct iouring *u = ctx->be_data;

	io_uring_queue_exit(&u->ring);
	free(u);
}

/* Empty the caller's slots [first, first + n): they are libpin's from now on. */
static int empty_range(int fd, uint32_t first, uint32_t n)
{
	static const struct iovec empty[EMPTY_CHUNK];

	for (uint32_t done = 0; done < n; done += EMPTY_CHUNK) {
		int r = update_slots(fd, first + done, empty,
				     n - done < EMPTY_CHUNK ? n - done : EMPTY_CHUNK);
		if (r < 0)
			return r;
	}
	return 0;
}

static int caller_open(struct pin_ctx *ctx)
{
	uint32_t first = ctx->ring_first_slot, n = ctx->ring_nslots;
	struct iouring *u;
	int r;

	if (n > PIN_IOURING_SLOTS || first > PIN_IOURING_SLOTS - n) {
		pin_log(PIN_LOG_ERR,
			"io_uring ring fd %d: slots [%u, +%u) pass the kernel's %u buffers per "
			"ring",
			ctx->ring_fd, first, n, PIN_IOURING_SLOTS);
		return -EINVAL;
	}
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->fd = fcntl(ctx->ring_fd, F_DUPFD_CLOEXEC, 0);
	if (u->fd < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "io_uring ring fd %d: fcntl(F_DUPFD_CLOEXEC): %s",
			ctx->ring_fd, strerror(-r));
		free(u);
		return r;
	}
	r = empty_range(u->fd, first, n);
	if (r < 0) {
		const char *cause = ring_cause(r);
		pin_log(PIN_LOG_ERR,
			"io_uring ring fd %d: emptying slots [%u, +%u) "
			"(IORING_REGISTER_BUFFERS_UPDATE): %s%s%s",
			ctx->ring_fd, first, n, strerror(-r), cause ? ": " : "",
			cause ? cause : "");
		close(u->fd);
		free(u);
		return r;
	}
	u->caller = true;
	u->first = first;
	u->size = n;
	add_free(u, first, first + n);
	ctx->be_data = u;
	return 0;
}

static void caller_close(struct pin_ctx *ctx)
{
	struct iouring *u = ctx->be_data;

	close(u->fd);
	free(u);
}

static unsigned int iouring_nbufs(size_t len)
{
	return (unsigned int)((len + PIN_IOURING_BUF_MAX - 1) / PIN_IOURING_BUF_MAX);
}

static int update_slot(struct iouring *u, uint32_t slot, uintptr_t addr, size_t len)
{
	struct iovec iov = { .iov_base = (void *)addr, .iov_len = len };

	return update_slots(u->fd, slot, &iov, 1);
}

static void release_slots(struct iouring *u, struct pin_range *r, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		int err = update_slot(u, r->bufs[i], 0, 0);
		const char *cause = u->caller ? ring_cause(err) : NULL;
		if (err < 0)
			pin_log(PIN_LOG_ERR,
				"io_uring buffer update (empty slot %u of ring fd %d): %s%s%s",
				r->bufs[i], u->fd, strerror(-err), cause ? ": " : "",
				cause ? cause : "");
		u->free_slots[u->nfree++] = r->bufs[i];
	}
}

static int iouring_pin(struct pin_ctx *ctx, struct pin_range *r)
{
	struct iouring *u = ctx->be_data;

	while (u->nfree < r->nbufs) {
		int err = grow(u);
		if (err == -ENOSPC && u->caller)
			pin_log(PIN_LOG_DEBUG,
				"io_uring slots [%u, +%u) of the caller's ring full: %u free, %u "
				"needed",
				u->first, u->size, u->nfree, r->nbufs);
		else if (err == -ENOSPC)
			pin_log(PIN_LOG_DEBUG,
				"io_uring buffer table full: %u slots free, %u needed", u->nfree,
				r->nbufs);
		if (err < 0)
			return err;
	}
	for (unsigned int i = 0; i < r->nbufs; i++) {
		uintptr_t addr = r->start + (uintptr_t)i * PIN_IOURING_BUF_MAX;
		size_t len =
			r->end - addr < PIN_IOURING_BUF_MAX ? r->end - addr : PIN_IOURING_BUF_MAX;
		uint32_t slot = u->free_slots[--u->nfree];
		int err = update_slot(u, slot, addr, len);
		if (err < 0) {
			const char *cause = u->caller ? ring_cause(err) : NULL;
			u->free_slots[u->nfree++] = slot;
			release_slots(u, r, i);
			if (cause)
				pin_log(PIN_LOG_ERR,
					"io_uring buffer registration [%#lx, +%#zx) in slot "
					"%u of ring fd %d: %s: %s",
					(unsigned long)addr, len, slot, u->fd, strerror(-err),
					cause);
			else
				pin_log_pin_error(ctx, "io_uring buffer registration", r, err);
			return err;
		}
		r->bufs[i] = slot;
	}
	return 0;
}

static void iouring_unpin(struct pin_ctx *ctx, struct pin_range *r)
{
	release_slots(ctx->be_data, r, r->nbufs);
}

const struct pin_backend_ops pin_backend_iouring = {
	.name = "io_uring",
	.open = iouring_open,
	.close = iouring_close,
	.nbufs = iouring_nbufs,
	.pin = iouring_pin,
	.unpin = iouring_unpin,
	.unpin_on_monitor = true,
	.dirty_before_unpin = true,
};

const struct pin_backend_ops pin_backend_iouring_caller = {
	.name = "io_uring",
	.open = caller_open,
	.close = caller_close,
	.nbufs = iouring_nbufs,
	.pin = iouring_pin,
	.unpin = iouring_unpin,
	.unpin_on_monitor = false,
	.dirty_before_unpin = true,
};

PIN_EXPORT struct io_uring *pin_ctx_io_uring(struct pin_ctx *ctx)
{
	if (!ctx || ctx->be != &pin_backend_iouring)
		return NULL;
	return &((struct iouring *)ctx->be_data)->ring;
}

PIN_EXPORT int pin_ctx_ring_fd(const struct pin_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	if (ctx->backend != PIN_BACKEND_IO_URING)
		return -EOPNOTSUPP;
	return ((const struct iouring *)ctx->be_data)->fd;
}
