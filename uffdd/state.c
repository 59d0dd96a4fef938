// SPDX-License-Identifier: MIT
/*
 * A session's durable record: one memfd, sized once (sparse: shmem allocates
 * only the pages written) and mapped whole, so that no pointer into it ever
 * moves.  It owns the file's layout, at fixed offsets: the header with the
 * identity, the working-set count and two commit slots (the byte cur names
 * the committed one), two reply areas (double buffered), the working set,
 * then the arena of record table blocks and bitmaps.  It owns too what the
 * daemon keeps beside the file and rebuilds from it in state_open(): the
 * arena's allocator, the known bitmaps, the free record slots.  A file from
 * the store is untrusted input: state_open() reads it only inside the
 * mapping, in time n log n in its records, and refuses it with one line
 * naming the field.  It may call util.c, log.c and libpin's private helpers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "uffdd.h"

#define STATE_MAGIC   "UFFDDST1"
#define STATE_VERSION 1u

/* The header and both commit slots: one 4 KiB block, whatever the page size. */
#define HDR_BYTES ((uint64_t)4096)
/* Two reply areas of one datagram each: the committed reply is never the one
 * the next commit writes. */
#define REPLY_OFF HDR_BYTES
#define WSET_OFF  (REPLY_OFF + 2 * (uint64_t)PIN_PROTO_MAX_MSG)
#define ARENA_OFF (WSET_OFF + (uint64_t)UFFDD_WSET_MAX * sizeof(struct state_range))
/* The arena's unit: a cache line, so that two bitmaps never share one. */
#define UNIT ((uint64_t)64)
/* Records in the first table block; a full table doubles. */
#define TABLE_FIRST 64u
/* Slot numbers are uint32_t. */
#define TABLE_MAX UINT32_MAX
/* The last txn committed: the records pending for the next one carry its
 * number, which must not be 0 (never born). */
#define STATE_TXN_LAST (UINT64_MAX - 1)

/* One commit: what state_open() believes when cur names it. */
struct state_slot {
	uint64_t txn;
	uint64_t seq; /* the last request done; 0: none */
	uint32_t reply_area;
	uint32_t reply_len;
	uint64_t table_off; /* file offset of the record table */
	uint64_t table_cap; /* its slots */
	struct state_meta meta;
};

struct state_hdr {
	char magic[8];
	uint32_t version;
	uint8_t cur; /* the committed slot: written last, with a release store */
	uint8_t pad[3];
	uint64_t max_bytes; /* the file's size */
	struct state_ident ident;
	uint64_t wset_n; /* runs of the working set: durable at once, not at a commit */
	struct state_slot slot[2];
	/* The ids [first, end) of the fork children being made from this
	 * session: durable at once.  Last, so that a record from before it
	 * reads 0 there (none). */
	uint64_t making[2];
	/* The messages of the last read of the session's userfaultfd, as the
	 * kernel wrote them (state_events_buf()), ended by an empty one, and
	 * how many of them need no replay; durable at once. */
	uint32_t events_applied;
	uint32_t pad2;
	uint8_t events[STATE_EVENTS_MAX][PIN_UFFD_MSG_BYTES];
};

_Static_assert(sizeof(struct state_hdr) <= HDR_BYTES, "the header outgrew its block");

/* A table slot: live when born <= the committed txn and not died <= it. */
struct entry {
	struct state_rec rec;
	uint64_t born, died; /* txn; 0: never born, not dead */
};

/* A run of the arena, in bytes from the start of the file. */
struct extent {
	uint64_t off, len;
};

/* A bitmap the arena holds, and its size in bits (open addressing). */
struct bmkey {
	uint64_t off; /* 0: an empty bucket */
	uint64_t nbits;
};

