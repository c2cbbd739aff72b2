#!/usr/bin/env bash
# t-revert: "snapctl revert NAME" (issue 11) on QEMU 7.2 and 10.0, with a
# -drive VM of two disks: d0 (churn's disk records) and d1.
#   - checkpoints c1 and c2 of the running VM; revert while it runs is
#     refused (exit 4, one line naming the disk and the process), nothing
#     changes;
#   - QEMU quits; bad input changes nothing: an unknown checkpoint (exit
#     1), a missing state file, a state file replaced (another inode, same
#     bytes and mtime) (exit 4); --dry-run says what would change;
#   - revert c1: d0.qcow2 is a new 0600 overlay on d0.c1.qcow2, the same
#     bytes as c1's state (qemu-img compare), its records end where c1's
#     do; d0.pre-revert-c1.qcow2 (0600) is the disk it replaced, on
#     d0.c2.qcow2, with the later records; no hidden name left; verify c1
#     and c2 pass;
#   - the unchanged command line boots on it; a checkpoint c3 of that VM
#     names c1 as its parent;
#   - revert --discard c2 drops the disk snapctl made (no pre-revert
#     layer), but keeps one that qemu-img made, saying so;
#   - SIGKILL after each step (SNAPCTL_TEST_HOLD_REVERT written, linked,
#     renamed): every disk path is a valid chain, a new run finishes;
#   - revert c2 --start: the guest is c2's run, verifies memory and disk,
#     QEMU runs on d0.qcow2 itself; revert while it runs is refused.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=64 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=50 churn.tick=200"
RT=$TESTDIR/rt
mkdir -m 700 "$RT"
export XDG_RUNTIME_DIR=$RT

# ---- the command line, no VM needed ------------------------------------
N=(-d "$TESTDIR/none")
expect_code 2 "revert: --start and --dry-run exclude each other" "$SNAPCTL" "${N[@]}" revert --dry-run c1 --start
expect_code 2 "revert: arguments after NAME need --start --" "$SNAPCTL" "${N[@]}" revert c1 c2
expect_code 1 "revert: a missing store: exit 1" "$SNAPCTL" "${N[@]}" revert c1


field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
last_tick() { grep -a '^CHURN TICK' "$1" | tail -n 1 | tr -d '\r'; }

# A whole TICK line (its run id is the last field, 16 hex digits).
TICK_RE='^CHURN TICK .* run=[0-9a-f]{16}$'

# names DIR: every file there with its inode (a running guest changes
# sizes); hidden DIR: temporary names.
names() { (cd "$1" && find . -maxdepth 1 -type f -printf '%p %i\n' | sort); }
hidden() { (cd "$1" && ls -A | grep -E '\.snapctl-|\.revert-' | tr '\n' ' ' || true); }

start_vm() {
	local d=$3
	vm_start "$1" --qemu "$2" --append "$CHURN" \
		--arg -drive --arg "file=$d/d0.qcow2,if=none,id=drive0,format=qcow2" \
		--arg -device --arg virtio-blk-pci,drive=drive0,id=vd0,bus=pcie.0,addr=0x10 \
		--arg -drive --arg "file=$d/d1.qcow2,if=none,id=drive1,format=qcow2" \
		--arg -device --arg virtio-blk-pci,drive=drive1,id=vd1,bus=pcie.0,addr=0x11
}

