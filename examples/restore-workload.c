// SPDX-License-Identifier: MIT
/*
 * Lazy restore, end to end.  The workload is a hash table (open addressing,
 * 16-byte slots) at a fixed address, every 4 KiB page ending in the checksum
 * of its bytes, and a header page with the table's shape.
 *
 *   restore-workload checkpoint DIR [--mib N]
 *	build the table and write a checkpoint of exactly its range
 *	(pin_image_write(), from within the process).
 *   restore-workload restore DIR [--socket PATH] [--touch seq|random]
 *		      [--no-push] [--record | --replay] [--pause-ms MS]
 *	map the checkpoint's regions where they were, hand the userfaultfd and
 *	the regions (the pages file as source) to uffdd, and continue at
 *	once: read every page, check every checksum, look keys up.  --record
 *	writes the pages the faults asked for to DIR/working-set afterwards;
 *	--replay has uffdd place them first.  --pause-ms sleeps halfway
 *	through the pages, for uffdctl to watch the restore.
 *
 * Output: one `NAME VALUE` line per figure; exit 0 when every byte checked
 * out, 1 on a mismatch, 2 on a usage error, 3 when a call failed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "libpin.h"

/* Clear of what ASan and valgrind map (ASan's heap starts at 0x600000000000). */
#define STATE_ADDR     0x500000000000ull
#define MAGIC	       0x5546464457524b31ull /* "UFFDWRK1" */
#define PAGE	       4096u
#define SLOTS_PER_PAGE 255u  /* 16 bytes each; the page's last 16 bytes: count, checksum */
#define STRIDE	       7919u /* random touch: page k + 1 is STRIDE pages after page k */
#define LOOKUPS	       4096u

struct slot {
	uint64_t key; /* 0: empty */
	uint64_t value;
};

struct table_page {
	struct slot slots[SLOTS_PER_PAGE];
	uint64_t used;
	uint64_t sum; /* page_sum() of the words before it */
};

struct header {
	uint64_t magic;
	uint64_t npages; /* table pages, after the header page */
	uint64_t nkeys;
	uint64_t seed;
	uint64_t sum; /* of the words before it */
};

_Static_assert(sizeof(struct table_page) == PAGE, "a table page is one page");

static uint64_t mix(uint64_t x)
{
	x ^= x >> 31;
	x *= 0x7fb5d329728ea185ull;
	x ^= x >> 27;
	x *= 0x81dadef4bc2dd44dull;
	return x ^ (x >> 33);
}

/* Of n words, salted with where they belong: a page put at the wrong place
 * fails as surely as a changed byte. */
static uint64_t words_sum(const uint64_t *w, size_t n, uint64_t salt)
{
	uint64_t h = mix(salt + 1);

	for (size_t i = 0; i < n; i++)
		h = (h ^ w[i]) * 0x100000001b3ull + (h >> 29);
	return h;
}

static uint64_t page_sum(const struct table_page *p, uint64_t i)
{
	return words_sum((const uint64_t *)p, offsetof(struct table_page, sum) / 8, i);
}

static uint64_t key_of(uint64_t seed, uint64_t i)
{
	return mix(seed ^ (i * 0x9e3779b97f4a7c15ull)) | 1;
}

static struct slot *slot_at(struct table_page *t, uint64_t s)
{
	return &t[s / SLOTS_PER_PAGE].slots[s % SLOTS_PER_PAGE];
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int failed(const char *call, int r)
{
	fprintf(stderr, "restore-workload: %s: %s\n", call, strerror(-r));
	return 3;
}

static void log_fn(enum pin_log_level level, const char *msg, void *data)
{
	(void)level;
	(void)data;
	fprintf(stderr, "libpin: %s\n", msg);
}

static int checkpoint(const char *dir, uint64_t mib)
{
	uint64_t npages = mib * (1024 * 1024 / PAGE) - 1, nslots = npages * SLOTS_PER_PAGE;
	size_t len = (npages + 1) * PAGE;
	void *want = (void *)(uintptr_t)STATE_ADDR;
	struct header *h = mmap(want, len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (h == MAP_FAILED || (void *)h != want)
		return failed("mmap of the state", -EEXIST);
	struct table_page *t = (struct table_page *)((char *)h + PAGE);
	h->magic = MAGIC;
	h->npages = npages;
	h->nkeys = nslots / 2;
	h->seed = (uint64_t)now_us();
	for (uint64_t i = 0; i < h->nkeys; i++) {
		uint64_t k = key_of(h->seed, i), s = k % nslots;
		while (slot_at(t, s)->key)
			s = s + 1 == nslots ? 0 : s + 1;
		*slot_at(t, s) = (struct slot){ k, mix(k) };
		t[s / SLOTS_PER_PAGE].used++;
	}
	for (uint64_t i = 0; i < npages; i++)
		t[i].sum = page_sum(&t[i], i);
	h->sum = words_sum((const uint64_t *)h, offsetof(struct header, sum) / 8, UINT64_MAX);

	struct pin_image_write_opts o = { .sz = sizeof(o), .addr = STATE_ADDR, .len = len };
	int r = pin_image_write(0, dir, &o);
	if (r < 0)
		return failed("pin_image_write", r);
	printf("checkpoint_regions %d\nstate_bytes %zu\nkeys %" PRIu64 "\n", r, len, h->nkeys);
	return 0;
}

struct restore_opts {
	const char *dir;
	const char *socket;
	bool random, push, record, replay;
	unsigned int pause_ms;
};

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;
		a = b;
		b = t;
	}
	return a;
}

