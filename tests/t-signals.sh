#!/usr/bin/env bash
# t-signals: SIGINT and SIGTERM (alternately) sent to snapctl checkpoint at
# the instants of the switchover, many times, on QEMU 7.2 and 10.0 (issue
# 12: on 7.2, a migrate_cancel between the STOP event and pre-switchover
# left the migration 'cancelling' and the guest 'finish-migrate' for good).
# build/helper-qmp-at watches a monitor of its own and signals the moment
#   STOP             QEMU stops the guest for the switchover (the race);
#   pre-switchover   the MIGRATION event, snapctl holding there
#                    (SNAPCTL_TEST_HOLD_SWITCHOVER_MS);
#   device           the MIGRATION event: the disks were cut, QEMU sends
#                    the last pass;
#   completed        the MIGRATION event: QEMU sent everything.
# After each: before the disks are cut, exit 8 and the one line
# "interrupted by SIGxxx", no checkpoint and no overlay; from the cut on
# (device, completed, and STOP too when snapctl had read pre-switchover
# before the signal came) the checkpoint is completed: exit 0, the one line
# "warning: SIGxxx came after the disks were cut; the checkpoint was
# completed", a checkpoint that verifies, and QEMU must have reached
# 'device'.  Always: the guest runs; no migration left busy; capabilities
# and parameters as before; no staging directory or note; and the next
# checkpoint --disk-only succeeds.  (Cancelling in 'device' made
# QEMU 7.2 abort in bdrv_inactivate_recurse, 1 run in 4: snapctl now lets
# that phase end first, vm_migration_cancel.)  STOP runs where the cancel reached
# QEMU before it entered pre-switchover ("in the window": the MIGRATION
# 'cancelling' event with no 'pre-switchover' before it) are counted.
# Then, on 7.2, a VM made stuck that way without snapctl (migrate_cancel
# the instant STOP comes, by helper-qmp-at) must be brought back by
# snapctl recover.  The guests are firmware only (cheap to checkpoint).
# SNAPCTL_TEST_SIGNAL_RUNS=N runs every case N times (default below);
# SNAPCTL_TEST_SIGNAL_PHASES="STOP device" only those phases.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing
AT=$TOP/build/helper-qmp-at
if [ ! -x "$AT" ]; then
	not_ok "build/helper-qmp-at exists (run make helpers)"
	done_testing
fi

# runs VER PHASE: how many times
runs() {
	if [ -n "${SNAPCTL_TEST_SIGNAL_RUNS:-}" ]; then
		echo "$SNAPCTL_TEST_SIGNAL_RUNS"
		return
	fi
	case $1:$2 in
	7.2:stop) echo 30 ;;
	*:stop) echo 16 ;;
	*:device) echo 6 ;;
	7.2:*) echo 10 ;;
	*) echo 8 ;;
	esac
}

versions=()
for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	name=g${ver//./}
	dir=$TESTDIR/$name
	mkdir -p "$dir"
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 32M
	if vm_start "$name" --qemu "$ver" --no-kernel --mem 128 \
		--disk "$dir/d0.qcow2" 2>"$TESTDIR/$name.err"; then
		versions+=("$ver")
	else
		not_ok "QEMU $ver: VM starts" "$(tail -n 5 "$TESTDIR/$name.err")"
	fi
done

# busy STATUS: 0 if a migration in STATUS still holds QEMU
busy() {
	case $1 in
	setup | active | pre-switchover | device | cancelling | postcopy* | wait-unplug) return 0 ;;
	esac
	return 1
}

# in_window EVENTS: 0 if 'cancelling' came with no 'pre-switchover' before it
in_window() {
	awk '/"status": ?"pre-switchover"/ && !p { p = NR }
	/"status": ?"cancelling"/ && !c { c = NR }
	END { exit !(c && (!p || p > c)) }' "$1"
}

