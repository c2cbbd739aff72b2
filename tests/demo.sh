#!/usr/bin/env bash
# tests/demo.sh - what `make demo` shows a newcomer: boot the test guest
# (a workload that keeps rewriting its memory and logging records to its
# disk), take a live checkpoint while it works, kill the VM, restore the
# checkpoint into a fresh QEMU, and watch the guest carry on from where it
# was, with the numbers.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
SNAPCTL=$TOP/snapctl
JSONQ=$TOP/build/helper-jsonq
DEMO=$(mktemp -d "${TMPDIR:-/tmp}/snapctl-demo.XXXXXX")
VM_DIR=$DEMO
. "$TOP/tests/lib/vm.sh"
trap 'vm_stop_all; rm -rf "$DEMO"' EXIT
say() { printf '\n== %s\n' "$*"; }

QV=10.0
vm_have_qemu 10.0 || QV=7.2
CHURN="churn.hot=25 churn.rate=20000 churn.disk=/dev/vda churn.diskrate=50"

say "booting the test guest on QEMU $QV (TCG), 256 MiB, a churning workload"
vm_qemu_img "$QV" create -q -f qcow2 "$DEMO/disk.qcow2" 64M
vm_start demo --qemu "$QV" --disk "$DEMO/disk.qcow2" --append "$CHURN" || exit 1
vm_wait_ready demo 120 || exit 1
vm_wait_serial demo 'CHURN VERIFY ok' 60 >/dev/null
sleep 2
tail -n 2 "$(vm_path demo serial)"

say "snapctl checkpoint (live: the guest keeps running)"
before=$(sed -n 's/.*CHURN TICK counter=\([0-9]*\).*/\1/p' "$(vm_path demo serial)" | tail -n 1)
"$SNAPCTL" -s "$(vm_path demo qmp)" -d "$DEMO/store" --json checkpoint demo1 >"$DEMO/m.json" || exit 1
q() { "$JSONQ" "$DEMO/m.json" "$1"; }
ls -l "$DEMO/store/demo1"
echo "disk overlay now active: $(q disks.0.overlay)"

say "killing the VM"
vm_kill demo KILL

say "restoring demo1 into a fresh QEMU (-incoming defer, its disk opened on the checkpoint's file)"
"$SNAPCTL" -d "$DEMO/store" info demo1
vm_start back --qemu "$QV" --disk "$(q disks.0.file)" --incoming --append "$CHURN" || exit 1
r0=$(date +%s.%N)
"$SNAPCTL" -s "$(vm_path back qmp)" -d "$DEMO/store" restore demo1 || exit 1
r1=$(date +%s.%N)
vm_wait_serial back 'CHURN VERIFY (ok|FAIL)' 60
vm_wait_serial back 'CHURN DISKVERIFY (ok|FAIL)' 60
vm_wait_serial back 'CHURN TICK' 30 >/dev/null
after=$(sed -n 's/.*CHURN TICK counter=\([0-9]*\).*/\1/p' "$(vm_path back serial)" | head -n 1)

say "the numbers"
awk -v ram="$(q memory.ram_bytes)" -v img="$(q memory.bytes_on_disk)" \
	-v raw="$(q memory.stream_bytes)" -v paused="$(q timings.paused_ms)" \
	-v total="$(q timings.total_s)" -v passes="$(q timings.passes)" \
	-v rs="$(awk -v a="$r0" -v b="$r1" 'BEGIN { print b - a }')" \
	-v before="$before" -v after="$after" 'BEGIN {
	printf "  guest RAM                   %8.1f MiB\n", ram / 1048576
	printf "  stream QEMU sent (%s passes) %8.1f MiB\n", passes, raw / 1048576
	printf "  snapctl image on disk       %8.1f MiB  (%.1f%% of the stream)\n", img / 1048576, 100 * img / raw
	printf "  guest paused                %8.1f ms\n", paused
	printf "  checkpoint total            %8.1f s\n", total
	printf "  restore to a running guest  %8.1f s\n", rs
	printf "  guest counter               %s before the checkpoint -> %s after the restore (no reboot)\n", before, after
}'
grep -q 'CHURN VERIFY FAIL\|DISKVERIFY FAIL' "$(vm_path back serial)" && { echo "demo: the restored guest reported a failure" >&2; exit 1; }
echo
echo "The restored guest verified its memory and its disk records: it carries on from the checkpoint."

say "once more with restore --lazy (postcopy: the guest runs first, its memory follows)"
vm_kill back KILL
vm_start lazy --qemu "$QV" --disk "$(q disks.0.file)" --incoming --append "$CHURN" || exit 1
"$SNAPCTL" -s "$(vm_path lazy qmp)" -d "$DEMO/store" --json restore --lazy demo1 >"$DEMO/l.json" || exit 1
vm_wait_serial lazy 'CHURN VERIFY (ok|FAIL)' 60
l() { "$JSONQ" "$DEMO/l.json" "$1"; }
awk -v c="$(l timings.check_s)" -v ld="$(l timings.load_s)" -v m="$(l timings.memory_s)" \
	-v req="$(l memory.requests)" 'BEGIN {
	printf "  guest running after         %8.2f s  (checks %.2f s, then device state)\n", c + ld, c
	printf "  all its memory in after     %8.2f s  (%d page requests served first)\n", c + m, req
}'
grep -q 'CHURN VERIFY FAIL\|DISKVERIFY FAIL' "$(vm_path lazy serial)" && { echo "demo: the lazily restored guest reported a failure" >&2; exit 1; }
echo "The lazily restored guest verified its memory too."