struct state {
	int fd;
	uint8_t *base;
	uint64_t size;
	struct state_hdr *hdr;
	struct state_ident ident;
	struct state_slot com;	     /* the committed slot, as written */
	struct state_meta meta_next; /* what the next commit writes */
	struct entry *table;	     /* the table being built (the committed one until it grows) */
	uint64_t table_off, table_cap;
	bool table_fresh; /* made in the open txn: nothing committed names it */
	bool scrub;	  /* slots written by a txn never committed: reset before any change */
	uint64_t wset_n;
	uint64_t making[2];
	/* The dead daemon's last read, decoded at state_open(): events_n of
	 * them, the first events_applied not to be replayed. */
	uint32_t events_n, events_applied;
	struct pin_uffd_event events[STATE_EVENTS_MAX];

	uint32_t *free_slots; /* a stack of slots neither live nor pending */
	size_t nfree_slots, free_slots_cap;
	uint32_t *dead_slots; /* deleted in the open txn: free after the commit */
	size_t ndead_slots, dead_slots_cap;

	struct extent *free; /* the arena's free runs, sorted and coalesced */
	size_t nfree, free_cap;
	struct extent *later; /* freed in the open txn: free after the commit */
	size_t nlater, later_cap;
	uint64_t used; /* arena bytes allocated */

	struct bmkey *bms; /* the bitmaps allocated; a power of two of buckets */
	size_t nbms, bms_cap;
};

static uint64_t round_unit(uint64_t n)
{
	return (n + UNIT - 1) & ~(UNIT - 1);
}

static uint64_t bm_bytes(uint64_t nbits)
{
	return (nbits + 63) / 64 * sizeof(uint64_t);
}

static bool is_live(const struct entry *e, uint64_t txn)
{
	return e->born && e->born <= txn && !(e->died && e->died <= txn);
}

/* Grow *v (of *cap elements of size sz) to hold n; 0 or -ENOMEM. */
static int reserve(void **v, size_t *cap, size_t n, size_t sz)
{
	size_t c = *cap ? *cap : 16;
	void *p;

	if (n <= *cap)
		return 0;
	while (c < n)
		c *= 2;
	p = reallocarray(*v, c, sz);
	if (!p)
		return -ENOMEM;
	*v = p;
	*cap = c;
	return 0;
}

/* ---- the arena's allocator (daemon memory only) ---- */

