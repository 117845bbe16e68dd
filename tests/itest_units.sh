#!/usr/bin/env bash
# The systemd side, on an installed copy (make install PREFIX=<temp>, so
# that the units name binaries and man pages that exist):
#   - systemd-analyze verify: pagerd.socket and pagerd.service are valid,
#     ExecStart/ExecReload exist, every Documentation= man page exists;
#   - systemd-analyze security: the hardening stays (exposure <= 2.5);
#   - systemd-sysusers and systemd-tmpfiles, run into a scratch root, create
#     the pagerd user, the pager group and the directories with their
#     owners and modes.
# Run by tests/run.sh from the top of the tree; exit 77 = skipped.
set -euo pipefail

if ! command -v systemd-analyze >/dev/null; then
	echo "skipped: systemd-analyze is not installed (Debian: systemd)"
	exit 77
fi
top=$PWD
tmp=$(mktemp -d /tmp/pagerd-units.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# Its own build directory: the install paths are compiled in, and the
# tests' build/pagerd must keep the tree's (it once named this temporary
# directory after make check).
build=$tmp/build

echo "== make install PREFIX=$tmp/usr"
make -s -C "$top" BUILD="$build" SANITIZE="${SANITIZE:-}" PREFIX="$tmp/usr" \
	SYSCONFDIR="$tmp/etc" install
units=$tmp/usr/lib/systemd/system
grep -qx "ExecStart=$tmp/usr/sbin/pagerd" "$units/pagerd.service"

echo "== systemd-analyze verify"
out=$(MANPATH=$tmp/usr/share/man systemd-analyze verify \
	"$units/pagerd.socket" "$units/pagerd.service" 2>&1) || {
	echo "$out"
	exit 1
}
if [ -n "$out" ]; then # warnings count too
	echo "$out"
	exit 1
fi

echo "== systemd-analyze security"
if out=$(systemd-analyze security --offline=yes "$units/pagerd.service" 2>&1); then
	score=$(sed -n 's/.*Overall exposure level for pagerd.service: \([0-9.]*\).*/\1/p' <<<"$out")
	echo "exposure $score"
	awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.5) }' || {
		echo "$out"
		echo "exposure $score is above 2.5: hardening was lost"
		exit 1
	}
else
	echo "(systemd-analyze security --offline is not supported here: not checked)"
fi

echo "== systemd-sysusers and systemd-tmpfiles into a scratch root"
root=$tmp/root
mkdir -p "$root/etc"
systemd-sysusers --root="$root" "$tmp/usr/lib/sysusers.d/pagerd.conf"
uid=$(awk -F: '$1 == "pagerd" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "pagerd" { print $3 }' "$root/etc/group")
grep -q '^pager:' "$root/etc/group"
[ -n "$uid" ] && [ -n "$gid" ]
systemd-tmpfiles --root="$root" --create "$tmp/usr/lib/tmpfiles.d/pagerd.conf"
[ "$(stat -c '%a %u %g' "$root/run/pagerd")" = "755 $uid $gid" ]
[ "$(stat -c '%a %u %g' "$root/var/lib/pagerd")" = "700 $uid $gid" ]

# The udev rule needs udevadm verify (systemd 254+); its one line is
# checked for the fields udev needs.
grep -qx 'KERNEL=="userfaultfd", GROUP="pager", MODE="0660"' \
	"$tmp/usr/lib/udev/rules.d/60-userfaultfd.rules"
echo "units ok"
