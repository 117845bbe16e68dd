#!/usr/bin/env bash
# Checks that what the build needs is installed.  Silent and fast when it
# is: make runs this before every build.  Otherwise, with --install, as
# root with apt-get, installs what is missing (no prompts, no stdin: fine
# under CI); without it, or as anyone else, says which packages are missing
# and what to run, and fails.  Only make check and make demo (the README's
# two commands) pass --install: a plain make, or make install, never runs
# apt-get.
#
#   scripts/deps.sh [--install] [--only] [MODULE:PACKAGE | cmd:COMMAND:PACKAGE]...
#
# Each argument adds a requirement (for optional features): a pkg-config
# module or a command, and the Debian package that provides it, or
# deb:PACKAGE for a package without either (librbd-dev has no .pc file).  --only
# checks those alone, not the build's.
set -u

install=false only=false
while [ $# -gt 0 ]; do
	case $1 in
	--install) install=true ;;
	--only)    only=true ;;
	*)         break ;;
	esac
	shift
done

need=("$@")
$only || need+=(
	liburing:liburing-dev
	libevent:libevent-dev
	cmocka:libcmocka-dev
	libsystemd:libsystemd-dev
	inih:libinih-dev
	deb:librbd-dev
	liblz4:liblz4-dev
	libzstd:libzstd-dev
	cmd:cc:gcc
	cmd:make:make
	cmd:pkg-config:pkg-config
)

have() { # REQUIREMENT
	case $1 in
	cmd:cc:*) command -v cc || command -v gcc ;;
	cmd:*)    local c=${1#cmd:}; command -v "${c%%:*}" ;;
	deb:*)    dpkg-query -W -f='${Status}' "${1#deb:}" | grep -q ' installed$' ;;
	*)        if command -v pkg-config; then
			  pkg-config --exists "${1%%:*}"
		  else # cannot ask yet: is at least the package there?
			  dpkg-query -W -f='${Status}' "${1##*:}" | grep -q ' installed$'
		  fi ;;
	esac >/dev/null 2>&1
}

missing() { # prints the packages to install, one per line
	local r
	for r in "${need[@]}"; do
		have "$r" || echo "${r##*:}"
	done | sort -u
}

apt_install() {
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		-o DPkg::Lock::Timeout=300 "$@" </dev/null >&2
}

pkgs=$(missing | paste -sd ' ')
[ -z "$pkgs" ] && exit 0

if $install && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
	echo "deps.sh: installing $pkgs" >&2
	# A fresh machine has no package lists yet: update only if needed.
	# shellcheck disable=SC2086 # one word per package
	apt_install $pkgs 2>/dev/null ||
		{ apt-get update -qq </dev/null >&2 && apt_install $pkgs; }
	pkgs=$(missing | paste -sd ' ')
	[ -z "$pkgs" ] && exit 0
	echo "deps.sh: still missing after apt-get install: $pkgs" >&2
	exit 1
fi

echo "deps.sh: missing packages: $pkgs" >&2
if [ "$(id -u)" -eq 0 ]; then
	echo "deps.sh: install them with: apt-get install $pkgs (make check and make demo do)" >&2
else
	echo "deps.sh: install them with: sudo apt-get install $pkgs" >&2
fi
exit 1
