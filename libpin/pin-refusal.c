// SPDX-License-Identifier: MIT
/*
 * Why a pin failed, said once through the log callback: the failing call,
 * the errno, the range, and the cause as far as the process can see it.
 * The kernel answers most refusals of pin_user_pages() with a bare EFAULT
 * (mm/gup.c: memfd_secret memory, a shared mapping of a file whose page
 * cache needs dirty tracking, PROT_NONE, no write permission for a pin
 * taken for writing, a hole); /proc/self/maps tells them apart.  ENOMEM,
 * EPERM and EAGAIN over RLIMIT_MEMLOCK name the limit.
 *
 * It owns no state: it reads the context's byte count and calls util.c.
 */
#include <limits.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>

#include "pin-internal.h"

/* What /proc/PID/maps appends to the path of a file that was unlinked. */
#define DELETED " (deleted)"

/* One line of /proc/self/maps. */
struct maps_entry {
	uintptr_t start, end;
	char perms[5];	  /* rwxp or rwxs */
	const char *path; /* "" for anonymous memory */
};

static bool has_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2] = { 0 };

	if (syscall(SYS_capget, &hdr, data) < 0)
		return false;
	return data[CAP_IPC_LOCK / 32].effective & (1u << (CAP_IPC_LOCK % 32));
}

static bool parse_line(char *line, struct maps_entry *e)
{
	unsigned long start, end;
	int path_at = 0;

	if (sscanf(line, "%lx-%lx %4s %*x %*x:%*x %*u %n", &start, &end, e->perms, &path_at) < 3 ||
	    !path_at)
		return false;
	line[strcspn(line, "\n")] = 0;
	e->start = start;
	e->end = end;
	e->path = line + path_at;
	return true;
}

/* Names shmem gives the files behind memfd_create(), SysV segments and
 * MAP_SHARED|MAP_ANONYMOUS, and hugetlbfs those behind MAP_HUGETLB. */
static bool shmem_name(const char *path)
{
	static const char *const prefixes[] = { "/memfd:", "/SYSV", "/dev/zero", "/anon_hugepage" };

	for (size_t i = 0; i < PIN_ARRAY_SIZE(prefixes); i++)
		if (!strncmp(path, prefixes[i], strlen(prefixes[i])))
			return true;
	return false;
}

/* The filesystem type of path, or of its directory once it is unlinked; 0 when neither answers. */
static long fs_type(const char *path)
{
	char buf[PATH_MAX];
	struct statfs fs;
	size_t n = strlen(path), d = strlen(DELETED);

	if (n >= sizeof(buf))
		return 0;
	memcpy(buf, path, n + 1);
	if (n > d && !strcmp(buf + n - d, DELETED))
		buf[n - d] = 0;
	if (statfs(buf, &fs) == 0)
		return (long)fs.f_type;
	char *slash = strrchr(buf, '/');
	if (!slash || slash == buf)
		return 0;
	*slash = 0;
	return statfs(buf, &fs) == 0 ? (long)fs.f_type : 0;
}

static bool char_device(const char *path)
{
	struct stat st;
	size_t n = strlen(path), d = strlen(DELETED);

	/* An unlinked device node is no device mapping anyone makes. */
	if (n > d && !strcmp(path + n - d, DELETED))
		return false;
	return stat(path, &st) == 0 && S_ISCHR(st.st_mode);
}

/* Why the mapping e refuses a pin (long-term: by pin_user_pages(), else by
 * mlock(2)), into why; false when it shows no reason. */
static bool entry_refuses(const struct maps_entry *e, bool longterm, char *why, size_t len)
{
	if (!strcmp(e->perms, "---p") || !strcmp(e->perms, "---s")) {
		snprintf(why, len, "is PROT_NONE");
		return true;
	}
	if (!strncmp(e->path, "/secretmem", strlen("/secretmem"))) {
		snprintf(why, len, "is memfd_secret memory, which the kernel never pins");
		return true;
	}
	if (e->path[0] == '/' && !shmem_name(e->path) && char_device(e->path)) {
		snprintf(why, len, "maps the device %s (VM_IO or VM_PFNMAP: no pages to pin)",
			 e->path);
		return true;
	}
	/* mlock(2) populates without writing, and takes any file. */
	if (!longterm)
		return false;
	if (e->perms[1] != 'w') {
		snprintf(why, len, "is mapped without PROT_WRITE, and pins are taken for writing");
		return true;
	}
	long fs = e->path[0] == '/' && !shmem_name(e->path) ? fs_type(e->path) : 0;
	if (e->perms[3] == 's' && fs && fs != TMPFS_MAGIC && fs != HUGETLBFS_MAGIC) {
		snprintf(why, len,
			 "is a MAP_SHARED mapping of the file %s: its page cache needs dirty "
			 "tracking, and only anonymous, shmem and hugetlbfs memory is pinned "
			 "long-term (map it MAP_PRIVATE or pin a copy)",
			 e->path);
		return true;
	}
	return false;
}

