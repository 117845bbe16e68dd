#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The swap on a Ceph RBD image (swap_path = rbd:POOL/IMAGE): the core cases
# of itest_swap and a short torture run, against a real single-node cluster
# this script brings up (tests/ceph_cluster.sh: one mon, one memstore OSD,
# about 2 s) and stops by pid at the end.
#
#   itest_swap  pressure_integrity two_clients kill_during_writeback
#               discard_frees set_limit_runtime readahead_marker_evicted
#               stale_missing_keeps_copy clock_keeps_hot_set
#               (not injected_errors: its corrupt slot is written through a
#               file; not the cases with a swap of their own or pagerd as
#               another user, who cannot read the cluster's conf here)
#   itest_restart  restart_named_swap (SIGTERM hand-over and a crash through
#               the fd store: every byte read back from the image) and
#               restart_rbd_other_image (the configuration names another
#               image: the stored slot table is refused, loudly) and
#               restart_rbd_restore (a restore from an RBD image goes on
#               after a hand-over: the successor opens it again by name)
#   torture     20 s, the classes that hold on an RBD swap, restart
#               included (no inject: see above)
#
# Skips, saying why, when ceph-mon/ceph-osd are not installed and cannot be
# (make check installs them as root) or the cluster does not come up.
# Run by tests/run.sh from the top of the tree; exit 77 = skipped.
set -u

skip() {
	echo "skipped: $*"
	exit 77
}

top=$PWD
PAGERD=${PAGERD:-build/pagerd}
build=$(dirname "$PAGERD")
if ! tests/ceph_cluster.sh check 2>/dev/null; then
	case ${DEPS_FLAGS:-} in
	*--install*)
		"$top/scripts/deps.sh" --install --only cmd:ceph-mon:ceph-mon \
			cmd:ceph-osd:ceph-osd cmd:rados:ceph-common cmd:uuidgen:uuid-runtime ||
			skip "ceph-mon and ceph-osd could not be installed" ;;
	*)
		skip "ceph-mon and ceph-osd are not installed (Debian: ceph-mon ceph-osd; make check installs them as root)" ;;
	esac
fi

dir=$(mktemp -d /tmp/pagerd-ceph.XXXXXX) || exit 1
trap 'tests/ceph_cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
if ! tests/ceph_cluster.sh start "$dir" rbd >/dev/null 2>"$dir/start.err"; then
	tail -n 20 "$dir"/*.log >&2
	skip "the test cluster did not come up: $(tail -n 1 "$dir/start.err")"
fi
export CEPH_CONF=$dir/ceph.conf ITEST_SWAP_RBD=rbd PAGERD

failed=0
for t in pressure_integrity two_clients kill_during_writeback discard_frees \
	 set_limit_runtime readahead_marker_evicted stale_missing_keeps_copy \
	 clock_keeps_hot_set; do
	if ITEST_FILTER=$t "$build/tests/itest_swap"; then
		echo "PASS itest_swap $t on rbd"
	else
		echo "FAIL itest_swap $t on rbd"
		failed=1
	fi
done

for t in restart_named_swap restart_rbd_other_image restart_rbd_restore; do
	if ITEST_FILTER=$t "$build/tests/itest_restart"; then
		echo "PASS itest_restart $t on rbd"
	else
		echo "FAIL itest_restart $t on rbd"
		failed=1
	fi
done

export TORTURE_SWAP=rbd:rbd/torture TORTURE_SEED=${TORTURE_SEED:-20261204}
export TORTURE_SECONDS=${TORTURE_SECONDS:-20} TORTURE_HANG=${TORTURE_HANG:-60}
export TORTURE_OPS=${TORTURE_OPS:-write,read,rmw,discard,recreate,kill,stall,limit,snapshot,restore,restart}
if "$build/tests/torture"; then
	echo "PASS torture on rbd"
else
	echo "FAIL torture on rbd"
	failed=1
fi
exit $failed
