#!/usr/bin/env bash
# t-faults.sh - compact and export when the file system fails.  With
# build/faultinject.so preloaded, every open, write, pwrite, fsync and
# rename the command makes in its output directory fails in turn, once, with
# ENOSPC and then with EIO.  Each failing run must exit 6 (ENOSPC) or 1
# (EIO), say so in one line "snapctl: ...: <strerror>", and leave the
# directory as it was: no temporary, scratch or partial file, and the image
# already there unchanged.  A fault the command works around (there is
# none since the writer keeps no scratch file) must end in exit 0 and an
# output that verifies.  Needs no QEMU; the store commands need a real
# checkpoint and are t-lifecycle's.
. "$(dirname "$0")/lib.sh"

SHIM=$TOP/build/faultinject.so
if [ ! -f "$SHIM" ]; then
	skip "file-system faults" "build/faultinject.so not built (make helpers)"
	done_testing
fi
# An ASan binary wants its runtime first among the libraries; the shim is.
export ASAN_OPTIONS="$ASAN_OPTIONS:verify_asan_link_order=0"

raw=$TESTDIR/s.raw
zstd -qdc "$TOP/tests/data/streams/stream_72_pc-q35-7.2.bin.zst" >"$raw"
src=$TESTDIR/src.img
expect_code 0 "compact without faults" "$SNAPCTL" compact "$raw" "$src"
mkdir "$TESTDIR/out"
out=$(cd "$TESTDIR/out" && pwd -P)
cp "$src" "$out/keep.img"
keep_sum=$(cksum <"$out/keep.img")

# faulty SPEC LOG CMD...: run CMD with the shim, faults SPEC, calls under
# $out logged to LOG; stdout and stderr in $TESTDIR/stdout and stderr.
faulty() {
	local spec=$1 log=$2
	shift 2
	: >"$log"
	SNAPCTL_FAULT=$spec SNAPCTL_FAULT_PATH=$out SNAPCTL_FAULT_LOG=$log \
		LD_PRELOAD=$SHIM "$@" >"$TESTDIR/stdout" 2>"$TESTDIR/stderr" </dev/null
}

# whole NEW: 0 if $out/NEW is a whole output: an image that verifies, or a
# stream equal to the one made without faults.
whole() {
	case $1 in
	*.img) "$SNAPCTL" verify "$out/$1" >/dev/null 2>&1 ;;
	*) cmp -s "$out/$1" "$TESTDIR/$1.ref" ;;
	esac
}

# try WHAT NEW CMD...: CMD writes $out/NEW.  Count its calls in $out once
# without faults, then fail each of them in turn with each errno.
try() {
	local what=$1 new=$2 fn n count err want rc left why msg
	shift 2
	local log=$TESTDIR/calls.log
	faulty "" "$log" "$@"
	rc=$?
	if [ "$rc" -eq 0 ] && [ -s "$out/$new" ]; then
		ok "$what: runs under the shim"
	else
		not_ok "$what: runs under the shim" "exit $rc" "$(cat "$TESTDIR/stderr")"
		return
	fi
	mv "$out/$new" "$TESTDIR/$new.ref"
	cp "$log" "$TESTDIR/$what.calls"
	for fn in write pwrite fsync fdatasync rename renameat renameat2 open openat; do
		count=$(awk -v f="$fn" '$1 == f' "$TESTDIR/$what.calls" | wc -l)
		[ "$count" -gt 0 ] || continue
		note_calls+=" $what:$fn=$count"
		for ((n = 1; n <= count; n++)); do
			for err in ENOSPC EIO; do
				want=1
				msg='Input/output error'
				if [ $err = ENOSPC ]; then
					want=6
					msg='No space left on device'
				fi
				faulty "$fn:$n:$err" "$log" "$@"
				rc=$?
				local d="$what: $fn #$n fails with $err"
				if ! grep -q ' FAILED ' "$log"; then
					# Threads may order the calls differently:
					# this run made fewer.  It must succeed.
					if [ "$rc" -eq 0 ]; then
						ok "$d: not reached this time, exit 0"
					else
						not_ok "$d: not reached this time, exit 0" "exit $rc"
						_t_detail
					fi
					rm -f "$out/$new"
					continue
				fi
				if [ "$rc" -eq 0 ]; then
					# Worked around: the output must be whole.
					if whole "$new"; then
						ok "$d: worked around, exit 0, the output is whole"
					else
						not_ok "$d: worked around, exit 0, the output is whole"
					fi
					rm -f "$out/$new"
					continue
				fi
				if [ "$rc" -eq "$want" ] && [ "$(wc -l <"$TESTDIR/stderr")" -eq 1 ] &&
					grep -qE "^snapctl: .+: $msg\$" "$TESTDIR/stderr"; then
					ok "$d: exit $want, one line: $(cat "$TESTDIR/stderr")"
				else
					not_ok "$d: exit $want and one line ending '$msg'" "exit $rc"
					_t_detail
				fi
				# What is left: keep.img as it was, and nothing else,
				# also when the directory's open or fsync failed once
				# the rename was done (the new file is taken back).
				left=$(cd "$out" && ls -A | grep -vx keep.img | tr '\n' ' ')
				why=
				[ "$(cksum <"$out/keep.img")" = "$keep_sum" ] || why="keep.img changed"
				[ -z "$left" ] || why="$why left behind: $left"
				if [ -z "$why" ]; then
					ok "$d: nothing left behind, keep.img unchanged"
				else
					not_ok "$d: nothing left behind, keep.img unchanged" "$why"
				fi
				rm -f "$out/$new"
			done
		done
	done
}

note_calls=
try compact new.img "$SNAPCTL" compact "$raw" "$out/new.img"
try export new.raw "$SNAPCTL" export "$src" "$out/new.raw"
echo "# calls in the output directory:$note_calls"

# The counting run saw every kind of call the path needs.
for c in compact:open compact:pwrite compact:fsync compact:renameat2 \
	export:open export:write export:fsync export:renameat2; do
	case " $note_calls " in
	*" $c="*) ok "${c%%:*} calls ${c#*:} in its output directory" ;;
	*) not_ok "${c%%:*} calls ${c#*:} in its output directory" "saw:$note_calls" ;;
	esac
done

done_testing
