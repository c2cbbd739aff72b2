#!/usr/bin/env bash
# t-start: restore as one command (issue 14) against real QEMU 7.2 and 10.0.
# A checkpoint records how its VM was started (binary, arguments) and a QMP
# summary (devices, memory backends); "restore NAME --start" starts a new
# QEMU from that record, beside the original or after it.  VM A: -blockdev,
# a memory-backend object, a USB controller with an id, the guest agent's
# chardev socket; restored three times while it still runs, each restored
# guest verifying its memory and disk.  VM B: legacy -drive with two disks,
# a USB controller without an id; killed, then restored with --start
# --json; a QEMU missing its USB controller gives QEMU's own reason; with
# its record made unreadable, --start refuses and --exec still restores.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=64 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=50 churn.tick=200"
RT=$TESTDIR/rt
mkdir -m 700 "$RT"
export XDG_RUNTIME_DIR=$RT

# ---- the command line, no VM needed ------------------------------------
N=(-d "$TESTDIR/none")
expect_code 2 "--start and --exec exclude each other" "$SNAPCTL" "${N[@]}" restore c1 --start --exec -- qemu
expect_code 2 "--start and --dry-run exclude each other" "$SNAPCTL" "${N[@]}" -s "$TESTDIR/x.sock" restore --dry-run c1 --start
expect_code 2 "restore without --start still needs a socket" "$SNAPCTL" "${N[@]}" restore c1
expect_match "... saying so" "no QMP socket" "$TESTDIR/stderr"
expect_code 1 "restore --start needs no socket (a missing store: exit 1)" "$SNAPCTL" "${N[@]}" restore c1 --start


field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# wait_file FILE REGEX TIMEOUT: a line of FILE matches.
# A whole TICK line (its run id is the last field, 16 hex digits).
TICK_RE='^CHURN TICK .* run=[0-9a-f]{16}$'

# start_restore DESC NAME [ARGS...]: restore NAME --start ARGS; sets sock,
# pid and rdir from its output.
start_restore() {
	local d=$1 name=$2
	shift 2
	sock='' pid='' rdir=''
	expect_code 0 "$d: restore --start" "${RUN[@]}" "$SNAPCTL" -d "$store" restore "$name" --start "$@"
	sock=$(sed -n 's/^socket //p' "$TESTDIR/stdout")
	pid=$(sed -n 's/^pid //p' "$TESTDIR/stdout")
	rdir=$(sed -n 's/^dir //p' "$TESTDIR/stdout")
	[ -n "$pid" ] && started+=("$pid")
}

