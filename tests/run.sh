#!/usr/bin/env bash
# tests/run.sh BINARY... - run the whole suite: the unit tests once, then
# every tests/t-*.sh against each snapctl binary given (plain, ASan+UBSan).
# T=REGEX selects tests by name.  Ends with the line "N passed, N failed".
# Two tests run at a time (a test's QEMU under TCG keeps about one core
# busy; CI has two): TEST_LANES=N for N, 1 for one after the other.
# Every test has its own directories, VMs and sockets.
# Every test must print one TAP plan "1..N" before its first or after its
# last "ok"/"not ok" line, and run exactly N: a missing plan, or "planned N,
# ran M", counts as one more failure.
set -u
cd "$(dirname "$0")/.." || exit 1
[ $# -gt 0 ] || set -- ./snapctl

pass=0
fail=0
skipped=0
failed_names=()
logdir=${TEST_LOGDIR:-build/test-logs}
mkdir -p "$logdir"

# plan_problem LOG: prints what is wrong with LOG's plan, nothing if fine.
plan_problem() {
	awk '
	/^(not )?ok [0-9]+/ { ran++; if (!first) first = NR; last = NR; next }
	/^1\.\.[0-9]+([ \t]*#.*)?$/ {
		plans++; planned = substr($1, 4) + 0; at = NR; next
	}
	END {
		if (plans == 0) print "no plan (1..N)"
		else if (plans > 1) print plans " plans"
		else if (first && at > first && at < last)
			print "the plan is neither before the first test nor after the last"
		else if (planned != ran) print "planned " planned ", ran " ran + 0
	}' "$1"
}

# run_one NAME LOG CMD...: runs a test, counts its ok / not ok lines.
run_one() {
	local name=$1 log=$2 rc p f s start secs plan
	shift 2
	start=$(date +%s)
	timeout --kill-after=10 "${TEST_TIMEOUT:-900}" "$@" >"$log" 2>&1 </dev/null
	rc=$?
	secs=$(($(date +%s) - start))
	echo "$secs" >"$log.secs"
	p=$(grep -cE '^ok [0-9]+' "$log" | head -n1)
	s=$(grep -cE '^ok [0-9]+ .*# SKIP' "$log" | head -n1)
	f=$(grep -cE '^not ok [0-9]+' "$log" | head -n1)
	p=$((p - s))
	plan=$(plan_problem "$log")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		# Died without saying which check failed (crash, timeout).
		f=1
		echo "not ok - $name exited with status $rc${plan:+ ($plan)}" >>"$log"
	elif [ -n "$plan" ]; then
		f=$((f + 1))
		echo "not ok - $name: $plan" >>"$log"
	fi
	pass=$((pass + p))
	fail=$((fail + f))
	skipped=$((skipped + s))
	if [ "$f" -gt 0 ]; then
		failed_names+=("$name")
		printf 'FAIL %-40s %3d ok %3d failed %4ss\n' "$name" "$p" "$f" "$secs"
		# The first 30 failures and notes, and the run's own verdict
		# (died, plan), the log's last line, even past those 30.
		awk '/^not ok|^#/ && ++n <= 30 { print; shown = NR }
		END { if (shown != NR && $0 ~ /^not ok - /) print }' "$log" |
			sed 's/^/    /'
	else
		printf 'PASS %-40s %3d ok %3d skipped %4ss\n' "$name" "$p" "$s" "$secs"
	fi
}

for u in build/unit-*; do
	[ -x "$u" ] || continue
	name=unit/${u#build/unit-}
	[[ -n "${T:-}" && ! "$name" =~ $T ]] && continue
	run_one "$name" "$logdir/${u#build/}.log" "$u"
done

# The jobs: every t-*.sh against every binary.  TEST_LANES (2) lanes take
# them from one queue, longest first when an earlier run left each job's
# seconds in the log directory; each lane's counts and failed names come
# back through a file ($logdir/lane.K, sourced by the parent).
jobs=()
for t in tests/t-*.sh; do
	[ -f "$t" ] || continue
	name=$(basename "$t" .sh)
	[[ -n "${T:-}" && ! "$name" =~ $T ]] && continue
	for bin in "$@"; do
		variant=plain
		case $bin in *asan*) variant=asan ;; esac
		secs=$(cat "$logdir/$name.$variant.log.secs" 2>/dev/null || echo 0)
		jobs+=("$secs|$variant|$bin|$t")
	done
done
if [ ${#jobs[@]} -gt 0 ]; then
	mapfile -t jobs < <(printf '%s\n' "${jobs[@]}" | sort -t '|' -k1,1nr -s)
fi
queue=$logdir/queue
echo 0 >"$queue"
# take: the next job's index (under a lock: lanes share the queue).
take() {
	flock "$queue.lock" bash -c 'n=$(cat "$1"); echo $((n + 1)) >"$1"; echo "$n"' _ "$queue"
}

lane() {
	local k=$1 i job variant bin t name
	local pass=0 fail=0 skipped=0 failed_names=()
	while i=$(take) && [ "$i" -lt ${#jobs[@]} ]; do
		job=${jobs[i]#*|}
		variant=${job%%|*} job=${job#*|}
		bin=${job%%|*} t=${job#*|}
		name=$(basename "$t" .sh)
		SNAPCTL=$bin SNAPCTL_VARIANT=$variant \
			run_one "$name [$variant]" "$logdir/$name.$variant.log" bash "$t"
	done
	{
		echo "pass=\$((pass + $pass)) fail=\$((fail + $fail)) skipped=\$((skipped + $skipped))"
		[ ${#failed_names[@]} -gt 0 ] && printf 'failed_names+=(%q)\n' "${failed_names[@]}"
	} >"$logdir/lane.$k"
}

rm -f "$logdir"/lane.*
lanes=${TEST_LANES:-2}
[ "$lanes" -ge 1 ] 2>/dev/null || lanes=1
if [ "$lanes" -gt 1 ] && [ ${#jobs[@]} -gt 1 ]; then
	# Build what the tests share once, before the lanes race for it.
	( TESTDIR=$logdir; . tests/lib/vm.sh && vm_guest && _vm_helper ) >/dev/null ||
		echo "run.sh: the test guest or the QMP helper cannot be built" >&2
	pids=()
	for k in $(seq "$lanes"); do
		lane "$k" &
		pids+=($!)
	done
	wait "${pids[@]}"
else
	lanes=1
	lane 1
fi
for k in $(seq "$lanes"); do
	if [ -f "$logdir/lane.$k" ]; then
		# shellcheck disable=SC1090
		. "$logdir/lane.$k"
	else
		fail=$((fail + 1))
		failed_names+=("lane $k (it died)")
	fi
done

if [ ${#failed_names[@]} -gt 0 ]; then
	echo "failed: ${failed_names[*]} (logs in $logdir)"
fi
if [ "$skipped" -gt 0 ]; then
	echo "$pass passed, $fail failed, $skipped skipped"
else
	echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
