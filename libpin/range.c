// SPDX-License-Identifier: MIT
/*
 * The interval map of the registration cache: a sorted array of [start, end)
 * items that may overlap.  A cache holds at most a few thousand pins, so a
 * binary search plus a memmove beats a tree here, and the lookup touches one
 * or two cache lines.  max_len bounds how far back an item covering a point
 * can start.
 */
#include <string.h>

#include "pin-internal.h"

void pin_imap_init(struct pin_imap *m)
{
	memset(m, 0, sizeof(*m));
}

void pin_imap_fini(struct pin_imap *m)
{
	free(m->items);
	memset(m, 0, sizeof(*m));
}

int pin_imap_reserve(struct pin_imap *m, size_t extra)
{
	if (m->n + extra <= m->cap)
		return 0;
	size_t cap = m->cap ? m->cap : 16;
	while (cap < m->n + extra)
		cap *= 2;
	struct pin_imap_item *items = realloc(m->items, cap * sizeof(*items));
	if (!items)
		return -ENOMEM;
	m->items = items;
	m->cap = cap;
	return 0;
}

/* Index of the first item with item.start > start. */
static size_t upper_bound(const struct pin_imap *m, uintptr_t start)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->items[mid].start <= start)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Index of the first item that can reach past start. */
static size_t first_reaching(const struct pin_imap *m, uintptr_t start)
{
	uintptr_t from = start > m->max_len ? start - m->max_len : 0;
	size_t i = upper_bound(m, from);

	while (i > 0 && m->items[i - 1].start >= from)
		i--;
	return i;
}

int pin_imap_insert(struct pin_imap *m, uintptr_t start, uintptr_t end, void *data)
{
	if (start >= end)
		return -EINVAL;
	int r = pin_imap_reserve(m, 1);
	if (r < 0)
		return r;
	size_t i = upper_bound(m, start);
	memmove(&m->items[i + 1], &m->items[i], (m->n - i) * sizeof(m->items[0]));
	m->items[i] = (struct pin_imap_item){ .start = start, .end = end, .data = data };
	m->n++;
	if (end - start > m->max_len)
		m->max_len = end - start;
	return 0;
}

static void remove_at(struct pin_imap *m, size_t i)
{
	memmove(&m->items[i], &m->items[i + 1], (m->n - i - 1) * sizeof(m->items[0]));
	m->n--;
}

bool pin_imap_remove(struct pin_imap *m, uintptr_t start, void *data)
{
	for (size_t i = upper_bound(m, start); i > 0 && m->items[i - 1].start == start; i--) {
		if (m->items[i - 1].data == data) {
			remove_at(m, i - 1);
			return true;
		}
	}
	return false;
}

void *pin_imap_find_covering(const struct pin_imap *m, uintptr_t start, uintptr_t end)
{
	/* Scan back from the last item starting at or before start. */
	for (size_t i = upper_bound(m, start); i > 0; i--) {
		const struct pin_imap_item *it = &m->items[i - 1];
		if (it->end >= end)
			return it->data;
		if (end - it->start > m->max_len)
			break;
	}
	return NULL;
}

void *pin_imap_take_overlap(struct pin_imap *m, uintptr_t start, uintptr_t end)
{
	for (size_t i = first_reaching(m, start); i < m->n && m->items[i].start < end; i++) {
		if (m->items[i].end > start) {
			void *data = m->items[i].data;
			remove_at(m, i);
			return data;
		}
	}
	return NULL;
}

int pin_imap_punch(struct pin_imap *m, uintptr_t start, uintptr_t end)
{
	size_t i = first_reaching(m, start);

	while (i < m->n && m->items[i].start < end) {
		struct pin_imap_item *it = &m->items[i];
		if (it->end <= start) {
			i++;
		} else if (it->start < start && it->end > end) {
			if (m->n == m->cap)
				return -ENOSPC;
			memmove(&m->items[i + 2], &m->items[i + 1],
				(m->n - i - 1) * sizeof(m->items[0]));
			m->items[i + 1] = (struct pin_imap_item){ end, it->end, it->data };
			it->end = start;
			m->n++;
			return 0;
		} else if (it->start < start) {
			it->end = start;
			i++;
		} else if (it->end > end) {
			/* Disjoint items: moving this start keeps the order. */
			it->start = end;
			return 0;
		} else {
			remove_at(m, i);
		}
	}
	return 0;
}

void pin_imap_gaps(const struct pin_imap *m, uintptr_t start, uintptr_t end,
		   void (*fn)(uintptr_t start, uintptr_t end, void *arg), void *arg)
{
	uintptr_t at = start;

	for (size_t i = first_reaching(m, start); i < m->n && m->items[i].start < end; i++) {
		const struct pin_imap_item *it = &m->items[i];
		if (it->end <= at)
			continue;
		if (it->start > at)
			fn(at, it->start, arg);
		at = it->end;
		if (at >= end)
			return;
	}
	if (at < end)
		fn(at, end, arg);
}
