#!/bin/bash
# SPDX-License-Identifier: MIT
# The man pages keep up with the library: man/meson.build lists exactly the
# pages in man/, every symbol of libpin.sym has a page (its own or a `.so`
# alias) whose NAME lists it and whose SYNOPSIS shows its prototype as in
# libpin.h, every page renders without a groff warning, and references to
# pages of this project lead to pages that exist.
set -eu
src=$1
man=$src/man
sym=$src/libpin/libpin.sym
hdr=$src/libpin/include/libpin.h

command -v groff >/dev/null || { echo "SKIP: groff is not installed"; exit 77; }

failed=0
fail() {
	echo "man-check: $*"
	failed=1
}

# The `.so` target of an alias page (man3/x.3 -> x.3), empty for a real page.
alias_target() {
	sed -n 's|^\.so  *man[0-9][a-z]*/||p' "$1"
}

# 1. The install list and the directory agree.
listed=$(grep -oE "'[^']+\.[0-9][a-z]*'" "$man/meson.build" | tr -d "'" | sort)
present=$(cd "$man" && ls | grep -E '\.[0-9][a-z]*$' | sort)
for p in $(comm -23 <(echo "$listed") <(echo "$present")); do
	fail "$p is listed in man/meson.build but man/$p does not exist"
done
for p in $(comm -13 <(echo "$listed") <(echo "$present")); do
	fail "man/$p exists but is not listed in man/meson.build (not installed)"
done

# 2. Alias pages hold one `.so` to a real page and nothing else but comments.
real=()
for p in $present; do
	t=$(alias_target "$man/$p")
	if [ -z "$t" ]; then
		real+=("$p")
	elif grep -vqE '^(\.so |\.\\"|$)' "$man/$p"; then
		fail "man/$p: an alias page must hold only its .so line"
	elif [ ! -f "$man/$t" ] || [ -n "$(alias_target "$man/$t")" ]; then
		fail "man/$p: .so target $t is not a page of man/"
	fi
done

# 3. Every page renders without a warning, in the formats man(1) uses; keep
# the text without whitespace for step 4.
errs=$(mktemp)
trap 'rm -f "$errs"' EXIT
declare -A text
for p in "${real[@]}"; do
	w=$(groff -man -ww -z "$man/$p" 2>&1) || fail "man/$p: groff failed"
	[ -z "$w" ] || fail "man/$p: groff -z warns: $w"
	text[$p]=$(groff -man -ww -Tutf8 -P-cbou "$man/$p" 2>"$errs" | tr -d '[:space:]') ||
		fail "man/$p: groff failed"
	[ ! -s "$errs" ] || fail "man/$p: groff -Tutf8 warns: $(cat "$errs")"
done

# 4. Every exported symbol: a page, listed in NAME, prototype in SYNOPSIS.
# Prototypes of libpin.h, whitespace removed, one per line: "name proto".
protos=$(perl -0777 -ne '
	s{/\*.*?\*/}{}gs;
	s{^[ \t]*#(?:.*\\\n)*.*$}{}mg;
	for (split /[;{}]/) {
		next if /^\s*typedef/ or !/\b(pin_\w+)\s*\(/;
		my $name = $1;
		s/\s+//g;
		print "$name $_\n";
	}' "$hdr")
nsyms=0
for s in $(grep -oE '^[[:space:]]+pin_[a-z0-9_]+;' "$sym" | tr -d ' \t;'); do
	nsyms=$((nsyms + 1))
	p=$s.3
	if [ ! -f "$man/$p" ]; then
		fail "$s is exported but has no page man/$p"
		continue
	fi
	t=$(alias_target "$man/$p")
	page=${t:-$p}
	[ -f "$man/$page" ] || continue
	if ! sed -n '/^\.SH NAME/,/^\.SH/p' "$man/$page" | grep -qw -- "$s"; then
		fail "man/$page: NAME does not list $s"
	fi
	proto=$(echo "$protos" | awk -v s="$s" '$1 == s { print $2; exit }')
	if [ -z "$proto" ]; then
		fail "$s: no prototype in libpin.h"
	elif [ -n "${text[$page]+set}" ] && [[ "${text[$page]}" != *"$proto"* ]]; then
		fail "man/$page: SYNOPSIS lacks the prototype of $s as in libpin.h"
	fi
done

# 5. References to pages of this project point at pages that exist.
for p in "${real[@]}"; do
	for ref in $(grep -oE '\b(pin_[a-z0-9_]+|libpin|uffdd[a-z\\-]*|uffdctl) \([0-9]\)' "$man/$p" |
		     tr -d '\\ ()' | sed -E 's/([0-9])$/.\1/' | sort -u); do
		[ -f "$man/$ref" ] || fail "man/$p refers to ${ref%.*}(${ref##*.}), which has no page"
	done
done

[ "$failed" = 0 ] || exit 1
echo "man: ${#real[@]} pages and $(($(echo "$present" | wc -l) - ${#real[@]})) aliases render" \
	"cleanly; all $nsyms exported symbols are documented"
