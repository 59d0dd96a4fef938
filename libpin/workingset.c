// SPDX-License-Identifier: MIT
/*
 * Working-set record and replay (the REAP idea): a restore served on demand
 * learns from uffdd which pages its faults placed, in order, and keeps them
 * next to the checkpoint in DIR/working-set (uffdd-image(5)); a later
 * restore has uffdd place that set in bulk before the process runs, and only
 * the rest faults.  The daemon never opens a path: this side reads and
 * writes the file.
 */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "libpin-private.h"

#define WSET_FILE   "working-set"
#define WSET_TMP    "working-set.tmp"
#define WSET_HEADER "uffdd-working-set 1"
/* Ranges per Replay message: 24 encoded bytes each at most, so a message
 * stays well inside one datagram (PIN_PROTO_MAX_MSG). */
#define REPLAY_CHUNK 8192

struct run {
	uint64_t addr, len;
};

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/* Every run the daemon recorded, fetched a reply's worth at a time. */
static int fetch_runs(struct pin_client *c, struct run **ret, size_t *ret_nr)
{
	struct run *v = NULL;
	size_t n = 0;

	for (;;) {
		Uffdd__WorkingSetGet g = UFFDD__WORKING_SET_GET__INIT;
		Uffdd__Msg req = UFFDD__MSG__INIT;
		Uffdd__Msg *rep = NULL;
		int r;

		g.has_from = 1;
		g.from = n;
		req.body_case = UFFDD__MSG__BODY_WORKING_SET_GET;
		req.working_set_get = &g;
		r = pin_client_request(c, &req, &rep);
		if (r < 0) {
			free(v);
			return r;
		}
		size_t got = rep->reply->n_working_set;
		struct run *nv = got ? reallocarray(v, n + got, sizeof(*v)) : v;
		if (got && !nv) {
			pin_proto_free(rep);
			free(v);
			return -ENOMEM;
		}
		v = nv;
		for (size_t i = 0; i < got; i++)
			v[n + i] = (struct run){ rep->reply->working_set[i]->addr,
						 rep->reply->working_set[i]->len };
		n += got;
		bool more = got && n < rep->reply->working_set_total;
		pin_proto_free(rep);
		if (!more)
			break;
	}
	*ret = v;
	*ret_nr = n;
	return 0;
}

/* The file goes to a temporary name first: a reader never sees half a set. */
static int write_runs(const char *dir, const struct run *v, size_t n)
{
	_cleanup_close_ int dfd = pin_image_open_dir(dir);
	FILE *f;
	int fd, r = 0;

	if (dfd < 0)
		return dfd;
	fd = openat(dfd, WSET_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	f = fd < 0 ? NULL : fdopen(fd, "w");
	if (!f) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s/%s: %s", dir, WSET_TMP, strerror(errno));
		if (fd >= 0)
			close(fd);
		return r;
	}
	fprintf(f, "%s\npage-size %zu\n", WSET_HEADER, page_size());
	for (size_t i = 0; i < n; i++)
		fprintf(f, "run 0x%" PRIx64 " 0x%" PRIx64 "\n", v[i].addr, v[i].len);
	fprintf(f, "end %zu\n", n);
	if (fflush(f) || ferror(f))
		r = -errno ?: -EIO;
	if (fclose(f) && !r)
		r = -errno;
	if (!r && renameat(dfd, WSET_TMP, dfd, WSET_FILE) < 0)
		r = -errno;
	if (r < 0)
		pin_log(PIN_LOG_ERR, "write %s/%s: %s", dir, WSET_FILE, strerror(-r));
	return r;
}

