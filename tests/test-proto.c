// SPDX-License-Identifier: MIT
/* Suite unit, area proto: framing of the uffdd protocol over a socketpair. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "libpin-private.h"
#include "test-common.h"

static int sv[2];
static int nullfd; /* something to pass around */

static void setup(void)
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(nullfd, 0);
}

static void teardown(void)
{
	close(sv[0]);
	close(sv[1]);
	close(nullfd);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* As a hostile peer would: any bytes, any descriptors. */
static void raw_send(const void *buf, size_t len, const int *fds, size_t nfds)
{
	ck_assert_int_eq(pin_proto_send_raw(sv[0], buf, len, fds, nfds), 0);
}

/* Receive on sv[1] expecting err; nothing may stay open or be returned. */
static void expect_reject(int err)
{
	Uffdd__Msg *msg = (Uffdd__Msg *)0x1;
	int fds[PIN_PROTO_MAX_FDS] = { -2, -2, -2, -2 };
	size_t nfds = 99;

	ck_assert_int_eq(pin_proto_recv(sv[1], &msg, fds, &nfds), err);
	ck_assert_ptr_eq(msg, (Uffdd__Msg *)0x1);
	ck_assert_uint_eq(nfds, 99);
	ck_assert_int_eq(fds[0], -2);
}

static Uffdd__Msg *recv_ok(int *fds, size_t want_fds)
{
	Uffdd__Msg *msg = NULL;
	size_t nfds = 99;

	ck_assert_int_eq(pin_proto_recv(sv[1], &msg, fds, &nfds), 0);
	ck_assert_ptr_nonnull(msg);
	ck_assert_uint_eq(nfds, want_fds);
	return msg;
}

START_TEST(hello_round_trip)
{
	Uffdd__Hello hello = UFFDD__HELLO__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Msg *got;
	int fds[PIN_PROTO_MAX_FDS];

	hello.version = PIN_PROTO_VERSION;
	hello.name = "restore-42";
	m.has_seq = 1;
	m.seq = 0x1122334455667788ull;
	m.body_case = UFFDD__MSG__BODY_HELLO;
	m.hello = &hello;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), 0);
	got = recv_ok(fds, 0);
	ck_assert_uint_eq(got->seq, 0x1122334455667788ull);
	ck_assert_int_eq(got->body_case, UFFDD__MSG__BODY_HELLO);
	ck_assert_uint_eq(got->hello->version, 1);
	ck_assert_str_eq(got->hello->name, "restore-42");
	pin_proto_free(got);
}
END_TEST

START_TEST(region_add_fd_arrives)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__RegionAdd ra = UFFDD__REGION_ADD__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Msg *got;
	int p[2], fds[PIN_PROTO_MAX_FDS];
	char c = 0;

	ck_assert_int_eq(pipe(p), 0);
	range.addr = 0x7f0000000000ull;
	range.len = 64 << 20;
	ra.range = &range;
	ra.mode = PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP;
	ra.source = UFFDD__SOURCE_KIND__SOURCE_FD;
	ra.has_offset = 1;
	ra.offset = 8192;
	ra.has_push = 1;
	ra.push = 0;
	m.body_case = UFFDD__MSG__BODY_REGION_ADD;
	m.region_add = &ra;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, &p[1], 1), 0);
	close(p[1]);
	got = recv_ok(fds, 1);
	ck_assert_uint_eq(got->region_add->range->addr, 0x7f0000000000ull);
	ck_assert_uint_eq(got->region_add->range->len, 64 << 20);
	ck_assert_uint_eq(got->region_add->mode, 3);
	ck_assert_int_eq(got->region_add->source, UFFDD__SOURCE_KIND__SOURCE_FD);
	ck_assert_uint_eq(got->region_add->offset, 8192);
	ck_assert_int_eq(got->region_add->push, 0);
	ck_assert_int_eq(got->region_add->registered, 1);
	ck_assert_uint_eq(pin_proto_fds_expected(got), 1);
	pin_proto_free(got);

	/* The descriptor is the pipe's write end, and close-on-exec. */
	ck_assert_int_eq(fcntl(fds[0], F_GETFD), FD_CLOEXEC);
	ck_assert_int_eq(write(fds[0], "x", 1), 1);
	ck_assert_int_eq(read(p[0], &c, 1), 1);
	ck_assert_int_eq(c, 'x');
	close(fds[0]);
	close(p[0]);
}
END_TEST

