// SPDX-License-Identifier: MIT
/*
 * A program that installs no log callback (unless told "callback") and makes
 * libpin fail once: a pin of an address range nothing maps.  tests/log-env.sh
 * runs it under each $LIBPIN_LOG and checks what it writes.  With "late", the
 * variable is set only after a first failure: libpin reads it once, at its
 * first message, and stays silent.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libpin.h"

/* A range nothing maps (checked): the failure names it, the same each run. */
#define HOLE ((void *)(uintptr_t)0x7e0000000000ull)

static void on_log(enum pin_log_level level, const char *msg, void *userdata)
{
	printf("callback %d: %s\n", (int)level, msg);
}

/* Ask for a pin of the hole: -ENOMEM from mlock(2), what libpin logs. */
static int fail_once(void)
{
	struct pin_ctx_opts o = { .sz = sizeof(o),
				  .backend = PIN_BACKEND_MLOCK,
				  .flags = PIN_CTX_NO_MONITOR };
	struct pin_ctx *ctx;
	struct pin_range *r;
	int e = pin_ctx_new(&o, &ctx);

	if (e < 0) {
		printf("pin_ctx_new: %s\n", strerror(-e));
		return 1;
	}
	e = pin_range_get(ctx, HOLE, (size_t)sysconf(_SC_PAGESIZE), &r);
	pin_ctx_free(ctx);
	if (e != -ENOMEM) {
		printf("pin_range_get of the hole: %d, not -ENOMEM\n", e);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *how = argc > 1 ? argv[1] : "";
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *p = mmap(HOLE, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1,
		       0);

	if (p != HOLE) {
		printf("%p is mapped already (%s): no hole to pin\n", HOLE, strerror(errno));
		return 1;
	}
	munmap(p, page);
	if (!strcmp(how, "callback"))
		pin_log_set(on_log, NULL);
	if (fail_once())
		return 1;
	if (strcmp(how, "late"))
		return 0;
	setenv("LIBPIN_LOG", "stderr", 1);
	return fail_once();
}
