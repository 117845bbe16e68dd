#!/usr/bin/env bash
# Runs test binaries, each under a timeout, and prints one line per binary
# and a closing "N passed, N failed, N skipped" line.  Exit code 77 means
# skipped (the kernel or machine lacks what the test needs; it says why).
#
#   tests/run.sh BUILD_DIR TEST...
set -u
build=$1; shift
export PAGERD="$PWD/$build/pagerd" PAGERCTL="$PWD/$build/pagerctl"
# Generous: a loaded machine (or a sanitizer build) runs itest_snapshot and
# itest_rbd_swap.sh in 2-4 minutes; each test also has its own alarm.
timeout_s=${TEST_TIMEOUT:-600}
passed=0 failed=0 skipped=0 failures=()
for t in "$@"; do
	name=$(basename "$t")
	log="$build/tests/$name.log"
	start=${EPOCHREALTIME/./}
	timeout -k 10 "$timeout_s" "$t" >"$log" 2>&1
	rc=$?
	us=$(( ${EPOCHREALTIME/./} - start ))
	secs=$(printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10)))
	case $rc in
	0)   passed=$((passed + 1)); printf 'PASS  %-28s %6ss\n' "$name" "$secs" ;;
	77)  skipped=$((skipped + 1)); printf 'SKIP  %-28s %s\n' "$name" "$(tail -n 1 "$log")" ;;
	124) failed=$((failed + 1)); failures+=("$name"); printf 'FAIL  %-28s timed out after %ss\n' "$name" "$timeout_s" ;;
	*)   failed=$((failed + 1)); failures+=("$name"); printf 'FAIL  %-28s exit %d\n' "$name" "$rc" ;;
	esac
done
for f in "${failures[@]}"; do
	echo "---- $f ----"
	tail -n 40 "$build/tests/$f.log"
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
