#!/usr/bin/env bash
# make install into a temporary DESTDIR, then use what was installed the way
# a user would: build examples/hello.c with the installed libpager.pc
# (PKG_CONFIG_SYSROOT_DIR) and run it, served by the installed pagerd; check
# the soname links, the man pages (groff warnings), the shipped
# pagerd.conf, and that every setting is documented where users look.
# Run by tests/run.sh from the top of the tree; exit 77 = skipped.
set -euo pipefail

top=$PWD
build=$(realpath --relative-to="$top" "$(dirname "${PAGERD:-build/pagerd}")")
tmp=$(mktemp -d /tmp/pagerd-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/dest
prefix=/usr/local

echo "== make install DESTDIR=$dest"
make -s -C "$top" BUILD="$build" SANITIZE="${SANITIZE:-}" PREFIX="$prefix" \
	DESTDIR="$dest" install
p=$dest$prefix
for f in bin/pagerctl sbin/pagerd include/pager.h lib/libpager.a \
	lib/pkgconfig/libpager.pc share/man/man8/pagerd.8 share/man/man8/pagerctl.8 \
	share/man/man5/pagerd.conf.5 share/man/man3/libpager.3 \
	lib/systemd/system/pagerd.service lib/systemd/system/pagerd.socket \
	lib/tmpfiles.d/pagerd.conf lib/sysusers.d/pagerd.conf \
	lib/udev/rules.d/60-userfaultfd.rules; do
	[ -e "$p/$f" ] || { echo "not installed: $prefix/$f"; exit 1; }
done
[ -f "$dest/etc/pagerd/pagerd.conf" ]
[ "$(readlink "$p/lib/libpager.so")" = libpager.so.0 ]
[ "$(readlink "$p/lib/libpager.so.0")" = libpager.so.0.1.0 ]
readelf -d "$p/lib/libpager.so.0.1.0" | grep -q 'SONAME.*\[libpager.so.0\]'

echo "== a second install keeps an edited pagerd.conf"
echo "; edited" >>"$dest/etc/pagerd/pagerd.conf"
make -s -C "$top" BUILD="$build" SANITIZE="${SANITIZE:-}" PREFIX="$prefix" \
	DESTDIR="$dest" install >/dev/null
tail -n 1 "$dest/etc/pagerd/pagerd.conf" | grep -qx '; edited'

echo "== the shipped pagerd.conf is valid"
"$p/sbin/pagerd" --check-config --config "$dest/etc/pagerd/pagerd.conf" >"$tmp/effective"
grep -q '^swap_path *= /var/lib/pagerd/swap ' "$tmp/effective"

echo "== build examples/hello.c with pkg-config"
export PKG_CONFIG_PATH=$p/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
flags=$(pkg-config --cflags --libs libpager)
echo "pkg-config: $flags"
case $flags in *"-I$p/include"*"-L$p/lib"*) ;; *) echo "flags do not point into DESTDIR"; exit 1 ;; esac
san=()
[ "${SANITIZE:-}" = 1 ] && san=(-fsanitize=address,undefined)
# shellcheck disable=SC2086 # pkg-config output is words
${CC:-cc} "${san[@]}" -Wall -Werror "$top/examples/hello.c" $flags -o "$tmp/hello"

echo "== run it, served by the installed pagerd"
# No system daemon is asked for: $PAGERD names the installed binary for
# the private daemon libpager starts.
out=$(env -u PAGER_SOCKET LD_LIBRARY_PATH="$p/lib" PAGERD="$p/sbin/pagerd" "$tmp/hello")
echo "$out"
grep -q '^wrote and read 64 MiB through pagerd' <<<"$out"

echo "== man pages"
if command -v groff >/dev/null; then
	for m in "$p"/share/man/man*/*; do
		w=$(groff -man -ww -z "$m" 2>&1)
		[ -z "$w" ] || { echo "$m: $w"; exit 1; }
	done
else
	echo "(groff not installed: not linted)"
fi

echo "== every setting is documented"
keys=$("$p/sbin/pagerd" --check-config --config /dev/null | awk '/^[a-z_]+ +=/ { print $1 }')
[ "$(wc -w <<<"$keys")" -ge 20 ]
for k in $keys; do
	grep -qw "$k" "$p/share/man/man5/pagerd.conf.5" || { echo "$k: not in pagerd.conf(5)"; exit 1; }
	grep -q "^;\?$k =" "$dest/etc/pagerd/pagerd.conf" ||
		{ echo "$k: not in the shipped pagerd.conf"; exit 1; }
	grep -q "\`$k\`" "$top/README.md" || { echo "$k: not in README.md"; exit 1; }
done
echo "install ok"