# sig_run PHASE I SIG: one checkpoint signalled at PHASE; one ok/not ok
sig_run() {
	local phase=$1 i=$2 sig=$3 n=${1:0:1}$2 match hold=0 rc st mst left act
	local d="QEMU $ver SIG$sig at $phase #$i" probs=() want re
	case $phase in
	STOP) match=STOP ;;
	pre-switchover) match=MIGRATION:pre-switchover hold=5000 ;;
	device) match=MIGRATION:device ;;
	completed) match=MIGRATION:completed ;;
	esac
	SNAPCTL_TEST_HOLD_SWITCHOVER_MS=$hold "$AT" -t 120 -s "$sig" "$qmp3" "$match" \
		bash -c 'exec "$@" >"$0"' "$dir/$n.out" "$SNAPCTL" "${S[@]}" checkpoint "$n" \
		>"$dir/$n.ev" 2>"$dir/$n.err" </dev/null
	rc=$?
	grep -q '^# trigger' "$dir/$n.ev" || probs+=("no $match event: $(tail -n 3 "$dir/$n.ev" | tr '\n' ' ')")
	re="^snapctl: interrupted by SIG$sig\$"
	# Before the disks are cut a signal ends the run: exit 8, nothing
	# left.  From the cut on (at STOP too on a loaded machine: snapctl may
	# have read pre-switchover already) the checkpoint is completed: exit
	# 0, one warning line, and QEMU must have reached "device".
	case $phase:$rc in
	STOP:0 | device:0 | completed:0) want=0 tally[c0]=$((tally[c0] + 1)) ;;
	*) want=8 tally[c8]=$((tally[c8] + 1)) ;;
	esac
	case $phase in device | completed) want=0 ;; esac
	[ "$rc" = "$want" ] || probs+=("exit $rc, not $want: $(head -n 3 "$dir/$n.err")")
	if [ "$rc" = 8 ]; then
		if [ "$(wc -l <"$dir/$n.err")" != 1 ] || ! grep -Eq "$re" "$dir/$n.err"; then
			probs+=("stderr is not one line /$re/:" "$(head -n 3 "$dir/$n.err")")
		fi
		[ -e "$store/$n" ] && probs+=("checkpoint $n left in the store")
		left=$(find "$dir" -maxdepth 1 -name "*.$n.qcow2" -o -maxdepth 1 -name ".*.snapctl-$n")
		[ -n "$left" ] && probs+=("overlay left: $left")
	elif [ "$rc" = 0 ]; then
		[ -f "$store/$n/manifest.json" ] || probs+=("exit 0 without checkpoint $n")
		# (QEMU < 9.0 without KVM adds the live-checkpoint warning:
		# t-blkstress tests it)
		sed -i '/^snapctl: warning: QEMU [0-8]\.[0-9.]* without KVM can miss guest writes/d' "$dir/$n.err"
		if [ "$(wc -l <"$dir/$n.err")" = 1 ] && grep -Eq "^snapctl: warning: SIG$sig came after the disks were cut; the checkpoint was completed\$" "$dir/$n.err"; then
			grep -Eq '"status": ?"device"' "$dir/$n.ev" ||
				probs+=("completed after a signal but QEMU never reached 'device'")
		elif [ -s "$dir/$n.err" ]; then
			probs+=("stderr: $(head -n 2 "$dir/$n.err")")
		fi
		"$SNAPCTL" "${S[@]}" verify "$n" >/dev/null 2>&1 || probs+=("verify $n fails")
	fi
	st=$(ck_status "$name")
	[ "$st" = running ] || probs+=("guest '$st', not running")
	mst=$(ck_mig_status "$name")
	busy "$mst" && probs+=("migration left '$mst'")
	[ "$(ck_settings "$name")" = "$before" ] || probs+=("capabilities or parameters changed")
	left=$(ck_leftovers "$store")
	[ -z "$left" ] || probs+=("left in the store: $left")
	if ! "$SNAPCTL" "${S[@]}" -q checkpoint --disk-only "${n}k" >"$dir/${n}k.out" 2>&1 </dev/null; then
		probs+=("next checkpoint --disk-only failed: $(head -n 2 "$dir/${n}k.out")")
	fi
	if [ "$phase" = STOP ] && in_window "$dir/$n.ev"; then
		tally[window]=$((tally[window] + 1))
		d="$d (in the window)"
	fi
	if [ ${#probs[@]} -eq 0 ]; then
		ok "$d: exit $rc, guest running, nothing left, next checkpoint ok"
	else
		not_ok "$d" "${probs[@]}"
		sed 's/^/#   ev: /' "$dir/$n.ev" | grep -v '# reply' | tail -n 8
		# Put the VM back, so that one failure does not fail every run after.
		"$SNAPCTL" "${S[@]}" recover >/dev/null 2>&1
	fi
}

# stick: make QEMU stuck: migrate_cancel the instant STOP comes, through
# helper-qmp-at, up to 10 tries; 0 once query-migrate stayed 'cancelling'
# for 2 s with the guest in finish-migrate.  $tries: how many it took.
stick() {
	local caps='{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"pause-before-switchover","state":true},{"capability":"events","state":true}]}}'
	local mig='{"execute":"migrate","arguments":{"uri":"exec:cat >/dev/null"}}' k s
	for ((tries = 1; tries <= 10; tries++)); do
		"$AT" -t 60 -q "$caps" -q "$mig" -x '{"execute":"migrate_cancel"}' \
			"$qmp3" STOP >"$dir/stick$tries.ev" 2>&1 || continue
		for ((k = 0; k < 10; k++)); do
			s=$(ck_mig_status "$name")
			[ "$s" = cancelling ] || break
			sleep 0.2
		done
		if [ "$k" = 10 ] && [ "$(ck_status "$name")" = finish-migrate ]; then
			return 0
		fi
		ck_wait_mig "$name" '^(cancelled|completed|failed)$' 20 || return 1
		[ "$(ck_status "$name")" = running ] ||
			vm_qmp_raw "$name" '{"execute":"cont"}' >/dev/null
	done
	return 1
}

for ver in "${versions[@]}"; do
	name=g${ver//./}
	dir=$TESTDIR/$name
	store=$dir/store
	qmp=$(vm_path "$name" qmp)
	qmp3=$(vm_path "$name" qmp3)
	S=(-s "$qmp" -d "$store")
	before=$(ck_settings "$name")
	declare -A tally=([window]=0 [c0]=0 [c8]=0)
	t0=$(date +%s)
	for phase in ${SNAPCTL_TEST_SIGNAL_PHASES:-STOP pre-switchover device completed}; do
		nr=$(runs "$ver" "$(tr 'A-Z' 'a-z' <<<"${phase%%-*}")")
		for ((i = 1; i <= nr; i++)); do
			if ((i % 2)); then sig=INT; else sig=TERM; fi
			sig_run "$phase" "$i" "$sig"
		done
		case $phase in
		STOP | pre-switchover)
			echo "# QEMU $ver: $nr signals at $phase, ${tally[window]} in the STOP..pre-switchover window, ${tally[c0]} past the cut (completed)"
			tally[window]=0 tally[c0]=0 tally[c8]=0 ;;
		device | completed)
			echo "# QEMU $ver: at $phase: ${tally[c0]} exit 0, ${tally[c8]} exit 8"
			tally[c0]=0 tally[c8]=0 ;;
		esac
	done
	echo "# QEMU $ver: signal runs took $(($(date +%s) - t0)) s"

	# ---- recover frees a VM stuck in 'cancelling' (7.2 only) ---------------
	[ "$ver" = 7.2 ] || continue
	d="QEMU $ver recover after a cancel at STOP"
	if stick; then
		echo "# QEMU $ver: stuck on try $tries"
		err=$(vm_qmp_raw "$name" '{"execute":"cont"}' 2>&1)
		expect_match "$d: stuck: cont refused" 'not finalized' <(echo "$err")
		expect_code 0 "$d: recover exits 0" "$SNAPCTL" -s "$qmp" --json recover
		cp "$TESTDIR/stdout" "$dir/recover.json"
		expect_match "$d: recover cancelled it" "cancelled the migration \(was 'cancelling'\)" "$dir/recover.json"
		expect_eq "$d: the guest runs" running "$(ck_status "$name")"
		expect_eq "$d: the migration is cancelled" cancelled "$(ck_mig_status "$name")"
		vm_qmp_raw "$name" '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"events","state":false}]}}' >/dev/null
		expect_eq "$d: capabilities as before" "$before" "$(ck_settings "$name")"
		expect_code 0 "$d: a live checkpoint works again" "$SNAPCTL" "${S[@]}" -q checkpoint r1
		ck_guest_back "$name" "$store" "$before" "$d: after it"
	else
		skip "$d" "QEMU did not stay 'cancelling' in $((tries - 1)) tries"
		vm_qmp_raw "$name" '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"pause-before-switchover","state":false},{"capability":"events","state":false}]}}' >/dev/null
	fi
done

vm_stop_all
done_testing
