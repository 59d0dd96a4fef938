// SPDX-License-Identifier: MIT
/*
 * The guest_memfd variant of Firecracker's handshake (its secret-free
 * restore, uffdd/fcgmem.c), against a fake VMM that does what Firecracker's
 * guest_memory_from_uffd() does for it: a KVM VM, a guest_memfd of the
 * guest's size, a userfault bitmap memfd of a bit per page (all set), the
 * guest's regions mapped MAP_SHARED from the guest_memfd at consecutive
 * offsets, a userfaultfd with UFFD_FEATURE_EVENT_REMOVE, each region
 * registered MISSING | MINOR, then the JSON (with gpa_start and
 * is_guest_memfd) and the three descriptors.  Firecracker asks for
 * guest_memfd flags this kernel may not have (NO_DIRECT_MAP, WRITE) and
 * stops when the registration fails; the fake VMM takes what the kernel
 * grants (MMAP | INIT_SHARED) and sends its handshake whatever the
 * registration said, so that uffdd's answer to it is checked: the refusal
 * naming what the kernel cannot do, and each malformed handshake's line.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fc-uffd.h"
#include "fc-vmm.h"
#include "libpin-private.h"
#include "test-common.h"
#include "uffdd-harness.h"

#define CASE_TIMEOUT_S 120

/* KVM's ABI (linux/kvm.h of 6.18; the build host's headers may be older). */
#define KVMIO_			      0xAE
#define KVM_CREATE_VM_		      _IO(KVMIO_, 0x01)
#define KVM_X86_DEFAULT_VM_	      0
#define GUEST_MEMFD_FLAG_MMAP_	      (1ull << 0)
#define GUEST_MEMFD_FLAG_INIT_SHARED_ (1ull << 1)
struct kvm_create_guest_memfd_ {
	uint64_t size, flags, reserved[6];
};
#define KVM_CREATE_GUEST_MEMFD_ _IOWR(KVMIO_, 0xd4, struct kvm_create_guest_memfd_)
/* The guest's regions' guest physical addresses: below and above 4 GiB. */
#define GPA0 0ull
#define GPA1 (4ull << 30)
/* How long uffdd may take to close a refused VM's connection (a bound). */
#define CLOSE_WAIT_S 30
/* How long it may take to free the refused sessions (natively). */
#define SETTLE_POLLS   1000
#define SETTLE_POLL_MS 10
/* uffdd's listening sockets: its control socket and the
 * --firecracker-socket. */
#define LISTENING 2

static size_t page;

/* The secret-free VMM's own descriptors besides struct fc's. */
struct gvm {
	int kvm, vm;
	int gmem;    /* the guest_memfd, MEM_MIB */
	int bitmap;  /* the userfault bitmap memfd */
	int reg_err; /* what UFFDIO_REGISTER (MISSING | MINOR) said: 0 or an errno */
};

/* A guest_memfd of len bytes with flags on vm: the fd, or -errno. */
static int gmem_new(int vm, uint64_t len, uint64_t flags)
{
	struct kvm_create_guest_memfd_ g = { .size = len, .flags = flags };
	int fd = ioctl(vm, KVM_CREATE_GUEST_MEMFD_, &g);

	return fd < 0 ? -errno : fd;
}

/* A memfd of len bytes, every byte b. */
static int memfd_of(size_t len, uint8_t b)
{
	int fd = memfd_create("fc-userfault-bitmap", MFD_CLOEXEC);
	uint8_t *buf = malloc(len);

	ck_assert_int_ge(fd, 0);
	ck_assert_ptr_nonnull(buf);
	memset(buf, b, len);
	ck_assert_int_eq(pwrite(fd, buf, len, 0), (ssize_t)len);
	free(buf);
	return fd;
}

/* The secret-free restore's guest memory, as Firecracker's
 * guest_memory_from_uffd() makes it with a guest_memfd. */
