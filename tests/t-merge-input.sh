#!/usr/bin/env bash
# t-merge-input: delete --disks and prune --disks (issue 11) on chains that
# changed behind snapctl's back, against real QEMU 7.2 and 10.0.  A churning
# guest with a disk that verifies its own records, checkpoints c1..c4, then
# the VM is shut down and, offline:
# - a missing layer (c1's state moved away): verify c1 says so (exit 4), a
#   delete of c2 keeps c2's state with the reason said once, and once the
#   layer is back the next prune --disks merges it;
# - a chain edited by hand (the VM's disk rebased onto a copy of c4's state):
#   delete of c4 removes c4's state, which nothing backs onto any more; a
#   delete of c3 keeps c3's state, which the copy backs onto, and says why
#   once;
# after each step every file of the VM's chain exists and the chain opens;
# at the end the VM restarts from its unchanged command line and its disk
# records verify, and the kept checkpoint c1 still verifies.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=32 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=50 churn.tick=200"

depth() { qemu-img info --backing-chain --output=json -U "$1" | grep -c '"virtual-size"'; }
# chain_ok DESC: the VM's disk opens with its whole backing chain.
chain_ok() { check "$1: ... the VM's chain opens, every layer there" qemu-img info --backing-chain -U "$dir/d0.qcow2"; }
ck() { "$SNAPCTL" -q -s "$sock" -d "$store" checkpoint $mode "$1"; sleep 1.1; }

for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	v=${ver//./}
	P="QEMU $ver"
	dir=$TESTDIR/i$v
	store=$dir/store
	mkdir -p "$dir"
	mode=""
	[ "$ver" = 7.2 ] && mode=--pause
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	name=i$v
	if ! vm_start "$name" --qemu "$ver" --disk "$dir/d0.qcow2" --append "$CHURN" 2>"$dir/vm.err" ||
		! vm_wait_ready "$name" 150 >/dev/null; then
		not_ok "$P: guest starts" "$(tail -n 5 "$dir/vm.err")"
		continue
	fi
	vm_wait_serial "$name" '^CHURN DISKVERIFY ok' 60 >/dev/null
	sock=$(vm_path "$name" qmp)
	fail=0
	for c in c1 c2 c3 c4; do ck $c || fail=1; done
	expect_eq "$P: checkpoints c1..c4" 0 "$fail"
	vm_stop "$name"
	expect_eq "$P: the chain is 5 deep" 5 "$(depth "$dir/d0.qcow2")"

	# ---- a missing layer ----------------------------------------------------
	mv "$dir/d0.c1.qcow2" "$dir/aside.qcow2"
	expect_code 4 "$P: c1's state moved away: verify c1 exits 4" "$SNAPCTL" -d "$store" verify c1
	expect_match "$P: ... naming it" "d0\.c1\.qcow2" "$TESTDIR/stderr"
	expect_code 0 "$P: delete --disks c2" "$SNAPCTL" -d "$store" delete --disks c2
	cp "$TESTDIR/stdout" "$dir/del2.out"
	expect_eq "$P: ... keeps c2's state, said once" 1 \
		"$(grep -c "^kept '$dir/d0.c2.qcow2': .*d0\.c1\.qcow2.* cannot be read" "$dir/del2.out")"
	check "$P: ... d0.c2.qcow2 is there" test -f "$dir/d0.c2.qcow2"
	check "$P: ... c2 is gone from the store" test ! -e "$store/c2"
	mv "$dir/aside.qcow2" "$dir/d0.c1.qcow2"
	chain_ok "$P: layer back"
	expect_code 0 "$P: the next prune --disks merges it" "$SNAPCTL" -d "$store" prune --keep 3 --disks
	expect_match "$P: ... saying so" "^merged '$dir/d0.c2.qcow2' " "$TESTDIR/stdout"
	check "$P: ... d0.c2.qcow2 is removed" test ! -e "$dir/d0.c2.qcow2"
	expect_eq "$P: ... the chain is 4 deep" 4 "$(depth "$dir/d0.qcow2")"
	chain_ok "$P: merged"
	bad=''
	for c in c1 c3 c4; do "$SNAPCTL" -d "$store" verify $c >/dev/null 2>&1 || bad+="$c "; done
	expect_eq "$P: ... c1, c3 and c4 verify" "" "$bad"

	# ---- a chain edited by hand ---------------------------------------------
	cp "$dir/d0.c4.qcow2" "$dir/mine.qcow2"
	(cd "$dir" && qemu-img rebase -q -u -F qcow2 -b mine.qcow2 d0.qcow2)
	expect_code 0 "$P: the VM's disk rebased onto a copy: delete --disks c4" "$SNAPCTL" -d "$store" delete --disks c4
	check "$P: ... removes c4's state, which nothing backs onto" test ! -e "$dir/d0.c4.qcow2"
	check "$P: ... keeps the copy" test -f "$dir/mine.qcow2"
	chain_ok "$P: c4 deleted"
	expect_code 0 "$P: delete --disks c3" "$SNAPCTL" -d "$store" delete --disks c3
	cp "$TESTDIR/stdout" "$dir/del3.out"
	expect_eq "$P: ... keeps c3's state: the copy backs onto it, said once" 1 \
		"$(grep -c "^kept '$dir/d0.c3.qcow2': .*the backing file of '$dir/mine.qcow2'" "$dir/del3.out")"
	expect_eq "$P: ... one line for it" 1 "$(grep -c "d0\.c3\.qcow2" "$dir/del3.out")"
	check "$P: ... d0.c3.qcow2 is there" test -f "$dir/d0.c3.qcow2"
	chain_ok "$P: c3 deleted"
	expect_eq "$P: ... the chain is as the user made it" 4 "$(depth "$dir/d0.qcow2")"
	expect_code 0 "$P: ... c1 verifies" "$SNAPCTL" -d "$store" verify c1

	# ---- the VM restarts from its unchanged command line -------------------
	if ! vm_start "$name" --qemu "$ver" --disk "$dir/d0.qcow2" --append "$CHURN" 2>"$dir/vm.err"; then
		not_ok "$P: the VM restarts on d0.qcow2" "$(tail -n 5 "$dir/vm.err")"
		continue
	fi
	ok "$P: the VM restarts on d0.qcow2"
	check "$P: ... its disk records verify" vm_wait_serial "$name" '^CHURN DISKVERIFY ok' 150
	vm_stop "$name"
done

vm_stop_all
done_testing
