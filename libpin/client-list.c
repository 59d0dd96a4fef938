// SPDX-License-Identifier: MIT
/*
 * The uffdd client's inspection requests: a session's counters (StatsGet)
 * and the lists of clients, regions and pins (ListGet, page by page).
 * Calls client.c, proto.c and util.c only.
 */
#include <stdio.h>
#include <string.h>

#include "client-internal.h"

PIN_EXPORT int pin_client_stats(struct pin_client *c, uint64_t session,
				struct pin_client_stats *ret)
{
	Uffdd__StatsGet sg = UFFDD__STATS_GET__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	Uffdd__Msg *rep = NULL;
	int r;

	if (!c || !ret)
		return -EINVAL;
	if (session == PIN_CLIENT_SESSION_ALL) {
		sg.has_all = 1;
		sg.all = 1;
	} else {
		sg.has_session = session != 0;
		sg.session = session;
	}
	req.body_case = UFFDD__MSG__BODY_STATS_GET;
	req.stats_get = &sg;
	pthread_mutex_lock(&c->lock);
	r = client_request(c, &req, NULL, 0, &rep);
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		return r;
	client_copy_stats(ret, rep->reply->stats);
	pin_proto_free(rep);
	return 0;
}

/* Copies entries [0, n) of a ListGet reply to v[at, at + n). */
typedef void (*list_copy_fn)(void *v, size_t at, const Uffdd__Reply *rep, size_t n);

/*
 * ListGet, page after page until the daemon says there is no more, into a
 * zeroed array of elem-sized entries that copy fills.  Each page must begin
 * after the one before (a daemon that goes back, or sends an empty page that
 * is not the last, gets -EPROTO): the walk ends.  A daemon without pages
 * answers everything in one reply without next_cursor.
 */
static int list_fetch(struct pin_client *c, Uffdd__ListGet__What what, uint64_t session,
		      size_t elem, list_copy_fn copy, void **ret_arr, size_t *ret_nr)
{
	Uffdd__ListGet lg = UFFDD__LIST_GET__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	uint8_t *arr = NULL;
	size_t total = 0;
	int r = 0;

	/* PIN_CLIENT_SESSION_ALL, as for pin_client_stats(): every session. */
	if (session == PIN_CLIENT_SESSION_ALL)
		session = 0;
	lg.what = what;
	lg.has_session = session != 0;
	lg.session = session;
	lg.has_cursor = lg.has_cursor_key = true;
	req.body_case = UFFDD__MSG__BODY_LIST_GET;
	req.list_get = &lg;
	for (;;) {
		Uffdd__Msg *rep = NULL;

		pthread_mutex_lock(&c->lock);
		r = client_request(c, &req, NULL, 0, &rep);
		pthread_mutex_unlock(&c->lock);
		if (r < 0)
			break;
		const Uffdd__Reply *p = rep->reply;
		size_t n = what == UFFDD__LIST_GET__WHAT__CLIENTS   ? p->n_clients
			   : what == UFFDD__LIST_GET__WHAT__REGIONS ? p->n_regions
								    : p->n_pins;
		bool more = p->has_next_cursor && p->next_cursor;
		uint64_t next_key = p->has_next_key ? p->next_key : 0;
		if (more && (!n || p->next_cursor < lg.cursor ||
			     (p->next_cursor == lg.cursor && next_key <= lg.cursor_key))) {
			pin_log(PIN_LOG_ERR, "uffdd: ListGet: a page that does not go on");
			pin_proto_free(rep);
			r = -EPROTO;
			break;
		}
		uint8_t *v = n > SIZE_MAX / elem - total - 1 ? NULL
							     : realloc(arr, (total + n + 1) * elem);
		if (!v) {
			pin_proto_free(rep);
			r = -ENOMEM;
			break;
		}
		arr = v;
		memset(arr + total * elem, 0, (n + 1) * elem);
		copy(arr, total, p, n);
		total += n;
		lg.cursor = p->next_cursor;
		lg.cursor_key = next_key;
		pin_proto_free(rep);
		if (!more)
			break;
	}
	if (r < 0) {
		free(arr);
		return r;
	}
	*ret_arr = arr;
	*ret_nr = total;
	return 0;
}

static void copy_clients(void *arr, size_t at, const Uffdd__Reply *rep, size_t n)
{
	struct pin_client_info *v = (struct pin_client_info *)arr + at;

	for (size_t i = 0; i < n; i++) {
		const Uffdd__ClientInfo *ci = rep->clients[i];

		v[i].session = ci->session;
		v[i].pid = ci->pid;
		v[i].uid = ci->uid;
		snprintf(v[i].name, sizeof(v[i].name), "%s", ci->name ? ci->name : "");
		v[i].regions = ci->regions;
		v[i].pinned_bytes = ci->pinned_bytes;
		client_copy_stats(&v[i].stats, ci->stats);
	}
}

static void copy_regions(void *arr, size_t at, const Uffdd__Reply *rep, size_t n)
{
	struct pin_client_region_info *v = (struct pin_client_region_info *)arr + at;

	for (size_t i = 0; i < n; i++) {
		const Uffdd__RegionInfo *ri = rep->regions[i];

		v[i].session = ri->session;
		v[i].addr = ri->range->addr;
		v[i].len = ri->range->len;
		v[i].mode = ri->mode;
		v[i].source = ri->source;
		v[i].pages_populated = ri->pages_populated;
		v[i].pages_dirty = ri->pages_dirty;
	}
}

static void copy_pins(void *arr, size_t at, const Uffdd__Reply *rep, size_t n)
{
	struct pin_client_pin_info *v = (struct pin_client_pin_info *)arr + at;

	for (size_t i = 0; i < n; i++) {
		const Uffdd__PinInfo *pi = rep->pins[i];

		v[i].session = pi->session;
		v[i].addr = pi->range->addr;
		v[i].len = pi->range->len;
		v[i].cookie = pi->cookie;
	}
}

PIN_EXPORT int pin_client_list_clients(struct pin_client *c, struct pin_client_info **ret,
				       size_t *ret_nr)
{
	if (!c || !ret || !ret_nr)
		return -EINVAL;
	return list_fetch(c, UFFDD__LIST_GET__WHAT__CLIENTS, 0, sizeof(**ret), copy_clients,
			  (void **)ret, ret_nr);
}

PIN_EXPORT int pin_client_list_regions(struct pin_client *c, uint64_t session,
				       struct pin_client_region_info **ret, size_t *ret_nr)
{
	if (!c || !ret || !ret_nr)
		return -EINVAL;
	return list_fetch(c, UFFDD__LIST_GET__WHAT__REGIONS, session, sizeof(**ret), copy_regions,
			  (void **)ret, ret_nr);
}

PIN_EXPORT int pin_client_list_pins(struct pin_client *c, uint64_t session,
				    struct pin_client_pin_info **ret, size_t *ret_nr)
{
	if (!c || !ret || !ret_nr)
		return -EINVAL;
	return list_fetch(c, UFFDD__LIST_GET__WHAT__PINS, session, sizeof(**ret), copy_pins,
			  (void **)ret, ret_nr);
}
