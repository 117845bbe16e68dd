#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# pagerctl against a real pagerd: status in both formats, regions and
# clients with no regions, set-limit and its errors, and the exit codes
# (0 ok, 1 daemon error, 2 usage).  Exit 0 pass, 1 fail, 77 skip.
#
#   PAGERD=build/pagerd PAGERCTL=build/pagerctl tests/itest_pagerctl.sh
set -u

PAGERD=${PAGERD:-build/pagerd}
PAGERCTL=${PAGERCTL:-build/pagerctl}

skip() { echo "SKIP: $*"; exit 77; }
[ -x "$PAGERD" ] || skip "no pagerd at $PAGERD (set PAGERD)"
[ -x "$PAGERCTL" ] || skip "no pagerctl at $PAGERCTL (set PAGERCTL)"
command -v python3 >/dev/null || skip "python3 is needed to check the JSON"
command -v timeout >/dev/null || skip "timeout (coreutils) is needed"

dir=$(mktemp -d /var/tmp/itest_pagerctl.XXXXXX) || skip "cannot create a directory under /var/tmp"
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

failures=0
fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

# ctl ARGS...: runs pagerctl on our socket; leaves $out, $err and $rc.
ctl() {
	out=$(timeout 10 "$PAGERCTL" --socket "$dir/s" "$@" 2>"$dir/err")
	rc=$?
	err=$(cat "$dir/err")
}

# expect RC ARGS...: runs pagerctl and checks its exit code.
expect() {
	local want=$1; shift
	ctl "$@"
	[ "$rc" -eq "$want" ] || fail "pagerctl $* exited $rc, expected $want: $err"
}

# json_get KEY: a key of the JSON object in $out, or nothing if invalid.
json_get() {
	python3 -c 'import json, sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1" <<<"$out" 2>/dev/null
}

# Usage errors come before any connection, so no daemon is needed for them.
expect 2
expect 2 bogus-command
expect 2 regions extra
expect 2 set-limit
expect 2 set-limit global
expect 2 set-limit global 8M extra
expect 2 set-limit galaxy 8M
expect 2 set-limit region 8M
expect 2 set-limit region 0 1M
expect 2 set-limit region x 1M
expect 2 set-limit global 12X
expect 2 set-limit global 100   # less than a page
expect 2 --no-such-option status
expect 1 status                 # nobody listens yet
[[ $err == *"cannot talk to pagerd"* ]] || fail "no daemon: unexpected message: $err"

"$PAGERD" --socket "$dir/s" --memory-limit 16M --swap "$dir/swap" \
	--swap-size 256M >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	[ -S "$dir/s" ] && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if [ ! -S "$dir/s" ]; then
	cat "$dir/log"
	echo "FAIL: pagerd did not create its socket"
	exit 1
fi

expect 0 status
for want in "memory limit       16.0 MiB" "0 of 65536 pages used (0 B of 256.0 MiB)" \
	    "swap-ins/outs      0 in, 0 out" "0 zero, 0 clean, 0 dirty, 0 aborted" \
	    "poisoned pages     0" "swap I/O errors    0"; do
	[[ $out == *"$want"* ]] || fail "status lacks '$want':"$'\n'"$out"
done
expect 0 stats
[[ $out == *"memory limit       16.0 MiB"* ]] || fail "stats differs from status: $out"

expect 0 --json status
python3 -m json.tool <<<"$out" >/dev/null || fail "--json status is not JSON: $out"
[ "$(json_get memory_limit)" = 16777216 ] || fail "--json memory_limit: $out"
[ "$(json_get swap_total_pages)" = 65536 ] || fail "--json swap_total_pages: $out"
[ "$(json_get swap_used_pages)" = 0 ] || fail "--json swap_used_pages: $out"
[ "$(json_get pid)" = "$pid" ] || fail "--json pid is not pagerd's $pid: $out"

expect 0 regions
[ "$out" = "no regions" ] || fail "regions with none: '$out'"
expect 0 --json regions
[ "$out" = "[]" ] || fail "--json regions with none: '$out'"
expect 0 clients
[ "$out" = "no clients with regions" ] || fail "clients with none: '$out'"
expect 0 --json clients
[ "$out" = "[]" ] || fail "--json clients with none: '$out'"

expect 0 set-limit global 8M
[ -z "$out" ] || fail "set-limit printed '$out'"
expect 0 status
[[ $out == *"memory limit       8.0 MiB"* ]] || fail "limit not 8 MiB after set-limit:"$'\n'"$out"
expect 0 --json status
[ "$(json_get memory_limit)" = 8388608 ] || fail "--json memory_limit after set-limit: $out"

expect 0 set-limit global none
expect 0 status
[[ $out == *"memory limit       none"* ]] || fail "limit not cleared:"$'\n'"$out"

expect 1 set-limit region 999 1M
[[ $err == *"no such region 999"* ]] || fail "set-limit region 999: unexpected message: $err"
expect 1 set-limit client 999 1M
[[ $err == *"no such client 999"* ]] || fail "set-limit client 999: unexpected message: $err"

kill -0 "$pid" 2>/dev/null || fail "pagerd died during the test"
if [ "$failures" -gt 0 ]; then
	echo "--- pagerd log ---"
	cat "$dir/log"
	echo "$failures check(s) failed"
	exit 1
fi
echo "all pagerctl checks passed"