START_TEST(reply_round_trip)
{
	uint64_t lat[3] = { 5, 0, 77 };
	uint8_t bits[3] = { 0x81, 0x00, 0x40 };
	Uffdd__Stats st = UFFDD__STATS__INIT;
	Uffdd__Range r0 = UFFDD__RANGE__INIT;
	Uffdd__PinInfo pi = UFFDD__PIN_INFO__INIT, *pis[1] = { &pi };
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Msg *got;
	int fds[PIN_PROTO_MAX_FDS];

	st.has_faults = 1;
	st.faults = 12345;
	st.n_latency_us_log2 = 3;
	st.latency_us_log2 = lat;
	r0.addr = 4096;
	r0.len = 8192;
	pi.session = 3;
	pi.range = &r0;
	pi.cookie = 0xdeadbeef;
	rep.error = -ENOENT;
	rep.text = "no such region";
	rep.has_bitmap = 1;
	rep.bitmap.len = sizeof(bits);
	rep.bitmap.data = bits;
	rep.stats = &st;
	rep.n_pins = 1;
	rep.pins = pis;
	m.has_seq = 1;
	m.seq = 7;
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), 0);
	got = recv_ok(fds, 0);
	ck_assert_uint_eq(got->seq, 7);
	ck_assert_int_eq(got->reply->error, -ENOENT);
	ck_assert_str_eq(got->reply->text, "no such region");
	ck_assert_uint_eq(got->reply->bitmap.len, 3);
	ck_assert_mem_eq(got->reply->bitmap.data, bits, 3);
	ck_assert_uint_eq(got->reply->stats->faults, 12345);
	ck_assert_uint_eq(got->reply->stats->n_latency_us_log2, 3);
	ck_assert_uint_eq(got->reply->stats->latency_us_log2[2], 77);
	ck_assert_uint_eq(got->reply->n_pins, 1);
	ck_assert_uint_eq(got->reply->pins[0]->cookie, 0xdeadbeef);
	ck_assert_uint_eq(got->reply->pins[0]->range->len, 8192);
	pin_proto_free(got);
}
END_TEST

START_TEST(handover_needs_its_fd)
{
	Uffdd__UffdHandover h = UFFDD__UFFD_HANDOVER__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	int before = count_fds();

	m.body_case = UFFDD__MSG__BODY_UFFD;
	m.uffd = &h;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), 0);
	expect_reject(-EBADF);
	ck_assert_int_eq(count_fds(), before);
}
END_TEST

START_TEST(extra_fds_are_closed)
{
	Uffdd__Goodbye bye = UFFDD__GOODBYE__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	int p[2], before;

	m.body_case = UFFDD__MSG__BODY_GOODBYE;
	m.goodbye = &bye;
	ck_assert_int_eq(pipe(p), 0);
	before = count_fds();
	ck_assert_int_eq(pin_proto_send(sv[0], &m, p, 2), 0);
	expect_reject(-EBADF);
	ck_assert_int_eq(count_fds(), before);
	/* Only our own write end keeps the pipe open: closing it is EOF. */
	close(p[1]);
	char c;
	ck_assert_int_eq(read(p[0], &c, 1), 0);
	close(p[0]);
}
END_TEST

START_TEST(more_fds_than_max)
{
	Uffdd__UffdHandover h = UFFDD__UFFD_HANDOVER__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	uint8_t buf[64];
	int fds[6], before;
	size_t len;

	m.body_case = UFFDD__MSG__BODY_UFFD;
	m.uffd = &h;
	len = uffdd__msg__pack(&m, buf);
	for (int i = 0; i < 6; i++)
		fds[i] = nullfd;
	before = count_fds();
	raw_send(buf, len, fds, 6);
	expect_reject(-EBADF);
	ck_assert_int_eq(count_fds(), before);
	ck_assert_int_eq(pin_proto_send(sv[0], &m, fds, PIN_PROTO_MAX_FDS + 1), -EINVAL);
}
END_TEST

START_TEST(control_truncated)
{
	const uint8_t bye[] = { 0xaa, 0x01, 0x00 };
	int fds[32], before;

	/* A valid Goodbye with more descriptors than the receiver's control
	 * buffer holds: CTRUNC, whatever the payload. */
	for (int i = 0; i < 32; i++)
		fds[i] = nullfd;
	before = count_fds();
	raw_send(bye, sizeof(bye), fds, 32);
	expect_reject(-EBADMSG);
	ck_assert_int_eq(count_fds(), before);
}
END_TEST

START_TEST(garbage_with_fd)
{
	const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	int fd0 = nullfd, before = count_fds();

	raw_send(garbage, sizeof(garbage), &fd0, 1);
	expect_reject(-EBADMSG);
	ck_assert_int_eq(count_fds(), before);
}
END_TEST

START_TEST(unknown_body)
{
	/* seq = 1, then field 25 (unknown, length-delimited, empty). */
	const uint8_t unknown[] = { 0x08, 0x01, 0xca, 0x01, 0x00 };
	int fd0 = nullfd, before = count_fds();

	raw_send(unknown, sizeof(unknown), NULL, 0);
	expect_reject(-EBADMSG);
	raw_send(unknown, sizeof(unknown), &fd0, 1);
	expect_reject(-EBADMSG);
	ck_assert_int_eq(count_fds(), before);
}
END_TEST

