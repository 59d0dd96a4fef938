// SPDX-License-Identifier: MIT
/*
 * A client of CRIU's page server, the remote end of a lazy restore: the
 * side that `criu dump --lazy-pages --address A --port P` keeps running
 * after the dump, or that `criu page-server --lazy-pages` runs over a dump's
 * images.  This file owns the connection (its making, PS_IOV_CLOSE, its
 * end); pageserver-gets.c the GETs in flight and their replies.  It calls
 * nothing of libpin's but the log.  The facts are CRIU's
 * (criu/page-xfer.c):
 *
 * - Every message starts with struct page_server_iov {u32 cmd; u64 nr_pages,
 *   vaddr, dst_id}, in the sender's byte order and C layout (both ends are
 *   the same architecture; on x86-64, 32 bytes with 4 of padding after cmd).
 * - PS_IOV_GET {nr_pages, vaddr, dst_id = the task's pid}: the server looks
 *   the task up by its pid (not by the PS_TYPE_PID-encoded id that
 *   PS_IOV_OPEN2 takes on the dump side: OPEN2 opens a pagemap to write,
 *   which a restore never does).  It answers in order, one reply per GET:
 *   the same header with cmd PS_IOV_ADD_F | PE_PRESENT << 16 and nr_pages
 *   possibly fewer (it stops at the end of the run of pages it keeps
 *   together), then the raw pages.  A GET for pages it holds no lazy copy
 *   of ends the connection: that is its only error reply.
 * - PS_IOV_CLOSE: it answers an int32 status (0) and waits for our close.
 *
 * GETs go out while replies come in, never blocking (MSG_DONTWAIT), so that
 * neither side can wait on a full socket buffer for the other: a stream of
 * GETs (struct pin_ps_gets) that uffdd pumps when its socket is ready, and
 * pin_ps_fetch() on it, which polls, every wait bounded by the caller's
 * timeout, counted from the last byte moved.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "pageserver-internal.h"

static int ps_new(int fd, const char *peer, struct pin_ps **ret)
{
	struct pin_ps *ps = calloc(1, sizeof(*ps));
	int fl = fcntl(fd, F_GETFL);

	if (!ps)
		return -ENOMEM;
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		int r = -errno;

		pin_log(PIN_LOG_ERR, "page server %s: fcntl O_NONBLOCK: %s", peer, strerror(-r));
		free(ps);
		return r;
	}
	ps->fd = fd;
	snprintf(ps->peer, sizeof(ps->peer), "%s", peer);
	*ret = ps;
	return 0;
}

int pin_ps_from_fd(int fd, const char *name, struct pin_ps **ret)
{
	if (fd < 0 || !ret)
		return -EINVAL;
	return ps_new(fd, name ? name : "(fd)", ret);
}

int pin_ps_fd(const struct pin_ps *ps)
{
	return ps->fd;
}

int pin_ps_wrap(int fd, const char *name, struct pin_ps **ret)
{
	struct pin_ps *ps;

	if (fd < 0 || !ret)
		return -EINVAL;
	ps = calloc(1, sizeof(*ps));
	if (!ps)
		return -ENOMEM;
	ps->fd = fd;
	snprintf(ps->peer, sizeof(ps->peer), "%s", name ? name : "(fd)");
	*ret = ps;
	return 0;
}

int ps_wait_for(struct pin_ps *ps, short events, int timeout_ms)
{
	uint64_t end = pin_now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		struct pollfd p = { .fd = ps->fd, .events = events };
		uint64_t now = pin_now_ns();
		int n;

		if (now >= end)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)((end - now + 999999u) / 1000000u));
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* Connect to one address of the server, timeout_ms at most. */
static int connect_one(const struct addrinfo *ai, const char *peer, int timeout_ms,
		       struct pin_ps **ret)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			ai->ai_protocol);
	int one = 1, err = 0, r;
	socklen_t len = sizeof(err);
	struct pin_ps *ps;

	if (fd < 0)
		return -errno;
	r = ps_new(fd, peer, &ps);
	if (r < 0) {
		close(fd);
		return r;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		r = errno == EINPROGRESS ? ps_wait_for(ps, POLLOUT, timeout_ms) : -errno;
		if (!r && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			r = -errno;
		if (!r && err)
			r = -err;
	}
	/* Each GET goes out at once: the server waits for it. */
	if (!r && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		r = -errno;
	if (r < 0) {
		pin_ps_free(ps);
		return r;
	}
	*ret = ps;
	return 0;
}

int pin_ps_connect(const char *addr, uint16_t port, int timeout_ms, struct pin_ps **ret)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	char service[8], peer[96];
	int r;

	if (!addr || !port || timeout_ms <= 0 || !ret)
		return -EINVAL;
	snprintf(service, sizeof(service), "%u", port);
	snprintf(peer, sizeof(peer), "%s:%u", addr, port);
	r = getaddrinfo(addr, service, &hints, &res);
	if (r) {
		pin_log(PIN_LOG_ERR, "page server %s: getaddrinfo: %s", peer, gai_strerror(r));
		return r == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	}
	r = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		r = connect_one(ai, peer, timeout_ms, ret);
		if (!r)
			break;
	}
	freeaddrinfo(res);
	if (r < 0)
		pin_log(PIN_LOG_ERR, "page server %s: connect: %s", peer, strerror(-r));
	return r;
}

void pin_ps_free(struct pin_ps *ps)
{
	if (!ps)
		return;
	close(ps->fd);
	free(ps);
}

int pin_ps_close(struct pin_ps *ps, int timeout_ms)
{
	struct ps_iov iov = ps_iov(PS_IOV_CLOSE, 0, 0, 0);
	size_t put = 0, got = 0;
	int32_t status;
	int r = 0;

	if (!ps || timeout_ms <= 0)
		return -EINVAL;
	while (!r && put < sizeof(iov)) {
		ssize_t n = send(ps->fd, (char *)&iov + put, sizeof(iov) - put, MSG_NOSIGNAL);

		if (n >= 0)
			put += (size_t)n;
		else if (errno == EAGAIN)
			r = ps_wait_for(ps, POLLOUT, timeout_ms);
		else if (errno != EINTR)
			r = -errno;
	}
	while (!r && got < sizeof(status)) {
		ssize_t n = recv(ps->fd, (char *)&status + got, sizeof(status) - got, 0);

		if (n > 0)
			got += (size_t)n;
		else if (n == 0)
			r = -ECONNRESET;
		else if (errno == EAGAIN)
			r = ps_wait_for(ps, POLLIN, timeout_ms);
		else if (errno != EINTR)
			r = -errno;
	}
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "page server %s: close: %s", ps->peer, strerror(-r));
		return r;
	}
	if (status) {
		pin_log(PIN_LOG_ERR, "page server %s: close: status %" PRId32, ps->peer, status);
		return -EPROTO;
	}
	return 0;
}
