#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: firecracker-example.sh EXAMPLE UFFDD UFFDCTL
# examples/firecracker-uffd.sh without Firecracker: over a snapshot
# directory (vmstate, mem) it starts uffdd with the socket Firecracker is to
# connect to, prints the snapshot load request naming that socket as the Uffd
# backend, serves until SIGTERM, and leaves no socket behind.
set -eu
example=$1
uffdd=$2
uffdctl=$3
dir=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

fail() {
	echo "firecracker-example: $*"
	[ ! -f "$dir/out" ] || cat "$dir/out"
	exit 1
}

mkdir "$dir/snap"
: >"$dir/snap/vmstate"
head -c 1048576 /dev/zero >"$dir/snap/mem"
# Through /bin/sh: under meson's valgrind setup a shell of the system is
# not traced (its own leaks at exit are not what this is about).
UFFDD=$uffdd /bin/sh "$example" "$dir/snap" >"$dir/out" 2>&1 &
pid=$!
# The request is printed once uffdd listens on both sockets (10 s at most).
i=0
until grep -q '"resume_vm": true}' "$dir/out" 2>/dev/null; do
	kill -0 $pid 2>/dev/null || fail "the example exited before printing the request"
	i=$((i + 1))
	[ $i -le 100 ] || fail "no request printed within 10 s"
	sleep 0.1
done
sed -n '/^{/,/}$/p' "$dir/out" >"$dir/load.json"
python3 - "$dir/load.json" "$dir/snap" <<'PY' || fail "the request is not Firecracker's"
import json, sys
req = json.load(open(sys.argv[1]))
snap = sys.argv[2]
assert req == {"snapshot_path": snap + "/vmstate",
               "mem_backend": {"backend_type": "Uffd",
                               "backend_path": snap + "/firecracker-uffd.sock"},
               "resume_vm": True}, req
PY
[ -S "$dir/snap/firecracker-uffd.sock" ] || fail "no socket for Firecracker"
"$uffdctl" --socket "$dir/snap/uffdd.sock" clients >/dev/null || fail "uffdctl clients failed"
kill -TERM $pid
st=0
wait $pid || st=$?
pid=
[ $st = 0 ] || fail "exit status $st on SIGTERM"
[ ! -e "$dir/snap/firecracker-uffd.sock" ] || fail "uffdd left its Firecracker socket"
[ ! -e "$dir/snap/uffdd.sock" ] || fail "uffdd left its socket"
rm -rf "$dir"
trap - EXIT
# exec: under meson's valgrind setup the shell itself is traced, and its own
# leaks at exit are not what the test is about.
exec echo "ok"
