#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: log-env.sh LOG-ENV
# $LIBPIN_LOG makes libpin say what failed without a log callback (issue 16,
# item 5): unset, nothing; stderr, the failing call, the errno text and the
# range; debug, the debug lines too; both a program's callback and standard
# error get the lines; a bad value is named once; the variable is read once.
set -eu
prog=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

fail() {
	echo "log-env: $*"
	exit 1
}

# What the program wrote to $1, without valgrind's lines (its setup traces
# the program and writes to the same standard error).
own() {
	grep -v '^==[0-9]*==' "$1" || true
}

err="log-env: libpin: mlock [0x7e0000000000, +0x1000): Cannot allocate memory: [0x7e0000000000, 0x7e0000001000) is not mapped"
dbg="log-env: libpin: debug: pin context: mlock backend"

# run NAME [ARG]: the program's stdout in $dir/NAME.out, stderr in $dir/NAME.err.
run() {
	name=$1
	shift
	"$prog" "$@" >"$dir/$name.out" 2>"$dir/$name.err" || fail "$name: exits $?: $(cat "$dir/$name.out")"
}

(unset LIBPIN_LOG; run unset)
[ -z "$(own "$dir/unset.err")" ] || fail "without LIBPIN_LOG: $(cat "$dir/unset.err")"

LIBPIN_LOG=stderr run stderr
printf '%s\n' "$err" >"$dir/want"
own "$dir/stderr.err" | cmp -s "$dir/want" - || fail "LIBPIN_LOG=stderr: $(cat "$dir/stderr.err")"

LIBPIN_LOG=debug run debug
printf '%s\n%s\n' "$dbg" "$err" >"$dir/want"
own "$dir/debug.err" | cmp -s "$dir/want" - || fail "LIBPIN_LOG=debug: $(cat "$dir/debug.err")"

LIBPIN_LOG=stderr run callback callback
printf '%s\n' "$err" >"$dir/want"
own "$dir/callback.err" | cmp -s "$dir/want" - || fail "LIBPIN_LOG=stderr with a callback: $(cat "$dir/callback.err")"
printf 'callback 7: %s\ncallback 3: %s\n' "${dbg#*debug: }" "${err#*libpin: }" >"$dir/want"
cmp -s "$dir/want" "$dir/callback.out" || fail "the callback got: $(cat "$dir/callback.out")"

LIBPIN_LOG=loud run bad
echo "log-env: libpin: LIBPIN_LOG=loud: not stderr or debug; ignored" >"$dir/want"
own "$dir/bad.err" | cmp -s "$dir/want" - || fail "LIBPIN_LOG=loud: $(cat "$dir/bad.err")"

(unset LIBPIN_LOG; run late late)
[ -z "$(own "$dir/late.err")" ] || fail "LIBPIN_LOG set after the first message was read: $(cat "$dir/late.err")"
rm -rf "$dir"
trap - EXIT
exec echo "ok"
