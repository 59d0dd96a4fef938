/* SPDX-License-Identifier: MIT */
/* CRIU's lazy-pages socket, the restore side's peer (lazy-sock.c). */
#ifndef UFFDD_LAZY_SOCK_H
#define UFFDD_LAZY_SOCK_H

#include <stdint.h>

/* Listen on DIR/lazy-pages.socket (one connection); the socket file goes
 * on SIGTERM, SIGINT or SIGHUP.  The listening fd, or -errno (said on
 * stderr). */
int lazy_sock_listen(const char *dir);
/* Remove the socket file, and its removal on those signals. */
void lazy_sock_remove(void);
/* The next 4-byte word of the stream; -ECONNRESET at EOF. */
int lazy_sock_read_word(int sock, uint32_t *ret);
/* The one byte that carries a task's userfaultfd: the fd, or -errno
 * (-EBADMSG: not one byte with one descriptor). */
int lazy_sock_read_fd(int sock);

#endif
