#!/usr/bin/env bash
# bench/image.sh - the compact image against the alternatives, all measured
# in one run on one churning guest (QEMU 10.0, 256 MiB, the whole of 160 MiB
# rewritten at a fixed rate) migrated at a fixed bandwidth for a fixed live
# phase, then stopped so the migration converges:
#   raw stream size; zstd -1 -T2 of it (size, time); QEMU 10 mapped-ram file
#   of the same guest under the same load (apparent, allocated); snapctl
#   compact (image allocated bytes, time, peak RSS); zstd -1 of the final RAM.
# Knobs: BENCH_LIVE_S (20), BENCH_BW (134217728 = QEMU's default 128 MiB/s),
# BENCH_QEMU (10.0), BENCH_CHURN (kernel args of the workload).
. "$(dirname "$0")/lib.sh"
VM_DIR=$BENCHDIR
. "$TOP/tests/lib/vm.sh"
trap 'vm_stop_all; rm -rf "$BENCHDIR"' EXIT

LIVE=${BENCH_LIVE_S:-20}
BW=${BENCH_BW:-134217728}
QV=${BENCH_QEMU:-10.0}
CHURN=${BENCH_CHURN:-churn.hot=100 churn.rate=20000 churn.verify=0}
DIGEST=$TOP/build/helper-streamdigest
vm_have_qemu "$QV" || QV=7.2

# live_migrate VM URI: migrate at $BW for $LIVE s, stop the guest, wait for
# completion, resume.
live_migrate() {
	local vm=$1 uri=$2 st i
	vm_qmp_raw "$vm" "{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"max-bandwidth\":$BW}}" >/dev/null
	vm_qmp_raw "$vm" "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"$uri\"}}" >/dev/null || return 1
	sleep "$LIVE"
	vm_qmp_raw "$vm" '{"execute":"stop"}' >/dev/null
	for i in $(seq 3000); do
		st=$(_vm_field "$(vm_qmp_raw "$vm" '{"execute":"query-migrate"}')" status)
		case $st in completed | failed | cancelled) break ;; esac
		sleep 0.1
	done
	vm_qmp_raw "$vm" '{"execute":"cont"}' >/dev/null
	[ "$st" = completed ]
}

echo "image bench: booting the guest on QEMU $QV ..." >&2
vm_start b --qemu "$QV" --append "$CHURN" || exit 1
vm_wait_ready b 120 >/dev/null || exit 1
sleep 3

echo "image bench: raw stream, $LIVE s live at $BW B/s ..." >&2
_vm_helper
raw=$BENCHDIR/raw.stream
"$QMP_RAW" -L -t 600 "$BENCHDIR/cap.sock" "$raw" >/dev/null 2>&1 &
lp=$!
while [ ! -S "$BENCHDIR/cap.sock" ]; do sleep 0.05; done
live_migrate b "unix:$BENCHDIR/cap.sock" || { echo "raw capture failed" >&2; exit 1; }
wait "$lp"
raw_bytes=$(apparent "$raw")

mr_app=n/a
mr_alloc=n/a
if [ "$QV" = 10.0 ]; then
	echo "image bench: mapped-ram file under the same load ..." >&2
	vm_qmp_raw b '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"mapped-ram","state":true}]}}' >/dev/null
	if live_migrate b "file:$BENCHDIR/mapped.ram"; then
		mr_app=$(mib "$(apparent "$BENCHDIR/mapped.ram")")
		mr_alloc=$(mib "$(allocated "$BENCHDIR/mapped.ram")")
	fi
	vm_qmp_raw b '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"mapped-ram","state":false}]}}' >/dev/null
	rm -f "$BENCHDIR/mapped.ram"
fi
vm_stop b

echo "image bench: zstd -1 -T2 of the raw stream ..." >&2
measure z zstd -q -1 -T2 -f "$raw" -o "$BENCHDIR/raw.zst"
z_bytes=$(apparent "$BENCHDIR/raw.zst")
rm -f "$BENCHDIR/raw.zst"

echo "image bench: snapctl compact ..." >&2
measure c "$SNAPCTL" -q compact "$raw" "$BENCHDIR/mem.img"
img_alloc=$(allocated "$BENCHDIR/mem.img")

"$DIGEST" --ram "$BENCHDIR/final.ram" "$raw" >/dev/null
zstd -q -1 -f "$BENCHDIR/final.ram" -o "$BENCHDIR/final.zst"
final_z=$(apparent "$BENCHDIR/final.zst")

table_row "what" "MiB" "seconds" "peak RSS MiB" "vs zstd -1 of final RAM"
table_row "raw QEMU $QV stream ($LIVE s live at $(mib "$BW") MiB/s)" "$(mib "$raw_bytes")" "" "" "$(ratio "$raw_bytes" "$final_z")"
table_row "zstd -1 -T2 of the raw stream" "$(mib "$z_bytes")" "$z_s" "$((z_rss / 1024))" "$(ratio "$z_bytes" "$final_z")"
table_row "QEMU 10 mapped-ram file, apparent" "$mr_app" "" "" ""
table_row "QEMU 10 mapped-ram file, allocated" "$mr_alloc" "" "" ""
table_row "snapctl compact image, allocated" "$(mib "$img_alloc")" "$c_s" "$((c_rss / 1024))" "$(ratio "$img_alloc" "$final_z")"
table_row "zstd -1 of the final RAM" "$(mib "$final_z")" "" "" "1.000"
table_print "Compact image vs raw stream, zstd and mapped-ram (targets: image <= 1.10 x final; compact time <= zstd -1 -T2 time)"
