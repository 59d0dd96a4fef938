// SPDX-License-Identifier: MIT
/*
 * The uffdd client's regions: checked, registered (or checked to be), added
 * one by one or in batches and remembered for a reconnect, removed; and the
 * requests on a range of them (Prefetch, WaitPopulated, DirtyGet).  Calls
 * client.c, proto.c, uffd.c and util.c only.
 */
#include <string.h>

#include "client-internal.h"

static bool page_aligned(uint64_t x)
{
	return !(x & ((uint64_t)sysconf(_SC_PAGESIZE) - 1));
}

/* Keep cr (and its reference on its source); the table grows by doubling. */
static int remember_region(struct pin_client *c, const struct client_region *cr)
{
	if (c->nr_regions == c->cap_regions) {
		size_t cap = c->cap_regions ? 2 * c->cap_regions : 16;
		struct client_region *n = reallocarray(c->regions, cap, sizeof(*n));

		if (!n)
			return -ENOMEM;
		c->regions = n;
		c->cap_regions = cap;
	}
	c->regions[c->nr_regions++] = *cr;
	return 0;
}

#define REGION_FLAGS                                                                               \
	(PIN_CLIENT_REGION_NO_PUSH | PIN_CLIENT_REGION_REGISTER | PIN_CLIENT_REGION_REGISTERED |   \
	 PIN_CLIENT_REGION_PAGE_SERVER)

/* Check a caller's region and make what the client remembers of it, with a
 * reference on *src: the client's duplicate of the region's fd, made on the
 * first use (the caller's reference; its regions all have that fd).
 * *ret_flags: its flags; *ret_registered: the daemon is to leave the
 * registration alone. */
static int region_take(const struct pin_client_region *user_r, struct client_region *ret,
		       struct client_src **src, unsigned int *ret_flags, bool *ret_registered)
{
	struct pin_client_region reg = { .sz = sizeof(reg) }, *r = &reg;
	int err = pin_opts_copy(&reg, sizeof(reg), user_r);

	if (err < 0)
		return err;
	err = pin_proto_check_range((uintptr_t)r->addr, r->len);
	if (err < 0)
		return err;
	if (!pin_region_mode_valid(r->mode) || (r->flags & ~REGION_FLAGS) ||
	    !page_aligned(r->offset) || ((r->mode & PIN_UFFD_REGISTER_MINOR) && r->fd < 0))
		return -EINVAL;
	if ((r->flags & PIN_CLIENT_REGION_REGISTER) && (r->flags & PIN_CLIENT_REGION_REGISTERED))
		return -EINVAL;
	if (r->fd < -1 || (r->fd < 0 && (r->flags & PIN_CLIENT_REGION_PAGE_SERVER)))
		return -EBADF;
	*ret = (struct client_region){
		.addr = (uintptr_t)r->addr,
		.len = r->len,
		.mode = r->mode,
		.push = !(r->flags & PIN_CLIENT_REGION_NO_PUSH),
		.offset = r->fd >= 0 ? r->offset : 0,
		.ps = r->fd >= 0 && (r->flags & PIN_CLIENT_REGION_PAGE_SERVER),
		.task = r->task,
	};
	*ret_flags = r->flags;
	*ret_registered = !(r->flags & PIN_CLIENT_REGION_REGISTER);
	if (r->fd >= 0) {
		if (!*src && !(*src = client_src_new(r->fd)))
			return -errno;
		ret->src = client_src_ref(*src);
	}
	return 0;
}

/* The names of mode's faults, for a message. */
static const char *mode_text(uint32_t mode)
{
	if (mode & PIN_UFFD_REGISTER_MINOR)
		return "MISSING and MINOR";
	switch (mode & (PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP)) {
	case PIN_UFFD_REGISTER_MISSING:
		return "MISSING";
	case PIN_UFFD_REGISTER_WP:
		return "WP";
	default:
		return "MISSING and WP";
	}
}

/*
 * Before the daemon is asked to serve cr: register it with the handed-over
 * userfaultfd (a no-op where it is registered so already), or with
 * PIN_CLIENT_REGION_REGISTERED check that it is, or with
 * PIN_CLIENT_REGION_REGISTER leave it to the daemon.  A range nobody
 * registered would fault as zero pages, never reaching the daemon.
 */
