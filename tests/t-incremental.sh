#!/usr/bin/env bash
# t-incremental: issue 13's upgrade path on real QEMU 7.2 and 10.0: a store
# an older snapctl left (images of version 1, or of version 2 with SHA-256
# chunk hashes) keeps working, and a checkpoint that builds on a parent can
# be killed at any time.  A churning guest; its first checkpoint's image is
# rewritten as version 1 (build/helper-imgv1).  Then:
#   - the v1 checkpoint shows its format, verifies, lists, and is the parent
#     of the next checkpoint, which shares nothing with it (no hashes);
#   - in a second store, a checkpoint rewritten with SHA-256 hashes
#     (build/helper-imgv2tool sha256) verifies and is the parent of one that
#     shares nothing with it (BLAKE3 hashes), whose child shares again;
#     deleting the SHA-256 one keeps both verifiable;
#   - the one after that (a version 2 parent) shares frames;
#   - a checkpoint killed (SIGKILL) in its live phase leaves the store as it
#     was: no new checkpoint, the survivors' files byte for byte the same,
#     each verifies; the guest runs;
#   - deleting the parent whose frames the child uses keeps the child
#     verifiable and restorable (the guest verifies its memory), its frames
#     in STORE/.packs; deleting the child frees them; the v1 checkpoint
#     still verifies at the end.
# t-packs covers shuffled deletes, kills during deletes and damaged frames.
# Under ASan: QEMU 10.0 only.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

IMGV1=$TOP/build/helper-imgv1
IMGV2=$TOP/build/helper-imgv2tool
[ -x "$IMGV1" ] && [ -x "$IMGV2" ] || { not_ok "build/helper-imgv1 and imgv2tool exist (make helpers)"; done_testing; }
VERS_DEFAULT="7.2 10.0"
[ "${SNAPCTL_VARIANT:-plain}" = asan ] && VERS_DEFAULT=10.0
RT=$TESTDIR/rt
mkdir -m 700 "$RT"
export XDG_RUNTIME_DIR=$RT


# info_field STORE NAME FIELD: a field of `info --json` of NAME's image.
info_field() { "$SNAPCTL" --json info "$1/$2/memory.img" 2>/dev/null | jq_get - "$3" 2>/dev/null; }
# sums STORE: "name sha256" of every file of the store but the lock, sorted.
sums() { (cd "$1" && find . -type f ! -name '.lock*' -exec sha256sum {} + | sort -k 2); }

