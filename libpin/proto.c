// SPDX-License-Identifier: MIT
/*
 * Framing of the uffdd protocol: one protobuf-c encoded Msg per
 * SOCK_SEQPACKET datagram, descriptors attached with SCM_RIGHTS.  Both ends
 * (libpin's client and uffdd) receive through pin_proto_recv() (or
 * pin_proto_recv_closing(): the same, closing what it refuses its caller's
 * way), so every check on untrusted input lives here, once.
 */
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include "libpin-private.h"

/* Room for the descriptors we accept plus SCM_CREDENTIALS, should the
 * receiver have SO_PASSCRED on: without it every message would be CTRUNC. */
#define PROTO_CMSG_SPACE                                                                           \
	(CMSG_SPACE(sizeof(int) * PIN_PROTO_MAX_FDS) + CMSG_SPACE(sizeof(struct ucred)))

/* A file's or a page server's region comes with its descriptor. */
static bool source_has_fd(Uffdd__SourceKind k)
{
	return k == UFFDD__SOURCE_KIND__SOURCE_FD || k == UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER;
}

size_t pin_proto_fds_expected(const Uffdd__Msg *msg)
{
	switch (msg->body_case) {
	case UFFDD__MSG__BODY_UFFD:
		return 1 + (msg->uffd->has_pagemap && msg->uffd->pagemap) +
		       (msg->uffd->has_evlog && msg->uffd->evlog);
	case UFFDD__MSG__BODY_REGION_ADD:
		return source_has_fd(msg->region_add->source);
	case UFFDD__MSG__BODY_REGION_ADD_BATCH:
		for (size_t i = 0; i < msg->region_add_batch->n_regions; i++)
			if (source_has_fd(msg->region_add_batch->regions[i]->source))
				return 1;
		return 0;
	default:
		return 0;
	}
}

/*
 * No user address space of a 64-bit Linux reaches this (x86-64 with 5-level
 * paging ends at 2^56, arm64 at 2^52): a range past it is no client's memory,
 * and its length would not fit the signed counters it is charged to.
 */
#define USER_ADDR_END (1ull << 57)

int pin_proto_check_range(uint64_t addr, uint64_t len)
{
	uint64_t mask = (uint64_t)sysconf(_SC_PAGESIZE) - 1;

	/* A range that wraps around 2^64 is out of bounds like one past
	 * user space: -EINVAL for both (issue 12). */
	if (len && addr + len <= addr)
		return -EINVAL;
	if (!len || (addr & mask) || (len & mask) || addr + len > USER_ADDR_END)
		return -EINVAL;
	return 0;
}

static int check_range(const Uffdd__Range *r)
{
	return pin_proto_check_range(r->addr, r->len);
}

/* Every range of a list (Replay's, a Reply's working set), and the list not empty
 * where an empty one means nothing. */
