#!/usr/bin/env bash
# t-rig: the real-QEMU test rig itself (tests/lib/vm.sh, tests/guest/).
# Boots the test guest on QEMU 7.2 and 10.0 (side by side), waits for churn
# to report READY and clean memory and disk verifications, talks raw QMP on
# the second monitor and to the guest agent, watches events on the third
# monitor; saves the 7.2 guest with QEMU's own migration into a file and
# loads it into 7.2 and 10.0 (--incoming), where churn must carry on; and
# checks that nothing is left running.  Also runs churn on the host to show
# its verifier catches a damaged page and record.
. "$(dirname "$0")/lib.sh"

# Nothing here runs snapctl: once per suite is enough.
if [ "${SNAPCTL_VARIANT:-plain}" != plain ]; then
	skip "the VM rig" "tested in the plain variant only"
	done_testing
fi

# churn's verifier must catch damage (host run: no VM needed, ~4 s; cold=0:
# a random cold write must not rewrite the damaged page before the check).
if gcc -O2 -Wall -Wextra -Werror -o "$TESTDIR/churn" "$TOP/tests/guest/churn.c" 2>"$TESTDIR/cc.err"; then
	ok "churn.c compiles with -Wall -Wextra -Werror"
	truncate -s 1M "$TESTDIR/host.disk"
	"$TESTDIR/churn" mb=16 cold=0 secs=5 tick=500 verify=1000 diskrate=50 \
		disk="$TESTDIR/host.disk" corrupt=2500 >"$TESTDIR/host.out" 2>&1
	expect_match "host churn: clean verification before the damage" \
		'^CHURN VERIFY ok pages=4096 ' "$TESTDIR/host.out"
	expect_match "host churn: clean disk verification before the damage" \
		'^CHURN DISKVERIFY ok seq=[0-9]+ next=' "$TESTDIR/host.out"
	expect_match "host churn: damaged page reported" \
		'^CHURN VERIFY FAIL page=2049 expected_gen=0 found_gen=0 .*kind=garbage bad_pages=1' "$TESTDIR/host.out"
	expect_match "host churn: damaged record reported" \
		'^CHURN DISKVERIFY FAIL .*found=corrupt' "$TESTDIR/host.out"
else
	not_ok "churn.c compiles with -Wall -Wextra -Werror" "$(cat "$TESTDIR/cc.err")"
fi

if ! vm_guest 2>"$TESTDIR/guest.err"; then
	not_ok "test guest builds" "$(tail -n 5 "$TESTDIR/guest.err")"
	done_testing
fi
ok "test guest is built (kernel $GUEST_KVER)"