static int region_claim(const struct pin_client *c, const struct client_region *cr,
			unsigned int flags)
{
	uintptr_t gap;

	if (flags & PIN_CLIENT_REGION_REGISTER)
		return 0;
	if (!(flags & PIN_CLIENT_REGION_REGISTERED))
		/* Without a userfaultfd handed over the daemon refuses it. */
		return c->uffd < 0 ? 0 : pin_uffd_register_fd(c->uffd, cr->addr, cr->len, cr->mode);
	/* Another process's memory (pin_uffd_from_fd()): its word is taken. */
	if (c->uffd >= 0 && !c->uffd_own)
		return 0;
	int r = pin_uffd_covers(cr->addr, cr->len, cr->mode, &gap);
	if (r)
		return r < 0 ? r : 0;
	pin_log(PIN_LOG_ERR,
		"RegionAdd [%#llx, +%#llx): PIN_CLIENT_REGION_REGISTERED, but %#lx is not "
		"registered with a userfaultfd for %s faults (/proc/self/smaps)",
		(unsigned long long)cr->addr, (unsigned long long)cr->len, (unsigned long)gap,
		mode_text(cr->mode));
	return -EINVAL;
}

PIN_EXPORT int pin_client_region_add(struct pin_client *c, const struct pin_client_region *user_r)
{
	struct client_region cr = { 0 };
	struct client_src *src = NULL;
	unsigned int flags;
	bool registered;
	int err;

	if (!c || !user_r)
		return -EINVAL;
	err = region_take(user_r, &cr, &src, &flags, &registered);
	if (err == 0) {
		pthread_mutex_lock(&c->lock);
		err = region_claim(c, &cr, flags);
		if (err == 0)
			err = client_send_region_add(c, &cr, registered, true);
		if (err == 0)
			err = remember_region(c, &cr);
		if (err < 0)
			client_src_unref(cr.src);
		client_src_unref(src);
		pthread_mutex_unlock(&c->lock);
	}
	return err;
}

/* Regions per RegionAddBatch: some 40 bytes each encoded, so a batch is
 * far inside one datagram (PIN_PROTO_MAX_MSG). */
#define BATCH_MAX 2048

static void region_add_fill(const struct pin_client *c, Uffdd__RegionAdd *ra, Uffdd__Range *range,
			    const struct client_region *cr, bool registered)
{
	range->addr = cr->addr;
	range->len = cr->len;
	ra->range = range;
	ra->mode = cr->mode;
	ra->source = client_source_kind(cr);
	ra->has_task = cr->ps;
	ra->task = cr->task;
	ra->has_offset = cr->src != NULL;
	ra->offset = cr->offset;
	ra->has_push = 1;
	ra->push = cr->push;
	ra->has_registered = 1;
	ra->registered = registered;
	ra->has_wp_async = ra->wp_async = client_wp_async(c, cr->mode);
}

/* One RegionAddBatch of v[0, n), the source fd (or -1) attached. */
static int send_batch(struct pin_client *c, const struct client_region *v, const bool *registered,
		      size_t n, int fd)
{
	Uffdd__RegionAdd *ra = calloc(n, sizeof(*ra));
	Uffdd__RegionAdd **ptrs = calloc(n, sizeof(*ptrs));
	Uffdd__Range *ranges = calloc(n, sizeof(*ranges));
	Uffdd__RegionAddBatch b = UFFDD__REGION_ADD_BATCH__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	int r = -ENOMEM;

	if (ra && ptrs && ranges) {
		for (size_t i = 0; i < n; i++) {
			uffdd__region_add__init(&ra[i]);
			uffdd__range__init(&ranges[i]);
			region_add_fill(c, &ra[i], &ranges[i], &v[i], registered[i]);
			ptrs[i] = &ra[i];
		}
		b.n_regions = n;
		b.regions = ptrs;
		req.body_case = UFFDD__MSG__BODY_REGION_ADD_BATCH;
		req.region_add_batch = &b;
		r = client_request(c, &req, &fd, fd >= 0, NULL);
	}
	free(ra);
	free(ptrs);
	free(ranges);
	return r;
}

