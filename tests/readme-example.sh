#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: readme-example.sh README.md UFFDD LIBPIN.SO LIBPIN.A INCLUDE-DIR CC [SANITIZE-FLAG]
# The library example of README.md compiles as shown (warnings are errors)
# and works: against a uffdd on a temporary socket, the page it reads is
# the file's (issue 16, item 11).  Linked with libpin.so, and with the
# static libpin.a (item 7).  77 when this user may not open a userfaultfd
# that takes kernel faults (README.md, Requirements).
set -eu
readme=$1
uffdd=$2
lib=$3
archive=$4
inc=$5
cc=$6
san=${7:-}
if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" != 1 ] &&
	[ ! -w /dev/userfaultfd ]; then
	echo "SKIP: this user may not open a userfaultfd (see README.md, Requirements)"
	exit 77
fi
dir=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

fail() {
	echo "readme-example: $*"
	exit 1
}

# The first ```c block, as it stands.
awk '/^```c$/ { on = 1; next } on && /^```$/ { exit } on' "$readme" >"$dir/hello.c"
lines=$(wc -l <"$dir/hello.c")
[ "$lines" -gt 10 ] || fail "no C block in $readme"
# shellcheck disable=SC2086 # $san: no flag, or one
"$cc" -std=gnu11 -Wall -Wextra -Werror $san -I"$inc" "$dir/hello.c" "$lib" -o "$dir/hello" ||
	fail "the README's example does not compile"
# shellcheck disable=SC2046 # pkg-config's words are separate arguments
"$cc" -std=gnu11 -Wall -Wextra -Werror $san -I"$inc" "$dir/hello.c" "$archive" \
	$(pkg-config --libs liburing libprotobuf-c) -lpthread -o "$dir/hello-static" ||
	fail "the README's example does not link with $archive"

printf 'hello from uffdd' >"$dir/page"
"$uffdd" --no-supervisor --socket "$dir/sock" --workers 1 2>"$dir/log" &
pid=$!
i=0
until grep -q version "$dir/log" 2>/dev/null; do
	kill -0 $pid 2>/dev/null || fail "uffdd exited: $(cat "$dir/log")"
	i=$((i + 1))
	[ $i -lt $((1000 * ${TEST_TIME_SCALE:-1})) ] || fail "uffdd did not start: $(cat "$dir/log")"
	sleep 0.01
done
out=$(UFFDD_SOCKET=$dir/sock LIBPIN_LOG=stderr LD_LIBRARY_PATH=${lib%/*} \
	"$dir/hello" "$dir/page") || fail "the example exits $?"
[ "$out" = "hello from uffdd" ] || fail "the example printed '$out'"
out=$(UFFDD_SOCKET=$dir/sock LIBPIN_LOG=stderr "$dir/hello-static" "$dir/page") ||
	fail "the example linked statically exits $?"
[ "$out" = "hello from uffdd" ] || fail "the example linked statically printed '$out'"
kill $pid
rc=0; wait $pid || rc=$?
pid=
[ $rc = 0 ] || fail "uffdd exits $rc on SIGTERM: $(cat "$dir/log")"
rm -rf "$dir"
trap - EXIT
exec echo "ok, $lines lines"
