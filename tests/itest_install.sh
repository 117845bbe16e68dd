#!/usr/bin/env bash
# make install into a temporary DESTDIR, then use what was installed the way
# a user would: build examples/hello.c with the installed libpager.pc
# (PKG_CONFIG_SYSROOT_DIR) and run it, served by the installed pagerd; check
# the soname links, the man pages (groff warnings), the shipped
# pagerd.conf, and that every setting is documented where users look.
# Packaging: the prefix is compiled in (a build made for another prefix is
# rebuilt), CPPFLAGS reach the compiler, libpager.a has no global symbol
# but the API (and links on its own), no version node is newer than the
# library, and make uninstall leaves nothing behind.
# Run by tests/run.sh from the top of the tree; exit 77 = skipped.
set -euo pipefail

top=$PWD
build=$(realpath --relative-to="$top" "$(dirname "${PAGERD:-build/pagerd}")")
tmp=$(mktemp -d /tmp/pagerd-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/dest
# Not the default (/usr/local): the build must be redone for it.
prefix=/opt/pagerd-itest
version=$(sed -n 's/^VERSION *:= *//p' "$top/Makefile")

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
[ "$(readlink "$p/lib/libpager.so.0")" = "libpager.so.$version" ]
readelf -d "$p/lib/libpager.so.$version" | grep -q 'SONAME.*\[libpager.so.0\]'

echo "== the prefix is compiled in"
grep -q "$prefix/sbin/pagerd" "$p/lib/libpager.so.$version" ||
	{ echo "libpager does not look for pagerd in $prefix/sbin: not rebuilt for PREFIX"; exit 1; }

echo "== CPPFLAGS reach the compiler"
line=$(make -s -n -C "$top" BUILD="$tmp/b" CPPFLAGS=-D_FORTIFY_SOURCE=2 "$tmp/b/obj/daemon/main.o" |
	grep -- ' -c daemon/main.c') || true
case $line in *-D_FORTIFY_SOURCE=2*) ;; *) echo "not in the compile line: $line"; exit 1 ;; esac

echo "== version nodes"
nodes=$(readelf -V "$p/lib/libpager.so.$version" | sed -n 's/.*Name: \(LIBPAGER_[0-9.]*\).*/\1/p' | sort -u)
echo "$nodes"
for n in $nodes; do
	v=${n#LIBPAGER_}
	[ "$(printf '%s\n%s\n' "$v" "${version%.*}" | sort -V | tail -n 1)" = "${version%.*}" ] ||
		{ echo "libpager $version exports $n, a node of a later release"; exit 1; }
done

echo "== libpager.a: the API, nothing else"
nm -g --defined-only "$p/lib/libpager.a" | awk 'NF == 3 { print $3 }' | sort >"$tmp/static"
nm -D --defined-only "$p/lib/libpager.so.$version" | awk 'NF == 3 { print $3 }' |
	grep -v '^LIBPAGER_' | sed 's/@.*//' | sort >"$tmp/shared"
if ! cmp -s "$tmp/static" "$tmp/shared"; then
	diff "$tmp/shared" "$tmp/static" || true
	echo "libpager.a's global symbols differ from libpager.so's exports"
	exit 1
fi

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

echo "== and linked with libpager.a"
${CC:-cc} "${san[@]}" -Wall -Werror -I"$p/include" "$top/examples/hello.c" \
	"$p/lib/libpager.a" -lpthread -o "$tmp/hello-static"
! readelf -d "$tmp/hello-static" | grep -q 'NEEDED.*libpager' ||
	{ echo "hello-static needs libpager.so"; exit 1; }
out=$(env -u PAGER_SOCKET PAGERD="$p/sbin/pagerd" "$tmp/hello-static")
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
echo "== make uninstall leaves nothing"
make -s -C "$top" BUILD="$build" SANITIZE="${SANITIZE:-}" PREFIX="$prefix" \
	DESTDIR="$dest" uninstall >"$tmp/uninstall.log"
grep -q "keeping $dest/etc/pagerd/pagerd.conf: it was edited" "$tmp/uninstall.log"
left=$(find "$dest" -mindepth 1 -not -type d)
[ "$left" = "$dest/etc/pagerd/pagerd.conf" ] ||
	{ echo "left after make uninstall (only the edited pagerd.conf should be):"; echo "$left"; exit 1; }
rm -r "$dest/etc"
make -s -C "$top" BUILD="$build" SANITIZE="${SANITIZE:-}" PREFIX="$prefix" \
	DESTDIR="$dest" install >/dev/null
make -s -C "$top" BUILD="$build" SANITIZE="${SANITIZE:-}" PREFIX="$prefix" \
	DESTDIR="$dest" uninstall >/dev/null
left=$(find "$dest" -mindepth 1)
[ -z "$left" ] || { echo "left after make uninstall of an unedited install:"; echo "$left"; exit 1; }
echo "install ok"
