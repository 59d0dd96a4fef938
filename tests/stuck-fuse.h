/* SPDX-License-Identifier: MIT */
/*
 * A source stuck the way a network file system's is when its server is gone
 * (issue 12, row 9): a FUSE file system of one file, served through
 * /dev/fuse without libfuse, that answers what opening its file takes, and
 * never READ (nor GETATTR of the file once looked up, STATFS, LSEEK).  A read of the file's data
 * waits in the kernel until the connection is aborted, or the server comes back
 * (stuck_fuse_answer()); on request, FLUSH and RELEASE hang too
 * (stuck_fuse_hang_flush()).  Root only (mount).  Every call returns 0 or -errno and says why on
 * stderr.
 */
#ifndef STUCK_FUSE_H
#define STUCK_FUSE_H

#include <stddef.h>
#include <stdint.h>

struct stuck_fuse;

/* Mount it on dir (an empty directory), its file of size bytes named
 * STUCK_FUSE_NAME in it; readable by every uid. */
int stuck_fuse_new(const char *dir, size_t size, struct stuck_fuse **ret);
#define STUCK_FUSE_NAME "stuck"
/* In a child forked after stuck_fuse_new(): close its copy of the
 * connection, so that the server's process holds the only one (when it
 * exits, the connection is aborted). */
void stuck_fuse_forget(struct stuck_fuse *f);
/* READ requests received (none answered). */
unsigned int stuck_fuse_reads(struct stuck_fuse *f);
/* Other requests received that it leaves unanswered for ever: the file's
 * GETATTR (its attributes came with its LOOKUP), STATFS and LSEEK. */
unsigned int stuck_fuse_stalled(struct stuck_fuse *f);
/* From now on FLUSH and RELEASE are not answered either (counted): a
 * close() of the file waits in the kernel until the connection is aborted. */
void stuck_fuse_hang_flush(struct stuck_fuse *f);
/* FLUSH requests received while they hang (none answered). */
unsigned int stuck_fuse_flushes(struct stuck_fuse *f);
/* Abort the connection through /sys/fs/fuse/connections/N/abort, as an
 * administrator would: every request waiting fails with ENOTCONN. */
int stuck_fuse_abort(struct stuck_fuse *f);
/* The server comes back: it answers the READs waiting and every one after,
 * the file's 64-bit word at byte offset off (a multiple of 8) being
 * stuck_fuse_word(off). */
void stuck_fuse_answer(struct stuck_fuse *f);
uint64_t stuck_fuse_word(uint64_t off);
/* Abort the connection (every read waiting fails), unmount and free;
 * accepts NULL. */
void stuck_fuse_free(struct stuck_fuse *f);

#endif /* STUCK_FUSE_H */
