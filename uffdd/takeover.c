// SPDX-License-Identifier: MIT
/*
 * Takeover at start: the sessions a previous daemon left in the fd store
 * (store_start()'s stored descriptors, named s<id>.conn, s<id>.uffd,
 * s<id>.state and f<id>).  For now a stub that closes each descriptor and says
 * so; the rebuild of the sessions replaces it (issue 11).  It may call log.c
 * only.
 */
#include <string.h>
#include <unistd.h>

#include "uffdd.h"

void takeover_run(struct stored_fd *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		ulog(LOG_WARNING, "fd store: %s (fd %d) not taken over yet; closed", v[i].name,
		     v[i].fd);
		if (close(v[i].fd) < 0) {
			int err = errno;
			ulog(LOG_ERR, "close(stored fd %d, %s): %s", v[i].fd, v[i].name,
			     strerror(err));
		}
	}
}