/*
 * The first part of [start, end) that /proc/self/maps shows cannot be pinned,
 * described into why ("[a, b) is ..."); false when it shows none.
 */
static bool maps_refusal(uintptr_t start, uintptr_t end, bool longterm, char *why, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "re");
	uintptr_t cur = start;
	char *line = NULL, cause[384];
	size_t cap = 0;
	bool found = false;
	struct maps_entry e;

	if (!f)
		return false;
	while (!found && cur < end && getline(&line, &cap, f) > 0) {
		if (!parse_line(line, &e) || e.end <= cur)
			continue;
		if (e.start > cur) {
			snprintf(cause, sizeof(cause), "is not mapped");
			e.end = e.start < end ? e.start : end;
			e.start = cur;
			found = true;
		} else {
			found = entry_refuses(&e, longterm, cause, sizeof(cause));
			e.start = cur;
			e.end = e.end < end ? e.end : end;
		}
		if (found)
			snprintf(why, len, "[%#lx, %#lx) %s", (unsigned long)e.start,
				 (unsigned long)e.end, cause);
		cur = e.end;
	}
	free(line);
	fclose(f);
	if (!found && cur < end) {
		snprintf(why, len, "[%#lx, %#lx) is not mapped", (unsigned long)cur,
			 (unsigned long)end);
		found = true;
	}
	return found;
}

/* What the errno alone says, for refusals the maps cannot show. */
static const char *errno_cause(int err)
{
	switch (err) {
	case -EREMOTEIO:
		return "PCI peer-to-peer memory, which only FOLL_PCI_P2PDMA pins (no backend does)";
	case -EOPNOTSUPP:
		return "filesystem DAX memory, which cannot be pinned long-term";
	}
	return NULL;
}

void pin_log_pin_error(struct pin_ctx *ctx, const char *call, const struct pin_range *r, int err)
{
	bool longterm = ctx->backend != PIN_BACKEND_MLOCK;
	/* EFAULT from GUP, ENOMEM from mlock(2): what is not there, or not pinnable.
	 * (mlock fails on PROT_NONE, memfd_secret and holes: it cannot populate them.) */
	bool maps = err == -EFAULT || (!longterm && err == -ENOMEM);
	size_t len = r->end - r->start;
	const char *hint = errno_cause(err);
	char why[448];
	struct rlimit rl;

	if ((maps && maps_refusal(r->start, r->end, longterm, why, sizeof(why))) ||
	    (hint && snprintf(why, sizeof(why), "%s", hint) > 0)) {
		pin_log(PIN_LOG_ERR, "%s [%#lx, +%#zx): %s: %s", call, (unsigned long)r->start, len,
			strerror(-err), why);
		return;
	}
	if ((err != -ENOMEM && err != -EPERM && err != -EAGAIN) || has_ipc_lock() ||
	    getrlimit(RLIMIT_MEMLOCK, &rl) < 0) {
		pin_log(PIN_LOG_ERR, "%s [%#lx, +%#zx): %s", call, (unsigned long)r->start, len,
			strerror(-err));
		return;
	}
	pin_log(PIN_LOG_ERR,
		"%s [%#lx, +%#zx): %s: RLIMIT_MEMLOCK is %llu bytes, this context pins %zu "
		"bytes and asked for %zu more; raise RLIMIT_MEMLOCK (ulimit -l, "
		"LimitMEMLOCK=) or grant CAP_IPC_LOCK",
		call, (unsigned long)r->start, len, strerror(-err), (unsigned long long)rl.rlim_cur,
		ctx->pinned_bytes, len);
}
