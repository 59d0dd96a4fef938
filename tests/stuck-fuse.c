// SPDX-License-Identifier: MIT
/*
 * stuck-fuse.h: a FUSE server in a thread, speaking the kernel's protocol
 * (linux/fuse.h) on /dev/fuse directly.  The root directory holds one
 * read-only file; the root's attributes and the name are valid for a day,
 * the file's attributes expire at once, and its GETATTR, like STATFS and
 * LSEEK, is never answered; READ is counted and never answered, until
 * stuck_fuse_answer(); FLUSH and RELEASE are answered until
 * stuck_fuse_hang_flush().  Closing /dev/fuse aborts the connection: every
 * request waiting fails with ENOTCONN.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include "stuck-fuse.h"

#define ROOT_INO 1
#define FILE_INO 2
/* Attributes and names stay valid this long (seconds): asked for once. */
#define VALID_S (24 * 3600)
/* A request's room: the kernel wants FUSE_MIN_READ_BUFFER at least, and
 * writes of up to max_write (which this server never takes). */
#define BUF_BYTES (1u << 20)
#define MAX_WRITE 4096

/* READs kept waiting, at most (the kernel has a few under way at once). */
#define PENDING_MAX 64

struct read_req {
	uint64_t unique, off;
	uint32_t size;
};

struct stuck_fuse {
	char dir[256];
	size_t size;
	int dev;  /* /dev/fuse */
	int kick; /* eventfd: look at stopping and answering */
	pthread_t thread;
	_Atomic bool stopping, answering, hang_flush;
	_Atomic unsigned int reads, stalled, flushes;
	dev_t conn; /* the connection's number: its mount's device */
	uint8_t *buf;
	/* The server thread's: READs waiting, and room for an answer. */
	struct read_req pending[PENDING_MAX];
	size_t npending;
	uint64_t *data;
};

static int fail(const char *what, int err)
{
	fprintf(stderr, "stuck-fuse: %s: %s\n", what, strerror(err));
	return -err;
}

static void reply(struct stuck_fuse *f, uint64_t unique, int error, const void *body, size_t len)
{
	struct fuse_out_header h = { .len = (uint32_t)(sizeof(h) + len),
				     .error = error,
				     .unique = unique };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)body, len } };

	/* ENOENT: the request was interrupted meanwhile; nothing to do. */
	if (writev(f->dev, iov, body ? 2 : 1) < 0 && errno != ENOENT)
		fail("writev /dev/fuse", errno);
}

static void attr_of(const struct stuck_fuse *f, uint64_t ino, struct fuse_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = ino;
	a->nlink = 1;
	a->blksize = 4096;
	if (ino == ROOT_INO) {
		a->mode = S_IFDIR | 0755;
		a->nlink = 2;
		return;
	}
	a->mode = S_IFREG | 0444;
	a->size = f->size;
	a->blocks = (f->size + 511) / 512;
}

static void on_init(struct stuck_fuse *f, const struct fuse_in_header *in, const void *arg)
{
	const struct fuse_init_in *ii = arg;
	struct fuse_init_out o = {
		.major = FUSE_KERNEL_VERSION,
		.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor
							       : FUSE_KERNEL_MINOR_VERSION,
		.max_readahead = ii->max_readahead,
		.max_write = MAX_WRITE,
	};

	reply(f, in->unique, 0, &o, sizeof(o));
}

static void on_lookup(struct stuck_fuse *f, const struct fuse_in_header *in, const char *name)
{
	/* The file's attributes expire at once: an fstat() would ask for
	 * them again, and wait for ever. */
	struct fuse_entry_out o = { .nodeid = FILE_INO, .generation = 1, .entry_valid = VALID_S };

	if (in->nodeid != ROOT_INO || strcmp(name, STUCK_FUSE_NAME)) {
		reply(f, in->unique, -ENOENT, NULL, 0);
		return;
	}
	attr_of(f, FILE_INO, &o.attr);
	reply(f, in->unique, 0, &o, sizeof(o));
}

