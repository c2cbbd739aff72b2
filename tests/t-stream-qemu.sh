#!/usr/bin/env bash
# t-stream-qemu: streams rebuilt by stream.c's writer load into a stock QEMU.
# A source VM with the recorded fixtures' device set (q35, 256 MiB, SeaBIOS
# and no bootable disk, VGA at 00:01.0, virtio-net at 00:02.0 and e1000 at
# 00:03.0 on two user netdevs, plus a virtio-blk disk on qcow2) migrates
# into a file with QEMU's own migration; build/helper-streamtool parses it
# and writes it again (every page once, newest copy); a fresh
# "-incoming defer -S" QEMU loads the result through migrate-incoming on a
# unix socket.  The load must complete, the guest must be paused and run
# after cont, and the destination's RAM, migrated out again, must equal
# what the source stream ends with.  7.2 -> 7.2, 7.2 -> 10.0 (pc-q35-7.2),
# 10.0 -> 10.0 (pc-q35-10.0 with SWITCHOVER_START, pc-q35-9.2 without), a
# background snapshot; and a negative control: COMMAND 11 added to a 7.2
# stream makes 7.2 refuse it.
#
# The recorded fixtures (tests/data/streams) themselves were captured under
# KVM: their device tail has "kvmclock" sections, which a TCG QEMU refuses
# ("Unknown savevm section or instance 'kvmclock' 0").  They are loaded only
# when /dev/kvm is usable.
. "$(dirname "$0")/lib.sh"

if [ "${SNAPCTL_VARIANT:-plain}" != plain ]; then
	skip "streams into QEMU" "does not run snapctl: plain variant only"
	done_testing
fi

TOOL=$TOP/build/helper-streamtool
if [ ! -x "$TOOL" ]; then
	not_ok "build/helper-streamtool exists (make helpers)"
	done_testing
fi

# The fixtures' devices (vm_start adds -nodefaults; --disk adds virtio-blk).
# shellcheck disable=SC2054
DEVS=(--arg -device --arg VGA,addr=0x1
	--arg -netdev --arg user,id=n0
	--arg -device --arg virtio-net-pci,netdev=n0,addr=0x2
	--arg -netdev --arg user,id=n1
	--arg -device --arg e1000,netdev=n1,addr=0x3)

# field FILE KEY: value of "KEY": "value" in a JSON reply
field() { sed -n "s/.*\"$2\": \"\([^\"]*\)\".*/\1/p" "$1" | head -n1; }

# start NAME VER MACHINE [--incoming]: a VM with the fixtures' devices
start() {
	local name=$1 ver=$2 machine=$3
	shift 3
	[ -e "$TESTDIR/$name.qcow2" ] ||
		vm_qemu_img "$ver" create -q -f qcow2 "$TESTDIR/$name.qcow2" 16M
	vm_start "$name" --qemu "$ver" --machine "$machine" --no-kernel \
		--disk "$TESTDIR/$name.qcow2" "${DEVS[@]}" "$@"
}

# record NAME VER MACHINE OUT [CAPS-JSON]: start a source, let SeaBIOS run
# a moment, migrate it into OUT; the source is stopped afterwards.
record() {
	local name=$1 ver=$2 machine=$3 out=$4 caps=${5:-}
	start "$name" "$ver" "$machine" || return 1
	sleep 1
	if [ -n "$caps" ]; then
		vm_qmp_raw "$name" "{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":$caps}}" \
			>"$TESTDIR/$name.caps" 2>&1 || { cat "$TESTDIR/$name.caps" >&2; vm_stop "$name"; return 1; }
	fi
	vm_save_raw "$name" "$out" 120
	local rc=$?
	vm_stop "$name"
	return $rc
}

# load NAME VER MACHINE STREAM: a fresh -incoming QEMU loads STREAM; checks
# query-migrate and query-status.  The VM stays up (paused) on success.
load() {
	local name=$1 ver=$2 machine=$3 stream=$4 what=$5
	if ! start "$name" "$ver" "$machine" --incoming 2>"$TESTDIR/$name.err"; then
		not_ok "$what: destination starts" "$(cat "$TESTDIR/$name.err")"
		return 1
	fi
	if ! vm_load_raw "$name" "$stream" 120 2>"$TESTDIR/$name.err"; then
		not_ok "$what: QEMU $ver loads it" "$(tail -n 4 "$TESTDIR/$name.err")"
		return 1
	fi
	vm_qmp_raw "$name" '{"execute":"query-migrate"}' >"$TESTDIR/$name.qm"
	vm_qmp_raw "$name" '{"execute":"query-status"}' >"$TESTDIR/$name.qs"
	local st qs
	st=$(field "$TESTDIR/$name.qm" status)
	qs=$(field "$TESTDIR/$name.qs" status)
	if [ "$st" = completed ] && [ "$qs" = paused ]; then
		ok "$what: QEMU $ver loads it (query-migrate $st, query-status $qs)"
	else
		not_ok "$what: QEMU $ver loads it" "query-migrate: $st" "query-status: $qs"
		return 1
	fi
}

