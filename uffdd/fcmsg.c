// SPDX-License-Identifier: MIT
/*
 * The message of Firecracker's page-fault handler handshake: read off the
 * VM's connection (peeked at, or taken), bounded in size and in the
 * descriptors kept with it, parsed as one JSON array of guest mappings and
 * checked: each inside the memory file, aligned to its pages, disjoint, all
 * of one page size uffdd serves, all of a guest_memfd or none (the newer
 * variant's is_guest_memfd).  firecracker.c makes a session of what it
 * returns.  It calls no other file (it reads util.c's uffdd_page).
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "uffdd.h"

/* Mappings in one handshake, at most: guest memory in slots (hot-plugged
 * memory comes in many). */
#define FC_MAPS_MAX 1024
/* JSON nesting: the array, a mapping, its values. */
#define FC_JSON_DEPTH 3
/* The page sizes of Firecracker's guests: 4 KiB, 2 MiB (hugetlbfs), which
 * is uffdd's huge page. */
#define FC_PAGE_HUGE (2ull << 20)
_Static_assert(FC_PAGE_HUGE == UFFDD_HUGE_PAGE, "a hugetlbfs guest's pages are placed whole");

void fcmsg_free(struct fcmsg *m)
{
	for (size_t i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	free(m->buf);
}

/* Peek at what waits on sock (the peek offset from 0: a dead daemon may
 * have moved it), or take it with take: 0, or -errno of recvmsg(). */
int fcmsg_read(int sock, struct fcmsg *m, bool take)
{
	int zero = 0;

	if (!take && setsockopt(sock, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof(zero)) < 0)
		return -errno;
	while (m->len <= FC_MSG_MAX) {
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(FC_FDS_MAX * sizeof(int))];
		} cm;
		struct iovec iov = { m->buf + m->len, FC_MSG_MAX + 1 - m->len };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = cm.b,
				     .msg_controllen = sizeof(cm.b) };
		ssize_t n =
			recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | (take ? 0 : MSG_PEEK));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
				if (m->nfds < FC_FDS_MAX)
					m->fds[m->nfds++] = fd;
				else
					close(fd);
			}
		}
		if (!n) {
			m->hup = true;
			return 0;
		}
		m->len += (size_t)n;
	}
	return 0;
}

/* A field of mapping i that must be an integer in [0, INT64_MAX). */
static int get_u64(json_object *o, const char *key, size_t i, uint64_t *ret, char *why,
		   size_t whylen)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v)) {
		snprintf(why, whylen, "mapping %zu has no \"%s\"", i, key);
		return -EINVAL;
	}
	int64_t x = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
	if (x < 0 || x == INT64_MAX) {
		snprintf(why, whylen, "mapping %zu: \"%s\" is not an integer in [0, 2^63 - 1)", i,
			 key);
		return -EINVAL;
	}
	*ret = (uint64_t)x;
	return 0;
}

/*
 * Mapping i's page size in bytes: page_size, or page_size_kib, which
 * Firecracker fills with bytes as well (the name is wrong, its docs say);
 * 4 or 2048 there are taken as KiB.  When both come they must agree.
 */
static int get_page_size(json_object *o, size_t i, uint64_t *ret, char *why, size_t whylen)
{
	uint64_t ps = 0, kib = 0;
	bool has_ps = json_object_object_get_ex(o, "page_size", NULL);
	bool has_kib = json_object_object_get_ex(o, "page_size_kib", NULL);

	if (!has_ps && !has_kib) {
		snprintf(why, whylen, "mapping %zu has neither \"page_size\" nor \"page_size_kib\"",
			 i);
		return -EINVAL;
	}
	if (has_ps && get_u64(o, "page_size", i, &ps, why, whylen) < 0)
		return -EINVAL;
	if (has_kib && get_u64(o, "page_size_kib", i, &kib, why, whylen) < 0)
		return -EINVAL;
	if (kib == 4 || kib == FC_PAGE_HUGE >> 10)
		kib <<= 10;
	if (has_ps && has_kib && ps != kib) {
		snprintf(why, whylen,
			 "mapping %zu: \"page_size\" %" PRIu64 " and \"page_size_kib\" %" PRIu64
			 " disagree",
			 i, ps, kib);
		return -EINVAL;
	}
	*ret = has_ps ? ps : kib;
	return 0;
}

/*
 * The fields of the guest_memfd variant (Firecracker's secret-free
 * restore): gpa_start, the region's guest physical address (checked, not
 * used), and is_guest_memfd, which says whether the mapping is of the
 * guest_memfd sent with it.  Both may be absent (the classic handshake:
 * not guest_memfd); when there, of their types.
 */
static int get_variant(json_object *o, size_t i, bool *ret_gmem, char *why, size_t whylen)
{
	json_object *g;
	uint64_t gpa;

	if (json_object_object_get_ex(o, "gpa_start", NULL) &&
	    get_u64(o, "gpa_start", i, &gpa, why, whylen) < 0)
		return -EINVAL;
	*ret_gmem = false;
	if (!json_object_object_get_ex(o, "is_guest_memfd", &g))
		return 0;
	if (!json_object_is_type(g, json_type_boolean)) {
		snprintf(why, whylen, "mapping %zu: \"is_guest_memfd\" is not true or false", i);
		return -EINVAL;
	}
	*ret_gmem = json_object_get_boolean(g);
	return 0;
}

