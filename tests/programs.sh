#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: programs.sh VERSION UFFDD UFFDCTL UFFDD-CHECKPOINT UFFDD-LAZY-PAGES UFFDD-IMAGE
# What every installed program shares (issue 16, item 8): --version prints
# "NAME VERSION" and exits 0; an unknown option exits 2; uffdd's first line
# says its version, sockets, limits and whether a supervisor keeps the
# sessions; uffdd-lazy-pages leaves no socket behind, whether a signal ends
# its wait or the restore side connected.
set -eu
version=$1
uffdd=$2
ctl=$3
ckpt=$4
lazy=$5
image=$6
dir=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

fail() {
	echo "programs: $*"
	exit 1
}

# What a program wrote to $1, without valgrind's lines (its setup traces the
# programs, and writes to their standard error).
own() {
	grep -v '^==[0-9]*==' "$1" || true
}

# Wait (bounded) until $1 holds a line matching $2.
wait_line() {
	i=0
	until grep -q "$2" "$1" 2>/dev/null; do
		kill -0 $pid 2>/dev/null || fail "pid $pid exited before '$2' appeared in $1: $(cat "$1")"
		i=$((i + 1))
		[ $i -lt $((1000 * ${TEST_TIME_SCALE:-1})) ] || fail "no '$2' in $1: $(cat "$1")"
		sleep 0.01
	done
}

wait_socket() {
	i=0
	until [ -S "$1" ]; do
		kill -0 $pid 2>/dev/null || fail "pid $pid exited before making $1"
		i=$((i + 1))
		[ $i -lt $((1000 * ${TEST_TIME_SCALE:-1})) ] || fail "no socket $1"
		sleep 0.01
	done
}

for p in "$uffdd" "$ctl" "$ckpt" "$lazy" "$image"; do
	name=${p##*/}
	out=$("$p" --version) || fail "$name --version exits $?"
	[ "$out" = "$name $version" ] || fail "$name --version prints '$out', not '$name $version'"
	rc=0; "$p" --no-such-option >/dev/null 2>&1 || rc=$?
	[ $rc = 2 ] || fail "$name --no-such-option exits $rc, not 2"
done

# uffdd's start line, exact: the limits given and the defaults of the rest.
limits="per uid (0: no limit): 1024 sessions, 256 connections, 7 regions, 0 bytes pinned, 4096 descriptors, 4294967296 bytes of records"
"$uffdd" --no-supervisor --socket "$dir/s" --workers 3 --max-regions-per-uid 7 2>"$dir/log" &
pid=$!
wait_line "$dir/log" 'version'
kill $pid
rc=0; wait $pid || rc=$?
pid=
[ $rc = 0 ] || fail "uffdd exits $rc on SIGTERM"
line=$(own "$dir/log" | grep version)
[ "$line" = "uffdd: version $version, socket $dir/s, workers 3; $limits; supervisor off (a restart loses the sessions)" ] ||
	fail "uffdd's start line: $line"
[ "$(own "$dir/log" | grep -c .)" = 1 ] || fail "uffdd logged more than its start line: $(cat "$dir/log")"
# A log of its own: the shell opens it in the background job, after
# wait_line may have looked.
"$uffdd" --socket "$dir/s" --workers 3 --max-regions-per-uid 7 2>"$dir/log2" &
pid=$!
wait_line "$dir/log2" 'version'
kill $pid
wait $pid || true
pid=
grep -q "^uffdd: version $version, .*; supervisor on (uffdd's own)$" "$dir/log2" ||
	fail "uffdd's start line under its supervisor: $(cat "$dir/log2")"

# uffdd-lazy-pages: ended by a signal while it waits for CRIU.
mkdir "$dir/images"
"$lazy" -D "$dir/images" 2>"$dir/log3" &
pid=$!
wait_socket "$dir/images/lazy-pages.socket"
kill $pid
rc=0; wait $pid || rc=$?
pid=
[ $rc = 143 ] || fail "uffdd-lazy-pages exits $rc on SIGTERM, not 143 (killed by it)"
[ ! -e "$dir/images/lazy-pages.socket" ] || fail "SIGTERM left lazy-pages.socket behind"
# ... and after the restore side connected (then hung up before the end).
"$lazy" -D "$dir/images" 2>"$dir/log4" &
pid=$!
wait_socket "$dir/images/lazy-pages.socket"
python3 -c "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.close()" \
	"$dir/images/lazy-pages.socket"
rc=0; wait $pid || rc=$?
pid=
[ $rc = 1 ] || fail "uffdd-lazy-pages exits $rc when the restore side hangs up, not 1"
[ ! -e "$dir/images/lazy-pages.socket" ] || fail "a served connection left lazy-pages.socket behind"
grep -q 'restore side: Connection reset by peer before the end of restore' "$dir/log4" ||
	fail "uffdd-lazy-pages does not say why: $(cat "$dir/log4")"
# uffdd-lazy-pages --page-server: its options all or none; a page server
# that is not there fails it before it listens.
for args in "--page-server" "--page-server --address 127.0.0.1" "--address 127.0.0.1 --port 1" \
	"--page-server --address 127.0.0.1 --port 0" "--page-server --address 127.0.0.1 --port 65536"; do
	rc=0; "$lazy" -D "$dir/images" $args >/dev/null 2>&1 || rc=$?
	[ $rc = 2 ] || fail "uffdd-lazy-pages -D DIR $args exits $rc, not 2"
done
# A port nobody listens on: one the kernel gave and took back.
port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
rc=0
"$lazy" -D "$dir/images" --page-server --address 127.0.0.1 --port "$port" 2>"$dir/log5" || rc=$?
[ $rc = 1 ] || fail "uffdd-lazy-pages exits $rc without a page server, not 1"
grep -q "^uffdd-lazy-pages: page server 127.0.0.1:$port: connect: Connection refused$" "$dir/log5" ||
	fail "uffdd-lazy-pages does not say why: $(cat "$dir/log5")"
[ ! -e "$dir/images/lazy-pages.socket" ] || fail "no page server, yet lazy-pages.socket was made"
rm -rf "$dir"
trap - EXIT
exec echo "ok"
