// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over what uffdd and the client do with untrusted bytes:
 * pin_proto_decode() directly, and pin_proto_recv() over a socketpair with
 * descriptors attached.  Input: one control byte (bit 7: through the socket;
 * bits 0-2: how many descriptors come along), then the datagram.
 *
 * What must hold: an accepted message has a body, the descriptor count its
 * body expects and sane ranges, and encodes back to something that decodes
 * to the same encoding; a rejected one leaves no descriptor open.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz-common.h"
#include "libpin-private.h"

static int sv[2] = { -1, -1 };
static int nullfd = -1;

static void die(const char *what)
{
	fprintf(stderr, "fuzz-proto: %s\n", what);
	abort();
}

static void check_accepted(const Uffdd__Msg *m, size_t nfds)
{
	Uffdd__Msg *again = NULL;
	uint8_t *buf;
	size_t len;

	if (m->body_case == UFFDD__MSG__BODY__NOT_SET)
		die("accepted a message without a body");
	if (pin_proto_fds_expected(m) != nfds)
		die("accepted a wrong descriptor count");
	len = uffdd__msg__get_packed_size(m);
	/* Re-encoding may grow (packed repeated fields, overlong varints
	 * written short are the other way): only what fits is checked. */
	if (len > PIN_PROTO_MAX_MSG)
		return;
	buf = malloc(len ? len : 1);
	if (!buf)
		die("malloc");
	if (uffdd__msg__pack(m, buf) != len)
		die("pack size differs from get_packed_size");
	if (pin_proto_decode(buf, len, nfds, &again) < 0)
		die("an accepted message does not decode after re-encoding");
	if (uffdd__msg__get_packed_size(again) != len)
		die("re-encoding is not stable");
	uint8_t *buf2 = malloc(len ? len : 1);
	if (!buf2)
		die("malloc");
	uffdd__msg__pack(again, buf2);
	if (memcmp(buf, buf2, len))
		die("re-encoding is not stable");
	free(buf2);
	free(buf);
	pin_proto_free(again);
}

static void through_socket(const uint8_t *data, size_t size, size_t nfds)
{
	int fds[8] = { nullfd, nullfd, nullfd, nullfd, nullfd, nullfd, nullfd, nullfd };
	int got[PIN_PROTO_MAX_FDS], before = fuzz_open_fds();
	size_t ngot = 0;
	Uffdd__Msg *m = NULL;
	int r;

	if (pin_proto_send_raw(sv[0], data, size, fds, nfds) < 0)
		return; /* larger than the socket takes: nothing to receive */
	r = pin_proto_recv(sv[1], &m, got, &ngot);
	if (r == 0) {
		check_accepted(m, ngot);
		for (size_t i = 0; i < ngot; i++) {
			if (fcntl(got[i], F_GETFD) != FD_CLOEXEC)
				die("a received descriptor is not close-on-exec");
			close(got[i]);
		}
		pin_proto_free(m);
	} else if (r == -ECONNRESET || r == -EAGAIN) {
		die("lost the datagram");
	}
	if (fuzz_open_fds() != before)
		die("a descriptor leaked");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Uffdd__Msg *m = NULL;
	size_t nfds;

	if (size < 1)
		return 0;
	if (sv[0] < 0) {
		nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nullfd < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
			die("setup");
	}
	nfds = data[0] & 7;
	if (data[0] & 0x80) {
		through_socket(data + 1, size - 1, nfds);
		return 0;
	}
	if (pin_proto_decode(data + 1, size - 1, nfds, &m) == 0) {
		check_accepted(m, nfds);
		pin_proto_free(m);
	}
	return 0;
}
