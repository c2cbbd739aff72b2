# tests/lib/ckpt.sh - helpers the checkpoint tests share (source after
# tests/lib.sh; needs build/helper-jsonq from "make helpers").
#
#   ck_init                  check the helpers exist and the test guest
#                            builds; 1 (and a not_ok) if not
#   jq_get FILE PATH         build/helper-jsonq FILE PATH ("-" for stdin)
#   ck_settings VM           print query-migrate-capabilities and
#                            -parameters (two lines) from VM's 2nd monitor
#   ck_status VM             print VM's runstate ("running", ...)
#   ck_mig_status VM         print the status of query-migrate
#   ck_wait_mig VM REGEX [TIMEOUT]  wait until that status matches REGEX
#   ck_leftovers STORE       print what a failed checkpoint must not leave:
#                            staging dirs, the recovery note, temporary files
#   ck_active_file VM DEV    print the file name of DEV's active image: the
#                            VM's own path (QEMU's "json:{...}" name read
#                            through to its file, a disk swap's temporary
#                            name .X.snapctl-NAME as X, diskswap.h)
#   ck_holds VM FILE         0 if VM's QEMU holds FILE open (its inode)
#   ck_records RAW RUN       churn's disk records of run RUN (hex, as in its
#                            READY line) in the raw image RAW: prints
#                            "max=M missing=K", K the seqs of the last
#                            min(M, 1024) that their slot does not hold
#   ck_quit VM               QMP quit, and wait until QEMU is gone
#   ck_stray DIR             the disk swap's temporary names in DIR
#                            (.X.snapctl-NAME) that are not a link of X
#                            (QEMU's name of the VM's current disk X is)
#   ck_guest_back VM STORE BEFORE DESC
#                            the checks after every failure: VM running,
#                            settings equal BEFORE (ck_settings output), no
#                            leftovers in STORE
#   ck_one_line DESC FILE    FILE holds exactly one "snapctl: " line
#   wait_file FILE REGEX TIMEOUT  wait until a line of FILE (CRs dropped)
#                            matches REGEX; 1 after TIMEOUT seconds
#   started+=(PID)           processes (restored QEMUs) killed at exit

JSONQ=$TOP/build/helper-jsonq

started=()
kill_started() { local p; for p in "${started[@]}"; do kill -KILL "$p" 2>/dev/null; done; }
at_exit kill_started

wait_file() {
	local end=$(($(date +%s) + $3))
	while :; do
		tr -d '\r' <"$1" 2>/dev/null | grep -aEq -- "$2" && return 0
		[ "$(date +%s)" -ge "$end" ] && return 1
		sleep 0.2
	done
}

ck_init() {
	if [ ! -x "$JSONQ" ]; then
		not_ok "build/helper-jsonq exists (run make helpers)"
		return 1
	fi
	if ! vm_guest 2>"$TESTDIR/guest.err"; then
		not_ok "test guest builds" "$(tail -n 5 "$TESTDIR/guest.err")"
		return 1
	fi
	return 0
}

jq_get() { "$JSONQ" "$@"; }

ck_settings() {
	vm_qmp_raw "$1" '{"execute":"query-migrate-capabilities"}' \
		'{"execute":"query-migrate-parameters"}'
}

ck_status() {
	vm_qmp_raw "$1" '{"execute":"query-status"}' | "$JSONQ" - return.status
}

ck_mig_status() {
	vm_qmp_raw "$1" '{"execute":"query-migrate"}' | "$JSONQ" - return.status 2>/dev/null ||
		echo none
}

ck_wait_mig() {
	local vm=$1 re=$2 tmo=${3:-60} end s
	end=$(($(date +%s) + tmo))
	while :; do
		s=$(ck_mig_status "$vm")
		[[ $s =~ $re ]] && return 0
		if [ "$(date +%s)" -ge "$end" ]; then
			echo "ck_wait_mig: $vm: status '$s', not /$re/ after $tmo s" >&2
			return 1
		fi
		sleep 0.1
	done
}