static void gvm_memory(struct fc *f, struct gvm *g)
{
	g->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(g->kvm, 0);
	g->vm = ioctl(g->kvm, KVM_CREATE_VM_, KVM_X86_DEFAULT_VM_);
	ck_assert_int_ge(g->vm, 0);
	g->gmem = gmem_new(g->vm, MEM_MIB * MIB,
			   GUEST_MEMFD_FLAG_MMAP_ | GUEST_MEMFD_FLAG_INIT_SHARED_);
	ck_assert_int_ge(g->gmem, 0);
	/* Firecracker's bitmap_size(): a bit per page; all set. */
	g->bitmap = memfd_of(MEM_MIB * MIB / page / 8, 0xff);
	f->uffd = fc_uffd_open();
	ck_assert_msg(f->uffd >= 0, "userfaultfd: %s", strerror(-f->uffd));
	f->psize = page;
	g->reg_err = 0;
	for (int i = 0; i < 2; i++) {
		f->len[i] = (i ? REG1_MIB : REG0_MIB) * MIB;
		f->off[i] = i ? REG0_MIB * MIB : 0;
		f->reg[i] = mmap(NULL, f->len[i], PROT_READ | PROT_WRITE, MAP_SHARED, g->gmem,
				 (off_t)f->off[i]);
		ck_assert_ptr_ne(f->reg[i], MAP_FAILED);
		struct uffdio_register reg = {
			.range = { (uintptr_t)f->reg[i], f->len[i] },
			.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR,
		};
		if (ioctl(f->uffd, UFFDIO_REGISTER, &reg) < 0)
			g->reg_err = errno;
	}
}

static void gvm_free(struct gvm *g)
{
	close(g->bitmap);
	close(g->gmem);
	close(g->vm);
	close(g->kvm);
}

/* The mappings as Firecracker's serde_json writes GuestRegionUffdMapping
 * in the variant, is_guest_memfd as given (a JSON value). */
static int gvm_json(const struct fc *f, const char *gmem0, const char *gmem1, char *buf,
		    size_t size)
{
	return snprintf(buf, size,
			"[{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":%zu,"
			"\"gpa_start\":%llu,\"page_size\":%zu,\"is_guest_memfd\":%s,"
			"\"page_size_kib\":%zu},"
			"{\"base_host_virt_addr\":%" PRIu64 ",\"size\":%zu,\"offset\":%zu,"
			"\"gpa_start\":%llu,\"page_size\":%zu,\"is_guest_memfd\":%s,"
			"\"page_size_kib\":%zu}]",
			(uint64_t)(uintptr_t)f->reg[0], f->len[0], f->off[0], GPA0, f->psize, gmem0,
			f->psize, (uint64_t)(uintptr_t)f->reg[1], f->len[1], f->off[1], GPA1,
			f->psize, gmem1, f->psize);
}

/* The handshake sent with nfds of fds; uffdd closes the connection and
 * logs "Firecracker handshake (pid P) refused: line". */