static int check_ranges(Uffdd__Range *const *v, size_t n, bool need_one)
{
	if (need_one && !n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int r = check_range(v[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int check_region_add(const Uffdd__RegionAdd *ra)
{
	uint64_t mask = (uint64_t)sysconf(_SC_PAGESIZE) - 1;
	int r = check_range(ra->range);

	if (r < 0)
		return r;
	if (!pin_region_mode_valid(ra->mode))
		return -EINVAL;
	switch (ra->source) {
	case UFFDD__SOURCE_KIND__SOURCE_ZERO:
		/* MINOR faults come for pages of a file only. */
		return ra->mode & PIN_UFFD_REGISTER_MINOR ? -EINVAL : 0;
	case UFFDD__SOURCE_KIND__SOURCE_FD:
	case UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER:
		if (ra->offset & mask)
			return -EINVAL;
		/* The file side of the mapping must not wrap either. */
		if (ra->offset + ra->range->len < ra->offset)
			return -EINVAL;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Every region of a batch, and at least one. */
static int check_region_add_batch(const Uffdd__RegionAddBatch *b)
{
	bool file = false, ps = false;
	uint64_t task = 0;

	if (!b->n_regions)
		return -EINVAL;
	for (size_t i = 0; i < b->n_regions; i++) {
		int r = check_region_add(b->regions[i]);
		if (r < 0)
			return r;
		file |= b->regions[i]->source == UFFDD__SOURCE_KIND__SOURCE_FD;
		if (b->regions[i]->source != UFFDD__SOURCE_KIND__SOURCE_PAGE_SERVER)
			continue;
		/* One page server, one task: the GETs of all carry it. */
		if (ps && b->regions[i]->task != task)
			return -EINVAL;
		ps = true;
		task = b->regions[i]->task;
	}
	/* One descriptor comes with a batch: a file or a page server. */
	return file && ps ? -EINVAL : 0;
}

/*
 * Field number 0 is not valid protobuf, yet protobuf-c 1.4 keeps it as an
 * unknown field when its tag is encoded in more than one byte (a one-byte
 * tag 0 fails to decode): such a message would not decode again once
 * re-encoded.  Found by tests/fuzz-proto.c.  The schema is not recursive,
 * so neither is this deeper than Msg > Reply > ClientInfo > Stats.
 */
static bool has_field_zero(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;

	for (unsigned int i = 0; i < m->n_unknown_fields; i++)
		if (m->unknown_fields[i].tag == 0)
			return true;
	for (unsigned int i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const ProtobufCMessage *sub;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			ProtobufCMessage *const *v =
				*(ProtobufCMessage *const *const *)(base + f->offset);

			for (size_t k = 0; k < n; k++)
				if (has_field_zero(v[k]))
					return true;
			continue;
		}
		/* Only the set member of a oneof points at a message. */
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + f->quantifier_offset) != f->id)
			continue;
		sub = *(ProtobufCMessage *const *)(base + f->offset);
		if (sub && has_field_zero(sub))
			return true;
	}
	return false;
}

/* Nesting the walk follows, at most: the schema nests four deep
 * (Msg > Reply > ClientInfo > Stats); a deeper message is not ours. */
#define WIRE_DEPTH_MAX 8
/* The bytes of a varint, at most (64 bits, 7 a byte). */
#define VARINT_MAX_BYTES 10

enum { WIRE_VARINT = 0, WIRE_64BIT = 1, WIRE_LEN = 2, WIRE_32BIT = 5 };

/* A varint at *p (before end): its value, *p moved past it; false when it is
 * cut short or longer than a 64-bit one. */
static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < VARINT_MAX_BYTES && *p < end; i++) {
		uint8_t b = *(*p)++;
		v |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*ret = v;
			return true;
		}
	}
	return false;
}

/* A field whose varint protobuf-c cuts to 32 bits. */
static bool is_varint_32(ProtobufCType t)
{
	return t == PROTOBUF_C_TYPE_INT32 || t == PROTOBUF_C_TYPE_ENUM ||
	       t == PROTOBUF_C_TYPE_UINT32 || t == PROTOBUF_C_TYPE_SINT32;
}

/* Whether a varint holds a value of a 32-bit field of type t: protobuf-c
 * keeps only its low 32 bits, so 2^32 + 1 would read as 1.  An int32 or an
 * enum is sign-extended on the wire. */
static bool fits_32(ProtobufCType t, uint64_t v)
{
	if (!is_varint_32(t))
		return true;
	if (t == PROTOBUF_C_TYPE_INT32 || t == PROTOBUF_C_TYPE_ENUM)
		return (int64_t)v >= INT32_MIN && (int64_t)v <= INT32_MAX;
	return v <= UINT32_MAX;
}

/*
 * Walk the wire bytes [p, end) of a message of descriptor d (which
 * protobuf-c decoded already): every varint of a 32-bit field, packed or
 * not, fits in 32 bits, in this message and the ones it holds.  Each byte is
 * looked at once per level, at most WIRE_DEPTH_MAX levels.
 */
