// SPDX-License-Identifier: MIT
/*
 * libFuzzer target over uffdd's reader of a session's state memfd
 * (uffdd/state.c), which a restarted daemon takes from the fd store as
 * untrusted input: state_open() of a memfd holding the input; and, when the
 * file is a page-server connection's record in size (uffdd/remote-record.c,
 * r<id>.state), rrec_plan() of it against socket counts around its own.
 *
 * Input: the file's size (4 bytes, little endian), then chunks, each an
 * offset (4 bytes), a length (2 bytes) and that many bytes written there;
 * the rest of the file is holes.  The state's parts lie megabytes apart, so
 * chunks reach them all in a few bytes.  The seeds (tests/fuzz/state/) are
 * real state files in this form: FUZZ_STATE_SEEDS=DIR fuzz-state writes
 * them into DIR and exits.
 *
 * What must hold: state_open() does not crash and leaves no descriptor
 * open; what it accepts reads whole (every record's bitmaps, the reply, the
 * working set), and stays acceptable after the daemon changes and commits
 * it (a record deleted, one added after the others, a reply).  A record's
 * plan asks for no more than a stream can hold: GETs in flight of 1 to 256
 * pages, a rest to drop shorter than a reply, no more bytes out than its
 * GETs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz-common.h"
#include "uffdd.h"

/* The fixed parts take some 16.5 MiB (sparse); 1.5 MiB of arena is room for
 * tables and bitmaps while a read of every hole stays quick. */
#define FUZZ_MAX_BYTES (18ull << 20)
/* Page size assumed by the seeds' records. */
#define SEED_PAGE 4096ull

int LLVMFuzzerInitialize(int *argc, char ***argv);

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A memfd laid out as the input says; -1 when it cannot be (too large). */
static int make_file(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz-state", MFD_CLOEXEC);

	if (fd < 0)
		fuzz_die("memfd_create");
	if (size < 4 || ftruncate(fd, le32(data)) < 0) {
		close(fd);
		return -1;
	}
	for (size_t i = 4; i + 6 <= size;) {
		uint32_t off = le32(data + i);
		size_t len = (size_t)data[i + 4] | (size_t)data[i + 5] << 8;

		i += 6;
		if (len > size - i)
			len = size - i;
		/* Past the size: the file grows, as a hostile writer's would. */
		if (off <= FUZZ_MAX_BYTES && pwrite(fd, data + i, len, off) != (ssize_t)len)
			fuzz_die("pwrite");
		i += len;
	}
	return fd;
}

struct walk {
	struct state *st;
	uint64_t sum;
	uint64_t end;  /* of the highest region */
	int64_t first; /* the first live slot; -1: none */
};

static int read_rec(const struct state_rec *rec, uint32_t slot, void *data)
{
	struct walk *w = data;
	uint64_t nbits = rec->len >> uffdd_page_shift;
	uint64_t offs[] = { rec->populated, rec->zero, rec->dirty };

	if (w->first < 0)
		w->first = slot;
	if (rec->kind == STATE_REGION && rec->start + rec->len > w->end)
		w->end = rec->start + rec->len;
	for (size_t i = 0; i < PIN_ARRAY_SIZE(offs); i++) {
		uint64_t *bm;

		if (!offs[i])
			continue;
		bm = state_bm_at(w->st, offs[i], nbits);
		if (!bm)
			fuzz_die("a live record's bitmap is not known");
		w->sum += bm_count(bm, 0, nbits);
	}
	return 0;
}

static struct walk read_all(struct state *st)
{
	struct walk w = { .st = st, .first = -1 };
	const struct state_range *r;
	const void *reply;
	size_t n, len;