/* v[0, n) in one batch, or one by one when the daemon has no batches (it
 * rejects the unknown body with -EBADMSG), then remembered. */
static int add_chunk(struct pin_client *c, struct client_region *v, const bool *registered,
		     size_t n)
{
	int fd = -1, r;

	for (size_t i = 0; i < n && fd < 0; i++)
		fd = v[i].src ? v[i].src->fd : -1;
	r = send_batch(c, v, registered, n, fd);
	for (size_t i = 0; r == -EBADMSG && i < n; i++)
		r = client_send_region_add(c, &v[i], registered[i], true);
	for (size_t i = 0; r == 0 && i < n; i++) {
		r = remember_region(c, &v[i]);
		if (r == 0)
			v[i].src = NULL; /* the client's now */
	}
	return r;
}

int pin_client_region_add_many(struct pin_client *c, const struct pin_client_region *v, size_t n)
{
	struct client_region *cr = calloc(n ? n : 1, sizeof(*cr));
	bool *registered = calloc(n ? n : 1, sizeof(*registered));
	unsigned int *flags = calloc(n ? n : 1, sizeof(*flags));
	struct client_src *src = NULL;
	size_t taken = 0;
	unsigned int ps = 0;
	int err = !c || !v || !cr || !registered || !flags ? -ENOMEM : 0, fd = -1;

	if (!c || !v)
		err = -EINVAL;
	/* One descriptor travels with a batch: every source is that file. */
	for (size_t i = 0; !err && i < n; i++) {
		if (v[i].fd >= 0 && fd >= 0 && v[i].fd != fd)
			err = -EINVAL;
		/* ... and one kind: a file, or a page server for one task. */
		if (v[i].fd >= 0 && fd >= 0 && ((v[i].flags ^ ps) & PIN_CLIENT_REGION_PAGE_SERVER))
			err = -EINVAL;
		if (v[i].fd >= 0 && fd < 0)
			ps = v[i].flags & PIN_CLIENT_REGION_PAGE_SERVER;
		fd = v[i].fd >= 0 ? v[i].fd : fd;
	}
	for (; !err && taken < n; taken++) {
		err = region_take(&v[taken], &cr[taken], &src, &flags[taken], &registered[taken]);
		if (err)
			break;
	}
	if (c)
		pthread_mutex_lock(&c->lock);
	for (size_t i = 0; !err && i < n; i++)
		err = region_claim(c, &cr[i], flags[i]);
	for (size_t i = 0; !err && i < n; i += BATCH_MAX)
		err = add_chunk(c, &cr[i], &registered[i], n - i < BATCH_MAX ? n - i : BATCH_MAX);
	/* What was not remembered (on failure) is not kept. */
	for (size_t i = 0; i < taken; i++)
		client_src_unref(cr[i].src);
	client_src_unref(src);
	if (c)
		pthread_mutex_unlock(&c->lock);
	free(cr);
	free(registered);
	free(flags);
	return err;
}

/* Cut [a, e) out of the remembered regions, splitting one that spans it. */
static int forget_region_range(struct pin_client *c, uint64_t a, uint64_t e)
{
	for (size_t i = 0; i < c->nr_regions;) {
		struct client_region *cr = &c->regions[i];
		uint64_t ce = cr->addr + cr->len;

		if (ce <= a || cr->addr >= e) {
			i++;
			continue;
		}
		if (cr->addr < a && ce > e) {
			struct client_region tail = *cr;

			tail.offset += e - cr->addr;
			tail.addr = e;
			tail.len = ce - e;
			cr->len = a - cr->addr;
			if (remember_region(c, &tail) < 0)
				return -ENOMEM;
			client_src_ref(tail.src);
			return 0;
		}
		if (cr->addr < a) {
			cr->len = a - cr->addr;
		} else if (ce > e) {
			cr->offset += e - cr->addr;
			cr->len = ce - e;
			cr->addr = e;
		} else {
			client_src_unref(cr->src);
			*cr = c->regions[--c->nr_regions];
			continue;
		}
		i++;
	}
	return 0;
}

