/* SPDX-License-Identifier: MIT */
/*
 * CRIU's page-server protocol, private to pageserver.c (the connection) and
 * pageserver-gets.c (the GETs streamed over it).
 */
#ifndef LIBPIN_PAGESERVER_INTERNAL_H
#define LIBPIN_PAGESERVER_INTERNAL_H

#include <string.h>
#include <unistd.h>

#include "libpin-private.h"

/* criu/page-xfer.c */
#define PS_IOV_ADD   1
#define PS_IOV_ADD_F 6
#define PS_IOV_GET   7
#define PS_IOV_CLOSE 0x1023
#define PS_CMD_BITS  16
#define PS_CMD_MASK  ((1u << PS_CMD_BITS) - 1)

/* CRIU's struct, declared alike so that it is laid out alike on every ABI;
 * its padding is sent as zeros (ps_iov()) and ignored when read. */
struct ps_iov {
	uint32_t cmd;
	uint64_t nr_pages;
	uint64_t vaddr;
	uint64_t dst_id;
};

_Static_assert(sizeof(struct ps_iov) == PIN_PS_IOV_BYTES, "a GET is PIN_PS_IOV_BYTES");

struct pin_ps {
	int fd;
	char peer[96]; /* "ADDR:PORT" for messages */
};

static inline uint64_t page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

/* A request, no byte of it left to chance. */
static inline struct ps_iov ps_iov(uint32_t cmd, uint64_t nr_pages, uint64_t vaddr, uint64_t dst_id)
{
	struct ps_iov iov;

	memset(&iov, 0, sizeof(iov));
	iov.cmd = cmd;
	iov.nr_pages = nr_pages;
	iov.vaddr = vaddr;
	iov.dst_id = dst_id;
	return iov;
}

/* poll(2) for events on ps's socket, timeout_ms at most (EINTR retried
 * with what is left): 0 when they came, -ETIMEDOUT, or -errno. */
int ps_wait_for(struct pin_ps *ps, short events, int timeout_ms);

#endif