# Start both first (2 cores: they boot in parallel), then check each.
declare -A started
for ver in 7.2 10.0; do
	name=g${ver//./}
	if ! vm_have_qemu "$ver"; then
		skip "boot on QEMU $ver" "QEMU $ver not installed (tests/deps.sh)"
		continue
	fi
	qemu-img create -q -f qcow2 "$TESTDIR/$name.qcow2" 32M
	started[$ver]=$(date +%s%N)
	check "vm_start on QEMU $ver" vm_start "$name" --qemu "$ver" --agent \
		--disk "$TESTDIR/$name.qcow2" \
		--append "churn.mb=96 churn.verify=1000 churn.disk=/dev/vda"
done

for ver in 7.2 10.0; do
	name=g${ver//./}
	[ -n "${started[$ver]:-}" ] || continue
	if line=$(vm_wait_ready "$name" 120); then
		ms=$((($(date +%s%N) - started[$ver]) / 1000000))
		ok "QEMU $ver: churn READY (guest uptime ${line##*uptime_ms=} ms; seen ${ms} ms after vm_start)"
	else
		not_ok "QEMU $ver: churn READY"
		continue
	fi
	check "QEMU $ver: memory verification ok" vm_wait_serial "$name" '^CHURN VERIFY ok pages=24576 ' 60
	check "QEMU $ver: disk verification ok" vm_wait_serial "$name" '^CHURN DISKVERIFY ok seq=[1-9]' 60
	expect_code 1 "QEMU $ver: no FAIL line" grep -q 'FAIL' "$(vm_path "$name" serial)"

	# counter grows between two TICK lines of the same run.
	from=$(vm_serial_lines "$name")
	t1=$(vm_wait_serial "$name" '^CHURN TICK ' 30 "$from")
	t2=$(vm_wait_serial "$name" '^CHURN TICK ' 30 "$(($(vm_serial_lines "$name")))")
	c1=$(sed -n 's/.*counter=\([0-9]*\).*/\1/p' <<<"$t1")
	c2=$(sed -n 's/.*counter=\([0-9]*\).*/\1/p' <<<"$t2")
	if [ -n "$c1" ] && [ -n "$c2" ] && [ "$c2" -gt "$c1" ]; then
		ok "QEMU $ver: TICK counter grows ($c1 -> $c2)"
	else
		not_ok "QEMU $ver: TICK counter grows" "$t1" "$t2"
	fi

	out=$(vm_qmp_raw "$name" '{"execute":"query-status"}' '{"execute":"query-version"}')
	expect_match "QEMU $ver: query-status on the second monitor says running" \
		'"status": "running"' <(echo "$out")
	v=$(grep -o '"major": [0-9]*' <<<"$out" | head -n1 | tr -dc 0-9).$(grep -o '"minor": [0-9]*' <<<"$out" | head -n1 | tr -dc 0-9)
	expect_eq "QEMU $ver: query-version says $ver" "$ver" "$v"
	expect_code 1 "QEMU $ver: an unknown command is an error reply" \
		vm_qmp_raw "$name" '{"execute":"no-such-command"}'

	check "QEMU $ver: the guest agent answers" vm_wait_agent "$name" 60
	out=$(vm_qga "$name" '{"execute":"guest-ping"}' 2>&1)
	expect_eq "QEMU $ver: guest-ping reply" '{"return": {}}' "$out"

	# Events on the third monitor while the second one acts.
	ev=$TESTDIR/$name.events
	check "QEMU $ver: event watcher connects" vm_watch_events "$name" "$ev"
	vm_qmp_raw "$name" '{"execute":"stop"}' >/dev/null
	check "QEMU $ver: STOP event seen" vm_wait_event "$ev" '"event": "STOP"' 20
	vm_qmp_raw "$name" '{"execute":"cont"}' >/dev/null
	check "QEMU $ver: RESUME event seen" vm_wait_event "$ev" '"event": "RESUME"' 20
	from=$(vm_serial_lines "$name")
	check "QEMU $ver: churn verifies again after stop/cont" \
		vm_wait_serial "$name" '^CHURN VERIFY ok' 60 "$from"
done

# Round trip through QEMU's own raw migration stream (the baseline that
# snapctl is compared with): save g72, load it into a fresh 7.2 and, with
# the source's machine type, into 10.0; churn must continue (same run,
# counter not restarted) and verify memory and disk.
if [ -n "${started[7.2]:-}" ] && vm_alive g72; then
	last=$(grep -a '^CHURN TICK' "$(vm_path g72 serial)" | tail -n1 | tr -d '\r')
	run=${last##*run=}
	c0=$(sed -n 's/.*counter=\([0-9]*\).*/\1/p' <<<"$last")
	check "vm_save_raw: QEMU 7.2 migrates into a file" vm_save_raw g72 "$TESTDIR/g72.raw"
	out=$(vm_qmp_raw g72 '{"execute":"query-status"}')
	expect_match "source is in postmigrate" '"status": "postmigrate"' <(echo "$out")
	vm_kill g72 TERM
	cp "$TESTDIR/g72.qcow2" "$TESTDIR/r100.qcow2"
	for ver in 7.2 10.0; do
		name=r${ver//./}
		disk=$TESTDIR/g72.qcow2
		[ "$ver" = 10.0 ] && disk=$TESTDIR/r100.qcow2
		if ! vm_have_qemu "$ver"; then
			skip "restore on QEMU $ver" "QEMU $ver not installed"
			continue
		fi
		if ! vm_start "$name" --qemu "$ver" --machine "$VM_MACHINE_72" --agent \
			--disk "$disk" --append "churn.mb=96 churn.verify=1000 churn.disk=/dev/vda" \
			--incoming 2>"$TESTDIR/$name.err"; then
			not_ok "vm_start --incoming on QEMU $ver" "$(cat "$TESTDIR/$name.err")"
			continue
		fi
		out=$(vm_qmp_raw "$name" '{"execute":"query-status"}')
		expect_match "QEMU $ver --incoming: waits in inmigrate" '"status": "inmigrate"' <(echo "$out")
		check "QEMU $ver: vm_load_raw loads the 7.2 stream" vm_load_raw "$name" "$TESTDIR/g72.raw"
		check "QEMU $ver: cont after the load" vm_qmp_raw "$name" '{"execute":"cont"}'
		tick=$(vm_wait_serial "$name" '^CHURN TICK' 60)
		c1=$(sed -n 's/.*counter=\([0-9]*\).*/\1/p' <<<"$tick")
		if [ "${tick##*run=}" = "$run" ] && [ -n "$c1" ] && [ -n "$c0" ] && [ "$c1" -ge "$c0" ]; then
			ok "QEMU $ver: restored churn continues (run $run, counter $c0 -> $c1)"
		else
			not_ok "QEMU $ver: restored churn continues" "before: $last" "after:  $tick"
		fi
		check "QEMU $ver: memory verification ok after the restore" \
			vm_wait_serial "$name" '^CHURN VERIFY ok' 60
		check "QEMU $ver: disk verification ok after the restore" \
			vm_wait_serial "$name" '^CHURN DISKVERIFY ok' 60
		expect_code 1 "QEMU $ver: no FAIL line after the restore" \
			grep -q 'FAIL' "$(vm_path "$name" serial)"
		pid=$(vm_pid "$name")
		vm_kill "$name" KILL
		if [ -n "$pid" ] && ! _vm_pid_alive "$pid"; then
			ok "QEMU $ver: vm_kill leaves no process"
		else
			not_ok "QEMU $ver: vm_kill leaves no process" "pid $pid"
		fi
	done
fi

vm_stop_all
left=$(vm_test_pids)
expect_eq "vm_stop_all leaves no process of this test" "" "$left"
done_testing