/*
 * The random touch order: page (k * stride + n / 2) % n for k = 0 .. n - 1
 * visits every page once when stride and n share no factor, and never a
 * page right after the one before (a fault there would widen uffdd's
 * readahead): each fault brings exactly one page.
 */
static uint64_t random_stride(uint64_t n)
{
	uint64_t s = STRIDE;

	while (n > 2 && (gcd(s, n) != 1 || s % n == 1))
		s += 2;
	return s;
}

/* Read every table page in touch order and check it: returns the pages bad.
 * The pause is not part of the time the touch took: *ret_paused_us. */
static uint64_t touch(struct table_page *t, uint64_t npages, const struct restore_opts *o,
		      uint64_t *ret_keys, uint64_t *ret_paused_us)
{
	uint64_t bad = 0, keys = 0, stride = random_stride(npages);

	for (uint64_t k = 0; k < npages; k++) {
		uint64_t i = o->random ? (k * stride + npages / 2) % npages : k;
		if (o->pause_ms && k == npages / 2) {
			/* For whoever watches: the restore is halfway now. */
			printf("paused_at_page %" PRIu64 "\n", k);
			fflush(stdout);
			uint64_t p0 = now_us();
			usleep(o->pause_ms * 1000);
			*ret_paused_us = now_us() - p0;
		}
		if (t[i].sum != page_sum(&t[i], i) || t[i].used > SLOTS_PER_PAGE) {
			if (!bad)
				fprintf(stderr,
					"restore-workload: page %" PRIu64 " (%p) is not what "
					"was checkpointed\n",
					i, (void *)&t[i]);
			bad++;
		}
		keys += t[i].used;
	}
	*ret_keys = keys;
	return bad;
}

/* Keys the checkpoint inserted are found, with their values. */
static uint64_t lookups(struct table_page *t, const struct header *h)
{
	uint64_t nslots = h->npages * SLOTS_PER_PAGE, missing = 0;

	for (uint64_t i = 0; i < LOOKUPS && i < h->nkeys; i++) {
		uint64_t k = key_of(h->seed, i * (h->nkeys / LOOKUPS + 1) % h->nkeys);
		uint64_t s = k % nslots;
		while (slot_at(t, s)->key && slot_at(t, s)->key != k)
			s = s + 1 == nslots ? 0 : s + 1;
		missing += slot_at(t, s)->key != k || slot_at(t, s)->value != mix(k);
	}
	return missing;
}

/* What a restore holds until the process exits. */
struct restored {
	struct pin_image *img;
	struct pin_uffd *u;
	struct pin_client *c;
	int replayed; /* pages the working set placed */
};

/* Everything before the first instruction: returns 0, or 3 when a call
 * failed. */
static int restore_setup(const struct restore_opts *o, struct restored *rs)
{
	struct pin_client_opts co = { .sz = sizeof(co), .socket = o->socket };
	struct pin_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = PIN_UFFD_CLOEXEC,
		.features = PIN_UFFD_FEATURE_EVENT_REMOVE | PIN_UFFD_FEATURE_EVENT_UNMAP |
			    PIN_UFFD_FEATURE_EVENT_REMAP,
	};
	int r;

	r = pin_image_open(o->dir, &rs->img);
	if (r < 0)
		return failed("pin_image_open", r);
	const struct pin_image_region *g = pin_image_region(rs->img, 0);
	if (!g || g->addr != STATE_ADDR || g->len < 2 * PAGE)
		return failed("not a checkpoint of restore-workload's state", -EBADMSG);
	r = pin_uffd_new(&uo, &rs->u);
	if (r < 0)
		return failed("pin_uffd_new", r);
	for (size_t i = 0; i < pin_image_nr_regions(rs->img); i++) {
		r = pin_image_map_region(rs->img, i, rs->u);
		if (r < 0)
			return failed("pin_image_map_region", r);
	}
	r = pin_client_connect(&co, &rs->c);
	if (r < 0)
		return failed("pin_client_connect", r);
	r = pin_client_handover(rs->c, rs->u);
	if (r < 0)
		return failed("pin_client_handover", r);
	for (size_t i = 0; i < pin_image_nr_regions(rs->img); i++) {
		r = pin_client_add_image_region(rs->c, rs->img, i,
						o->push ? 0 : PIN_CLIENT_REGION_NO_PUSH);
		if (r < 0)
			return failed("pin_client_add_image_region", r);
	}
	if (o->replay) {
		rs->replayed = pin_client_working_set_replay(rs->c, o->dir);
		if (rs->replayed < 0)
			return failed("pin_client_working_set_replay", rs->replayed);
	}
	return 0;
}

