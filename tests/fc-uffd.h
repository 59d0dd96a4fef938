/* SPDX-License-Identifier: MIT */
/* A userfaultfd as Firecracker makes it: for the fake VMM of the firecracker
 * tests (fc-vmm.c) and the VMM bench-firecracker plays. */
#ifndef FC_UFFD_H
#define FC_UFFD_H

/* Through /dev/userfaultfd where there is one (its docs: kernel 6.1), else
 * the system call; close-on-exec, non-blocking, not user-mode only, its API
 * agreed with UFFD_FEATURE_EVENT_REMOVE (the balloon).  Returns the fd, or
 * -errno. */
int fc_uffd_open(void);

#endif
