#!/usr/bin/env bash
# bench/restore.sh - time from `snapctl restore` to a running guest, beside
# QEMU loading its own raw stream of the same instant from a file.
#
# One churning guest with a disk is stopped; QEMU's own raw stream of the
# stopped guest goes to a file (vm_save_raw); a second QEMU loads it and
# stays paused, and `snapctl checkpoint --pause` of that one goes to the
# store (the same memory: streamdigest checks).  Each run then starts,
# alternating which goes first:
#   QEMU  a fresh QEMU (-incoming defer) on a new overlay over the
#         checkpoint's disk file (made beforehand, as a script would);
#         bench/qmpseq.py load: connect, migrate-incoming from the file
#         (file: URI; exec:cat on 7.2), wait for "completed", cont.
#   snapctl  a fresh QEMU (-incoming defer) on the checkpoint's disk file
#         (manifest disks[].file); `snapctl restore NAME` (its own overlay,
#         the image's stream over a fd, cont).
#   lazy  the same with `snapctl restore --lazy NAME` (postcopy: the guest
#         runs once its device state is in; snapctl returns when QEMU has
#         all the memory, timed too).
# Both are timed from the wall clock just before the tool starts (the
# Python process for QEMU is already running; its QMP connection is inside)
# to QEMU's RESUME event timestamp on a third monitor.  Each restored guest
# must go on printing CHURN TICK lines of the same run.  Knobs: BENCH_QEMU
# (10.0), BENCH_CHURN, BENCH_RUNS (7).  Runs on the 2-core CI machine are
# bimodal (QEMU's own load of its raw file took 0.08 s in some runs and
# 0.6 s in others, the machine otherwise quiet), so the verdicts use the
# medians of several runs, and the best run is printed too.
. "$(dirname "$0")/lib.sh"
TESTDIR=$BENCHDIR	# vm.sh keeps its files in BENCHDIR
. "$TOP/tests/lib/vm.sh"
trap 'vm_stop_all; bench_cleanup' EXIT

QV=${BENCH_QEMU:-10.0}
vm_have_qemu "$QV" || QV=7.2
CHURN=${BENCH_CHURN:-churn.hot=25 churn.rate=20000 churn.verify=0 churn.disk=/dev/vda churn.diskrate=50}
RUNS=${BENCH_RUNS:-7}
JSONQ=$TOP/build/helper-jsonq
QMPSEQ=$TOP/bench/qmpseq.py
[ -x "$JSONQ" ] && [ -x "$TOP/build/helper-streamdigest" ] || die "build the helpers first (make helpers)"
command -v python3 >/dev/null || die "needs python3 (bench/qmpseq.py)"
"$SNAPCTL" help restore >/dev/null 2>&1 || die "this snapctl has no restore command"
need_space 2048

if [ "$QV" = 7.2 ]; then rawuri() { echo "exec:cat '$1'"; }; else rawuri() { echo "file:$1"; }; fi

# resume_ts EVENTS: QEMU's timestamp (s) of the first RESUME in EVENTS,
# waiting up to 30 s for it.
resume_ts() {
	local line
	line=$(vm_wait_event "$1" '"event": *"RESUME"' 30) || return 1
	awk '{ match($0, /"seconds": *[0-9]+, *"microseconds": *[0-9]+/)
		s = substr($0, RSTART, RLENGTH); gsub(/[^0-9,]/, "", s)
		split(s, a, ","); printf "%.6f", a[1] + a[2] / 1e6 }' <<<"$line"
}

# check_alive VM FROM: the restored guest prints a TICK of run $RUN_ID
# after serial line FROM (it continues, it did not reboot).
check_alive() {
	local line
	line=$(vm_wait_serial "$1" '^CHURN TICK' 60 "$2") || die "$1: no CHURN TICK after the restore"
	[[ $line == *"run=$RUN_ID"* ]] || die "$1: the guest rebooted ($line; expected run=$RUN_ID)"
}

# A restored guest's serial log starts empty: any TICK is after the load.
start_target() {	# start_target VM DISK
	vm_start "$1" --qemu "$QV" --disk "$2" --incoming --append "$CHURN" || die "vm_start $1 failed"
	vm_watch_events "$1" "$BENCHDIR/$1.events" || die "cannot watch $1's events"
}

# drop_cache: with COLD=1, write back and drop the page cache, so the
# timed part reads the checkpoint (or the raw file) from the disk.
drop_cache() {
	[ "${COLD:-0}" = 1 ] || return 0
	sync && echo 3 >/proc/sys/vm/drop_caches || die "cannot drop the page cache"
}

