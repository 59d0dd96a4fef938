/* SPDX-License-Identifier: MIT */
/*
 * libpin: a safe wrapper of the Linux userfaultfd API, memory pinning through
 * pin_user_pages, and the client side of the uffdd protocol.
 *
 * Every call returns >= 0 on success and -errno on failure.  The library never
 * prints; install a log callback with pin_log_set() to learn why a call failed.
 */
#ifndef LIBPIN_H
#define LIBPIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- logging ----------------------------------------------------------- */

enum pin_log_level {
	PIN_LOG_ERR = 3,
	PIN_LOG_WARN = 4,
	PIN_LOG_INFO = 6,
	PIN_LOG_DEBUG = 7,
};

typedef void (*pin_log_fn)(enum pin_log_level level, const char *msg, void *userdata);

/* Install (or with NULL remove) the process-wide log callback. */
void pin_log_set(pin_log_fn fn, void *userdata);

/* ---- userfaultfd ------------------------------------------------------- */

struct pin_uffd;

/* pin_uffd_open() flags */
#define PIN_UFFD_CLOEXEC	   0x1u
#define PIN_UFFD_NONBLOCK	   0x2u
/* Faults taken in kernel mode (GUP, copy_to_user) are not reported: they
 * fail with EFAULT instead.  Never use it on ranges that get pinned. */
#define PIN_UFFD_USER_MODE_ONLY	   0x4u
/* Use the userfaultfd(2) syscall, not /dev/userfaultfd. */
#define PIN_UFFD_SYSCALL	   0x8u

/* Features, the kernel's UFFD_FEATURE_* bits (a stable ABI). */
#define PIN_UFFD_FEATURE_PAGEFAULT_FLAG_WP	(1ull << 0)
#define PIN_UFFD_FEATURE_EVENT_FORK		(1ull << 1)
#define PIN_UFFD_FEATURE_EVENT_REMAP		(1ull << 2)
#define PIN_UFFD_FEATURE_EVENT_REMOVE		(1ull << 3)
#define PIN_UFFD_FEATURE_MISSING_HUGETLBFS	(1ull << 4)
#define PIN_UFFD_FEATURE_MISSING_SHMEM		(1ull << 5)
#define PIN_UFFD_FEATURE_EVENT_UNMAP		(1ull << 6)
#define PIN_UFFD_FEATURE_SIGBUS			(1ull << 7)
#define PIN_UFFD_FEATURE_THREAD_ID		(1ull << 8)
#define PIN_UFFD_FEATURE_MINOR_HUGETLBFS	(1ull << 9)
#define PIN_UFFD_FEATURE_MINOR_SHMEM		(1ull << 10)
#define PIN_UFFD_FEATURE_EXACT_ADDRESS		(1ull << 11)
#define PIN_UFFD_FEATURE_WP_HUGETLBFS_SHMEM	(1ull << 12)
#define PIN_UFFD_FEATURE_WP_UNPOPULATED		(1ull << 13)
#define PIN_UFFD_FEATURE_POISON			(1ull << 14)
#define PIN_UFFD_FEATURE_WP_ASYNC		(1ull << 15)
#define PIN_UFFD_FEATURE_MOVE			(1ull << 16)

/* Register modes, the kernel's UFFDIO_REGISTER_MODE_* bits. */
#define PIN_UFFD_REGISTER_MISSING  0x1u
#define PIN_UFFD_REGISTER_WP	   0x2u
#define PIN_UFFD_REGISTER_MINOR	   0x4u

/* Range ioctls a registration allows (pin_uffd_register() ret_ioctls):
 * the kernel's 1 << _UFFDIO_* bits. */
#define PIN_UFFD_IOCTL_WAKE	   (1ull << 2)
#define PIN_UFFD_IOCTL_COPY	   (1ull << 3)
#define PIN_UFFD_IOCTL_ZEROPAGE	   (1ull << 4)
#define PIN_UFFD_IOCTL_MOVE	   (1ull << 5)
#define PIN_UFFD_IOCTL_WRITEPROTECT (1ull << 6)
#define PIN_UFFD_IOCTL_CONTINUE	   (1ull << 7)
#define PIN_UFFD_IOCTL_POISON	   (1ull << 8)

/* Flags of the resolving calls; each call takes the ones that apply. */
#define PIN_UFFD_DONTWAKE	   0x1u /* all: do not wake the faulting threads */
#define PIN_UFFD_WP		   0x2u /* copy, continue: map write-protected;
					   writeprotect: protect (else unprotect) */
#define PIN_UFFD_ALLOW_SRC_HOLES   0x4u /* move: skip unpopulated source pages */

