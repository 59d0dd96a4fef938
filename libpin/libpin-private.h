/* SPDX-License-Identifier: MIT */
/* Declarations shared inside libpin; never installed. */
#ifndef LIBPIN_PRIVATE_H
#define LIBPIN_PRIVATE_H

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "libpin.h"

#define PIN_EXPORT __attribute__((visibility("default")))

#define PIN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Kernel ABI newer than Debian 12's linux-libc-dev (6.1).  The values are
 * fixed by include/uapi/linux/userfaultfd.h and never change.
 */
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#define UFFD_FEATURE_POISON	    (1 << 14)
#define UFFD_FEATURE_WP_ASYNC	    (1 << 15)
#define UFFD_FEATURE_MOVE	    (1 << 16)
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif
#ifndef UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#define UFFDIO_MOVE_MODE_DONTWAKE	 ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

/* Log through the callback of pin_log_set(); a no-op without one. */
void pin_log(enum pin_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ioctl(2) with EINTR retried; returns 0 or -errno. */
int pin_ioctl(int fd, unsigned long request, void *arg);

/*
 * Check a growable options struct (libbpf style): sz must cover at least the
 * first member, and bytes the caller has beyond what we know must be zero.
 */
int pin_opts_check(const void *opts, size_t user_sz, size_t known_sz);

static inline void pin_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

static inline void pin_freep(void *p)
{
	free(*(void **)p);
}

/* ---- the uffdd protocol (proto.c; see proto/uffdd.proto) -------------- */

#include "uffdd.pb-c.h"

#define PIN_PROTO_VERSION  1
#define PIN_PROTO_MAX_MSG  (256 * 1024) /* one datagram, encoded */
#define PIN_PROTO_MAX_FDS  4

/* Encode msg and send it as one datagram with nfds descriptors attached. */
int pin_proto_send(int sock, const Uffdd__Msg *msg, const int *fds, size_t nfds);
/*
 * Receive one datagram and decode it strictly: truncated (MSG_TRUNC/CTRUNC),
 * oversized, undecodable or body-less messages fail with -EBADMSG, a wrong
 * number of descriptors for the body with -EBADF, a range whose end wraps with
 * -EOVERFLOW.  Descriptors that came with a rejected message are closed.
 * Returns 0 and *ret_msg (free with pin_proto_free()), or -ECONNRESET at EOF.
 */
int pin_proto_recv(int sock, Uffdd__Msg **ret_msg, int *fds, size_t *ret_nfds);
void pin_proto_free(Uffdd__Msg *msg);
/* How many descriptors a message of this body must carry. */
size_t pin_proto_fds_expected(const Uffdd__Msg *msg);

#define _cleanup_close_ __attribute__((cleanup(pin_closep)))
#define _cleanup_free_	__attribute__((cleanup(pin_freep)))

#endif /* LIBPIN_PRIVATE_H */