	if (state_foreach(st, read_rec, &w) < 0)
		fuzz_die("state_foreach");
	state_last(st, &reply, &len);
	for (size_t i = 0; i < len; i++)
		w.sum += ((const uint8_t *)reply)[i];
	r = state_wset(st, &n);
	for (size_t i = 0; i < n; i++)
		if (r[i].addr >= r[i].end)
			fuzz_die("an empty working-set run");
	/* A stranded session's text is what its Goodbye answers with. */
	const char *why = state_stranded(st);
	if (why && strnlen(why, STATE_WHY_MAX) == STATE_WHY_MAX)
		fuzz_die("a stranded text not terminated");
	w.sum += state_lost(st);
	return w;
}

static int count_rec(const struct state_rec *rec, uint32_t slot, void *data)
{
	(*(uint64_t *)data)++;
	return 0;
}

static uint64_t count(struct state *st)
{
	uint64_t n = 0;

	state_foreach(st, count_rec, &n);
	return n;
}

/* Change what was accepted as the daemon would; a successor accepts it. */
static void change(struct state *st, struct walk *w)
{
	uint64_t committed = count(st), n = committed, *bm;
	struct state_rec rec = { .kind = STATE_REGION, .mode = PIN_UFFD_REGISTER_MISSING };
	struct state *again = NULL;
	uint32_t slot;
	char why[256];
	int fd;

	if (w->first >= 0) {
		state_del(st, (uint32_t)w->first);
		n--;
	}
	rec.start = w->end ? w->end : uffdd_page;
	rec.len = 4 * uffdd_page;
	bm = state_bm_new(st, 4);
	if (bm && rec.start + rec.len <= 1ull << 56) {
		rec.populated = state_bm_off(st, bm);
		bm_set(bm, 2);
		if (state_add(st, &rec, &slot) == 0)
			n++;
	}
	/* At the last txn (a forged one) nothing commits: the successor
	 * reads the record as it was. */
	int r = state_commit(st, 9, "reply", 5);
	if (r == -EOVERFLOW)
		n = committed;
	else if (r < 0)
		fuzz_die("state_commit");
	fd = fcntl(state_fd(st), F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		fuzz_die("dup");
	if (state_open(fd, FUZZ_MAX_BYTES, &again, why, sizeof(why)) < 0) {
		fprintf(stderr, "fuzz-state: refused after a commit: %s\n", why);
		fuzz_die("a changed state is refused");
	}
	if (count(again) != n)
		fuzz_die("a successor sees other records");
	state_free(again);
}

/* Socket counts a record is planned against: around its own, and around
 * the ends of its journaled replies and GETs. */
static const uint64_t plan_deltas[] = { 0, 1, 31, 32, 33, 64, 4096, 4128, 4129, 8256, 1u << 20 };

static void plan_all(const struct rrec *r)
{
	struct rrec_plan p;
	uint64_t rd0, wr0;
	char why[160];

	rrec_base(r, &rd0, &wr0);
	for (size_t i = 0; i < PIN_ARRAY_SIZE(plan_deltas); i++) {
		for (size_t j = 0; j < PIN_ARRAY_SIZE(plan_deltas); j++) {
			if (rrec_plan(r, rd0 + plan_deltas[i], wr0 + plan_deltas[j], &p, why,
				      sizeof(why)) < 0)
				continue;
			if (p.n > PIN_PS_GETS_IN_FLIGHT || p.out > p.n * PIN_PS_IOV_BYTES ||
			    p.skip >= PIN_PS_IOV_BYTES + 256 * uffdd_page)
				fuzz_die("a plan past what a stream holds");
			for (size_t k = 0; k < p.n; k++)
				if (!p.v[k].nr || p.v[k].nr > 256 || !(p.v[k].src & REMOTE_ID_BIT))
					fuzz_die("a GET planned that was never asked");
		}
	}
}

/* The file as a page-server connection's record, when it is one in size. */
static void remote_record(int fd)
{
	struct rrec *r;
	uint64_t id, task;
	struct stat st;
	char why[160];

	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != rrec_bytes() ||
	    rrec_map(fd, 1, &r, why, sizeof(why)) < 0)
		return;
	for (size_t i = 0; i < RREC_SOURCES; i++)
		if (rrec_src_at(r, i, &id, &task) && !(id & REMOTE_ID_BIT))
			fuzz_die("a source that is not a page server's");
	plan_all(r);
	rrec_unmap(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int before = fuzz_open_fds(), fd;
	struct state *st = NULL;
	char why[256];

	fd = make_file(data, size);
	if (fd < 0)
		return 0;
	remote_record(fd);
	if (state_open(fd, FUZZ_MAX_BYTES, &st, why, sizeof(why)) == 0) {
		struct walk w = read_all(st);

		change(st, &w);
		state_free(st);
	}
	if (fuzz_open_fds() != before)
		fuzz_die("a descriptor leaked");
	return 0;
}

/* ---- seeds: real state files, in the input's form ---- */

static void put(FILE *f, const void *p, size_t n)
{
	if (fwrite(p, 1, n, f) != n)
		fuzz_die("fwrite of a seed");
}

/* The file fd of size bytes as size + chunks: its non-zero runs. */
static void write_file_seed(const char *dir, const char *name, int fd, size_t fsize)
{
	const size_t block = 64, chunk_max = 0xffff & ~(size_t)63;
	char path[4096];
	uint32_t size = (uint32_t)fsize;
	const uint8_t *m;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "we");
	m = mmap(NULL, fsize, PROT_READ, MAP_SHARED, fd, 0);
	if (!f || m == MAP_FAILED)
		fuzz_die("a seed file");
	put(f, &size, sizeof(size));
	for (size_t off = 0; off < fsize;) {
		size_t end = off;

		while (end < fsize && end - off < chunk_max) {
			static const uint8_t zero[64];

			if (!memcmp(m + end, zero, block))
				break;
			end += block;
		}
		if (end == off) {
			off += block;
			continue;
		}
		uint32_t o = (uint32_t)off;
		uint16_t len = (uint16_t)(end - off);

		put(f, &o, sizeof(o));
		put(f, &len, sizeof(len));
		put(f, m + off, len);
		off = end;
	}
	munmap((void *)m, fsize);
	if (fclose(f))
		fuzz_die("fclose of a seed");
}