START_TEST(field_number_zero)
{
	/* An unknown field 0 behind an overlong tag (0x82 0x00), before a
	 * ListGet; then inside the ListGet body. */
	const uint8_t top[] = { 0x82, 0x00, 0x01, 0x00, 0xa2, 0x01, 0x02, 0x08, 0x02 };
	const uint8_t nested[] = { 0xa2, 0x01, 0x05, 0x08, 0x02, 0x82, 0x00, 0x00 };
	const uint8_t fine[] = { 0xa2, 0x01, 0x02, 0x08, 0x02 };
	Uffdd__Msg *got = NULL;

	raw_send(top, sizeof(top), NULL, 0);
	expect_reject(-EBADMSG);
	ck_assert_int_eq(pin_proto_decode(nested, sizeof(nested), 0, &got), -EBADMSG);
	ck_assert_int_eq(pin_proto_decode(fine, sizeof(fine), 0, &got), 0);
	ck_assert_int_eq(got->list_get->what, UFFDD__LIST_GET__WHAT__PINS);
	pin_proto_free(got);
}
END_TEST

START_TEST(missing_required_field)
{
	/* Prefetch { range { addr = 4096 } }: Range.len is required. */
	const uint8_t noreq[] = { 0x72, 0x05, 0x0a, 0x03, 0x08, 0x80, 0x20 };

	raw_send(noreq, sizeof(noreq), NULL, 0);
	expect_reject(-EBADMSG);
}
END_TEST

START_TEST(truncated_payload)
{
	Uffdd__Hello hello = UFFDD__HELLO__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	uint8_t buf[64];
	size_t len;

	hello.version = 1;
	hello.name = "abc";
	m.body_case = UFFDD__MSG__BODY_HELLO;
	m.hello = &hello;
	len = uffdd__msg__pack(&m, buf);
	/* Cut inside the name: the length prefix promises more than there is. */
	raw_send(buf, len - 1, NULL, 0);
	expect_reject(-EBADMSG);
}
END_TEST

/* af_unix refuses a datagram longer than the sender's SO_SNDBUF minus this. */
#define SNDBUF_SLACK 32

START_TEST(oversized)
{
	int sz = 2 * PIN_PROTO_MAX_MSG;
	size_t len = PIN_PROTO_MAX_MSG + 4096;
	uint8_t *big = calloc(1, len);
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;

	ck_assert_ptr_nonnull(big);
	/* The datagram must fit in SO_SNDBUF, which the kernel doubles and caps
	 * at net.core.wmem_max * 2 (212992 * 2 by default: room enough);
	 * SO_SNDBUFFORCE (CAP_NET_ADMIN) goes past the cap. */
	if (setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0) {
		ck_assert_int_eq(errno, EPERM);
		ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
	}
	socklen_t sl = sizeof(sz);
	ck_assert_int_eq(getsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, &sl), 0);
	ck_assert_msg((size_t)sz >= len + SNDBUF_SLACK,
		      "SO_SNDBUF is %d bytes, too small to send a %zu-byte datagram: raise "
		      "net.core.wmem_max or run with CAP_NET_ADMIN",
		      sz, len);
	raw_send(big, len, NULL, 0);
	expect_reject(-EBADMSG);
	free(big);

	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	rep.has_bitmap = 1;
	rep.bitmap.len = PIN_PROTO_MAX_MSG;
	rep.bitmap.data = calloc(1, PIN_PROTO_MAX_MSG);
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), -EMSGSIZE);
	free(rep.bitmap.data);
}
END_TEST

START_TEST(empty_datagram_and_eof)
{
	raw_send("", 0, NULL, 0);
	expect_reject(-EBADMSG);
	close(sv[0]);
	sv[0] = -1;
	expect_reject(-ECONNRESET);
}
END_TEST

START_TEST(nonblocking_empty)
{
	ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	expect_reject(-EAGAIN);
}
END_TEST

static void send_range_msg(Uffdd__Msg__BodyCase body, uint64_t addr, uint64_t len)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__Prefetch pf = UFFDD__PREFETCH__INIT;
	Uffdd__WaitPopulated w = UFFDD__WAIT_POPULATED__INIT;
	Uffdd__PinReport pr = UFFDD__PIN_REPORT__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;

	range.addr = addr;
	range.len = len;
	pf.range = w.range = pr.range = &range;
	m.body_case = body;
	if (body == UFFDD__MSG__BODY_PREFETCH)
		m.prefetch = &pf;
	else if (body == UFFDD__MSG__BODY_WAIT)
		m.wait = &w;
	else
		m.pin_report = &pr;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), 0);
}

