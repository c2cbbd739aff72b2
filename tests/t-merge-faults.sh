#!/usr/bin/env bash
# t-merge-faults: the merges of delete and prune --disks (issue 11) under
# faults, against real QEMU 7.2 and 10.0.  A churning guest, checkpoints
# c1..c4; then, each time with the newest 3 kept and every kept checkpoint
# verified: SIGKILL of snapctl while a live merge is done in QEMU but not
# yet in the manifests (SNAPCTL_TEST_MERGE_HOLD_MS), finished by recover -s;
# SIGKILL of snapctl while the job runs (SNAPCTL_TEST_MERGE_SPEED), which
# recover -s waits for;
# SIGINT during a live job held slow (SNAPCTL_TEST_MERGE_SPEED): cancelled,
# exit 8, chain valid, the next prune finishes; SIGKILL of QEMU during a
# live job, finished by an offline prune; SIGKILL of snapctl during an
# offline merge, finished by recover without -s; a layer a restored VM's
# overlay backs onto, and one another process holds open, are kept with
# the reason said once.  At the end a kept checkpoint whose manifest the
# merges rewrote restores: the guest verifies its memory and disk.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=32 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=50 churn.tick=200"
RT=$TESTDIR/rt
mkdir -m 700 "$RT"
export XDG_RUNTIME_DIR=$RT


depth() { qemu-img info --backing-chain --output=json -U "$1" | grep -c '"virtual-size"'; }
# hdr_ok DESC: no backing name in the VM path's chain is the VM's path or a
# temporary ".snapctl-" name (QEMU writes its node names without explicit
# backing names, and after a disk swap those are wrong), and no temporary
# name is left but the one the last swap keeps while its QEMU runs.
hdr_ok() {
	local bad
	bad=$(qemu-img info --backing-chain --output=json -U "$dir/d0.qcow2" |
		sed -n 's/^ *"backing-filename": "\(.*\)",$/\1/p' | grep -E '(^|/)d0\.qcow2$|\.snapctl-')
	expect_eq "$1: no header names d0.qcow2 or a temporary name" "" "$bad"
	check "$1: ... at most one temporary name beside the disk" test "$(ls -A "$dir" | grep -c 'snapctl-')" -le 1
}
# verify_all DESC: every checkpoint of the store verifies.
verify_all() {
	local c bad=''
	for c in $(cd "$store" && ls -1); do
		"$SNAPCTL" -d "$store" verify "$c" >/dev/null 2>"$dir/v.err" || bad+="$c: $(cat "$dir/v.err") "
	done
	expect_eq "$1" "" "$bad"
}
# job_seen VM: QEMU runs our merge job.
job_seen() { vm_qmp_raw "$1" '{"execute":"query-block-jobs"}' | grep -q snapctl-merge; }
wait_job() {
	local i
	for i in $(seq 1 100); do job_seen "$1" && return 0; sleep 0.1; done
	return 1
}
ck() { "$SNAPCTL" -q -s "$sock" -d "$store" checkpoint $mode "$1"; sleep 1.1; }

