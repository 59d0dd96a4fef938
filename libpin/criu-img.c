// SPDX-License-Identifier: MIT
/*
 * One CRIU image file read whole, its magic numbers checked, its (u32
 * length, message) entries decoded one by one; and pagemap-PID.img decoded
 * into entries with their places in the pages file.  The facts (magic
 * numbers, message fields, flag bits) are CRIU's public image format; see
 * proto/criu.proto.  Calls nothing of libpin's but the log and pread.
 */
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "criu-internal.h"

/* Metadata images are small; anything this large is not one of CRIU's. */
#define MAX_IMAGE (256u << 20)

static uint64_t page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

void pin_criu_img_release(struct pin_criu_img *f)
{
	free(f->data);
	f->data = NULL;
}

/* Read a whole image file and check its two magic numbers. */
int pin_criu_img_load(int dfd, const char *name, uint32_t magic, struct pin_criu_img *f)
{
	_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	uint32_t m[2];
	struct stat st;
	int r;

	*f = (struct pin_criu_img){ 0 };
	snprintf(f->name, sizeof(f->name), "%s", name);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s: %s", name, strerror(errno));
		return r;
	}
	if ((uint64_t)st.st_size > MAX_IMAGE) {
		pin_log(PIN_LOG_ERR, "%s: %" PRIu64 " bytes, more than an image holds", name,
			(uint64_t)st.st_size);
		return -EFBIG;
	}
	f->size = (size_t)st.st_size;
	f->data = malloc(f->size ? f->size : 1);
	if (!f->data)
		return -ENOMEM;
	r = pin_pread_all(fd, f->data, f->size, 0);
	if (r < 0) {
		pin_log(PIN_LOG_ERR, "read %s: %s", name, strerror(r == -ENODATA ? EIO : -r));
		pin_criu_img_release(f);
		return r == -ENODATA ? -EIO : r;
	}
	if (f->size < sizeof(m)) {
		pin_log(PIN_LOG_ERR, "%s offset 0: %zu bytes, too short for the magic numbers",
			name, f->size);
		pin_criu_img_release(f);
		return -EBADMSG;
	}
	memcpy(m, f->data, sizeof(m));
	if (le32toh(m[0]) != CRIU_IMG_COMMON_MAGIC || le32toh(m[1]) != magic) {
		pin_log(PIN_LOG_ERR,
			"%s offset 0: magic 0x%08" PRIx32 " 0x%08" PRIx32 ", expected 0x%08" PRIx32
			" 0x%08" PRIx32,
			name, le32toh(m[0]), le32toh(m[1]), CRIU_IMG_COMMON_MAGIC, magic);
		pin_criu_img_release(f);
		return -EBADMSG;
	}
	f->pos = sizeof(m);
	return 0;
}

/*
 * The next (u32 length, message) entry decoded as desc.  Returns 1 with
 * *ret (free with protobuf_c_message_free_unpacked()) and the entry's file
 * offset, 0 at the end of the file, -EBADMSG on a damaged entry.
 */
int pin_criu_img_next(struct pin_criu_img *f, const ProtobufCMessageDescriptor *desc, void **ret,
		      size_t *ret_off)
{
	size_t off = f->pos, left = f->size - f->pos;
	ProtobufCMessage *msg;
	uint32_t len;

	if (!left)
		return 0;
	if (left < sizeof(len)) {
		pin_log(PIN_LOG_ERR, "%s offset %zu: truncated entry, %zu bytes left", f->name, off,
			left);
		return -EBADMSG;
	}
	memcpy(&len, f->data + off, sizeof(len));
	len = le32toh(len);
	if (len > left - sizeof(len)) {
		pin_log(PIN_LOG_ERR,
			"%s offset %zu: entry length %" PRIu32
			" past the end of the file (%zu bytes)",
			f->name, off, len, f->size);
		return -EBADMSG;
	}
	msg = protobuf_c_message_unpack(desc, NULL, len, f->data + off + sizeof(len));
	if (!msg) {
		pin_log(PIN_LOG_ERR, "%s offset %zu: entry of %" PRIu32 " bytes is not a valid %s",
			f->name, off, len, desc->name);
		return -EBADMSG;
	}
	f->pos = off + sizeof(len) + len;
	*ret = msg;
	*ret_off = off;
	return 1;
}