START_TEST(bad_ranges)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	Uffdd__Msg *got;
	int fds[PIN_PROTO_MAX_FDS];

	send_range_msg(UFFDD__MSG__BODY_PREFETCH, -pg, 2 * pg);
	expect_reject(-EINVAL);
	/* Ending exactly at 2^64 wraps to 0: not representable either. */
	send_range_msg(UFFDD__MSG__BODY_WAIT, -pg, pg);
	expect_reject(-EINVAL);
	send_range_msg(UFFDD__MSG__BODY_PIN_REPORT, pg, 0);
	expect_reject(-EINVAL);
	send_range_msg(UFFDD__MSG__BODY_PREFETCH, pg + 1, pg);
	expect_reject(-EINVAL);
	send_range_msg(UFFDD__MSG__BODY_PREFETCH, pg, pg - 1);
	expect_reject(-EINVAL);
	/* Past every user address space (2^57): no client's memory, and a
	 * length that would not fit the signed counters it is charged to. */
	send_range_msg(UFFDD__MSG__BODY_WAIT, -2 * pg, pg);
	expect_reject(-EINVAL);
	send_range_msg(UFFDD__MSG__BODY_PIN_REPORT, pg, 1ull << 63);
	expect_reject(-EINVAL);
	/* The last page below 2^57 is fine. */
	send_range_msg(UFFDD__MSG__BODY_WAIT, (1ull << 57) - pg, pg);
	got = recv_ok(fds, 0);
	ck_assert_uint_eq(got->wait->range->addr, (1ull << 57) - pg);
	pin_proto_free(got);
}
END_TEST

static void send_region_add(uint32_t mode, int source, uint64_t offset, uint64_t len, int fd)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__RegionAdd ra = UFFDD__REGION_ADD__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;

	range.addr = 1ull << 30;
	range.len = len;
	ra.range = &range;
	ra.mode = mode;
	ra.source = (Uffdd__SourceKind)source;
	ra.has_offset = 1;
	ra.offset = offset;
	m.body_case = UFFDD__MSG__BODY_REGION_ADD;
	m.region_add = &ra;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, &fd, fd >= 0), 0);
}

START_TEST(bad_region_add)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	int before = count_fds();

	send_region_add(0, UFFDD__SOURCE_KIND__SOURCE_ZERO, 0, pg, -1);
	expect_reject(-EINVAL);
	send_region_add(PIN_UFFD_REGISTER_MINOR, UFFDD__SOURCE_KIND__SOURCE_ZERO, 0, pg, -1);
	expect_reject(-EINVAL);
	send_region_add(PIN_UFFD_REGISTER_MISSING, 7, 0, pg, -1);
	expect_reject(-EINVAL);
	send_region_add(PIN_UFFD_REGISTER_MISSING, UFFDD__SOURCE_KIND__SOURCE_FD, 100, pg, nullfd);
	expect_reject(-EINVAL);
	send_region_add(PIN_UFFD_REGISTER_MISSING, UFFDD__SOURCE_KIND__SOURCE_FD, -pg, 2 * pg,
			nullfd);
	expect_reject(-EINVAL);
	send_region_add(PIN_UFFD_REGISTER_WP, UFFDD__SOURCE_KIND__SOURCE_FD, 0, pg, -1);
	expect_reject(-EBADF);
	send_region_add(PIN_UFFD_REGISTER_WP, UFFDD__SOURCE_KIND__SOURCE_ZERO, 0, pg, nullfd);
	expect_reject(-EBADF);
	send_region_add(PIN_UFFD_REGISTER_MISSING, UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER, 0, pg,
			-1);
	expect_reject(-EBADF);
	send_region_add(PIN_UFFD_REGISTER_MISSING, UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER, 100, pg,
			nullfd);
	expect_reject(-EINVAL);
	ck_assert_int_eq(count_fds(), before);
}
END_TEST

/* A batch of n regions of one page each, sources as given ('z' zero, 'f'
 * fd, 'b' zero without a mode), with nfds descriptors (the null device). */
static void send_batch(const char *sources, size_t nfds)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	size_t n = strlen(sources);
	Uffdd__Range range[4];
	Uffdd__RegionAdd ra[4], *ptrs[4];
	Uffdd__RegionAddBatch b = UFFDD__REGION_ADD_BATCH__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	int fds[2] = { nullfd, nullfd };

	ck_assert_uint_le(n, 4);
	for (size_t i = 0; i < n; i++) {
		uffdd__range__init(&range[i]);
		uffdd__region_add__init(&ra[i]);
		range[i].addr = 0x7f0000000000ull + i * pg;
		range[i].len = pg;
		ra[i].range = &range[i];
		ra[i].mode = sources[i] == 'b' ? 0 : PIN_UFFD_REGISTER_MISSING;
		ra[i].source = sources[i] == 'f'   ? UFFDD__SOURCE_KIND__SOURCE_FD
			       : sources[i] == 'p' ? UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER
						   : UFFDD__SOURCE_KIND__SOURCE_ZERO;
		/* 'q': a page server's region for another task. */
		if (sources[i] == 'q')
			ra[i].source = UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER;
		ra[i].has_task = ra[i].source == UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER;
		ra[i].task = sources[i] == 'q' ? 2 : 1;
		ptrs[i] = &ra[i];
	}
	b.n_regions = n;
	b.regions = ptrs;
	m.body_case = UFFDD__MSG__BODY_REGION_ADD_BATCH;
	m.region_add_batch = &b;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, fds, nfds), 0);
}

