#!/usr/bin/env bash
# bench/checkpoint.sh - guest pause and total time of `snapctl checkpoint`
# beside a plain scripted sequence of QEMU's own tools (bench/qmpseq.py save:
# migrate to a file with the guest running, then at the MIGRATION
# "completed" event one transaction of blockdev-snapshot-sync, then cont),
# on the same churning guest with a disk, at the same dirty rate, in the same
# run, alternating which goes first.  Both use the same max-bandwidth
# (snapctl's CKPT_DEFAULT_BANDWIDTH, "unlimited") and the same
# downtime-limit (BENCH_DOWNTIME_MS, passed to snapctl as --downtime).  The
# pause is STOP to RESUME by QEMU's own event timestamps, read on a third
# monitor.  Sizes: snapctl's image (bytes on disk) beside QEMU's raw file,
# each beside zstd -1 of the final RAM it holds (streamdigest --ram of the
# raw file, of `snapctl export` of the image).
# Knobs: BENCH_QEMU (10.0), BENCH_CHURN (kernel args of the workload),
# BENCH_RUNS (5), BENCH_DOWNTIME_MS (300, QEMU's default).
. "$(dirname "$0")/lib.sh"
TESTDIR=$BENCHDIR	# vm.sh keeps its files in BENCHDIR
. "$TOP/tests/lib/vm.sh"
trap 'vm_stop_all; bench_cleanup' EXIT

QV=${BENCH_QEMU:-10.0}
vm_have_qemu "$QV" || QV=7.2
CHURN=${BENCH_CHURN:-churn.hot=25 churn.rate=20000 churn.verify=0 churn.disk=/dev/vda churn.diskrate=50}
RUNS=${BENCH_RUNS:-5}
DT=${BENCH_DOWNTIME_MS:-300}
DIGEST=$TOP/build/helper-streamdigest
JSONQ=$TOP/build/helper-jsonq
QMPSEQ=$TOP/bench/qmpseq.py
[ -x "$DIGEST" ] && [ -x "$JSONQ" ] || die "build the helpers first (make helpers)"
command -v python3 >/dev/null || die "needs python3 (bench/qmpseq.py)"
# snapctl's default max-bandwidth, from the source, so both sides match.
BW=$(sed -n 's/^#define CKPT_DEFAULT_BANDWIDTH (\([0-9]*\)ull << \([0-9]*\)).*/\1 \2/p' "$TOP/checkpoint.h" |
	awk '{ printf "%.0f", $1 * 2 ^ $2 }')
[ -n "$BW" ] && [ "$BW" -gt 0 ] || die "cannot read CKPT_DEFAULT_BANDWIDTH from checkpoint.h"
need_space 2048

# QEMU 10 writes a file: URI itself; 7.2 has no file: migration.
if [ "$QV" = 7.2 ]; then rawuri() { echo "exec:cat >'$1'"; }; else rawuri() { echo "file:$1"; }; fi

EV=$BENCHDIR/events

# pause_ms FROM: STOP to the first RESUME after it, by QEMU's event
# timestamps, in the event log after line FROM; fails when either is missing.
pause_ms() {
	tail -n +"$(($1 + 1))" "$EV" | awk '
	function ts() { match($0, /"seconds": *[0-9]+, *"microseconds": *[0-9]+/)
		s = substr($0, RSTART, RLENGTH); gsub(/[^0-9,]/, "", s)
		split(s, a, ","); return a[1] + a[2] / 1e6 }
	/"event": *"STOP"/ && !stop { stop = ts() }
	/"event": *"RESUME"/ && stop && !res { res = ts() }
	END { if (!stop || !res) exit 1; printf "%.1f", (res - stop) * 1000 }'
}

# wait_resumed FROM: wait (30 s) for a RESUME event after line FROM.
wait_resumed() {
	local i
	for i in $(seq 300); do
		tail -n +"$(($1 + 1))" "$EV" | grep -q '"event": *"RESUME"' && return 0
		sleep 0.1
	done
	die "no RESUME event within 30 s"
}

# final_zstd STREAM|-: zstd -1 size of the final RAM of a raw stream.
final_zstd() {
	"$DIGEST" --ram "$BENCHDIR/final.ram" "$1" >/dev/null || return 1
	zstd -q -1 -f "$BENCHDIR/final.ram" -o "$BENCHDIR/final.zst" || return 1
	apparent "$BENCHDIR/final.zst"
	rm -f "$BENCHDIR/final.ram" "$BENCHDIR/final.zst"
}

