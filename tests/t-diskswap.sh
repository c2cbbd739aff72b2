#!/usr/bin/env bash
# t-diskswap: the disk swap of a checkpoint (diskswap.h) on QEMU 7.2 and
# 10.0, with a firmware-only VM (no guest: the data is written with QEMU's
# qemu-io) whose disks are vd0 (-blockdev qcow2), dr1 (legacy -drive qcow2),
# dr2 (-drive, read-only) and vd1 (-blockdev raw).  The VM's own paths stay
# its current disks; a raw disk is refused unless excluded; SIGKILL of
# snapctl inside the swap, then recover: nothing lost; names never grow
# over ten checkpoints (one failed, one in another store); delete --disks
# removes no file a manifest merely names; a 0777 store is tightened;
# layers snapctl makes are 0600; restart from the same command line.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
[ -x "$JSONQ" ] || { not_ok "build/helper-jsonq exists (run make helpers)"; done_testing; }

# hmp VM CMD: a human monitor command (no backslashes), its output
hmp() {
	vm_qmp_raw "$1" "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"${2//\"/\\\"}\"}}"
}
# pat VER FILE KIB BYTE: the 64 KiB at KIB KiB of image FILE are all BYTE
# (octal, e.g. 021 for 0x11)
pat() {
	vm_qemu_img "$1" convert -U -O raw "$2" "$TESTDIR/pat.raw" || return 1
	cmp <(dd if="$TESTDIR/pat.raw" bs=1K skip="$3" count=64 2>/dev/null) \
		<(head -c 65536 /dev/zero | tr '\000' "\\$4")
}
# chain_ok VER FILE: qemu-img follows the whole chain
chain_ok() { vm_qemu_img "$1" info -U --backing-chain "$2" >/dev/null; }
# names DIR: the image files there
names() { (cd "$1" && ls -A | grep -E 'qcow2|raw|snapctl' | tr '\n' ' '); }

for ver in 7.2 10.0; do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	name=s${ver//./}
	dir=$TESTDIR/$name
	store=$dir/store
	mkdir -p "$dir"
	vm_qemu_img "$ver" create -q -f qcow2 "$dir/d0.qcow2" 16M
	vm_qemu_img "$ver" create -q -f qcow2 "$dir/d1.qcow2" 16M
	vm_qemu_img "$ver" create -q -f qcow2 "$dir/d2.qcow2" 16M
	vm_qemu_img "$ver" create -q -f raw "$dir/d3.raw" 16M
	vmargs=(--qemu "$ver" --no-kernel --disk "$dir/d0.qcow2" --disk "$dir/d3.raw"
		--arg -drive --arg "file=$dir/d1.qcow2,if=none,id=dr1,format=qcow2"
		--arg -device --arg "virtio-blk-pci,drive=dr1,id=xd1"
		--arg -drive --arg "file=$dir/d2.qcow2,if=none,id=dr2,format=qcow2,readonly=on"
		--arg -device --arg "virtio-blk-pci,drive=dr2,id=xd2")
	if ! vm_start "$name" "${vmargs[@]}" 2>"$dir/start.err"; then
		not_ok "QEMU $ver: VM starts" "$(tail -n 5 "$dir/start.err")"
		continue
	fi
	S=(-s "$(vm_path "$name" qmp)" -d "$store")
	X=(--disk-only --exclude vd1)
	hmp "$name" "qemu-io -d /machine/peripheral/vd0/virtio-backend \"write -P 0x11 0 64k\"" >/dev/null
	hmp "$name" "qemu-io dr1 \"write -P 0x11 0 64k\"" >/dev/null

	# ---- a raw disk is refused before anything changes ---------------------
	before=$(names "$dir")
	expect_code 1 "QEMU $ver: a raw disk is refused" "$SNAPCTL" "${S[@]}" checkpoint --disk-only r0
	expect_match "QEMU $ver: ... naming it and why" "^snapctl: disk 'vd1' \('$dir/d3.raw'\) is raw, not qcow2: its path cannot become the qcow2 overlay .*--exclude vd1" "$TESTDIR/stderr"
	expect_eq "QEMU $ver: ... and no file changed" "$before" "$(names "$dir")"

	# ---- the first checkpoint ----------------------------------------------
	ino0=$(stat -c %i "$dir/d0.qcow2")
	expect_code 0 "QEMU $ver: checkpoint s1 (--exclude the raw disk)" "$SNAPCTL" "${S[@]}" checkpoint "${X[@]}" s1
	m=$store/s1/manifest.json
	expect_eq "QEMU $ver s1: two disks (dr2 is read-only, vd1 excluded)" "dr1 vd0" \
		"$(jq_get "$m" disks.0.device) $(jq_get "$m" disks.1.device)"
	expect_eq "QEMU $ver s1: dr1's layer (-drive)" "$dir/d1.s1.qcow2" "$(jq_get "$m" disks.0.file)"
	expect_eq "QEMU $ver s1: vd0's layer (-blockdev)" "$dir/d0.s1.qcow2" "$(jq_get "$m" disks.1.file)"
	expect_eq "QEMU $ver s1: the layer is the old inode" "$ino0" "$(stat -c %i "$dir/d0.s1.qcow2")"
	for f in d0 d1; do
		expect_eq "QEMU $ver s1: $f.qcow2 is backed by $f.s1.qcow2" "$f.s1.qcow2" \
			"$(vm_qemu_img "$ver" info -U --output=json "$dir/$f.qcow2" | jq_get - backing-filename)"
		expect_eq "QEMU $ver s1: the new $f.qcow2 is 0600" 600 "$(stat -c %a "$dir/$f.qcow2")"
		check "QEMU $ver s1: $f's chain is valid" chain_ok "$ver" "$dir/$f.qcow2"
	done
	check "QEMU $ver s1: d2 (read-only) has no layer" test ! -e "$dir/d2.s1.qcow2"
	check "QEMU $ver s1: d3 (excluded) has no layer" test ! -e "$dir/d3.s1.qcow2"
	check "QEMU $ver s1: QEMU's name of the new layer is a link of d0.qcow2" test "$dir/.d0.qcow2.snapctl-s1" -ef "$dir/d0.qcow2"
	expect_eq "QEMU $ver s1: QEMU writes to d0.qcow2" "$dir/d0.qcow2" "$(ck_active_file "$name" vd0)"
	hmp "$name" "qemu-io -d /machine/peripheral/vd0/virtio-backend \"write -P 0x22 64k 64k\"" >/dev/null
	check "QEMU $ver s1: verify" "$SNAPCTL" -d "$store" verify s1

	# ---- SIGKILL inside the swap, then recover -----------------------------
	k=0
	for step in linked cut renamed; do
		k=$((k + 1))
		d="QEMU $ver SIGKILL at '$step'"
		SNAPCTL_TEST_HOLD_SWAP=$step:60000 "$SNAPCTL" "${S[@]}" checkpoint "${X[@]}" "k$k" \
			>"$dir/k$k.out" 2>"$dir/k$k.err" &
		pid=$!
		t=$dir/.d1.qcow2.snapctl-k$k
		for _ in $(seq 300); do
			case $step in
			linked) [ -e "$t" ] && break ;;
			cut) [ "$(ck_active_file "$name" dr1)" = "$t" ] && break ;;
			renamed) [ "$(ck_active_file "$name" dr1)" = "$t" ] && [ ! -e "$t" ] && break ;;
			esac
			sleep 0.1
		done
		kill -KILL "$pid"
		wait "$pid" 2>/dev/null
		for f in d0 d1; do
			check "$d: $f's chain is valid before recover" chain_ok "$ver" "$dir/$f.qcow2"
		done
		expect_code 0 "$d: recover" "$SNAPCTL" -d "$store" recover
		cp "$TESTDIR/stdout" "$dir/rk$k.out"
		if [ $step = linked ]; then
			# dr1 comes first: killed after its link, before vd0's
			expect_match "$d: ... undid the swap" "^removed the link '$dir/d1.k$k.qcow2'" "$dir/rk$k.out"
			check "$d: ... no layer left" test ! -e "$dir/d1.k$k.qcow2" -a ! -e "$dir/d0.k$k.qcow2"
		else
			expect_match "$d: ... finished the swap" "^finished the disk swap: '$dir/d0.qcow2' is the current disk" "$dir/rk$k.out"
			check "$d: ... the layer stays (the disks were cut)" test -e "$dir/d0.k$k.qcow2"
			expect_eq "$d: ... d0.qcow2 backed by it" "d0.k$k.qcow2" \
				"$(vm_qemu_img "$ver" info -U --output=json "$dir/d0.qcow2" | jq_get - backing-filename)"
		fi
		if [ $step = linked ]; then
			check "$d: no temporary file" test ! -e "$dir/.d0.qcow2.snapctl-k$k"
		else
			check "$d: QEMU's name of the new layer is a link of d0.qcow2" test "$dir/.d0.qcow2.snapctl-k$k" -ef "$dir/d0.qcow2"
		fi
		for f in d0 d1; do
			check "$d: $f's chain is valid after recover" chain_ok "$ver" "$dir/$f.qcow2"
		done
		expect_eq "$d: the VM runs" running "$(ck_status "$name")"
		expect_eq "$d: QEMU writes to d0.qcow2" "$dir/d0.qcow2" "$(ck_active_file "$name" vd0)"
		check "$d: no checkpoint k$k" test ! -e "$store/k$k"
	done
	hmp "$name" "qemu-io -d /machine/peripheral/vd0/virtio-backend \"write -P 0x33 128k 64k\"" >/dev/null

	# ---- names do not grow -------------------------------------------------
	for n in n1 n2 n3 n4 n5; do
		expect_code 0 "QEMU $ver: checkpoint $n" "$SNAPCTL" "${S[@]}" checkpoint "${X[@]}" "$n"
	done
	expect_code 0 "QEMU $ver: checkpoint o1 into another store" "$SNAPCTL" -s "$(vm_path "$name" qmp)" \
		-d "$dir/store2" checkpoint "${X[@]}" o1
	expect_code 0 "QEMU $ver: checkpoint n6" "$SNAPCTL" "${S[@]}" checkpoint "${X[@]}" n6
	bad=$(cd "$dir" && ls -A | grep -vE '^(d[0-3]\.(qcow2|raw)|d[01]\.[a-z0-9]+\.qcow2|\.d[01]\.qcow2\.snapctl-n6|store2?|start\.err|k[0-9]\.(out|err)|rk[0-9]\.out|pat\.raw)$')
	expect_eq "QEMU $ver: after 11 checkpoints no name grew" "" "$bad"
	expect_eq "QEMU $ver: d0's chain is 10 layers + the current disk" 11 \
		"$(vm_qemu_img "$ver" info -U --backing-chain "$dir/d0.qcow2" | grep -c '^image:')"
	for n in s1 n1 n6; do
		check "QEMU $ver: verify $n" "$SNAPCTL" -d "$store" verify "$n"
	done

	# ---- delete --disks removes only what it can prove it made --------------
	echo precious >"$dir/outside.qcow2"
	mf=$store/n6/manifest.json
	# disks[1] (vd0): its file; disks[0] (dr1): its overlay, no longer the VM's path
	sed -i -e "s|\"$dir/d0.n6.qcow2\"|\"$dir/outside.qcow2\"|" \
		-e "s|\"overlay\": \"$dir/d1.qcow2\"|\"overlay\": \"$dir/outside.qcow2\"|" \
		-e '0,/"vm_path": true/s//"vm_path": false/' "$mf"
	expect_code 0 "QEMU $ver: delete --disks n6 with a manifest pointing outside" "$SNAPCTL" -d "$store" delete --disks n6
	expect_eq "QEMU $ver: ... leaves the outside file" precious "$(cat "$dir/outside.qcow2")"
	check "QEMU $ver: ... and the VM's current disks" test -s "$dir/d0.qcow2" -a -s "$dir/d1.qcow2"
	expect_code 0 "QEMU $ver: delete --disks n5" "$SNAPCTL" -d "$store" delete --disks n5
	check "QEMU $ver: ... keeps d0.qcow2 (the VM's own path)" test -s "$dir/d0.qcow2"
	check "QEMU $ver: ... and d0.n5.qcow2 (it backs d0.qcow2)" test -s "$dir/d0.n5.qcow2"

	# ---- a store others may write to is tightened --------------------------
	chmod 0777 "$store"
	expect_code 0 "QEMU $ver: list a 0777 store" "$SNAPCTL" -d "$store" list
	expect_eq "QEMU $ver: ... it is 0700 now" 700 "$(stat -c %a "$store")"

	# ---- restart from the same command line ----------------------------------
	vm_kill "$name" KILL
	for f in d0 d1; do
		check "QEMU $ver: after the VM went, $f's chain is valid" vm_qemu_img "$ver" check -q "$dir/$f.qcow2"
	done
	check "QEMU $ver: d0.qcow2 holds the write before s1" pat "$ver" "$dir/d0.qcow2" 0 021
	check "QEMU $ver: ... the write after s1" pat "$ver" "$dir/d0.qcow2" 64 042
	check "QEMU $ver: ... the write after the SIGKILLs" pat "$ver" "$dir/d0.qcow2" 128 063
	check "QEMU $ver: s1's layer holds its state" pat "$ver" "$dir/d0.s1.qcow2" 0 021
	check "QEMU $ver: ... and not the later write" pat "$ver" "$dir/d0.s1.qcow2" 64 000
	if vm_start "$name" "${vmargs[@]}" 2>"$dir/start2.err"; then
		ok "QEMU $ver: the VM restarts from its unchanged command line"
		expect_code 0 "QEMU $ver: ... and a checkpoint of it works" "$SNAPCTL" "${S[@]}" checkpoint "${X[@]}" z1
		expect_eq "QEMU $ver z1: its layer" "$dir/d0.z1.qcow2" "$(jq_get "$store/z1/manifest.json" disks.1.file)"
		check "QEMU $ver: verify s1 after the restart" "$SNAPCTL" -d "$store" verify s1
		vm_kill "$name" KILL
		check "QEMU $ver z1: the layer holds every write" pat "$ver" "$dir/d0.z1.qcow2" 128 063
	else
		not_ok "QEMU $ver: the VM restarts from its unchanged command line" "$(tail -n 5 "$dir/start2.err")"
	fi
done

vm_stop_all
done_testing
