#!/usr/bin/env bash
# t-restore: snapctl restore against real QEMU 7.2 and 10.0.  A churning
# guest (memory rewritten all the time, ordered records on its disk) is
# checkpointed and killed; fresh QEMUs started with -incoming defer on the
# checkpoint's disk files get it back: the guest carries on (same run, no
# reboot, counters past the checkpoint's), verifies every page it owns and
# that its disk holds what its memory says it wrote; twice, and with
# --paused and --exec.  A 7.2 checkpoint goes into 10.0 with the 7.2
# machine type.  Refusals come before QEMU is touched: unknown name, wrong
# machine type, wrong RAM size, wrong disk, a disk file changed since the
# checkpoint, a damaged memory image, a QEMU that is not waiting.  A stream
# QEMU refuses leaves no overlay and no QEMU behind.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=96 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=50 churn.tick=200"

# ---- the command line, no VM needed ------------------------------------
N=(-s "$TESTDIR/nodir/qmp.sock" -d "$TESTDIR/none")
expect_code 2 "restore needs a name" "$SNAPCTL" "${N[@]}" restore
expect_code 2 "restore needs a store" "$SNAPCTL" -s "$TESTDIR/x" restore c1
expect_code 2 "restore needs a socket" "$SNAPCTL" -d "$TESTDIR/x" restore c1
expect_code 2 "an extra argument without --exec is refused" "$SNAPCTL" "${N[@]}" restore c1 qemu
expect_match "... saying where a QEMU command line goes" "after --exec --" "$TESTDIR/stderr"
expect_code 2 "--exec without a command line is refused" "$SNAPCTL" "${N[@]}" restore c1 --exec
expect_code 2 "--exec-log without --exec is refused" "$SNAPCTL" "${N[@]}" restore --exec-log x c1
expect_code 2 "--timeout 0 is refused" "$SNAPCTL" "${N[@]}" restore --timeout 0 c1
expect_code 2 "a bad name is refused" "$SNAPCTL" "${N[@]}" restore ../c1
expect_code 1 "a store that does not exist: exit 1" "$SNAPCTL" "${N[@]}" restore c1
ck_one_line "... one line" "$TESTDIR/stderr"