# run_snapctl I: one `snapctl checkpoint`; appends a row to the S_* arrays.
run_snapctl() {
	local i=$1 n t0 tot p img fz dt j=$BENCHDIR/s$1.json
	n=$(wc -l <"$EV")
	t0=$(date +%s.%N)
	"$SNAPCTL" -q --json -s "$(vm_path c qmp)" -d "$BENCHDIR/store" checkpoint \
		--downtime "$DT" "s$i" >"$j" || die "snapctl checkpoint failed"
	tot=$(secs_since "$t0")
	wait_resumed "$n"
	p=$(pause_ms "$n") || die "snapctl run $i: no STOP/RESUME pair in the events"
	img=$("$JSONQ" "$j" memory.bytes_on_disk) || die "no memory.bytes_on_disk in $j"
	dt=$("$JSONQ" "$j" timings.qemu_downtime_ms) || die "no timings.qemu_downtime_ms in $j"
	fz=$("$SNAPCTL" -q export "$BENCHDIR/store/s$i/memory.img" - | final_zstd -) ||
		die "export | streamdigest of s$i failed"
	S_P+=("$p") S_D+=("$dt") S_T+=("$tot") S_B+=("$img") S_Z+=("$fz")
	table_row "$i" "snapctl checkpoint" "$p" "$dt" "$tot" "$(mib "$img")" "$(mib "$fz")" "$(ratio "$img" "$fz")"
}

# run_qemu I: the scripted sequence; appends a row to the Q_* arrays.
run_qemu() {
	local i=$1 n t0 tot p raw fz dt j=$BENCHDIR/q$1.json f=$BENCHDIR/q$1.raw
	n=$(wc -l <"$EV")
	t0=$(date +%s.%N)
	python3 "$QMPSEQ" save "$(vm_path c qmp2)" "$(rawuri "$f")" "$BW" "$DT" "$BENCHDIR/q$i" >"$j" ||
		die "scripted migrate + transaction + cont failed"
	tot=$(secs_since "$t0")
	wait_resumed "$n"
	p=$(pause_ms "$n") || die "QEMU run $i: no STOP/RESUME pair in the events"
	dt=$("$JSONQ" "$j" qemu_downtime_ms) || die "no qemu_downtime_ms in $j"
	raw=$(apparent "$f")
	fz=$(final_zstd "$f") || die "streamdigest of q$i.raw failed"
	rm -f "$f"
	Q_P+=("$p") Q_D+=("$dt") Q_T+=("$tot") Q_B+=("$raw") Q_Z+=("$fz")
	table_row "$i" "QEMU migrate+transaction+cont" "$p" "$dt" "$tot" "$(mib "$raw")" "$(mib "$fz")" "$(ratio "$raw" "$fz")"
}

echo "checkpoint bench: booting the guest on QEMU $QV ..." >&2
vm_qemu_img "$QV" create -q -f qcow2 "$BENCHDIR/disk.qcow2" 64M || die "qemu-img create failed"
vm_start c --qemu "$QV" --disk "$BENCHDIR/disk.qcow2" --append "$CHURN" || die "vm_start failed"
vm_wait_ready c 180 >/dev/null || die "the guest did not start churning"
sleep 3
vm_watch_events c "$EV" || die "cannot watch events"

S_P=() S_D=() S_T=() S_B=() S_Z=() Q_P=() Q_D=() Q_T=() Q_B=() Q_Z=()
table_row "run" "method" "pause ms (STOP->RESUME)" "QEMU downtime ms" "total s" "memory file MiB" \
	"zstd -1 of its final RAM MiB" "file/zstd"
for i in $(seq "$RUNS"); do
	echo "checkpoint bench: run $i of $RUNS ..." >&2
	# Alternate the order so neither always meets the guest right after
	# the other's switchover.
	if [ $((i % 2)) = 1 ]; then
		run_snapctl "$i"; sleep 2; run_qemu "$i"
	else
		run_qemu "$i"; sleep 2; run_snapctl "$i"
	fi
	sleep 2
done
sp=$(median "${S_P[@]}") qp=$(median "${Q_P[@]}")
sb=$(median "${S_B[@]}") sz=$(median "${S_Z[@]}")
table_row "median" "snapctl checkpoint" "$sp" "$(median "${S_D[@]}")" "$(median "${S_T[@]}")" \
	"$(mib "$sb")" "$(mib "$sz")" "$(ratio "$sb" "$sz")"
qb=$(median "${Q_B[@]}") qz=$(median "${Q_Z[@]}")
table_row "median" "QEMU migrate+transaction+cont" "$qp" "$(median "${Q_D[@]}")" "$(median "${Q_T[@]}")" \
	"$(mib "$qb")" "$(mib "$qz")" "$(ratio "$qb" "$qz")"
table_print "Checkpoint on QEMU $QV, 256 MiB churning guest with a disk ($CHURN), $RUNS runs, max-bandwidth $(mib "$BW") MiB/s and downtime-limit $DT ms for both; QEMU downtime is QEMU's own count: snapctl's includes the disk cut at pre-switchover, the scripted one ends at 'completed', before the transaction and cont (targets: snapctl pause <= scripted pause + 20 ms; image <= 1.10 x zstd -1 of final RAM)"
st=$?
awk -v s="$sp" -v q="$qp" 'BEGIN { printf "pause target: snapctl median %s ms <= QEMU median %s ms + 20: %s\n", s, q, (s <= q + 20) ? "met" : "MISSED" }'
awk -v r="$(ratio "$sb" "$sz")" 'BEGIN { printf "size target: image / zstd -1 of its final RAM (median) %s <= 1.10: %s\n", r, (r <= 1.10) ? "met" : "MISSED" }'
exit $st