static void refused(const struct fc *f, const char *body, const int *fds, size_t nfds,
		    const char *line)
{
	struct timeval tv = { .tv_sec = CLOSE_WAIT_S * (time_t)test_time_scale() };
	char want[600], b;
	int s = vmm_connect(f->sock);

	vmm_send(s, body, strlen(body), fds, nfds);
	ck_assert_int_eq(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	errno = 0;
	ssize_t n = recv(s, &b, 1, 0);
	ck_assert_msg(n == 0 || (n < 0 && errno == ECONNRESET),
		      "recv() after uffdd closed: %zd, %s", n, strerror(errno));
	close(s);
	snprintf(want, sizeof(want), "Firecracker handshake (pid %d) refused: %s\n", (int)getpid(),
		 line);
	free(fc_wait_log(f, want, 1));
}

/* uffdd's descriptors of the kinds a session or a refusal holds: sockets
 * (its two listening ones stay), records, userfaultfds, guest_memfds and
 * memfds (the bitmap; its own state records are memfds too). */
static int count_kinds(pid_t pid)
{
	char path[300], link[64];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	ck_assert_ptr_nonnull(d);
	for (struct dirent *e; (e = readdir(d));) {
		snprintf(path, sizeof(path), "/proc/%d/fd/%s", (int)pid, e->d_name);
		ssize_t k = readlink(path, link, sizeof(link) - 1);
		if (k <= 0)
			continue;
		link[k] = '\0';
		n += !strncmp(link, "socket:", 7) || !strncmp(link, "/memfd:", 7) ||
		     !strcmp(link, "anon_inode:[userfaultfd]") ||
		     !strcmp(link, "anon_inode:[kvm-gmem]");
	}
	closedir(d);
	return n;
}

/* uffdd's descriptors once no session is left (those kinds down to its two
 * listening sockets): freed by their workers after the connections
 * closed. */
static int settled_fds(const struct fc *f)
{
	unsigned int polls = SETTLE_POLLS * test_time_scale();
	int n = -1;

	for (unsigned int i = 0; i < polls && (n = count_kinds(f->d.pid)) != LISTENING; i++)
		test_sleep_ms(SETTLE_POLL_MS);
	ck_assert_msg(n == LISTENING,
		      "uffdd has %d sockets, memfds, userfaultfds and guest_memfds, not its %d "
		      "listening sockets",
		      n, LISTENING);
	return test_count_fds(f->d.pid);
}

/* A case's start: uffdd up and the guest memory made; returns uffdd's
 * settled descriptors before the memory, for gvm_down(). */
static int gvm_up(struct fc *f, struct gvm *g)
{
	fc_up(f);
	int base = settled_fds(f);
	gvm_memory(f, g);
	return base;
}

/* A case's end: uffdd back at the descriptors gvm_up() counted (base), the
 * fake VMM's freed, uffdd stopped. */
static void gvm_down(struct fc *f, struct gvm *g, int base)
{
	ck_assert_int_eq(settled_fds(f), base);
	gvm_free(g);
	fc_down(f);
}

/* The lower-addressed of f's two regions (uffdd checks them in address
 * order). */
static int low(const struct fc *f)
{
	return f->reg[0] < f->reg[1] ? 0 : 1;
}

/*
 * A guest_memfd VM, its handshake as Firecracker sends it: refused, the
 * line naming what this kernel cannot do (register a guest_memfd mapping
 * with userfaultfd), or, on a kernel that can, that uffdd does not serve
 * such a VM yet.  The fake VMM's own registration says which.
 */
START_TEST(gmem_vm_refused_with_reason)
{
	struct fc f = { 0 };
	struct gvm g;
	char json[1024], line[300];

	int base = gvm_up(&f, &g);
	printf("UFFDIO_REGISTER MISSING | MINOR of a guest_memfd mapping: %s\n",
	       g.reg_err ? strerror(g.reg_err) : "done");
	gvm_json(&f, "true", "true", json, sizeof(json));
	if (g.reg_err)
		snprintf(line, sizeof(line),
			 "a guest_memfd VM: this kernel does not register a guest_memfd mapping "
			 "with userfaultfd (UFFDIO_REGISTER MINOR): the VM's faults cannot be "
			 "served: %s",
			 strerror(g.reg_err));
	else
		snprintf(line, sizeof(line),
			 "a guest_memfd VM: uffdd serves no guest_memfd VM yet (issue 15): %s",
			 strerror(EOPNOTSUPP));
	refused(&f, json, (int[]){ f.uffd, g.gmem, g.bitmap }, 3, line);
	gvm_down(&f, &g, base);
}
END_TEST

/* Each malformed variant handshake: refused with its own line. */
START_TEST(gmem_malformed_refused)
{
	struct fc f = { 0 };
	struct gvm g;
	char json[1024], line[300];

	int base = gvm_up(&f, &g);
	int lo = low(&f);

	/* is_guest_memfd without the guest_memfd and bitmap. */
	gvm_json(&f, "true", "true", json, sizeof(json));
	refused(&f, json, (int[]){ f.uffd }, 1,
		"1 descriptors, and its mappings say \"is_guest_memfd\": true: Bad file "
		"descriptor");
	/* Three descriptors for a guest that says it has no guest_memfd. */
	gvm_json(&f, "false", "false", json, sizeof(json));
	refused(&f, json, (int[]){ f.uffd, g.gmem, g.bitmap }, 3,
		"3 descriptors, and its mappings say \"is_guest_memfd\": false: Bad file "
		"descriptor");
	/* Mixed. */
	gvm_json(&f, "true", "false", json, sizeof(json));
	refused(&f, json, (int[]){ f.uffd, g.gmem, g.bitmap }, 3,
		"mapping 1: \"is_guest_memfd\" false, mapping 0's true: one guest memory is all "
		"guest_memfd or none: Invalid argument");
	gvm_json(&f, "1", "1", json, sizeof(json));
	refused(&f, json, (int[]){ f.uffd, g.gmem, g.bitmap }, 3,
		"mapping 0: \"is_guest_memfd\" is not true or false: Invalid argument");

	gvm_json(&f, "true", "true", json, sizeof(json));
	/* Descriptor 0 no userfaultfd. */
	refused(&f, json, (int[]){ g.bitmap, g.gmem, g.bitmap }, 3,
		"descriptor 0 is not a userfaultfd: Bad file descriptor");
	/* Descriptor 1 the memory file, not a guest_memfd. */
	snprintf(line, sizeof(line),
		 "a guest_memfd VM: descriptor 1 is not a guest_memfd (%s): Bad file descriptor",
		 f.mem);
	refused(&f, json, (int[]){ f.uffd, f.memfd, g.bitmap }, 3, line);
	/* Descriptor 2 the guest_memfd, not a memfd. */
	refused(&f, json, (int[]){ f.uffd, g.gmem, g.gmem }, 3,
		"a guest_memfd VM: descriptor 2 is not a memfd (anon_inode:[kvm-gmem]): Bad file "
		"descriptor");
	/* A bitmap of a byte: 2048 pages need 256. */
	int small = memfd_of(1, 0xff);
	snprintf(line, sizeof(line),
		 "a guest_memfd VM: the userfault bitmap has 1 bytes; %zu pages of guest memory "
		 "need %zu: Invalid argument",
		 (size_t)(MEM_MIB * MIB / page), (size_t)(MEM_MIB * MIB / page / 8));
	refused(&f, json, (int[]){ f.uffd, g.gmem, small }, 3, line);
	close(small);
	/* A guest_memfd of 1 MiB: the lower region ends past it. */
	int gm1 = gmem_new(g.vm, MIB, GUEST_MEMFD_FLAG_MMAP_ | GUEST_MEMFD_FLAG_INIT_SHARED_);
	ck_assert_int_ge(gm1, 0);
	snprintf(line, sizeof(line),
		 "a guest_memfd VM: mapping at %#" PRIx64 ": offset %#zx + size %#zx is past the "
		 "end of the guest_memfd (0x100000 bytes): Invalid argument",
		 (uint64_t)(uintptr_t)f.reg[lo], f.off[lo], f.len[lo]);
	refused(&f, json, (int[]){ f.uffd, gm1, g.bitmap }, 3, line);
	close(gm1);
	/* A guest_memfd made without GUEST_MEMFD_FLAG_MMAP: nothing maps it. */
	int gm0 = gmem_new(g.vm, MEM_MIB * MIB, 0);
	ck_assert_int_ge(gm0, 0);
	snprintf(line, sizeof(line),
		 "a guest_memfd VM: mmap of the guest_memfd at %#zx (made without "
		 "GUEST_MEMFD_FLAG_MMAP): No such device",
		 f.off[lo]);
	refused(&f, json, (int[]){ f.uffd, gm0, g.bitmap }, 3, line);
	close(gm0);
	/* 2 MiB pages: Firecracker restores no guest_memfd VM of hugetlbfs. */
	snprintf(json, sizeof(json),
		 "[{\"base_host_virt_addr\":%llu,\"size\":2097152,\"offset\":0,\"gpa_start\":0,"
		 "\"page_size\":2097152,\"is_guest_memfd\":true,\"page_size_kib\":2097152}]",
		 1ull << 40);
	refused(&f, json, (int[]){ f.uffd, g.gmem, g.bitmap }, 3,
		"a guest_memfd VM: pages of 2097152 bytes (Firecracker restores no guest_memfd VM "
		"of hugetlbfs): Invalid argument");
	gvm_down(&f, &g, base);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = suite_create("firecracker-gmem");

	page = (size_t)sysconf(_SC_PAGESIZE);
	TEST_ADD_CASE(s, gmem_vm_refused_with_reason, CASE_TIMEOUT_S);
	TEST_ADD_CASE(s, gmem_malformed_refused, CASE_TIMEOUT_S);
	return s;
}

/* What the fake VMM needs of KVM: a VM and a guest_memfd that maps shared. */
const char *test_skip_reason(void)
{
	const char *why = fc_skip_reason(FC_WHY_PAGE_JSON);
	if (why)
		return why;
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return "no /dev/kvm to open: a guest_memfd needs a KVM VM";
	int vm = ioctl(kvm, KVM_CREATE_VM_, KVM_X86_DEFAULT_VM_);
	int gm = vm < 0 ? -1
			: gmem_new(vm, MIB, GUEST_MEMFD_FLAG_MMAP_ | GUEST_MEMFD_FLAG_INIT_SHARED_);
	if (gm >= 0)
		close(gm);
	if (vm >= 0)
		close(vm);
	close(kvm);
	if (vm < 0)
		return "KVM_CREATE_VM failed: a guest_memfd needs a KVM VM";
	if (gm < 0)
		return "KVM_CREATE_GUEST_MEMFD with GUEST_MEMFD_FLAG_MMAP | INIT_SHARED failed (a "
		       "kernel before 6.18)";
	return NULL;
}
