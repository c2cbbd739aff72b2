#!/usr/bin/env bash
# t-restores: restore overlays do not litter (issue 11), against real QEMU
# 7.2 and 10.0.  A guest is checkpointed twice (c1, c2: the disk swap
# leaves d0.qcow2 the VM's disk, the states in d0.c1.qcow2 and
# d0.c2.qcow2) and killed.  c2 restored twice: both overlays in
# STORE/.restores, 0600, named after the stem of c2's state file
# (d0.c2.restore-T, never d0.c2.c1.restore-T), each recorded with its
# checkpoint, device and inode.  While a restored VM runs, sweep
# and delete keep its overlay, saying which process holds it; a restore in
# progress is never swept (its record names the live snapctl); once QEMU
# quits the sweep removes the overlay and its record, and so does the
# sweep at the end of the next restore.  --overlay-dir is honoured and its
# overlay recorded and swept by inode; files without a record (planted,
# in the store and in that directory) and records that name another file
# (edited, or from a killed restore outside the store) never get a file
# removed.  A --start restore interrupted by SIGINT leaves no overlay and
# no record, also when QEMU is still making the overlay (faultinject makes
# that 1.5 s slow): its QEMU is gone before the overlay is removed, so no
# file comes back without its record.  A checkpoint p1 of a restored VM swaps the restore overlay's
# path like any VM's disk: the path stays the VM's disk (its record
# learns the new file), p1's state d0.c1.p1.qcow2 and the swap's hidden
# link go beside it; the sweep keeps the path while p1 names it, a restore
# of p1 is d0.c1.restore-T again (names never grow), and delete --disks p1
# removes the path, its hidden link, p1's state and p1's restore overlay.
# Deleting a checkpoint removes its unheld restore overlays.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=32 churn.verify=1000 churn.disk=/dev/vda churn.rate=0"
RT=$TESTDIR/rt
FAULT_SO=$TOP/build/faultinject.so
mkdir -m 700 "$RT"
export XDG_RUNTIME_DIR=$RT
# name_re CKPT: a restore overlay of checkpoint CKPT's state d0.CKPT.qcow2.
name_re() { echo "^d0\\.$1\\.restore-[0-9]{8}T[0-9]{6}\\.[0-9]{3}Z(-[0-9]+)?\\.qcow2\$"; }


# restore_into VM FILE NAME [ARGS...]: start VM waiting on disk FILE and
# restore checkpoint NAME into it; --json report in $dir/VM.json.
restore_into() {
	local vm=$1 file=$2 name=$3
	shift 3
	vm_start "$vm" --qemu "$ver" --disk "$file" --append "$CHURN" --incoming 2>"$dir/$vm.err" &&
		"$SNAPCTL" -s "$(vm_path "$vm" qmp)" -d "$store" --json restore "$name" "$@" \
			>"$dir/$vm.json" 2>>"$dir/$vm.err"
}

# ovls: what STORE/.restores holds, sorted, one line.
ovls() { (cd "$store/.restores" 2>/dev/null && ls -1A | sort | tr '\n' ' '); }

# start_ticks PID: field 22 of /proc/PID/stat (the comm may hold spaces).
start_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $20 }'; }

