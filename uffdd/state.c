// SPDX-License-Identifier: MIT
/*
 * A session's durable record: one memfd, sized once (sparse: shmem allocates
 * only the pages written) and mapped whole, so that no pointer into it ever
 * moves.  It owns the file's layout, at fixed offsets: the header with the
 * identity, the working-set count and two commit slots (the byte cur names
 * the committed one), two reply areas (double buffered), the working set,
 * then the arena of record table blocks and bitmaps (state-internal.h).  It
 * makes a record and opens one: state_open() rebuilds from the file what the
 * daemon keeps beside it (the arena's allocator, the known bitmaps, the free
 * record slots: state-arena.c's).  A file from the store is untrusted input:
 * state_open() reads it only inside the mapping, in time n log n in its
 * records, and refuses it with one line naming the field.  It may call
 * state-arena.c, util.c, log.c and libpin's private helpers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state-internal.h"

/* ---- making and opening ---- */

static void state_init_mem(struct state *st, int fd, void *base, uint64_t size)
{
	st->fd = fd;
	st->base = base;
	st->size = size;
	st->hdr = base;
}

int state_new(const struct state_ident *ident, uint64_t max_bytes, struct state **ret)
{
	uint64_t size = max_bytes & ~(UNIT - 1);
	_cleanup_close_ int fd = -1;
	struct state *st;
	void *base;
	int r;

	if (size < ARENA_OFF + TABLE_FIRST * sizeof(struct entry))
		return -EINVAL;
	fd = memfd_create("uffdd-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		r = -errno;
		ulog(LOG_ERR, "state %" PRIu64 ": memfd_create: %s", ident->id, strerror(-r));
		return r;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		r = -errno;
		ulog(LOG_ERR, "state %" PRIu64 ": ftruncate to [0, %#" PRIx64 "): %s", ident->id,
		     size, strerror(-r));
		return r;
	}
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		r = -errno;
		ulog(LOG_ERR, "state %" PRIu64 ": mmap of [0, %#" PRIx64 "): %s", ident->id, size,
		     strerror(-r));
		return r;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		munmap(base, size);
		return -ENOMEM;
	}
	state_init_mem(st, fd, base, size);
	st->ident = *ident;
	if (arena_put(st, ARENA_OFF, size - ARENA_OFF) < 0)
		goto nomem;
	st->table_cap = TABLE_FIRST;
	st->table_off = arena_get(st, TABLE_FIRST * sizeof(struct entry));
	st->table = (struct entry *)(st->base + st->table_off);
	if (reserve((void **)&st->free_slots, &st->free_slots_cap, TABLE_FIRST,
		    sizeof(*st->free_slots)))
		goto nomem;
	for (uint32_t i = TABLE_FIRST; i-- > 0;)
		st->free_slots[st->nfree_slots++] = i;

	struct state_hdr *h = st->hdr;

	memcpy(h->magic, STATE_MAGIC, sizeof(h->magic));
	h->version = STATE_VERSION;
	h->max_bytes = size;
	h->ident = *ident;
	st->com = (struct state_slot){ .table_off = st->table_off, .table_cap = st->table_cap };
	h->slot[0] = st->com;
	__atomic_store_n(&h->cur, 0, __ATOMIC_RELEASE);
	fd = -1;
	*ret = st;
	return 0;
nomem:
	st->fd = -1;
	state_free(st);
	return -ENOMEM;
}

