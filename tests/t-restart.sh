#!/usr/bin/env bash
# t-restart: the VM's own paths stay its current disks (issue 11, the disk
# swap), on QEMU 7.2 and 10.0, with a -drive VM of five disks: d0 (churn's
# records) and d1, writable qcow2; ro, a read-only one (left alone); x,
# excluded with --exclude; r, a raw one.
#   - the raw disk is refused before anything changes: exit 1, one line
#     naming it and saying what to do; no file changed or made;
#   - a checkpoint (live on 10.0, --pause on 7.2 under TCG: README Limits)
#     leaves d0.qcow2 and d1.qcow2 the VM's disks, their states in
#     d0.c1.qcow2 and d1.c1.qcow2, ro, x and r untouched;
#   - snapctl killed (SIGKILL) at each step of a swap (test hold
#     SNAPCTL_TEST_HOLD_SWAP): linked, prepared (before the cut), cut
#     (before the rename), renamed (a second swap of the same QEMU, before
#     the link of QEMU's old name goes); recover finishes or undoes it, the
#     VM writes on at its own path, no temporary name is left;
#   - QEMU quits; d0.qcow2 holds every record churn wrote, none missing;
#     every checkpoint verifies; the same command line starts the VM again,
#     and a checkpoint of it swaps again;
#   - snapctl killed after the cut, then QEMU: recover (exit 3: QEMU is
#     gone) finishes the swap, d0.qcow2 holds every record, the VM starts;
#   - restore c1 --start: the guest is run 1 again and verifies memory and
#     disk.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=64 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=50 churn.tick=200"
RT=$TESTDIR/rt
mkdir -m 700 "$RT"
export XDG_RUNTIME_DIR=$RT


field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
last_tick() { grep -a '^CHURN TICK' "$1" | tail -n 1 | tr -d '\r'; }

# wait_file FILE REGEX TIMEOUT: a line of FILE matches.
# A whole TICK line (its run id is the last field, 16 hex digits).
TICK_RE='^CHURN TICK .* run=[0-9a-f]{16}$'

# snap DIR: every file there with its inode, size and mtime; names DIR:
# with its inode only (churn writes d0.qcow2 all the time).
snap() { (cd "$1" && find . -maxdepth 1 -type f -printf '%p %i %s %T@\n' | sort); }
names() { (cd "$1" && find . -maxdepth 1 -type f -printf '%p %i\n' | sort); }
# temps DIR: the swap's temporary names left there.
temps() { (cd "$1" && ls -A | grep -F .snapctl- | tr '\n' ' ' || true); }

# start_vm NAME VER DIR: the -drive VM, its disks in DIR.
start_vm() {
	local d=$3
	vm_start "$1" --qemu "$2" --append "$CHURN" \
		--arg -drive --arg "file=$d/d0.qcow2,if=none,id=drive0,format=qcow2" \
		--arg -device --arg virtio-blk-pci,drive=drive0,id=vd0,bus=pcie.0,addr=0x10 \
		--arg -drive --arg "file=$d/d1.qcow2,if=none,id=drive1,format=qcow2" \
		--arg -device --arg virtio-blk-pci,drive=drive1,id=vd1,bus=pcie.0,addr=0x11 \
		--arg -drive --arg "file=$d/ro.qcow2,if=none,id=drive2,format=qcow2,readonly=on" \
		--arg -device --arg virtio-blk-pci,drive=drive2,id=vd2,bus=pcie.0,addr=0x12 \
		--arg -drive --arg "file=$d/x.qcow2,if=none,id=drive3,format=qcow2" \
		--arg -device --arg virtio-blk-pci,drive=drive3,id=vd3,bus=pcie.0,addr=0x13 \
		--arg -drive --arg "file=$d/r.raw,if=none,id=drive4,format=raw" \
		--arg -device --arg virtio-blk-pci,drive=drive4,id=vd4,bus=pcie.0,addr=0x14
}

