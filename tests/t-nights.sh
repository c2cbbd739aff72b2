#!/usr/bin/env bash
# t-nights: issue 11's unattended lifecycle against real QEMU 7.2 and 10.0.
# A churning guest writing its disk; NIGHTS (30) nights of "checkpoint" +
# "prune --keep 3 --disks -s SOCKET" (live merges: block-commit and
# block-stream jobs while the guest runs).  On two nights (NIGHTS/2 and
# NIGHTS-1) the VM is shut
# down after the checkpoint, prune runs without a QEMU (offline merges with
# qemu-img) and the VM restarts from its own unchanged command line (its
# path d0.qcow2 is always its current disk: the disk swap).  After every
# night: the VM path's backing chain, read from the qcow2 headers, is at
# most 4 deep and no header names the VM's path or a temporary
# ".snapctl-" name (QEMU would write its node names there after a swap
# without explicit backing names); the disk files take at most the
# virtual size + 4 nights' layers + slack; the store holds 3 checkpoints.  At the end every kept checkpoint
# verifies and restores: the guest verifies its memory and disk.  Under
# ASan the default is 12 nights on QEMU 10.0 (the same code of snapctl:
# each night's merges and both restarts; the plain run covers both QEMUs
# for 30 nights), to keep make check short.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

NIGHTS_DEFAULT=30
VERS_DEFAULT="7.2 10.0"
[ "${SNAPCTL_VARIANT:-plain}" = asan ] && NIGHTS_DEFAULT=12 VERS_DEFAULT=10.0
NIGHTS=${NIGHTS:-$NIGHTS_DEFAULT}
CHURN="churn.mb=32 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=50 churn.tick=200"
RT=$TESTDIR/rt
mkdir -m 700 "$RT"
export XDG_RUNTIME_DIR=$RT


field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
# depth IMAGE: images in IMAGE's backing chain, from the qcow2 headers.
depth() { qemu-img info --backing-chain --output=json -U "$1" | grep -c '"virtual-size"'; }
# alloc FILE...: bytes allocated on disk.
alloc() { local t=0 f; for f in "$@"; do t=$((t + $(stat -c '%b * %B' "$f"))); done; echo $t; }
# chain_files IMAGE: the files of IMAGE's backing chain.
chain_files() { qemu-img info --backing-chain --output=json -U "$1" | sed -n 's/^ *"filename": "\(.*\)",$/\1/p'; }
newest() { (cd "$1" && ls -1t | head -n 1); }

