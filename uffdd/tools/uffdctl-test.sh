#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: uffdctl-test.sh UFFDD UFFDCTL
# Start uffdd on a temporary socket and check what uffdctl prints and exits
# with: tables, JSON, an unknown session, a missing daemon, usage errors.
set -eu
uffdd=$1
ctl=$2
dir=$(mktemp -d)
sock=$dir/uffdd.sock
"$uffdd" --socket "$sock" --workers 1 2>"$dir/log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
# Up means answering: the socket file exists from bind(), before listen().
i=0
until "$ctl" --socket "$sock" status >/dev/null 2>&1; do
	kill -0 $pid 2>/dev/null || { echo "uffdd exited before answering"; cat "$dir/log"; exit 1; }
	i=$((i + 1))
	[ $i -lt 1000 ] || { echo "uffdd did not answer uffdctl on $sock"; cat "$dir/log"; exit 1; }
	sleep 0.01
done

fail() {
	echo "uffdctl-test: $*"
	exit 1
}
# What a program wrote to $1, without valgrind's lines (its setup traces the
# programs, and writes to their standard error).
own() {
	grep -v '^==[0-9]*==' "$1" || true
}
json() {
	python3 -c "import json, sys; d = json.load(sys.stdin); assert $1, d"
}

# What uffdctl prints, in $dir/out; the test fails when it does not exit 0
# (a pipe into grep would hide that: sh has no pipefail).
ctl_out() {
	"$ctl" --socket "$sock" "$@" >"$dir/out" || fail "'uffdctl $*' exits $?"
}

ctl_out status
# uffdctl's own connection is an inspection connection: no session.
grep -q '^clients: *0$' "$dir/out" || fail "status counts uffdctl's connection: $(cat "$dir/out")"
ctl_out clients
[ "$(wc -l <"$dir/out")" = 1 ] || fail "clients: more than the header: $(cat "$dir/out")"
ctl_out --json clients
json 'd == []' <"$dir/out"
ctl_out --json status
json 'd["clients"] == 0 and d["regions"] == 0 and "session" not in d' <"$dir/out"
ctl_out --json stats
json 'd["session"] is None and d["faults"] == 0' <"$dir/out"
ctl_out stats
grep -q '^latency: no faults served yet$' "$dir/out" || fail "stats: histogram"
ctl_out regions
[ "$(wc -l <"$dir/out")" = 1 ] || fail "regions: more than the header"
ctl_out --json regions
json 'd == []' <"$dir/out"
ctl_out --json pins 0
json 'd == []' <"$dir/out"
UFFDD_SOCKET=$sock "$ctl" --json status >"$dir/out" || fail "uffdctl with UFFDD_SOCKET exits $?"
json 'd["socket"] == "'"$sock"'"' <"$dir/out"

rc=0; "$ctl" --socket "$sock" stats 999999 2>"$dir/err" || rc=$?
[ $rc = 1 ] || fail "stats of an unknown session exits $rc, not 1"
grep -q 'No such file or directory' "$dir/err" || fail "stats 999999 does not say why: $(cat "$dir/err")"
rc=0; "$ctl" --socket "$sock" regions 99999 >"$dir/out" 2>"$dir/err" || rc=$?
[ $rc = 1 ] || fail "regions of an unknown session exits $rc, not 1"
[ ! -s "$dir/out" ] || fail "regions 99999 printed: $(cat "$dir/out")"
[ "$(own "$dir/err")" = "uffdctl: uffdd: ListGet: No such file or directory (no session 99999)" ] ||
	fail "regions 99999 says: $(cat "$dir/err")"
rc=0; "$ctl" --socket "$dir/none" status 2>"$dir/err" || rc=$?
[ $rc = 1 ] || fail "a missing daemon exits $rc, not 1"
cat >"$dir/want" <<EOF
uffdctl: uffdd is not running at $dir/none (no socket there)
uffdctl: \`systemctl status uffdd.socket uffdd.service\` says why; a uffdd started by hand listens where its --socket says: give uffdctl the same --socket, or set UFFDD_SOCKET
EOF
own "$dir/err" | cmp -s "$dir/want" - || fail "a missing daemon: $(cat "$dir/err")"
: >"$dir/file"
rc=0; "$ctl" --socket "$dir/file" status 2>"$dir/err" || rc=$?
[ $rc = 1 ] || fail "a file for a socket exits $rc, not 1"
[ "$(own "$dir/err")" = "uffdctl: $dir/file is not a socket: is it uffdd's?" ] ||
	fail "a file for a socket: $(cat "$dir/err")"
# A user the socket's mode keeps out is told the mode and the group.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	chmod 0660 "$sock"
	chgrp "$(id -g)" "$sock"
	chmod 0755 "$dir"
	group=$(getent group "$(id -g)" | cut -d: -f1)
	rc=0; setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" --socket "$sock" status 2>"$dir/err" || rc=$?
	[ $rc = 1 ] || fail "a user kept out exits $rc, not 1"
	grep -qx "uffdctl: the socket is mode 0660, group $group: connect as root or as a member of group $group" "$dir/err" ||
		fail "a user kept out: $(cat "$dir/err")"
fi
for args in "bogus" "status 1" "regions x" ""; do
	rc=0; "$ctl" --socket "$sock" $args 2>/dev/null || rc=$?
	[ $rc = 2 ] || fail "'uffdctl $args' exits $rc, not 2"
done
kill $pid
rc=0; wait $pid || rc=$?
[ $rc = 0 ] || { cat "$dir/log"; fail "uffdd exits $rc on SIGTERM, not 0"; }
rm -rf "$dir"
trap - EXIT
# exec: under meson's valgrind setup the shell itself is traced, and its own
# leaks at exit are not what the test is about.
exec echo "ok"
