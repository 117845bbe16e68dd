#!/usr/bin/env bash
# Runs every benchmark binary in BUILD_DIR/bench (or only the named ones),
# each under a timeout, printing its output as it goes, then one summary
# line.  Exit code 77 from a benchmark means skipped (it says why).
# `make bench` calls this after building the benchmarks.
#
#   bench/run.sh [BUILD_DIR] [BENCH...]     BUILD_DIR defaults to build
#
# BENCH_TIMEOUT (seconds, default 1800) bounds each benchmark: a fault that
# pagerd never answers would otherwise hang it forever.
#
# Each benchmark runs with the arguments in $BENCH_ARGS_NAME if that is set
# (e.g. BENCH_ARGS_scale="-c 1,2,4,8,16" for the full scaling run), else
# with its defaults below (scale's full run takes ten minutes or so).
# BENCH_PAGERD_ARGS adds words to the command line of the pagerd that scale
# starts (e.g. a setting under test).
set -u
build=${1:-build}
[ $# -gt 0 ] && shift
if [ ! -d "$build/bench" ]; then
	echo "bench/run.sh: no benchmarks in $build/bench (run make bench)" >&2
	exit 1
fi
build=$(cd "$build" && pwd)
# A private pagerd is started from $PAGERD: use the one just built.
export PAGERD="${PAGERD:-$build/pagerd}" PAGERCTL="${PAGERCTL:-$build/pagerctl}"
timeout_s=${BENCH_TIMEOUT:-1800}

default_args() {
	case $1 in
	# Short under make bench; run them alone for the full size.
	scale | snapshot_rbd) echo --quick ;;
	esac
}

if [ $# -gt 0 ]; then
	benches=()
	for n in "$@"; do benches+=("$build/bench/$(basename "$n")"); done
else
	benches=("$build"/bench/*)
fi

ran=0 failed=0 skipped=0
for b in "${benches[@]}"; do
	if [ ! -f "$b" ] || [ ! -x "$b" ]; then
		# A name asked for and missing is a failure; a stray file is not.
		if [ $# -gt 0 ]; then
			echo "no benchmark $b"
			failed=$((failed + 1))
		fi
		continue
	fi
	name=$(basename "$b")
	echo "==== $name ===="
	var=BENCH_ARGS_$name
	if [ -n "${!var+set}" ]; then
		read -r -a args <<< "${!var}"
	else
		read -r -a args <<< "$(default_args "$name")"
	fi
	timeout -k 10 "$timeout_s" "$b" "${args[@]}"
	rc=$?
	case $rc in
	0)   ran=$((ran + 1)) ;;
	77)  skipped=$((skipped + 1)); echo "---- $name: skipped" ;;
	124) failed=$((failed + 1)); echo "---- $name: timed out after ${timeout_s}s" ;;
	*)   failed=$((failed + 1)); echo "---- $name: failed, exit $rc" ;;
	esac
	echo
done
echo "$ran benchmarks ran, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