# same_ram NAME ORIG WHAT: NAME (loaded, paused) migrates out again; its RAM
# must be what stream ORIG ends with, page for page.
same_ram() {
	local name=$1 orig=$2 what=$3
	if ! vm_save_raw "$name" "$TESTDIR/$name.back" 120 2>"$TESTDIR/$name.err"; then
		not_ok "$what: destination migrates out again" "$(cat "$TESTDIR/$name.err")"
		return 1
	fi
	"$TOOL" digest "$orig" >"$TESTDIR/$name.d1" 2>&1
	"$TOOL" digest "$TESTDIR/$name.back" >"$TESTDIR/$name.d2" 2>&1
	if cmp -s "$TESTDIR/$name.d1" "$TESTDIR/$name.d2"; then
		ok "$what: destination RAM equals the source stream's ($(tail -n1 "$TESTDIR/$name.d1"))"
	else
		not_ok "$what: destination RAM equals the source stream's" \
			"$(diff "$TESTDIR/$name.d1" "$TESTDIR/$name.d2" | head -n 6)"
	fi
}

# runs NAME WHAT: cont, and the guest is running
runs() {
	local name=$1 what=$2
	vm_qmp_raw "$name" '{"execute":"cont"}' >/dev/null
	sleep 0.5
	vm_qmp_raw "$name" '{"execute":"query-status"}' >"$TESTDIR/$name.qs"
	expect_eq "$what: running after cont" running "$(field "$TESTDIR/$name.qs" status)"
}

# regen IN OUT [SWITCHOVER]: parse and rewrite; check the dump.
regen() {
	local in=$1 out=$2 sw=${3:-keep}
	if "$TOOL" regen --switchover "$sw" "$in" "$out" 2>"$TESTDIR/regen.err"; then
		return 0
	fi
	not_ok "streamtool regen $(basename "$in")" "$(cat "$TESTDIR/regen.err")"
	return 1
}

# case_plain SRCVER MACHINE DSTVER TAG: record, check, regen, load, compare
case_plain() {
	local sv=$1 machine=$2 dv=$3 tag=$4 raw=$TESTDIR/$4.raw
	local what="$sv ($machine) -> $dv"
	if ! record "s$tag" "$sv" "$machine" "$raw" 2>"$TESTDIR/s$tag.err"; then
		not_ok "$what: QEMU $sv migrates into a file" "$(tail -n 5 "$TESTDIR/s$tag.err")"
		return 1
	fi
	"$TOOL" dump "$raw" >"$TESTDIR/$tag.dump" 2>&1
	expect_match "$what: the parser reads the recorded stream to its end" \
		'^stats .* complete=1 ' "$TESTDIR/$tag.dump"
	regen "$raw" "$TESTDIR/$tag.regen" || return 1
	if load "d$tag" "$dv" "$machine" "$TESTDIR/$tag.regen" "$what: rebuilt stream"; then
		same_ram "d$tag" "$raw" "$what"
		runs "d$tag" "$what"
	fi
	vm_stop "d$tag"
}

have10=0
vm_have_qemu 10.0 && have10=1

# 7.2 -> 7.2
if case_plain 7.2 pc-q35-7.2 7.2 72; then
	expect_match "7.2: no SWITCHOVER_START in a 7.2 stream" 'saw_switchover=0' "$TESTDIR/72.dump"

	# Negative control: the same stream with COMMAND 11 is refused by 7.2.
	if regen "$TESTDIR/72.raw" "$TESTDIR/72.sw" add; then
		start n72 7.2 pc-q35-7.2 --incoming
		if vm_load_raw n72 "$TESTDIR/72.sw" 60 2>"$TESTDIR/n72.err"; then
			not_ok "7.2 refuses a stream with COMMAND 11 (negative control)" "it loaded"
		else
			expect_match "7.2 refuses a stream with COMMAND 11 (negative control)" \
				'MIG_CMD 0xb unknown' "$(vm_path n72 log)"
		fi
		vm_stop n72
	fi

	# 7.2 -> 10.0 with the 7.2 machine type.
	if [ $have10 = 1 ]; then
		if load d72on10 10.0 pc-q35-7.2 "$TESTDIR/72.regen" "7.2 (pc-q35-7.2) -> 10.0: rebuilt stream"; then
			same_ram d72on10 "$TESTDIR/72.raw" "7.2 (pc-q35-7.2) -> 10.0"
			runs d72on10 "7.2 (pc-q35-7.2) -> 10.0"
		fi
		vm_stop d72on10
	fi