/* Give [off, off + len) back to the free runs, merged with its neighbours. */
static int arena_put(struct state *st, uint64_t off, uint64_t len)
{
	size_t lo = 0, hi = st->nfree;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (st->free[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	bool left = lo > 0 && st->free[lo - 1].off + st->free[lo - 1].len == off;
	bool right = lo < st->nfree && off + len == st->free[lo].off;

	if (left && right) {
		st->free[lo - 1].len += len + st->free[lo].len;
		memmove(&st->free[lo], &st->free[lo + 1], (st->nfree - lo - 1) * sizeof(*st->free));
		st->nfree--;
	} else if (left) {
		st->free[lo - 1].len += len;
	} else if (right) {
		st->free[lo].off = off;
		st->free[lo].len += len;
	} else {
		if (reserve((void **)&st->free, &st->free_cap, st->nfree + 1, sizeof(*st->free)))
			return -ENOMEM;
		memmove(&st->free[lo + 1], &st->free[lo], (st->nfree - lo) * sizeof(*st->free));
		st->free[lo] = (struct extent){ off, len };
		st->nfree++;
	}
	return 0;
}

/*
 * Zero [off, off + len): its whole pages by punching them out of the file
 * (shmem then holds no memory for them: a bitmap of a large sparse region
 * costs what is written of it), the partial pages at its ends by hand.
 */
static void arena_zero(struct state *st, uint64_t off, uint64_t len)
{
	uint64_t page = uffdd_page ? uffdd_page : 1, lo = (off + page - 1) & ~(page - 1),
		 hi = (off + len) & ~(page - 1);

	if (uffdd_page && lo < hi &&
	    fallocate(st->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)lo,
		      (off_t)(hi - lo)) == 0) {
		memset(st->base + off, 0, lo - off);
		memset(st->base + hi, 0, off + len - hi);
		return;
	}
	memset(st->base + off, 0, len);
}

/* First fit: the file offset of len zeroed bytes, or 0 when none is free. */
static uint64_t arena_get(struct state *st, uint64_t len)
{
	len = round_unit(len);
	for (size_t i = 0; i < st->nfree; i++) {
		struct extent *x = &st->free[i];
		uint64_t off = x->off;

		if (x->len < len)
			continue;
		x->off += len;
		x->len -= len;
		if (!x->len) {
			memmove(x, x + 1, (st->nfree - i - 1) * sizeof(*x));
			st->nfree--;
		}
		st->used += len;
		arena_zero(st, off, len);
		return off;
	}
	return 0;
}

/* Free now (nothing committed names it) or after the next commit. */
static void arena_free(struct state *st, uint64_t off, uint64_t len, bool now)
{
	len = round_unit(len);
	if (now ? arena_put(st, off, len) == 0
		: reserve((void **)&st->later, &st->later_cap, st->nlater + 1,
			  sizeof(*st->later)) == 0) {
		if (now)
			st->used -= len;
		else
			st->later[st->nlater++] = (struct extent){ off, len };
		return;
	}
	/* Kept, never reused early: a committed record may still name it. */
	ulog(LOG_WARNING,
	     "state %" PRIu64 ": arena run [%#" PRIx64 ", %#" PRIx64
	     ") not reusable: out of memory",
	     st->ident.id, off, off + len);
}

/* ---- the bitmaps allocated: off -> nbits ---- */

static size_t bm_hash(const struct state *st, uint64_t off)
{
	return (size_t)((off / UNIT) * 0x9e3779b97f4a7c15ull) & (st->bms_cap - 1);
}

static struct bmkey *bm_find(const struct state *st, uint64_t off)
{
	if (!st->bms_cap)
		return NULL;
	for (size_t i = bm_hash(st, off);; i = (i + 1) & (st->bms_cap - 1)) {
		if (st->bms[i].off == off)
			return &st->bms[i];
		if (!st->bms[i].off)
			return NULL;
	}
}

static void bm_insert(struct bmkey *v, size_t cap, size_t h, struct bmkey k)
{
	size_t i = h;

	while (v[i].off)
		i = (i + 1) & (cap - 1);
	v[i] = k;
}

static int bm_remember(struct state *st, uint64_t off, uint64_t nbits)
{
	/* At most half full: probes stay short. */
	if ((st->nbms + 1) * 2 > st->bms_cap) {
		size_t cap = st->bms_cap ? st->bms_cap * 2 : 64;
		struct bmkey *v = calloc(cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		struct bmkey *old = st->bms;
		size_t ocap = st->bms_cap;

		st->bms = v;
		st->bms_cap = cap;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].off)
				bm_insert(v, cap, bm_hash(st, old[i].off), old[i]);
		free(old);
	}
	bm_insert(st->bms, st->bms_cap, bm_hash(st, off), (struct bmkey){ off, nbits });
	st->nbms++;
	return 0;
}

/* Remove a bucket, shifting back the ones its removal would cut off. */
static void bm_forget(struct state *st, struct bmkey *k)
{
	size_t mask = st->bms_cap - 1, i = (size_t)(k - st->bms), j = i;

	st->bms[i].off = 0;
	for (;;) {
		j = (j + 1) & mask;
		if (!st->bms[j].off)
			break;
		size_t h = bm_hash(st, st->bms[j].off);

		/* Stays when its home lies cyclically in (i, j]. */
		if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
			continue;
		st->bms[i] = st->bms[j];
		st->bms[j].off = 0;
		i = j;
	}
	st->nbms--;
}

/* ---- record slots ---- */

static int slot_push(uint32_t **v, size_t *n, size_t *cap, uint32_t slot)
{
	if (reserve((void **)v, cap, *n + 1, sizeof(**v)))
		return -ENOMEM;
	(*v)[(*n)++] = slot;
	return 0;
}

/* The slots a txn that was never committed left behind: not live now, and
 * they must not become so at our first commit. */