# backing_of VER FILE: the full backing file name qemu-img gives.
backing_of() { vm_qemu_img "$1" info -U --output=json "$2" | jq_get - full-backing-filename; }
# records VER FILE RUN: churn's records of run RUN in FILE ("max=N missing=M").
records() {
	vm_qemu_img "$1" convert -U -O raw "$2" "$dir/rec.raw" && ck_records "$dir/rec.raw" "$3"
	rm -f "$dir/rec.raw"
}
# chains_ok VER: each disk path is a chain qemu-img opens whole.
chains_ok() {
	vm_qemu_img "$1" info --backing-chain "$dir/d0.qcow2" >/dev/null &&
		vm_qemu_img "$1" info --backing-chain "$dir/d1.qcow2" >/dev/null
}
# wait_disk_seq VM N: churn's disk_seq has grown by N records.
wait_disk_seq() {
	local want t tick
	want=$(($(field disk_seq "$(last_tick "$(vm_path "$1" serial)")") + $2))
	for ((t = 0; t < 600; t++)); do
		tick=$(last_tick "$(vm_path "$1" serial)")
		[ "$(field disk_seq "$tick")" -ge "$want" ] && return 0
		sleep 0.1
	done
	return 1
}

# kill_at STEP D: revert c1 held at STEP (after its first disk's step),
# killed there; the disks are valid chains; a new run finishes.
kill_at() {
	local step=$1 d=$2 p
	SNAPCTL_TEST_HOLD_REVERT=$step:60000 "$SNAPCTL" "${S[@]}" revert c1 >"$dir/k.out" 2>"$dir/k.err" &
	p=$!
	sleep 2
	case $step in
	written) check "$d: held with the new overlay written" test -f "$dir/.d0.qcow2.revert-c1" ;;
	linked) check "$d: held with the pre-revert link made" test "$(stat -c %h "$dir/d0.qcow2")" -ge 2 ;;
	renamed) expect_eq "$d: held with d0.qcow2 on c1's state" "$dir/d0.c1.qcow2" "$(backing_of "$ver" "$dir/d0.qcow2")" ;;
	esac
	kill -KILL "$p"
	wait "$p" 2>/dev/null
	check "$d: every disk path is a valid chain" chains_ok "$ver"
	expect_code 0 "$d: revert c1 again" "$SNAPCTL" "${S[@]}" revert c1
	expect_eq "$d: ... d0.qcow2 is on c1's state" "$dir/d0.c1.qcow2" "$(backing_of "$ver" "$dir/d0.qcow2")"
	expect_eq "$d: ... d1.qcow2 is on c1's state" "$dir/d1.c1.qcow2" "$(backing_of "$ver" "$dir/d1.qcow2")"
	check "$d: ... with c1's bytes" vm_qemu_img "$ver" compare -q "$dir/d0.qcow2" "$dir/d0.c1.qcow2"
	expect_eq "$d: ... no temporary name left" "" "$(hidden "$dir")"
}