uint64_t stuck_fuse_word(uint64_t off)
{
	return off * 0x9e3779b97f4a7c15ull ^ 0x57c4f5e;
}

static void answer_read(struct stuck_fuse *f, const struct read_req *q)
{
	uint64_t end = q->off + q->size < f->size ? q->off + q->size : f->size;
	size_t n = end > q->off ? (size_t)(end - q->off) : 0;

	for (size_t i = 0; i < n / 8; i++)
		f->data[i] = stuck_fuse_word(q->off + 8 * i);
	reply(f, q->unique, 0, n ? f->data : NULL, n);
}

static void on_read(struct stuck_fuse *f, const struct fuse_in_header *in, const void *arg)
{
	const struct fuse_read_in *r = arg;
	struct read_req q = { in->unique, r->offset, r->size };

	atomic_fetch_add(&f->reads, 1);
	if (q.size > BUF_BYTES || q.off % 8) {
		reply(f, q.unique, -EINVAL, NULL, 0);
		return;
	}
	if (atomic_load(&f->answering))
		answer_read(f, &q);
	else if (f->npending < PENDING_MAX)
		/* The server is gone: not answered (until it comes back). */
		f->pending[f->npending++] = q;
}

static void serve_one(struct stuck_fuse *f, size_t len)
{
	const struct fuse_in_header *in = (const void *)f->buf;
	const void *arg = f->buf + sizeof(*in);

	if (len < sizeof(*in))
		return;
	switch (in->opcode) {
	case FUSE_INIT:
		on_init(f, in, arg);
		break;
	case FUSE_LOOKUP:
		on_lookup(f, in, arg);
		break;
	case FUSE_GETATTR: {
		/* The file's attributes came with its LOOKUP: asked again,
		 * the server is gone (uffdd must not ask: fstat_cached()). */
		if (in->nodeid == FILE_INO) {
			atomic_fetch_add(&f->stalled, 1);
			break;
		}
		struct fuse_attr_out o = { .attr_valid = VALID_S };
		attr_of(f, in->nodeid, &o.attr);
		reply(f, in->unique, 0, &o, sizeof(o));
		break;
	}
	case FUSE_OPEN:
	case FUSE_OPENDIR: {
		/* Keep the cache: else an open waits for the pages a READ
		 * under way holds locked. */
		struct fuse_open_out o = { .fh = in->nodeid, .open_flags = FOPEN_KEEP_CACHE };
		reply(f, in->unique, 0, &o, sizeof(o));
		break;
	}
	case FUSE_STATFS:
	case FUSE_LSEEK:
		/* Gone too: uffdd must not ask (a file that may block is all
		 * data to it, and never fstatfs()'d). */
		atomic_fetch_add(&f->stalled, 1);
		break;
	case FUSE_READ:
		on_read(f, in, arg);
		break;
	case FUSE_FLUSH:
	case FUSE_RELEASE:
		/* Gone too, once told: a close() waits. */
		if (atomic_load(&f->hang_flush)) {
			if (in->opcode == FUSE_FLUSH)
				atomic_fetch_add(&f->flushes, 1);
			break;
		}
		reply(f, in->unique, 0, NULL, 0);
		break;
	case FUSE_RELEASEDIR:
		reply(f, in->unique, 0, NULL, 0);
		break;
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:
		/* No reply: the kernel expects none. */
		break;
	default:
		reply(f, in->unique, -ENOSYS, NULL, 0);
		break;
	}
}

