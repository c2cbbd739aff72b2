#!/usr/bin/env bash
# bench/swappause.sh - the guest's pause of `snapctl checkpoint` before and
# after the disk swap (issue 11: the VM's own path stays its current disk).
# "Before" is snapctl built from BENCH_OLD_REV (65488ae, the last commit
# without the swap: blockdev-snapshot-sync creates the overlay in the pause);
# "after" is ./snapctl (the overlay is written and fsynced before the pause,
# and the pause only switches to it and renames it over the VM's path).  Each
# checkpoints its own guest (the old one cannot read the node names QEMU
# gives a swapped disk): two identical churning guests with a disk run side
# by side, the two take turns, alternating which goes first, with the same
# --downtime; the pause is STOP to RESUME by QEMU's event timestamps, read on
# a second monitor of each.  Target: the swap adds at most
# 10 ms to the median pause.
# Knobs: BENCH_QEMU (10.0), BENCH_RUNS (6), BENCH_DOWNTIME_MS (300),
# BENCH_OLD_REV (65488ae), BENCH_OLD_SNAPCTL (a prebuilt old binary instead).
. "$(dirname "$0")/lib.sh"
TESTDIR=$BENCHDIR	# vm.sh keeps its files in BENCHDIR
. "$TOP/tests/lib/vm.sh"
trap 'vm_stop_all; bench_cleanup' EXIT

QV=${BENCH_QEMU:-10.0}
vm_have_qemu "$QV" || QV=7.2
CHURN="churn.hot=25 churn.rate=20000 churn.verify=0 churn.disk=/dev/vda churn.diskrate=50"
RUNS=${BENCH_RUNS:-6}
DT=${BENCH_DOWNTIME_MS:-300}
REV=${BENCH_OLD_REV:-65488ae}
need_space 2048

OLD=${BENCH_OLD_SNAPCTL:-}
if [ -z "$OLD" ]; then
	echo "swap pause bench: building snapctl at $REV ..." >&2
	mkdir -p "$BENCHDIR/old" || die "mkdir failed"
	git -C "$TOP" archive "$REV" | tar -x -C "$BENCHDIR/old" ||
		die "cannot unpack $REV (needs the git history; or set BENCH_OLD_SNAPCTL)"
	make -s -C "$BENCHDIR/old" snapctl >/dev/null || die "cannot build snapctl at $REV"
	OLD=$BENCHDIR/old/snapctl
fi
[ -x "$OLD" ] || die "no old snapctl at $OLD"


# pause_ms EVENTS FROM: STOP to the first RESUME after it in the event log
# EVENTS after line FROM, by QEMU's timestamps; fails when either is missing.
pause_ms() {
	tail -n +"$(($2 + 1))" "$1" | awk '
	function ts() { match($0, /"seconds": *[0-9]+, *"microseconds": *[0-9]+/)
		s = substr($0, RSTART, RLENGTH); gsub(/[^0-9,]/, "", s)
		split(s, a, ","); return a[1] + a[2] / 1e6 }
	/"event": *"STOP"/ && !stop { stop = ts() }
	/"event": *"RESUME"/ && stop && !res { res = ts() }
	END { if (!stop || !res) exit 1; printf "%.1f", (res - stop) * 1000 }'
}

# one BIN LABEL ARRAY I: a checkpoint by BIN of the VM named LABEL; appends
# its pause to ARRAY and its total time to ARRAYT.
one() {
	local bin=$1 label=$2 arr=$3 i=$4 n t0 tot p k ev=$BENCHDIR/events.$2
	n=$(wc -l <"$ev")
	t0=$(date +%s.%N)
	"$bin" -q -s "$(vm_path "$label" qmp)" -d "$BENCHDIR/store-$label" checkpoint \
		--downtime "$DT" "$label$i" >/dev/null || die "$label checkpoint $i failed"
	tot=$(secs_since "$t0")
	for k in $(seq 300); do
		tail -n +"$((n + 1))" "$ev" | grep -q '"event": *"RESUME"' && break
		sleep 0.1
	done
	p=$(pause_ms "$ev" "$n") || die "$label run $i: no STOP/RESUME pair in the events"
	eval "$arr+=(\"\$p\") ${arr}T+=(\"\$tot\")"
	table_row "$i" "$label" "$p" "$tot"
}

echo "swap pause bench: booting two guests on QEMU $QV ..." >&2
for v in before after; do
	vm_qemu_img "$QV" create -q -f qcow2 "$BENCHDIR/$v.qcow2" 64M || die "qemu-img create failed"
	vm_start "$v" --qemu "$QV" --disk "$BENCHDIR/$v.qcow2" --append "$CHURN" || die "vm_start failed"
done
for v in before after; do
	vm_wait_ready "$v" 180 >/dev/null || die "guest $v did not start churning"
	vm_watch_events "$v" "$BENCHDIR/events.$v" || die "cannot watch events"
done
sleep 3

B=() A=() BT=() AT=()
table_row "run" "snapctl" "pause ms (STOP->RESUME)" "total s"
for i in $(seq "$RUNS"); do
	echo "swap pause bench: run $i of $RUNS ..." >&2
	if [ $((i % 2)) = 1 ]; then
		one "$OLD" before B "$i"; sleep 2; one "$SNAPCTL" after A "$i"
	else
		one "$SNAPCTL" after A "$i"; sleep 2; one "$OLD" before B "$i"
	fi
	sleep 2
done
mb=$(median "${B[@]}") ma=$(median "${A[@]}")
table_row "median" "before ($REV, overlay created in the pause)" "$mb" "$(median "${BT[@]}")"
table_row "median" "after (swap: overlay written before the pause)" "$ma" "$(median "${AT[@]}")"
table_print "Checkpoint pause before and after the disk swap, QEMU $QV, two 256 MiB churning guests with one qcow2 disk each, $RUNS runs each, alternating, downtime-limit $DT ms (target: after <= before + 10 ms)"
st=$?
awk -v a="$ma" -v b="$mb" 'BEGIN { printf "swap pause target: after %s ms <= before %s ms + 10: %s\n", a, b, (a <= b + 10) ? "met" : "MISSED" }'
exit $st
