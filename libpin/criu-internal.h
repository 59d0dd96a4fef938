/* SPDX-License-Identifier: MIT */
/*
 * CRIU's images, private declarations shared by the files that read them:
 * criu.c (a task's image: its VMAs and pages), criu-chain.c (pre-dump
 * chains: the parent links followed, PE_PARENT entries resolved) and
 * criu-img.c (one image file read whole, pagemap-PID.img decoded).  Each
 * calls only the files after it in this list.  Never installed.
 */
#ifndef LIBPIN_CRIU_INTERNAL_H
#define LIBPIN_CRIU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "libpin-private.h"
#include "criu.pb-c.h"

/* criu/include/magic.h */
#define CRIU_IMG_COMMON_MAGIC 0x54564319u
#define CRIU_PSTREE_MAGIC     0x50273030u
#define CRIU_MM_MAGIC	      0x57492820u
#define CRIU_PAGEMAP_MAGIC    0x56084025u

/* One image file read whole; pos: the next entry. */
struct pin_criu_img {
	char name[64];
	uint8_t *data;
	size_t size;
	size_t pos;
};

/* Read image name of the directory dfd and check its two magic numbers. */
int pin_criu_img_load(int dfd, const char *name, uint32_t magic, struct pin_criu_img *f);
/*
 * The next (u32 length, message) entry decoded as desc.  Returns 1 with
 * *ret (free with protobuf_c_message_free_unpacked()) and the entry's file
 * offset, 0 at the end of the file, -EBADMSG on a damaged entry.
 */
int pin_criu_img_next(struct pin_criu_img *f, const ProtobufCMessageDescriptor *desc, void **ret,
		      size_t *ret_off);
/* pin_criu_img_load(), then the first entry, which must be there, as desc. */
int pin_criu_img_load_first(int dfd, const char *name, uint32_t magic,
			    const ProtobufCMessageDescriptor *desc, struct pin_criu_img *f,
			    void **ret);
void pin_criu_img_release(struct pin_criu_img *f);

/*
 * A task's pagemap through its dump's chain of parents (criu-chain.c): the
 * dump and each parent its `parent` link names, newest first, as far as
 * PE_PARENT entries reach.  Each entry of e is one dump's pages: source k
 * is the k-th dump of the chain (0: the newest), offset is in its pages
 * file; no PE_PARENT is left.
 */
struct pin_criu_chain {
	struct pin_criu_pagemap_entry *e;
	size_t ne;
	size_t n;	       /* dumps in the chain */
	char **dirs;	       /* [n]: each dump's directory, for messages */
	uint32_t *pages_ids;   /* [n]: the pages-<id>.img of each */
	int *pages_fds;	       /* [n]: that file, opened read-only */
	uint64_t *pages_sizes; /* [n]: its size */
};

/* Task pid's pagemap in the dump dfd (dir names it in messages) and its
 * parents'; *ret is pin_criu_chain_free()'s. */
int pin_criu_chain_open(int dfd, const char *dir, int pid, struct pin_criu_chain *ret);
/* Frees what chain_open() gave; pages_fds[k] < 0 are taken already. */
void pin_criu_chain_free(struct pin_criu_chain *c);

#endif