for ver in ${VERS:-$VERS_DEFAULT}; do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	v=${ver//./}
	P="QEMU $ver"
	dir=$TESTDIR/n$v
	store=$dir/store
	mkdir -p "$dir"
	RUN=(env)
	[ "$ver" = 10.0 ] && RUN=(env "QEMU_MODULE_DIR=$VM_QEMU10_DIR/usr/lib/x86_64-linux-gnu/qemu")
	mode=""
	# Live checkpoints of 7.2 under TCG can miss guest writes (README
	# Limits): --pause there.
	[ "$ver" = 7.2 ] && mode=--pause
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	vsize=$((64 << 20))
	name=n$v
	if ! vm_start "$name" --qemu "$ver" --disk "$dir/d0.qcow2" --append "$CHURN" 2>"$dir/vm.err" ||
		! vm_wait_ready "$name" 150 >/dev/null; then
		not_ok "$P: guest starts" "$(tail -n 5 "$dir/vm.err")"
		continue
	fi
	ok "$P: guest starts"
	vm_wait_serial "$name" '^CHURN DISKVERIFY ok' 60 >/dev/null
	sock=$(vm_path "$name" qmp)
	bad_depth='' bad_hdr='' bad_bytes='' bad_count='' bad_ck='' bad_prune='' max_layer=0 live_merges=0 off_merges=0
	# The first bottom layer goes on night 4 while the VM that opened
	# d0.qcow2 still runs (QEMU knows that image by the VM's path, which
	# names the top by then): the restarts come later.
	restart_nights=" $((NIGHTS / 2)) $((NIGHTS - 1)) " want_off=0
	for n in $(seq 1 "$NIGHTS"); do
		sleep 1
		# shellcheck disable=SC2086
		if ! "$SNAPCTL" -q -s "$sock" -d "$store" checkpoint $mode "night$n" 2>"$dir/ck.err"; then
			bad_ck+="night $n: $(head -n 2 "$dir/ck.err") "
			break
		fi
		layer=$(jq_get "$store/night$n/manifest.json" disks.0.file)
		[ "$(alloc "$layer")" -gt "$max_layer" ] && max_layer=$(alloc "$layer")
		if [[ $restart_nights == *" $n "* ]]; then
			# The host shuts down for the night: prune offline,
			# restart from the command line on the top image.
			vm_stop "$name"
			top=$dir/d0.qcow2
			if ! "$SNAPCTL" -d "$store" --json prune --keep 3 --disks >"$dir/prune.json" 2>"$dir/prune.err"; then
				bad_prune+="night $n (offline): $(head -n 2 "$dir/prune.err") "
				break
			fi
			off_merges=$((off_merges + $(grep -Eo '"live": ?false' "$dir/prune.json" | wc -l)))
			[ "$n" -ge 4 ] && want_off=$((want_off + 1))
			if ! vm_start "$name" --qemu "$ver" --disk "$top" --append "$CHURN" 2>"$dir/vm.err" ||
				! vm_wait_ready "$name" 150 >/dev/null; then
				bad_prune+="night $n: restart on '$top' failed: $(tail -n 3 "$dir/vm.err") "
				break
			fi
			vm_wait_serial "$name" '^CHURN DISKVERIFY ok' 60 >/dev/null
		else
			if ! "$SNAPCTL" -s "$sock" -d "$store" --json prune --keep 3 --disks >"$dir/prune.json" 2>"$dir/prune.err"; then
				bad_prune+="night $n: $(head -n 2 "$dir/prune.err") "
				break
			fi
			live_merges=$((live_merges + $(grep -Eo '"live": ?true' "$dir/prune.json" | wc -l)))
			top=$dir/d0.qcow2
		fi
		d=$(depth "$top")
		[ "$d" -le 4 ] || bad_depth+="night $n: depth $d "
		hdr=$(qemu-img info --backing-chain --output=json -U "$top" |
			sed -n 's/^ *"backing-filename": "\(.*\)",$/\1/p' | grep -E '(^|/)d0\.qcow2$|\.snapctl-')
		[ -z "$hdr" ] || bad_hdr+="night $n: $hdr "
		cnt=$(cd "$store" && ls -1 | wc -l)
		[ "$cnt" -eq $((n < 3 ? n : 3)) ] || bad_count+="night $n: $cnt checkpoints "
		# shellcheck disable=SC2046
		bytes=$(alloc $(chain_files "$top"))
		# shellcheck disable=SC2046
		all_bytes=$(alloc "$dir"/*.qcow2)
		echo "# night $n: merged: $(grep -Eo '"(how|live)": ?[a-z"]+' "$dir/prune.json" | tr -d '" ' | tr '\n' ' ')"
		echo "# night $n: depth $d, chain bytes $bytes, disk files $(ls "$dir"/*.qcow2 | wc -l) ($all_bytes bytes), store $(du -sb "$store" | cut -f1)"
		[ "$(ls "$dir"/*.qcow2 | wc -l)" -le 4 ] || echo "# night $n: $(ls "$dir"/*.qcow2 | tr "\n" " ") $(cat "$dir/prune.json")"
		limit=$((vsize + 4 * max_layer + (8 << 20)))
		[ "$all_bytes" -le "$limit" ] || bad_bytes+="night $n: $all_bytes > $limit "
	done
	expect_eq "$P: $NIGHTS nights of checkpoint" "" "$bad_ck"
	expect_eq "$P: ... and prune --keep 3 --disks" "" "$bad_prune"
	expect_eq "$P: the chain is at most 4 deep after every night" "" "$bad_depth"
	expect_eq "$P: ... and no backing name is the VM's path or a temporary name" "" "$bad_hdr"
	expect_eq "$P: the disk files stay within the virtual size + 4 layers + 8 MiB" "" "$bad_bytes"
	expect_eq "$P: the store holds 3 checkpoints" "" "$bad_count"
	check "$P: merges were live on the nights the VM ran" test "$live_merges" -ge $((NIGHTS - 6))
	check "$P: ... and offline on the nights it was down" test "$off_merges" -ge "$want_off"
	expect_eq "$P: no merge journal is left" "" "$(ls -A "$store" | grep merge)"
	expect_eq "$P: the guest never paused for a merge (it runs)" running "$(ck_status "$name")"
	if grep -aq FAIL "$(vm_path "$name" serial)"; then
		not_ok "$P: no FAIL line in the running guest" "$(grep -a FAIL "$(vm_path "$name" serial)" | head -n 3)"
	else
		ok "$P: no FAIL line in the running guest"
	fi

	# ---- every kept checkpoint verifies and restores ---------------------
	kept=$(cd "$store" && ls -1 | sort -V | tr '\n' ' ')
	expect_eq "$P: the newest 3 are kept" "night$((NIGHTS - 2)) night$((NIGHTS - 1)) night$NIGHTS " "$kept"
	for c in $kept; do
		expect_code 0 "$P: verify $c" "$SNAPCTL" -d "$store" verify "$c"
	done
	vm_kill "$name" KILL
	for c in $kept; do
		expect_code 0 "$P: restore $c --start" "${RUN[@]}" "$SNAPCTL" -d "$store" restore "$c" --start
		pid=$(sed -n 's/^pid //p' "$TESTDIR/stdout")
		rdir=$(sed -n 's/^dir //p' "$TESTDIR/stdout")
		[ -n "$pid" ] && started+=("$pid")
		f=$rdir/serial0.log
		check "$P: $c: the restored guest verifies its whole memory" wait_file "$f" '^CHURN VERIFY ok' 120
		check "$P: $c: its disk records agree with its memory" wait_file "$f" '^CHURN DISKVERIFY ok' 60
		if grep -aqE 'FAIL|^CHURN READY' "$f"; then
			not_ok "$P: $c: no FAIL and no READY line" "$(grep -aE 'FAIL|READY' "$f" | head -n 3)"
		else
			ok "$P: $c: no FAIL and no READY line"
		fi
		[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
		rm -rf "$rdir"
	done
done

vm_stop_all
done_testing