for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	v=${ver//./}
	name=r$v
	dir=$TESTDIR/$name
	store=$dir/store
	mkdir -p "$dir"
	RUN=(env)
	[ "$ver" = 10.0 ] && RUN=(env "QEMU_MODULE_DIR=$VM_QEMU10_DIR/usr/lib/x86_64-linux-gnu/qemu")
	mode=""
	[ "$ver" = 7.2 ] && [ "${SNAPCTL_TEST_ACCEL:-tcg}" = tcg ] && mode=--pause
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	qemu-img create -q -f qcow2 "$dir/d1.qcow2" 32M
	if ! start_vm "$name" "$ver" "$dir" 2>"$dir/start.err" ||
		! vm_wait_ready "$name" 150 >"$dir/ready"; then
		not_ok "QEMU $ver: the VM starts" "$(tail -n 5 "$dir/start.err")"
		continue
	fi
	ok "QEMU $ver: a -drive VM with two disks starts"
	run=$(field run "$(tr -d '\r' <"$dir/ready")")
	vm_wait_serial "$name" '^CHURN DISKVERIFY ok seq=[1-9]' 60 >/dev/null
	S=(-d "$store")
	Q=(-s "$(vm_path "$name" qmp)" -d "$store")

	# shellcheck disable=SC2086
	expect_code 0 "QEMU $ver: checkpoint c1" "$SNAPCTL" "${Q[@]}" checkpoint $mode c1
	wait_disk_seq "$name" 20
	# shellcheck disable=SC2086
	expect_code 0 "QEMU $ver: checkpoint c2, 20 records later" "$SNAPCTL" "${Q[@]}" checkpoint $mode c2
	wait_disk_seq "$name" 10

	# ---- refused while the VM runs -----------------------------------------
	b=$(names "$dir")
	expect_code 4 "QEMU $ver: revert c1 while QEMU runs: exit 4" "$SNAPCTL" "${S[@]}" revert c1
	ck_one_line "QEMU $ver: ... one line" "$TESTDIR/stderr"
	expect_match "QEMU $ver: ... naming the disk and the process" \
		"^snapctl: disk 'drive0': '$dir/d0.qcow2' is open by process $(vm_pid "$name") \(.*\): stop the VM first$" "$TESTDIR/stderr"
	expect_code 4 "QEMU $ver: ... --dry-run too" "$SNAPCTL" "${S[@]}" revert --dry-run c1
	expect_eq "QEMU $ver: ... nothing changed" "$b" "$(names "$dir")"

	# ---- QEMU quits; bad input ----------------------------------------------
	cp "$(vm_path "$name" args)" "$dir/args.before"
	check "QEMU $ver: QEMU quits" ck_quit "$name"
	c1max=$(records "$ver" "$dir/d0.c1.qcow2" "$run")
	c2max=$(records "$ver" "$dir/d0.c2.qcow2" "$run")
	lastmax=$(records "$ver" "$dir/d0.qcow2" "$run")
	check "QEMU $ver: c1's records end before c2's ($c1max, $c2max, $lastmax)" \
		test "$(field max " $c1max")" -lt "$(field max " $c2max")"
	b=$(names "$dir")
	expect_code 1 "QEMU $ver: revert of an unknown checkpoint: exit 1" "$SNAPCTL" "${S[@]}" revert nope
	ck_one_line "QEMU $ver: ... one line" "$TESTDIR/stderr"
	mv "$dir/d1.c1.qcow2" "$dir/away"
	expect_code 4 "QEMU $ver: revert with a state file missing: exit 4" "$SNAPCTL" "${S[@]}" revert c1
	expect_match "QEMU $ver: ... naming it" "^snapctl: disk 'drive1': '$dir/d1.c1.qcow2' is missing$" "$TESTDIR/stderr"
	mv "$dir/away" "$dir/d1.c1.qcow2"
	ln "$dir/d1.c1.qcow2" "$dir/orig"
	cp -p "$dir/orig" "$dir/copy"
	mv "$dir/copy" "$dir/d1.c1.qcow2"
	expect_code 4 "QEMU $ver: revert with a state file replaced (same bytes, another inode): exit 4" "$SNAPCTL" "${S[@]}" revert c1
	expect_match "QEMU $ver: ... saying so" "^snapctl: disk 'drive1': '$dir/d1.c1.qcow2' is not the file the checkpoint made .*replaced$" "$TESTDIR/stderr"
	mv "$dir/orig" "$dir/d1.c1.qcow2"
	expect_eq "QEMU $ver: ... nothing changed" "$b" "$(names "$dir")"
	expect_code 0 "QEMU $ver: revert --dry-run c1" "$SNAPCTL" "${S[@]}" revert --dry-run c1
	expect_match "QEMU $ver: ... says what would change" \
		"^disk drive0: '$dir/d0.qcow2' would become a new overlay on '$dir/d0.c1.qcow2'; the disk it replaces would be kept as '$dir/d0.pre-revert-c1.qcow2'$" "$TESTDIR/stdout"
	expect_eq "QEMU $ver: ... and changes nothing" "$b" "$(names "$dir")"

	# ---- revert c1 ----------------------------------------------------------
	old=$(stat -c %i "$dir/d0.qcow2")
	expect_code 0 "QEMU $ver: revert c1" "$SNAPCTL" "${S[@]}" --json revert c1
	cp "$TESTDIR/stdout" "$dir/revert.json"
	expect_eq "QEMU $ver: --json names the pre-revert layer" "$dir/d0.pre-revert-c1.qcow2" "$(jq_get "$dir/revert.json" disks.0.kept)"
	for f in d0 d1; do
		expect_eq "QEMU $ver: $f.qcow2 is on $f.c1.qcow2" "$dir/$f.c1.qcow2" "$(backing_of "$ver" "$dir/$f.qcow2")"
		expect_eq "QEMU $ver: ... a new 0600 file" 600 "$(stat -c %a "$dir/$f.qcow2")"
		check "QEMU $ver: ... with c1's bytes" vm_qemu_img "$ver" compare -q "$dir/$f.qcow2" "$dir/$f.c1.qcow2"
		expect_eq "QEMU $ver: $f.pre-revert-c1.qcow2 is on $f.c2.qcow2" "$dir/$f.c2.qcow2" "$(backing_of "$ver" "$dir/$f.pre-revert-c1.qcow2")"
		expect_eq "QEMU $ver: ... 0600" 600 "$(stat -c %a "$dir/$f.pre-revert-c1.qcow2")"
	done
	expect_eq "QEMU $ver: d0.pre-revert-c1.qcow2 is the disk d0.qcow2 was" "$old" "$(stat -c %i "$dir/d0.pre-revert-c1.qcow2")"
	expect_eq "QEMU $ver: d0.qcow2's records end where c1's do" "$c1max" "$(records "$ver" "$dir/d0.qcow2" "$run")"
	expect_eq "QEMU $ver: the pre-revert layer has the later ones" "$lastmax" "$(records "$ver" "$dir/d0.pre-revert-c1.qcow2" "$run")"
	expect_eq "QEMU $ver: no hidden name left" "" "$(hidden "$dir")"
	for c in c1 c2; do
		check "QEMU $ver: verify $c after the revert" "$SNAPCTL" "${S[@]}" verify "$c"
	done
	expect_code 0 "QEMU $ver: revert c1 again: nothing to do" "$SNAPCTL" "${S[@]}" revert c1
	expect_match "QEMU $ver: ... says so" "^disk drive0: '$dir/d0.qcow2' already is a new overlay on" "$TESTDIR/stdout"
	check "QEMU $ver: ... no second pre-revert layer" test ! -e "$dir/d0.pre-revert-c1-2.qcow2"

	# ---- the unchanged command line boots on c1's disks ---------------------
	if start_vm "$name" "$ver" "$dir" 2>"$dir/start2.err" && vm_wait_ready "$name" 150 >"$dir/ready2"; then
		ok "QEMU $ver: the VM starts from its command line"
	else
		not_ok "QEMU $ver: the VM starts from its command line" "$(tail -n 5 "$dir/start2.err")"
		continue
	fi
	check "QEMU $ver: ... the same command line" cmp -s "$dir/args.before" "$(vm_path "$name" args)"
	expect_eq "QEMU $ver: ... on d0.qcow2" "$dir/d0.qcow2" "$(ck_active_file "$name" drive0)"
	check "QEMU $ver: ... and writes its disk" vm_wait_serial "$name" '^CHURN DISKVERIFY ok seq=[1-9]' 60
	expect_code 0 "QEMU $ver: checkpoint c3 of the reverted VM" "$SNAPCTL" "${Q[@]}" checkpoint --disk-only c3
	expect_eq "QEMU $ver: c3's parent is c1" c1 "$(jq_get "$store/c3/manifest.json" parent)"
	expect_eq "QEMU $ver: c3's state is the revert's overlay, on c1's" "$dir/d0.c1.qcow2" "$(backing_of "$ver" "$dir/d0.c3.qcow2")"
	check "QEMU $ver: QEMU quits" ck_quit "$name"

	# ---- --discard ----------------------------------------------------------
	expect_code 0 "QEMU $ver: revert --discard c2" "$SNAPCTL" "${S[@]}" --json revert --discard c2
	expect_eq "QEMU $ver: ... discards the disk snapctl made" "true" "$(jq_get "$TESTDIR/stdout" disks.0.discarded)"
	check "QEMU $ver: ... no pre-revert layer" test ! -e "$dir/d0.pre-revert-c2.qcow2"
	expect_eq "QEMU $ver: ... d0.qcow2 is on c2's state" "$dir/d0.c2.qcow2" "$(backing_of "$ver" "$dir/d0.qcow2")"
	expect_eq "QEMU $ver: ... no hidden name left" "" "$(hidden "$dir")"
	check "QEMU $ver: verify c3 after it" "$SNAPCTL" "${S[@]}" verify c3
	rm "$dir/d1.qcow2"
	vm_qemu_img "$ver" create -q -f qcow2 -b d1.c2.qcow2 -F qcow2 "$dir/d1.qcow2"
	expect_code 0 "QEMU $ver: revert --discard c1, d1.qcow2 made by qemu-img" "$SNAPCTL" "${S[@]}" revert --discard c1
	expect_match "QEMU $ver: ... keeps it, saying so" \
		"^disk drive1: '$dir/d1.qcow2' is now a new overlay on '$dir/d1.c1.qcow2'; the disk it replaced is kept as '$dir/d1.pre-revert-c1-2.qcow2' \(kept: snapctl did not make '$dir/d1.qcow2'\)$" "$TESTDIR/stdout"
	check "QEMU $ver: ... d0's went" test ! -e "$dir/d0.pre-revert-c1-2.qcow2"

	# ---- SIGKILL after each step --------------------------------------------
	for step in written linked renamed; do
		"$SNAPCTL" "${S[@]}" revert c2 >/dev/null 2>&1
		kill_at "$step" "QEMU $ver killed after '$step'"
	done

	# ---- revert --start -------------------------------------------------------
	expect_code 0 "QEMU $ver: revert c2 --start" "${RUN[@]}" "$SNAPCTL" -d "$store" revert c2 --start
	pid=$(sed -n 's/^pid //p' "$TESTDIR/stdout")
	rdir=$(sed -n 's/^dir //p' "$TESTDIR/stdout")
	sock=$(sed -n 's/^socket //p' "$TESTDIR/stdout")
	[ -n "$pid" ] && started+=("$pid")
	f=$rdir/serial0.log
	check "QEMU $ver: the guest verifies its whole memory" wait_file "$f" '^CHURN VERIFY ok' 120
	check "QEMU $ver: ... and its disk records" wait_file "$f" '^CHURN DISKVERIFY ok' 60
	# Resumed, the guest may verify before its first TICK (both were
	# due): wait for a whole TICK line, not just the verification.
	wait_file "$f" "$TICK_RE" 60
	tick=$(tr -d '\r' <"$f" | grep -aE "$TICK_RE" | head -n 1)
	expect_eq "QEMU $ver: ... the same churn run, not a reboot" "$run" "$(field run "$tick")"
	expect_eq "QEMU $ver: ... no FAIL line" "" "$(grep -a FAIL "$f" | head -n 3)"
	got=$("$SNAPCTL" -s "$sock" --json qmp query-block | jq_get - 0.inserted.image.filename)
	expect_eq "QEMU $ver: ... QEMU runs on d0.qcow2 itself" "$dir/d0.qcow2" "$got"
	b=$(names "$dir")
	expect_code 4 "QEMU $ver: revert while it runs: exit 4" "$SNAPCTL" "${S[@]}" revert c1
	expect_eq "QEMU $ver: ... nothing changed" "$b" "$(names "$dir")"
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	check "QEMU $ver: verify c1 at the end" "$SNAPCTL" "${S[@]}" verify c1
	check "QEMU $ver: verify c2 at the end" "$SNAPCTL" "${S[@]}" verify c2
done

vm_stop_all
done_testing