for ver in ${VERS:-$VERS_DEFAULT}; do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	v=${ver//./}
	P="QEMU $ver"
	dir=$TESTDIR/i$v
	store=$dir/store
	mkdir -p "$dir"
	RUN=(env)
	[ "$ver" = 10.0 ] && RUN=(env "QEMU_MODULE_DIR=$VM_QEMU10_DIR/usr/lib/x86_64-linux-gnu/qemu")
	mode=""
	[ "$ver" = 7.2 ] && mode=--pause
	name=i$v
		if ! vm_start "$name" --qemu "$ver" \
		--append "churn.mb=32 churn.hot=1 churn.rate=20 churn.cold=0 churn.verify=1000 churn.tick=500" 2>"$dir/vm.err" ||
		! vm_wait_ready "$name" 150 >/dev/null; then
		not_ok "$P: guest starts" "$(tail -n 5 "$dir/vm.err")"
		continue
	fi
	ok "$P: guest starts"
	sock=$(vm_path "$name" qmp)
	ck() { "$SNAPCTL" -s "$sock" -d "$store" "$@"; }

	# ---- a store from before the upgrade: c1 in version 1 ---------------
	# shellcheck disable=SC2086
	check "$P: checkpoint c1" ck -q checkpoint $mode c1
	img=$store/c1/memory.img
	expect_eq "$P: c1 is written as version 2" 2 "$(info_field "$store" c1 format_version)"
	if "$IMGV1" "$img" "$dir/v1.img" 2>"$dir/v1.err" && mv "$dir/v1.img" "$img"; then
		ok "$P: c1's image rewritten as version 1"
	else
		not_ok "$P: c1's image rewritten as version 1" "$(cat "$dir/v1.err")"
	fi
	expect_eq "$P: c1 now reads as version 1" 1 "$(info_field "$store" c1 format_version)"
	expect_code 0 "$P: verify c1 (version 1)" "$SNAPCTL" -d "$store" verify c1
	expect_code 0 "$P: list --json shows c1" "$SNAPCTL" -d "$store" --json list
	expect_eq "$P: ... all its frames its own" "$(info_field "$store" c1 data_bytes) 0" \
		"$(jq_get "$TESTDIR/stdout" 0.own_bytes) $(jq_get "$TESTDIR/stdout" 0.shared_bytes)"

	# ---- a store from before BLAKE3: s1 with SHA-256 chunk hashes -------
	store2=$dir/store2
	ck2() { "$SNAPCTL" -s "$sock" -d "$store2" "$@"; }
	# shellcheck disable=SC2086
	check "$P: checkpoint s1 (a second store)" ck2 -q checkpoint $mode s1
	expect_eq "$P: s1's chunk hashes are BLAKE3" blake3 "$(info_field "$store2" s1 chunk_hash)"
	if "$IMGV2" sha256 "$store2/s1/memory.img" "$dir/sha.img" 2>"$dir/sha.err" &&
		mv "$dir/sha.img" "$store2/s1/memory.img"; then
		ok "$P: s1's image rewritten with SHA-256 hashes"
	else
		not_ok "$P: s1's image rewritten with SHA-256 hashes" "$(cat "$dir/sha.err")"
	fi
	expect_eq "$P: s1 now has SHA-256 chunk hashes" sha256 "$(info_field "$store2" s1 chunk_hash)"
	expect_code 0 "$P: verify s1 (SHA-256)" "$SNAPCTL" -d "$store2" verify s1
	sleep 2
	# shellcheck disable=SC2086
	check "$P: checkpoint s2 (its parent s1 has SHA-256 hashes)" ck2 -q checkpoint $mode s2
	expect_eq "$P: s2 shares nothing with s1, its hashes are BLAKE3" "0 blake3" \
		"$(info_field "$store2" s2 shared_bytes) $(info_field "$store2" s2 chunk_hash)"
	expect_code 0 "$P: verify s2" "$SNAPCTL" -d "$store2" verify s2
	sleep 2
	# shellcheck disable=SC2086
	check "$P: checkpoint s3 (parent s2)" ck2 -q checkpoint $mode s3
	check "$P: s3 shares frames with s2" test "$(info_field "$store2" s3 shared_bytes)" -gt 0
	expect_code 0 "$P: delete s1 (SHA-256)" "$SNAPCTL" -d "$store2" delete s1
	for c in s2 s3; do
		expect_code 0 "$P: verify $c after s1 is gone" "$SNAPCTL" -d "$store2" verify "$c"
	done

	sleep 2
	# shellcheck disable=SC2086
	check "$P: checkpoint c2 (its parent c1 is version 1)" ck -q checkpoint $mode c2
	expect_eq "$P: c2 shares nothing with a version 1 parent" 0 "$(info_field "$store" c2 shared_bytes)"
	expect_code 0 "$P: verify c2" "$SNAPCTL" -d "$store" verify c2

	sleep 2
	# shellcheck disable=SC2086
	check "$P: checkpoint c3 (parent c2)" ck -q checkpoint $mode c3
	check "$P: c3 shares frames with c2" test "$(info_field "$store" c3 shared_bytes)" -gt 0
	expect_eq "$P: ... its one pack is c2" c2 "$(info_field "$store" c3 packs.0.hint)"
	expect_code 0 "$P: verify c3 (its shared frames read from c2)" "$SNAPCTL" -d "$store" verify c3

	# ---- SIGKILL in the live phase of a checkpoint with a parent --------
	# Live on both QEMUs: this one is never restored.
	before=$(sums "$store")
	"$SNAPCTL" -s "$sock" -d "$store" -q checkpoint --bandwidth 1M c4 >"$dir/k.out" 2>&1 &
	kp=$!
	if ck_wait_mig "$name" '^active$' 60 2>"$dir/k.err"; then
		sleep 1
		kill -KILL "$kp"
		wait "$kp" 2>/dev/null
		ok "$P: checkpoint c4 killed in its live phase"
	else
		kill -KILL "$kp" 2>/dev/null
		wait "$kp" 2>/dev/null
		not_ok "$P: checkpoint c4 killed in its live phase" "$(cat "$dir/k.err" "$dir/k.out")"
	fi
	expect_code 0 "$P: recover after the kill" "$SNAPCTL" -d "$store" recover
	expect_eq "$P: the guest runs" running "$(ck_status "$name")"
	expect_eq "$P: no c4, nothing left of it" "c1 c2 c3" "$(ls -A "$store" | grep -Ev '^\.(lock|last-[0-9]+\.json)$' | sort | tr '\n' ' ' | sed 's/ $//')"
	expect_eq "$P: the survivors' files are unchanged" "$before" "$(sums "$store")"
	for c in c1 c2 c3; do
		expect_code 0 "$P: verify $c after the kill" "$SNAPCTL" -d "$store" verify "$c"
	done

	# ---- delete the parent whose frames the child uses -------------------
	sleep 1
	# shellcheck disable=SC2086
	check "$P: checkpoint c4 (parent c3)" ck -q checkpoint $mode c4
	check "$P: c4 shares frames" test "$(info_field "$store" c4 shared_bytes)" -gt 0
	# The images c4 reads frames from: c3, and c2 through c3 (one hop).
	named=$(info_field "$store" c4 packs.0.hint; info_field "$store" c4 packs.1.hint)
	echo "# $P: c4 reads frames from: $(echo $named)"
	check "$P: ... c4 names c2 (the frames c3 shared with it)" grep -qx c2 <<<"$named"
	expect_code 0 "$P: delete c3" "$SNAPCTL" -d "$store" delete c3
	expect_code 0 "$P: verify c4 after its parent is gone" "$SNAPCTL" -d "$store" verify c4
	expect_code 0 "$P: delete c2" "$SNAPCTL" -d "$store" delete c2
	expect_code 0 "$P: verify c4 after c2 is gone too" "$SNAPCTL" -d "$store" verify c4
	npacks=$(find "$store/.packs" -type f 2>/dev/null | wc -l)
	expect_eq "$P: STORE/.packs keeps exactly the images c4 names" "$(grep -c . <<<"$named")" "$npacks"

	# ---- restore c4: the guest verifies its whole memory ----------------
	vm_kill "$name" KILL
	expect_code 0 "$P: restore c4 --start" "${RUN[@]}" "$SNAPCTL" -d "$store" restore c4 --start
	pid=$(sed -n 's/^pid //p' "$TESTDIR/stdout")
	rdir=$(sed -n 's/^dir //p' "$TESTDIR/stdout")
	[ -n "$pid" ] && started+=("$pid")
	f=$rdir/serial0.log
	check "$P: the restored guest verifies its whole memory" wait_file "$f" '^CHURN VERIFY ok' 120
	if grep -aqE 'FAIL|^CHURN READY' "$f"; then
		not_ok "$P: no FAIL and no READY line" "$(grep -aE 'FAIL|READY' "$f" | head -n 3)"
	else
		ok "$P: no FAIL and no READY line"
	fi
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$rdir"

	# ---- deleting the last user frees the packs --------------------------
	expect_code 0 "$P: delete c4" "$SNAPCTL" -d "$store" delete c4
	expect_eq "$P: no pack is left" "" "$(find "$store/.packs" -type f 2>/dev/null)"
	expect_code 0 "$P: verify c1 (version 1) at the end" "$SNAPCTL" -d "$store" verify c1
done

vm_stop_all
done_testing
