#!/bin/bash
# SPDX-License-Identifier: MIT
# The symbols libpin exports must be exactly those of its version script.
set -eu
sym=$1 lib=$2
want=$(grep -oE '^[[:space:]]+pin_[a-z0-9_]+;' "$sym" | tr -d ' \t;' | sort)
have=$(nm -D --defined-only "$lib" | awk '$2 == "T" || $2 == "D" || $2 == "B" { sub(/@.*/, "", $3); print $3 }' | sort)
if [ "$want" != "$have" ]; then
	echo "libpin.sym and the exports of $lib differ (< .sym, > nm -D):"
	diff <(echo "$want") <(echo "$have") 2>/dev/null || printf '%s\n---\n%s\n' "$want" "$have"
	exit 1
fi
echo "ABI: $(echo "$want" | wc -l) symbols, libpin.sym matches nm -D"