/* A refusal of state_open(): one line into why. */
static int bad(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int bad(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

static int cmp_extent(const void *a, const void *b)
{
	const struct extent *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* A bitmap a record names at off, of nbits: inside the arena, aligned. */
static int check_bm(const struct state *st, const char *field, uint32_t slot, uint64_t off,
		    uint64_t nbits, char *why, size_t whylen)
{
	uint64_t len = bm_bytes(nbits);

	if (off < ARENA_OFF || off % UNIT || off > st->size || len > st->size - off)
		return bad(why, whylen,
			   "record %" PRIu32 ": %s bitmap at %#" PRIx64 " of %" PRIu64
			   " bytes is outside the arena [%#" PRIx64 ", %#" PRIx64 ")",
			   slot, field, off, len, ARENA_OFF, st->size);
	return 0;
}

int check_rec(const struct state *st, const struct state_rec *r, uint32_t slot, char *why,
	      size_t whylen)
{
	uint64_t nbits = r->len >> uffdd_page_shift;
	int ret;

	if (r->kind != STATE_REGION && r->kind != STATE_PIN)
		return bad(why, whylen, "record %" PRIu32 ": kind %" PRIu32, slot, r->kind);
	if (pin_proto_check_range(r->start, r->len) < 0)
		return bad(why, whylen, "record %" PRIu32 ": range [%#" PRIx64 ", +%#" PRIx64 ")",
			   slot, r->start, r->len);
	if (r->kind == STATE_PIN) {
		if (r->populated || r->zero || r->dirty)
			return bad(why, whylen, "record %" PRIu32 ": a pin with bitmaps", slot);
		return 0;
	}
	/* What a RegionAdd may ask for: a snapshot's MINOR with MISSING, from
	 * a file. */
	if (!pin_region_mode_valid(r->mode) || ((r->mode & PIN_UFFD_REGISTER_MINOR) && !r->src))
		return bad(why, whylen, "record %" PRIu32 ": mode %#" PRIx32, slot, r->mode);
	if (r->flags & ~(STATE_R_PUSH | STATE_R_OURS | STATE_R_HUGE | STATE_R_COVERED))
		return bad(why, whylen, "record %" PRIu32 ": flags %#" PRIx32, slot, r->flags);
	if ((r->flags & STATE_R_HUGE) && ((r->start | r->len | r->offset) & (UFFDD_HUGE_PAGE - 1) ||
					  r->mode != PIN_UFFD_REGISTER_MISSING))
		return bad(why, whylen,
			   "record %" PRIu32 ": huge pages over [%#" PRIx64 ", +%#" PRIx64
			   ") at offset %#" PRIx64 ", mode %#" PRIx32,
			   slot, r->start, r->len, r->offset, r->mode);
	if (!r->populated)
		return bad(why, whylen, "record %" PRIu32 ": no populated bitmap", slot);
	ret = check_bm(st, "populated", slot, r->populated, nbits, why, whylen);
	if (!ret && r->zero)
		ret = check_bm(st, "zero", slot, r->zero, nbits, why, whylen);
	if (!ret && r->dirty)
		ret = check_bm(st, "dirty", slot, r->dirty, nbits, why, whylen);
	return ret;
}

/* The header and the committed slot, copied out of the file first. */
/* The last read's messages, up to the first empty one: each one the kernel
 * sends, and those not applied a range the daemon can apply. */
static int check_events(struct state *st, const struct state_hdr *h, char *why, size_t whylen)
{
	uint64_t mask = (uint64_t)uffdd_page - 1;
	uint32_t n = 0;

	for (; n < STATE_EVENTS_MAX && h->events[n][0]; n++) {
		struct pin_uffd_event *e = &st->events[n];
		uint64_t a = 0, b = 0, to = 0;
		bool wraps = false;

		if (pin_uffd_decode(h->events[n], e) < 0)
			return bad(why, whylen, "event %" PRIu32 ": no such message (%#x)", n,
				   h->events[n][0]);
		if (n < h->events_applied)
			continue;
		switch (e->type) {
		case PIN_UFFD_EVENT_REMAP:
			a = e->arg.remap.from;
			to = e->arg.remap.to;
			b = a + e->arg.remap.len;
			wraps = b < a || (to & mask) || to > UINT64_MAX - e->arg.remap.len;
			break;
		case PIN_UFFD_EVENT_REMOVE:
			a = e->arg.remove.start;
			b = e->arg.remove.end;
			break;
		case PIN_UFFD_EVENT_UNMAP:
			a = e->arg.unmap.start;
			b = e->arg.unmap.end;
			break;
		default:
			continue;
		}
		if (wraps || a > b || (a & mask) || (b & mask))
			return bad(why, whylen,
				   "event %" PRIu32 ": [%#" PRIx64 ", %#" PRIx64 ") to %#" PRIx64
				   " is not a range of pages",
				   n, a, b, to);
	}
	if (h->events_applied > STATE_EVENTS_MAX)
		return bad(why, whylen, "events_applied %" PRIu32 " (at most %u)",
			   h->events_applied, STATE_EVENTS_MAX);
	st->events_n = n;
	st->events_applied = h->events_applied;
	return 0;
}

static int check_header(struct state *st, char *why, size_t whylen)
{
	struct state_hdr h;
	uint8_t cur;
	int r;

	memcpy(&h, st->hdr, sizeof(h));
	cur = h.cur;
	if (memcmp(h.magic, STATE_MAGIC, sizeof(h.magic)))
		return bad(why, whylen, "magic %02x%02x%02x%02x%02x%02x%02x%02x (want %s)",
			   (uint8_t)h.magic[0], (uint8_t)h.magic[1], (uint8_t)h.magic[2],
			   (uint8_t)h.magic[3], (uint8_t)h.magic[4], (uint8_t)h.magic[5],
			   (uint8_t)h.magic[6], (uint8_t)h.magic[7], STATE_MAGIC);
	if (h.version != STATE_VERSION)
		return bad(why, whylen, "version %" PRIu32 " (want %u)", h.version, STATE_VERSION);
	if (h.max_bytes != st->size)
		return bad(why, whylen, "max_bytes %" PRIu64 " is not the file's size %" PRIu64,
			   h.max_bytes, st->size);
	if (cur > 1)
		return bad(why, whylen, "cur %u (want 0 or 1)", cur);

	struct state_slot *s = &h.slot[cur];
	uint64_t room;

	/* Past the last txn a commit writes (STATE_TXN_LAST): records
	 * pending for the next one would be born at txn 0, never. */
	if (s->txn > STATE_TXN_LAST)
		return bad(why, whylen, "txn %" PRIu64 " (the last is %" PRIu64 ")", s->txn,
			   STATE_TXN_LAST);
	if (s->reply_area > 1)
		return bad(why, whylen, "reply_area %" PRIu32 " (want 0 or 1)", s->reply_area);
	if (s->reply_len > PIN_PROTO_MAX_MSG)
		return bad(why, whylen, "reply_len %" PRIu32 " (at most %u)", s->reply_len,
			   PIN_PROTO_MAX_MSG);
	if (!memchr(s->meta.name, 0, sizeof(s->meta.name)))
		return bad(why, whylen, "meta.name is not terminated");
	if (s->meta.flags & ~(STATE_HELLO | STATE_UFFD | STATE_FORKING | STATE_FINISHING |
			      STATE_FC | STATE_FC_READY | STATE_PAGEMAP | STATE_EVLOG))
		return bad(why, whylen, "meta.flags %#" PRIx32, s->meta.flags);
	room = s->table_off >= ARENA_OFF && s->table_off <= st->size ? st->size - s->table_off : 0;
	if (s->table_off < ARENA_OFF || s->table_off % UNIT || !s->table_cap ||
	    s->table_cap > TABLE_MAX || s->table_cap > room / sizeof(struct entry))
		return bad(why, whylen,
			   "table at %#" PRIx64 " of %" PRIu64
			   " records is outside the arena [%#" PRIx64 ", %#" PRIx64 ")",
			   s->table_off, s->table_cap, ARENA_OFF, st->size);
	if (h.wset_n > UFFDD_WSET_MAX)
		return bad(why, whylen, "wset_n %" PRIu64 " (at most %u)", h.wset_n,
			   UFFDD_WSET_MAX);
	if (h.stranded > 1)
		return bad(why, whylen, "stranded %" PRIu32 " (want 0 or 1)", h.stranded);
	if (h.stranded && !memchr(h.stranded_why, 0, sizeof(h.stranded_why)))
		return bad(why, whylen, "stranded_why is not terminated");
	r = check_events(st, &h, why, whylen);
	if (r < 0)
		return r;
	st->ident = h.ident;
	st->com = *s;
	st->wset_n = h.wset_n;
	/* Any two ids: they only name the children that may be made again. */
	memcpy(st->making, h.making, sizeof(st->making));
	/* Any range: a Prefetch of it places only missing pages of regions. */
	memcpy(st->placing, h.placing, sizeof(st->placing));
	/* Any count: it only makes the session's end a failure. */
	st->lost = h.lost;
	st->stranded = h.stranded;
	if (st->stranded)
		memcpy(st->stranded_why, h.stranded_why, sizeof(st->stranded_why));
	return 0;
}

static int check_wset(struct state *st, char *why, size_t whylen)
{
	const struct state_range *w = (const struct state_range *)(st->base + WSET_OFF);

	for (uint64_t i = 0; i < st->wset_n; i++) {
		struct state_range r = w[i];

		if (r.addr >= r.end)
			return bad(why, whylen,
				   "wset run %" PRIu64 ": [%#" PRIx64 ", %#" PRIx64 ") is empty", i,
				   r.addr, r.end);
	}
	return 0;
}

/*
 * Every live record, checked; the arena runs they and the table use (sorted:
 * none may overlap another), the bitmaps known, the free slots.
 */
static int check_records(struct state *st, char *why, size_t whylen)
{
	uint64_t txn = st->com.txn, n = 0, nreg = 0;
	_cleanup_free_ struct extent *used = NULL; /* arena runs */
	_cleanup_free_ struct extent *regs = NULL; /* regions: start, len */
	size_t used_cap = 0, regs_cap = 0;
	int ret;

	st->table_off = st->com.table_off;
	st->table_cap = st->com.table_cap;
	st->table = (struct entry *)(st->base + st->table_off);
	if (reserve((void **)&used, &used_cap, 1, sizeof(*used)))
		return -ENOMEM;
	used[n++] = (struct extent){ st->table_off, st->table_cap * sizeof(struct entry) };
	for (uint64_t i = 0; i < st->table_cap; i++) {
		struct entry e;

		memcpy(&e, &st->table[i], sizeof(e));
		if (e.born > txn || e.died > txn)
			st->scrub = true;
		if (!is_live(&e, txn)) {
			if (slot_push(&st->free_slots, &st->nfree_slots, &st->free_slots_cap,
				      (uint32_t)i))
				return -ENOMEM;
			continue;
		}
		ret = check_rec(st, &e.rec, (uint32_t)i, why, whylen);
		if (ret < 0)
			return ret;
		if (e.rec.kind != STATE_REGION)
			continue;
		if (reserve((void **)&regs, &regs_cap, nreg + 1, sizeof(*regs)) ||
		    reserve((void **)&used, &used_cap, n + 3, sizeof(*used)))
			return -ENOMEM;
		regs[nreg++] = (struct extent){ e.rec.start, e.rec.len };
		uint64_t nbits = e.rec.len >> uffdd_page_shift;
		uint64_t bms[] = { e.rec.populated, e.rec.zero, e.rec.dirty };

		for (size_t k = 0; k < PIN_ARRAY_SIZE(bms); k++) {
			if (!bms[k])
				continue;
			used[n++] = (struct extent){ bms[k], bm_bytes(nbits) };
			if (bm_find(st, bms[k]))
				return bad(why, whylen, "bitmap at %#" PRIx64 " named twice",
					   bms[k]);
			if (bm_remember(st, bms[k], nbits))
				return -ENOMEM;
		}
	}
	/* The free stack pops its last: lowest slots first. */
	for (size_t i = 0, j = st->nfree_slots; i < j / 2; i++) {
		uint32_t t = st->free_slots[i];

		st->free_slots[i] = st->free_slots[j - 1 - i];
		st->free_slots[j - 1 - i] = t;
	}

	if (nreg)
		qsort(regs, nreg, sizeof(*regs), cmp_extent);
	for (uint64_t i = 1; i < nreg; i++)
		if (regs[i - 1].off + regs[i - 1].len > regs[i].off)
			return bad(why, whylen,
				   "regions [%#" PRIx64 ", +%#" PRIx64 ") and [%#" PRIx64
				   ", +%#" PRIx64 ") overlap",
				   regs[i - 1].off, regs[i - 1].len, regs[i].off, regs[i].len);

	qsort(used, n, sizeof(*used), cmp_extent);
	uint64_t at = ARENA_OFF;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t len = round_unit(used[i].len);

		if (used[i].off < at)
			return bad(why, whylen,
				   "arena runs at %#" PRIx64 " and %#" PRIx64 " overlap",
				   used[i - 1].off, used[i].off);
		if (used[i].off > at && arena_put(st, at, used[i].off - at))
			return -ENOMEM;
		st->used += len;
		at = used[i].off + len;
	}
	if (at < st->size && arena_put(st, at, st->size - at))
		return -ENOMEM;
	return 0;
}

int state_open(int fd, uint64_t max_bytes, struct state **ret, char *why, size_t whylen)
{
	_cleanup_close_ int cfd = fd;
	struct state *st;
	struct stat sb;
	void *base;
	int r;

	if (fstat(fd, &sb) < 0)
		return bad(why, whylen, "fstat: %s", strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return bad(why, whylen, "not a regular file (mode %#o)", (unsigned int)sb.st_mode);
	if ((uint64_t)sb.st_size < ARENA_OFF + UNIT || (uint64_t)sb.st_size > max_bytes ||
	    sb.st_size % UNIT)
		return bad(why, whylen,
			   "size %" PRIu64 " (want a multiple of %" PRIu64 " in [%" PRIu64
			   ", %" PRIu64 "])",
			   (uint64_t)sb.st_size, UNIT, ARENA_OFF + UNIT, max_bytes);
	base = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		r = errno;
		if (r == ENOMEM)
			return -ENOMEM;
		return bad(why, whylen, "mmap of [0, %#" PRIx64 "): %s", (uint64_t)sb.st_size,
			   strerror(r));
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		munmap(base, (size_t)sb.st_size);
		return -ENOMEM;
	}
	state_init_mem(st, fd, base, (uint64_t)sb.st_size);
	r = check_header(st, why, whylen);
	if (!r)
		r = check_wset(st, why, whylen);
	if (!r)
		r = check_records(st, why, whylen);
	if (r < 0) {
		state_free(st); /* closes fd */
		cfd = -1;
		return r;
	}
	st->meta_next = st->com.meta;
	cfd = -1;
	*ret = st;
	return 0;
}

void state_free(struct state *st)
{
	if (!st)
		return;
	if (st->base)
		munmap(st->base, st->size);
	if (st->fd >= 0)
		close(st->fd);
	free(st->free_slots);
	free(st->dead_slots);
	free(st->free);
	free(st->later);
	free(st->bms);
	free(st);
}

int state_fd(const struct state *st)
{
	return st->fd;
}

const struct state_ident *state_ident(const struct state *st)
{
	return &st->ident;
}

const struct state_meta *state_meta(const struct state *st)
{
	return &st->com.meta;
}

void state_set_meta(struct state *st, const struct state_meta *m)
{
	st->meta_next = *m;
	st->meta_next.name[STATE_NAME_MAX - 1] = 0;
}

uint64_t state_bytes(const struct state *st)
{
	return st->used;
}