/* One descriptor with a batch that has a SOURCE_FD region, none without;
 * no empty batch; each region checked as a RegionAdd is. */
START_TEST(region_add_batch_decoding)
{
	int before = count_fds(), fds[PIN_PROTO_MAX_FDS];
	Uffdd__Msg *got;

	send_batch("zfzf", 1);
	got = recv_ok(fds, 1);
	ck_assert_uint_eq(got->region_add_batch->n_regions, 4);
	ck_assert_uint_eq(got->region_add_batch->regions[3]->range->addr,
			  0x7f0000000000ull + 3 * (uint64_t)sysconf(_SC_PAGESIZE));
	ck_assert_uint_eq(pin_proto_fds_expected(got), 1);
	pin_proto_free(got);
	close(fds[0]);
	send_batch("zz", 0);
	got = recv_ok(fds, 0);
	ck_assert_uint_eq(pin_proto_fds_expected(got), 0);
	pin_proto_free(got);

	send_batch("zf", 0);
	expect_reject(-EBADF);
	send_batch("zz", 1);
	expect_reject(-EBADF);
	send_batch("ff", 2);
	expect_reject(-EBADF);
	send_batch("", 0);
	expect_reject(-EINVAL);
	send_batch("zfbz", 1);
	expect_reject(-EINVAL);
	/* A page server's regions: its socket, one task, no file beside. */
	send_batch("zpp", 1);
	got = recv_ok(fds, 1);
	ck_assert_uint_eq(pin_proto_fds_expected(got), 1);
	ck_assert_uint_eq(got->region_add_batch->regions[2]->task, 1);
	pin_proto_free(got);
	close(fds[0]);
	send_batch("pp", 0);
	expect_reject(-EBADF);
	send_batch("pq", 1);
	expect_reject(-EINVAL);
	send_batch("pf", 1);
	expect_reject(-EINVAL);
	ck_assert_int_eq(count_fds(), before);
}
END_TEST

START_TEST(bad_enums_and_errors)
{
	Uffdd__ListGet lg = UFFDD__LIST_GET__INIT;
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Msg *got;
	int fds[PIN_PROTO_MAX_FDS];

	lg.what = (Uffdd__ListGet__What)9;
	m.body_case = UFFDD__MSG__BODY_LIST_GET;
	m.list_get = &lg;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), 0);
	expect_reject(-EINVAL);

	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	rep.error = EPERM;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), 0);
	expect_reject(-EINVAL);
	rep.error = -4096;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), 0);
	expect_reject(-EINVAL);
	rep.error = -4095;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), 0);
	got = recv_ok(fds, 0);
	ck_assert_int_eq(got->reply->error, -4095);
	pin_proto_free(got);
}
END_TEST

START_TEST(send_bad_fd)
{
	Uffdd__Goodbye bye = UFFDD__GOODBYE__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;
	int fd = -1;

	m.body_case = UFFDD__MSG__BODY_GOODBYE;
	m.goodbye = &bye;
	int many[PIN_PROTO_RAW_MAX_FDS + 1] = { 0 };

	ck_assert_int_eq(pin_proto_send(sv[0], &m, &fd, 1), -EBADF);
	ck_assert_int_eq(pin_proto_send_raw(sv[0], "", 0, &fd, 1), -EBADF);
	ck_assert_int_eq(pin_proto_send_raw(sv[0], "", 0, many, PIN_ARRAY_SIZE(many)), -EINVAL);
	close(sv[1]);
	sv[1] = -1;
	ck_assert_int_eq(pin_proto_send(sv[0], &m, NULL, 0), -EPIPE);
}
END_TEST

START_TEST(decode_buffer)
{
	const uint8_t bye[] = { 0x08, 0x05, 0xaa, 0x01, 0x00 };
	Uffdd__Msg *got = NULL;

	ck_assert_int_eq(pin_proto_decode(bye, sizeof(bye), 0, &got), 0);
	ck_assert_uint_eq(got->seq, 5);
	ck_assert_int_eq(got->body_case, UFFDD__MSG__BODY_GOODBYE);
	pin_proto_free(got);
	pin_proto_free(NULL);
	ck_assert_int_eq(pin_proto_decode(bye, sizeof(bye), 1, &got), -EBADF);
	ck_assert_int_eq(pin_proto_decode(bye, 2, 0, &got), -EBADMSG);
	ck_assert_int_eq(pin_proto_decode(bye, PIN_PROTO_MAX_MSG + 1, 0, &got), -EBADMSG);
}
END_TEST

