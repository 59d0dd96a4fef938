#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: verify-units.sh UFFDD.SOCKET UFFDD.SERVICE UFFDD-BINARY SYSUSERS.CONF
# systemd-analyze verify on the units, with ExecStart pointing at the built
# daemon (its arguments kept), and systemd-analyze security on the service:
# any diagnostic, or an exposure above SECURITY_MAX, fails the test; the
# sysusers.d file must make the service's User= and Group= and the socket's
# SocketGroup= (systemd-sysusers --dry-run, into an empty root).  77 without
# systemd-analyze, or one too old to review a unit file (< 250).
set -eu
# Exposure, in tenths as --threshold takes it: 0.5, what the hardening reached
# with its own user and without @resources (1.0 before; issue 12 asks that it
# never get worse).
SECURITY_MAX=5
command -v systemd-analyze >/dev/null 2>&1 || { echo "SKIP: no systemd-analyze"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$1" "$dir/uffdd.socket"
bin=$(realpath "$3")
sed -E "s@^ExecStart=[^ ]*/uffdd( |\$)@ExecStart=$bin\1@" "$2" >"$dir/uffdd.service"
grep -qE "^ExecStart=$bin( |\$)" "$dir/uffdd.service"
# want_made KIND NAME: the sysusers.d file makes that user or group.
want_made() {
	echo "$made" | grep -q "^Creating $1 '$2'" ||
		{ echo "FAIL: $4 names $1 $2, which $(basename "$3") does not make:"; echo "$made"; exit 1; }
}
if command -v systemd-sysusers >/dev/null 2>&1; then
	mkdir "$dir/root"
	made=$(systemd-sysusers --dry-run --root="$dir/root" "$(realpath "$4")" 2>&1) ||
		{ echo "$made"; echo "FAIL: systemd-sysusers refuses $4"; exit 1; }
	user=$(sed -n 's/^User=//p' "$2")
	group=$(sed -n 's/^Group=//p' "$2")
	sgroup=$(sed -n 's/^SocketGroup=//p' "$1")
	[ -n "$user" ] && [ -n "$group" ] && [ -n "$sgroup" ] ||
		{ echo "FAIL: no User=, Group= or SocketGroup= in the units"; exit 1; }
	want_made user "$user" "$4" "$2 (User=)"
	want_made group "$group" "$4" "$2 (Group=)"
	want_made group "$sgroup" "$4" "$1 (SocketGroup=)"
fi
out=$(systemd-analyze verify --man=no "$dir/uffdd.socket" "$dir/uffdd.service" 2>&1) || {
	echo "$out"
	exit 1
}
if [ -n "$out" ]; then
	echo "$out"
	exit 1
fi
systemd-analyze security --help | grep -q -- '--offline' ||
	{ echo "SKIP: systemd-analyze has no security --offline (systemd < 250)"; exit 77; }
# --offline reads the file given, not a unit loaded in the running manager.
out=$(cd "$dir" && systemd-analyze security --offline=yes --threshold=$SECURITY_MAX \
	uffdd.service 2>&1) || {
	echo "$out"
	echo "FAIL: uffdd.service is exposed above $((SECURITY_MAX / 10)).$((SECURITY_MAX % 10))"
	exit 1
}
level=$(echo "$out" | sed -n 's/^.*Overall exposure level for uffdd.service: \([0-9.]*\).*$/\1/p')
rm -rf "$dir"
trap - EXIT
# exec: under meson's valgrind setup the shell itself is traced, and its own
# leaks at exit are not what the test is about.
exec echo "ok: systemd-analyze verify has nothing to say; security exposure $level"
