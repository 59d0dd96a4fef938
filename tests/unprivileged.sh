#!/bin/sh
# SPDX-License-Identifier: MIT
# The per-tcase skips, checked as an ordinary user (uid 65534, no capabilities):
# test-uffd runs every tcase whose faults come from user mode and leaves out,
# each for its own reason, the ones that need privilege; test-image without
# the CRIU dumps still runs its own-format cases; the io_uring pin backend
# works for that user (pin-as-user).  Usage: unprivileged.sh TEST_UFFD
# TEST_IMAGE PIN_AS_USER
set -u
uffd=$1 image=$2 pin=$3
# Under valgrind (LD_PRELOAD names its preload) the binaries would be too,
# and valgrind answers userfaultfd(2) with ENOSYS: nothing would run.
case "${LD_PRELOAD:-}" in *vgpreload*)
	echo "SKIP: runs natively only (valgrind has no userfaultfd(2) for uid 65534)"
	exit 77 ;;
esac
if [ "$(id -u)" != 0 ]; then
	echo "SKIP: needs root to switch to uid 65534"
	exit 77
fi
as_nobody() {
	setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$@"
}
for bin in "$uffd" "$image" "$pin"; do
	if ! as_nobody test -x "$bin"; then
		echo "SKIP: uid 65534 cannot reach $bin"
		exit 77
	fi
done
# Indented: scripts/test counts lines that start "SKIP: " or "N%: Checks: ".
show() {
	printf '%s\n' "$out" | sed 's/^/  /'
}
fail() {
	echo "FAIL: $*"
	exit 1
}

out=$(as_nobody "$uffd" 2>&1)
rc=$?
show
[ $rc = 0 ] || fail "test-uffd as uid 65534 exited $rc"
for tc in api register resolve poison move faults events; do
	case "$out" in *"SKIP: uffd/$tc:"*) fail "tcase $tc needs no privilege but was skipped" ;; esac
done
for want in "SKIP: uffd/privileged: needs root (euid is 65534)" \
	"SKIP: uffd/fork: needs CAP_SYS_PTRACE"; do
	case "$out" in *"$want"*) ;; *) fail "no line '$want'" ;; esac
done

out=$(UFFDD_CRIU_IMAGES=/nonexistent as_nobody "$image" 2>&1)
rc=$?
show
[ $rc = 0 ] || fail "test-image without the dumps exited $rc"
[ "$(printf '%s\n' "$out" | grep -c '^SKIP: ')" = 2 ] || fail "not exactly 2 SKIP lines"
for want in "SKIP: image/criu: no /nonexistent (UFFDD_CRIU_IMAGES)" \
	"SKIP: image/criu-damaged: no /nonexistent (UFFDD_CRIU_IMAGES)" \
	"100%: Checks: 4, Failures: 0, Errors: 0"; do
	case "$out" in *"$want"*) ;; *) fail "no line '$want'" ;; esac
done

# The io_uring backend's monitor makes do with a user-mode-only userfaultfd.
out=$(as_nobody "$pin" 2>&1)
rc=$?
show
[ $rc = 0 ] || [ $rc = 77 ] || fail "pin-as-user as uid 65534 exited $rc"
