#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: image-tool.sh UFFDD-IMAGE
# uffdd-image info, verify and diff (issue 16, item 10) on checkpoints made
# here by hand, as uffdd-image(5) describes them, so that every figure is
# known: regions, data pages and holes, the working set; a working-set run
# outside the regions and a truncated pages file refused; the pages two
# checkpoints differ by.  77 on a machine whose pages are not 4 KiB.
set -eu
tool=$1
[ "$(getconf PAGESIZE)" = 4096 ] || { echo "SKIP: the checkpoints here are of 4 KiB pages"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

fail() {
	echo "image-tool: $*"
	exit 1
}

# page FILE INDEX CHAR: page INDEX of FILE filled with CHAR.
page() {
	head -c 4096 /dev/zero | tr '\0' "$3" | dd of="$1" bs=4096 seek="$2" conv=notrunc status=none
}

# checkpoint DIR REGION-LINES...: a manifest of those lines.
checkpoint() {
	d=$1
	shift
	mkdir "$d"
	{
		echo "uffdd-image 1"
		echo "page-size 4096"
		for r in "$@"; do echo "region $r"; done
		echo "end $#"
	} >"$d/manifest"
}

# Old: 0x10000 (A, a hole, B) and the heap at 0x20000 (C).
checkpoint "$dir/old" "0x10000 0x3000 rw- 0x22 0x0" "0x20000 0x1000 r-- 0x22 0x3000 [heap]"
truncate -s 16384 "$dir/old/pages"
page "$dir/old/pages" 0 A
page "$dir/old/pages" 2 B
page "$dir/old/pages" 3 C
printf 'uffdd-working-set 1\npage-size 4096\nrun 0x10000 0x2000\nrun 0x20000 0x1000\nend 2\n' \
	>"$dir/old/working-set"
# New: 0x10000 (A, a hole, b), the heap gone, 0x30000 (D) new.
checkpoint "$dir/new" "0x10000 0x3000 rw- 0x22 0x0" "0x30000 0x1000 rw- 0x22 0x3000"
truncate -s 16384 "$dir/new/pages"
page "$dir/new/pages" 0 A
page "$dir/new/pages" 2 b
page "$dir/new/pages" 3 D

# run NAME ARGS...: stdout in $dir/NAME.out, stderr in .err, status in $rc.
run() {
	name=$1
	shift
	rc=0
	"$tool" "$@" >"$dir/$name.out" 2>"$dir/$name.err" || rc=$?
}
# want NAME: $dir/NAME.out is standard input, word for word.
want() {
	cat >"$dir/want"
	cmp -s "$dir/want" "$dir/$1.out" || fail "$1 printed:
$(cat "$dir/$1.out")
$(cat "$dir/$1.err")
not:
$(cat "$dir/want")"
}

run info info "$dir/old"
[ $rc = 0 ] || fail "info exits $rc"
want info <<'EOF2'
regions 2, pages 4, data pages 3, zero pages 1
region 0x10000-0x13000 rw- pages 3 data 2 zero 1
region 0x20000-0x21000 r-- pages 1 data 1 zero 0 [heap]
working-set runs 2, pages 3
EOF2
run info-new info "$dir/new"
tail -n 1 "$dir/info-new.out" | grep -qx 'working-set none' || fail "info without a working set: $(cat "$dir/info-new.out")"

run verify verify "$dir/old"
[ $rc = 0 ] || fail "verify exits $rc: $(cat "$dir/verify.err")"
echo "ok: 2 regions, 4 pages, working set 2 runs" | want verify

run diff diff "$dir/old" "$dir/new"
[ $rc = 0 ] || fail "diff exits $rc"
want diff <<'EOF2'
region 0x10000-0x13000 pages 3 changed 1 new 0
region 0x30000-0x31000 pages 1 changed 0 new 1
pages 4: same 2, changed 1, new 1; gone 1; an incremental checkpoint carries 2 pages (8192 bytes)
EOF2
run same diff "$dir/old" "$dir/old"
echo "pages 4: same 4, changed 0, new 0; gone 0; an incremental checkpoint carries 0 pages (0 bytes)" |
	want same

# A working-set run outside the regions, then a pages file cut short.
printf 'uffdd-working-set 1\npage-size 4096\nrun 0x50000 0x1000\nend 1\n' >"$dir/new/working-set"
run outside verify "$dir/new"
[ $rc = 1 ] || fail "verify of a run outside the regions exits $rc"
echo "working-set run 0x50000+0x1000: outside every region" | want outside
truncate -s 12288 "$dir/new/pages"
run short verify "$dir/new"
[ $rc = 1 ] || fail "verify of a short pages file exits $rc"
grep -q "^uffdd-image: $dir/new: Bad message$" "$dir/short.err" || fail "a short pages file: $(cat "$dir/short.err")"

for args in "" "info" "diff $dir/old" "bogus $dir/old"; do
	rc=0
	# shellcheck disable=SC2086 # the words are the arguments
	"$tool" $args >/dev/null 2>&1 || rc=$?
	[ $rc = 2 ] || fail "'uffdd-image $args' exits $rc, not 2"
done
rm -rf "$dir"
trap - EXIT
exec echo "ok"