/* ---- the client against a scripted daemon ------------------------------ */

/* Only what the real uffdd never does (a bitmap longer than asked for,
 * bits past the range, canned lists) and what needs a recorder (requests
 * caught before a round trip); the client against the real daemon, the
 * environment, reconnects and stale notices included, is in test-client.c. */

struct seen {
	Uffdd__Msg__BodyCase body;
	uint64_t addr, len; /* the range, when the body has one */
	uint64_t extra;	    /* cookie, mode, features... */
	bool flag;	    /* takeover, registered, reset, all */
	size_t nfds;
};

static struct {
	pthread_t thread;
	int listen_fd;
	char dir[64];
	char path[128];
	pthread_mutex_t lock;
	struct seen seen[64];
	size_t nr_seen;
	uint64_t sessions;
} srv;

static void srv_record(const Uffdd__Msg *m, size_t nfds)
{
	struct seen s = { .body = m->body_case, .nfds = nfds };

	switch (m->body_case) {
	case UFFDD__MSG__BODY_UFFD:
		s.extra = m->uffd->features;
		s.flag = m->uffd->takeover;
		break;
	case UFFDD__MSG__BODY_REGION_ADD:
		s.addr = m->region_add->range->addr;
		s.len = m->region_add->range->len;
		s.extra = m->region_add->offset;
		s.flag = m->region_add->registered;
		break;
	case UFFDD__MSG__BODY_REGION_REMOVE:
		s.addr = m->region_remove->range->addr;
		s.len = m->region_remove->range->len;
		break;
	case UFFDD__MSG__BODY_PIN_REPORT:
		s.addr = m->pin_report->range->addr;
		s.len = m->pin_report->range->len;
		s.extra = m->pin_report->cookie;
		break;
	case UFFDD__MSG__BODY_PIN_RELEASE:
		s.extra = m->pin_release->cookie;
		break;
	case UFFDD__MSG__BODY_DIRTY_GET:
		s.flag = m->dirty_get->reset;
		break;
	case UFFDD__MSG__BODY_STATS_GET:
		s.flag = m->stats_get->all;
		s.extra = m->stats_get->session;
		break;
	case UFFDD__MSG__BODY_WAIT:
		s.extra = m->wait->timeout_ms;
		break;
	default:
		break;
	}
	pthread_mutex_lock(&srv.lock);
	if (srv.nr_seen < PIN_ARRAY_SIZE(srv.seen))
		srv.seen[srv.nr_seen++] = s;
	pthread_mutex_unlock(&srv.lock);
}

/* Answer one request the way the tests below expect; false: hang up. */
static bool srv_answer(int sock, const Uffdd__Msg *in)
{
	uint64_t lat[4] = { 1, 2, 3, 9 };
	uint8_t bits[2] = { 0x05, 0xff };
	Uffdd__Stats st = UFFDD__STATS__INIT;
	Uffdd__ClientInfo ci[2] = { UFFDD__CLIENT_INFO__INIT, UFFDD__CLIENT_INFO__INIT };
	Uffdd__ClientInfo *cis[2] = { &ci[0], &ci[1] };
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__RegionInfo ri = UFFDD__REGION_INFO__INIT, *ris[1] = { &ri };
	Uffdd__PinInfo pi = UFFDD__PIN_INFO__INIT, *pis[1] = { &pi };
	Uffdd__Reply rep = UFFDD__REPLY__INIT;
	Uffdd__Msg m = UFFDD__MSG__INIT;

	st.n_latency_us_log2 = 4;
	st.latency_us_log2 = lat;
	m.has_seq = 1;
	m.seq = in->seq;
	m.body_case = UFFDD__MSG__BODY_REPLY;
	m.reply = &rep;
	switch (in->body_case) {
	case UFFDD__MSG__BODY_HELLO:
		rep.has_version = 1;
		rep.version = in->hello->version;
		rep.has_session = 1;
		rep.session = ++srv.sessions;
		break;
	case UFFDD__MSG__BODY_REGION_REMOVE:
		if (in->region_remove->range->addr == 0x900000) {
			rep.error = -ENOENT;
			rep.text = "no such region";
		}
		break;
	case UFFDD__MSG__BODY_WAIT:
		if (in->wait->timeout_ms)
			rep.error = -ETIMEDOUT;
		break;
	case UFFDD__MSG__BODY_DIRTY_GET:
		rep.has_bitmap = 1;
		rep.bitmap.data = bits;
		rep.bitmap.len = in->dirty_get->range->len > 16 * 4096 ? 3 : 2;
		if (rep.bitmap.len == 3)
			rep.bitmap.data = (uint8_t *)"\x01\x02\x03";
		break;
	case UFFDD__MSG__BODY_STATS_GET:
		st.has_faults = 1;
		st.faults = in->stats_get->all ? 1000 : 5;
		rep.stats = &st;
		break;
	case UFFDD__MSG__BODY_LIST_GET:
		ci[0].session = 1;
		ci[0].pid = 100;
		ci[0].name = "a-name-longer-than-sixty-four-bytes-is-cut-to-fit-the-fixed-array-ok";
		ci[1].session = 2;
		ci[1].pid = 200;
		ci[1].uid = 1000;
		ci[1].stats = &st;
		st.has_pages_total = 1;
		st.pages_total = 4096;
		rep.n_clients = 2;
		rep.clients = cis;
		range.addr = 0x600000;
		range.len = 0x3000;
		ri.session = pi.session = in->list_get->session;
		ri.range = pi.range = &range;
		ri.mode = 3;
		ri.source = UFFDD__SOURCE_KIND__SOURCE_FD;
		ri.has_pages_populated = ri.has_pages_dirty = 1;
		ri.pages_populated = 2;
		ri.pages_dirty = 1;
		pi.cookie = 99;
		rep.n_regions = rep.n_pins = 1;
		rep.regions = ris;
		rep.pins = pis;
		break;
	case UFFDD__MSG__BODY_GOODBYE:
		pin_proto_send(sock, &m, NULL, 0);
		return false;
	default:
		break;
	}
	pin_proto_send(sock, &m, NULL, 0);
	return true;
}