/* The restored process at work, from its first instruction: returns the
 * exit code. */
static int run(const struct restore_opts *o, struct restored *rs, uint64_t t0)
{
	uint64_t t1 = now_us();
	struct pin_client_stats st;
	int r, saved = -1;

	struct header *h = (struct header *)(uintptr_t)STATE_ADDR;
	if (h->magic != MAGIC ||
	    h->sum !=
		    words_sum((const uint64_t *)h, offsetof(struct header, sum) / 8, UINT64_MAX)) {
		fprintf(stderr, "restore-workload: the header page is not what was checkpointed\n");
		return 1;
	}
	struct table_page *t = (struct table_page *)(uintptr_t)(STATE_ADDR + PAGE);
	uint64_t keys, paused = 0, bad = touch(t, h->npages, o, &keys, &paused);
	uint64_t t2 = now_us() - paused;
	for (size_t i = 0; o->push && i < pin_image_nr_regions(rs->img); i++) {
		const struct pin_image_region *g = pin_image_region(rs->img, i);
		r = pin_client_wait_populated(rs->c, (void *)(uintptr_t)g->addr, g->len, 0);
		if (r < 0)
			return failed("pin_client_wait_populated", r);
	}
	uint64_t t3 = now_us() - paused;
	r = pin_client_stats(rs->c, 0, &st);
	if (r < 0)
		return failed("pin_client_stats", r);
	if (o->record) {
		saved = pin_client_working_set_save(rs->c, o->dir);
		if (saved < 0)
			return failed("pin_client_working_set_save", saved);
	}
	uint64_t missing = lookups(t, h);

	printf("first_instruction_us %" PRIu64 "\n", t1 - t0);
	printf("touch_us %" PRIu64 "\n", t2 - t1);
	if (o->push)
		printf("complete_us %" PRIu64 "\n", t3 - t0);
	printf("faults %" PRIu64 "\neexist %" PRIu64 "\npages_copied %" PRIu64
	       "\npages_zeroed %" PRIu64 "\npages_pushed %" PRIu64 "\npages_total %" PRIu64
	       "\npages_populated %" PRIu64 "\n",
	       st.faults, st.eexist, st.pages_copied, st.pages_zeroed, st.pages_pushed,
	       st.pages_total, st.pages_populated);
	if (o->replay)
		printf("replay_pages %d\n", rs->replayed);
	if (o->record)
		printf("working_set_pages %d\n", saved);
	printf("pages_checked %" PRIu64 "\nbad_pages %" PRIu64 "\nkeys %" PRIu64
	       "\nlookups_missing %" PRIu64 "\n",
	       h->npages + 1, bad, keys, missing);
	bool ok = !bad && keys == h->nkeys && !missing;
	printf("verified %s\n", ok ? "ok" : "FAILED");
	return ok ? 0 : 1;
}

static int restore(const struct restore_opts *o)
{
	uint64_t t0 = now_us();
	struct restored rs = { 0 };
	int rc = restore_setup(o, &rs);

	if (!rc)
		rc = run(o, &rs, t0);
	pin_client_free(rs.c);
	pin_image_free(rs.img);
	pin_uffd_free(rs.u);
	return rc;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: restore-workload checkpoint DIR [--mib N]\n"
		"       restore-workload restore DIR [--socket PATH] [--touch seq|random]\n"
		"                        [--no-push] [--record | --replay] [--pause-ms MS]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct restore_opts o = { .push = true };
	uint64_t mib = 256;

	if (argc < 3)
		return usage();
	o.dir = argv[2];
	pin_log_set(log_fn, NULL);
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--no-push"))
			o.push = false;
		else if (!strcmp(a, "--record"))
			o.record = true;
		else if (!strcmp(a, "--replay"))
			o.replay = true;
		else if (v && !strcmp(a, "--mib") && (mib = strtoull(v, NULL, 10)) >= 1 && ++i)
			continue;
		else if (v && !strcmp(a, "--socket") && ++i)
			o.socket = v;
		else if (v && !strcmp(a, "--touch") &&
			 (!strcmp(v, "seq") || !strcmp(v, "random")) && ++i)
			o.random = !strcmp(v, "random");
		else if (v && !strcmp(a, "--pause-ms") && ++i)
			o.pause_ms = (unsigned int)strtoul(v, NULL, 10);
		else
			return usage();
	}
	if (o.record && o.replay)
		return usage();
	if (!strcmp(argv[1], "checkpoint"))
		return checkpoint(o.dir, mib);
	if (!strcmp(argv[1], "restore"))
		return restore(&o);
	return usage();
}