run_qemu() {
	local i=$1 vm=r$1 j=$BENCHDIR/r$1.json t
	vm_qemu_img "$QV" create -q -f qcow2 -b "$DISKFILE" -F qcow2 "$BENCHDIR/r$i.qcow2" ||
		die "qemu-img create of the overlay failed"
	start_target "$vm" "$BENCHDIR/r$i.qcow2"
	drop_cache
	python3 "$QMPSEQ" load "$(vm_path "$vm" qmp2)" "$(rawuri "$BENCHDIR/raw.stream")" >"$j" ||
		die "QEMU's load of its raw stream failed"
	t=$(resume_ts "$BENCHDIR/$vm.events") || die "$vm: no RESUME event"
	check_alive "$vm" 0
	vm_kill "$vm"
	Q_T+=("$(awk -v a="$("$JSONQ" "$j" t0_us)" -v b="$t" 'BEGIN { printf "%.3f", b - a / 1e6 }')")
	Q_L+=("$("$JSONQ" "$j" load_s | awk '{ printf "%.3f", $1 }')")
	table_row "$i" "QEMU migrate-incoming from its raw file + cont" "${Q_T[-1]}" "-" "${Q_L[-1]}" "${Q_T[-1]}"
}

# timed_restore VM JSON [--lazy]: a fresh target VM, then snapctl restore
# timed.  Sets T0 (start), T1 (snapctl returned), TR (QEMU's RESUME).
timed_restore() {
	local vm=$1 j=$2
	shift 2
	start_target "$vm" "$DISKFILE"
	drop_cache
	T0=$(date +%s.%N)
	"$SNAPCTL" -q --json -s "$(vm_path "$vm" qmp)" -d "$BENCHDIR/store" restore "$@" ck >"$j" ||
		die "snapctl restore $* failed"
	T1=$(date +%s.%N)
	TR=$(resume_ts "$BENCHDIR/$vm.events") || die "$vm: no RESUME event"
	[ "$("$JSONQ" "$j" status)" = running ] || die "snapctl restore $*: status $("$JSONQ" "$j" status)"
	check_alive "$vm" 0
	vm_kill "$vm"
}

since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
field3() { "$JSONQ" "$1" "$2" | awk '{ printf "%.3f", $1 }'; }

run_snapctl() {
	local j=$BENCHDIR/s$1.json
	timed_restore "s$1" "$j"
	S_T+=("$(since "$T0" "$TR")") S_L+=("$(field3 "$j" timings.load_s)") S_C+=("$(field3 "$j" timings.check_s)")
	table_row "$1" "snapctl restore" "${S_T[-1]}" "${S_C[-1]}" "${S_L[-1]}" "${S_T[-1]}"
}

# run_lazy I: the same with --lazy; also the wall clock until snapctl
# returns (QEMU has all the memory).
run_lazy() {
	local j=$BENCHDIR/l$1.json
	timed_restore "l$1" "$j" --lazy
	[ "$("$JSONQ" "$j" mode)" = lazy ] || die "snapctl restore --lazy: mode $("$JSONQ" "$j" mode)"
	L_T+=("$(since "$T0" "$TR")") L_M+=("$(since "$T0" "$T1")")
	L_L+=("$(field3 "$j" timings.load_s)") L_C+=("$(field3 "$j" timings.check_s)")
	table_row "$1" "snapctl restore --lazy" "${L_T[-1]}" "${L_C[-1]}" "${L_L[-1]}" "${L_M[-1]}"
}

echo "restore bench: booting the guest on QEMU $QV ..." >&2
vm_qemu_img "$QV" create -q -f qcow2 "$BENCHDIR/disk.qcow2" 64M || die "qemu-img create failed"
vm_start src --qemu "$QV" --disk "$BENCHDIR/disk.qcow2" --append "$CHURN" || die "vm_start failed"
ready=$(vm_wait_ready src 180) || die "the guest did not start churning"
RUN_ID=$(sed -n 's/.* run=\([0-9a-f]*\).*/\1/p' <<<"$ready")
[ -n "$RUN_ID" ] || die "no run id in '$ready'"
sleep 3

# QEMU refuses to migrate a guest that a migration left in postmigrate, so
# the two captures cannot both come from the source.  Instead: QEMU's raw
# stream of the stopped source, loaded into a second QEMU that stays paused,
# and `snapctl checkpoint --pause` of that one: the same memory, checked
# below with streamdigest.
echo "restore bench: stop, QEMU's raw stream, load it, snapctl checkpoint --pause ..." >&2
vm_qmp_raw src '{"execute":"stop"}' >/dev/null || die "stop failed"
vm_save_raw src "$BENCHDIR/raw.stream" 300 || die "QEMU's raw save failed"
vm_kill src
vm_qemu_img "$QV" create -q -f qcow2 -b "$BENCHDIR/disk.qcow2" -F qcow2 "$BENCHDIR/ld.qcow2" ||
	die "qemu-img create of the overlay failed"
vm_start ld --qemu "$QV" --disk "$BENCHDIR/ld.qcow2" --incoming --append "$CHURN" || die "vm_start ld failed"
vm_load_raw ld "$BENCHDIR/raw.stream" 300 || die "loading QEMU's raw stream failed"
"$SNAPCTL" -q --json -s "$(vm_path ld qmp)" -d "$BENCHDIR/store" checkpoint --pause ck >"$BENCHDIR/ck.json" ||
	die "snapctl checkpoint --pause failed"