static int simple_range_request(struct pin_client *c, Uffdd__Msg *req, Uffdd__Range *range,
				void *addr, size_t len)
{
	int r;

	if (!c)
		return -EINVAL;
	r = pin_proto_check_range((uintptr_t)addr, len);
	if (r < 0)
		return r;
	range->addr = (uintptr_t)addr;
	range->len = len;
	pthread_mutex_lock(&c->lock);
	r = client_request(c, req, NULL, 0, NULL);
	if (r == 0 && req->body_case == UFFDD__MSG__BODY_REGION_REMOVE)
		r = forget_region_range(c, range->addr, range->addr + range->len);
	pthread_mutex_unlock(&c->lock);
	return r;
}

PIN_EXPORT int pin_client_region_remove(struct pin_client *c, void *addr, size_t len)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__RegionRemove rr = UFFDD__REGION_REMOVE__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	rr.range = &range;
	req.body_case = UFFDD__MSG__BODY_REGION_REMOVE;
	req.region_remove = &rr;
	return simple_range_request(c, &req, &range, addr, len);
}

PIN_EXPORT int pin_client_prefetch(struct pin_client *c, void *addr, size_t len)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__Prefetch pf = UFFDD__PREFETCH__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	pf.range = &range;
	req.body_case = UFFDD__MSG__BODY_PREFETCH;
	req.prefetch = &pf;
	return simple_range_request(c, &req, &range, addr, len);
}

PIN_EXPORT int pin_client_wait_populated(struct pin_client *c, void *addr, size_t len,
					 unsigned int timeout_ms)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__WaitPopulated w = UFFDD__WAIT_POPULATED__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;

	w.range = &range;
	w.has_timeout_ms = timeout_ms != 0;
	w.timeout_ms = timeout_ms;
	req.body_case = UFFDD__MSG__BODY_WAIT;
	req.wait = &w;
	return simple_range_request(c, &req, &range, addr, len);
}

PIN_EXPORT int pin_client_dirty_get(struct pin_client *c, void *addr, size_t len,
				    unsigned int flags, uint8_t *bitmap, size_t bitmap_len)
{
	Uffdd__Range range = UFFDD__RANGE__INIT;
	Uffdd__DirtyGet dg = UFFDD__DIRTY_GET__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	Uffdd__Msg *rep = NULL;
	const ProtobufCBinaryData *bits;
	size_t pages, need;
	int r, dirty = 0;

	if (!c || !bitmap || (flags & ~PIN_CLIENT_DIRTY_RESET))
		return -EINVAL;
	r = pin_proto_check_range((uintptr_t)addr, len);
	if (r < 0)
		return r;
	pages = len / (size_t)sysconf(_SC_PAGESIZE);
	need = (pages + 7) / 8;
	if (bitmap_len < need || pages > INT32_MAX)
		return -EINVAL;
	range.addr = (uintptr_t)addr;
	range.len = len;
	dg.range = &range;
	dg.has_reset = 1;
	dg.reset = !!(flags & PIN_CLIENT_DIRTY_RESET);
	req.body_case = UFFDD__MSG__BODY_DIRTY_GET;
	req.dirty_get = &dg;
	pthread_mutex_lock(&c->lock);
	r = client_request(c, &req, NULL, 0, &rep);
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		return r;
	bits = &rep->reply->bitmap;
	if (bits->len > need) {
		pin_log(PIN_LOG_ERR,
			"uffdd: DirtyGet [%#llx, %#llx): %zu bitmap bytes for %zu pages",
			(unsigned long long)range.addr, (unsigned long long)(range.addr + len),
			bits->len, pages);
		pin_proto_free(rep);
		return -EPROTO;
	}
	memset(bitmap, 0, need);
	if (bits->len)
		memcpy(bitmap, bits->data, bits->len);
	/* Bits past the last page mean nothing. */
	if (pages % 8)
		bitmap[need - 1] &= (uint8_t)((1u << (pages % 8)) - 1);
	for (size_t i = 0; i < need; i++)
		dirty += __builtin_popcount(bitmap[i]);
	pin_proto_free(rep);
	return dirty;
}
