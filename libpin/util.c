// SPDX-License-Identifier: MIT
/*
 * Helpers every libpin file uses: the log callback, the clock, ioctl, option
 * structs.  Calls no other file of libpin.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "libpin-private.h"

static pin_log_fn log_fn;
static void *log_userdata;

uint64_t pin_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

PIN_EXPORT void pin_log_set(pin_log_fn fn, void *userdata)
{
	log_fn = fn;
	log_userdata = userdata;
}

void pin_log(enum pin_log_level level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!log_fn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_fn(level, msg, log_userdata);
}

int pin_ioctl(int fd, unsigned long request, void *arg)
{
	int r;

	do
		r = ioctl(fd, request, arg);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

int pin_opts_copy(void *dst, size_t known_sz, const void *opts)
{
	const unsigned char *p = opts;
	size_t user_sz;

	if (!opts)
		return 0;
	memcpy(&user_sz, opts, sizeof(user_sz));
	if (user_sz < sizeof(size_t))
		return -EINVAL;
	for (size_t i = known_sz; i < user_sz; i++)
		if (p[i])
			return -E2BIG;
	memcpy(dst, opts, user_sz < known_sz ? user_sz : known_sz);
	memcpy(dst, &known_sz, sizeof(known_sz));
	return 0;
}