static void *srv_main(void *arg)
{
	for (;;) {
		int sock = accept4(srv.listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (sock < 0)
			return NULL;
		for (;;) {
			int fds[PIN_PROTO_MAX_FDS];
			size_t nfds;
			Uffdd__Msg *m;
			bool more;

			if (pin_proto_recv(sock, &m, fds, &nfds) < 0)
				break;
			srv_record(m, nfds);
			for (size_t i = 0; i < nfds; i++)
				close(fds[i]);
			more = srv_answer(sock, m);
			pin_proto_free(m);
			if (!more)
				break;
		}
		close(sock);
	}
}

static void srv_setup(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	setup();
	strcpy(srv.dir, "/tmp/test-proto-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(srv.dir));
	snprintf(srv.path, sizeof(srv.path), "%s/uffdd.sock", srv.dir);
	strcpy(sa.sun_path, srv.path);
	srv.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(srv.listen_fd, 0);
	ck_assert_int_eq(bind(srv.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(srv.listen_fd, 8), 0);
	pthread_mutex_init(&srv.lock, NULL);
	srv.nr_seen = 0;
	srv.sessions = 0;
	ck_assert_int_eq(pthread_create(&srv.thread, NULL, srv_main, NULL), 0);
}

static void srv_teardown(void)
{
	/* Wakes accept() with EINVAL. */
	shutdown(srv.listen_fd, SHUT_RDWR);
	pthread_join(srv.thread, NULL);
	close(srv.listen_fd);
	unlink(srv.path);
	rmdir(srv.dir);
	teardown();
}

static struct pin_client *client_new(void)
{
	struct pin_client_opts o = { .sz = sizeof(o), .socket = srv.path, .name = "t" };
	struct pin_client *c = NULL;

	ck_assert_int_eq(pin_client_connect(&o, &c), 0);
	ck_assert_ptr_nonnull(c);
	return c;
}

static struct seen seen_at(size_t i)
{
	struct seen s;

	pthread_mutex_lock(&srv.lock);
	ck_assert_uint_lt(i, srv.nr_seen);
	s = srv.seen[i];
	pthread_mutex_unlock(&srv.lock);
	return s;
}

START_TEST(client_errors)
{
	struct pin_client *c = client_new();
	uint8_t bm[4];

	ck_assert_int_eq(pin_client_region_remove(c, (void *)0x900000, 4096), -ENOENT);
	ck_assert_int_eq(pin_client_wait_populated(c, (void *)0x900000, 4096, 50), -ETIMEDOUT);
	ck_assert_uint_eq(seen_at(2).extra, 50);
	ck_assert_int_eq(pin_client_wait_populated(c, (void *)0x900000, 4096, 0), 0);
	/* Caught before a round trip. */
	ck_assert_int_eq(pin_client_prefetch(c, (void *)0x900001, 4096), -EINVAL);
	ck_assert_int_eq(pin_client_prefetch(c, (void *)0x900000, 0), -EINVAL);
	ck_assert_int_eq(pin_client_prefetch(c, (void *)-4096, 8192), -EINVAL);
	ck_assert_int_eq(pin_client_dirty_get(c, (void *)0x900000, 10 * 4096, 0, bm, 1), -EINVAL);
	ck_assert_int_eq(pin_client_dirty_get(c, (void *)0x900000, 4096, 2, bm, 4), -EINVAL);
	/* A daemon that sends more bitmap than pages. */
	ck_assert_int_eq(pin_client_dirty_get(c, (void *)0x900000, 4096, 0, bm, 4), -EPROTO);
	pthread_mutex_lock(&srv.lock);
	ck_assert_uint_eq(srv.nr_seen, 5);
	pthread_mutex_unlock(&srv.lock);
	pin_client_free(c);
}
END_TEST

START_TEST(client_dirty_stats_lists)
{
	struct pin_client *c = client_new();
	struct pin_client_stats st;
	struct pin_client_info *ci = NULL;
	struct pin_client_region_info *ri = NULL;
	struct pin_client_pin_info *pi = NULL;
	uint8_t bm[4] = { 0xaa, 0xaa, 0xaa, 0xaa };
	size_t n = 0;

	/* 10 pages: the daemon's 0x05 0xff keeps bits 0..9 only. */
	ck_assert_int_eq(pin_client_dirty_get(c, (void *)0x900000, 10 * 4096,
					      PIN_CLIENT_DIRTY_RESET, bm, sizeof(bm)),
			 4);
	ck_assert_uint_eq(bm[0], 0x05);
	ck_assert_uint_eq(bm[1], 0x03);
	ck_assert_uint_eq(bm[2], 0xaa); /* past what 10 pages need: untouched */
	ck_assert_int_eq(seen_at(1).flag, 1);
	/* 20 pages, and the daemon sends all 3 bytes. */
	ck_assert_int_eq(pin_client_dirty_get(c, (void *)0x900000, 20 * 4096, 0, bm, 3), 4);
	ck_assert_uint_eq(bm[2], 0x03);

	ck_assert_int_eq(pin_client_stats(c, 0, &st), 0);
	ck_assert_uint_eq(st.faults, 5);
	ck_assert_uint_eq(st.latency_us_log2[3], 9);
	ck_assert_uint_eq(st.latency_us_log2[4], 0);
	ck_assert_int_eq(seen_at(3).flag, 0);
	ck_assert_int_eq(pin_client_stats(c, PIN_CLIENT_SESSION_ALL, &st), 0);
	ck_assert_uint_eq(st.faults, 1000);
	ck_assert_int_eq(seen_at(4).flag, 1);
	ck_assert_int_eq(pin_client_stats(c, 9, &st), 0);
	ck_assert_uint_eq(seen_at(5).extra, 9);

	ck_assert_int_eq(pin_client_list_clients(c, &ci, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(ci[0].pid, 100);
	ck_assert_uint_eq(strlen(ci[0].name), sizeof(ci[0].name) - 1);
	ck_assert_uint_eq(ci[1].uid, 1000);
	ck_assert_uint_eq(ci[1].stats.pages_total, 4096);
	ck_assert_uint_eq(ci[1].stats.latency_us_log2[0], 1);
	free(ci);
	ck_assert_int_eq(pin_client_list_regions(c, 4, &ri, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ri[0].session, 4);
	ck_assert_uint_eq(ri[0].addr, 0x600000);
	ck_assert_uint_eq(ri[0].len, 0x3000);
	ck_assert_uint_eq(ri[0].mode, 3);
	ck_assert_uint_eq(ri[0].source, 1);
	ck_assert_uint_eq(ri[0].pages_populated, 2);
	ck_assert_uint_eq(ri[0].pages_dirty, 1);
	free(ri);
	ck_assert_int_eq(pin_client_list_pins(c, 0, &pi, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(pi[0].cookie, 99);
	ck_assert_uint_eq(pi[0].len, 0x3000);
	free(pi);
	pin_client_free(c);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("framing");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, hello_round_trip);
	tcase_add_test(tc, region_add_fd_arrives);
	tcase_add_test(tc, reply_round_trip);
	tcase_add_test(tc, handover_needs_its_fd);
	tcase_add_test(tc, extra_fds_are_closed);
	tcase_add_test(tc, more_fds_than_max);
	tcase_add_test(tc, control_truncated);
	tcase_add_test(tc, garbage_with_fd);
	tcase_add_test(tc, unknown_body);
	tcase_add_test(tc, field_number_zero);
	tcase_add_test(tc, missing_required_field);
	tcase_add_test(tc, truncated_payload);
	tcase_add_test(tc, oversized);
	tcase_add_test(tc, empty_datagram_and_eof);
	tcase_add_test(tc, nonblocking_empty);
	tcase_add_test(tc, bad_ranges);
	tcase_add_test(tc, bad_region_add);
	tcase_add_test(tc, region_add_batch_decoding);
	tcase_add_test(tc, bad_enums_and_errors);
	tcase_add_test(tc, send_bad_fd);
	tcase_add_test(tc, decode_buffer);
	suite_add_tcase(s, tc);

	tc = tcase_create("client");
	tcase_add_checked_fixture(tc, srv_setup, srv_teardown);
	tcase_add_test(tc, client_errors);
	tcase_add_test(tc, client_dirty_stats_lists);
	suite_add_tcase(s, tc);
	return s;
}

const char *test_skip_reason(void)
{
	return NULL;
}