fi

# 10.0 -> 10.0, with and without SWITCHOVER_START.
if [ $have10 = 1 ]; then
	if case_plain 10.0 pc-q35-10.0 10.0 100; then
		expect_match "10.0 pc-q35-10.0: the source sent SWITCHOVER_START, the rebuilt stream keeps it" \
			'saw_switchover=1' <("$TOOL" dump "$TESTDIR/100.regen")
		# Without it, 10.0 loads the stream too.
		if regen "$TESTDIR/100.raw" "$TESTDIR/100.nosw" drop; then
			load d100nosw 10.0 pc-q35-10.0 "$TESTDIR/100.nosw" \
				"10.0 (pc-q35-10.0) -> 10.0: rebuilt without COMMAND 11"
			vm_stop d100nosw
		fi
	fi
	if case_plain 10.0 pc-q35-9.2 10.0 92; then
		expect_match "10.0 pc-q35-9.2: no SWITCHOVER_START" 'saw_switchover=0' "$TESTDIR/92.dump"
	fi
else
	skip "10.0 streams" "QEMU 10.0 not installed (tests/deps.sh)"
fi

# Background snapshot on 7.2: no END section in the source stream.
if record sbg 7.2 pc-q35-7.2 "$TESTDIR/bg.raw" '[{"capability":"background-snapshot","state":true}]' \
	2>"$TESTDIR/sbg.err"; then
	"$TOOL" dump "$TESTDIR/bg.raw" >"$TESTDIR/bg.dump" 2>&1
	expect_match "background snapshot: parsed, no END section" 'saw_end=0 .*complete=1' "$TESTDIR/bg.dump"
	if regen "$TESTDIR/bg.raw" "$TESTDIR/bg.regen"; then
		if load dbg 7.2 pc-q35-7.2 "$TESTDIR/bg.regen" "7.2 background snapshot: rebuilt stream"; then
			same_ram dbg "$TESTDIR/bg.raw" "7.2 background snapshot"
		fi
		vm_stop dbg
	fi
else
	skip "background snapshot" "QEMU refused it here: $(grep -o '"desc": "[^"]*"' "$TESTDIR/sbg.err" "$TESTDIR/sbg.caps" 2>/dev/null | head -n1)"
fi

# The recorded fixtures themselves need KVM (kvmclock in their tails).
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
	# shellcheck disable=SC2034  # read by vm_start (tests/lib/vm.sh)
	VM_ACCEL=kvm
	for f in stream_72_pc-q35-7.2:7.2:pc-q35-7.2 stream_72_bg:7.2:pc-q35-7.2 \
		stream_10_pc-q35-10.0:10.0:pc-q35-10.0 stream_10_q35_9.2:10.0:pc-q35-9.2 \
		stream_10_bg:10.0:pc-q35-10.0 stream_72_pc-q35-7.2:10.0:pc-q35-7.2; do
		IFS=: read -r fx ver machine <<<"$f"
		if [ "$ver" = 10.0 ] && [ $have10 = 0 ]; then
			skip "fixture $fx on 10.0" "QEMU 10.0 not installed"
			continue
		fi
		zstd -q -d -c "$TOP/tests/data/streams/$fx.bin.zst" >"$TESTDIR/$fx.bin"
		regen "$TESTDIR/$fx.bin" "$TESTDIR/$fx.regen" || continue
		tag=k${fx//[^a-z0-9]/}${ver//./}
		# The fixtures have no virtio-blk; their disk would add a section.
		if vm_start "$tag" --qemu "$ver" --machine "$machine" --no-kernel \
			"${DEVS[@]}" --incoming 2>"$TESTDIR/$tag.err" &&
			vm_load_raw "$tag" "$TESTDIR/$fx.regen" 120 2>>"$TESTDIR/$tag.err"; then
			ok "fixture $fx rebuilt loads into QEMU $ver ($machine, KVM)"
		else
			not_ok "fixture $fx rebuilt loads into QEMU $ver ($machine, KVM)" \
				"$(tail -n 3 "$TESTDIR/$tag.err")"
		fi
		vm_stop "$tag"
	done
	# shellcheck disable=SC2034
	VM_ACCEL=tcg
else
	skip "the recorded fixtures in QEMU" "they were captured under KVM (kvmclock sections) and /dev/kvm is not usable here"
fi

vm_stop_all
expect_eq "no QEMU of this test is left" "" "$(vm_test_pids)"
done_testing
