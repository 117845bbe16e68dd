#!/usr/bin/env bash
# pagerd under a real systemd: a minimal Debian 12 (debootstrap minbase,
# without procps) booted with systemd-nspawn, the build installed into it
# (make install PREFIX=/usr), pagerd.socket enabled, and a libpager client
# from the build (tests/svc_client.c) run inside it as root.  Checks:
#
#   socket activation  the socket is listening at boot; the first client
#                      starts pagerd.service
#   readiness          Type=notify: the service is active only once pagerd
#                      said READY=1
#   the pid            pager_get_info().daemon_pid is pagerd's MainPID, not
#                      systemd's (issue 14 item 8)
#   STATUS=            systemctl's status line counts the clients
#   references         pagerd runs as user pagerd, the client as root: Clock
#                      must still see the client's references (item 9)
#   restart            a client with most of its region in swap keeps every
#                      byte across systemctl restart (the fd store)
#   config error       a typo in pagerd.conf and a restart: pagerd runs on
#                      with the previous settings, says so in STATUS= and
#                      pagerctl status, and the client keeps every byte;
#                      reload of the fixed file clears it (item 10)
#   reload             systemctl reload works without procps (item 12)
#   journal errnos     %m under journald names the real error (item 11)
#
# The root file system is made once and cached, by package list, in
# $PAGERD_TEST_CACHE (default /var/cache/pagerd-tests); each run boots an
# overlay of it, in a mount namespace of its own, so nothing stays mounted.
# Needs root, systemd-nspawn and debootstrap (make check installs them as
# root: scripts/deps.sh --install) and the network for the first
# debootstrap; otherwise it skips, saying why.  Under SANITIZE=1 it skips:
# the container has no sanitizer runtime.
# Run by tests/run.sh from the top of the tree; exit 77 = skipped.
set -euo pipefail

skip() {
	echo "skipped: $*"
	exit 77
}

top=$PWD
build=$(realpath --relative-to="$top" "$(dirname "${PAGERD:-build/pagerd}")")
[ "${SANITIZE:-}" != 1 ] || skip "an ASan build cannot run in the container (no sanitizer runtime there)"
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, systemd-nspawn)"
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
	case ${DEPS_FLAGS:-} in
	*--install*)
		"$top/scripts/deps.sh" --install --only cmd:systemd-nspawn:systemd-container \
			cmd:debootstrap:debootstrap ||
			skip "systemd-nspawn and debootstrap could not be installed" ;;
	*)
		skip "systemd-nspawn and debootstrap are not installed (Debian: systemd-container debootstrap; make check installs them as root)" ;;
	esac
fi
[ -x "$build/tests/svc_client" ] || { echo "$build/tests/svc_client is not built (make check builds it)"; exit 1; }

# Everything mounted from here on goes with this process.
if [ -z "${PAGERD_ITEST_NS:-}" ]; then
	exec unshare --mount --propagation private env PAGERD_ITEST_NS=1 "$0" "$@"
fi

# ---- the root file system, made once ----------------------------------------