static int cmp_map(const void *a, const void *b)
{
	const struct fc_map *x = a, *y = b;

	return (x->addr > y->addr) - (x->addr < y->addr);
}

/*
 * The mappings of a parsed handshake, each inside the memory file of size
 * file_size, aligned to their pages, disjoint, all of one page size that
 * uffdd serves (*ret_page).  0, or -errno with why.
 */
int fcmsg_check_maps(json_object *arr, uint64_t file_size, struct fc_map *v, size_t *ret_n,
		     uint64_t *ret_page, bool *ret_gmem, char *why, size_t whylen)
{
	size_t n = json_object_array_length(arr);
	uint64_t page = 0;
	bool gmem = false;

	if (!n) {
		snprintf(why, whylen, "no mapping");
		return -EINVAL;
	}
	if (n > FC_MAPS_MAX) {
		snprintf(why, whylen, "%zu mappings; at most %d", n, FC_MAPS_MAX);
		return -E2BIG;
	}
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(arr, i);
		uint64_t ps;

		if (!json_object_is_type(o, json_type_object)) {
			snprintf(why, whylen, "mapping %zu is not a JSON object", i);
			return -EINVAL;
		}
		if (get_u64(o, "base_host_virt_addr", i, &v[i].addr, why, whylen) < 0 ||
		    get_u64(o, "size", i, &v[i].len, why, whylen) < 0 ||
		    get_u64(o, "offset", i, &v[i].off, why, whylen) < 0 ||
		    get_page_size(o, i, &ps, why, whylen) < 0)
			return -EINVAL;
		bool g;
		if (get_variant(o, i, &g, why, whylen) < 0)
			return -EINVAL;
		if (i && g != gmem) {
			snprintf(why, whylen,
				 "mapping %zu: \"is_guest_memfd\" %s, mapping 0's %s: one guest "
				 "memory is all guest_memfd or none",
				 i, g ? "true" : "false", gmem ? "true" : "false");
			return -EINVAL;
		}
		gmem = g;
		if (ps != uffdd_page && ps != FC_PAGE_HUGE) {
			snprintf(why, whylen, "mapping %zu: page size %" PRIu64 "; 4096 or 2097152",
				 i, ps);
			return -EINVAL;
		}
		if (page && ps != page) {
			snprintf(why, whylen,
				 "mapping %zu: page size %" PRIu64 ", mapping 0's %" PRIu64, i, ps,
				 page);
			return -EINVAL;
		}
		page = ps;
		if (!v[i].len || (v[i].addr | v[i].len | v[i].off) & (page - 1)) {
			snprintf(why, whylen,
				 "mapping %zu [%#" PRIx64 ", +%#" PRIx64 ") at offset %#" PRIx64
				 ": empty or not aligned to its %" PRIu64 "-byte pages",
				 i, v[i].addr, v[i].len, v[i].off, page);
			return -EINVAL;
		}
		/* Both below 2^63: the sums cannot wrap. */
		if (v[i].off + v[i].len > file_size) {
			snprintf(why, whylen,
				 "mapping %zu: offset %#" PRIx64 " + size %#" PRIx64
				 " is past the end of the memory file (%#" PRIx64 " bytes)",
				 i, v[i].off, v[i].len, file_size);
			return -EINVAL;
		}
	}
	qsort(v, n, sizeof(*v), cmp_map);
	for (size_t i = 0; i + 1 < n; i++)
		if (v[i].addr + v[i].len > v[i + 1].addr) {
			snprintf(why, whylen,
				 "mappings [%#" PRIx64 ", +%#" PRIx64 ") and [%#" PRIx64
				 ", +%#" PRIx64 ") overlap",
				 v[i].addr, v[i].len, v[i + 1].addr, v[i + 1].len);
			return -EINVAL;
		}
	*ret_n = n;
	*ret_page = page;
	*ret_gmem = gmem;
	return 0;
}

/* The whole message as one JSON value, nothing but white space after it. */
int fcmsg_parse(const struct fcmsg *m, json_object **ret, char *why, size_t whylen)
{
	json_tokener *tok = json_tokener_new_ex(FC_JSON_DEPTH);

	if (!tok) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	json_object *o = json_tokener_parse_ex(tok, m->buf, (int)m->len);
	enum json_tokener_error e = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!o) {
		if (e == json_tokener_continue)
			snprintf(why, whylen, "truncated JSON (%zu bytes)", m->len);
		else
			snprintf(why, whylen, "not JSON: %s at byte %zu",
				 json_tokener_error_desc(e), end);
		return -EBADMSG;
	}
	while (end < m->len && strchr(" \t\r\n", m->buf[end]) && m->buf[end])
		end++;
	if (end < m->len) {
		json_object_put(o);
		snprintf(why, whylen, "%zu bytes after the JSON", m->len - end);
		return -EBADMSG;
	}
	if (!json_object_is_type(o, json_type_array)) {
		json_object_put(o);
		snprintf(why, whylen, "not a JSON array of mappings");
		return -EINVAL;
	}
	*ret = o;
	return 0;
}
