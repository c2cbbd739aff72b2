#!/usr/bin/env bash
# t-checkpoint-faults: snapctl checkpoint when things go wrong, on QEMU 7.2
# and 10.0 (one churning guest each, two disks: d0 beside the store, d1 a
# qcow2 image on a small tmpfs), and a firmware-only -blockdev VM per QEMU
# whose qcow2 node sets "backing" and whose third disk is raw: refused.  After every failure the guest must run,
# the migration capabilities and parameters must be as before, no
# checkpoint, staging directory, recovery note or overlay may be left, and
# snapctl must say what happened in one line with the right exit code:
#   SIGINT in the live phase (8); SIGTERM while held at pre-switchover (8);
#   SIGINT or SIGTERM after the cut, during the commit (0, a warning, the
#   checkpoint complete);
#   a full filesystem for the store (6), also one that the live phase
#   fits but the commit would not (6, before the cut); a disk swap that
#   fails half-way (d1's filesystem full: d0's state was already linked and
#   its overlay made: 6) and an --overlay-dir on another filesystem (1,
#   before anything changes, also for --disk-only --quiesce: no freeze); --timeout with --on-timeout abort (7) and with stop (0,
#   "forced"); QEMU killed mid-capture (3).
# Needs root for the tmpfs mounts; without it those cases are skipped.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=96 churn.verify=1000 churn.disk=/dev/vda churn.rate=0"
SLOW=2M		# --bandwidth that keeps the live phase going for a minute

mounts=()
umount_all() {
	local m
	for m in "${mounts[@]}"; do
		umount -l "$m" 2>/dev/null
	done
}
at_exit umount_all
# tmpfs_at DIR SIZE [ro]: 0 if mounted
tmpfs_at() {
	mkdir -p "$1"
	mount -t tmpfs -o "size=$2,mode=0755${3:+,$3}" tmpfs "$1" 2>/dev/null || return 1
	mounts+=("$1")
}