ck_leftovers() {
	local f
	[ -d "$1" ] || return 0
	for f in "$1"/.*partial-* "$1"/.recover.json "$1"/*/*.tmp-* "$1"/.snapctl-scratch-*; do
		[ -e "$f" ] && echo "$f"
	done
	return 0
}

ck_active_file() {
	local out i n dev qdev f b
	out=$(vm_qmp_raw "$1" '{"execute":"query-block"}') || return 1
	n=$(jq_get -n - return <<<"$out")
	for ((i = 0; i < n; i++)); do
		dev=$(jq_get - "return.$i.device" <<<"$out")
		qdev=$(jq_get - "return.$i.qdev" <<<"$out" 2>/dev/null)
		if [ "$dev" = "$2" ] || [[ $qdev == "/machine/peripheral/$2/"* ]]; then
			f=$(jq_get - "return.$i.inserted.image.filename" <<<"$out")
			case $f in json:*) f=$(jq_get - file.filename <<<"${f#json:}") ;; esac
			b=${f##*/}
			case $b in .*.snapctl-*)
				b=${b#.}
				b=${b%.snapctl-*}
				f=${f%/*}/$b ;;
			esac
			echo "$f"
			return 0
		fi
	done
	return 1
}

ck_holds() {
	local pid l want
	pid=$(vm_pid "$1") || return 1
	want=$(stat -c %d:%i "$2") || return 1
	for l in /proc/"$pid"/fd/*; do
		[ "$(stat -L -c %d:%i "$l" 2>/dev/null)" = "$want" ] && return 0
	done
	return 1
}

ck_records() {
	local raw=$1 run=$2
	od -v -A n -t x8 -w4096 -N $((1024 * 4096)) "$raw" |
		awk -v run="$run" '
		function hex(s,   i, n) { n = 0; for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return n }
		$1 == "434552204e524843" && $2 == run { seq[NR - 1] = hex($3); if (hex($3) > max) max = hex($3) }
		END {
			lo = max - 1023; if (lo < 1) lo = 1
			for (s = lo; s <= max; s++) if (seq[(s - 1) % 1024] != s) miss++
			printf "max=%d missing=%d\n", max, miss
		}'
}

ck_stray() {
	local f x
	for f in "$1"/.*.snapctl-*; do
		[ -e "$f" ] || continue
		x=${f##*/}
		x=${x#.}
		x=$1/${x%%.snapctl-*}
		[ "$(stat -c %d:%i "$f")" = "$(stat -c %d:%i "$x" 2>/dev/null)" ] || echo "$f"
	done
	return 0
}

ck_quit() {
	local pid t=0
	pid=$(vm_pid "$1")
	vm_qmp_raw "$1" '{"execute":"quit"}' >/dev/null 2>&1
	while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $t -lt 300 ]; do
		sleep 0.1
		t=$((t + 1))
	done
	! kill -0 "$pid" 2>/dev/null
}

ck_guest_back() {
	local vm=$1 store=$2 before=$3 d=$4 st after left
	st=$(ck_status "$vm")
	expect_eq "$d: the guest runs" running "$st"
	after=$(ck_settings "$vm")
	if [ "$after" = "$before" ]; then
		ok "$d: migration capabilities and parameters as before"
	else
		not_ok "$d: migration capabilities and parameters as before" \
			"$(diff <(tr ',' '\n' <<<"$before") <(tr ',' '\n' <<<"$after") | head -n 6)"
	fi
	left=$(ck_leftovers "$store")
	expect_eq "$d: nothing left in the store" "" "$left"
}

ck_one_line() {
	local n
	n=$(wc -l <"$2")
	if [ "$n" = 1 ] && grep -q '^snapctl: ' "$2"; then
		ok "$1"
	else
		not_ok "$1" "$n lines:" "$(head -n 5 "$2")"
	fi
}
