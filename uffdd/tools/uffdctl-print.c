// SPDX-License-Identifier: MIT
/*
 * How uffdctl prints what the daemon said: sizes and names made narrow and
 * printable, progress bars, the counters, the latency histogram, and their
 * JSON.  Shared by the one-shot commands (uffdctl.c) and watch
 * (uffdctl-watch.c); it calls neither, only libc and json-c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "uffdctl.h"

void ctl_print_json(struct json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
						       JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

void ctl_jadd_u64(struct json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

/* A list entry's common part: whose, and where. */
struct json_object *ctl_range_json(uint64_t session, uint64_t addr, uint64_t len)
{
	struct json_object *o = json_object_new_object();

	ctl_jadd_u64(o, "session", session);
	ctl_jadd_u64(o, "start", addr);
	ctl_jadd_u64(o, "end", addr + len);
	ctl_jadd_u64(o, "len", len);
	return o;
}

/* 1536 -> "1.5K": sizes in tables stay narrow. */
const char *ctl_human_size(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "BKMGTPE";
	double d = (double)v;
	int u = 0;

	while (d >= 1024 && units[u + 1]) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 "B", v);
	else
		snprintf(buf, len, "%.*f%c", d < 10 ? 1 : 0, d, units[u]);
	return buf;
}

/* Lower bound of latency bucket i (2^i us) as "512us", "2ms", "1s". */
static const char *bucket_label(unsigned int i, char *buf, size_t len)
{
	uint64_t us = 1ull << i;

	if (us < 1000)
		snprintf(buf, len, "%" PRIu64 "us", us);
	else if (us < 1000000)
		snprintf(buf, len, "%.*fms", us < 10000 ? 1 : 0, us / 1e3);
	else
		snprintf(buf, len, "%.*fs", us < 10000000 ? 1 : 0, us / 1e6);
	return buf;
}

void ctl_print_bar(uint64_t part, uint64_t whole, unsigned int width)
{
	unsigned int n = whole ? (unsigned int)((double)part / (double)whole * width + 0.5) : 0;

	for (unsigned int i = 0; i < width; i++)
		putchar(i < n ? '#' : '.');
}

/*
 * s as a terminal may show it: bytes outside printable ASCII as \xNN (a
 * daemon of another version may pass them on); "-" when empty.
 */
const char *ctl_printable(const char *s, char *buf, size_t size)
{
	size_t k = 0;

	if (!*s)
		return "-";
	for (; *s && k + sizeof("\\xNN") <= size; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= ' ' && c <= '~' && c != '\\')
			buf[k++] = (char)c;
		else
			k += (size_t)snprintf(buf + k, size - k, "\\x%02x", c);
	}
	buf[k] = '\0';
	return buf;
}

const char *ctl_mode_name(uint32_t mode)
{
	/* A shared snapshot's region (pin_image_snapshot(3)). */
	if (mode == (PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_MINOR))
		return "missing+minor";
	switch (mode & (PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP)) {
	case PIN_UFFD_REGISTER_MISSING:
		return "missing";
	case PIN_UFFD_REGISTER_WP:
		return "wp";
	case PIN_UFFD_REGISTER_MISSING | PIN_UFFD_REGISTER_WP:
		return "missing+wp";
	default:
		return "?";
	}
}

struct json_object *ctl_stats_json(const struct pin_client_stats *st)
{
	struct json_object *o = json_object_new_object(), *h = json_object_new_array();
	unsigned int last = 0;

	ctl_jadd_u64(o, "faults", st->faults);
	ctl_jadd_u64(o, "wp_faults", st->wp_faults);
	ctl_jadd_u64(o, "pages_copied", st->pages_copied);
	ctl_jadd_u64(o, "pages_zeroed", st->pages_zeroed);
	ctl_jadd_u64(o, "bytes_copied", st->bytes_copied);
	ctl_jadd_u64(o, "pages_pushed", st->pages_pushed);
	ctl_jadd_u64(o, "eagain", st->eagain);
	ctl_jadd_u64(o, "eexist", st->eexist);
	ctl_jadd_u64(o, "pages_total", st->pages_total);
	ctl_jadd_u64(o, "pages_populated", st->pages_populated);
	for (unsigned int i = 0; i < PIN_CLIENT_LATENCY_BUCKETS; i++)
		if (st->latency_us_log2[i])
			last = i + 1;
	/* Trailing empty buckets say nothing; index i is still [2^i, 2^(i+1)) us. */
	for (unsigned int i = 0; i < last; i++)
		json_object_array_add(h, json_object_new_uint64(st->latency_us_log2[i]));
	json_object_object_add(o, "latency_us_log2", h);
	return o;
}

/* The non-empty buckets' span [*first, *last], their largest count and sum. */
static uint64_t histogram_span(const struct pin_client_stats *st, unsigned int *first,
			       unsigned int *last, uint64_t *max)
{
	uint64_t total = 0;

	*first = PIN_CLIENT_LATENCY_BUCKETS;
	*last = 0;
	*max = 0;
	for (unsigned int i = 0; i < PIN_CLIENT_LATENCY_BUCKETS; i++) {
		uint64_t n = st->latency_us_log2[i];

		if (!n)
			continue;
		if (*first == PIN_CLIENT_LATENCY_BUCKETS)
			*first = i;
		*last = i;
		total += n;
		if (n > *max)
			*max = n;
	}
	return total;
}

unsigned int ctl_histogram_lines(const struct pin_client_stats *st)
{
	unsigned int first, last;
	uint64_t max;

	if (!histogram_span(st, &first, &last, &max))
		return 1;
	return 1 + last - first + 1;
}

void ctl_print_histogram(const struct pin_client_stats *st, unsigned int bar_width)
{
	unsigned int first, last;
	uint64_t max, total = histogram_span(st, &first, &last, &max);

	if (!total) {
		puts("latency: no faults served yet");
		return;
	}
	puts("latency (from the read of each fault, log2 buckets):");
	for (unsigned int i = first; i <= last; i++) {
		char lo[16], hi[16];

		bucket_label(i, lo, sizeof(lo));
		if (i == PIN_CLIENT_LATENCY_BUCKETS - 1)
			snprintf(hi, sizeof(hi), "...");
		else
			bucket_label(i + 1, hi, sizeof(hi));
		printf("  %7s - %-7s %10" PRIu64 " %5.1f%% |", i ? lo : "0us", hi,
		       st->latency_us_log2[i],
		       100.0 * (double)st->latency_us_log2[i] / (double)total);
		ctl_print_bar(st->latency_us_log2[i], max, bar_width);
		puts("|");
	}
}

void ctl_print_counters(const struct pin_client_stats *st)
{
	char b[16];

	printf("faults:          %" PRIu64 " (write-protect %" PRIu64 ")\n", st->faults,
	       st->wp_faults);
	printf("pages copied:    %" PRIu64 " (%s)\n", st->pages_copied,
	       ctl_human_size(st->bytes_copied, b, sizeof(b)));
	printf("pages zeroed:    %" PRIu64 "\n", st->pages_zeroed);
	printf("pages pushed:    %" PRIu64 "\n", st->pages_pushed);
	printf("populated:       %" PRIu64 " of %" PRIu64 " pages\n", st->pages_populated,
	       st->pages_total);
	printf("retries:         %" PRIu64 " EAGAIN, %" PRIu64 " EEXIST\n", st->eagain, st->eexist);
}
