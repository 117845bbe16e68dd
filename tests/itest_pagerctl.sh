#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# pagerctl against a real pagerd: status in both formats, regions and
# clients with no regions, set-limit and its errors, and the exit codes
# (0 ok, 1 daemon error, 2 usage).  Then, with a client holding a region
# mostly in swap (svc_client hold): every counter of common/counters.h in
# status (text and JSON), every REGION counter in regions --json, and the
# region's counts equal to the daemon's (the only region there was).
# Exit 0 pass, 1 fail, 77 skip.
#
#   PAGERD=build/pagerd PAGERCTL=build/pagerctl tests/itest_pagerctl.sh
set -u

PAGERD=${PAGERD:-build/pagerd}
PAGERCTL=${PAGERCTL:-build/pagerctl}
SVC_CLIENT=${SVC_CLIENT:-$(dirname "$PAGERCTL")/tests/svc_client}
src=$(cd "$(dirname "$0")/.." && pwd)

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

# The counters, read from their one definition (not from pagerctl): NAME SCOPE.
mapfile -t counters < <(sed -n 's/^[[:space:]]*X(\([a-z_]*\), *\([A-Z]*\),.*/\1 \2/p' \
	"$src/common/counters.h")
[ "${#counters[@]}" -ge 10 ] || { echo "FAIL: read ${#counters[@]} counters from common/counters.h"; exit 1; }
# ... and documented where users read what pagerctl prints.
for c in "${counters[@]}"; do
	for doc in man/pagerctl.8 README.md; do
		grep -qw -- "${c% *}" "$src/$doc" || fail "$doc does not describe counter '${c% *}'"
	done
done

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
	    "swap I/O errors    0"; do
	[[ $out == *"$want"* ]] || fail "status lacks '$want':"$'\n'"$out"
done
for c in "${counters[@]}"; do
	name=${c% *}
	grep -Eq "^  $name +0 (pages|faults|bytes)\$" <<<"$out" || fail "status lacks counter '$name':"$'\n'"$out"
done
expect 0 stats
[[ $out == *"memory limit       16.0 MiB"* ]] || fail "stats differs from status: $out"

expect 0 --json status
python3 -m json.tool <<<"$out" >/dev/null || fail "--json status is not JSON: $out"
[ "$(json_get memory_limit)" = 16777216 ] || fail "--json memory_limit: $out"
[ "$(json_get swap_total_pages)" = 65536 ] || fail "--json swap_total_pages: $out"
[ "$(json_get swap_used_pages)" = 0 ] || fail "--json swap_used_pages: $out"
[ "$(json_get pid)" = "$pid" ] || fail "--json pid is not pagerd's $pid: $out"
for c in "${counters[@]}"; do
	[ "$(json_get "${c% *}")" = 0 ] || fail "--json status: counter '${c% *}' missing or not 0: $out"
done

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

# A client with a 64 MiB region limited to 8 MiB, written in full (most of
# it evicted to swap), then read back (swap-ins).
check_with_region() {
	local line= checked= rc why s1 s2 regions

	if [ ! -x "$SVC_CLIENT" ]; then
		fail "no svc_client at $SVC_CLIENT (set SVC_CLIENT): counters with a region unchecked"
		return
	fi
	coproc CLIENT { PAGER_SOCKET="$dir/s" exec timeout 120 "$SVC_CLIENT" hold 2>"$dir/client.err"; }
	client_pid=$CLIENT_PID
	read -r -t 120 line <&"${CLIENT[0]}"
	if [[ $line != ready* ]]; then
		fail "svc_client hold: '$line' $(cat "$dir/client.err")"
		return
	fi
	echo v >&"${CLIENT[1]}"
	read -r -t 120 line <&"${CLIENT[0]}"
	[[ $line == "verified errors=0 "* ]] || fail "svc_client verify: '$line'"
	# Eviction may still be going to its low watermark: compare a region's
	# counts with the daemon's between two status replies that agree.
	for _ in $(seq 200); do
		ctl --json status; s1=$out
		ctl --json regions; regions=$out
		ctl --json status; s2=$out
		why=$(python3 - "$s1" "$regions" "$s2" "${counters[@]}" 2>&1 <<'PY'
import json, sys
s1, regions, s2 = (json.loads(a) for a in sys.argv[1:4])
counters = [c.split() for c in sys.argv[4:]]
missing = [n for n, _ in counters if n not in s1 or n not in s2]
if missing:
    print("status --json lacks %s" % ", ".join(missing)); sys.exit()
if any(s1[n] != s2[n] for n, _ in counters):
    print("busy"); sys.exit()
if len(regions) != 1:
    print("regions: %r" % regions); sys.exit()
r = regions[0]
for n, scope in counters:
    if scope == "REGION" and r.get(n) != s1[n]:
        print("regions --json: %s is %r, the daemon's %r" % (n, r.get(n), s1[n]))
    if scope != "REGION" and n in r:
        print("regions --json: %s is daemon-wide only" % n)
for n in ("faults_missing", "pages_zero_filled", "swap_outs", "evict_dirty", "swap_ins"):
    if not r.get(n):
        print("regions --json: %s is %r after writing and reading 64 MiB under 8 MiB" % (n, r.get(n)))
PY
)
		rc=$?
		[ "$why" = busy ] && [ "$rc" -eq 0 ] && { sleep 0.1; continue; }
		checked=1
		echo "daemon: $s1"$'\n'"regions: $regions"
		[ "$rc" -eq 0 ] || fail "the check itself failed ($rc): $why"
		[ "$rc" -ne 0 ] || [ -z "$why" ] || fail "$why"
		break
	done
	[ -n "$checked" ] || fail "pagerd's counters never stood still"
	echo q >&"${CLIENT[1]}"
	wait "$client_pid" || fail "svc_client hold exited $?: $(cat "$dir/client.err")"
}
check_with_region

kill -0 "$pid" 2>/dev/null || fail "pagerd died during the test"
if [ "$failures" -gt 0 ]; then
	echo "--- pagerd log ---"
	cat "$dir/log"
	echo "$failures check(s) failed"
	exit 1
fi
echo "all pagerctl checks passed"
