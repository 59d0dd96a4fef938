// SPDX-License-Identifier: MIT
/*
 * no-poison: run $NO_POISON_EXEC with this program's arguments (argv[0]
 * included) under a seccomp filter that fails ioctl(UFFDIO_POISON) with
 * EINVAL, as a kernel before Linux 6.6 answers a command it does not know.
 * The stranded area starts uffdd through it, and so does the restore case
 * whose task uffdd-lazy-pages must kill: pages uffdd cannot read nor poison
 * leave their threads waiting, never a zero page (tests/test-stranded.c).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "libpin-private.h" /* UFFDIO_POISON, where the headers lack it */

/* The low 32 bits of ioctl's second argument (its command, an unsigned int). */
#define CMD_LOW                                                                                    \
	(offsetof(struct seccomp_data, args[1]) +                                                  \
	 (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__ ? sizeof(__u32) : 0))

int main(int argc, char **argv)
{
	const char *exe = getenv("NO_POISON_EXEC");
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, CMD_LOW),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (__u32)UFFDIO_POISON, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EINVAL & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (argc < 1 || !exe) {
		fprintf(stderr, "no-poison: NO_POISON_EXEC (the program to run) is not set\n");
		return 127;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		perror("no-poison: prctl");
		return 127;
	}
	execv(exe, argv);
	perror("no-poison: execv");
	return 127;
}