for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	v=${ver//./}
	P="QEMU $ver"
	dir=$TESTDIR/m$v
	store=$dir/store
	mkdir -p "$dir"
	RUN=(env)
	[ "$ver" = 10.0 ] && RUN=(env "QEMU_MODULE_DIR=$VM_QEMU10_DIR/usr/lib/x86_64-linux-gnu/qemu")
	mode=""
	[ "$ver" = 7.2 ] && mode=--pause
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	name=m$v
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

	# ---- SIGKILL of snapctl: the job is done, the manifests are not ------
	SNAPCTL_TEST_MERGE_HOLD_MS=60000 "$SNAPCTL" -s "$sock" -d "$store" prune --keep 3 --disks \
		>"$dir/p1.out" 2>"$dir/p1.err" &
	sp=$!
	check "$P: a live merge reaches the hold" wait_file "$dir/p1.err" '^merge: holding' 60
	kill -KILL "$sp"
	wait "$sp" 2>/dev/null
	check "$P: ... the merge journal is left" test -f "$store/.merge.json"
	check "$P: ... c1 is deleted" test ! -e "$store/c1"
	# QEMU knows c1's image (the VM's original) as d0.qcow2: it is
	# streamed into c2's, never reopened.
	expect_code 4 "$P: ... c2's manifest is behind its disk (exit 4)" "$SNAPCTL" -d "$store" verify c2
	expect_code 0 "$P: recover -s finishes the merge" "$SNAPCTL" -s "$sock" -d "$store" recover
	expect_match "$P: ... saying so" "^finished merging '.*' into '.*'$" "$TESTDIR/stdout"
	expect_match "$P: ... and the guest runs" "^guest is running$" "$TESTDIR/stdout"
	check "$P: ... the journal is gone" test ! -e "$store/.merge.json"
	verify_all "$P: ... every kept checkpoint verifies"
	top=$(ck_active_file "$name" vd0)
	expect_eq "$P: ... the chain is 4 deep" 4 "$(depth "$top")"
	expect_eq "$P: ... 4 disk files are left" 4 "$(ls "$dir"/*.qcow2 | wc -l)"
	hdr_ok "$P: ... after the stream"

	# ---- SIGINT during a live job: cancelled, the chain valid ---------------
	ck c5
	SNAPCTL_TEST_MERGE_SPEED=1 "$SNAPCTL" -s "$sock" -d "$store" prune --keep 3 --disks \
		>"$dir/p2.out" 2>"$dir/p2.err" &
	sp=$!
	check "$P: a slow live job runs" wait_job "$name"
	kill -INT "$sp"
	wait "$sp"
	expect_eq "$P: ... SIGINT: exit 8" 8 "$?"
	expect_match "$P: ... saying so" "interrupted by SIGINT" "$dir/p2.err"
	if job_seen "$name"; then not_ok "$P: ... the job is gone from QEMU"; else ok "$P: ... the job is gone from QEMU"; fi
	expect_eq "$P: ... the guest runs" running "$(ck_status "$name")"
	verify_all "$P: ... every kept checkpoint verifies"
	hdr_ok "$P: ... after the cancel"
	expect_code 0 "$P: the next prune --disks finishes it" "$SNAPCTL" -s "$sock" -d "$store" prune --keep 3 --disks
	# c2's image is the bottom now; QEMU's names of it and of c4's are
	# gone: linked back for the job.
	expect_match "$P: ... committing live" "^merged '.*' into '.*' \(commit, live, " "$TESTDIR/stdout"
	verify_all "$P: ... every kept checkpoint verifies"
	expect_eq "$P: ... the chain is 4 deep" 4 "$(depth "$dir/d0.qcow2")"
	hdr_ok "$P: ... after the commit"

	# ---- SIGKILL of snapctl during a live job: QEMU runs it to its end -----
	# (the names QEMU reopens images by were linked back for the job and
	# are in the journal: recover removes them once the job is over)
	ck c5k
	SNAPCTL_TEST_MERGE_SPEED=131072 "$SNAPCTL" -s "$sock" -d "$store" prune --keep 3 --disks \
		>"$dir/p5.out" 2>"$dir/p5.err" &
	sp=$!
	check "$P: a slowed live job runs" wait_job "$name"
	kill -KILL "$sp"
	wait "$sp" 2>/dev/null
	check "$P: ... SIGKILL of snapctl leaves the journal" test -f "$store/.merge.json"
	expect_code 0 "$P: recover -s waits for the job and finishes the merge" "$SNAPCTL" -s "$sock" -d "$store" recover
	expect_match "$P: ... saying so" "^finished merging '.*' into '.*'$" "$TESTDIR/stdout"
	check "$P: ... the journal is gone" test ! -e "$store/.merge.json"
	if job_seen "$name"; then not_ok "$P: ... no job is left in QEMU"; else ok "$P: ... no job is left in QEMU"; fi
	verify_all "$P: ... every kept checkpoint verifies"
	expect_eq "$P: ... the chain is 4 deep" 4 "$(depth "$dir/d0.qcow2")"
	hdr_ok "$P: ... after the job QEMU finished alone"

	# ---- SIGKILL of QEMU during a live job: an offline prune finishes ------
	ck c6
	SNAPCTL_TEST_MERGE_SPEED=1 "$SNAPCTL" -s "$sock" -d "$store" prune --keep 3 --disks \
		>"$dir/p3.out" 2>"$dir/p3.err" &
	sp=$!
	check "$P: a slow live job runs" wait_job "$name"
	top=$dir/d0.qcow2
	vm_kill "$name" KILL
	wait "$sp"
	check "$P: ... prune fails when QEMU dies" test $? -ne 0
	check "$P: ... the merge journal is left" test -f "$store/.merge.json"
	expect_code 0 "$P: prune --disks without QEMU finishes it offline" "$SNAPCTL" -d "$store" prune --keep 3 --disks
	expect_match "$P: ... offline" "^merged '.*' into '.*' \((commit|stream), offline, " "$TESTDIR/stdout"
	check "$P: ... the journal is gone" test ! -e "$store/.merge.json"
	verify_all "$P: ... every kept checkpoint verifies"
	expect_eq "$P: ... the chain is 4 deep" 4 "$(depth "$top")"
	hdr_ok "$P: ... after the offline finish"

	# ---- SIGKILL of snapctl during an offline merge: recover finishes -------
	# The VM is down for good; c7 is a checkpoint as it was (a copy of
	# c6's manifest would do no work: take one from a restarted VM).
	if ! vm_start "$name" --qemu "$ver" --disk "$top" --append "$CHURN" 2>"$dir/vm.err" ||
		! vm_wait_ready "$name" 150 >/dev/null; then
		not_ok "$P: the VM restarts from its command line" "$(tail -n 5 "$dir/vm.err")"
		continue
	fi
	vm_wait_serial "$name" '^CHURN DISKVERIFY ok' 60 >/dev/null
	ck c7
	expect_eq "$P: c7's overlay is the VM's path" "$top" "$(jq_get "$store/c7/manifest.json" disks.0.overlay)"
	vm_stop "$name"
	SNAPCTL_TEST_MERGE_HOLD_MS=60000 "$SNAPCTL" -d "$store" prune --keep 3 --disks \
		>"$dir/p4.out" 2>"$dir/p4.err" &
	sp=$!
	check "$P: an offline merge reaches the hold" wait_file "$dir/p4.err" '^merge: holding' 60
	kill -KILL "$sp"
	wait "$sp" 2>/dev/null
	check "$P: ... the merge journal is left" test -f "$store/.merge.json"
	expect_code 0 "$P: recover without -s finishes it" "$SNAPCTL" -d "$store" recover
	expect_match "$P: ... saying so" "^finished merging " "$TESTDIR/stdout"
	check "$P: ... the journal is gone" test ! -e "$store/.merge.json"
	verify_all "$P: ... every kept checkpoint verifies"
	expect_eq "$P: ... the chain is 4 deep" 4 "$(depth "$top")"

	# ---- layers something else needs are kept, the reason said once --------
	oldest=$(cd "$store" && ls -1 | sort -V | head -n 1)
	ofile=$(jq_get "$store/$oldest/manifest.json" disks.0.file)
	sleep 300 <"$ofile" &
	holder=$!
	expect_code 0 "$P: prune --keep 2 --disks with $oldest's disk held open" "$SNAPCTL" -d "$store" prune --keep 2 --disks
	expect_eq "$P: ... kept, said once" 1 "$(grep -c "open by process $holder (sleep)" "$TESTDIR/stdout")"
	expect_match "$P: ... on its kept line" "^kept '$ofile': .*open by process $holder \(sleep\)" "$TESTDIR/stdout"
	expect_eq "$P: ... the chain is as it was" 4 "$(depth "$top")"
	verify_all "$P: ... every kept checkpoint verifies"
	kill "$holder" 2>/dev/null
	wait "$holder" 2>/dev/null
	expect_code 0 "$P: once let go, the next prune --disks merges it" "$SNAPCTL" -d "$store" prune --keep 2 --disks
	expect_match "$P: ... offline" "^merged '.*' \((commit|stream), offline, " "$TESTDIR/stdout"
	expect_eq "$P: ... the chain is 3 deep" 3 "$(depth "$top")"
	verify_all "$P: ... every kept checkpoint verifies"

	# A restored VM's overlay backs onto the oldest kept checkpoint's disk.
	oldest=$(cd "$store" && ls -1 | sort -V | head -n 1)
	ofile=$(jq_get "$store/$oldest/manifest.json" disks.0.file)
	expect_code 0 "$P: restore $oldest --start" "${RUN[@]}" "$SNAPCTL" -d "$store" restore "$oldest" --start
	pid=$(sed -n 's/^pid //p' "$TESTDIR/stdout")
	rdir=$(sed -n 's/^dir //p' "$TESTDIR/stdout")
	[ -n "$pid" ] && started+=("$pid")
	check "$P: ... the restored guest verifies its whole memory" wait_file "$rdir/serial0.log" '^CHURN VERIFY ok' 120
	check "$P: ... its disk records agree with its memory" wait_file "$rdir/serial0.log" '^CHURN DISKVERIFY ok' 60
	expect_code 0 "$P: prune --keep 1 --disks while it runs" "$SNAPCTL" -d "$store" prune --keep 1 --disks
	cp "$TESTDIR/stdout" "$dir/p6.out"
	expect_match "$P: ... keeps $oldest's disk: the restored VM's overlay backs onto it" \
		"^kept '$ofile': .*the backing file of '[^']*restore[^']*'" "$dir/p6.out"
	expect_eq "$P: ... said once" 1 "$(grep -c "'$ofile'" "$dir/p6.out")"
	check "$P: ... the file is there" test -f "$ofile"
	verify_all "$P: ... the kept checkpoint verifies"
	if grep -aq FAIL "$rdir/serial0.log"; then
		not_ok "$P: ... the restored guest saw no FAIL" "$(grep -a FAIL "$rdir/serial0.log" | head -n 3)"
	else
		ok "$P: ... the restored guest saw no FAIL"
	fi
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null

	# ---- the kept checkpoint restores --------------------------------------
	last=$(cd "$store" && ls -1)
	expect_code 0 "$P: restore $last --start after all that" "${RUN[@]}" "$SNAPCTL" -d "$store" restore "$last" --start
	pid=$(sed -n 's/^pid //p' "$TESTDIR/stdout")
	rdir=$(sed -n 's/^dir //p' "$TESTDIR/stdout")
	[ -n "$pid" ] && started+=("$pid")
	check "$P: ... the guest verifies its whole memory" wait_file "$rdir/serial0.log" '^CHURN VERIFY ok' 120
	check "$P: ... its disk records agree with its memory" wait_file "$rdir/serial0.log" '^CHURN DISKVERIFY ok' 60
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
done

vm_stop_all
done_testing