for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	v=${ver//./}
	P="QEMU $ver"
	dir=$TESTDIR/q$v
	store=$dir/store
	mkdir -p "$dir"
	D=(-d "$store")
	RUN=(env)
	[ "$ver" = 10.0 ] && RUN=(env "QEMU_MODULE_DIR=$VM_QEMU10_DIR/usr/lib/x86_64-linux-gnu/qemu")
	# QEMU 7.2 under TCG loses pages it redirties across live passes
	# (see t-restore): capture it paused.
	mode=""
	[ "$ver" = 7.2 ] && mode=--pause
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	if ! vm_start "src$v" --qemu "$ver" --disk "$dir/d0.qcow2" --append "$CHURN" 2>"$dir/src.err" ||
		! vm_wait_ready "src$v" 150 >/dev/null; then
		not_ok "$P: guest starts" "$(tail -n 5 "$dir/src.err")"
		continue
	fi
	vm_wait_serial "src$v" '^CHURN DISKVERIFY ok seq=[1-9]' 60 >/dev/null
	if ! "$SNAPCTL" -s "$(vm_path "src$v" qmp)" "${D[@]}" -q checkpoint $mode c1 2>"$dir/ck.err" ||
		! "$SNAPCTL" -s "$(vm_path "src$v" qmp)" "${D[@]}" -q checkpoint $mode c2 2>>"$dir/ck.err"; then
		not_ok "$P: checkpoints c1 and c2" "$(cat "$dir/ck.err")"
		continue
	fi
	ok "$P: checkpoints c1 and c2"
	vm_kill "src$v" KILL
	f1=$(jq_get "$store/c1/manifest.json" disks.0.file)
	f2=$(jq_get "$store/c2/manifest.json" disks.0.file)
	expect_eq "$P: c1's and c2's disk states are d0.c1.qcow2 and d0.c2.qcow2" \
		"$dir/d0.c1.qcow2 $dir/d0.c2.qcow2" "$f1 $f2"

	# ---- c2 restored twice: STORE/.restores, names that do not compound ---
	if ! restore_into "a$v" "$f2" c2 || ! restore_into "b$v" "$f2" c2; then
		not_ok "$P: restore c2 twice" "$(cat "$dir/a$v.err" "$dir/b$v.err" 2>/dev/null)"
		continue
	fi
	ok "$P: restore c2 twice"
	ova=$(jq_get "$dir/a$v.json" disks.0.overlay)
	ovb=$(jq_get "$dir/b$v.json" disks.0.overlay)
	pa=$(vm_pid "a$v")
	expect_eq "$P: both overlays are in STORE/.restores" "$store/.restores $store/.restores" "$(dirname "$ova") $(dirname "$ovb")"
	expect_eq "$P: ... which is 0700" 700 "$(stat -c %a "$store/.restores")"
	for o in "$ova" "$ovb"; do
		if [[ $(basename "$o") =~ $(name_re c2) ]]; then
			ok "$P: $(basename "$o"): the stem of c2's state file, not d0.c2.c1"
		else
			not_ok "$P: the name does not compound" "$o"
		fi
		expect_eq "$P: ... 0600" 600 "$(stat -c %a "$o")"
		expect_eq "$P: ... recorded: checkpoint, device, inode, no owner left" \
			"c2 vd0 $(stat -c '%d %i' "$o") 1" \
			"$(jq_get "$o.json" checkpoint) $(jq_get "$o.json" device) $(jq_get "$o.json" dev) $(jq_get "$o.json" ino) $(jq_get "$o.json" owner >/dev/null 2>&1; echo $?)"
		expect_eq "$P: ... the record 0600" 600 "$(stat -c %a "$o.json")"
	done
	check "$P: two overlays, two names" test "$ova" != "$ovb"
	expect_eq "$P: the restored guest writes to its overlay" "$ova" "$(ck_active_file "a$v" vd0)"

	# ---- while they run: kept, saying who holds them ---------------------
	expect_code 0 "$P: sweep while both run" "$SNAPCTL" "${D[@]}" sweep
	expect_match "$P: ... keeps a's overlay: open by its QEMU" \
		"^kept '$ova' \\(restore overlay of checkpoint 'c2'\\): open by process $pa \\(" "$TESTDIR/stdout"
	expect_match "$P: ... and b's" "^kept '$ovb' \\(restore overlay of checkpoint 'c2'\\): open by process $(vm_pid "b$v") " "$TESTDIR/stdout"
	expect_eq "$P: ... the reason once each" 2 "$(grep -c 'open by process' "$TESTDIR/stdout")"
	check "$P: ... both still there" test -f "$ova" -a -f "$ovb"
	expect_code 0 "$P: sweep --json" "$SNAPCTL" "${D[@]}" --json sweep
	expect_eq "$P: ... its keys" "dry_run restores " "$(jq_get -k "$TESTDIR/stdout" . | tr '\n' ' ')"
	expect_eq "$P: ... an entry's keys" "bytes checkpoint file reasons removed " "$(jq_get -k "$TESTDIR/stdout" restores.0 | tr '\n' ' ')"

	# ---- b quits: the sweep removes its overlay and record ----------------
	vm_kill "b$v" KILL
	expect_code 0 "$P: sweep --dry-run once b quit" "$SNAPCTL" "${D[@]}" sweep --dry-run
	expect_match "$P: ... would remove b's overlay" "^would remove '$ovb' \\(restore overlay of checkpoint 'c2'\\)$" "$TESTDIR/stdout"
	check "$P: ... and removes nothing" test -f "$ovb" -a -f "$ovb.json"
	expect_code 0 "$P: sweep once b quit" "$SNAPCTL" "${D[@]}" sweep
	expect_match "$P: ... removes b's overlay" "^removed '$ovb' \\(restore overlay of checkpoint 'c2'\\)$" "$TESTDIR/stdout"
	check "$P: ... file and record gone" test ! -e "$ovb" -a ! -e "$ovb.json"
	check "$P: ... a's stays" test -f "$ova" -a -f "$ova.json"

	# ---- a restore in progress is never swept ---------------------------
	# A record whose owner runs, its overlay made but not opened by any
	# QEMU yet (as between the file and the transaction).
	qemu-img create -q -f qcow2 -b "$f1" -F qcow2 "$store/.restores/d0.c1.restore-20000101T000000.000Z.qcow2"
	sleep 60 &
	owner=$!
	started+=("$owner")
	printf '{"snapctl_restore": 1, "overlay": "%s", "checkpoint": "c1", "device": "vd0", "owner": {"pid": %s, "start": %s}}\n' \
		"$store/.restores/d0.c1.restore-20000101T000000.000Z.qcow2" "$owner" "$(start_ticks "$owner")" \
		>"$store/.restores/d0.c1.restore-20000101T000000.000Z.qcow2.json"
	expect_code 0 "$P: sweep with a restore in progress" "$SNAPCTL" "${D[@]}" sweep
	expect_match "$P: ... keeps its unopened overlay: its restore runs" \
		"^kept '$store/.restores/d0.c1.restore-20000101T000000.000Z.qcow2' \\(restore overlay of checkpoint 'c1'\\): a restore in progress \\(snapctl pid $owner\\)$" "$TESTDIR/stdout"
	kill "$owner"
	wait "$owner" 2>/dev/null
	expect_code 0 "$P: sweep once that restore is gone (killed before it recorded the inode)" "$SNAPCTL" "${D[@]}" sweep
	expect_match "$P: ... removes the overlay in STORE/.restores" "^removed '$store/.restores/d0.c1.restore-20000101T000000.000Z.qcow2' " "$TESTDIR/stdout"
	check "$P: ... and its record" test ! -e "$store/.restores/d0.c1.restore-20000101T000000.000Z.qcow2.json"

	# A real one: a sweep while restore holds (test only) in its load.
	vm_start "h$v" --qemu "$ver" --disk "$f1" --append "$CHURN" --incoming
	SNAPCTL_TRACE=1 SNAPCTL_TEST_RESTORE_HOLD_MS=3000 "$SNAPCTL" -s "$(vm_path "h$v" qmp)" "${D[@]}" --json restore c1 \
		>"$dir/h.json" 2>"$dir/h.trace" &
	spid=$!
	for t in $(seq 1500); do
		grep -q '"execute":"migrate-incoming"' "$dir/h.trace" && break
		sleep 0.02
	done
	expect_code 0 "$P: sweep during a restore's load" "$SNAPCTL" "${D[@]}" sweep
	expect_match "$P: ... keeps its overlay: a restore in progress" \
		"^kept '$store/.restores/d0\\.c1\\.restore-[^']*' \\(restore overlay of checkpoint 'c1'\\): a restore in progress \\(snapctl pid $spid\\)$" "$TESTDIR/stdout"
	wait "$spid"
	expect_eq "$P: ... which then succeeds" 0 "$?"
	ovh=$(jq_get "$dir/h.json" disks.0.overlay)
	check "$P: ... its overlay there" test -f "$ovh"
	expect_eq "$P: ... recorded without an owner now" 1 "$(jq_get "$ovh.json" owner >/dev/null 2>&1; echo $?)"

	# ---- delete c2 while a runs: kept, with the reason --------------------
	expect_code 0 "$P: delete c2 while a runs" "$SNAPCTL" "${D[@]}" delete c2
	expect_match "$P: ... deleted c2" "^deleted checkpoint 'c2'$" "$TESTDIR/stdout"
	expect_match "$P: ... keeps a's overlay, saying who holds it" \
		"^kept '$ova' \\(restore overlay of checkpoint 'c2'\\): open by process $pa \\(" "$TESTDIR/stdout"
	expect_eq "$P: ... and says nothing of c1's" "" "$(grep -F "$ovh" "$TESTDIR/stdout")"
	check "$P: ... a's overlay stays" test -f "$ova"
	expect_eq "$P: ... the guest runs" running "$(ck_status "a$v")"

	# ---- a quits: the next restore's sweep removes its overlay ------------
	vm_kill "a$v" KILL
	mkdir -m 700 "$dir/mine"
	# Files no record names, with names a restore would choose.
	qemu-img create -q -f qcow2 "$dir/mine/d0.c1.restore-20000102T000000.000Z.qcow2" 1M
	qemu-img create -q -f qcow2 "$store/.restores/d0.c1.restore-20000102T000000.000Z.qcow2" 1M
	if restore_into "u$v" "$f1" c1 --overlay-dir "$dir/mine"; then
		ok "$P: restore c1 --overlay-dir DIR"
		ovu=$(jq_get "$dir/u$v.json" disks.0.overlay)
		expect_eq "$P: ... its overlay is in DIR" "$dir/mine" "$(dirname "$ovu")"
		expect_eq "$P: ... 0600" 600 "$(stat -c %a "$ovu")"
		expect_eq "$P: ... recorded in the store, by inode" "c1 $(stat -c '%d %i' "$ovu")" \
			"$(jq_get "$store/.restores/$(basename "$ovu").json" checkpoint) $(jq_get "$store/.restores/$(basename "$ovu").json" dev) $(jq_get "$store/.restores/$(basename "$ovu").json" ino)"
		expect_eq "$P: ... the restore's sweep removed a's overlay" "$ova c2" \
			"$(jq_get "$dir/u$v.json" swept.0.file) $(jq_get "$dir/u$v.json" swept.0.checkpoint)"
		expect_eq "$P: ... and only it" 1 "$(jq_get -n "$dir/u$v.json" swept)"
		check "$P: ... file and record gone" test ! -e "$ova" -a ! -e "$ova.json"
	else
		not_ok "$P: restore c1 --overlay-dir DIR" "$(cat "$dir/u$v.err")"
		ovu=$dir/mine/none
	fi
	vm_kill "u$v" KILL

	# Records that prove nothing: one edited to name a file outside the
	# store, one (as from a killed restore) without the inode.
	printf 'not yours\n' >"$dir/victim1"
	printf 'not yours\n' >"$dir/victim2"
	printf '{"snapctl_restore": 1, "overlay": "%s", "checkpoint": "c1", "device": "vd0", "dev": 1, "ino": 2}\n' \
		"$dir/victim1" >"$store/.restores/v1.json"
	printf '{"snapctl_restore": 1, "overlay": "%s", "checkpoint": "c1", "device": "vd0"}\n' \
		"$dir/victim2" >"$store/.restores/v2.json"
	expect_code 0 "$P: sweep once u quit" "$SNAPCTL" "${D[@]}" sweep
	cp "$TESTDIR/stdout" "$dir/sweep-u.out"
	expect_match "$P: ... removes u's overlay in DIR (recorded, same inode)" "^removed '$ovu' \\(restore overlay of checkpoint 'c1'\\)$" "$dir/sweep-u.out"
	check "$P: ... gone" test ! -e "$ovu"
	expect_match "$P: ... keeps the file an edited record names" "^kept '$dir/victim1' \\(restore overlay of checkpoint 'c1'\\): not created by snapctl \\(another file than recorded\\)$" "$dir/sweep-u.out"
	expect_match "$P: ... and one a record without an inode names outside the store" \
		"^kept '$dir/victim2' \\(restore overlay of checkpoint 'c1'\\): snapctl cannot prove it made it" "$dir/sweep-u.out"
	expect_eq "$P: ... both intact" "not yours not yours" "$(cat "$dir/victim1") $(cat "$dir/victim2")"
	check "$P: ... their records dropped" test ! -e "$store/.restores/v1.json" -a ! -e "$store/.restores/v2.json"
	check "$P: ... the planted file in DIR stays" test -f "$dir/mine/d0.c1.restore-20000102T000000.000Z.qcow2"
	check "$P: ... and the one in STORE/.restores" test -f "$store/.restores/d0.c1.restore-20000102T000000.000Z.qcow2"
	check "$P: ... neither is mentioned" sh -c "! grep -q 20000102 '$dir/sweep-u.out'"
	check "$P: ... h's overlay stays: its QEMU holds it" test -f "$ovh"

	# ---- SIGINT during a --start restore: no overlay, no record -----------
	before=$(ovls)
	env "${RUN[@]:1}" SNAPCTL_TRACE=1 "$SNAPCTL" "${D[@]}" restore c1 --start >/dev/null 2>"$dir/si.trace" &
	spid=$!
	for t in $(seq 3000); do
		grep -q '"execute":"transaction"' "$dir/si.trace" && break
		sleep 0.01
	done
	kill -INT "$spid"
	wait "$spid"
	rc=$?
	if [ $rc = 0 ]; then
		skip "$P: SIGINT during restore --start" "the restore finished first"
	else
		expect_eq "$P: SIGINT during restore --start: exit 8" 8 "$rc"
		expect_match "$P: ... its overlay was cut in STORE/.restores" "\"snapshot-file\": *\"$store/\\.restores/d0\\.c1\\.restore-" "$dir/si.trace"
		expect_eq "$P: ... and is gone, with its record" "$before" "$(ovls)"
		expect_eq "$P: ... no QEMU left" "" "$(pgrep -f "$RT/snapctl-c1" || true)"
	fi

	# ---- SIGINT while QEMU still makes the overlay --------------------------
	# Every create under STORE/.restores sleeps 1.5 s first (QEMU's of the
	# overlay, snapctl's of the record and the empty overlay): SIGINT
	# comes while QEMU is in the transaction, before it made the file.
	if [ -f "$FAULT_SO" ]; then
		before=$(ovls)
		env "${RUN[@]:1}" SNAPCTL_TRACE=1 LD_PRELOAD="$FAULT_SO" \
			ASAN_OPTIONS="$ASAN_OPTIONS:verify_asan_link_order=0" \
			SNAPCTL_FAULT_PATH="$store/.restores" SNAPCTL_FAULT_SLOW_CREATE=1500 \
			"$SNAPCTL" "${D[@]}" restore c1 --start >/dev/null 2>"$dir/ss.trace" &
		spid=$!
		for t in $(seq 3000); do
			grep -q '"execute":"transaction"' "$dir/ss.trace" && break
			sleep 0.01
		done
		kill -INT "$spid"
		wait "$spid"
		rc=$?
		expect_eq "$P: SIGINT while QEMU makes the overlay: exit 8" 8 "$rc"
		expect_eq "$P: ... no overlay and no record left" "$before" "$(ovls)"
		expect_eq "$P: ... no QEMU left" "" "$(pgrep -f "$RT/snapctl-c1" || true)"
	else
		skip "$P: SIGINT while QEMU makes the overlay" "no $FAULT_SO (make helpers)"
	fi

	# ---- a checkpoint of a restored VM: the disk swap in STORE/.restores ---
	if restore_into "k$v" "$f1" c1 &&
		"$SNAPCTL" -s "$(vm_path "k$v" qmp)" "${D[@]}" -q checkpoint $mode p1 2>>"$dir/k$v.err"; then
		ok "$P: restore c1, then checkpoint the restored VM as p1"
	else
		not_ok "$P: restore c1, then checkpoint the restored VM as p1" "$(cat "$dir/k$v.err")"
	fi
	ovk=$(jq_get "$dir/k$v.json" disks.0.overlay)
	sk=$store/.restores/d0.c1.p1.qcow2
	hk=$store/.restores/.$(basename "$ovk").snapctl-p1
	expect_eq "$P: ... p1's state is d0.c1.p1.qcow2 beside the overlay (the stem does not grow)" \
		"$sk" "$(jq_get "$store/p1/manifest.json" disks.0.file)"
	expect_eq "$P: ... the overlay's path stays the VM's disk" "$ovk" "$(jq_get "$store/p1/manifest.json" disks.0.vm_path)"
	expect_eq "$P: ... a new file there, backed by p1's state" "d0.c1.p1.qcow2" \
		"$(qemu-img info -U --output=json "$ovk" | jq_get - backing-filename)"
	expect_eq "$P: ... the swap's hidden link is that file" "$(stat -c '%d %i' "$ovk")" "$(stat -c '%d %i' "$hk" 2>&1)"
	expect_eq "$P: ... the record learnt it before the cut" "$(stat -c '%d %i' "$ovk")" \
		"$(jq_get "$ovk.json" swap.dev) $(jq_get "$ovk.json" swap.ino)"
	expect_eq "$P: ... and keeps the file it proved (p1's state now)" "$(stat -c '%d %i' "$sk")" \
		"$(jq_get "$ovk.json" dev) $(jq_get "$ovk.json" ino)"
	expect_code 0 "$P: sweep while that VM runs" "$SNAPCTL" "${D[@]}" sweep
	expect_match "$P: ... keeps the overlay: open by its QEMU" \
		"^kept '$ovk' \\(restore overlay of checkpoint 'c1'\\): .*open by process $(vm_pid "k$v") " "$TESTDIR/stdout"
	check "$P: ... its record stays" test -f "$ovk.json"
	vm_kill "k$v" KILL
	expect_code 0 "$P: sweep once that VM quit" "$SNAPCTL" "${D[@]}" sweep
	expect_match "$P: ... keeps the overlay: p1's VM's disk" \
		"^kept '$ovk' \\(restore overlay of checkpoint 'c1'\\): the VM's own disk in checkpoint 'p1'$" "$TESTDIR/stdout"
	check "$P: ... the overlay, its hidden link, p1's state and the record stay" \
		test -f "$ovk" -a -f "$hk" -a -f "$sk" -a -f "$ovk.json"
	check "$P: ... p1 verifies" "$SNAPCTL" "${D[@]}" verify p1
	# restore -> checkpoint -> restore: the name does not grow.
	if restore_into "j$v" "$sk" p1; then
		ok "$P: restore p1"
	else
		not_ok "$P: restore p1" "$(cat "$dir/j$v.err")"
	fi
	ovj=$(jq_get "$dir/j$v.json" disks.0.overlay)
	if [[ $(basename "$ovj") =~ $(name_re c1) ]]; then
		ok "$P: ... $(basename "$ovj"): d0.c1's stem again, not d0.c1.p1's"
	else
		not_ok "$P: ... the name does not compound" "$ovj"
	fi
	vm_kill "j$v" KILL
	expect_code 0 "$P: delete --disks p1" "$SNAPCTL" "${D[@]}" delete --disks p1
	cp "$TESTDIR/stdout" "$dir/del-p1.out"
	expect_match "$P: ... removes p1's state" "^removed '$sk'$" "$dir/del-p1.out"
	expect_match "$P: ... the restored VM's overlay above it" "^removed '$ovk' \\(restore overlay of checkpoint 'c1'\\)$" "$dir/del-p1.out"
	expect_match "$P: ... and p1's restore overlay" "^removed '$ovj' \\(restore overlay of checkpoint 'p1'\\)$" "$dir/del-p1.out"
	check "$P: ... with the hidden link and the records" \
		test ! -e "$ovk" -a ! -e "$hk" -a ! -e "$sk" -a ! -e "$ovk.json" -a ! -e "$ovj" -a ! -e "$ovj.json"

	# ---- delete c1: its unheld restore overlays go, held ones stay --------
	if restore_into "w$v" "$f1" c1; then
		ok "$P: restore c1 once more"
	else
		not_ok "$P: restore c1 once more" "$(cat "$dir/w$v.err")"
	fi
	ovw=$(jq_get "$dir/w$v.json" disks.0.overlay)
	vm_kill "w$v" KILL
	expect_code 0 "$P: prune --keep 0 --dry-run" "$SNAPCTL" "${D[@]}" prune --keep 0 --dry-run
	expect_match "$P: ... would remove w's overlay" "^would remove '$ovw' \\(restore overlay of checkpoint 'c1'\\)$" "$TESTDIR/stdout"
	expect_match "$P: ... would keep h's, saying why" "^would keep '$ovh' \\(restore overlay of checkpoint 'c1'\\): open by process $(vm_pid "h$v") " "$TESTDIR/stdout"
	check "$P: ... and changes nothing" test -f "$ovw" -a -f "$ovw.json" -a -d "$store/c1"
	expect_code 0 "$P: delete c1 --json while h runs" "$SNAPCTL" "${D[@]}" --json delete c1
	cp "$TESTDIR/stdout" "$dir/del1.json"
	expect_eq "$P: ... deleted c1" c1 "$(jq_get "$dir/del1.json" deleted.0)"
	expect_eq "$P: ... two restore overlays considered" 2 "$(jq_get -n "$dir/del1.json" restores)"
	for i in 0 1; do
		case $(jq_get "$dir/del1.json" restores.$i.file) in
		"$ovw") expect_eq "$P: ... w's (QEMU gone) removed" "true c1" \
			"$(jq_get "$dir/del1.json" restores.$i.removed) $(jq_get "$dir/del1.json" restores.$i.checkpoint)" ;;
		"$ovh") expect_match "$P: ... h's kept: open by its QEMU" \
			"\"file\":\"$ovh\",\"removed\":false,\"reasons\":\\[\"open by process $(vm_pid "h$v") " "$dir/del1.json" ;;
		*) not_ok "$P: ... an entry for w's or h's overlay" "$(cat "$dir/del1.json")" ;;
		esac
	done
	check "$P: ... w's overlay and record gone" test ! -e "$ovw" -a ! -e "$ovw.json"
	check "$P: ... h's stays" test -f "$ovh"
	vm_kill "h$v" KILL
	expect_code 0 "$P: sweep once h quit" "$SNAPCTL" "${D[@]}" sweep
	expect_match "$P: ... removes h's overlay" "^removed '$ovh' \\(restore overlay of checkpoint 'c1'\\)$" "$TESTDIR/stdout"
	expect_eq "$P: only the planted file is left in STORE/.restores" "d0.c1.restore-20000102T000000.000Z.qcow2 " "$(ovls)"
	expect_code 0 "$P: a sweep with nothing to do" "$SNAPCTL" "${D[@]}" sweep
	expect_eq "$P: ... says nothing" "" "$(cat "$TESTDIR/stdout" "$TESTDIR/stderr")"
done

vm_stop_all
done_testing
