#!/usr/bin/env bash
# bench/lifecycle.sh - issue 11's lifecycle table: NIGHTS (30) nights of
# `checkpoint` + `prune --keep 3 --disks -s SOCKET` on a running churning
# guest writing its disk (QEMU 10.0 if present, live checkpoints; 7.2
# takes --pause), one row a night: the active image's chain depth (qcow2
# headers), the bytes its chain files take on disk, the store's bytes, what
# that night's merge moved and how long it took, and the guest's pause
# during the prune from QEMU's STOP/RESUME events (expected: none), beside
# the checkpoint's own pause (which shows the event watcher sees them).  The
# chain is read from the VM's own path, its current disk after every swap.  Then
# the merge time per GiB of layer over all nights.  Knobs: BENCH_NIGHTS,
# BENCH_QEMU (10.0), BENCH_CHURN.
. "$(dirname "$0")/lib.sh"
TESTDIR=$BENCHDIR
. "$TOP/tests/lib/vm.sh"
trap 'vm_stop_all; bench_cleanup' EXIT

NIGHTS=${BENCH_NIGHTS:-30}
QV=${BENCH_QEMU:-10.0}
vm_have_qemu "$QV" || QV=7.2
MODE=""
[ "$QV" = 7.2 ] && MODE=--pause
CHURN=${BENCH_CHURN:-churn.mb=32 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=200 churn.tick=200}
JSONQ=$TOP/build/helper-jsonq
[ -x "$JSONQ" ] || die "build the helpers first (make helpers)"
need_space 1024

qemu-img create -q -f qcow2 "$BENCHDIR/d0.qcow2" 256M
vm_start lc --qemu "$QV" --disk "$BENCHDIR/d0.qcow2" --append "$CHURN" || die "vm_start failed"
vm_wait_ready lc 180 >/dev/null || die "the guest did not start churning"
SOCK=$(vm_path lc qmp)
STORE=$BENCHDIR/store
EV=$BENCHDIR/events
vm_watch_events lc "$EV" || die "no event watcher"

chain() { qemu-img info --backing-chain --output=json -U "$1" | sed -n 's/^ *"filename": "\(.*\)",$/\1/p'; }
# stop_resume_ms FROM TO: the sum of STOP -> RESUME in the event log's lines
# FROM+1..TO, by QEMU's timestamps.
stop_resume_ms() {
	sed -n "$(($1 + 1)),$2p" "$EV" | awk '
		/"event": *"STOP"/ { match($0, /"seconds": *[0-9]+/); s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s)
			match($0, /"microseconds": *[0-9]+/); u = substr($0, RSTART, RLENGTH); sub(/.*: */, "", u); t0 = s + u / 1e6 }
		/"event": *"RESUME"/ && t0 { match($0, /"seconds": *[0-9]+/); s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s)
			match($0, /"microseconds": *[0-9]+/); u = substr($0, RSTART, RLENGTH); sub(/.*: */, "", u); tot += (s + u / 1e6 - t0) * 1000; t0 = 0 }
		END { printf "%.0f", tot }'
}

tot_s=0 tot_b=0 paused_total=0
table_row night depth chain_MiB store_MiB merged_MiB merge_s checkpoint_pause_ms prune_pause_ms
for n in $(seq 1 "$NIGHTS"); do
	sleep 2
	atck=$(wc -l <"$EV")
	# shellcheck disable=SC2086
	"$SNAPCTL" -q -s "$SOCK" -d "$STORE" checkpoint $MODE "n$n" || die "checkpoint n$n failed"
	sleep 0.2
	before=$(wc -l <"$EV")
	# The checkpoint's own pause: proof that the watcher sees STOP/RESUME.
	ckpause=$(stop_resume_ms "$atck" "$before")
	"$SNAPCTL" -s "$SOCK" -d "$STORE" --json prune --keep 3 --disks >"$BENCHDIR/p.json" || die "prune failed on night $n"
	sleep 0.2
	# STOP -> RESUME pairs during the prune, from QEMU's timestamps.
	pause=$(stop_resume_ms "$before" "$(wc -l <"$EV")")
	mb=0 ms=0
	k=$("$JSONQ" -n "$BENCHDIR/p.json" merged 2>/dev/null || echo 0)
	for i in $(seq 0 $((k - 1))); do
		[ "$("$JSONQ" "$BENCHDIR/p.json" merged.$i.merged)" = true ] || continue
		mb=$((mb + $("$JSONQ" "$BENCHDIR/p.json" merged.$i.bytes)))
		ms=$(awk -v a="$ms" -v b="$("$JSONQ" "$BENCHDIR/p.json" merged.$i.seconds)" 'BEGIN { print a + b }')
	done
	tot_b=$((tot_b + mb))
	tot_s=$(awk -v a="$tot_s" -v b="$ms" 'BEGIN { print a + b }')
	# The VM's own path is always its current disk (the disk swap).
	top=$BENCHDIR/d0.qcow2
	files=$(chain "$top")
	cb=0
	for f in $files; do cb=$((cb + $(allocated "$f"))); done
	# shellcheck disable=SC2086
	table_row "$n" "$(echo "$files" | grep -c .)" "$(mib "$cb")" "$(mib "$(du -sb "$STORE" | cut -f1)")" \
		"$(mib "$mb")" "$ms" "${ckpause:-0}" "${pause:-0}"
done
table_print "lifecycle: $NIGHTS nights of checkpoint + prune --keep 3 --disks (QEMU $QV, live merges)" || exit 1
table_row merged_GiB merge_s s_per_GiB
table_row "$(awk -v b="$tot_b" 'BEGIN { printf "%.4f", b / 1073741824 }')" "$tot_s" \
	"$(awk -v b="$tot_b" -v s="$tot_s" 'BEGIN { if (b > 0) printf "%.1f", s / (b / 1073741824); else print "?" }')"
table_print "merge time per GiB of layer (QEMU $QV)"
