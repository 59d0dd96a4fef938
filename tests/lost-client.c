// SPDX-License-Identifier: MIT
/*
 * The client of areas stranded and durable-lost (lost-client.h): its
 * beginning (a userfaultfd without POISON, a region over a source file cut
 * short), its raw requests and the daemon's list of sessions.  It calls
 * libpin and the test harness only.
 */
#include <check.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "lost-client.h"
#include "test-common.h"

/* A bounded wait, natively, in 10 ms steps (times test_time_scale()): a
 * bound that fails the test, not a timing measured. */
#define WAIT_STEPS 1000
#define STEP_MS	   10
#define REPLY_MS   10000

int lost_client_begin(struct test_conn *k, const char *sock, const char *name,
		      const struct lost_source *src, uint8_t **ret_base)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_FORK | PIN_UFFD_FEATURE_EVENT_REMAP |
			    PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP,
		/* No POISON, as CRIU's restorer opens them. */
		.optional = PIN_UFFD_FEATURE_THREAD_ID,
	};
	struct pin_client_opts co = { .sz = sizeof(co), .socket = sock, .name = name };

	REQUIRE(test_conn_open(k, &uo, &co) == 0);
	REQUIRE(!(pin_uffd_features(k->u) & PIN_UFFD_FEATURE_POISON));
	uint8_t *base = test_map_region(src->pages * page);
	REQUIRE(base);
	struct pin_client_region r = {
		.sz = sizeof(r),
		.addr = base,
		.len = src->pages * page,
		.mode = PIN_UFFD_REGISTER_MISSING,
		.flags = PIN_CLIENT_REGION_REGISTER | PIN_CLIENT_REGION_NO_PUSH,
		.fd = src->fd,
	};
	REQUIRE(pin_client_region_add(k->c, &r) == 0);
	REQUIRE(test_page_ok(base, 0, src->seed));
	REQUIRE(ftruncate(src->fd, (off_t)page) == 0);
	*ret_base = base;
	return 0;
}

Uffdd__Msg *lost_client_request(int sock, Uffdd__Msg *m, uint64_t seq)
{
	struct pollfd p = { .fd = sock, .events = POLLIN };
	int fds[PIN_PROTO_MAX_FDS];
	Uffdd__Msg *rep = NULL;
	size_t n = 0;

	m->has_seq = true;
	m->seq = seq;
	if (pin_proto_send(sock, m, NULL, 0) < 0)
		return NULL;
	for (;;) {
		if (poll(&p, 1, REPLY_MS * (int)test_time_scale()) != 1 ||
		    pin_proto_recv(sock, &rep, fds, &n) < 0)
			return NULL;
		for (size_t i = 0; i < n; i++)
			close(fds[i]);
		if (rep->body_case != UFFDD__MSG__BODY_RESUME &&
		    (rep->body_case != UFFDD__MSG__BODY_REPLY || rep->seq == seq))
			break;
		pin_proto_free(rep);
	}
	if (rep->body_case != UFFDD__MSG__BODY_REPLY || rep->seq != seq || !rep->reply->stats) {
		pin_proto_free(rep);
		return NULL;
	}
	return rep;
}

Uffdd__Msg *lost_client_stats(int sock, uint64_t seq)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__StatsGet sg = UFFDD__STATS_GET__INIT;

	m.body_case = UFFDD__MSG__BODY_STATS_GET;
	m.stats_get = &sg;
	return lost_client_request(sock, &m, seq);
}

Uffdd__Msg *lost_client_stats_unreadable(const struct test_conn *k, uint64_t populated)
{
	Uffdd__Msg *rep = NULL;

	for (int i = 0; i < WAIT_STEPS * (int)test_time_scale(); i++) {
		pin_proto_free(rep);
		rep = lost_client_stats(pin_client_fd(k->c), LOST_RAW_SEQ0 + (uint64_t)i);
		if (!rep || (rep->reply->stats->unreadable &&
			     rep->reply->stats->pages_populated == populated))
			break;
		test_sleep_ms(STEP_MS);
	}
	return rep;
}

bool lost_client_listed(const char *sock, pid_t pid, struct pin_client_stats *ret)
{
	struct pin_client_opts co = { .sz = sizeof(co), .socket = sock, .name = "lister" };
	struct pin_client *c;
	struct pin_client_info *v;
	size_t n;
	bool found = false;

	ck_assert_int_eq(pin_client_connect(&co, &c), 0);
	ck_assert_int_eq(pin_client_list_clients(c, &v, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (v[i].pid == pid) {
			*ret = v[i].stats;
			found = true;
		}
	free(v);
	pin_client_free(c);
	return found;
}