static void write_seed(const char *dir, const char *name, struct state *st)
{
	write_file_seed(dir, name, state_fd(st), FUZZ_MAX_BYTES);
}

/* A page-server connection's record: two sources, 3 GETs of a page out,
 * the first two replies journaled back to back (plan_deltas reach the
 * points between them). */
static void write_remote_seed(const char *dir)
{
	const uint64_t src = REMOTE_ID_BIT | 3;
	struct rrec *r;
	int fd;

	if (rrec_new(1, 1000, 1000, 64, &r, &fd))
		fuzz_die("rrec_new");
	if (rrec_src_add(r, src, 4242) || rrec_src_add(r, REMOTE_ID_BIT | 4, 4243))
		fuzz_die("rrec_src_add");
	for (uint64_t seq = 0; seq < 3; seq++) {
		struct pin_ps_noted n = { .seq = seq,
					  .dst_id = 4242,
					  .addr = 0x7f0000000000 + seq * SEED_PAGE,
					  .nr_pages = 1,
					  .rd = seq * (PIN_PS_IOV_BYTES + SEED_PAGE) };
		rrec_get(r, src, &n);
		if (seq < 2)
			rrec_reply(r, &n);
	}
	write_file_seed(dir, "remote-record", fd, rrec_bytes());
	rrec_unmap(r);
	close(fd);
}