static void scrub(struct state *st)
{
	uint64_t txn = st->com.txn;

	if (!st->scrub)
		return;
	for (uint64_t i = 0; i < st->table_cap; i++) {
		struct entry *e = &st->table[i];

		if (e->born > txn)
			e->born = 0;
		if (e->died > txn)
			e->died = 0;
	}
	st->scrub = false;
}

/* A table twice as large, holding the same slots; the old one is freed once
 * the commit that names the new one is done. */
static int table_grow(struct state *st)
{
	uint64_t cap = st->table_cap * 2, off;

	if (cap > TABLE_MAX)
		return -EFBIG;
	if (reserve((void **)&st->free_slots, &st->free_slots_cap, st->nfree_slots + cap / 2,
		    sizeof(*st->free_slots)))
		return -ENOMEM;
	off = arena_get(st, cap * sizeof(struct entry));
	if (!off)
		return -EFBIG;
	memcpy(st->base + off, st->table, st->table_cap * sizeof(struct entry));
	arena_free(st, st->table_off, st->table_cap * sizeof(struct entry), st->table_fresh);
	/* Popped lowest first. */
	for (uint64_t i = cap; i-- > st->table_cap;)
		st->free_slots[st->nfree_slots++] = (uint32_t)i;
	st->table = (struct entry *)(st->base + off);
	st->table_off = off;
	st->table_cap = cap;
	st->table_fresh = true;
	return 0;
}

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

static int check_rec(const struct state *st, const struct state_rec *r, uint32_t slot, char *why,
		     size_t whylen)
{
	const uint32_t modes =
		PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP | PIN_UFFD_REGISTER_MINOR;
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
	if (!r->mode || r->mode & ~modes)
		return bad(why, whylen, "record %" PRIu32 ": mode %#" PRIx32, slot, r->mode);
	if (r->flags & ~(STATE_R_PUSH | STATE_R_OURS))
		return bad(why, whylen, "record %" PRIu32 ": flags %#" PRIx32, slot, r->flags);
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
			      STATE_FC | STATE_FC_READY | STATE_PAGEMAP))
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
	r = check_events(st, &h, why, whylen);
	if (r < 0)
		return r;
	st->ident = h.ident;
	st->com = *s;
	st->wset_n = h.wset_n;
	/* Any two ids: they only name the children that may be made again. */
	memcpy(st->making, h.making, sizeof(st->making));
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

/* ---- bitmaps ---- */

uint64_t *state_bm_new(struct state *st, uint64_t nbits)
{
	uint64_t off;

	if (!nbits) {
		errno = EINVAL;
		return NULL;
	}
	off = nbits / 8 > st->size ? 0 : arena_get(st, bm_bytes(nbits));
	if (!off) {
		errno = EFBIG;
		return NULL;
	}
	if (bm_remember(st, off, nbits)) {
		arena_free(st, off, bm_bytes(nbits), true);
		errno = ENOMEM;
		return NULL;
	}
	return (uint64_t *)(st->base + off);
}

uint64_t state_room(const struct state *st)
{
	return st->size - ARENA_OFF - st->used;
}

void state_bm_free(struct state *st, uint64_t *bm, uint64_t nbits)
{
	uint64_t off = state_bm_off(st, bm);
	struct bmkey *k;

	if (!bm)
		return;
	k = bm_find(st, off);
	if (!k || k->nbits != nbits) {
		ulog(LOG_ERR,
		     "state %" PRIu64 ": freeing a bitmap at %#" PRIx64 " of %" PRIu64
		     " bits that was not made so",
		     st->ident.id, off, nbits);
		return;
	}
	bm_forget(st, k);
	arena_free(st, off, bm_bytes(nbits), false);
}

uint64_t state_bm_off(const struct state *st, const uint64_t *bm)
{
	return bm ? (uint64_t)((const uint8_t *)bm - st->base) : 0;
}

uint64_t *state_bm_at(struct state *st, uint64_t off, uint64_t nbits)
{
	const struct bmkey *k = off ? bm_find(st, off) : NULL;

	if (!k || k->nbits != nbits)
		return NULL;
	return (uint64_t *)(st->base + off);
}

