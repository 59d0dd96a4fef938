#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: install-units.sh MESON SOURCE-DIR
# Where `meson install` puts the units and the sysusers.d file (issue 16,
# item 4): under the prefix for any prefix but systemd's own; in systemd's
# directories (its pkg-config file) for systemd's prefix; where
# -Dsystemdsystemunitdir and -Dsysusersdir say when they are given.  Each is
# a scratch configure of the tree installed with --tags systemd into a
# DESTDIR (nothing to build for those), and nothing else may land there.
# 77 when pkg-config knows no systemd (the units are not installed then).
set -eu
meson=$1
src=$2
command -v pkg-config >/dev/null && pkg-config --exists systemd ||
	{ echo "SKIP: pkg-config knows no systemd"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

fail() {
	echo "install-units: $*"
	exit 1
}

# install NAME SETUP-ARGS...: configure into $dir/NAME, install the tag into
# $dir/NAME.root; the files there, one a line, in $dir/NAME.files.
install() {
	name=$1
	shift
	"$meson" setup "$dir/$name" "$src" -Dtests=false -Dman=false -Dsystemd=enabled "$@" \
		>"$dir/$name.log" 2>&1 || { cat "$dir/$name.log"; fail "$name: meson setup"; }
	DESTDIR="$dir/$name.root" "$meson" install -C "$dir/$name" --no-rebuild --tags systemd \
		>>"$dir/$name.log" 2>&1 || { cat "$dir/$name.log"; fail "$name: meson install"; }
	(cd "$dir/$name.root" && find . -type f | sed 's@^\.@@' | sort) >"$dir/$name.files"
}

# expect NAME UNITDIR SYSUSERSDIR: exactly the three files, there.
expect() {
	printf '%s\n' "$2/uffdd.service" "$2/uffdd.socket" "$3/uffdd.conf" | sort >"$dir/want"
	cmp -s "$dir/want" "$dir/$1.files" ||
		fail "$1: installed $(tr '\n' ' ' <"$dir/$1.files"), not $(tr '\n' ' ' <"$dir/want")"
}

x=$dir/prefix
install other --prefix "$x"
expect other "$x/lib/systemd/system" "$x/lib/sysusers.d"
grep -qx "ExecStart=$x/sbin/uffdd.*" "$dir/other.root$x/lib/systemd/system/uffdd.service" ||
	fail "uffdd.service does not start $x/sbin/uffdd: $(grep ExecStart "$dir/other.root$x/lib/systemd/system/uffdd.service")"

sysprefix=$(pkg-config --variable=prefix systemd)
install systemd --prefix "$sysprefix"
expect systemd "$(pkg-config --variable=systemdsystemunitdir systemd)" \
	"$(pkg-config --variable=sysusersdir systemd)"

install given --prefix "$x" -Dsystemdsystemunitdir=/etc/units-here -Dsysusersdir=/etc/users-here
expect given /etc/units-here /etc/users-here
rm -rf "$dir"
trap - EXIT
exec echo "ok"
