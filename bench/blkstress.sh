#!/usr/bin/env bash
# bench/blkstress.sh - how often a checkpoint taken under heavy virtio-blk
# I/O restores into a broken guest (issue 15), per QEMU source/destination
# and mode.  Not a timing: a count of outcomes.
#
# The guest (256 MiB, TCG unless SNAPCTL_TEST_ACCEL says otherwise) rewrites
# its memory as fast as it can and writes a synchronous 4 KiB O_DIRECT
# record to its virtio-blk disk after every 2000 page writes
# (churn.diskevery).  For each configuration SRC:DST:MODE one source QEMU
# SRC boots; then RUNS times: `snapctl checkpoint` in MODE (live, pause,
# background), a fresh QEMU DST (the source's machine type) gets it back
# with `snapctl restore`, and the restored guest is watched for
# BENCH_WATCH seconds:
#   panic  a kernel BUG, oops or panic on its console, or QEMU exited
#   bad    churn found a page or a disk record that does not match its own
#          bookkeeping (CHURN ... FAIL)
#   hang   no CHURN VERIFY ok after the restore, or no TICK in the last
#          10 s of the watch
#   ok     none of these, and it verified its memory and its disk
#   error  snapctl checkpoint or restore failed (counted apart)
# Knobs: BENCH_RUNS (3), BENCH_WATCH (40 s), BENCH_CONFIGS (default
# "7.2:7.2:live 7.2:7.2:pause 7.2:7.2:background 7.2:10.0:live
# 10.0:10.0:live"; a configuration whose QEMU is missing is left out),
# BENCH_CHURN.  With the defaults about 25 minutes on the 2-core CI
# machine; `BENCH_CONFIGS="7.2:7.2:live 7.2:7.2:pause" BENCH_RUNS=3` takes
# about 6.
. "$(dirname "$0")/lib.sh"
TESTDIR=$BENCHDIR	# vm.sh keeps its files in BENCHDIR
. "$TOP/tests/lib/vm.sh"
trap 'vm_stop_all; bench_cleanup' EXIT

RUNS=${BENCH_RUNS:-3}
WATCH=${BENCH_WATCH:-40}
CONFIGS=${BENCH_CONFIGS:-7.2:7.2:live 7.2:7.2:pause 7.2:7.2:background 7.2:10.0:live 10.0:10.0:live}
CHURN=${BENCH_CHURN:-churn.mb=160 churn.hot=25 churn.rate=0 churn.cold=0 churn.verify=2000 churn.tick=200 churn.disk=/dev/vda churn.diskevery=2000}
JSONQ=$TOP/build/helper-jsonq
BROKEN='Kernel panic|kernel BUG|Oops|general protection|Fatal exception'
[ -x "$JSONQ" ] || die "build the helpers first (make helpers)"
"$SNAPCTL" help restore >/dev/null 2>&1 || die "this snapctl has no restore command"
need_space 2048
vm_guest || die "the test guest does not build"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# outcome VM RUN: classify the restored guest VM after watching it.
outcome() {
	local vm=$1 run=$2 ser end from
	ser=$(vm_path "$vm" serial)
	end=$(($(date +%s) + WATCH))
	while [ "$(date +%s)" -lt "$end" ] && vm_alive "$vm" && ! grep -aEq "$BROKEN" "$ser"; do
		sleep 1
	done
	# A TICK in the next 10 s: the guest still runs.
	from=$(vm_serial_lines "$vm")
	vm_alive "$vm" && vm_wait_serial "$vm" '^CHURN TICK' 10 "$from" >/dev/null 2>&1
	local ticking=$?
	if grep -aEq "$BROKEN" "$ser" || ! vm_alive "$vm"; then
		echo panic
	elif grep -aq 'CHURN .*FAIL' "$ser"; then
		echo bad
	elif grep -aq '^CHURN READY' "$ser" || ! grep -aq "run=$run" "$ser"; then
		echo panic	# it rebooted: the old guest is gone
	elif [ $ticking != 0 ] || ! grep -aq '^CHURN VERIFY ok' "$ser" ||
		! grep -aq '^CHURN DISKVERIFY ok' "$ser"; then
		echo hang
	else
		echo ok
	fi
}

