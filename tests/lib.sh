# tests/lib.sh - the test library every tests/t-*.sh sources (git's t/,
# tmux's regress/).  It gives:
#   $TOP       the repository root
#   $SNAPCTL   the binary under test (absolute; set by tests/run.sh)
#   $TESTDIR   a fresh directory for this script, removed at exit
#   ok DESC / not_ok DESC [DETAIL...] / skip DESC REASON
#   check DESC CMD...            ok if CMD exits 0
#   expect_code N DESC CMD...    ok if CMD exits N; its stderr is kept in
#                                $TESTDIR/stderr and stdout in $TESTDIR/stdout
#   expect_eq DESC EXPECTED ACTUAL
#   expect_match DESC REGEX FILE  ok if a line of FILE matches REGEX
#   at_exit CMD                  run CMD when the script ends (LIFO)
#   done_testing                 print the plan "1..N" and the counts; exit
#                                status 1 if any failed.  Every script ends
#                                with it: tests/run.sh fails a test whose
#                                plan is missing or differs from what ran.
#   qemu_versions                the QEMU versions to run VMs on (below)
# Output is TAP: "ok N - desc", "not ok N - desc", the plan last.
set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SNAPCTL=${SNAPCTL:-$TOP/snapctl}
case $SNAPCTL in /*) ;; *) SNAPCTL=$TOP/$SNAPCTL ;; esac
export SNAPCTL TOP
export CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/snapctl
export ASAN_OPTIONS=${ASAN_OPTIONS:-exitcode=86:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:exitcode=87:print_stacktrace=1}
unset SNAPCTL_SOCKET SNAPCTL_DIR SNAPCTL_TRACE

TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/snapctl-test.XXXXXX")
_t_n=0
_t_pass=0
_t_fail=0
_t_skip=0
_t_exit_cmds=()

# qemu_versions: VERS if set, else "7.2 10.0"; but against the ASan+UBSan
# build one of them, each script its own (by a checksum of its name, so
# that the suite runs both under ASan): the plain pass covers both
# versions, and ASan checks snapctl's code, which is the same for either.
qemu_versions() {
	local sum
	if [ -n "${VERS:-}" ]; then
		echo "$VERS"
	elif [ "${SNAPCTL_VARIANT:-plain}" = asan ]; then
		sum=$(printf %s "$(basename "$0" .sh)" | cksum | cut -d' ' -f1)
		if [ $((sum % 2)) -eq 1 ]; then echo 10.0; else echo 7.2; fi
	else
		echo "7.2 10.0"
	fi
}

at_exit() {
	_t_exit_cmds=("$*" "${_t_exit_cmds[@]}")
}

_t_cleanup() {
	local c
	for c in "${_t_exit_cmds[@]}"; do
		eval "$c" >/dev/null 2>&1 || true
	done
	rm -rf "$TESTDIR"
}
trap _t_cleanup EXIT
trap 'exit 130' INT TERM

ok() {
	_t_n=$((_t_n + 1))
	_t_pass=$((_t_pass + 1))
	echo "ok $_t_n - $1"
}

not_ok() {
	local d=$1
	shift
	_t_n=$((_t_n + 1))
	_t_fail=$((_t_fail + 1))
	echo "not ok $_t_n - $d"
	local l
	for l in "$@"; do
		printf '#   %s\n' "$l"
	done
}

skip() {
	_t_n=$((_t_n + 1))
	_t_skip=$((_t_skip + 1))
	echo "ok $_t_n - $1 # SKIP $2"
}

# Show the tail of the last command's output in a failure report.  A
# command that failed without a word may have had nowhere to write it: a
# full disk loses both files, and snapctl then exits 1 (it could not
# write stdout); a test directory removed under the test fails the
# redirection itself (exit 1, the command never ran).  Say which.
_t_detail() {
	[ -s "$TESTDIR/stderr" ] && sed 's/^/#   stderr: /' "$TESTDIR/stderr" | tail -n 8
	[ -s "$TESTDIR/stdout" ] && sed 's/^/#   stdout: /' "$TESTDIR/stdout" | tail -n 4
	if [ ! -d "$TESTDIR" ]; then
		printf '#   no output: the test directory %s is gone\n' "$TESTDIR"
	elif [ ! -s "$TESTDIR/stderr" ] && [ ! -s "$TESTDIR/stdout" ]; then
		printf '#   no output; free in %s: %s\n' "$TESTDIR" \
			"$(df -h --output=avail "$TESTDIR" 2>/dev/null | tail -n 1 | tr -d ' ')"
	fi
	return 0
}

check() {
	local d=$1
	shift
	if "$@" >"$TESTDIR/stdout" 2>"$TESTDIR/stderr"; then
		ok "$d"
	else
		not_ok "$d" "command failed with $?: $*"
		_t_detail
	fi
}

expect_code() {
	local want=$1 d=$2 got
	shift 2
	"$@" >"$TESTDIR/stdout" 2>"$TESTDIR/stderr" </dev/null
	got=$?
	if [ "$got" = "$want" ]; then
		ok "$d"
	else
		not_ok "$d" "expected exit $want, got $got: $*"
		_t_detail
	fi
}

expect_eq() {
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		not_ok "$1" "expected: $2" "actual:   $3"
	fi
}

expect_match() {
	if grep -Eq -- "$2" "$3" 2>/dev/null; then
		ok "$1"
	else
		not_ok "$1" "no line matches /$2/ in $3:"
		sed 's/^/#   | /' "$3" 2>/dev/null | tail -n 6
	fi
}

done_testing() {
	echo "1..$_t_n"
	echo "# $_t_pass passed, $_t_fail failed, $_t_skip skipped"
	[ "$_t_fail" -eq 0 ]
	exit $?
}

if [ -f "$TOP/tests/lib/vm.sh" ]; then
	# shellcheck source=lib/vm.sh
	. "$TOP/tests/lib/vm.sh"
fi
