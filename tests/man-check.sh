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
declare -A target
while IFS=: read -r file line; do
	target[${file##*/}]=${line#.so man*/}
done < <(cd "$man" && grep -H '^\.so ' $present || true)
real=()
for p in $present; do
	t=${target[$p]:-}
	if [ -z "$t" ]; then
		real+=("$p")
	elif grep -vqE '^(\.so |\.\\"|$)' "$man/$p"; then
		fail "man/$p: an alias page must hold only its .so line"
	elif [ ! -f "$man/$t" ] || [ -n "${target[$t]:-}" ]; then
		fail "man/$p: .so target $t is not a page of man/"
	fi
done

# 3. Every page renders without a warning, in the formats man(1) uses; the
# text is kept without whitespace for step 4.  Pages render in parallel.
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
render() {
	groff -man -ww -z "$man/$1" >"$out/$1.z" 2>&1 || echo "groff failed" >>"$out/$1.z"
	groff -man -ww -Tutf8 -P-cbou "$man/$1" 2>"$out/$1.u" | tr -d '[:space:]' >"$out/$1.txt"
}
export -f render
export man out
printf '%s\n' "${real[@]}" | xargs -P "$(nproc)" -I{} bash -c 'render "$1"' _ {}
for p in "${real[@]}"; do
	[ ! -s "$out/$p.z" ] || fail "man/$p: groff -z warns: $(cat "$out/$p.z")"
	[ ! -s "$out/$p.u" ] || fail "man/$p: groff -Tutf8 warns: $(cat "$out/$p.u")"
done

# 4. Every exported symbol: a page, listed in NAME, prototype in SYNOPSIS.
declare -A proto names
while read -r name decl; do
	proto[$name]=$decl
done < <(perl -0777 -ne '
	s{/\*.*?\*/}{}gs;
	s{^[ \t]*#(?:.*\\\n)*.*$}{}mg;
	for (split /[;{}]/) {
		next if /^\s*typedef/ or !/\b(pin_\w+)\s*\(/;
		my $name = $1;
		s/\s+//g;
		print "$name $_\n";
	}' "$hdr")
while read -r page words; do
	names[$page]=" $words "
done < <(cd "$man" && awk '
	FNR == 1 { if (line) print line; line = FILENAME; on = 0 }
	/^\.SH/ { on = $2 == "NAME"; next }
	on { gsub(/[^A-Za-z0-9_]+/, " "); line = line " " $0 }
	END { if (line) print line }' "${real[@]}")
nsyms=0
for s in $(grep -oE '^[[:space:]]+pin_[a-z0-9_]+;' "$sym" | tr -d ' \t;'); do
	nsyms=$((nsyms + 1))
	p=$s.3
	if [ ! -f "$man/$p" ]; then
		fail "$s is exported but has no page man/$p"
		continue
	fi
	page=${target[$p]:-$p}
	[ -f "$out/$page.txt" ] || continue
	[[ "${names[$page]:-}" == *" $s "* ]] || fail "man/$page: NAME does not list $s"
	if [ -z "${proto[$s]:-}" ]; then
		fail "$s: no prototype in libpin.h"
	elif [[ "$(<"$out/$page.txt")" != *"${proto[$s]}"* ]]; then
		fail "man/$page: SYNOPSIS lacks the prototype of $s as in libpin.h"
	fi
done

# 5. References to pages of this project point at pages that exist.
while IFS=: read -r p ref; do
	ref=${ref//[\\ ()]/}
	[ -f "$man/${ref%?}.${ref: -1}" ] ||
		fail "man/$p refers to ${ref%?}(${ref: -1}), which has no page"
done < <(cd "$man" && grep -oHE '\b(pin_[a-z0-9_]+|libpin|uffdd[a-z\\-]*|uffdctl) \([0-9]\)' \
	 "${real[@]}" | sort -u)

[ "$failed" = 0 ] || exit 1
echo "man: ${#real[@]} pages and $(($(echo "$present" | wc -l) - ${#real[@]})) aliases render" \
	"cleanly; all $nsyms exported symbols are documented"
