/* SPDX-License-Identifier: MIT */
/*
 * The firecracker tests' fake VMM (fc-vmm.c): guest memory registered on a
 * userfaultfd as Firecracker does it, its handshake, a guest's touches
 * checked against the memory file; and the uffdd it talks to, started on a
 * --firecracker-socket with that memory file.
 */
#ifndef TEST_FC_VMM_H
#define TEST_FC_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uffdd-harness.h"

#define MIB (1ull << 20)
/* The guest of vmm_memory(): two regions, as below and above x86's MMIO
 * gap, each its own mapping, over one memory file (in MiB). */
#define REG0_MIB 3
#define REG1_MIB 5
#define MEM_MIB	 (REG0_MIB + REG1_MIB)

struct fc {
	struct test_daemon d;
	char dir[64];
	char sock[96]; /* the --firecracker-socket */
	char mem[96];  /* the --mem-file, MEM_MIB of test_pattern_write() */
	char log[96];  /* the daemon's stderr */
	char mdir[96]; /* the service manager's sockets (kill tests) */
	int memfd;
	uint8_t *reg[2];
	size_t len[2];
	size_t off[2]; /* the regions' offsets in the memory file */
	size_t psize;  /* the guest's page size, as the handshake says it */
	int uffd;
	int conn;
};

/* f's userfaultfd and the guest of two regions over the memory file, at
 * offsets 0 and REG0_MIB, of the system's pages. */
void vmm_memory(struct fc *f);
/* Region i of f: len bytes at offset off of the memory file, mapped with
 * mmap()'s flags (MAP_HUGETLB: psize is the huge page's) and registered
 * MISSING on f->uffd. */
void vmm_map(struct fc *f, int i, size_t len, size_t off, int flags, size_t psize);
/* The handshake's JSON for f's two regions: its length, as snprintf(). */
int vmm_json(const struct fc *f, char *buf, size_t size);
int vmm_connect(const char *path);
/* One sendmsg() of body with fds attached (nfds may be 0, at most 4). */
void vmm_send(int s, const void *body, size_t len, const int *fds, size_t nfds);
/* Firecracker's handshake: connect, the JSON and the userfaultfd. */
void vmm_handshake(struct fc *f);
/* Page i (of the system's) of region r equals the memory file's (or zero). */
void vmm_check_page(const struct fc *f, int r, size_t i, bool zero);
/* Touch the pages of region r in [from, to) in a shuffled order, as vCPUs
 * would, each checked byte for byte. */
void vmm_touch(const struct fc *f, int r, size_t from, size_t to, uint64_t seed);

/* A page of the guest of vmm_memory(): page i of region r. */
struct vmm_page {
	int r;
	size_t i;
};
/* One thread per page of set reads it, and waits in the kernel for its
 * fault (f->uffd is nobody's yet); then Firecracker's handshake, and once
 * every thread is woken every page is checked byte for byte. */
void vmm_handshake_after_faults(struct fc *f, const struct vmm_page *set, size_t n);
/* The VM is gone: its connection closed (if it is not yet), its guest
 * unmapped, its userfaultfd closed (f's files and daemon stay). */
void vmm_exit(struct fc *f);

/* f's directory, memory file and paths (no daemon). */
void fc_files(struct fc *f);
/* uffdd serving f->sock from f->mem with more arguments (NULL-terminated,
 * may be NULL), its stderr in f->log. */
void fc_up_with(struct fc *f, const char *const *more);
void fc_up(struct fc *f);
/* The guest unmapped, the VMM's descriptors closed, f's files removed. */
void fc_cleanup(struct fc *f);
/* uffdd stopped, then fc_cleanup(). */
void fc_down(struct fc *f);
/* The daemon's log so far (free()). */
char *fc_read_log(const struct fc *f);
/* The daemon's log once it holds line n times at least (free()). */
char *fc_wait_log(const struct fc *f, const char *line, unsigned int n);
/* How many times line is in log. */
unsigned int fc_count(const char *log, const char *line);

/* NULL when the firecracker cases can run here: UFFDD and UFFDCTL set, 4
 * KiB pages (else why_page: what needs them), a userfaultfd; else why not. */
const char *fc_skip_reason(const char *why_page);
/* why_page of the cases whose handshake JSON says pages of 4096 bytes. */
#define FC_WHY_PAGE_JSON "the page size is not 4096: the JSON the tests send says 4096"

/* How long a daemon may take to start, natively. */
#define FC_READY_MS 10000

struct manager;
/* uffdd serving f's socket under tests/manager.c (the service manager, its
 * sockets in f->mdir), stopping itself at hold (UFFDD_HOLD) unless NULL; the
 * daemons it is restarted as do not. */
struct manager *fc_managed(struct fc *f, const char *hold);
/* The same with more arguments (NULL-terminated, may be NULL), its
 * daemon's stderr in f->log (a restart's too: fc_log_begin()). */
struct manager *fc_managed_with(struct fc *f, const char *hold, const char *const *more);
/* The daemons started from now on (manager_start(), a restart) write
 * their stderr at the end of f->log; what stderr was, for fc_log_end(). */
int fc_log_begin(const struct fc *f);
void fc_log_end(int saved);
/* The VM exits: its connection closed, its sessions leave the store. */
void fc_vm_exits(struct fc *f, struct manager *mgr);
/* The end of a fc_managed() case: uffdd stopped, its manager gone. */
void fc_managed_down(struct fc *f, struct manager *mgr);

#endif
