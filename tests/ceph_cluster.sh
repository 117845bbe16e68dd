#!/usr/bin/env bash
# A throw-away single-node Ceph cluster for the tests: one mon, one OSD on
# memstore (RAM, nothing on disk but a few small files), no auth, pools of
# size 1, and paxos intervals of 10 ms (at the default each map change,
# such as a pool creation, waits about a second).  No mgr: RADOS and RBD
# I/O do not need one.  Everything lives under one directory, each daemon
# with its own -c CONF -i ID, pid file and data dir; `stop` ends them by
# their pid, never by name (other clusters may run on the same machine).
#
#   tests/ceph_cluster.sh start DIR [POOL...]   prints CEPH_CONF=DIR/ceph.conf
#   tests/ceph_cluster.sh stop DIR
#   tests/ceph_cluster.sh kill-osd DIR          SIGKILL the OSD (a crash)
#   tests/ceph_cluster.sh start-osd DIR         start it again
#   tests/ceph_cluster.sh check                 exit 0 if the binaries exist
#
# CEPH_MEMSTORE_BYTES (default 1 GiB) is the OSD's RAM store: what the
# cluster holds at most (it refuses writes near full).
#
# start waits for a real `rados put` to succeed in every pool (readiness as
# a client sees it, not PG states); it fails (exit 1, the reason on stderr
# and the logs in DIR) when the cluster does not come up within
# CEPH_START_TIMEOUT seconds (default 60), and exits 77 when the packages
# are missing, so a test can skip and say why.
set -u

cmd=${1:-}; dir=${2:-}
die() { echo "ceph_cluster.sh: $*" >&2; exit 1; }

check() {
	local c
	for c in ceph-mon ceph-osd monmaptool ceph rados uuidgen; do
		command -v "$c" >/dev/null 2>&1 ||
			{ echo "ceph_cluster.sh: $c not installed (apt-get install ceph-mon ceph-osd)" >&2; return 77; }
	done
}

# The pid in a pid file, if that process is alive.
pid_of() { # NAME
	local p
	[ -s "$dir/$1.pid" ] || return 1
	p=$(cat "$dir/$1.pid") && kill -0 "$p" 2>/dev/null && echo "$p"
}

stop_one() { # NAME SIGNAL
	local p i
	p=$(pid_of "$1") || return 0
	kill -"$2" "$p" 2>/dev/null
	# A killed daemon can linger a moment; wait for it to be gone, so
	# the next start finds its port and data free.
	for ((i = 0; i < 200; i++)); do
		kill -0 "$p" 2>/dev/null || break
		[ -r "/proc/$p/stat" ] && [ "$(cut -d' ' -f3 "/proc/$p/stat")" = Z ] && break
		sleep 0.05
	done
	rm -f "$dir/$1.pid"
}

ceph_() { timeout 60 ceph -c "$dir/ceph.conf" "$@"; }

# Pacific's OSD sometimes sends its first monitor command before it has
# the monitor map (the monitor then answers "wrong fsid" to an fsid of
# zeros) and exits at once: that start is simply tried again.
start_osd() {
	local try
	for ((try = 0; try < 5; try++)); do
		ceph-osd -c "$dir/ceph.conf" -i 0 2>>"$dir/osd.0.log" && return 0
		stop_one osd.0 KILL
	done
	die "ceph-osd failed: see $dir/osd.0.log"
}

wait_ready() { # POOL...
	local p t0=$SECONDS limit=${CEPH_START_TIMEOUT:-60}
	for p in "$@"; do
		until timeout 10 rados -c "$dir/ceph.conf" -p "$p" put ready "$dir/ceph.conf" 2>/dev/null; do
			((SECONDS - t0 < limit)) || die "pool $p not writable after ${limit}s: see $dir/*.log"
			sleep 0.1
		done
	done
}

start() {
	local fsid port uuid id pools=("$@") p try
	[ ${#pools[@]} -gt 0 ] || pools=(rbd)
	mkdir -p "$dir/osd.0" || die "cannot create $dir"
	fsid=$(uuidgen)
	# A free port: the mon fails to bind a taken one, and then we try
	# another (other clusters may run here at the same time).
	for ((try = 0; try < 10; try++)); do
		port=$((20000 + RANDOM % 30000))
		cat >"$dir/ceph.conf" <<-EOF
		[global]
		fsid = $fsid
		mon_host = v1:127.0.0.1:$port
		ms_bind_msgr2 = false
		auth_cluster_required = none
		auth_service_required = none
		auth_client_required = none
		osd_pool_default_size = 1
		osd_pool_default_min_size = 1
		mon_allow_pool_size_one = true
		osd_crush_chooseleaf_type = 0
		paxos_propose_interval = 0.01
		paxos_min_wait = 0.01
		osd_objectstore = memstore
		memstore_device_bytes = ${CEPH_MEMSTORE_BYTES:-1073741824}
		osd_pool_default_pg_autoscale_mode = off
		mon_warn_on_pool_no_redundancy = false
		run_dir = $dir
		admin_socket = $dir/\$name.asok
		pid_file = $dir/\$name.pid
		log_file = $dir/\$name.log
		mon_data = $dir/\$name
		osd_data = $dir/\$name
		keyring = $dir/keyring
		EOF
		rm -rf "$dir/mon.a"
		monmaptool --create --addv a "[v1:127.0.0.1:$port]" --fsid "$fsid" \
			"$dir/monmap" >/dev/null || die "monmaptool failed"
		ceph-mon -c "$dir/ceph.conf" -i a --mkfs --monmap "$dir/monmap" ||
			die "ceph-mon --mkfs failed: see $dir/mon.a.log"
		ceph-mon -c "$dir/ceph.conf" -i a 2>>"$dir/mon.a.log" && pid_of mon.a >/dev/null && break
	done
	pid_of mon.a >/dev/null || die "ceph-mon did not start: see $dir/mon.a.log"
	uuid=$(uuidgen)
	id=$(ceph_ osd new "$uuid") || die "ceph osd new failed"
	[ "$id" = 0 ] || die "unexpected OSD id $id"
	ceph-osd -c "$dir/ceph.conf" -i 0 --mkfs --osd-uuid "$uuid" 2>>"$dir/osd.0.log" ||
		die "ceph-osd --mkfs failed: see $dir/osd.0.log"
	start_osd
	for p in "${pools[@]}"; do
		# Retried: the command can fail on the same race as the OSD.
		for ((try = 0; try < 5; try++)); do
			ceph_ osd pool create "$p" 8 >"$dir/pool.log" 2>&1 && break
		done
		[ "$try" -lt 5 ] || die "cannot create pool $p: $(cat "$dir/pool.log")"
		ceph_ osd pool application enable "$p" rbd >/dev/null 2>&1
	done
	wait_ready "${pools[@]}"
	echo "CEPH_CONF=$dir/ceph.conf"
}

case $cmd in
check)     check ;;
start)     [ -n "$dir" ] || die "usage: $0 start DIR [POOL...]"
	   check || exit 77
	   shift 2; start "$@" ;;
stop)      [ -n "$dir" ] || die "usage: $0 stop DIR"
	   stop_one osd.0 KILL; stop_one mon.a KILL ;;
kill-osd)  stop_one osd.0 KILL ;;
start-osd) start_osd; wait_ready rbd ;;
*)         die "usage: $0 start|stop|kill-osd|start-osd|check DIR" ;;
esac
