#!/usr/bin/env bash
# t-imgv2: memory images of version 2 (man/snapctl-image.5, VERSION 2) on
# real QEMU, before snapctl writes them: a checkpoint's memory.img is
# split (build/helper-imgv2tool split) into a self-contained version 2 pack
# in the store's .packs and an image that takes every other frame from it,
# its own frames in reverse order.  verify, info, read and export read it
# as the original; restore and restore --lazy bring the guest back from
# it; a damaged or missing pack fails verify and restore names it.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

IMGTOOL=$TOP/build/helper-imgv2tool
CHURN="churn.mb=96 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=50 churn.tick=200"
ver=10.0
vm_have_qemu "$ver" || ver=7.2
if ! vm_have_qemu "$ver"; then
	skip "QEMU" "not installed (tests/deps.sh)"
	done_testing
fi

last_tick() { grep -a '^CHURN TICK' "$(vm_path "$1" serial)" | tail -n 1 | tr -d '\r'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# carries_on VM DESC RUN COUNTER: the restored guest is the checkpointed
# run carrying on and verifies its memory.
carries_on() {
	local vm=$1 d=$2 run=$3 counter=$4 tick
	tick=$(vm_wait_serial "$vm" '^CHURN TICK' 60)
	expect_eq "$d: the same churn run" "$run" "$(field run "$tick")"
	if [ -n "$tick" ] && [ "$(field counter "$tick")" -ge "$counter" ]; then
		ok "$d: its counter carries on ($(field counter "$tick") >= $counter)"
	else
		not_ok "$d: its counter carries on" "first tick: '$tick', checkpoint at $counter"
	fi
	check "$d: the guest verifies its whole memory" vm_wait_serial "$vm" '^CHURN VERIFY ok' 60
	if grep -aq FAIL "$(vm_path "$vm" serial)"; then
		not_ok "$d: no FAIL line" "$(grep -a FAIL "$(vm_path "$vm" serial)" | head -n 3)"
	else
		ok "$d: no FAIL line"
	fi
}

dir=$TESTDIR/q
store=$dir/store
mkdir -p "$dir"
qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
if ! vm_start src --qemu "$ver" --agent --disk "$dir/d0.qcow2" \
	--append "$CHURN" 2>"$dir/src.err" || ! vm_wait_ready src 120 >"$dir/ready"; then
	not_ok "QEMU $ver: guest starts" "$(tail -n 5 "$dir/src.err")"
	done_testing
fi
run=$(field run "$(tr -d '\r' <"$dir/ready")")
vm_wait_serial src '^CHURN DISKVERIFY' 30 >/dev/null
sleep 1
mode=""
[ "$ver" = 7.2 ] && mode=--pause
at=$(field counter "$(last_tick src)")
at=${at:-0}
if ! "$SNAPCTL" -s "$(vm_path src qmp)" -d "$store" checkpoint $mode c1 >/dev/null 2>"$dir/c1.err"; then
	not_ok "QEMU $ver: checkpoint c1" "$(cat "$dir/c1.err")"
	vm_kill src KILL
	done_testing
fi
file=$(jq_get "$store/c1/manifest.json" disks.0.file)
vm_kill src KILL

# ---- split c1's image: half its frames in a pack in .packs --------------
img=$store/c1/memory.img
cp "$img" "$dir/orig.img"
mkdir -p "$store/.packs"
if id=$("$IMGTOOL" split "$dir/orig.img" "$dir/pack.img" "$dir/split.img" c0 2>"$dir/split.err"); then
	ok "split c1's image into a pack and an image naming it ($(cat "$dir/split.err"))"
else
	not_ok "split c1's image" "$(cat "$dir/split.err")"
	done_testing
fi
pack=$store/.packs/$id.img
mv "$dir/pack.img" "$pack"
cp "$dir/split.img" "$img"

expect_code 0 "verify the split image (file)" "$SNAPCTL" verify "$img"
expect_code 0 "verify checkpoint c1 (its image takes frames from .packs)" "$SNAPCTL" -d "$store" verify c1
"$SNAPCTL" --json info "$img" >"$dir/info"
expect_eq "info: format_version 2" 2 "$(jq_get "$dir/info" format_version)"
expect_code 0 "export of the split image" "$SNAPCTL" export "$img" "$dir/split.exp"
expect_code 0 "export of the original" "$SNAPCTL" export "$dir/orig.img" "$dir/orig.exp"
check "... the same stream" cmp -s "$dir/split.exp" "$dir/orig.exp"
"$IMGTOOL" standalone "$img" "$dir/alone.img"
expect_code 0 "a standalone copy of it verifies without the pack" "$SNAPCTL" verify "$dir/alone.img"
expect_code 0 "... and exports" "$SNAPCTL" export "$dir/alone.img" "$dir/alone.exp"
check "... the same stream" cmp -s "$dir/alone.exp" "$dir/orig.exp"
bad=0
for off in 0 4096 1048576 33554432 67108864; do
	"$SNAPCTL" read "$img" pc.ram "$off" 300000 >"$dir/r1" || bad=1
	"$SNAPCTL" read "$dir/orig.img" pc.ram "$off" 300000 >"$dir/r2" || bad=1
	cmp -s "$dir/r1" "$dir/r2" || bad=1
done
expect_eq "read: the same bytes as the original at five offsets" 0 "$bad"

R=(-d "$store")
vm_start t --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
if "$SNAPCTL" -s "$(vm_path t qmp)" "${R[@]}" restore c1 >"$dir/r1.out" 2>"$dir/r1.err"; then
	ok "QEMU $ver: restore c1 from the split image"
	carries_on t "QEMU $ver: restored from version 2" "$run" "$at"
else
	not_ok "QEMU $ver: restore c1 from the split image" "$(cat "$dir/r1.err")"
fi
vm_kill t KILL

vm_start l --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
if "$SNAPCTL" -s "$(vm_path l qmp)" "${R[@]}" --json restore --lazy c1 >"$dir/rl.json" 2>"$dir/rl.err"; then
	ok "QEMU $ver: restore --lazy c1 from the split image"
	expect_eq "QEMU $ver: ... lazily" lazy "$(jq_get "$dir/rl.json" mode)"
	carries_on l "QEMU $ver: lazily restored from version 2" "$run" "$at"
else
	not_ok "QEMU $ver: restore --lazy c1 from the split image" "$(cat "$dir/rl.err")"
fi
vm_kill l KILL

# ---- a damaged pack, then none --------------------------------------------
cp "$pack" "$dir/pack.good"
# A byte in the middle of the pack's data region: a frame the image may or
# may not name; flip bytes through the region until verify of the pack
# itself fails, then see whether the split image names it.
doff=$(od -An -tu8 -j 56 -N8 "$pack" | tr -d ' ')
dsize=$(od -An -tu8 -j 64 -N8 "$pack" | tr -d ' ')
flip() {  # flip FILE OFFSET
	printf "$(printf '\\x%02x' $(( $(od -An -tu1 -j "$2" -N1 "$1") ^ 0x5a )))" |
		dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
named=0
for k in 1 3 5 7 9 11 13 15; do
	cp "$dir/pack.good" "$pack"
	flip "$pack" $((doff + dsize * k / 16))
	if ! "$SNAPCTL" verify "$img" 2>"$dir/v.err"; then
		named=1
		break
	fi
done
if [ $named = 1 ] && grep -q "pack 1 'c0' (image $id)" "$dir/v.err"; then
	ok "a damaged pack frame fails verify of the image, naming the pack: $(cat "$dir/v.err")"
else
	not_ok "a damaged pack frame fails verify of the image, naming the pack" "$(cat "$dir/v.err")"
fi
vm_start u --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
expect_code 1 "QEMU $ver: restore refuses it" "$SNAPCTL" -s "$(vm_path u qmp)" "${R[@]}" restore c1
expect_match "... naming the pack" "pack 1 'c0'" "$TESTDIR/stderr"
expect_eq "... QEMU still waits" inmigrate "$(ck_status u)"
rm -f "$pack"
expect_code 1 "QEMU $ver: a missing pack: restore refuses" "$SNAPCTL" -s "$(vm_path u qmp)" "${R[@]}" restore c1
expect_match "... saying which pack is not found" "pack 'c0' \(image $id\) not found" "$TESTDIR/stderr"
expect_eq "... QEMU still waits" inmigrate "$(ck_status u)"
vm_kill u KILL
expect_code 1 "verify c1 without its pack fails" "$SNAPCTL" -d "$store" verify c1
done_testing