static bool wire_ok(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
		    unsigned int depth)
{
	if (depth > WIRE_DEPTH_MAX)
		return false;
	while (p < end) {
		uint64_t key, v;
		if (!get_varint(&p, end, &key) || key >> 3 > UINT32_MAX)
			return false;
		const ProtobufCFieldDescriptor *f =
			protobuf_c_message_descriptor_get_field(d, (unsigned int)(key >> 3));
		switch (key & 7) {
		case WIRE_VARINT:
			if (!get_varint(&p, end, &v) || (f && !fits_32(f->type, v)))
				return false;
			break;
		case WIRE_64BIT:
			if (end - p < 8)
				return false;
			p += 8;
			break;
		case WIRE_32BIT:
			if (end - p < 4)
				return false;
			p += 4;
			break;
		case WIRE_LEN:
			if (!get_varint(&p, end, &v) || v > (uint64_t)(end - p))
				return false;
			const uint8_t *sub = p;
			p += v;
			if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
			    !wire_ok(f->descriptor, sub, p, depth + 1))
				return false;
			/* A packed repeated field: varints one after another. */
			while (f && f->label == PROTOBUF_C_LABEL_REPEATED &&
			       is_varint_32(f->type) && sub < p)
				if (!get_varint(&sub, p, &v) || !fits_32(f->type, v))
					return false;
			break;
		default:
			/* Groups: protobuf-c refuses them already. */
			return false;
		}
	}
	return true;
}

/* What the wire format cannot say: ranges, enums and modes in bounds. */
static int check_fields(const Uffdd__Msg *msg)
{
	switch (msg->body_case) {
	case UFFDD__MSG__BODY_REGION_ADD:
		return check_region_add(msg->region_add);
	case UFFDD__MSG__BODY_REGION_ADD_BATCH:
		return check_region_add_batch(msg->region_add_batch);
	case UFFDD__MSG__BODY_REGION_REMOVE:
		return check_range(msg->region_remove->range);
	case UFFDD__MSG__BODY_PREFETCH:
		return check_range(msg->prefetch->range);
	case UFFDD__MSG__BODY_WAIT:
		return check_range(msg->wait->range);
	case UFFDD__MSG__BODY_DIRTY_GET:
		return check_range(msg->dirty_get->range);
	case UFFDD__MSG__BODY_PIN_REPORT:
		return check_range(msg->pin_report->range);
	case UFFDD__MSG__BODY_STALE:
		return check_range(msg->stale->range);
	case UFFDD__MSG__BODY_REPLAY:
		return check_ranges(msg->replay->ranges, msg->replay->n_ranges, true);
	case UFFDD__MSG__BODY_LIST_GET:
		switch (msg->list_get->what) {
		case UFFDD__LIST_GET__WHAT__CLIENTS:
		case UFFDD__LIST_GET__WHAT__REGIONS:
		case UFFDD__LIST_GET__WHAT__PINS:
			return 0;
		default:
			return -EINVAL;
		}
	case UFFDD__MSG__BODY_REPLY:
		/* 0 or -errno, as the kernel bounds errno values. */
		if (msg->reply->error > 0 || msg->reply->error < -4095)
			return -EINVAL;
		if (msg->reply->n_working_set > msg->reply->working_set_total)
			return -EINVAL;
		return check_ranges(msg->reply->working_set, msg->reply->n_working_set, false);
	default:
		return 0;
	}
}

int pin_proto_decode(const uint8_t *buf, size_t len, size_t nfds, Uffdd__Msg **ret_msg)
{
	Uffdd__Msg *msg;
	int r;

	if (len > PIN_PROTO_MAX_MSG)
		return -EBADMSG;
	msg = uffdd__msg__unpack(NULL, len, buf);
	/* An unknown field number leaves the oneof unset: a body we do not know. */
	if (!msg || msg->body_case == UFFDD__MSG__BODY__NOT_SET || has_field_zero(&msg->base) ||
	    !wire_ok(&uffdd__msg__descriptor, buf, buf + len, 0)) {
		r = -EBADMSG;
		goto fail;
	}
	if (nfds != pin_proto_fds_expected(msg)) {
		r = -EBADF;
		goto fail;
	}
	r = check_fields(msg);
	if (r < 0)
		goto fail;
	*ret_msg = msg;
	return 0;
fail:
	pin_proto_free(msg);
	return r;
}