vm_kill ld
DIGEST=$TOP/build/helper-streamdigest
d_raw=$("$DIGEST" "$BENCHDIR/raw.stream" | grep '^total') || die "streamdigest of the raw stream failed"
d_img=$("$SNAPCTL" -q export "$BENCHDIR/store/ck/memory.img" - | "$DIGEST" - | grep '^total') ||
	die "streamdigest of the exported image failed"
[ "$d_raw" = "$d_img" ] || die "the checkpoint's memory differs from the raw stream's: $d_img vs $d_raw"
DISKFILE=$("$JSONQ" "$BENCHDIR/store/ck/manifest.json" disks.0.file) || die "no disks.0.file in the manifest"
[ "$("$JSONQ" -n "$BENCHDIR/store/ck/manifest.json" disks)" = 1 ] || die "expected one disk in the manifest"
raw_bytes=$(apparent "$BENCHDIR/raw.stream")
img_bytes=$("$JSONQ" "$BENCHDIR/ck.json" memory.bytes_on_disk) || die "no memory.bytes_on_disk"

# bench_table TITLE: RUNS runs of both, alternating who goes first; the
# table and the verdict line.  Sets VERDICT to met or MISSED.
bench_table() {
	local sm qm lm r rl
	Q_T=() Q_L=() S_T=() S_L=() S_C=() L_T=() L_M=() L_L=() L_C=()
	table_row "run" "method" "start to RESUME s" "snapctl checks s" "loading s" "start to all memory in s"
	for i in $(seq "$RUNS"); do
		echo "restore bench: $1: run $i of $RUNS ..." >&2
		if [ $((i % 2)) = 1 ]; then run_snapctl "$i"; run_lazy "$i"; run_qemu "$i"
		else run_qemu "$i"; run_lazy "$i"; run_snapctl "$i"; fi
	done
	sm=$(median "${S_T[@]}") qm=$(median "${Q_T[@]}") lm=$(median "${L_T[@]}")
	table_row "median" "snapctl restore (image $(mib "$img_bytes") MiB)" "$sm" "$(median "${S_C[@]}")" "$(median "${S_L[@]}")" "$sm"
	table_row "median" "snapctl restore --lazy" "$lm" "$(median "${L_C[@]}")" "$(median "${L_L[@]}")" "$(median "${L_M[@]}")"
	table_row "median" "QEMU raw load (file $(mib "$raw_bytes") MiB)" "$qm" "-" "$(median "${Q_L[@]}")" "$qm"
	table_row "best" "snapctl restore" "$(least "${S_T[@]}")" "$(least "${S_C[@]}")" "$(least "${S_L[@]}")" "$(least "${S_T[@]}")"
	table_row "best" "snapctl restore --lazy" "$(least "${L_T[@]}")" "$(least "${L_C[@]}")" "$(least "${L_L[@]}")" "$(least "${L_M[@]}")"
	table_row "best" "QEMU raw load" "$(least "${Q_T[@]}")" "-" "$(least "${Q_L[@]}")" "$(least "${Q_T[@]}")"
	table_row "ratio" "snapctl / QEMU" "$(ratio "$sm" "$qm")" "-" "$(ratio "$(median "${S_L[@]}")" "$(median "${Q_L[@]}")")" "-"
	table_row "ratio" "snapctl --lazy / QEMU" "$(ratio "$lm" "$qm")" "-" "-" "$(ratio "$(median "${L_M[@]}")" "$qm")"
	table_print "Restore to a running guest on QEMU $QV, $1, 256 MiB churning guest with a disk, same stopped instant, $RUNS runs (verdict on the medians); loading s: snapctl's timings.load_s (overlays, stream, until the guest can run), QEMU's from its start to the MIGRATION completed event; start to all memory in: --lazy returns once QEMU has every page; - = does not apply (target: snapctl restore no slower than QEMU's raw load, ratio <= 1.0)"
	r=$(ratio "$sm" "$qm") rl=$(ratio "$lm" "$qm")
	VERDICT=$(awk -v r="$r" 'BEGIN { print (r <= 1.0) ? "met" : "MISSED" }')
	echo "restore target ($1): snapctl restore / QEMU (median) $r <= 1.0: $VERDICT"
	echo "restore target ($1): snapctl restore --lazy / QEMU (median) $rl <= 1.0: $(awk -v r="$rl" 'BEGIN { print (r <= 1.0) ? "met" : "MISSED" }')"
}

COLD=0 bench_table "warm page cache (files just written)"
# The usual case for a restore: the checkpoint was written long ago.
if (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
	COLD=1 bench_table "cold page cache (dropped before each timed run)"
else
	echo "restore bench: cannot drop the page cache here (not root?): no cold-cache table" >&2
fi
exit 0