pkgs=systemd,dbus,liburing2,libevent-2.1-7,libsystemd0,libinih1
cache_dir=${PAGERD_TEST_CACHE:-/var/cache/pagerd-tests}
key=$(echo "bookworm minbase $pkgs machine-id 1" | sha256sum | cut -c1-12)
cache=$cache_dir/rootfs-bookworm-$key
if [ ! -d "$cache" ]; then
	mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
	[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' \
		/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
	[ -n "$mirror" ] || skip "no Debian mirror in /etc/apt/sources.list*"
	mkdir -p "$cache_dir"
	new=$cache.new.$$
	echo "== debootstrap bookworm from $mirror into $cache (once)"
	if ! debootstrap --variant=minbase --include="$pkgs" bookworm "$new" "$mirror" \
		>"$cache_dir/debootstrap.log" 2>&1; then
		tail -n 5 "$cache_dir/debootstrap.log"
		rm -rf "$new"
		skip "debootstrap failed (log: $cache_dir/debootstrap.log)"
	fi
	# A fixed machine id: journald keeps its files under it, and a booted
	# copy never runs the first-boot machinery.
	echo 5c4b3a29180716253443526170809aab >"$new/etc/machine-id"
	rm -f "$new"/var/cache/apt/archives/*.deb
	mv "$new" "$cache"
fi

# ---- this run's copy, booted --------------------------------------------------

tmp=$(mktemp -d /var/tmp/pagerd-systemd.XXXXXX)
root=$tmp/root
nspawn=
leader=
cleanup() {
	set +e
	# nspawn, then the container's init, which takes every process of the
	# container with it.
	[ -n "$nspawn" ] && kill -KILL "$nspawn" 2>/dev/null
	[ -n "$leader" ] && kill -KILL "$leader" 2>/dev/null
	[ -n "$nspawn" ] && wait "$nspawn" 2>/dev/null
	umount -l "$root" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 1" INT TERM
mkdir -p "$tmp/upper" "$tmp/work" "$root"
mount -t overlay overlay -o "lowerdir=$cache,upperdir=$tmp/upper,workdir=$tmp/work" "$root"
# nspawn wants a tmpfs there; /run here is not one.
mkdir -p /run/systemd/nspawn
mount -t tmpfs tmpfs /run/systemd/nspawn

echo "== make install DESTDIR=<container> PREFIX=/usr"
make -s -C "$top" BUILD="$build" PREFIX=/usr DESTDIR="$root" install >"$tmp/install.log"
install -m 755 "$build/tests/svc_client" "$root/usr/local/bin/svc_client"
mkdir -p "$root/etc/systemd/system/sockets.target.wants"
ln -s /usr/lib/systemd/system/pagerd.socket "$root/etc/systemd/system/sockets.target.wants/"
good_conf='[pagerd]
swap_path = /var/lib/pagerd/swap
swap_size = 256M
log_level = debug
'
printf '%s' "$good_conf" >"$root/etc/pagerd/pagerd.conf"
for k in /bin/kill /usr/bin/kill /bin/pkill /usr/bin/pkill; do
	[ ! -e "$root$k" ] || { echo "the container has $k: procps must not be there"; exit 1; }
done

echo "== boot"
systemd-nspawn --register=no --keep-unit --quiet --boot --directory="$root" \
	--machine=pagerd-itest </dev/null >"$tmp/console.log" 2>&1 &
nspawn=$!
# The container's init: a process named systemd whose parent is nspawn.
for _ in $(seq 1 3000); do
	for c in $(cat /proc/"$nspawn"/task/*/children 2>/dev/null); do
		[ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ] && leader=$c
	done
	[ -n "$leader" ] && break
	kill -0 "$nspawn" 2>/dev/null || { cat "$tmp/console.log"; echo "systemd-nspawn exited"; exit 1; }
	sleep 0.01
done
[ -n "$leader" ] || { cat "$tmp/console.log"; echo "no init in the container"; exit 1; }

inside() { # runs a command in the container
	nsenter -t "$leader" -a env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
# Until its manager listens, systemctl cannot connect (or finds it
# "offline"); then --wait waits for the boot to finish.
for _ in $(seq 1 1200); do
	state=$(timeout 120 nsenter -t "$leader" -a systemctl is-system-running --wait 2>&1 || true)
	case $state in running|degraded|maintenance|stopping) break ;; esac
	sleep 0.05
done
echo "system: $state"
case $state in
running|degraded) ;;
*) tail -n 30 "$tmp/console.log"; echo "the container did not boot"; exit 1 ;;
esac
[ "$state" = running ] || inside systemctl --failed --no-legend || true

# PAGERD_ITEST_KEEP_GOING=1: report every failed check, not just the first
# (later checks may then fail for the first one's sake).
failed=0
fail() {
	echo "FAIL: $*"
	failed=$((failed + 1))
	[ -n "${PAGERD_ITEST_KEEP_GOING:-}" ] && return 0
	echo "---- journal of pagerd ----"
	inside journalctl -b -u pagerd.service -u pagerd.socket --no-pager -o cat 2>/dev/null | tail -n 40 || true
	exit 1
}
show() { # UNIT PROPERTY
	inside systemctl show -p "$2" --value "$1"
}
journal() { # the service's journal since boot, in $tmp/journal
	inside journalctl -b -u pagerd.service --no-pager -o cat >"$tmp/journal"
}
logged() { # PATTERN: in the journal? journald writes it a moment after
	# pagerd logs it (under load, seconds): wait for the line, bounded.
	local i
	for i in $(seq 1 300); do
		journal
		grep -q -- "$1" "$tmp/journal" && return 0
		sleep 0.1
	done
	return 1
}

echo "== socket activation"
[ "$(inside systemctl is-active pagerd.socket)" = active ] || fail "pagerd.socket is not listening"
[ "$(inside systemctl is-active pagerd.service || true)" = inactive ] ||
	fail "pagerd.service runs before anybody connected"
out=$(inside svc_client pid) || fail "svc_client pid: $out"
echo "$out"

echo "== readiness and the pid"
[ "$(show pagerd.service ActiveState)/$(show pagerd.service SubState)" = active/running ] ||
	fail "pagerd.service is $(show pagerd.service ActiveState)/$(show pagerd.service SubState)"
main=$(show pagerd.service MainPID)
[ "$out" = "daemon_pid=$main" ] || fail "libpager says $out, systemd says MainPID=$main"

echo "== references under User=pagerd"
[ "$(show pagerd.service User)" = pagerd ] || fail "the unit does not run pagerd as user pagerd"
out=$(inside svc_client hot) || fail "svc_client hot: $out"
echo "$out"
hot=$(sed -n 's/.*hot_swapins=\(-\?[0-9]*\).*/\1/p' <<<"$out")
# Blind (FIFO) reads each of the 512 hot pages back about once a turn:
# some 1,500 swap-ins beyond the cold reads.
[ -n "$hot" ] && [ "$hot" -lt 750 ] || fail "Clock did not see the root client's references ($out)"

