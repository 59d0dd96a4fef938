// SPDX-License-Identifier: MIT
/*
 * main() of every test binary: skip the area with 77, or run its suite.  It
 * also owns the per-tcase needs of test-common.h: it checks each need against
 * this process and kernel, keeps a tcase whose needs are unmet out of the
 * suite and says so, and exits 77 only when no tcase is left to run.
 */
#include <errno.h>
#include <linux/capability.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "libpin-private.h"
#include "test-common.h"

/* Set by test_suite_new(): the area the SKIP lines name. */
static const char *area;
/* The tcases left out; their runner, never run, frees them. */
static Suite *left_out;
static unsigned int tcases_run, tcases_left_out;

Suite *test_suite_new(const char *name)
{
	area = name;
	return suite_create(name);
}

/* Whether cap is in the effective set; true when capget() cannot say (then the tcase runs). */
static bool has_cap(unsigned int cap)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &h, d) < 0)
		return true;
	return d[CAP_TO_INDEX(cap)].effective & CAP_TO_MASK(cap);
}

/* The features a userfaultfd opened with flags is offered; -errno when it cannot be had. */
static int uffd_offer(unsigned int flags, uint64_t *ret_features)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct pin_uffd *u;
	int r = pin_uffd_open(flags | PIN_UFFD_CLOEXEC, &u);

	if (r < 0)
		return r;
	r = ioctl(pin_uffd_fd(u), UFFDIO_API, &api) < 0 ? -errno : 0;
	pin_uffd_free(u);
	*ret_features = api.features;
	return r;
}

/*
 * Why a userfaultfd cannot be had, into why; false when it can, or when the
 * error is not one that means "absent" (ENOSYS: not in this kernel, or
 * valgrind's; EPERM: not for this user): then the tcase runs and fails.
 */
static bool uffd_unmet(const struct test_needs *n, char *why, size_t len)
{
	bool full = n->what & TEST_NEED_UFFD;
	uint64_t offer = 0;
	int r = uffd_offer(full ? 0 : PIN_UFFD_USER_MODE_ONLY, &offer);

	if (r == -EPERM && full) {
		snprintf(why, len,
			 "needs a userfaultfd that takes kernel-mode faults (userfaultfd: %s; "
			 "with vm.unprivileged_userfaultfd=0 that takes /dev/userfaultfd access "
			 "or CAP_SYS_PTRACE)",
			 strerror(-r));
		return true;
	}
	if (r == -EPERM || r == -ENOSYS) {
		snprintf(why, len, "no userfaultfd for this process (userfaultfd: %s)",
			 strerror(-r));
		return true;
	}
	if (r < 0 || (offer & n->uffd_features) == n->uffd_features)
		return false;
	size_t k = snprintf(why, len, "this kernel lacks userfaultfd features:");
	for (uint64_t m = n->uffd_features & ~offer; m && k < len; m &= m - 1)
		k += snprintf(why + k, len - k, " %s", pin_uffd_feature_name(m & -m));
	return true;
}

/* Why needs are not met here, into why; false when they are. */
static bool unmet(const struct test_needs *n, char *why, size_t len)
{
	struct stat st;

	if ((n->what & TEST_NEED_ROOT) && geteuid() != 0) {
		snprintf(why, len, "needs root (euid is %u)", (unsigned int)geteuid());
		return true;
	}
	if ((n->what & TEST_NEED_PTRACE) && !has_cap(CAP_SYS_PTRACE)) {
		snprintf(why, len, "needs CAP_SYS_PTRACE");
		return true;
	}
	if ((n->what & (TEST_NEED_UFFD_USER | TEST_NEED_UFFD) || n->uffd_features) &&
	    uffd_unmet(n, why, len))
		return true;
	if (n->path_env) {
		const char *path = getenv(n->path_env);

		if (!path) {
			snprintf(why, len, "%s is not set", n->path_env);
			return true;
		}
		if (stat(path, &st) < 0) {
			snprintf(why, len, "no %s (%s): %s", path, n->path_env, strerror(errno));
			return true;
		}
	}
	const char *own = n->check ? n->check() : NULL;
	if (own) {
		snprintf(why, len, "%s", own);
		return true;
	}
	return false;
}

TCase *test_tcase(Suite *s, const char *name, const struct test_needs *needs)
{
	TCase *tc = tcase_create(name);
	char why[512];

	if (!unmet(needs, why, sizeof(why))) {
		suite_add_tcase(s, tc);
		tcases_run++;
		return tc;
	}
	/* Flushed: Check forks, and a buffered line would print once per child. */
	printf("SKIP: %s/%s: %s\n", area, name, why);
	fflush(stdout);
	if (!left_out)
		left_out = suite_create("left-out");
	suite_add_tcase(left_out, tc);
	tcases_left_out++;
	return tc;
}

int main(void)
{
	const char *why = test_skip_reason();

	if (why) {
		printf("SKIP: %s\n", why);
		return 77;
	}
	SRunner *sr = srunner_create(test_suite());

	if (left_out)
		srunner_free(srunner_create(left_out));
	if (tcases_left_out && !tcases_run) {
		srunner_free(sr);
		return 77;
	}
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
