// SPDX-License-Identifier: MIT
/*
 * Helpers every libpin file uses: the log callback and $LIBPIN_LOG, the
 * clock, ioctl, option structs.  Calls no other file of libpin.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "libpin-private.h"

static pin_log_fn log_fn;
static void *log_userdata;

/* $LIBPIN_LOG, read once, at the first message: the most verbose level
 * written to standard error; 0: none. */
static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static enum pin_log_level env_level;

static void env_read(void)
{
	const char *e = getenv("LIBPIN_LOG");

	if (!e || !*e)
		return;
	if (!strcmp(e, "stderr"))
		env_level = PIN_LOG_WARN;
	else if (!strcmp(e, "debug"))
		env_level = PIN_LOG_DEBUG;
	else
		fprintf(stderr, "%s: libpin: LIBPIN_LOG=%s: not stderr or debug; ignored\n",
			program_invocation_short_name, e);
}

static const char *level_name(enum pin_log_level level)
{
	switch (level) {
	case PIN_LOG_ERR:
		return "";
	case PIN_LOG_WARN:
		return "warning: ";
	case PIN_LOG_INFO:
		return "info: ";
	default:
		return "debug: ";
	}
}

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
	int saved = errno; /* a caller may read it after the message */

	pthread_once(&env_once, env_read);
	if (!log_fn && level > env_level) {
		errno = saved;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One write per line: lines of threads that log at once stay whole. */
	if (level <= env_level)
		fprintf(stderr, "%s: libpin: %s%s\n", program_invocation_short_name,
			level_name(level), msg);
	if (log_fn)
		log_fn(level, msg, log_userdata);
	errno = saved;
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
