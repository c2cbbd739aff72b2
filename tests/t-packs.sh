#!/usr/bin/env bash
# t-packs: incremental memory in the store (issue 13) against real QEMU 7.2
# and 10.0.  A churning guest is checkpointed five times (c1..c5): each
# image after the first names its parent's as its base and shares the
# frames of the chunks that did not change (shared_bytes > 0, list and
# info say so).  A frame of c1 that others share is damaged: verify of
# every checkpoint that needs it fails naming it, the others pass.  Then
# the checkpoints are deleted in a shuffled order, three of the deletes
# killed (SIGKILL) at the hooks SNAPCTL_TEST_HOLD_PACKS (gc, linked,
# removed) and run again: after each step every survivor verifies (so no
# pack it names is missing), and after each delete one survivor is
# restored into a fresh QEMU (once lazily, its pages served from the packs)
# whose guest verifies its memory and its disk.
# At the end STORE/.packs holds exactly the images the survivor names,
# their unnamed frames punched (not while a process holds one open;
# nothing at all while a remaining image cannot be read); export
# --standalone takes the survivor out as one self-contained image with the
# same stream.  An idle guest's second checkpoint shares at least 90% of
# its frames' bytes.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=32 churn.verify=1000 churn.disk=/dev/vda churn.rate=0"
IDLE="churn.mb=8 churn.hot=1 churn.rate=1 churn.cold=0 churn.verify=0"
IMGTOOL=$TOP/build/helper-imgtool
[ -x "$IMGTOOL" ] || { not_ok "build/helper-imgtool exists (run make helpers)"; done_testing; }

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
mjq() { jq_get "$store/$1/manifest.json" "$2"; }

# survivors_verify DESC: verify of every checkpoint left passes.
survivors_verify() {
	local n bad=""
	for n in $(ls "$store" | grep -E '^c[0-9]$'); do
		"$SNAPCTL" -d "$store" verify "$n" >/dev/null 2>"$dir/verify.err" ||
			bad+="$n: $(cat "$dir/verify.err") "
	done
	expect_eq "$1: every survivor verifies ($(ls "$store" | grep -E '^c[0-9]$' | tr '\n' ' '))" "" "$bad"
}

# restore_check NAME DESC [ARGS...]: restore NAME (with ARGS) into a fresh
# QEMU on its disk state; the guest carries on and verifies its memory and
# its disk.
restore_check() {
	local n=$1 d=$2 vm=r$v$1$RANDOM
	shift 2
	if ! vm_start "$vm" --qemu "$ver" --machine "$(mjq "$n" vm.machine)" \
		--disk "$(mjq "$n" disks.0.file)" --append "$CHURN" --incoming 2>"$dir/$vm.err" ||
		! "$SNAPCTL" -s "$(vm_path "$vm" qmp)" -d "$store" restore "$@" "$n" >/dev/null 2>>"$dir/$vm.err"; then
		not_ok "$d: restore $* $n" "$(tail -n 5 "$dir/$vm.err")"
		vm_kill "$vm" KILL
		return
	fi
	ok "$d: restore $* $n"
	expect_eq "$d: ... the same churn run" "$run" "$(field run "$(vm_wait_serial "$vm" '^CHURN TICK' 60)")"
	check "$d: ... the guest verifies its memory" vm_wait_serial "$vm" '^CHURN VERIFY ok' 60
	check "$d: ... and its disk" vm_wait_serial "$vm" '^CHURN DISKVERIFY ok' 60
	if grep -aq FAIL "$(vm_path "$vm" serial)"; then
		not_ok "$d: ... no FAIL line" "$(grep -a FAIL "$(vm_path "$vm" serial)" | head -n 3)"
	else
		ok "$d: ... no FAIL line"
	fi
	vm_kill "$vm" KILL
}

