#!/bin/bash
# SPDX-License-Identifier: MIT
# uffdd-checkpoint PID DIR on a live process: the process runs again after
# the copy (and one stopped before stays stopped), the manifest lists the
# regions the summary counts, and the pages file holds at least the bytes
# the summary says were written.  With --parent (issue 17): an incremental
# checkpoint of a process nothing tracks holds its mappings whole, names its
# parent, and uffdd-image shows the chain of two and squashes it into one
# image with the same pages.
set -eu
tool=$1
image=$2
dir=$(mktemp -d)
sleep 600 &
pid=$!
disown
trap 'kill -9 $pid 2>/dev/null; rm -rf "$dir"' EXIT

fail() {
	echo "checkpoint-tool: $*"
	exit 1
}

# The state letter of /proc/PID/stat ("sleep" has no space in its name).
state() {
	awk '{ print $3 }' "/proc/$pid/stat"
}

# Wait (up to 5 s) until the state is, or is not, T.
wait_state() {
	for _ in $(seq 500); do
		if [ "$1" = T ] && [ "$(state)" = T ]; then return 0; fi
		if [ "$1" != T ] && [ "$(state)" != T ]; then return 0; fi
		sleep 0.01
	done
	fail "pid $pid: state $(state), waited for $1"
}

out=$("$tool" "$pid" "$dir/ck") || fail "failed on a running process"
wait_state running
regions=$(grep -c '^region ' "$dir/ck/manifest") || true
last=$(echo "$out" | tail -n 1)
[[ "$last" =~ ^([0-9]+)\ regions,\ ([0-9]+)\ bytes\ written ]] || fail "summary: $last"
[ "${BASH_REMATCH[1]}" = "$regions" ] || fail "summary says ${BASH_REMATCH[1]} regions, manifest $regions"
[ "$regions" -gt 0 ] || fail "no region taken from a running sleep"
bytes=${BASH_REMATCH[2]}
[ "$(echo "$out" | wc -l)" = $((regions + 1)) ] || fail "not one line per region: $out"
blocks=$(($(stat -c %b "$dir/ck/pages") * 512))
[ "$blocks" -ge "$bytes" ] || fail "pages file holds $blocks bytes, summary says $bytes"

kill -STOP $pid
wait_state T
"$tool" "$pid" "$dir/ck2" >/dev/null || fail "failed on a stopped process"
[ "$(state)" = T ] || fail "a process stopped before was continued"
kill -CONT $pid

if "$tool" "$pid" 2>/dev/null; then fail "accepted a missing DIR"; fi
if "$tool" -a 0x1000 "$pid" "$dir/ck3" 2>/dev/null; then fail "accepted -a without -l"; fi
"$tool" --parent "$dir/ck" "$pid" "$dir/inc" >/dev/null || fail "--parent failed"
head -n 1 "$dir/inc/manifest" | grep -qx 'uffdd-image 2' || fail "incremental: $(head -n 1 "$dir/inc/manifest")"
id=$(sed -n 's/^id //p' "$dir/ck/manifest")
grep -qx "parent $id ../ck" "$dir/inc/manifest" || fail "parent line: $(sed -n 4p "$dir/inc/manifest")"
info=$("$image" info "$dir/inc") || fail "info of the chain"
[ "$(echo "$info" | grep -c '^chain ')" = 2 ] || fail "info shows no chain of 2: $info"
echo "$info" | grep -q "^chain 1 id $id held pages " || fail "info, the parent: $info"
"$image" squash "$dir/inc" "$dir/sq" >/dev/null || fail "squash"
head -n 1 "$dir/sq/manifest" | grep -qx 'uffdd-image 1' || fail "squashed: not a full image"
"$image" verify "$dir/sq" >/dev/null || fail "the squashed image does not verify"
"$image" diff "$dir/inc" "$dir/sq" | tail -n 1 | grep -q 'changed 0, new 0; gone 0;' ||
	fail "squashed differs: $("$image" diff "$dir/inc" "$dir/sq")"
if "$image" squash "$dir/inc" "$dir/sq" 2>/dev/null; then fail "squash over an existing directory"; fi
echo "checkpoint-tool: $regions regions, $bytes bytes; stopped state kept; a chain of 2 squashed"