versions=()
declare -A small_ok
for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	name=f${ver//./}
	dir=$TESTDIR/$name
	mkdir -p "$dir"
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	disks=(--disk "$dir/d0.qcow2")
	small_ok[$ver]=0
	if tmpfs_at "$dir/small" 4M; then
		# Preallocated, so the full filesystem never stops its writes.
		qemu-img create -q -f qcow2 -o preallocation=full "$dir/small/d1.qcow2" 1M && small_ok[$ver]=1
		disks+=(--disk "$dir/small/d1.qcow2")
	fi
	if vm_start "$name" --qemu "$ver" --agent "${disks[@]}" --append "$CHURN" \
		2>"$TESTDIR/$name.err"; then
		versions+=("$ver")
	else
		not_ok "QEMU $ver: guest starts" "$(tail -n 5 "$TESTDIR/$name.err")"
	fi
done
[ "$(id -u)" = 0 ] || skip "tmpfs cases" "not root"

# no_overlays DESC NAME: no file of checkpoint NAME beside any disk (its
# state, or the temporary name of its disk swap).
no_overlays() {
	local left
	left=$(find "$dir" -name "*.$2.qcow2" -o -name ".*.snapctl-$2" 2>/dev/null)
	expect_eq "$1: no overlay left" "" "$left"
}

# bg_checkpoint NAME ARGS...: start snapctl in the background; $pid
bg_checkpoint() {
	local n=$1
	shift
	"$SNAPCTL" "${S[@]}" checkpoint "$@" "$n" >"$dir/$n.out" 2>"$dir/$n.err" &
	pid=$!
}

# finish DESC CODE NAME: wait for $pid, check its exit code and output
finish() {
	local d=$1 want=$2 n=$3 rc
	wait "$pid"
	rc=$?
	if [ "$rc" = "$want" ]; then
		ok "$d: exit $want"
	else
		not_ok "$d: exit $want" "got $rc" "$(head -n 5 "$dir/$n.err")"
	fi
	ck_one_line "$d: one line on stderr" "$dir/$n.err"
	expect_eq "$d: nothing on stdout" "" "$(cat "$dir/$n.out")"
}

for ver in "${versions[@]}"; do
	name=f${ver//./}
	dir=$TESTDIR/$name
	store=$dir/store
	qmp=$(vm_path "$name" qmp)
	S=(-s "$qmp" -d "$store")
	if ! vm_wait_ready "$name" 150 >/dev/null; then
		not_ok "QEMU $ver: churn READY"
		continue
	fi
	ok "QEMU $ver: churn READY"
	before=$(ck_settings "$name")

	# ---- SIGINT in the live phase ----------------------------------------
	d="QEMU $ver SIGINT live"
	bg_checkpoint i1 --bandwidth "$SLOW"
	if ck_wait_mig "$name" '^active$' 30; then
		sleep 1
		kill -INT "$pid"
		finish "$d" 8 i1
		expect_match "$d: says so" '^snapctl: interrupted by SIGINT$' "$dir/i1.err"
	else
		kill -KILL "$pid"
		not_ok "$d: the migration starts" "$(cat "$dir/i1.err")"
	fi
	ck_guest_back "$name" "$store" "$before" "$d"
	check "$d: no checkpoint" test ! -e "$store/i1"
	no_overlays "$d" i1

	# ---- SIGTERM while held at pre-switchover ------------------------------
	d="QEMU $ver SIGTERM at switchover"
	SNAPCTL_TEST_HOLD_SWITCHOVER_MS=60000 bg_checkpoint t1
	if ck_wait_mig "$name" '^pre-switchover$' 60; then
		expect_eq "$d: the guest is stopped there" finish-migrate "$(ck_status "$name")"
		kill -TERM "$pid"
		finish "$d" 8 t1
		expect_match "$d: says so" '^snapctl: interrupted by SIGTERM$' "$dir/t1.err"
	else
		kill -KILL "$pid"
		not_ok "$d: reaches pre-switchover" "$(cat "$dir/t1.err")"
	fi
	ck_guest_back "$name" "$store" "$before" "$d"
	check "$d: no checkpoint" test ! -e "$store/t1"
	no_overlays "$d" t1

	# ---- the store's filesystem fills up -----------------------------------
	d="QEMU $ver full store"
	if tmpfs_at "$dir/full" 16M; then
		expect_code 6 "$d: exit 6" "$SNAPCTL" -s "$qmp" -d "$dir/full/store" checkpoint n1
		cp "$TESTDIR/stderr" "$dir/n1.err"
		ck_one_line "$d: one line on stderr" "$dir/n1.err"
		# A write fails, or the room check before the cut sees the store
		# fill up first (faster compaction gets there first more often).
		expect_match "$d: says the device is full" 'No space left on device|short of room: .* \(the disks were not cut\)$' "$dir/n1.err"
		ck_guest_back "$name" "$dir/full/store" "$before" "$d"
		check "$d: no checkpoint" test ! -e "$dir/full/store/n1"
		expect_eq "$d: the store holds only its lock" ".lock" "$(ls -A "$dir/full/store")"
		expect_eq "$d: the filesystem is empty again" 0 "$(du -s "$dir/full" | cut -f1)"
		no_overlays "$d" n1
	else
		skip "$d" "cannot mount a tmpfs"
	fi

	# ---- the transaction fails half-way --------------------------------------
	d="QEMU $ver disk swap fails on the 2nd disk"
	if [ "${small_ok[$ver]}" = 1 ]; then
		dd if=/dev/zero of="$dir/small/filler" bs=64k 2>/dev/null
		expect_code 6 "$d: exit 6" "$SNAPCTL" "${S[@]}" checkpoint x1
		cp "$TESTDIR/stderr" "$dir/x1.err"
		rm -f "$dir/small/filler"
		ck_one_line "$d: one line on stderr" "$dir/x1.err"
		expect_match "$d: names the disk and the file" "^snapctl: disk 'vd1': cannot write '$dir/small/\.d1\.qcow2\.snapctl-x1': No space left on device" "$dir/x1.err"
		ck_guest_back "$name" "$store" "$before" "$d"
		no_overlays "$d" x1
		check "$d: no checkpoint" test ! -e "$store/x1"
		expect_eq "$d: the VM still writes to d0.qcow2" "$dir/d0.qcow2" "$(ck_active_file "$name" vd0)"
	else
		skip "$d" "no second disk on a tmpfs"
	fi

	# ---- ... and into a read-only --overlay-dir ------------------------------
	d="QEMU $ver --overlay-dir on another filesystem"
	if tmpfs_at "$dir/ro" 1M ro; then
		expect_code 1 "$d: exit 1" "$SNAPCTL" "${S[@]}" checkpoint --overlay-dir "$dir/ro" x2
		cp "$TESTDIR/stderr" "$dir/x2.err"
		ck_one_line "$d: one line on stderr" "$dir/x2.err"
		expect_match "$d: says why" "^snapctl: disk 'vd0': --overlay-dir '$dir/ro' is on another filesystem than '$dir/d0.qcow2': the checkpoint's state is a hard link of it$" "$dir/x2.err"
		ck_guest_back "$name" "$store" "$before" "$d"
		no_overlays "$d" x2
		check "$d: no checkpoint" test ! -e "$store/x2"

		d="QEMU $ver --disk-only --quiesce, refused"
		if vm_wait_agent "$name" 60 2>/dev/null; then
			SNAPCTL_TRACE=1 expect_code 1 "$d: exit 1" "$SNAPCTL" "${S[@]}" checkpoint \
				--disk-only --quiesce --agent "$(vm_path "$name" qga)" --overlay-dir "$dir/ro" x3
			tr=$TESTDIR/stderr
			expect_eq "$d: refused before the guest was frozen" "" "$(grep '^-> .*"guest-fsfreeze-freeze"' "$tr")"
			expect_match "$d: one error line" "^snapctl: disk 'vd0': --overlay-dir .* is on another filesystem" <(grep -v '^[<-]' "$tr")
			st=$(vm_qga "$name" '{"execute":"guest-fsfreeze-status"}' | jq_get - return)
			expect_eq "$d: the agent says thawed" thawed "$st"
			ck_guest_back "$name" "$store" "$before" "$d"
			no_overlays "$d" x3
		else
			not_ok "$d: the guest agent answers"
		fi
	else
		skip "$d" "cannot mount a read-only tmpfs"
	fi

	# ---- SIGINT/SIGTERM after the cut: the checkpoint completes -------------
	for sg in INT TERM; do
		d="QEMU $ver SIG$sg while committing"
		SNAPCTL_TEST_HOLD_COMMIT_MS=60000 bg_checkpoint k$sg
		# Held before the commit: the disks cut, this migration over.
		for i in $(seq 600); do
			[ -e "$dir/d0.k$sg.qcow2" ] && [ -z "$(ck_stray "$dir")" ] &&
				[ -e "$dir/.d0.qcow2.snapctl-k$sg" ] &&
				[ "$(ck_mig_status "$name")" = completed ] && break
			sleep 0.1
		done
		if [ "$i" -lt 600 ]; then
			sleep 0.5
			kill -$sg "$pid"
			wait "$pid"
			expect_eq "$d: exit 0" 0 "$?"
			# (QEMU < 9.0 without KVM adds the live-checkpoint
			# warning: t-blkstress tests it)
			sed -i '/^snapctl: warning: QEMU [0-8]\.[0-9.]* without KVM can miss guest writes/d' "$dir/k$sg.err"
			ck_one_line "$d: one line on stderr" "$dir/k$sg.err"
			expect_match "$d: warns" "^snapctl: warning: SIG$sg came after the disks were cut; the checkpoint was completed$" "$dir/k$sg.err"
			expect_match "$d: reports it done" "^checkpoint 'k$sg' " "$dir/k$sg.out"
		else
			kill -KILL "$pid"
			not_ok "$d: the migration completes" "$(cat "$dir/k$sg.err")"
		fi
		ck_guest_back "$name" "$store" "$before" "$d"
		check "$d: a checkpoint" test -f "$store/k$sg/manifest.json"
		check "$d: its image verifies" "$SNAPCTL" verify "$store/k$sg/memory.img"
		expect_eq "$d: the VM writes to its overlay" "$(jq_get "$store/k$sg/manifest.json" disks.0.overlay)" "$(ck_active_file "$name" vd0)"
	done

	# ---- --timeout ----------------------------------------------------------
	d="QEMU $ver --timeout abort"
	expect_code 7 "$d: exit 7" "$SNAPCTL" "${S[@]}" checkpoint --bandwidth "$SLOW" \
		--timeout 2 --on-timeout abort o1
	cp "$TESTDIR/stderr" "$dir/o1.err"
	ck_one_line "$d: one line on stderr" "$dir/o1.err"
	expect_match "$d: says so" 'did not converge within 2 s' "$dir/o1.err"
	ck_guest_back "$name" "$store" "$before" "$d"
	no_overlays "$d" o1
	check "$d: no checkpoint" test ! -e "$store/o1"

	d="QEMU $ver --timeout stop"
	expect_code 0 "$d: exit 0" "$SNAPCTL" "${S[@]}" --json checkpoint --bandwidth 4M --timeout 2 o2
	cp "$TESTDIR/stdout" "$dir/o2.json"
	expect_eq "$d: forced" true "$(jq_get "$dir/o2.json" forced)"
	expect_eq "$d: mode live" live "$(jq_get "$dir/o2.json" mode)"
	ck_guest_back "$name" "$store" "$before" "$d"
	check "$d: a checkpoint" test -f "$store/o2/manifest.json"
	check "$d: its image verifies" "$SNAPCTL" verify "$store/o2/memory.img"

	# ---- --exclude -------------------------------------------------------------
	d="QEMU $ver --exclude vd1"
	if [ "${small_ok[$ver]}" = 1 ]; then
		expect_code 2 "$d: an unknown device is a usage error" "$SNAPCTL" "${S[@]}" checkpoint --exclude vd9 e0
		vd1=$(ck_active_file "$name" vd1)
		expect_code 0 "$d: exit 0" "$SNAPCTL" "${S[@]}" checkpoint --exclude vd1 e1
		expect_eq "$d: one disk in the manifest" 1 "$(jq_get -n "$store/e1/manifest.json" disks)"
		expect_eq "$d: ... vd0" vd0 "$(jq_get "$store/e1/manifest.json" disks.0.device)"
		expect_eq "$d: vd1 was left alone" "$vd1" "$(ck_active_file "$name" vd1)"
		expect_eq "$d: vd0 writes on at its own path" "$dir/d0.qcow2" "$(ck_active_file "$name" vd0)"
		expect_eq "$d: ... its state d0.e1.qcow2" "$dir/d0.e1.qcow2" "$(jq_get "$store/e1/manifest.json" disks.0.file)"
		check "$d: no state file for vd1" test ! -e "$dir/small/d1.e1.qcow2"
		ck_guest_back "$name" "$store" "$before" "$d"
	else
		skip "$d" "no second disk"
	fi

	# ---- a store short of room for the rest fails before the cut -----------
	# The final image is 60-82M (fewer pages under ASan): in 32M and 50M
	# the live phase fills the store or the switchover's check refuses.
	# Either way exit 6 before the disks are cut, every time; with room
	# enough, a checkpoint.  (Image format 2 writes its frames where they
	# land: the commit needs no scratch copy, so a store a little larger
	# than the image may now take it.)
	for sz in 32M 50M; do
		for try in $(seq "${CK_FULL_TRIES:-2}"); do
			d="QEMU $ver store of $sz, try $try"
			m=$dir/full-$sz-$try
			if ! tmpfs_at "$m" "$sz"; then
				skip "$d" "cannot mount a tmpfs"
				continue
			fi
			act=$(ck_active_file "$name" vd0)
			expect_code 6 "$d: exit 6" "$SNAPCTL" -s "$qmp" -d "$m/store" checkpoint n2
			cp "$TESTDIR/stderr" "$dir/n2.err"
			ck_one_line "$d: one line on stderr" "$dir/n2.err"
			expect_match "$d: says the store is full" 'No space left on device|short of room: .* \(the disks were not cut\)$' "$dir/n2.err"
			expect_eq "$d: the VM writes to the same file" "$act" "$(ck_active_file "$name" vd0)"
			ck_guest_back "$name" "$m/store" "$before" "$d"
			no_overlays "$d" n2
			expect_eq "$d: the store holds only its lock" ".lock" "$(ls -A "$m/store")"
			umount -l "$m"
		done
	done
	d="QEMU $ver store of 700M"
	if tmpfs_at "$dir/room" 700M; then
		expect_code 0 "$d: exit 0" "$SNAPCTL" -s "$qmp" -d "$dir/room/store" checkpoint n3
		check "$d: a checkpoint" test -f "$dir/room/store/n3/manifest.json"
		ck_guest_back "$name" "$dir/room/store" "$before" "$d"
	else
		skip "$d" "cannot mount a tmpfs"
	fi

	# ---- QEMU dies ------------------------------------------------------------
	d="QEMU $ver killed mid-capture"
	bg_checkpoint q1 --bandwidth "$SLOW"
	if ck_wait_mig "$name" '^active$' 30; then
		sleep 1
		vm_kill "$name" KILL
		finish "$d" 3 q1
		expect_eq "$d: nothing left in the store" "" "$(ck_leftovers "$store")"
		check "$d: no checkpoint" test ! -e "$store/q1"
		no_overlays "$d" q1
	else
		kill -KILL "$pid"
		not_ok "$d: the migration starts" "$(cat "$dir/q1.err")"
	fi
	left=$(pgrep -f "checkpoint.*$store" || true)
	expect_eq "$d: snapctl is gone" "" "$left"
done

# ---- disks the swap cannot follow: refused before anything changes --------
# (-blockdev: a qcow2 node that sets "backing", a raw image)
for ver in "${versions[@]}"; do
	d="QEMU $ver -blockdev"
	bd=$TESTDIR/bd${ver//./}
	mkdir -p "$bd"
	qemu-img create -q -f qcow2 "$bd/n0.qcow2" 16M
	qemu-img create -q -f qcow2 "$bd/n1.qcow2" 16M
	qemu-img create -q -f raw "$bd/n2.raw" 16M
	if ! vm_start "b${ver//./}" --qemu "$ver" --no-kernel \
		--arg -blockdev --arg "{\"driver\":\"file\",\"filename\":\"$bd/n0.qcow2\",\"node-name\":\"f0\"}" \
		--arg -blockdev --arg "{\"driver\":\"qcow2\",\"file\":\"f0\",\"node-name\":\"q0\",\"backing\":null}" \
		--arg -device --arg virtio-blk-pci,drive=q0,id=vd0,bus=pcie.0,addr=0x10 \
		--arg -blockdev --arg "driver=qcow2,node-name=q1,file.driver=file,file.filename=$bd/n1.qcow2" \
		--arg -device --arg virtio-blk-pci,drive=q1,id=vd1,bus=pcie.0,addr=0x11 \
		--arg -blockdev --arg "driver=raw,node-name=q2,file.driver=file,file.filename=$bd/n2.raw" \
		--arg -device --arg virtio-blk-pci,drive=q2,id=vd2,bus=pcie.0,addr=0x12 2>"$bd/start.err"; then
		not_ok "$d: a firmware-only VM starts" "$(tail -n 3 "$bd/start.err")"
		continue
	fi
	B=(-s "$(vm_path "b${ver//./}" qmp)" -d "$bd/store")
	before=$(cd "$bd" && ls -A | tr '\n' ' ' | sed 's/ $//')
	expect_code 1 "$d: a qcow2 node with \"backing\": null is refused" "$SNAPCTL" "${B[@]}" checkpoint --disk-only --exclude vd2 b1
	ck_one_line "$d: ... in one line" "$TESTDIR/stderr"
	expect_match "$d: ... saying why and what to do" "^snapctl: disk 'vd0': its -blockdev sets 'backing': started again from that command line, QEMU would not open the checkpoint's state below '$bd/n0.qcow2'; drop 'backing' from that -blockdev, or --exclude vd0$" "$TESTDIR/stderr"
	expect_code 1 "$d: a raw -blockdev is refused" "$SNAPCTL" "${B[@]}" checkpoint --disk-only --exclude vd0 b2
	expect_match "$d: ... naming it" "^snapctl: disk 'vd2': '$bd/n2.raw' is raw, not qcow2: .*--exclude vd2, or convert it to qcow2$" "$TESTDIR/stderr"
	expect_eq "$d: ... no file made" "$before store" "$(cd "$bd" && ls -A | tr '\n' ' ' | sed 's/ $//')"
	expect_code 0 "$d: with both excluded, the key=value disk is swapped" "$SNAPCTL" "${B[@]}" checkpoint --disk-only --exclude vd0 --exclude vd2 b3
	expect_eq "$d: ... its state n1.b3.qcow2" "$bd/n1.b3.qcow2" "$(jq_get "$bd/store/b3/manifest.json" disks.0.file)"
	expect_eq "$d: ... the VM writes on at n1.qcow2" "$bd/n1.qcow2" "$(ck_active_file "b${ver//./}" vd1)"
	vm_kill "b${ver//./}" KILL
done

vm_stop_all
done_testing
