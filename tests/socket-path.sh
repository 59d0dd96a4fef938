#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: socket-path.sh UFFDD UFFDCTL
# uffdd --socket PATH removes nothing but a stale socket: a regular file, a
# live socket of another kind and a live uffdd at PATH are refused (exit 1,
# the file or listener untouched, the log says why); a stale socket (nothing
# listens) is replaced, and the daemon then answers there.
set -eu
uffdd=$1
ctl=$2
dir=$(mktemp -d)
pids=
trap 'for p in $pids; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$dir"' EXIT

fail() {
	echo "socket-path: $*"
	exit 1
}

# uffdd on PATH must exit 1 at once (bounded: one that serves is killed) and
# say why.
refused() {
	"$uffdd" --socket "$1" --workers 1 2>"$dir/log" &
	p=$!
	i=0
	while kill -0 $p 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt $((1000 * ${TEST_TIME_SCALE:-1})) ] || { kill $p; wait $p || true; fail "$2: uffdd started serving on it"; }
		sleep 0.01
	done
	rc=0
	wait $p || rc=$?
	[ $rc = 1 ] || fail "$2: uffdd exits $rc, not 1: $(cat "$dir/log")"
	grep -q "$3" "$dir/log" || fail "$2: the log does not say '$3': $(cat "$dir/log")"
}

# Wait (bounded) until uffdctl gets an answer on PATH.
answers() {
	i=0
	until "$ctl" --socket "$1" status >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -lt $((1000 * ${TEST_TIME_SCALE:-1})) ] || fail "nothing answers uffdctl on $1"
		sleep 0.01
	done
}

echo "a log being written" >"$dir/file"
refused "$dir/file" "a regular file" "exists and is not a socket"
[ "$(cat "$dir/file")" = "a log being written" ] || fail "the regular file changed"

# Another service's live stream socket: it still listens afterwards.
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
open(sys.argv[2], "w").close()
s.accept()[0].recv(1)
' "$dir/stream" "$dir/stream.ready" &
pids="$pids $!"
i=0
until [ -e "$dir/stream.ready" ]; do
	i=$((i + 1))
	[ $i -lt $((1000 * ${TEST_TIME_SCALE:-1})) ] || fail "the stream listener did not start"
	sleep 0.01
done
refused "$dir/stream" "a live stream socket" "a live socket of another kind"
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1]); s.send(b"x")
' "$dir/stream" || fail "the stream socket no longer answers"

# A stale socket: bound, never listened on, its owner gone.
python3 -c '
import socket, sys
socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).bind(sys.argv[1])
' "$dir/sock"
[ -S "$dir/sock" ] || fail "no stale socket to start from"
"$uffdd" --socket "$dir/sock" --workers 1 2>"$dir/live.log" &
live=$!
pids="$pids $live"
answers "$dir/sock"

# A live uffdd: a second one is refused, and the first still answers.
refused "$dir/sock" "a live uffdd" "another uffdd is listening there"
answers "$dir/sock"
kill $live
rc=0; wait $live || rc=$?
[ $rc = 0 ] || { cat "$dir/live.log"; fail "uffdd exits $rc on SIGTERM, not 0"; }
rm -rf "$dir"
trap - EXIT
# exec: under meson's valgrind setup the shell itself is traced, and its own
# leaks at exit are not what the test is about.
exec echo "ok"
