/* SPDX-License-Identifier: MIT */
/* A client's TCP connection to a page server on loopback: for the clients of
 * area remote (remote-harness.c) and bench-remote. */
#ifndef LOOPBACK_H
#define LOOPBACK_H

#include <stdint.h>

/* Connected to 127.0.0.1:port, close-on-exec, with TCP_NODELAY (as CRIU's:
 * no Nagle wait between a request's parts).  Returns the fd, or -errno. */
int loopback_connect(uint16_t port);

#endif