# guest_ok DESC SERIAL RUN: the restored guest is run RUN carrying on (not
# a reboot) and verifies its whole memory and its disk records.
guest_ok() {
	local d=$1 f=$2 run=$3 tick
	check "$d: the guest verifies its whole memory" wait_file "$f" '^CHURN VERIFY ok' 120
	check "$d: its disk records agree with its memory" wait_file "$f" '^CHURN DISKVERIFY ok' 60
	# Resumed, the guest may verify before its first TICK (both were
	# due): wait for a whole TICK line, not just the verification.
	wait_file "$f" "$TICK_RE" 60
	tick=$(tr -d '\r' <"$f" | grep -aE "$TICK_RE" | head -n 1)
	expect_eq "$d: the same churn run, not a reboot" "$run" "$(field run "$tick")"
	if grep -aqE 'FAIL|^CHURN READY' "$f"; then
		not_ok "$d: no FAIL and no READY line" "$(grep -aE 'FAIL|READY' "$f" | head -n 3)"
	else
		ok "$d: no FAIL and no READY line"
	fi
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
	RUN=(env)
	[ "$ver" = 10.0 ] && RUN=(env "QEMU_MODULE_DIR=$VM_QEMU10_DIR/usr/lib/x86_64-linux-gnu/qemu")
	mode=""
	# QEMU 7.2 under TCG loses pages it redirties across live passes
	# (see t-restore): capture it paused.
	[ "$ver" = 7.2 ] && mode=--pause

	# ---- VM A: -blockdev, memory backend, USB controller, agent ---------
	qemu-img create -q -f qcow2 "$dir/a0.qcow2" 64M
	if ! vm_start "a$v" --qemu "$ver" --agent --disk "$dir/a0.qcow2" --append "$CHURN" \
		--arg -object --arg memory-backend-ram,id=ram0,size=256M \
		--arg -machine --arg memory-backend=ram0 \
		--arg -device --arg qemu-xhci,id=usb0,bus=pcie.0,addr=0x9 \
		2>"$dir/a.err" || ! vm_wait_ready "a$v" 120 >"$dir/a.ready"; then
		not_ok "QEMU $ver: VM A starts" "$(tail -n 5 "$dir/a.err")"
		continue
	fi
	run=$(field run "$(tr -d '\r' <"$dir/a.ready")")
	vm_wait_serial "a$v" '^CHURN DISKVERIFY' 30 >/dev/null
	check "QEMU $ver: checkpoint A" "$SNAPCTL" -s "$(vm_path "a$v" qmp)" -d "$store" checkpoint $mode cA
	m=$store/cA/manifest.json
	expect_eq "QEMU $ver: A's record is readable" true "$(jq_get "$m" launch.readable)"
	expect_eq "QEMU $ver: ... its pid is A's QEMU" "$(vm_pid "a$v")" "$(jq_get "$m" launch.pid)"
	case $(jq_get "$m" launch.exe) in
	*/qemu-system-x86_64) ok "QEMU $ver: ... its exe is the QEMU binary" ;;
	*) not_ok "QEMU $ver: ... its exe is the QEMU binary" "$(jq_get "$m" launch.exe)" ;;
	esac
	expect_match "QEMU $ver: ... its argv holds the -blockdev" 'driver[^a-z]+qcow2[^a-z]+file[^a-z]+disk0-file' "$m"
	expect_match "QEMU $ver: the summary has the USB controller" '"id": "usb0",' "$m"
	expect_match "QEMU $ver: ... its type" '"type": "qemu-xhci"' "$m"
	expect_match "QEMU $ver: ... and the memory backend" '"id": "ram0",' "$m"
	expect_eq "QEMU $ver: ... the RAM size" 268435456 "$(jq_get "$m" summary.ram_bytes)"
	expect_eq "QEMU $ver: ... the vCPUs" 1 "$(jq_get "$m" summary.cpus)"
	expect_code 0 "QEMU $ver: info A" "$SNAPCTL" -d "$store" info cA
	expect_match "QEMU $ver: ... prints the recorded command line" "^  .*qemu-system-x86_64 .*-incoming defer$" "$TESTDIR/stdout"
	check "QEMU $ver: ... without QEMU's internal node names" sh -c "! grep -q '#block' '$TESTDIR/stdout'"

	# Three at once, beside the original that still runs.
	pids=() dirs=()
	for i in 1 2 3; do
		start_restore "QEMU $ver: A, copy $i beside the original" cA
		pids+=("$pid")
		dirs+=("$rdir")
		check "QEMU $ver: ... copy $i: its socket is in its directory" test -S "$rdir/qmp.sock"
		expect_eq "QEMU $ver: ... copy $i: the socket printed" "$rdir/qmp.sock" "$sock"
		check "QEMU $ver: ... copy $i: QEMU pid $pid runs" kill -0 "$pid"
	done
	check "QEMU $ver: the original still runs" vm_alive "a$v"
	expect_eq "QEMU $ver: three QEMUs, three pids" 3 "$(printf '%s\n' "${pids[@]}" | sort -u | grep -c .)"
	for i in 0 1 2; do
		guest_ok "QEMU $ver: A, copy $((i + 1))" "${dirs[$i]}/serial0.log" "$run"
		check "QEMU $ver: ... copy $((i + 1)) answers on its socket" "$SNAPCTL" -s "${dirs[$i]}/qmp.sock" qmp query-status
	done
	check "QEMU $ver: the original is not disturbed (its serial has no FAIL)" sh -c "! grep -aq FAIL '$(vm_path "a$v" serial)'"
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
	rm -rf "${dirs[@]}"

	# A device of another type: refused before the stream, QEMU killed.
	before=$(ls "$store/.restores" | grep -c 'restore-')
	expect_code 4 "QEMU $ver: a USB controller of another type: exit 4" "${RUN[@]}" "$SNAPCTL" -d "$store" \
		restore cA --start -- -device usb-ehci,id=usb0,bus=pcie.0,addr=0x9
	expect_match "QEMU $ver: ... naming the device" "^snapctl: wrong devices: device 'usb0' is a usb-ehci in the VM, a qemu-xhci in checkpoint 'cA'$" "$TESTDIR/stderr"
	expect_eq "QEMU $ver: ... no overlay was made" "$before" "$(ls "$store/.restores" | grep -c 'restore-')"
	expect_eq "QEMU $ver: ... no QEMU left" "" "$(pgrep -f "$RT/snapctl-cA" || true)"
	expect_eq "QEMU $ver: ... nor its directory" "" "$(cd "$RT" && ls -d snapctl-cA.* 2>/dev/null)"
	vm_kill "a$v" KILL

	# ---- VM B: -drive, two disks, USB controller without an id ----------
	qemu-img create -q -f qcow2 "$dir/b0.qcow2" 64M
	qemu-img create -q -f qcow2 "$dir/b1.qcow2" 32M
	if ! vm_start "b$v" --qemu "$ver" --append "$CHURN" \
		--arg -drive --arg "file=$dir/b0.qcow2,if=none,id=drive0,format=qcow2" \
		--arg -device --arg virtio-blk-pci,drive=drive0,id=vd0,bus=pcie.0,addr=0x10 \
		--arg -drive --arg "file=$dir/b1.qcow2,if=none,id=drive1,format=qcow2" \
		--arg -device --arg virtio-blk-pci,drive=drive1,id=vd1,bus=pcie.0,addr=0x11 \
		--arg -device --arg qemu-xhci,bus=pcie.0,addr=0x9 \
		2>"$dir/b.err" || ! vm_wait_ready "b$v" 120 >"$dir/b.ready"; then
		not_ok "QEMU $ver: VM B starts" "$(tail -n 5 "$dir/b.err")"
		continue
	fi
	run=$(field run "$(tr -d '\r' <"$dir/b.ready")")
	vm_wait_serial "b$v" '^CHURN DISKVERIFY' 30 >/dev/null
	check "QEMU $ver: checkpoint B" "$SNAPCTL" -s "$(vm_path "b$v" qmp)" -d "$store" checkpoint $mode cB
	m=$store/cB/manifest.json
	expect_eq "QEMU $ver: B has two disks" "drive0 drive1" "$(jq_get "$m" disks.0.device) $(jq_get "$m" disks.1.device)"
	expect_code 0 "QEMU $ver: info B" "$SNAPCTL" -d "$store" info cB
	expect_match "QEMU $ver: ... prints -drive on the checkpoint's state" "^  .* -drive if=none,id=drive0,file=$dir/b0.cB.qcow2,format=qcow2 .* -drive if=none,id=drive1,file=$dir/b1.cB.qcow2,format=qcow2 .*-incoming defer$" "$TESTDIR/stdout"
	expect_eq "QEMU $ver: ... and B writes on at its own paths" "$dir/b0.qcow2 $dir/b1.qcow2" "$(ck_active_file "b$v" drive0) $(ck_active_file "b$v" drive1)"
	check "QEMU $ver: ... without QEMU's internal node names" sh -c "! grep -q '#block' '$TESTDIR/stdout'"
	vm_kill "b$v" KILL

	start_restore "QEMU $ver: B after its VM was killed" cB --json
	jsock=$(jq_get "$TESTDIR/stdout" socket 2>/dev/null)
	jpid=$(jq_get "$TESTDIR/stdout" pid 2>/dev/null)
	jdir=$(jq_get "$TESTDIR/stdout" dir 2>/dev/null)
	[ -n "$jpid" ] && started+=("$jpid")
	check "QEMU $ver: ... --json gives the socket" test -S "$jsock"
	check "QEMU $ver: ... and the pid" kill -0 "$jpid"
	expect_eq "QEMU $ver: ... both disks got an overlay" 2 "$(ls "$store/.restores" | grep -c '^b[01]\..*restore-.*\.qcow2$')"
	guest_ok "QEMU $ver: B" "$jdir/serial0.log" "$run"
	kill -KILL "$jpid" 2>/dev/null
	rm -rf "$jdir"

	# --exec with B's command line (as vm.sh started it), without the
	# USB controller: QEMU's own reason, from its log.
	mapfile -t args <"$(vm_path "b$v" args)"
	read -r -a binv <<<"${args[0]}"
	args=("${binv[@]}" "${args[@]:1}")
	xa=() xa_nousb=()
	skip_next=0
	for a in "${args[@]}"; do
		if [ $skip_next -eq 1 ]; then skip_next=0; continue; fi
		case $a in
		-qmp | -pidfile) skip_next=1; continue ;;
		file:*.serial) a="file:$dir/x.serial" ;;
		# B's own paths are its current disks: cB's state is in
		# b0.cB.qcow2 and b1.cB.qcow2 (info prints so).
		file=*) a=${a/\/b0.qcow2,/\/b0.cB.qcow2,}; a=${a/\/b1.qcow2,/\/b1.cB.qcow2,} ;;
		esac
		xa+=("$a")
	done
	for ((i = 0; i < ${#xa[@]}; i++)); do
		if [ "${xa[$i]}" = -device ] && [ "${xa[$((i + 1))]}" = qemu-xhci,bus=pcie.0,addr=0x9 ]; then
			i=$((i + 1))
			continue
		fi
		xa_nousb+=("${xa[$i]}")
	done
	before=$(ls "$store/.restores" | grep -c 'restore-')
	expect_code 1 "QEMU $ver: --exec without the USB controller: exit 1" "$SNAPCTL" -s "$dir/x1.qmp" -d "$store" \
		restore cB --exec -- "${xa_nousb[@]}"
	expect_match "QEMU $ver: ... with QEMU's own reason" "^snapctl: restore: QEMU refused the checkpoint: Unknown savevm section or instance '0000:00:09.0/xhci'.* \(log: '$dir/x1.qmp.log'\)$" "$TESTDIR/stderr"
	ck_one_line "QEMU $ver: ... one line" "$TESTDIR/stderr"
	expect_eq "QEMU $ver: ... no overlay was left" "$before" "$(ls "$store/.restores" | grep -c 'restore-')"

	# A record that cannot be read: --start says so, --exec restores.
	sed -i 's/"readable": true/"readable": false/; s/"reason": null/"reason": "cannot read \x27\/proc\/1\/exe\x27: Permission denied"/' "$m"
	expect_code 1 "QEMU $ver: --start without a readable record: exit 1" "$SNAPCTL" -d "$store" restore cB --start
	expect_eq "QEMU $ver: ... leaving no directory" "" "$(cd "$RT" && ls -d snapctl-cB.* 2>/dev/null)"
	expect_match "QEMU $ver: ... saying why and what to do" "^snapctl: checkpoint 'cB' has no record of how its VM was started \(cannot read '/proc/1/exe': Permission denied\): restore it with --exec -- QEMU ARGS...$" "$TESTDIR/stderr"
	expect_code 0 "QEMU $ver: info still works" "$SNAPCTL" -d "$store" info cB
	expect_match "QEMU $ver: ... with the -drive fragment" "^  -drive if=none,id=drive0,file=$dir/b0.cB.qcow2,format=qcow2" "$TESTDIR/stdout"
	rm -f "$dir/x.serial"
	expect_code 0 "QEMU $ver: --exec restores it as before" "$SNAPCTL" -s "$dir/x2.qmp" -d "$store" restore cB --exec -- "${xa[@]}"
	xpid=$(pgrep -f "unix:$dir/x2.qmp" | head -n 1)
	[ -n "$xpid" ] && started+=("$xpid")
	guest_ok "QEMU $ver: B by --exec" "$dir/x.serial" "$run"
	[ -n "$xpid" ] && kill -KILL "$xpid" 2>/dev/null
done

done_testing