struct pin_uffd_opts {
	size_t sz;		/* sizeof(struct pin_uffd_opts) */
	unsigned int flags;	/* PIN_UFFD_CLOEXEC ... */
	uint64_t features;	/* required: -EOPNOTSUPP when one is missing */
	uint64_t optional;	/* granted when the kernel has them */
};

/*
 * Open a userfaultfd and complete the API handshake: required features that
 * the kernel lacks fail with -EOPNOTSUPP (pin_uffd_probe() tells which).
 * opts may be NULL (CLOEXEC, no features).
 */
int pin_uffd_new(const struct pin_uffd_opts *opts, struct pin_uffd **ret);
/* Open a userfaultfd without the handshake; call pin_uffd_api() next. */
int pin_uffd_open(unsigned int flags, struct pin_uffd **ret);
/* The UFFDIO_API handshake, once per userfaultfd (a second one fails with
 * -EINVAL); granted features are then in pin_uffd_features(). */
int pin_uffd_api(struct pin_uffd *u, uint64_t features);
/* Adopt a userfaultfd that already went through the handshake (one received
 * over a socket, or a FORK event's).  Takes ownership of fd on success. */
int pin_uffd_from_fd(int fd, uint64_t features, struct pin_uffd **ret);
/* Learn what this kernel offers, on a throw-away userfaultfd. */
int pin_uffd_probe(uint64_t *ret_features, uint64_t *ret_ioctls);
/* Name of one feature bit ("MOVE"), NULL for an unknown bit. */
const char *pin_uffd_feature_name(uint64_t feature);
/* Close the userfaultfd and free; accepts NULL. */
void pin_uffd_free(struct pin_uffd *u);

int pin_uffd_fd(const struct pin_uffd *u);
uint64_t pin_uffd_features(const struct pin_uffd *u);

int pin_uffd_register(struct pin_uffd *u, void *addr, size_t len, unsigned int mode,
		      uint64_t *ret_ioctls);
int pin_uffd_unregister(struct pin_uffd *u, void *addr, size_t len);

/*
 * The resolving calls.  ret_done (may be NULL) receives the kernel's progress
 * field even when the call fails: bytes done before the error, or a negative
 * errno when nothing was done (-EAGAIN while a non-cooperative event is
 * pending, -EEXIST when the first page is already there).  A partial success
 * returns -EAGAIN with *ret_done > 0: continue at addr + *ret_done.
 */
int pin_uffd_copy(struct pin_uffd *u, void *dst, const void *src, size_t len,
		  unsigned int flags, int64_t *ret_done);
int pin_uffd_zeropage(struct pin_uffd *u, void *dst, size_t len, unsigned int flags,
		      int64_t *ret_done);
int pin_uffd_continue(struct pin_uffd *u, void *addr, size_t len, unsigned int flags,
		      int64_t *ret_done);
int pin_uffd_poison(struct pin_uffd *u, void *addr, size_t len, unsigned int flags,
		    int64_t *ret_done);
int pin_uffd_move(struct pin_uffd *u, void *dst, void *src, size_t len, unsigned int flags,
		  int64_t *ret_done);
int pin_uffd_writeprotect(struct pin_uffd *u, void *addr, size_t len, unsigned int flags);
int pin_uffd_wake(struct pin_uffd *u, void *addr, size_t len);

enum pin_uffd_event_type {
	PIN_UFFD_EVENT_PAGEFAULT = 1,
	PIN_UFFD_EVENT_FORK,
	PIN_UFFD_EVENT_REMAP,
	PIN_UFFD_EVENT_REMOVE,
	PIN_UFFD_EVENT_UNMAP,
};

/* Page fault flags, the kernel's UFFD_PAGEFAULT_FLAG_* bits. */
#define PIN_UFFD_PF_WRITE	   0x1u
#define PIN_UFFD_PF_WP		   0x2u
#define PIN_UFFD_PF_MINOR	   0x4u

struct pin_uffd_event {
	uint32_t type; /* enum pin_uffd_event_type */
	uint32_t pad;
	union {
		struct {
			uint64_t address;
			uint32_t flags; /* PIN_UFFD_PF_* */
			uint32_t tid;	/* with PIN_UFFD_FEATURE_THREAD_ID, else 0 */
		} pagefault;
		struct {
			int fd; /* the child's userfaultfd; the caller owns it */
		} fork;
		struct {
			uint64_t from;
			uint64_t to;
			uint64_t len;
		} remap;
		struct {
			uint64_t start;
			uint64_t end;
		} remove, unmap;
		uint64_t reserved[4];
	} arg;
};

/*
 * Read up to max events with as few read() calls as it takes.  Returns the
 * number read, -EAGAIN when a non-blocking userfaultfd has none.
 */
int pin_uffd_read_events(struct pin_uffd *u, struct pin_uffd_event *events, size_t max);

#ifdef __cplusplus
}
#endif

#endif /* LIBPIN_H */