# kill_at STEP NAME DESC: checkpoint NAME --disk-only held at STEP, killed
# there (SIGKILL); then recover.
kill_at() {
	local step=$1 n=$2 d=$3 p i
	SNAPCTL_TEST_HOLD_SWAP=$step:60000 "$SNAPCTL" "${S[@]}" checkpoint --disk-only \
		"${X[@]}" "$n" >"$dir/$n.out" 2>"$dir/$n.err" &
	p=$!
	# Held: the step's files are there.
	for ((i = 0; i < 300; i++)); do
		case $step in
		linked) [ -e "$dir/d0.$n.qcow2" ] && break ;;
		prepared) [ -e "$dir/.d1.qcow2.snapctl-$n" ] && break ;;
		cut | renamed) [ "$(ck_node "$name" drive0)" != "$node0" ] && break ;;
		esac
		sleep 0.1
	done
	sleep 0.3
	kill -KILL "$p"
	wait "$p" 2>/dev/null
	check "$d: snapctl was held there" test "$i" -lt 300
	check "$d: its recovery note is left" test -f "$store/.recover.json"
	expect_code 0 "$d: snapctl recover" "$SNAPCTL" -d "$store" recover
	cp "$TESTDIR/stdout" "$dir/$n.recover"
	expect_eq "$d: every temporary name left is QEMU's name of a current disk" "" "$(ck_stray "$dir")"
	expect_eq "$d: the VM writes on at d0.qcow2" "$dir/d0.qcow2" "$(ck_active_file "$name" drive0)"
	expect_eq "$d: ... and d1.qcow2" "$dir/d1.qcow2" "$(ck_active_file "$name" drive1)"
	check "$d: QEMU holds d0.qcow2 open" ck_holds "$name" "$dir/d0.qcow2"
	expect_eq "$d: the guest runs" running "$(ck_status "$name")"
	expect_eq "$d: nothing left in the store" "" "$(ck_leftovers "$store")"
	check "$d: no checkpoint $n" test ! -e "$store/$n"
}

# ck_node VM DEV: the node name of DEV's active image.
ck_node() {
	local out i n
	out=$(vm_qmp_raw "$1" '{"execute":"query-block"}') || return 1
	n=$(jq_get -n - return <<<"$out")
	for ((i = 0; i < n; i++)); do
		if [ "$(jq_get - "return.$i.device" <<<"$out")" = "$2" ]; then
			jq_get - "return.$i.inserted.node-name" <<<"$out"
			return 0
		fi
	done
	return 1
}