PIN_EXPORT int pin_client_working_set_save(struct pin_client *c, const char *dir)
{
	_cleanup_free_ struct run *v = NULL;
	uint64_t pages = 0;
	size_t n = 0;
	int r;

	if (!c || !dir)
		return -EINVAL;
	r = fetch_runs(c, &v, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		pages += v[i].len;
	pages /= page_size();
	r = write_runs(dir, v, n);
	if (r < 0)
		return r;
	return pages > INT32_MAX ? INT32_MAX : (int)pages;
}

/* A line the reader refuses: log where, and why. */
static int bad_line(const char *dir, unsigned int line, const char *why)
{
	pin_log(PIN_LOG_ERR, "%s/%s line %u: %s", dir, WSET_FILE, line, why);
	return -EBADMSG;
}

/* "0x" and 1 to 16 hex digits at *p: the value, *p moved past them. */
static bool hex_field(const char **p, uint64_t *ret)
{
	const char *c = *p;
	uint64_t v = 0;
	int digits = 0;

	if (c[0] != '0' || c[1] != 'x')
		return false;
	for (c += 2; isxdigit((unsigned char)*c); c++) {
		if (++digits > 16)
			return false;
		v = v << 4 |
		    (uint64_t)(isdigit((unsigned char)*c) ? *c - '0' : (*c | 0x20) - 'a' + 10);
	}
	*p = c;
	*ret = v;
	return digits > 0;
}

/* "run 0xADDR 0xLEN\n", by hand: a set has a line per fault, and sscanf()
 * took most of the time of reading one. */
static bool parse_run(const char *b, struct run *x)
{
	if (strncmp(b, "run ", 4))
		return false;
	b += 4;
	if (!hex_field(&b, &x->addr) || *b++ != ' ' || !hex_field(&b, &x->len))
		return false;
	return !strcmp(b, "\n");
}

static int parse_runs(FILE *f, const char *dir, struct run **ret, size_t *ret_nr)
{
	uint64_t mask = page_size() - 1;
	char buf[128];
	struct run *v = NULL;
	size_t n = 0, cap = 0, end;
	unsigned int line = 0;
	int r = 0;

	for (;;) {
		struct run x;
		char tail;

		line++;
		if (!fgets(buf, sizeof(buf), f)) {
			r = bad_line(dir, line, "truncated: no end line");
			break;
		}
		if (line == 1) {
			if (strcmp(buf, WSET_HEADER "\n"))
				r = bad_line(dir, line, "not " WSET_HEADER);
		} else if (line == 2) {
			size_t ps;
			if (sscanf(buf, "page-size %zu%c", &ps, &tail) != 2 || tail != '\n' ||
			    ps != page_size())
				r = bad_line(dir, line, "not this machine's page size");
		} else if (!parse_run(buf, &x)) {
			if (sscanf(buf, "end %zu%c", &end, &tail) != 2 || tail != '\n')
				r = bad_line(dir, line, "not a run line");
			else if (end != n)
				r = bad_line(dir, line, "the end line counts other than the runs");
			break;
		} else if (pin_proto_check_range(x.addr, x.len) < 0 || (x.addr & mask)) {
			r = bad_line(dir, line, "an empty, unaligned or wrapping run");
		} else {
			if (n == cap) {
				struct run *nv = reallocarray(v, cap ? 2 * cap : 256, sizeof(*v));
				if (!nv) {
					r = -ENOMEM;
					break;
				}
				v = nv;
				cap = cap ? 2 * cap : 256;
			}
			v[n++] = x;
		}
		if (r < 0)
			break;
	}
	if (r < 0) {
		free(v);
		return r;
	}
	*ret = v;
	*ret_nr = n;
	return 0;
}

static int read_runs(const char *dir, struct run **ret, size_t *ret_nr)
{
	_cleanup_close_ int dfd = pin_image_open_dir(dir);
	FILE *f;
	int fd, r;

	if (dfd < 0)
		return dfd;
	fd = openat(dfd, WSET_FILE, O_RDONLY | O_CLOEXEC);
	f = fd < 0 ? NULL : fdopen(fd, "r");
	if (!f) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s/%s: %s", dir, WSET_FILE, strerror(errno));
		if (fd >= 0)
			close(fd);
		return r;
	}
	r = parse_runs(f, dir, ret, ret_nr);
	fclose(f);
	return r;
}

int pin_working_set_read(const char *dir, struct pin_ws_run **ret, size_t *ret_nr)
{
	struct run *v;
	size_t n;
	int r = read_runs(dir, &v, &n);

	if (r < 0)
		return r;
	struct pin_ws_run *w = calloc(n ? n : 1, sizeof(*w));
	for (size_t i = 0; w && i < n; i++)
		w[i] = (struct pin_ws_run){ v[i].addr, v[i].len };
	free(v);
	if (!w)
		return -ENOMEM;
	*ret = w;
	*ret_nr = n;
	return 0;
}

static int cmp_run(const void *a, const void *b)
{
	const struct run *x = a, *y = b;

	return (x->addr > y->addr) - (x->addr < y->addr);
}

/* Address order, overlapping and adjacent runs merged: the fewest COPYs. */
static size_t merge_runs(struct run *v, size_t n)
{
	size_t k = 0;

	if (!n)
		return 0; /* v may be NULL, which qsort() must not get */
	qsort(v, n, sizeof(*v), cmp_run);
	for (size_t i = 0; i < n; i++) {
		if (k && v[i].addr <= v[k - 1].addr + v[k - 1].len) {
			uint64_t end = v[i].addr + v[i].len;
			if (end > v[k - 1].addr + v[k - 1].len)
				v[k - 1].len = end - v[k - 1].addr;
			continue;
		}
		v[k++] = v[i];
	}
	return k;
}

/* One Replay message of n runs; adds the pages placed to *placed. */
static int replay_chunk(struct pin_client *c, const struct run *v, size_t n, uint64_t *placed)
{
	_cleanup_free_ Uffdd__Range *ranges = calloc(n, sizeof(*ranges));
	_cleanup_free_ Uffdd__Range **pv = calloc(n, sizeof(*pv));
	Uffdd__Replay rp = UFFDD__REPLAY__INIT;
	Uffdd__Msg req = UFFDD__MSG__INIT;
	Uffdd__Msg *rep = NULL;
	int r;

	if (!ranges || !pv)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		uffdd__range__init(&ranges[i]);
		ranges[i].addr = v[i].addr;
		ranges[i].len = v[i].len;
		pv[i] = &ranges[i];
	}
	rp.n_ranges = n;
	rp.ranges = pv;
	req.body_case = UFFDD__MSG__BODY_REPLAY;
	req.replay = &rp;
	r = pin_client_request(c, &req, &rep);
	if (r < 0)
		return r;
	*placed += rep->reply->pages_placed;
	pin_proto_free(rep);
	return 0;
}

PIN_EXPORT int pin_client_working_set_replay(struct pin_client *c, const char *dir)
{
	_cleanup_free_ struct run *v = NULL;
	uint64_t placed = 0;
	size_t n = 0;
	int r;

	if (!c || !dir)
		return -EINVAL;
	r = read_runs(dir, &v, &n);
	if (r < 0)
		return r;
	n = merge_runs(v, n);
	for (size_t i = 0; i < n; i += REPLAY_CHUNK) {
		r = replay_chunk(c, v + i, n - i < REPLAY_CHUNK ? n - i : REPLAY_CHUNK, &placed);
		if (r < 0)
			return r;
	}
	return placed > INT32_MAX ? INT32_MAX : (int)placed;
}