/* pin_criu_img_load(), then the first entry, which must be there, as desc. */
int pin_criu_img_load_first(int dfd, const char *name, uint32_t magic,
			    const ProtobufCMessageDescriptor *desc, struct pin_criu_img *f,
			    void **ret)
{
	size_t off;
	int r = pin_criu_img_load(dfd, name, magic, f);

	if (r < 0)
		return r;
	r = pin_criu_img_next(f, desc, ret, &off);
	if (r == 0) {
		pin_log(PIN_LOG_ERR, "%s offset %zu: no %s", name, f->pos, desc->name);
		r = -EBADMSG;
	}
	if (r < 0) {
		pin_criu_img_release(f);
		return r;
	}
	return 0;
}

static int pagemap_entry(const struct pin_criu_img *f, size_t off, const Criu__PagemapEntry *pe,
			 uint64_t *present, struct pin_criu_pagemap_entry *e)
{
	uint64_t page = page_size(), nr = pe->has_nr_pages ? pe->nr_pages : pe->compat_nr_pages;
	uint32_t flags = pe->has_flags ? pe->flags : 0;

	/* As CRIU reads them (init_compat_pagemap_entry()): in_parent adds
	 * PE_PARENT to any flags; an entry of neither is present. */
	if (pe->has_in_parent && pe->in_parent)
		flags |= PIN_CRIU_PE_PARENT;
	else if (!pe->has_flags)
		flags = PIN_CRIU_PE_PRESENT;

	if (pe->vaddr % page || !nr || nr > (UINT64_MAX - pe->vaddr) / page ||
	    nr > (UINT64_MAX - *present) / page) {
		pin_log(PIN_LOG_ERR,
			"%s offset %zu: entry 0x%" PRIx64 " of %" PRIu64
			" pages is not a page range",
			f->name, off, pe->vaddr, nr);
		return -EBADMSG;
	}
	*e = (struct pin_criu_pagemap_entry){
		.vaddr = pe->vaddr,
		.nr_pages = nr,
		.offset = flags & PIN_CRIU_PE_PRESENT ? *present : 0,
		.file_off = off,
		.flags = flags,
	};
	if (flags & PIN_CRIU_PE_PRESENT)
		*present += nr * page;
	return 0;
}

int pin_criu_pagemap_read(int dirfd, int pid, uint32_t *ret_pages_id,
			  struct pin_criu_pagemap_entry **ret_entries, size_t *ret_nr)
{
	struct pin_criu_pagemap_entry *es = NULL;
	size_t n = 0, cap = 0, off;
	uint64_t present = 0, prev_end = 0;
	Criu__PagemapHead *head = NULL;
	Criu__PagemapEntry *pe;
	struct pin_criu_img f;
	char name[64];
	uint32_t pages_id;
	int r;

	snprintf(name, sizeof(name), "pagemap-%d.img", pid);
	r = pin_criu_img_load_first(dirfd, name, CRIU_PAGEMAP_MAGIC,
				    &criu__pagemap_head__descriptor, &f, (void **)&head);
	if (r < 0)
		return r;
	pages_id = head->pages_id;
	protobuf_c_message_free_unpacked(&head->base, NULL);
	while ((r = pin_criu_img_next(&f, &criu__pagemap_entry__descriptor, (void **)&pe, &off)) >
	       0) {
		struct pin_criu_pagemap_entry e;

		r = pagemap_entry(&f, off, pe, &present, &e);
		protobuf_c_message_free_unpacked(&pe->base, NULL);
		if (r < 0)
			break;
		if (e.vaddr < prev_end) {
			pin_log(PIN_LOG_ERR,
				"%s offset %zu: entry 0x%" PRIx64
				" overlaps or precedes the entry before (ending at 0x%" PRIx64 ")",
				name, off, e.vaddr, prev_end);
			r = -EBADMSG;
			break;
		}
		prev_end = e.vaddr + e.nr_pages * page_size();
		if (n == cap) {
			size_t c = cap ? 2 * cap : 64;
			struct pin_criu_pagemap_entry *ne = reallocarray(es, c, sizeof(*ne));

			if (!ne) {
				r = -ENOMEM;
				break;
			}
			es = ne;
			cap = c;
		}
		es[n++] = e;
	}
	if (r < 0)
		goto out;
	*ret_pages_id = pages_id;
	*ret_entries = es;
	*ret_nr = n;
	es = NULL;
out:
	free(es);
	pin_criu_img_release(&f);
	return r;
}
