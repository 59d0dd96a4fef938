// SPDX-License-Identifier: MIT
/* main() of every test binary: skip with 77 or run the area's suite. */
#include <stdio.h>
#include <stdlib.h>

#include "test-common.h"

int main(void)
{
	const char *why = test_skip_reason();

	if (why) {
		printf("SKIP: %s\n", why);
		return 77;
	}
	SRunner *sr = srunner_create(test_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
