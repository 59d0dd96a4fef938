// SPDX-License-Identifier: MIT
/* A userfaultfd as Firecracker makes it (see fc-uffd.h); calls the kernel only. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fc-uffd.h"

int fc_uffd_open(void)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC), fd, err;

	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		err = errno;
		close(dev);
	} else {
		fd = (int)syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		err = errno;
	}
	if (fd < 0)
		return -err;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		err = errno;
		close(fd);
		return -err;
	}
	return fd;
}