for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	v=${ver//./}
	name=s$v
	dir=$TESTDIR/$name
	store=$dir/store
	mkdir -p "$dir"
	RUN=(env)
	[ "$ver" = 10.0 ] && RUN=(env "QEMU_MODULE_DIR=$VM_QEMU10_DIR/usr/lib/x86_64-linux-gnu/qemu")
	mode=""
	[ "$ver" = 7.2 ] && [ "${SNAPCTL_TEST_ACCEL:-tcg}" = tcg ] && mode=--pause
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	qemu-img create -q -f qcow2 "$dir/d1.qcow2" 32M
	qemu-img create -q -f qcow2 "$dir/ro.qcow2" 16M
	qemu-img create -q -f qcow2 "$dir/x.qcow2" 16M
	qemu-img create -q -f raw "$dir/r.raw" 16M
	if ! start_vm "$name" "$ver" "$dir" 2>"$dir/start.err" ||
		! vm_wait_ready "$name" 150 >"$dir/ready"; then
		not_ok "QEMU $ver: the VM starts" "$(tail -n 5 "$dir/start.err")"
		continue
	fi
	ok "QEMU $ver: a -drive VM with five disks starts"
	run=$(field run "$(tr -d '\r' <"$dir/ready")")
	vm_wait_serial "$name" '^CHURN DISKVERIFY ok seq=[1-9]' 60 >/dev/null
	S=(-s "$(vm_path "$name" qmp)" -d "$store")
	X=(--exclude drive3 --exclude drive4)

	# ---- a raw disk is refused before anything changes ---------------------
	b=$(names "$dir")
	expect_code 1 "QEMU $ver: a raw disk is refused: exit 1" "$SNAPCTL" "${S[@]}" checkpoint --exclude drive3 c0
	ck_one_line "QEMU $ver: ... one line" "$TESTDIR/stderr"
	expect_match "QEMU $ver: ... naming it, why and what to do" \
		"^snapctl: disk 'drive4': '$dir/r.raw' is raw, not qcow2: its path cannot become the qcow2 overlay that keeps the VM's command line valid: --exclude drive4, or convert it to qcow2$" "$TESTDIR/stderr"
	expect_eq "QEMU $ver: ... no file renamed or made" "$b" "$(names "$dir")"
	check "QEMU $ver: ... no checkpoint" test ! -e "$store/c0"
	expect_eq "QEMU $ver: ... nothing left in the store" "" "$(ck_leftovers "$store")"
	expect_eq "QEMU $ver: ... the guest runs" running "$(ck_status "$name")"

	# ---- checkpoint c1: two disks swapped, three left alone ---------------
	ro0=$(snap "$dir" | grep -E '^\./(ro\.qcow2|x\.qcow2|r\.raw) ')
	# shellcheck disable=SC2086
	expect_code 0 "QEMU $ver: checkpoint ${mode:-live} c1 --exclude x, r" "$SNAPCTL" "${S[@]}" checkpoint $mode "${X[@]}" c1
	m=$store/c1/manifest.json
	expect_eq "QEMU $ver c1: two disks" "drive0 drive1" "$(jq_get "$m" disks.0.device) $(jq_get "$m" disks.1.device)"
	expect_eq "QEMU $ver c1: their states" "$dir/d0.c1.qcow2 $dir/d1.c1.qcow2" "$(jq_get "$m" disks.0.file) $(jq_get "$m" disks.1.file)"
	expect_eq "QEMU $ver c1: the VM's paths" "$dir/d0.qcow2 $dir/d1.qcow2" "$(jq_get "$m" disks.0.vm_path) $(jq_get "$m" disks.1.vm_path)"
	expect_eq "QEMU $ver c1: the VM writes on at them" "$dir/d0.qcow2 $dir/d1.qcow2" \
		"$(ck_active_file "$name" drive0) $(ck_active_file "$name" drive1)"
	expect_eq "QEMU $ver c1: ro, x and r left alone" "$dir/ro.qcow2 $dir/x.qcow2 $dir/r.raw" \
		"$(ck_active_file "$name" drive2) $(ck_active_file "$name" drive3) $(ck_active_file "$name" drive4)"
	expect_eq "QEMU $ver c1: ... no state files for them" "" "$(cd "$dir" && ls ro.* x.* r.* | grep -v -e '^ro\.qcow2$' -e '^x\.qcow2$' -e '^r\.raw$')"
	expect_eq "QEMU $ver c1: ... ro not written" "$(grep '^\./ro\.qcow2 ' <<<"$ro0")" "$(snap "$dir" | grep '^\./ro\.qcow2 ')"
	for f in d0 d1; do
		back=$(vm_qemu_img "$ver" info -U --output=json "$dir/$f.qcow2" | jq_get - full-backing-filename)
		expect_eq "QEMU $ver c1: $f.qcow2 is backed by $f.c1.qcow2" "$dir/$f.c1.qcow2" "$back"
	done
	expect_eq "QEMU $ver c1: QEMU's names of the new layers, links of the VM's paths" ".d0.qcow2.snapctl-c1 .d1.qcow2.snapctl-c1 " "$(temps "$dir")"
	expect_eq "QEMU $ver c1: ... no stray one" "" "$(ck_stray "$dir")"
	check "QEMU $ver c1: verify" "$SNAPCTL" "${S[@]}" verify c1

	# ---- SIGKILL at each step of a swap; recover --------------------------
	node0=$(ck_node "$name" drive0)
	kill_at linked k1 "QEMU $ver killed after the link"
	check "QEMU $ver k1: recover removed the state's link" test ! -e "$dir/d0.k1.qcow2"
	node0=$(ck_node "$name" drive0)
	kill_at prepared k2 "QEMU $ver killed before the cut"
	check "QEMU $ver k2: recover removed the state's link" test ! -e "$dir/d0.k2.qcow2"
	expect_eq "QEMU $ver k2: QEMU was not cut" "$node0" "$(ck_node "$name" drive0)"
	expect_match "QEMU $ver k2: recover says so" "^removed .*\(the disks were not cut\)$" "$dir/k2.recover"
	node0=$(ck_node "$name" drive0)
	kill_at cut k3 "QEMU $ver killed after the cut, before the rename"
	expect_match "QEMU $ver k3: recover finished the swap" "^finished the disk swap: '$dir/d0.qcow2' is the current disk, '$dir/d0.k3.qcow2' the checkpoint's state$" "$dir/k3.recover"
	back=$(vm_qemu_img "$ver" info -U --output=json "$dir/d0.qcow2" | jq_get - full-backing-filename)
	expect_eq "QEMU $ver k3: d0.qcow2 is backed by the state k3 left" "$dir/d0.k3.qcow2" "$back"
	node0=$(ck_node "$name" drive0)
	kill_at renamed k4 "QEMU $ver killed after the rename"
	back=$(vm_qemu_img "$ver" info -U --output=json "$dir/d0.qcow2" | jq_get - full-backing-filename)
	expect_eq "QEMU $ver k4: d0.qcow2 is backed by the state k4 left" "$dir/d0.k4.qcow2" "$back"
	expect_code 0 "QEMU $ver: a checkpoint after all that" "$SNAPCTL" "${S[@]}" checkpoint --disk-only "${X[@]}" c2
	expect_eq "QEMU $ver c2: the VM writes on at d0.qcow2" "$dir/d0.qcow2" "$(ck_active_file "$name" drive0)"
	back=$(vm_qemu_img "$ver" info -U --output=json "$dir/d0.c2.qcow2" | jq_get - full-backing-filename)
	expect_eq "QEMU $ver c2: its state is backed by k4's" "$dir/d0.k4.qcow2" "$back"

	# ---- QEMU quits; the same command line starts it again ----------------
	tick=$(last_tick "$(vm_path "$name" serial)")
	want=$(($(field disk_seq "$tick") + 20))
	for ((t = 0; t < 600; t++)); do
		tick=$(last_tick "$(vm_path "$name" serial)")
		[ "$(field disk_seq "$tick")" -ge "$want" ] && break
		sleep 0.1
	done
	cp "$(vm_path "$name" args)" "$dir/args.before"
	check "QEMU $ver: QEMU quits" ck_quit "$name"
	dq=$(field disk_seq "$(last_tick "$(vm_path "$name" serial)")")
	vm_qemu_img "$ver" convert -O raw "$dir/d0.qcow2" "$dir/d0.raw"
	rec=$(ck_records "$dir/d0.raw" "$run")
	rm -f "$dir/d0.raw"
	max=${rec#max=}
	max=${max%% *}
	check "QEMU $ver: d0.qcow2 holds every record written ($rec, >= $dq)" test "$max" -ge "$dq"
	expect_eq "QEMU $ver: ... without a gap" "missing=0" "${rec##* }"
	for c in c1 c2; do
		check "QEMU $ver: verify $c after the quit" "$SNAPCTL" "${S[@]}" verify "$c"
	done
	if start_vm "$name" "$ver" "$dir" 2>"$dir/start2.err" && vm_wait_ready "$name" 150 >"$dir/ready2"; then
		ok "QEMU $ver: the VM starts again"
	else
		not_ok "QEMU $ver: the VM starts again" "$(tail -n 5 "$dir/start2.err")"
		continue
	fi
	check "QEMU $ver: ... from the same command line" cmp -s "$dir/args.before" "$(vm_path "$name" args)"
	check "QEMU $ver: ... and writes its disk" vm_wait_serial "$name" '^CHURN DISKVERIFY ok seq=[1-9]' 60
	expect_code 0 "QEMU $ver: checkpoint c3 of the restarted VM" "$SNAPCTL" "${S[@]}" checkpoint --disk-only "${X[@]}" c3
	expect_eq "QEMU $ver c3: the VM writes on at d0.qcow2" "$dir/d0.qcow2" "$(ck_active_file "$name" drive0)"
	back=$(vm_qemu_img "$ver" info -U --output=json "$dir/d0.c3.qcow2" | jq_get - full-backing-filename)
	expect_eq "QEMU $ver c3: its state is the disk QEMU restarted on, backed by c2's" "$dir/d0.c2.qcow2" "$back"
	expect_eq "QEMU $ver c3: the restarted QEMU's old names went, c3's are left" ".d0.qcow2.snapctl-c3 .d1.qcow2.snapctl-c3 " "$(temps "$dir")"
	check "QEMU $ver: verify c2 after the restart" "$SNAPCTL" "${S[@]}" verify c2

	# ---- snapctl killed after the cut, then QEMU: recover, restart --------
	run2=$(field run "$(tr -d '\r' <"$dir/ready2")")
	SNAPCTL_TEST_HOLD_SWAP=cut:60000 "$SNAPCTL" "${S[@]}" checkpoint --disk-only "${X[@]}" k5 \
		>"$dir/k5.out" 2>"$dir/k5.err" &
	p=$!
	node0=$(ck_node "$name" drive0)
	for ((i = 0; i < 300; i++)); do
		[ "$(ck_node "$name" drive0)" != "$node0" ] && break
		sleep 0.1
	done
	sleep 1		# churn writes into the new overlay meanwhile
	kill -KILL "$p"
	wait "$p" 2>/dev/null
	vm_kill "$name" KILL
	dq=$(field disk_seq "$(last_tick "$(vm_path "$name" serial)")")
	expect_code 3 "QEMU $ver k5: snapctl and QEMU killed after the cut: recover says QEMU is gone (exit 3)" \
		"$SNAPCTL" -d "$store" recover
	expect_match "QEMU $ver k5: ... and that the swaps were recovered" "the disk swaps were recovered" "$TESTDIR/stderr"
	back=$(vm_qemu_img "$ver" info --output=json "$dir/d0.qcow2" | jq_get - full-backing-filename)
	expect_eq "QEMU $ver k5: d0.qcow2 is the overlay the guest wrote into, backed by k5's state" "$dir/d0.k5.qcow2" "$back"
	expect_eq "QEMU $ver k5: no stray temporary name" "" "$(ck_stray "$dir")"
	vm_qemu_img "$ver" convert -O raw "$dir/d0.qcow2" "$dir/d0.raw"
	rec=$(ck_records "$dir/d0.raw" "$run2")
	rm -f "$dir/d0.raw"
	max=${rec#max=}
	max=${max%% *}
	check "QEMU $ver k5: d0.qcow2 holds every record written ($rec, >= $dq)" test "$max" -ge "$dq"
	expect_eq "QEMU $ver k5: ... without a gap" "missing=0" "${rec##* }"
	if start_vm "$name" "$ver" "$dir" 2>"$dir/start3.err" && vm_wait_ready "$name" 150 >/dev/null; then
		ok "QEMU $ver k5: the VM starts again from its command line"
	else
		not_ok "QEMU $ver k5: the VM starts again from its command line" "$(tail -n 5 "$dir/start3.err")"
	fi
	vm_kill "$name" KILL

	# ---- restore c1: memory and disk of its instant ------------------------
	expect_code 0 "QEMU $ver: restore c1 --start" "${RUN[@]}" "$SNAPCTL" -d "$store" restore c1 --start
	pid=$(sed -n 's/^pid //p' "$TESTDIR/stdout")
	rdir=$(sed -n 's/^dir //p' "$TESTDIR/stdout")
	[ -n "$pid" ] && started+=("$pid")
	f=$rdir/serial0.log
	check "QEMU $ver: the restored guest verifies its whole memory" wait_file "$f" '^CHURN VERIFY ok' 120
	check "QEMU $ver: ... and its disk records" wait_file "$f" '^CHURN DISKVERIFY ok' 60
	# Resumed, the guest may verify before its first TICK (both were
	# due): wait for a whole TICK line, not just the verification.
	wait_file "$f" "$TICK_RE" 60
	tick=$(tr -d '\r' <"$f" | grep -aE "$TICK_RE" | head -n 1)
	expect_eq "QEMU $ver: ... the same churn run, not a reboot" "$run" "$(field run "$tick")"
	expect_eq "QEMU $ver: ... no FAIL line" "" "$(grep -a FAIL "$f" | head -n 3)"
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	check "QEMU $ver: verify c1 after the restore" "$SNAPCTL" "${S[@]}" verify c1
done

vm_stop_all
done_testing