void pin_proto_free(Uffdd__Msg *msg)
{
	if (msg)
		uffdd__msg__free_unpacked(msg, NULL);
}

int pin_proto_send_raw(int sock, const void *buf, size_t len, const int *fds, size_t nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * PIN_PROTO_RAW_MAX_FDS)];
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds > PIN_PROTO_RAW_MAX_FDS)
		return -EINVAL;
	for (size_t i = 0; i < nfds; i++)
		if (fds[i] < 0)
			return -EBADF;
	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	/* MSG_NOSIGNAL: a peer that went away is -EPIPE, not a dead process. */
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return 0;
}

int pin_proto_send(int sock, const Uffdd__Msg *msg, const int *fds, size_t nfds)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;

	if (nfds > PIN_PROTO_MAX_FDS)
		return -EINVAL;
	len = uffdd__msg__get_packed_size(msg);
	if (len > PIN_PROTO_MAX_MSG)
		return -EMSGSIZE;
	/* An empty Msg packs to nothing; malloc(0) may give NULL. */
	buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	uffdd__msg__pack(msg, buf);
	return pin_proto_send_raw(sock, buf, len, fds, nfds);
}

/* Descriptors the receiver does not keep: its own close, or close(). */
struct closing {
	void (*close_fd)(int fd, void *userdata);
	void *userdata;
};

static void close_one(const struct closing *c, int fd)
{
	if (c->close_fd)
		c->close_fd(fd, c->userdata);
	else
		close(fd);
}

static void close_all(const struct closing *c, const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close_one(c, fds[i]);
}

/*
 * Take the descriptors out of the control data into got[] and return how
 * many came.  More than PIN_PROTO_MAX_FDS can arrive (the SO_PASSCRED room
 * fits a few): those are closed at once, and the count then never matches
 * what a body expects.
 */
static size_t collect_fds(struct msghdr *mh, int *got, const struct closing *c)
{
	size_t n = 0;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		size_t k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (n < PIN_PROTO_MAX_FDS)
				got[n] = fd;
			else
				close_one(c, fd);
			n++;
		}
	}
	return n;
}

/*
 * recvmsg() returns 0 both at EOF and for an empty datagram; only the
 * former leaves the socket hung up.
 */
static int zero_length(int sock)
{
	struct pollfd p = { .fd = sock, .events = POLLIN | POLLRDHUP };

	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP)))
		return -ECONNRESET;
	return -EBADMSG;
}

int pin_proto_recv_closing(int sock, Uffdd__Msg **ret_msg, int *fds, size_t *ret_nfds,
			   void (*close_fd)(int fd, void *userdata), void *userdata)
{
	const struct closing c = { close_fd, userdata };
	union {
		struct cmsghdr align;
		char buf[PROTO_CMSG_SPACE];
	} ctl;
	int got[PIN_PROTO_MAX_FDS];
	_cleanup_free_ uint8_t *buf = NULL;
	struct msghdr mh = { 0 };
	struct iovec iov;
	Uffdd__Msg *msg;
	size_t nfds;
	ssize_t n;
	int r;

	buf = malloc(PIN_PROTO_MAX_MSG);
	if (!buf)
		return -ENOMEM;
	iov = (struct iovec){ .iov_base = buf, .iov_len = PIN_PROTO_MAX_MSG };
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;

	nfds = collect_fds(&mh, got, &c);
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		r = -EBADMSG;
	else if (n == 0)
		r = nfds ? -EBADMSG : zero_length(sock);
	else
		r = pin_proto_decode(buf, (size_t)n, nfds, &msg);
	if (r < 0) {
		close_all(&c, got, nfds < PIN_PROTO_MAX_FDS ? nfds : PIN_PROTO_MAX_FDS);
		return r;
	}
	memcpy(fds, got, nfds * sizeof(int));
	*ret_nfds = nfds;
	*ret_msg = msg;
	return 0;
}

int pin_proto_recv(int sock, Uffdd__Msg **ret_msg, int *fds, size_t *ret_nfds)
{
	return pin_proto_recv_closing(sock, ret_msg, fds, ret_nfds, NULL, NULL);
}