for cfg in $CONFIGS; do
	IFS=: read -r src dst mode <<<"$cfg"
	if ! vm_have_qemu "$src" || ! vm_have_qemu "$dst"; then
		echo "blkstress.sh: $cfg: QEMU missing, left out" >&2
		continue
	fi
	case $mode in
	live) flags=() ;;
	pause) flags=(--pause) ;;
	background) flags=(--mode background) ;;
	*) die "unknown mode '$mode' in '$cfg'" ;;
	esac
	machine=$VM_MACHINE_72
	[ "$src" = 10.0 ] && machine=$VM_MACHINE_100
	c=${cfg//[.:]/}
	dir=$BENCHDIR/$c
	store=$dir/store
	mkdir -p "$dir"
	vm_qemu_img "$src" create -q -f qcow2 "$dir/d0.qcow2" 64M || die "qemu-img failed"
	vm_start "s$c" --qemu "$src" --machine "$machine" --disk "$dir/d0.qcow2" --append "$CHURN" ||
		die "$cfg: the source does not start"
	ready=$(vm_wait_ready "s$c" 180) || die "$cfg: the source's churn is not ready"
	run=$(field run "$(tr -d '\r' <<<"$ready")")
	vm_wait_serial "s$c" '^CHURN DISKVERIFY ok seq=[1-9]' 120 >/dev/null ||
		die "$cfg: the source does not write its disk"
	declare -A n=([ok]=0 [panic]=0 [bad]=0 [hang]=0 [error]=0)
	for ((i = 1; i <= RUNS; i++)); do
		sleep 3	# let the workload run between checkpoints
		if ! "$SNAPCTL" -q -s "$(vm_path "s$c" qmp)" -d "$store" checkpoint "${flags[@]}" "c$i" \
			>/dev/null 2>"$dir/c$i.err"; then
			echo "blkstress.sh: $cfg run $i: checkpoint: $(tail -n 1 "$dir/c$i.err")" >&2
			n[error]=$((n[error] + 1))
			continue
		fi
		file=$("$JSONQ" "$store/c$i/manifest.json" disks.0.file)
		vm_start "r$c$i" --qemu "$dst" --machine "$machine" --disk "$file" --append "$CHURN" --incoming ||
			die "$cfg: the destination does not start"
		if ! "$SNAPCTL" -s "$(vm_path "r$c$i" qmp)" -d "$store" restore "c$i" >/dev/null 2>"$dir/r$i.err"; then
			echo "blkstress.sh: $cfg run $i: restore: $(tail -n 1 "$dir/r$i.err")" >&2
			n[error]=$((n[error] + 1))
			vm_kill "r$c$i" KILL
			continue
		fi
		o=$(outcome "r$c$i" "$run")
		n[$o]=$((n[$o] + 1))
		echo "blkstress.sh: $cfg run $i: $o" >&2
		[ "$o" = ok ] || grep -aE "$BROKEN|FAIL" "$(vm_path "r$c$i" serial)" | head -n 2 | tr -d '\r' | sed 's/^/  /' >&2
		vm_kill "r$c$i" KILL
	done
	vm_kill "s$c" KILL
	rm -rf "$dir"/*.qcow2 "$store"
	table_row "$src" "$dst" "blk diskevery=2000" "$mode" "$RUNS" "${n[ok]}" "${n[panic]}" "${n[hang]}" "${n[bad]}" "${n[error]}"
	unset n
done
[ ${#_rows[@]} -gt 0 ] || die "no configuration could run"
_rows=("$(printf 'source\tdestination\tworkload\tmode\truns\tok\tpanics\thangs\tbad\terrors')" "${_rows[@]}")
table_print "restores of checkpoints under virtio-blk stress (${VM_ACCEL}, watched ${WATCH} s each)"