static void *server(void *arg)
{
	struct stuck_fuse *f = arg;
	struct pollfd p[2] = { { .fd = f->dev, .events = POLLIN },
			       { .fd = f->kick, .events = POLLIN } };

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fail("poll", errno);
			break;
		}
		if (p[1].revents) {
			uint64_t v;
			if (read(f->kick, &v, sizeof(v)) < 0 && errno != EAGAIN)
				fail("read eventfd", errno);
			if (atomic_load(&f->stopping))
				break;
			if (atomic_load(&f->answering))
				for (; f->npending; f->npending--)
					answer_read(f, &f->pending[f->npending - 1]);
			continue;
		}
		ssize_t n = read(f->dev, f->buf, BUF_BYTES);
		if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == ENOENT))
			continue;
		if (n < 0) {
			/* ENODEV: unmounted. */
			if (errno != ENODEV)
				fail("read /dev/fuse", errno);
			break;
		}
		serve_one(f, (size_t)n);
	}
	return NULL;
}

int stuck_fuse_new(const char *dir, size_t size, struct stuck_fuse **ret)
{
	struct stuck_fuse *f = calloc(1, sizeof(*f));
	char opts[128];
	int r;

	if (!f)
		return -ENOMEM;
	snprintf(f->dir, sizeof(f->dir), "%s", dir);
	f->size = size;
	f->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	f->dev = open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	f->buf = malloc(BUF_BYTES);
	f->data = malloc(BUF_BYTES);
	if (f->kick < 0 || f->dev < 0 || !f->buf || !f->data) {
		r = fail("eventfd, open /dev/fuse or malloc", f->buf && f->data ? errno : ENOMEM);
		goto out;
	}
	snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other",
		 f->dev);
	if (mount("stuck", dir, "fuse.stuck", MS_NOSUID | MS_NODEV, opts) < 0) {
		r = fail("mount -t fuse", errno);
		goto out;
	}
	r = pthread_create(&f->thread, NULL, server, f);
	if (r) {
		umount2(dir, MNT_DETACH);
		r = fail("pthread_create", r);
		goto out;
	}
	/* The root's attributes: the server answers them (it runs now). */
	struct stat st;
	if (stat(dir, &st) < 0) {
		r = fail("stat of the mount", errno);
		stuck_fuse_free(f);
		return r;
	}
	f->conn = st.st_dev;
	*ret = f;
	return 0;
out:
	if (f->dev >= 0)
		close(f->dev);
	if (f->kick >= 0)
		close(f->kick);
	free(f->buf);
	free(f->data);
	free(f);
	return r;
}

void stuck_fuse_forget(struct stuck_fuse *f)
{
	close(f->dev);
	close(f->kick);
}

static void kick(struct stuck_fuse *f)
{
	uint64_t one = 1;

	if (write(f->kick, &one, sizeof(one)) != sizeof(one))
		fail("write eventfd", errno);
}

void stuck_fuse_answer(struct stuck_fuse *f)
{
	atomic_store(&f->answering, true);
	kick(f);
}

void stuck_fuse_hang_flush(struct stuck_fuse *f)
{
	atomic_store(&f->hang_flush, true);
}

unsigned int stuck_fuse_flushes(struct stuck_fuse *f)
{
	return atomic_load(&f->flushes);
}

int stuck_fuse_abort(struct stuck_fuse *f)
{
	char path[64];
	int r = 0;

	/* The connection's number is its device's minor (major 0). */
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", minor(f->conn));
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(path, errno);
	if (write(fd, "1", 1) != 1)
		r = fail(path, errno);
	close(fd);
	return r;
}

unsigned int stuck_fuse_reads(struct stuck_fuse *f)
{
	return atomic_load(&f->reads);
}

unsigned int stuck_fuse_stalled(struct stuck_fuse *f)
{
	return atomic_load(&f->stalled);
}

void stuck_fuse_free(struct stuck_fuse *f)
{
	if (!f)
		return;
	atomic_store(&f->stopping, true);
	kick(f);
	pthread_join(f->thread, NULL);
	/* The last descriptor of the connection: it is aborted. */
	close(f->dev);
	if (umount2(f->dir, MNT_DETACH) < 0)
		fail("umount2", errno);
	close(f->kick);
	free(f->buf);
	free(f->data);
	free(f);
}