/* ---- records ---- */

/* What state_open() will check of it, so that a bug shows here, not at a restart. */
static int rec_ok(struct state *st, const struct state_rec *rec)
{
	char why[160];

	if (check_rec(st, rec, 0, why, sizeof(why)) < 0)
		return -EINVAL;
	if (rec->kind != STATE_REGION)
		return 0;

	uint64_t nbits = rec->len >> uffdd_page_shift;

	if (!state_bm_at(st, rec->populated, nbits) ||
	    (rec->zero && !state_bm_at(st, rec->zero, nbits)) ||
	    (rec->dirty && !state_bm_at(st, rec->dirty, nbits)))
		return -EINVAL;
	return 0;
}

int state_add(struct state *st, const struct state_rec *rec, uint32_t *ret_slot)
{
	uint64_t txn = st->com.txn + 1;
	struct entry *e;
	uint32_t slot;
	int r;

	r = rec_ok(st, rec);
	if (r < 0)
		return r;
	scrub(st);
	if (!st->nfree_slots) {
		r = table_grow(st);
		if (r < 0)
			return r;
	}
	slot = st->free_slots[--st->nfree_slots];
	e = &st->table[slot];
	/* Pending before anything else changes: a reused slot, dead at the
	 * commit, must never look live with half its new fields. */
	__atomic_store_n(&e->born, txn, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	e->rec = *rec;
	e->died = 0;
	*ret_slot = slot;
	return 0;
}

void state_del(struct state *st, uint32_t slot)
{
	uint64_t txn = st->com.txn + 1;
	struct entry *e;

	if (slot >= st->table_cap)
		return;
	scrub(st);
	e = &st->table[slot];
	if (!e->born || e->died || e->born > txn)
		return;
	if (slot_push(&st->dead_slots, &st->ndead_slots, &st->dead_slots_cap, slot) < 0)
		ulog(LOG_WARNING, "state %" PRIu64 ": slot %" PRIu32 " not reusable: out of memory",
		     st->ident.id, slot);
	__atomic_store_n(&e->died, txn, __ATOMIC_RELEASE);
}

int state_commit(struct state *st, uint64_t seq, const void *reply, size_t len)
{
	struct state_slot s = {
		.txn = st->com.txn + 1,
		.seq = st->com.seq,
		.reply_area = st->com.reply_area,
		.reply_len = st->com.reply_len,
		.table_off = st->table_off,
		.table_cap = st->table_cap,
		.meta = st->meta_next,
	};
	uint8_t next = !st->hdr->cur;

	if (len > PIN_PROTO_MAX_MSG || (len && !reply))
		return -EINVAL;
	/* A txn state_open() refuses is never written: the record stays at
	 * the last one, readable by a successor. */
	if (st->com.txn == STATE_TXN_LAST)
		return -EOVERFLOW;
	if (reserve((void **)&st->free_slots, &st->free_slots_cap,
		    st->nfree_slots + st->ndead_slots, sizeof(*st->free_slots)))
		return -ENOMEM;
	scrub(st);
	if (seq) {
		s.seq = seq;
		s.reply_area = !st->com.reply_area;
		s.reply_len = (uint32_t)len;
		if (len)
			memcpy(st->base + REPLY_OFF + s.reply_area * (uint64_t)PIN_PROTO_MAX_MSG,
			       reply, len);
	}
	st->hdr->slot[next] = s;
	/* The commit: one byte, after everything it names. */
	__atomic_store_n(&st->hdr->cur, next, __ATOMIC_RELEASE);
	st->com = s;
	st->table_fresh = false;
	for (size_t i = 0; i < st->nlater; i++)
		arena_free(st, st->later[i].off, st->later[i].len, true);
	st->nlater = 0;
	while (st->ndead_slots)
		st->free_slots[st->nfree_slots++] = st->dead_slots[--st->ndead_slots];
	return 0;
}

uint64_t state_last(const struct state *st, const void **ret_reply, size_t *ret_len)
{
	*ret_reply = st->com.seq ? st->base + REPLY_OFF +
					   st->com.reply_area * (uint64_t)PIN_PROTO_MAX_MSG
				 : NULL;
	*ret_len = st->com.seq ? st->com.reply_len : 0;
	return st->com.seq;
}

int state_foreach(struct state *st,
		  int (*fn)(const struct state_rec *rec, uint32_t slot, void *data), void *data)
{
	/* st->table is read each time: fn may add records and grow it. */
	for (uint64_t i = 0; i < st->table_cap; i++) {
		if (!is_live(&st->table[i], st->com.txn))
			continue;
		int r = fn(&st->table[i].rec, (uint32_t)i, data);

		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- the working set ---- */

int state_wset_add(struct state *st, uint64_t addr, uint64_t end)
{
	struct state_range *w = (struct state_range *)(st->base + WSET_OFF);

	if (addr >= end)
		return -EINVAL;
	if (st->wset_n && w[st->wset_n - 1].end == addr) {
		__atomic_store_n(&w[st->wset_n - 1].end, end, __ATOMIC_RELEASE);
		return 0;
	}
	if (st->wset_n >= UFFDD_WSET_MAX)
		return -ENOSPC;
	w[st->wset_n] = (struct state_range){ addr, end };
	st->wset_n++;
	/* The run, then the count that makes it seen. */
	__atomic_store_n(&st->hdr->wset_n, st->wset_n, __ATOMIC_RELEASE);
	return 0;
}

void state_making_set(struct state *st, uint64_t first, uint64_t end)
{
	st->making[0] = first;
	st->making[1] = end;
	/* Empty first: a death between the stores leaves the old ids, none, or
	 * the new ones, never a mix.  Seen before the descriptors they name
	 * reach the store (a syscall after these stores). */
	__atomic_store_n(&st->hdr->making[1], 0, __ATOMIC_RELEASE);
	__atomic_store_n(&st->hdr->making[0], first, __ATOMIC_RELEASE);
	__atomic_store_n(&st->hdr->making[1], end, __ATOMIC_RELEASE);
}

bool state_making(const struct state *st, uint64_t id)
{
	return id >= st->making[0] && id < st->making[1];
}

uint64_t state_making_first(const struct state *st)
{
	return st->making[0];
}

void *state_events_buf(struct state *st)
{
	struct state_hdr *h = st->hdr;

	/* All applied before any is cleared: a death leaves them so, then
	 * none, then the next read's, none applied. */
	__atomic_store_n(&h->events_applied, STATE_EVENTS_MAX, __ATOMIC_RELEASE);
	for (uint32_t i = 0; i < STATE_EVENTS_MAX && h->events[i][0]; i++)
		memset(h->events[i], 0, PIN_UFFD_MSG_BYTES);
	__atomic_store_n(&h->events_applied, 0, __ATOMIC_RELEASE);
	st->events_n = st->events_applied = 0;
	return h->events;
}

void state_events_applied(struct state *st, uint32_t upto)
{
	__atomic_store_n(&st->hdr->events_applied, upto, __ATOMIC_RELEASE);
	st->events_applied = upto;
}

const struct pin_uffd_event *state_event_pending(const struct state *st, uint32_t *at,
						 uint32_t *ret_forks)
{
	uint32_t i = *at > st->events_applied ? *at : st->events_applied;

	for (; i < st->events_n; i++) {
		if (st->events[i].type == PIN_UFFD_EVENT_PAGEFAULT)
			continue;
		*ret_forks = 0;
		for (uint32_t k = 0; k < i; k++)
			*ret_forks += st->events[k].type == PIN_UFFD_EVENT_FORK;
		*at = i;
		return &st->events[i];
	}
	return NULL;
}

const struct state_range *state_wset(const struct state *st, size_t *ret_n)
{
	*ret_n = (size_t)st->wset_n;
	return (const struct state_range *)(st->base + WSET_OFF);
}