echo "== a client with its data in swap"
mkfifo "$tmp/cmd" "$tmp/out"
inside svc_client hold <"$tmp/cmd" >"$tmp/out" 2>&1 &
holder=$!
exec 7>"$tmp/cmd" 8<"$tmp/out"
ask() { # COMMAND EXPECT: one line from the holding client
	local line
	[ -z "$1" ] || echo "$1" >&7
	reply=
	read -r -t 60 -u 8 line || { fail "the client did not answer '$1'"; return 0; }
	echo "client: $line"
	[[ $line == $2* ]] || fail "the client said '$line', not '$2...'"
	reply=$line
}
ask "" "ready swapped="
[ "${reply#ready swapped=}" -gt 1000 ] 2>/dev/null || fail "too little of the region is in swap: $reply"

echo "== STATUS="
# pagerd refreshes it every 10 s (at READY=1, reloads and watchdog ticks
# too): wait for the one that counts this client.
for _ in $(seq 1 150); do
	status=$(show pagerd.service StatusText)
	[[ $status == "1 client, 1 region, "*" MiB resident"* ]] && break
	sleep 0.2
done
echo "STATUS=$status"
[[ $status == "1 client, 1 region, "*" MiB resident"* ]] || fail "STATUS=$status"

echo "== systemctl restart"
inside systemctl restart pagerd.service || fail "systemctl restart"
new=$(show pagerd.service MainPID)
[ "$new" != "$main" ] || fail "MainPID did not change"
ask v "verified errors=0 "
logged "client [0-9]* adopted" || fail "the restarted pagerd adopted no client"
[ "$(show pagerd.service StatusText | cut -d, -f1)" = "1 client" ] || fail "STATUS= after the restart"

echo "== systemctl reload, without procps"
reload_pagerd() {
	inside systemctl reload pagerd.service || fail "systemctl reload"
}
reload_pagerd
logged "SIGHUP: reloading" || fail "reload did not reach pagerd"
# A bad file at reload changes nothing, and says so.
printf '%smemory_limit = lots\n' "$good_conf" >"$root/etc/pagerd/pagerd.conf"
inside systemctl reload pagerd.service || true
[ "$(show pagerd.service ActiveState)" = active ] || fail "a bad reload stopped pagerd"
status=$(show pagerd.service StatusText)
[[ $status == *"1 error in"*"running with the settings in effect before"* ]] || fail "STATUS=$status"
ask v "verified errors=0 "
printf '%s' "$good_conf" >"$root/etc/pagerd/pagerd.conf"
reload_pagerd
status=$(show pagerd.service StatusText)
[[ $status != *error* ]] || fail "a good file is reloaded, yet STATUS=$status"

echo "== a typo in pagerd.conf, then systemctl restart"
printf '%smemroy_limit = 1G\n' "$good_conf" >"$root/etc/pagerd/pagerd.conf"
inside systemctl restart pagerd.service || fail "pagerd did not come back with a bad pagerd.conf"
status=$(show pagerd.service StatusText)
echo "STATUS=$status"
[[ $status == *"1 error in /etc/pagerd/pagerd.conf, running with the previous pagerd's settings"* ]] ||
	fail "STATUS= does not report the configuration error"
out=$(inside pagerctl status) || fail "pagerctl status: $out"
grep -q "configuration      1 error in the file" <<<"$out" || fail "pagerctl status does not say: $out"
logged "memroy_limit" || fail "the journal does not name the bad line"
ask v "verified errors=0 "
ask w "written gen=2"

# Fixed: a reload takes it, and the errors go.
printf '%s' "$good_conf" >"$root/etc/pagerd/pagerd.conf"
reload_pagerd
status=$(show pagerd.service StatusText)
[[ $status != *error* ]] || fail "the fixed file is reloaded, yet STATUS=$status"
ask v "verified errors=0 "

echo "== the journal's errnos"
# pagerd (user pagerd) may not open a root client's /proc/PID/pagemap: the
# debug line says why, with %m.  (Issue 14 item 11: log.c's isatty() used
# to turn every %m under journald into ENOTTY.)
journal
grep -m 1 "cannot open /proc/[0-9]*/pagemap" "$tmp/journal" || true
grep -q "cannot open /proc/[0-9]*/pagemap: Permission denied" "$tmp/journal" ||
	fail "%m under journald does not name the error"
! grep -q "Inappropriate ioctl for device" "$tmp/journal" || fail "%m under journald reads ENOTTY"

ask q "closed"
if [ "$failed" -eq 0 ]; then
	wait "$holder" || fail "the holding client failed"
fi
[ "$failed" -eq 0 ] || { echo "$failed checks failed"; exit 1; }
echo "systemd ok"