# killed_delete STEP NAME: delete NAME held at STEP, killed there.
killed_delete() {
	local step=$1 n=$2 p i
	SNAPCTL_TEST_HOLD_PACKS=$step:60000 "$SNAPCTL" -d "$store" delete "$n" \
		>"$dir/del.out" 2>"$dir/del.err" &
	p=$!
	for ((i = 0; i < 300; i++)); do
		case $step in
		linked) [ -n "$(find "$store/.packs" -cnewer "$dir/mark" -name '*.img' 2>/dev/null)" ] && break ;;
		removed | gc) [ ! -e "$store/$n" ] && break ;;
		esac
		sleep 0.1
	done
	sleep 0.5
	kill -KILL "$p"
	wait "$p" 2>/dev/null
	check "$P: delete $n was held at $step" test "$i" -lt 300
}

# ids_named NAME: the pack ids NAME's image names, sorted.
ids_named() { "$IMGTOOL" refs "$store/$1/memory.img" | awk '{ print $3 }' | sort -u; }

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
	# QEMU 7.2 under TCG loses pages it redirties across live passes
	# (see t-restore): capture it paused.
	mode=""
	[ "$ver" = 7.2 ] && mode=--pause
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	qemu-img create -q -f qcow2 "$dir/i0.qcow2" 16M
	if ! vm_start "src$v" --qemu "$ver" --disk "$dir/d0.qcow2" --append "$CHURN" 2>"$dir/src.err" ||
		! vm_start "idle$v" --qemu "$ver" --disk "$dir/i0.qcow2" --append "$IDLE" 2>"$dir/idle.err" ||
		! vm_wait_ready "src$v" 150 >"$dir/ready" || ! vm_wait_ready "idle$v" 150 >/dev/null; then
		not_ok "$P: guests start" "$(tail -n 5 "$dir/src.err" "$dir/idle.err")"
		continue
	fi
	run=$(field run "$(tr -d '\r' <"$dir/ready")")
	vm_wait_serial "src$v" '^CHURN DISKVERIFY ok' 60 >/dev/null

	# ---- five checkpoints, each on its parent's image ------------------
	fails=""
	for i in 1 2 3 4 5; do
		"$SNAPCTL" -s "$(vm_path "src$v" qmp)" -d "$store" checkpoint $mode --progress "c$i" \
			>/dev/null 2>"$dir/c$i.err" || fails+="c$i: $(tail -n 2 "$dir/c$i.err") "
		sleep 1
	done
	expect_eq "$P: checkpoints c1..c5" "" "$fails"
	vm_kill "src$v" KILL
	expect_match "$P: c1 is a full image, saying why" "^snapctl: full image: no parent checkpoint$" "$dir/c1.err"
	expect_match "$P: c2 is incremental on c1, saying so" "^snapctl: incremental on parent 'c1'$" "$dir/c2.err"
	expect_eq "$P: c1: no base, nothing shared" "null 0" "$(mjq c1 memory.base) $(mjq c1 memory.shared_bytes)"
	for i in 2 3 4 5; do
		sh=$(mjq "c$i" memory.shared_bytes)
		check "$P: c$i's base is c$((i - 1)), it shares $sh bytes (> 0)" \
			test "$(mjq "c$i" memory.base)" = "c$((i - 1))" -a "${sh:-0}" -gt 0
	done
	expect_code 0 "$P: list" "$SNAPCTL" -d "$store" list
	expect_match "$P: list: c5's line with its OWN and SHARED bytes" \
		'^c5 +[^ ]+ +c4 +[0-9.]+(KiB|MiB) +[0-9.]+(B|KiB|MiB) +[0-9.]+(KiB|MiB) +vd0$' "$TESTDIR/stdout"
	expect_code 0 "$P: list --json" "$SNAPCTL" -d "$store" --json list
	expect_eq "$P: list --json: c5's own_bytes and shared_bytes, as its manifest" \
		"$(mjq c5 memory.own_bytes) $(mjq c5 memory.shared_bytes)" \
		"$(jq_get "$TESTDIR/stdout" 4.own_bytes) $(jq_get "$TESTDIR/stdout" 4.shared_bytes)"
	expect_code 0 "$P: info c5" "$SNAPCTL" -d "$store" info c5
	expect_match "$P: info: own and shared bytes" "^sharing: +[0-9.]+ (B|KiB|MiB) of frames its own, [0-9.]+ (KiB|MiB) shared \([0-9]+ chunks\) from:$" "$TESTDIR/stdout"
	expect_match "$P: info: the images it reads from, c4 among them" "^  pack c4 \(image [0-9a-f]{32}\): [0-9]+ chunks" "$TESTDIR/stdout"
	survivors_verify "$P: before any delete"

	# ---- a damaged frame of c1 that others share ------------------------
	read -r ci _ id1 off size < <("$IMGTOOL" refs "$store/c2/memory.img" | awk '$2 == "c1"' | head -n 1)
	if [ -z "$off" ]; then
		not_ok "$P: c2 shares a frame of c1"
	else
		ok "$P: c2 shares a frame of c1 (chunk $ci at $off, $size bytes)"
		at=$((off + size / 2))
		orig=$(od -An -tx1 -j "$at" -N1 "$store/c1/memory.img" | tr -d ' ')
		printf "\\x$(printf %02x $((0x$orig ^ 0xff)))" | dd of="$store/c1/memory.img" bs=1 seek="$at" conv=notrunc status=none
		for i in 1 2 3 4 5; do
			if [ "$i" = 1 ] || "$IMGTOOL" refs "$store/c$i/memory.img" | awk -v id="$id1" -v o="$off" '$3 == id && $4 == o { f = 1 } END { exit !f }'; then
				expect_code 1 "$P: c$i needs the damaged frame: verify fails" "$SNAPCTL" -d "$store" verify "c$i"
				if [ "$i" = 1 ]; then
					expect_match "$P: ... naming c1" "^snapctl: c1: " "$TESTDIR/stderr"
				else
					expect_match "$P: ... naming c1's image and the frame" "^snapctl: c$i: .*chunk $ci .*'c1' \\(image $id1\\): frame CRC-32C mismatch" "$TESTDIR/stderr"
				fi
			else
				expect_code 0 "$P: c$i does not need it: verify passes" "$SNAPCTL" -d "$store" verify "c$i"
			fi
		done
		printf "\\x$orig" | dd of="$store/c1/memory.img" bs=1 seek="$at" conv=notrunc status=none
		survivors_verify "$P: the frame repaired"
	fi

	# ---- deletes in a shuffled order, three of them killed --------------
	# c3: killed at gc (references known, nothing freed yet)
	killed_delete gc c3
	survivors_verify "$P: delete c3 killed at gc"
	expect_code 0 "$P: delete c1 (runs the GC c3's left undone)" "$SNAPCTL" -d "$store" --json delete c1
	check "$P: ... its report has the pack GC's" test "$(jq_get "$TESTDIR/stdout" packs.packs)" -ge 1
	survivors_verify "$P: c3, c1 deleted"
	restore_check c2 "$P: c3, c1 deleted"
	# c5: killed after its link to .packs, before its removal
	touch "$dir/mark"
	sleep 1
	killed_delete linked c5
	check "$P: ... c5 is still a checkpoint" test -e "$store/c5/manifest.json"
	survivors_verify "$P: delete c5 killed at linked"
	expect_code 0 "$P: delete c5 again" "$SNAPCTL" -d "$store" delete c5
	survivors_verify "$P: c5 deleted"
	restore_check c4 "$P: c5 deleted"
	# c2: killed after its removal, before the GC
	killed_delete removed c2
	check "$P: ... c2 is gone" test ! -e "$store/c2"
	survivors_verify "$P: delete c2 killed at removed"
	restore_check c4 "$P: c2 deleted" --lazy
	# The GC of the next delete: nothing left that c4 does not name.
	sleep 1
	# A pack some process holds open (a restore of a deleted checkpoint
	# may read any of its frames) is kept whole; once closed, punched.
	hp=$(ls "$store"/.packs/*.img | head -n 1)
	hb=$(stat -c %b "$hp")
	exec 7<"$hp"
	expect_code 0 "$P: prune --keep 1 (deletes nothing) runs the GC" "$SNAPCTL" -d "$store" --json prune --keep 1
	expect_eq "$P: ... keeps whole the pack this shell holds open" "1 $hb" "$(jq_get "$TESTDIR/stdout" packs.held) $(stat -c %b "$hp")"
	exec 7<&-
	expect_code 0 "$P: prune --keep 1 again, the pack closed" "$SNAPCTL" -d "$store" --json prune --keep 1
	expect_eq "$P: ... holds none" 0 "$(jq_get "$TESTDIR/stdout" packs.held)"
	# A remaining image that cannot be read may name anything: nothing goes.
	zp=$store/.packs/00000000000000000000000000000001.img
	: >"$zp"
	orig=$(od -An -tx1 -j 20 -N1 "$store/c4/memory.img" | tr -d ' ')
	printf "\\x$(printf %02x $((0x$orig ^ 0xff)))" | dd of="$store/c4/memory.img" bs=1 seek=20 conv=notrunc status=none
	expect_code 0 "$P: prune --keep 1 with c4's image damaged" "$SNAPCTL" -d "$store" prune --keep 1
	expect_match "$P: ... warns that nothing was freed, naming c4's image" "^snapctl: warning: no pack freed: .*c4/memory.img" "$TESTDIR/stderr"
	check "$P: ... and keeps a pack no one names" test -e "$zp"
	printf "\\x$orig" | dd of="$store/c4/memory.img" bs=1 seek=20 conv=notrunc status=none
	expect_code 0 "$P: prune --keep 1, c4 repaired" "$SNAPCTL" -d "$store" prune --keep 1
	expect_match "$P: ... removes the pack no one names" "^removed pack '$zp'$" "$TESTDIR/stdout"
	want=$(ids_named c4 | tr '\n' ' ')
	have=$(cd "$store/.packs" && ls | sed 's/\.img$//' | sort | tr '\n' ' ')
	expect_eq "$P: .packs holds exactly the images c4 names" "$want" "$have"
	alloc=0 size=0
	for f in "$store"/.packs/*.img; do
		alloc=$((alloc + $(stat -c '%b * %B' "$f")))
		size=$((size + $(stat -c %s "$f")))
	done
	check "$P: ... their unnamed frames punched ($alloc of $size bytes allocated)" test "$alloc" -lt "$size"
	expect_eq "$P: .packs is 0700" 700 "$(stat -c %a "$store/.packs")"
	survivors_verify "$P: only c4 left"

	# ---- export --standalone: c4 taken out of the store -----------------
	expect_code 2 "$P: export --standalone to standard output is refused" \
		"$SNAPCTL" export --standalone "$store/c4/memory.img" -
	mkdir -p "$dir/out"
	expect_code 0 "$P: export --standalone c4" "$SNAPCTL" --json export --standalone "$store/c4/memory.img" "$dir/out/c4.img"
	expect_eq "$P: ... its report" "true $(stat -c %s "$dir/out/c4.img")" \
		"$(jq_get "$TESTDIR/stdout" standalone) $(jq_get "$TESTDIR/stdout" file_bytes)"
	expect_eq "$P: ... names no other image" "" "$("$IMGTOOL" refs "$dir/out/c4.img")"
	expect_code 0 "$P: ... and verifies on its own" "$SNAPCTL" verify "$dir/out/c4.img"
	expect_eq "$P: ... the same stream as c4's image" \
		"$("$SNAPCTL" export "$store/c4/memory.img" - | sha256sum)" "$("$SNAPCTL" export "$dir/out/c4.img" - | sha256sum)"

	# ---- an idle guest shares almost everything -------------------------
	istore=$dir/istore
	if "$SNAPCTL" -s "$(vm_path "idle$v" qmp)" -d "$istore" checkpoint $mode i1 >/dev/null 2>"$dir/i.err" &&
		sleep 2 &&
		"$SNAPCTL" -s "$(vm_path "idle$v" qmp)" -d "$istore" checkpoint $mode i2 >/dev/null 2>>"$dir/i.err"; then
		own=$(jq_get "$istore/i2/manifest.json" memory.own_bytes)
		sh=$(jq_get "$istore/i2/manifest.json" memory.shared_bytes)
		check "$P: an idle guest's i2 shares $sh of $((own + sh)) frame bytes (>= 90%)" \
			test $((sh * 10)) -ge $((9 * (own + sh)))
		expect_code 0 "$P: ... and verifies" "$SNAPCTL" -d "$istore" verify i2
	else
		not_ok "$P: checkpoints i1, i2 of an idle guest" "$(cat "$dir/i.err")"
	fi
	vm_kill "idle$v" KILL
done

vm_stop_all
done_testing