# last_tick VM: the newest complete TICK line of VM's serial console.
last_tick() { grep -a '^CHURN TICK' "$(vm_path "$1" serial)" | tail -n 1 | tr -d '\r'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# untouched VM DESC DIR: a refused restore left the waiting QEMU, the
# disk directory and the store's restore overlays alone.
untouched() {
	expect_eq "$2: QEMU still waits" inmigrate "$(ck_status "$1")"
	expect_eq "$2: no overlay was made" "" "$(cd "$3" && ls -- *.restore-* "$store"/.restores/* 2>/dev/null)"
}

# ovls: the restore overlays (and records) in the store, sorted.
ovls() { (cd "$store/.restores" 2>/dev/null && ls -1 | sort); }

# carries_on VM DESC RUN COUNTER: the restored guest is the checkpointed
# run carrying on, not a reboot, and verifies its memory and its disk.
carries_on() {
	local vm=$1 d=$2 run=$3 counter=$4 tick
	tick=$(vm_wait_serial "$vm" '^CHURN TICK' 60)
	expect_eq "$d: the same churn run" "$run" "$(field run "$tick")"
	if [ -n "$tick" ] && [ "$(field counter "$tick")" -ge "$counter" ]; then
		ok "$d: its counter carries on ($(field counter "$tick") >= $counter)"
	else
		not_ok "$d: its counter carries on" "first tick: '$tick', checkpoint at $counter"
	fi
	check "$d: not a reboot (no READY line)" sh -c "! grep -aq '^CHURN READY' '$(vm_path "$vm" serial)'"
	check "$d: the guest verifies its whole memory" vm_wait_serial "$vm" '^CHURN VERIFY ok' 60
	check "$d: its disk records agree with its memory" vm_wait_serial "$vm" '^CHURN DISKVERIFY ok' 60
	if grep -aq FAIL "$(vm_path "$vm" serial)"; then
		not_ok "$d: no FAIL line" "$(grep -a FAIL "$(vm_path "$vm" serial)" | head -n 3)"
	else
		ok "$d: no FAIL line"
	fi
}

# sig_restore VM REGEX DELAY LOG [VAR=VALUE...]: restore c1 into VM in the
# background with the QMP trace on, SIGINT snapctl DELAY seconds after the
# trace matches REGEX; its exit code in rc, its stderr without the trace
# in LOG.
sig_restore() {
	local vm=$1 re=$2 delay=$3 log=$4 spid t
	shift 4
	env "$@" SNAPCTL_TRACE=1 "$SNAPCTL" -s "$(vm_path "$vm" qmp)" "${R[@]}" restore c1 \
		>/dev/null 2>"$log.trace" &
	spid=$!
	for t in $(seq 1500); do
		grep -q -- "$re" "$log.trace" && break
		sleep 0.02
	done
	sleep "$delay"
	kill -INT "$spid"
	wait "$spid"
	rc=$?
	grep -v '^[-<][->] ' "$log.trace" >"$log"
}

for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	v=${ver//./}
	dir=$TESTDIR/q$v
	store=$dir/store
	mkdir -p "$dir"
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	if ! vm_start "src$v" --qemu "$ver" --agent --disk "$dir/d0.qcow2" \
		--append "$CHURN" 2>"$dir/src.err" || ! vm_wait_ready "src$v" 120 >"$dir/ready"; then
		not_ok "QEMU $ver: guest starts" "$(tail -n 5 "$dir/src.err")"
		continue
	fi
	run=$(field run "$(tr -d '\r' <"$dir/ready")")
	vm_wait_serial "src$v" '^CHURN DISKVERIFY' 30 >/dev/null
	sleep 1
	# QEMU 7.2 under TCG loses pages it redirties across live passes (its
	# own raw stream fails the guest's check too): capture it paused.
	mode=""
	[ "$ver" = 7.2 ] && mode=--pause
	# A lower bound of the counter at the checkpoint's instant.
	at=$(field counter "$(last_tick "src$v")")
	at=${at:-0}
	if ! "$SNAPCTL" -s "$(vm_path "src$v" qmp)" -d "$store" checkpoint $mode c1 >/dev/null 2>"$dir/c1.err"; then
		not_ok "QEMU $ver: checkpoint c1" "$(cat "$dir/c1.err")"
		continue
	fi
	m=$store/c1/manifest.json
	file=$(jq_get "$m" disks.0.file)
	expect_eq "QEMU $ver: c1's disk state is in d0.c1.qcow2" "$dir/d0.c1.qcow2" "$file"
	machine=$(jq_get "$m" vm.machine)
	vm_kill "src$v" KILL
	stamp=$(stat -c '%s %Y' "$file")

	# ---- refusals, each before QEMU is touched ---------------------------
	R=(-d "$store")
	vm_start "t$v" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
	expect_code 1 "QEMU $ver: unknown checkpoint: exit 1" "$SNAPCTL" -s "$(vm_path "t$v" qmp)" "${R[@]}" restore c9
	expect_match "QEMU $ver: ... naming it" "^snapctl: .*'c9'" "$TESTDIR/stderr"
	untouched "t$v" "QEMU $ver: unknown checkpoint" "$dir"
	vm_kill "t$v" KILL

	other=pc-q35-7.1
	[ "$ver" = 10.0 ] && other=pc-q35-9.2
	vm_start "t$v" --qemu "$ver" --machine "$other" --agent --disk "$file" --append "$CHURN" --incoming
	expect_code 4 "QEMU $ver: wrong machine type: exit 4" "$SNAPCTL" -s "$(vm_path "t$v" qmp)" "${R[@]}" restore c1
	expect_match "QEMU $ver: ... saying which" "^snapctl: wrong machine type: .*'$machine'.*'$other' \(start it with -machine $machine\)$" "$TESTDIR/stderr"
	untouched "t$v" "QEMU $ver: wrong machine type" "$dir"
	vm_kill "t$v" KILL

	vm_start "t$v" --qemu "$ver" --mem 384 --agent --disk "$file" --append "$CHURN" --incoming
	expect_code 4 "QEMU $ver: wrong RAM size: exit 4" "$SNAPCTL" -s "$(vm_path "t$v" qmp)" "${R[@]}" restore c1
	expect_match "QEMU $ver: ... with the size to use" "^snapctl: wrong RAM size: .* 256.0 MiB of RAM, the VM 384.0 MiB \(start it with -m 256M\)$" "$TESTDIR/stderr"
	untouched "t$v" "QEMU $ver: wrong RAM size" "$dir"
	vm_kill "t$v" KILL

	qemu-img create -q -f qcow2 "$dir/other.qcow2" 64M
	vm_start "t$v" --qemu "$ver" --agent --disk "$dir/other.qcow2" --append "$CHURN" --incoming
	expect_code 4 "QEMU $ver: wrong disk: exit 4" "$SNAPCTL" -s "$(vm_path "t$v" qmp)" "${R[@]}" restore c1
	expect_match "QEMU $ver: ... naming both files" "^snapctl: wrong disk: the VM opened '$dir/other.qcow2' as disk 'vd0', but checkpoint 'c1' holds that disk's state in '$file'$" "$TESTDIR/stderr"
	untouched "t$v" "QEMU $ver: wrong disk" "$dir"
	vm_kill "t$v" KILL

	vm_start "t$v" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
	tq=$(vm_path "t$v" qmp)
	mt=$(stat -c %y "$file")
	touch "$file"
	expect_code 4 "QEMU $ver: a disk file changed since the checkpoint: exit 4" "$SNAPCTL" -s "$tq" "${R[@]}" restore c1
	expect_match "QEMU $ver: ... saying which" "^snapctl: checkpoint 'c1': disk 'vd0': '$file' changed since the checkpoint" "$TESTDIR/stderr"
	touch -d "$mt" "$file"
	untouched "t$v" "QEMU $ver: changed disk" "$dir"

	cp -a "$store" "$dir/bad"
	img=$dir/bad/c1/memory.img
	size=$(stat -c %s "$img")
	printf '\xff\x00\xff\x00' | dd of="$img" bs=1 seek=$((size / 2)) conv=notrunc status=none
	expect_code 1 "QEMU $ver: a damaged memory image: exit 1" "$SNAPCTL" -s "$tq" -d "$dir/bad" restore c1
	expect_match "QEMU $ver: ... naming the chunk" "^snapctl: checkpoint 'c1': memory image: .*chunk [0-9]+" "$TESTDIR/stderr"
	ck_one_line "QEMU $ver: ... in one line" "$TESTDIR/stderr"
	untouched "t$v" "QEMU $ver: damaged image" "$dir"

	check "QEMU $ver: --dry-run passes on the right VM" "$SNAPCTL" -s "$tq" "${R[@]}" restore --dry-run c1
	expect_match "QEMU $ver: ... and says nothing changed" "fits the QEMU .*nothing was changed" "$TESTDIR/stdout"
	untouched "t$v" "QEMU $ver: --dry-run" "$dir"

	# ---- restore, twice --------------------------------------------------
	if "$SNAPCTL" -s "$tq" "${R[@]}" --json restore c1 >"$dir/r1.json" 2>"$dir/r1.err"; then
		ok "QEMU $ver: restore c1"
		ov=$(jq_get "$dir/r1.json" disks.0.overlay)
		check "QEMU $ver: the new overlay exists" test -f "$ov"
		expect_eq "QEMU $ver: ... 0600 (guest data)" 600 "$(stat -c %a "$ov")"
		case $ov in
		"$store"/.restores/d0.c1.restore-*.qcow2) ok "QEMU $ver: ... in STORE/.restores, named after the stem of c1's state d0.c1.qcow2" ;;
		*) not_ok "QEMU $ver: ... in STORE/.restores, named after the stem of c1's state d0.c1.qcow2" "$ov" ;;
		esac
		expect_eq "QEMU $ver: ... and recorded there: checkpoint, device and inode" "c1 $(stat -c '%d %i' "$ov")" \
			"$(jq_get "$ov.json" checkpoint) $(jq_get "$ov.json" dev) $(jq_get "$ov.json" ino)"
		expect_eq "QEMU $ver: the guest writes to it" "$ov" "$(ck_active_file "t$v" vd0)"
		expect_eq "QEMU $ver: the guest runs" running "$(ck_status "t$v")"
		expect_eq "QEMU $ver: --json status" running "$(jq_get "$dir/r1.json" status)"
		carries_on "t$v" "QEMU $ver: restored c1" "$run" "$at"
		# Its checkpoints descend from c1, then from each other (the
		# restored VM has another -name: by VM identity alone it would
		# have no parent).
		if "$SNAPCTL" -s "$tq" -d "$store" -q checkpoint --disk-only p1 2>"$dir/p1.err" &&
			"$SNAPCTL" -s "$tq" -d "$store" -q checkpoint --disk-only p2 2>"$dir/p2.err"; then
			expect_eq "QEMU $ver: a checkpoint of the restored VM has c1 as its parent" c1 "$(jq_get "$store/p1/manifest.json" parent)"
			expect_eq "QEMU $ver: ... and the next one p1" p1 "$(jq_get "$store/p2/manifest.json" parent)"
			# The restored VM's path stays its disk; names do not
			# compound: p2's state is not ...p1.p2.
			# (the restored disk d0.c1.restore-T.qcow2 extends c1's
			# state d0.c1.qcow2: its stem is d0.c1)
			expect_eq "QEMU $ver: p1's state is d0.c1.p1.qcow2" "$(dirname "$ov")/d0.c1.p1.qcow2" "$(jq_get "$store/p1/manifest.json" disks.0.file)"
			expect_eq "QEMU $ver: p2's state is d0.c1.p2.qcow2" "$(dirname "$ov")/d0.c1.p2.qcow2" "$(jq_get "$store/p2/manifest.json" disks.0.file)"
			expect_eq "QEMU $ver: the restored VM writes on at its overlay" "$ov" "$(ck_active_file "t$v" vd0)"
			expect_eq "QEMU $ver: ... whose record followed both swaps (it proves the file there now)" \
				"$(stat -c '%d %i' "$ov")" "$(jq_get "$ov.json" swap.dev) $(jq_get "$ov.json" swap.ino)"
			check "QEMU $ver: the store notes which checkpoint that QEMU came from" test -f "$store/.last-$(vm_pid "t$v").json"
		else
			not_ok "QEMU $ver: checkpoints of the restored VM" "$(cat "$dir/p1.err" "$dir/p2.err")"
		fi
	else
		not_ok "QEMU $ver: restore c1" "$(cat "$dir/r1.err")"
	fi
	vm_kill "t$v" KILL
	expect_eq "QEMU $ver: the checkpoint's disk file was never written" "$stamp" "$(stat -c '%s %Y' "$file")"

	vm_start "u$v" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
	if "$SNAPCTL" -s "$(vm_path "u$v" qmp)" "${R[@]}" restore --paused c1 >"$dir/r2.out" 2>"$dir/r2.err"; then
		ok "QEMU $ver: restore c1 a second time, --paused"
		expect_eq "QEMU $ver: the guest waits, paused" paused "$(ck_status "u$v")"
		vm_qmp_raw "u$v" '{"execute":"cont"}' >/dev/null
		carries_on "u$v" "QEMU $ver: restored c1 again" "$run" "$at"
	else
		not_ok "QEMU $ver: restore c1 a second time" "$(cat "$dir/r2.err")"
	fi
	vm_kill "u$v" KILL

	# ---- --lazy: postcopy ------------------------------------------------
	vm_start "l$v" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
	lq=$(vm_path "l$v" qmp)
	if "$SNAPCTL" -s "$lq" "${R[@]}" --json restore --lazy c1 >"$dir/rl.json" 2>"$dir/rl.err"; then
		ok "QEMU $ver: restore --lazy c1"
		expect_eq "QEMU $ver: --json mode" lazy "$(jq_get "$dir/rl.json" mode)"
		expect_eq "QEMU $ver: the guest runs" running "$(ck_status "l$v")"
		expect_eq "QEMU $ver: QEMU has all the memory when snapctl returns" completed "$(ck_mig_status "l$v")"
		ls_=$(jq_get "$dir/rl.json" timings.load_s) ms_=$(jq_get "$dir/rl.json" timings.memory_s)
		if awk -v l="$ls_" -v m="$ms_" 'BEGIN { exit !(l > 0 && m >= l) }'; then
			ok "QEMU $ver: the guest could run ($ls_ s) before its memory was all in ($ms_ s)"
		else
			not_ok "QEMU $ver: load_s and memory_s" "load_s '$ls_', memory_s '$ms_'"
		fi
		check "QEMU $ver: it reports QEMU's page requests" jq_get "$dir/rl.json" memory.requests
		expect_eq "QEMU $ver: the guest writes to the new overlay" "$(jq_get "$dir/rl.json" disks.0.overlay)" "$(ck_active_file "l$v" vd0)"
		carries_on "l$v" "QEMU $ver: lazily restored c1" "$run" "$at"
	else
		not_ok "QEMU $ver: restore --lazy c1" "$(cat "$dir/rl.err")"
	fi
	vm_kill "l$v" KILL

	# A RAM block the checkpoint lacks (a VGA's video memory): postcopy
	# would leave it empty, so --lazy refuses before touching QEMU.
	vm_start "n$v" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming --arg -device --arg VGA
	before=$(ovls)
	expect_code 4 "QEMU $ver: --lazy refuses a VM with a RAM block the checkpoint lacks: exit 4" "$SNAPCTL" -s "$(vm_path "n$v" qmp)" "${R[@]}" restore --lazy c1
	expect_match "QEMU $ver: ... naming it" "^snapctl: the VM has a RAM block '[^']*vga.vram' that checkpoint 'c1' does not hold" "$TESTDIR/stderr"
	expect_eq "QEMU $ver: ... QEMU still waits" inmigrate "$(ck_status "n$v")"
	expect_eq "QEMU $ver: ... no overlay was made" "$before" "$(ovls)"
	vm_kill "n$v" KILL

	# SIGINT once QEMU loads a lazy restore (here: once the guest runs):
	# snapctl sends the rest of the memory anyway (exit 0, a warning), as
	# a page never sent would stall the guest.
	vm_start "m$v" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
	vm_watch_events "m$v" "$dir/m.events"
	"$SNAPCTL" -s "$(vm_path "m$v" qmp)" "${R[@]}" restore --lazy c1 >/dev/null 2>"$dir/rm.err" &
	spid=$!
	vm_wait_event "$dir/m.events" '"event": *"RESUME"' 60 >/dev/null
	signalled=0
	kill -INT "$spid" 2>/dev/null && signalled=1
	wait "$spid"
	expect_eq "QEMU $ver: SIGINT once the guest runs: the lazy restore completes (exit 0)" 0 "$?"
	if [ $signalled = 0 ]; then
		skip "QEMU $ver: ... with a warning" "the restore finished before SIGINT"
	else
		expect_match "QEMU $ver: ... with a warning" "^snapctl: warning: SIGINT came during the lazy restore" "$dir/rm.err"
	fi
	expect_eq "QEMU $ver: ... QEMU has all the memory" completed "$(ck_mig_status "m$v")"
	carries_on "m$v" "QEMU $ver: lazily restored despite SIGINT" "$run" "$at"
	vm_kill "m$v" KILL

	# QEMU killed once the guest runs: snapctl says so and exits 3 (it
	# does not wait for its timeout).
	vm_start "k$v" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
	vm_watch_events "k$v" "$dir/k.events"
	"$SNAPCTL" -s "$(vm_path "k$v" qmp)" "${R[@]}" restore --lazy --timeout 60 c1 >/dev/null 2>"$dir/rk.err" &
	spid=$!
	vm_wait_event "$dir/k.events" '"event": *"RESUME"' 60 >/dev/null
	kill -KILL "$(vm_pid "k$v")"
	wait "$spid"
	rc=$?
	if [ $rc = 0 ]; then
		skip "QEMU $ver: QEMU killed during a lazy restore" "the restore finished first"
	else
		expect_eq "QEMU $ver: QEMU killed during a lazy restore: exit 3" 3 "$rc"
		expect_match "QEMU $ver: ... saying QEMU went away" "^snapctl: restore: QEMU (went away|exited)" "$dir/rk.err"
		ck_one_line "QEMU $ver: ... in one line" "$dir/rk.err"
		# The guest ran on the overlay: it holds the guest's writes,
		# so it stays, and the error names it.
		# "may have run": QEMU died before its RESUME reached snapctl.
		ov=$(sed -n "s/.*; the guest \(ran\|may have run\) on overlay '\([^']*\)'\$/\2/p" "$dir/rk.err")
		if [[ $ov == "$store"/.restores/d0.c1.restore-*.qcow2 ]]; then
			ok "QEMU $ver: ... naming the overlay the guest ran on ($(basename "$ov"))"
		else
			not_ok "QEMU $ver: ... naming the overlay the guest ran on" "$(cat "$dir/rk.err")"
		fi
		check "QEMU $ver: ... which is kept" test -f "$ov"
		rm -f "$ov"
	fi
	vm_kill "k$v" KILL

	# ---- SIGINT during an eager restore -----------------------------------
	# Before the overlays are cut QEMU is untouched: exit 8, QEMU still
	# waits and takes the restore again.  Once QEMU began loading, a
	# stream cut short would make 7.2 exit and leave 10.0 unable to take
	# another, so snapctl finishes the load, leaves the guest paused on
	# its overlay and says so: exit 8, one line.  The hold (test only)
	# pauses snapctl after the checks, and in the load after the
	# stream's first MiB.
	for try in 1 2 3; do
		sv=s$v$try
		vm_start "$sv" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
		before=$(ovls)
		sig_restore "$sv" '"execute":"query-block"' 0.3 "$dir/si$try" SNAPCTL_TEST_RESTORE_HOLD_MS=2000
		expect_eq "QEMU $ver: SIGINT during the checks ($try): exit 8" 8 "$rc"
		expect_match "QEMU $ver: ... interrupted by SIGINT" "^snapctl: interrupted by SIGINT$" "$dir/si$try"
		ck_one_line "QEMU $ver: ... in one line" "$dir/si$try"
		expect_eq "QEMU $ver: ... QEMU still waits" inmigrate "$(ck_status "$sv")"
		expect_eq "QEMU $ver: ... with no incoming migration" none "$(ck_mig_status "$sv")"
		expect_eq "QEMU $ver: ... no overlay was made" "$before" "$(ovls)"
		if "$SNAPCTL" -s "$(vm_path "$sv" qmp)" "${R[@]}" restore c1 >/dev/null 2>"$dir/si$try.2"; then
			ok "QEMU $ver: ... and a second restore then succeeds"
			expect_eq "QEMU $ver: ... its guest runs" running "$(ck_status "$sv")"
		else
			not_ok "QEMU $ver: ... and a second restore then succeeds" "$(cat "$dir/si$try.2")"
		fi
		vm_kill "$sv" KILL

		vm_start "$sv" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming
		# Try 2: a QEMU that would start the guest itself after the
		# load (cont while waiting: as if started without -S).
		[ $try = 2 ] && vm_qmp_raw "$sv" '{"execute":"cont"}' >/dev/null
		vm_watch_events "$sv" "$dir/sl$try.events"
		sig_restore "$sv" '"execute":"migrate-incoming"' 0.5 "$dir/sl$try" SNAPCTL_TEST_RESTORE_HOLD_MS=2000
		d="QEMU $ver: SIGINT during the load ($try)"
		[ $try = 2 ] && d="QEMU $ver: SIGINT during the load ($try, autostart on)"
		expect_eq "$d: exit 8" 8 "$rc"
		expect_match "$d: ... the load went on, the guest is paused on the named overlay" \
			"^snapctl: interrupted by SIGINT: QEMU had begun loading the checkpoint, so it went on; the guest is paused on overlay '$store/\.restores/d0\.c1\.restore-[^']*\.qcow2'\$" "$dir/sl$try"
		ck_one_line "$d: ... in one line" "$dir/sl$try"
		if vm_alive "$sv"; then
			ok "$d: QEMU is still there"
		else
			not_ok "$d: QEMU is still there" "$(tail -n 3 "$(vm_path "$sv" log)")"
		fi
		expect_eq "$d: ... with the checkpoint loaded" completed "$(ck_mig_status "$sv")"
		expect_eq "$d: ... the guest paused" paused "$(ck_status "$sv")"
		check "$d: ... never resumed (no RESUME event)" sh -c "! grep -q RESUME '$dir/sl$try.events'"
		ov=$(sed -n "s/.*paused on overlay '\([^']*\)'\$/\1/p" "$dir/sl$try")
		expect_eq "$d: ... on the overlay named" "$ov" "$(ck_active_file "$sv" vd0)"
		vm_qmp_raw "$sv" '{"execute":"cont"}' >/dev/null
		expect_eq "$d: cont runs it" running "$(ck_status "$sv")"
		[ $try = 1 ] && carries_on "$sv" "$d: the guest" "$run" "$at"
		vm_kill "$sv" KILL
	done

	# ---- --exec: snapctl starts QEMU --------------------------------------
	# The command line of the waiting QEMU t, without what snapctl adds,
	# and with its files renamed to x.
	mapfile -t args <"$(vm_path "t$v" args)"
	# The first line is the binary, maybe "env VAR=... /path/qemu".
	read -r -a binv <<<"${args[0]}"
	args=("${binv[@]}" "${args[@]:1}")
	xargs_=()
	skip_next=0
	for a in "${args[@]}"; do
		if [ $skip_next -eq 1 ]; then skip_next=0; continue; fi
		case $a in
		-incoming) skip_next=1; continue ;;
		-S) continue ;;
		"unix:$TESTDIR/t$v.qmp,server=on,wait=off") unset 'xargs_[${#xargs_[@]}-1]'; continue ;;
		esac
		xargs_+=("${a//$TESTDIR\/t$v./$TESTDIR/x$v.}")
	done
	_vm_names+=("x$v")
	xq=$TESTDIR/x$v.qmp
	if "$SNAPCTL" -s "$xq" "${R[@]}" restore c1 --exec -- "${xargs_[@]}" >"$dir/r3.out" 2>"$dir/r3.err"; then
		ok "QEMU $ver: restore --exec starts QEMU and restores c1"
		expect_eq "QEMU $ver: its guest runs" running "$(vm_qmp_raw "x$v" '{"execute":"query-status"}' | jq_get - return.status)"
		check "QEMU $ver: snapctl can talk to it on -s" "$SNAPCTL" -s "$xq" qmp query-name
		check "QEMU $ver: QEMU's output went to SOCKET.log" test -f "$xq.log"
		carries_on "x$v" "QEMU $ver: restored by --exec" "$run" "$at"
	else
		not_ok "QEMU $ver: restore --exec" "$(cat "$dir/r3.err")"
	fi
	vm_kill "x$v" KILL

	# --lazy with --exec, as the CI example in the README does it.
	rm -f "$xq" "$TESTDIR/x$v.pid" "$TESTDIR/x$v.serial"
	if "$SNAPCTL" -s "$xq" "${R[@]}" --json restore --lazy c1 --exec -- "${xargs_[@]}" >"$dir/r6.json" 2>"$dir/r6.err"; then
		ok "QEMU $ver: restore --lazy --exec starts QEMU and restores c1"
		expect_eq "QEMU $ver: ... lazily" lazy "$(jq_get "$dir/r6.json" mode)"
		expect_eq "QEMU $ver: ... and QEMU has all the memory" completed "$(ck_mig_status "x$v")"
		carries_on "x$v" "QEMU $ver: restored by --lazy --exec" "$run" "$at"
	else
		not_ok "QEMU $ver: restore --lazy --exec" "$(cat "$dir/r6.err")"
	fi
	vm_kill "x$v" KILL

	# A stream QEMU refuses (its VM lacks the agent's virtio-serial, whose
	# state the stream carries): no overlay is left, the QEMU is killed.
	# The agent's virtio-serial at another PCI address: the same devices
	# (ids, types, buses: snapctl's checks pass), a stream QEMU refuses.
	noagent=()
	for a in "${xargs_[@]}"; do
		noagent+=("${a/id=vser0,bus=pcie.0,addr=0x8/id=vser0,bus=pcie.0,addr=0x9}")
	done
	rm -f "$xq" "$TESTDIR/x$v.pid"
	before=$(ovls)
	"$SNAPCTL" -s "$xq" "${R[@]}" restore c1 --exec -- "${noagent[@]}" >/dev/null 2>"$dir/r4.err"
	rc=$?
	if [ $rc -eq 1 ] || [ $rc -eq 3 ]; then
		ok "QEMU $ver: a refused stream fails the restore (exit $rc: $(head -c 300 "$dir/r4.err"))"
	else
		not_ok "QEMU $ver: a refused stream fails the restore" "exit $rc" "$(cat "$dir/r4.err")"
	fi
	expect_match "QEMU $ver: ... with QEMU's own reason" "^snapctl: restore: QEMU refused the checkpoint: Unknown savevm section or instance '0000:00:08.0/virtio-console'.* \(log: '$xq.log'\)$" "$dir/r4.err"
	ck_one_line "QEMU $ver: ... in one line" "$dir/r4.err"
	expect_eq "QEMU $ver: ... and leaves no overlay" "$before" "$(ovls)"
	sleep 0.5
	pid=$(cat "$TESTDIR/x$v.pid" 2>/dev/null)
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		not_ok "QEMU $ver: ... and no QEMU" "pid $pid still runs"
	else
		ok "QEMU $ver: ... and no QEMU"
	fi
	check "QEMU $ver: ... nor its socket" test ! -e "$xq"

	# ---- QEMU that is not waiting ----------------------------------------
	vm_start "w$v" --qemu "$ver" --no-kernel
	expect_code 4 "QEMU $ver: a running VM is refused: exit 4" "$SNAPCTL" -s "$(vm_path "w$v" qmp)" "${R[@]}" restore c1
	expect_match "QEMU $ver: ... saying to start it with -incoming defer" "not waiting for a checkpoint \(it is running\): start it with -incoming defer" "$TESTDIR/stderr"
	vm_kill "w$v" KILL

	# ---- 7.2 into 10.0 with the 7.2 machine type --------------------------
	if [ "$ver" = 7.2 ] && vm_have_qemu 10.0; then
		vm_start "y$v" --qemu 10.0 --machine "$machine" --agent --disk "$file" --append "$CHURN" --incoming
		if "$SNAPCTL" -s "$(vm_path "y$v" qmp)" "${R[@]}" restore c1 >/dev/null 2>"$dir/r5.err"; then
			ok "QEMU 7.2 c1 restores into QEMU 10.0 -machine $machine"
			carries_on "y$v" "QEMU 7.2 c1 on 10.0" "$run" "$at"
		else
			not_ok "QEMU 7.2 c1 restores into QEMU 10.0" "$(cat "$dir/r5.err")"
		fi
		vm_kill "y$v" KILL
	fi
done

vm_stop_all
done_testing
