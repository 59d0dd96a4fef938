// SPDX-License-Identifier: MIT
/*
 * no-uring: run $NO_URING_EXEC with this program's arguments (argv[0]
 * included) under a seccomp filter that fails io_uring_setup(2) with EPERM,
 * as a kernel with io_uring disabled (kernel.io_uring_disabled=2) or a
 * service whose unit forbids it does.  The cold tests start uffdd through
 * it: its source reads must fall back, never fail (tests/test-cold.c).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
	const char *exe = getenv("NO_URING_EXEC");
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (argc < 1 || !exe) {
		fprintf(stderr, "no-uring: NO_URING_EXEC (the program to run) is not set\n");
		return 127;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		perror("no-uring: prctl");
		return 127;
	}
	execv(exe, argv);
	perror("no-uring: execv");
	return 127;
}
