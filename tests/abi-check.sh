#!/bin/bash
# SPDX-License-Identifier: MIT
# Usage: abi-check.sh LIBPIN.SYM LIBPIN.SO LIBPIN.A
# The symbols libpin exports must be exactly those of its version script;
# the static library defines each of them too; libpin.so needs no
# libibverbs (the RDMA backend loads it when used: issue 16, item 7).
set -eu
sym=$1 lib=$2 archive=$3
want=$(grep -oE '^[[:space:]]+pin_[a-z0-9_]+;' "$sym" | tr -d ' \t;' | sort)
have=$(nm -D --defined-only "$lib" | awk '$2 == "T" || $2 == "D" || $2 == "B" { sub(/@.*/, "", $3); print $3 }' | sort)
if [ "$want" != "$have" ]; then
	echo "libpin.sym and the exports of $lib differ (< .sym, > nm -D):"
	diff <(echo "$want") <(echo "$have") 2>/dev/null || printf '%s\n---\n%s\n' "$want" "$have"
	exit 1
fi
static=$(nm --defined-only "$archive" 2>/dev/null | awk '$2 == "T" || $2 == "D" || $2 == "B" { print $3 }' | sort -u)
missing=$(comm -23 <(echo "$want") <(echo "$static"))
[ -z "$missing" ] || { echo "$archive does not define: $missing"; exit 1; }
needed=$(readelf -d "$lib" | awk '/\(NEEDED\)/ { print $NF }')
if echo "$needed" | grep -q ibverbs; then
	echo "$lib needs libibverbs: $needed"
	exit 1
fi
echo "ABI: $(echo "$want" | wc -l) symbols, libpin.sym matches nm -D and $(basename "$archive");" \
	"needed: $(echo "$needed" | tr -d '[]' | tr '\n' ' ')"
