// SPDX-License-Identifier: MIT
/*
 * stuck-fuse.h: a FUSE server in a thread, speaking the kernel's protocol
 * (linux/fuse.h) on /dev/fuse directly.  The root directory holds one
 * read-only file; attributes are valid for a day, so the kernel asks for
 * them once; LSEEK is ENOSYS (the kernel then finds the whole file data);
 * READ is counted and never answered.  Closing /dev/fuse aborts the
 * connection: every request waiting fails with ENOTCONN.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
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

struct stuck_fuse {
	char dir[256];
	size_t size;
	int dev;  /* /dev/fuse */
	int stop; /* eventfd */
	pthread_t thread;
	_Atomic unsigned int reads;
	uint8_t *buf;
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
	struct fuse_entry_out o = {
		.nodeid = FILE_INO, .generation = 1, .entry_valid = VALID_S, .attr_valid = VALID_S
	};

	if (in->nodeid != ROOT_INO || strcmp(name, STUCK_FUSE_NAME)) {
		reply(f, in->unique, -ENOENT, NULL, 0);
		return;
	}
	attr_of(f, FILE_INO, &o.attr);
	reply(f, in->unique, 0, &o, sizeof(o));
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
	case FUSE_STATFS: {
		struct fuse_statfs_out o = { .st = { .bsize = 4096, .namelen = 255 } };
		reply(f, in->unique, 0, &o, sizeof(o));
		break;
	}
	case FUSE_READ:
		/* The server is gone: never answered. */
		atomic_fetch_add(&f->reads, 1);
		break;
	case FUSE_FLUSH:
	case FUSE_RELEASE:
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
			       { .fd = f->stop, .events = POLLIN } };

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fail("poll", errno);
			break;
		}
		if (p[1].revents)
			break;
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
	f->stop = eventfd(0, EFD_CLOEXEC);
	f->dev = open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	f->buf = malloc(BUF_BYTES);
	if (f->stop < 0 || f->dev < 0 || !f->buf) {
		r = fail("eventfd, open /dev/fuse or malloc", f->buf ? errno : ENOMEM);
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
	*ret = f;
	return 0;
out:
	if (f->dev >= 0)
		close(f->dev);
	if (f->stop >= 0)
		close(f->stop);
	free(f->buf);
	free(f);
	return r;
}

void stuck_fuse_forget(struct stuck_fuse *f)
{
	close(f->dev);
	close(f->stop);
}

unsigned int stuck_fuse_reads(struct stuck_fuse *f)
{
	return atomic_load(&f->reads);
}

void stuck_fuse_free(struct stuck_fuse *f)
{
	uint64_t one = 1;

	if (!f)
		return;
	if (write(f->stop, &one, sizeof(one)) != sizeof(one))
		fail("write eventfd", errno);
	pthread_join(f->thread, NULL);
	/* The last descriptor of the connection: it is aborted. */
	close(f->dev);
	if (umount2(f->dir, MNT_DETACH) < 0)
		fail("umount2", errno);
	close(f->stop);
	free(f->buf);
	free(f);
}
