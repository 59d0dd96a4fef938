# SPDX-License-Identifier: MIT
# Sourced by scripts/test and scripts/demo: install the Debian packages the
# build needs, only those that are absent, without asking anything.
# libclang-rt-dev: libFuzzer and the sanitizers' runtimes for clang (only
# recommended by clang, and recommendations are not installed).
# clang-format: scripts/test checks every C file against .clang-format.
packages=(meson ninja-build gcc pkg-config check liburing-dev libibverbs-dev
	  libsystemd-dev libprotobuf-c-dev protobuf-c-compiler libjson-c-dev valgrind
	  clang libclang-rt-dev clang-format systemd)

install_missing() {
	local missing=() p
	for p in "${packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "installing: ${missing[*]}"
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" </dev/null
}

# Configure (or reconfigure) a build directory and build it.
build() {
	local dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson configure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir" >/dev/null
}