/* A region of npages at start; flags besides STATE_R_PUSH | STATE_R_OURS. */
static void add_region_flags(struct state *st, uint64_t start, uint64_t npages, bool wp,
			     uint32_t flags)
{
	struct state_rec r = { .kind = STATE_REGION,
			       .mode = PIN_UFFD_REGISTER_MISSING,
			       .flags = STATE_R_PUSH | STATE_R_OURS | flags,
			       .start = start,
			       .len = npages * SEED_PAGE,
			       .src = 1 };
	uint64_t *pop = state_bm_new(st, npages), *zero = state_bm_new(st, npages);
	uint32_t slot;

	if (!pop || !zero)
		fuzz_die("seed bitmaps");
	bm_assign(pop, 0, npages / 2, true);
	bm_set(zero, npages - 1);
	r.populated = state_bm_off(st, pop);
	r.zero = state_bm_off(st, zero);
	if (wp) {
		uint64_t *dirty = state_bm_new(st, npages);

		if (!dirty)
			fuzz_die("seed bitmaps");
		bm_set(dirty, 1);
		r.mode |= PIN_UFFD_REGISTER_WP;
		r.dirty = state_bm_off(st, dirty);
	}
	if (state_add(st, &r, &slot))
		fuzz_die("state_add of a seed");
}

static void add_region(struct state *st, uint64_t start, uint64_t npages, bool wp)
{
	add_region_flags(st, start, npages, wp, 0);
}

static void write_seeds(const char *dir)
{
	const struct state_ident id = { .id = 1, .uid = 1000, .token = { 1, 2 } };
	struct state_meta m = { .pid = 100, .flags = STATE_HELLO | STATE_UFFD, .name = "seed" };
	struct state_rec pin = { .kind = STATE_PIN, .start = 0x7f0000000000, .len = SEED_PAGE };
	struct state *st;
	uint32_t slot;

	if (state_new(&id, FUZZ_MAX_BYTES, &st))
		fuzz_die("state_new");
	write_seed(dir, "empty", st);
	add_region(st, 0x7f0000000000, 70, true);
	add_region(st, 0x7f1000000000, 3, false);
	if (state_add(st, &pin, &slot))
		fuzz_die("state_add of a pin");
	state_set_meta(st, &m);
	state_wset_add(st, 0x7f0000000000, 0x7f0000004000);
	state_wset_add(st, 0x7f1000000000, 0x7f1000001000);
	if (state_commit(st, 3, "\x08\x01\x10\x03", 4))
		fuzz_die("state_commit");
	write_seed(dir, "regions-pin-wset", st);
	/* A txn begun, never committed. */
	state_del(st, slot);
	add_region(st, 0x7f2000000000, 5, false);
	write_seed(dir, "uncommitted", st);
	state_free(st);

	if (state_new(&id, FUZZ_MAX_BYTES, &st))
		fuzz_die("state_new");
	for (uint64_t i = 0; i < 100; i++)
		add_region(st, 0x10000000 + i * 0x100000, 1 + i % 7, i % 3 == 0);
	if (state_commit(st, 1, "r", 1))
		fuzz_die("state_commit");
	write_seed(dir, "grown-table", st);
	state_free(st);

	/* Pages lost, then the session stranded (its record's header). */
	if (state_new(&id, FUZZ_MAX_BYTES, &st))
		fuzz_die("state_new");
	add_region_flags(st, 0x7f3000000000, 4, false, STATE_R_COVERED);
	state_set_meta(st, &m);
	if (state_commit(st, 2, "r", 1))
		fuzz_die("state_commit");
	state_lost_add(st, 3);
	state_strand(st, "UFFDIO_COPY [0x7f3000002000, +0x1000) from the source: Bad address; "
			 "UFFDIO_POISON refused (Invalid argument)");
	write_seed(dir, "lost-stranded", st);
	state_free(st);
	write_remote_seed(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("FUZZ_STATE_SEEDS");

	uffdd_page_init();
	if (uffdd_page != SEED_PAGE && dir)
		fuzz_die("the seeds assume 4 KiB pages");
	if (dir) {
		write_seeds(dir);
		exit(0);
	}
	return 0;
}
