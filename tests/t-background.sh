#!/usr/bin/env bash
# t-background: snapctl checkpoint --mode background against real QEMU 7.2
# and 10.0.  A churning guest (memory rewritten as fast as it can, ordered
# records on its disk) is checkpointed with QEMU's background-snapshot: the
# image holds memory as at the start, each page sent about once, and the
# disks were cut at that instant.  The proof: the guest is killed, a fresh
# QEMU on the checkpoint's disk file gets it back with snapctl restore, and
# the guest verifies its whole memory and that its disk holds what its
# memory says it wrote.  SIGINT during the background capture: exit 8, the
# guest runs, its migration settings are as before, no checkpoint.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=96 churn.verify=1000 churn.disk=/dev/vda churn.diskrate=50 churn.tick=50"
SLOW=2M		# --bandwidth that keeps the capture going for a while

# ---- the command line, no VM needed ------------------------------------
N=(-s "$TESTDIR/nodir/qmp.sock" -d "$TESTDIR/cli-store")
expect_code 2 "--mode background with --pause is a usage error" "$SNAPCTL" "${N[@]}" checkpoint --mode background --pause
expect_match "... saying why" "^snapctl: --mode background excludes --pause$" "$TESTDIR/stderr"
expect_code 2 "--mode background with --disk-only is a usage error" "$SNAPCTL" "${N[@]}" checkpoint --disk-only --mode background
expect_code 2 "--mode takes live or background" "$SNAPCTL" "${N[@]}" checkpoint --mode later
expect_match "... saying so" "^snapctl: invalid --mode 'later': live or background$" "$TESTDIR/stderr"
check "... before the store is created" test ! -e "$TESTDIR/cli-store"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	v=${ver//./}
	name=b$v
	dir=$TESTDIR/$name
	store=$dir/store
	mkdir -p "$dir"
	qemu-img create -q -f qcow2 "$dir/d0.qcow2" 64M
	if ! vm_start "$name" --qemu "$ver" --agent --disk "$dir/d0.qcow2" \
		--append "$CHURN" 2>"$dir/start.err" || ! vm_wait_ready "$name" 150 >"$dir/ready"; then
		not_ok "QEMU $ver: guest starts" "$(tail -n 5 "$dir/start.err")"
		continue
	fi
	run=$(field run "$(tr -d '\r' <"$dir/ready")")
	vm_wait_serial "$name" '^CHURN DISKVERIFY ok seq=[1-9]' 60 >/dev/null
	S=(-s "$(vm_path "$name" qmp)" -d "$store")
	before=$(ck_settings "$name")
	at=$(grep -a '^CHURN TICK' "$(vm_path "$name" serial)" | tail -n 1 | tr -d '\r')
	at=$(field counter "$at")
	at=${at:-0}

	# ---- a background checkpoint ----------------------------------------
	d="QEMU $ver background b1"
	nb=$(grep -ac '^CHURN TICK' "$(vm_path "$name" serial)")
	expect_code 0 "$d: exit 0" "$SNAPCTL" "${S[@]}" checkpoint --mode background b1
	# The guest kept writing records to its disk meanwhile, so a disk cut
	# at another instant than the memory's would show.
	ticks=$(grep -a '^CHURN TICK' "$(vm_path "$name" serial)" | tail -n +"$nb" | tr -d '\r')
	echo "# $d: disk_seq during the capture: $(sed -n 's/.* disk_seq=\([0-9]*\).*/\1/p' <<<"$ticks" | tr '\n' ' ')"
	cp "$TESTDIR/stdout" "$dir/b1.out"
	expect_eq "$d: the guest runs" running "$(ck_status "$name")"
	expect_match "$d: summary says background" "^checkpoint 'b1' \(background\)" "$dir/b1.out"
	m=$store/b1/manifest.json
	expect_eq "$d: manifest mode background" background "$(jq_get "$m" mode)"
	expect_eq "$d: capabilities and parameters as before" "$before" "$(ck_settings "$name")"
	expect_eq "$d: no staging dir or note left" "" "$(ck_leftovers "$store")"
	ram=$(jq_get "$m" memory.ram_bytes)
	ondisk=$(jq_get "$m" memory.bytes_on_disk)
	sb=$(jq_get "$m" memory.stream_bytes)
	pages=$(jq_get "$m" memory.pages)
	paused=$(jq_get "$m" timings.paused_ms)
	echo "# $d: paused $paused ms, total $(jq_get "$m" timings.total_s) s, stream $sb bytes for $ram of RAM, image $ondisk bytes"
	expect_eq "$d: every page of RAM is in the image" $((ram / 4096)) "$pages"
	# Each page about once: far below two passes over RAM.
	if [ "$sb" -gt $((ram / 8)) ] && [ "$sb" -le $((ram * 110 / 100)) ]; then
		ok "$d: stream_bytes $sb about one pass over $ram bytes of RAM"
	else
		not_ok "$d: stream_bytes about one pass over RAM" "stream $sb, RAM $ram"
	fi
	if [ "${paused%.*}" -ge 0 ] && [ "${paused%.*}" -lt 2000 ] && [ "$paused" != 0 ]; then
		ok "$d: paused_ms is plausible ($paused)"
	else
		not_ok "$d: paused_ms is plausible" "$paused"
	fi
	if command -v zstd >/dev/null && "$SNAPCTL" help read >/dev/null 2>&1; then
		z=$("$SNAPCTL" read "$store/b1/memory.img" pc.ram 0 $((256 << 20)) | zstd -1 -c | wc -c)
		if [ "$ondisk" -le $((z * 110 / 100)) ]; then
			ok "$d: image $ondisk <= 1.10 x zstd -1 of its RAM ($z)"
		else
			not_ok "$d: image <= 1.10 x zstd -1 of its RAM" "image $ondisk, zstd -1 $z"
		fi
	else
		skip "$d: image vs zstd -1" "no zstd or snapctl read"
	fi
	check "$d: snapctl verify memory.img" "$SNAPCTL" verify "$store/b1/memory.img"
	file=$(jq_get "$m" disks.0.file)
	expect_eq "$d: disks.0.file is the state, d0.b1.qcow2" "$dir/d0.b1.qcow2" "$file"
	expect_eq "$d: the VM writes on at its own path" "$dir/d0.qcow2" "$(ck_active_file "$name" vd0)"

	# ---- SIGINT during the background capture ----------------------------
	d="QEMU $ver SIGINT background"
	"$SNAPCTL" "${S[@]}" checkpoint --mode background --bandwidth "$SLOW" i1 >"$dir/i1.out" 2>"$dir/i1.err" &
	pid=$!
	if ck_wait_mig "$name" '^active$' 30; then
		sleep 1
		expect_eq "$d: the guest runs during the capture" running "$(ck_status "$name")"
		kill -INT "$pid"
		wait "$pid"
		expect_eq "$d: exit 8" 8 "$?"
		expect_match "$d: says so" '^snapctl: interrupted by SIGINT' "$dir/i1.err"
		ck_one_line "$d: one line on stderr" "$dir/i1.err"
	else
		kill -KILL "$pid"
		wait "$pid"
		not_ok "$d: the migration starts" "$(cat "$dir/i1.err")"
	fi
	ck_guest_back "$name" "$store" "$before" "$d"
	check "$d: no checkpoint" test ! -e "$store/i1"

	# ---- the proof: restore b1, the guest checks memory against disk -----
	vm_kill "$name" KILL
	d="QEMU $ver restored b1"
	# The newest record of this run on the frozen disk, read before the
	# restore: churn's own DISKVERIFY cannot see records written after
	# the memory's instant, as the restored guest rewrites them (the
	# same bytes) before it checks.
	qemu-img convert -f qcow2 -O raw "$file" "$dir/frozen.raw"
	maxseq=0
	for h in $(od -v -A n -t x8 -w4096 -N $((1024 * 4096)) "$dir/frozen.raw" |
		awk -v r="$run" '$1 == "434552204e524843" && $2 == r { print $3 }'); do
		[ $((16#$h)) -gt "$maxseq" ] && maxseq=$((16#$h))
	done
	rm -f "$dir/frozen.raw"
	vm_start "r$v" --qemu "$ver" --agent --disk "$file" --append "$CHURN" --incoming 2>"$dir/r.err"
	if "$SNAPCTL" -s "$(vm_path "r$v" qmp)" -d "$store" restore b1 >"$dir/r1.out" 2>"$dir/r1.err"; then
		ok "$d: snapctl restore"
		tick=$(vm_wait_serial "r$v" '^CHURN TICK' 60)
		expect_eq "$d: the same churn run" "$run" "$(field run "$tick")"
		# Its first tick (due within 50 ms) says disk_seq ds >= L, the
		# memory's last record; the frozen disk may hold L+1 (in flight)
		# but no more.  (A disk cut before the memory's instant leaves
		# holes DISKVERIFY sees.)
		ds=$(field disk_seq "$tick")
		echo "# $d: newest record on the frozen disk $maxseq, first tick after the restore disk_seq=$ds"
		if [ -n "$ds" ] && [ "$maxseq" -le $((ds + 1)) ]; then
			ok "$d: the frozen disk ends where the memory's records do ($maxseq, disk_seq $ds)"
		else
			not_ok "$d: the frozen disk ends where the memory's records do" "newest record on disk $maxseq, restored disk_seq $ds"
		fi
		if [ -n "$tick" ] && [ "$(field counter "$tick")" -ge "$at" ]; then
			ok "$d: its counter carries on ($(field counter "$tick") >= $at)"
		else
			not_ok "$d: its counter carries on" "first tick: '$tick', before at $at"
		fi
		check "$d: not a reboot (no READY line)" sh -c "! grep -aq '^CHURN READY' '$(vm_path "r$v" serial)'"
		check "$d: CHURN VERIFY ok" vm_wait_serial "r$v" '^CHURN VERIFY ok' 60
		check "$d: CHURN DISKVERIFY ok" vm_wait_serial "r$v" '^CHURN DISKVERIFY ok' 60
		echo "# $d: $(grep -a '^CHURN DISKVERIFY' "$(vm_path "r$v" serial)" | head -n 1 | tr -d '\r')"
		if grep -aq FAIL "$(vm_path "r$v" serial)"; then
			not_ok "$d: no FAIL line" "$(grep -a FAIL "$(vm_path "r$v" serial)" | head -n 3)"
		else
			ok "$d: no FAIL line"
		fi
	else
		not_ok "$d: snapctl restore" "$(cat "$dir/r1.err")"
	fi
	vm_kill "r$v" KILL
done

done_testing
