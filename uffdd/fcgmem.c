// SPDX-License-Identifier: MIT
/*
 * The guest_memfd variant of Firecracker's handshake (its secret-free
 * restore): three descriptors, the userfaultfd, the guest_memfd that holds
 * the guest's memory (a mapping's offset is its offset there as in the
 * memory file) and a memfd of the userfault bitmap (one bit per page of
 * guest memory; set: KVM exits to the VMM when the guest touches the page).
 * The VMM registers its MAP_SHARED mapping of the guest_memfd MISSING and
 * MINOR on the userfaultfd, and asks for the vCPUs' pages on the
 * connection (FaultRequest, answered by FaultReply: a 4-byte length, then
 * bitcode).  Serving it takes what mainline Linux does not have: a
 * guest_memfd mapping registered with userfaultfd, KVM_MEM_USERFAULT, and
 * write() to a guest_memfd.  This file checks the three descriptors against
 * the mappings and probes the one step the handler's side needs first, a
 * registration over the guest_memfd, on a mapping of its own: its answer is
 * the reason a VM is refused.  It may call log.c, util.c and libpin's uffd
 * calls.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "uffdd.h"

/* What /proc/self/fd/N reads for a guest_memfd (KVM's anonymous inode),
 * and the start of a memfd's. */
#define GMEM_LINK  "anon_inode:[kvm-gmem]"
#define MEMFD_LINK "/memfd:"

/* The target of descriptor fd, into buf; "" when it cannot be read. */
static const char *fd_link(int fd, char *buf, size_t size)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, buf, size - 1);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/* The guest_memfd: KVM's, holding every mapping's [offset, offset + size). */
static int check_gmem(int fd, const struct fc_map *v, size_t n, char *why, size_t whylen)
{
	char link[128];
	struct stat st;

	if (strcmp(fd_link(fd, link, sizeof(link)), GMEM_LINK)) {
		snprintf(why, whylen, "descriptor 1 is not a guest_memfd (%s)", link);
		return -EBADF;
	}
	if (fstat(fd, &st) < 0) {
		int err = errno;
		snprintf(why, whylen, "fstat(guest_memfd)");
		return -err;
	}
	for (size_t i = 0; i < n; i++)
		if (v[i].off + v[i].len > (uint64_t)st.st_size) {
			snprintf(why, whylen,
				 "mapping at %#" PRIx64 ": offset %#" PRIx64 " + size %#" PRIx64
				 " is past the end of the guest_memfd (%#jx bytes)",
				 v[i].addr, v[i].off, v[i].len, (intmax_t)st.st_size);
			return -EINVAL;
		}
	return 0;
}

/* The userfault bitmap: a memfd of a bit per page of the guest's memory
 * (Firecracker's size: its bytes / page / 8). */
static int check_bitmap(int fd, const struct fc_map *v, size_t n, char *why, size_t whylen)
{
	char link[128];
	struct stat st;
	uint64_t bytes = 0;

	if (strncmp(fd_link(fd, link, sizeof(link)), MEMFD_LINK, strlen(MEMFD_LINK))) {
		snprintf(why, whylen, "descriptor 2 is not a memfd (%s)", link);
		return -EBADF;
	}
	if (fstat(fd, &st) < 0) {
		int err = errno;
		snprintf(why, whylen, "fstat(the userfault bitmap)");
		return -err;
	}
	for (size_t i = 0; i < n; i++)
		bytes += v[i].len;
	uint64_t need = bytes / uffdd_page / CHAR_BIT;
	if ((uint64_t)st.st_size < need) {
		snprintf(why, whylen,
			 "the userfault bitmap has %jd bytes; %" PRIu64 " pages of guest memory "
			 "need %" PRIu64,
			 (intmax_t)st.st_size, bytes / uffdd_page, need);
		return -EINVAL;
	}
	return 0;
}

/*
 * Whether this kernel registers a guest_memfd mapping with userfaultfd:
 * one page of fd at off, mapped here and registered MINOR (user-mode only:
 * a probe, nothing faults).  0 when it does.
 */
static int probe_register(int fd, uint64_t off, char *why, size_t whylen)
{
	struct pin_uffd_opts o = { .sz = sizeof(o),
				   .flags = PIN_UFFD_CLOEXEC | PIN_UFFD_NONBLOCK |
					    PIN_UFFD_USER_MODE_ONLY };
	struct pin_uffd *u = NULL;

	void *p = mmap(NULL, uffdd_page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
	if (p == MAP_FAILED) {
		int err = errno;
		snprintf(why, whylen, "mmap of the guest_memfd at %#" PRIx64 "%s", off,
			 err == ENODEV ? " (made without GUEST_MEMFD_FLAG_MMAP)" : "");
		return -err;
	}
	int r = pin_uffd_new(&o, &u);
	if (r < 0)
		snprintf(why, whylen, "a userfaultfd to probe the guest_memfd with");
	else {
		r = pin_uffd_register(u, p, uffdd_page, PIN_UFFD_REGISTER_MINOR, NULL);
		if (r < 0)
			snprintf(why, whylen,
				 "this kernel does not register a guest_memfd mapping with "
				 "userfaultfd (UFFDIO_REGISTER MINOR): the VM's faults cannot be "
				 "served");
	}
	pin_uffd_free(u);
	munmap(p, uffdd_page);
	return r;
}

int fcgmem_refusal(const struct fcmsg *m, const struct fc_map *v, size_t n, uint64_t page,
		   char *why, size_t whylen)
{
	if (page != uffdd_page) {
		snprintf(why, whylen,
			 "pages of %" PRIu64 " bytes (Firecracker restores no guest_memfd VM of "
			 "hugetlbfs)",
			 page);
		return -EINVAL;
	}
	int r = check_gmem(m->fds[1], v, n, why, whylen);
	if (r >= 0)
		r = check_bitmap(m->fds[2], v, n, why, whylen);
	if (r >= 0)
		r = probe_register(m->fds[1], v[0].off, why, whylen);
	if (r >= 0) {
		snprintf(why, whylen, "uffdd serves no guest_memfd VM yet (issue 15)");
		r = -EOPNOTSUPP;
	}
	return r;
}
