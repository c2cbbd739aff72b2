# shellcheck shell=bash
# tests/lib/bare.sh - a QEMU with no guest: SeaBIOS finds nothing to boot
# and idles, which is all a QMP test needs (cheap, starts in well under a
# second).  Source it after tests/lib.sh (it uses $TESTDIR, $CACHE, at_exit).
#
#   bare_have VERSION        0 if that QEMU (7.2 or 10.0) is installed
#   qemu_bare NAME [--qemu 7.2|10.0] [--arg QEMU-ARG]...
#	Start QEMU daemonized with its QMP monitor on $TESTDIR/NAME.qmp
#	(server=on,wait=off), pid in NAME.bare-pid, output in NAME.bare-log;
#	kill it at exit (at_exit); return once the socket exists.  1 on
#	failure, with QEMU's output on stderr.
#   bare_sock NAME           print $TESTDIR/NAME.qmp
#   bare_kill NAME [SIGNAL]  SIGNAL (default TERM; KILL after 5 s) the QEMU of
#                            NAME, by pid, and wait until it is gone.  QEMU
#                            removes its socket on TERM, not on KILL
#   bare_alive NAME          0 if it is running
# 7.2 is the system's qemu-system-x86_64; 10.0 the one tests/deps.sh
# unpacked into $CACHE/qemu-10 (run with its own QEMU_MODULE_DIR).

BARE_QEMU10=$CACHE/qemu-10

bare_have() {
	case $1 in
	7.2) command -v qemu-system-x86_64 >/dev/null ;;
	10.0) [ -f "$BARE_QEMU10/.snapctl-complete" ] &&
		[ -x "$BARE_QEMU10/usr/bin/qemu-system-x86_64" ] ;;
	*) return 1 ;;
	esac
}

bare_sock() { echo "$TESTDIR/$1.qmp"; }

bare_alive() {
	local pid
	pid=$(cat "$TESTDIR/$1.bare-pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

bare_kill() {
	local pid n=0
	pid=$(cat "$TESTDIR/$1.bare-pid" 2>/dev/null) || return 0
	[ -n "$pid" ] || return 0
	kill -"${2:-TERM}" "$pid" 2>/dev/null || return 0
	while kill -0 "$pid" 2>/dev/null; do
		n=$((n + 1))
		if [ $n -eq 50 ]; then
			kill -KILL "$pid" 2>/dev/null
		elif [ $n -gt 100 ]; then
			break
		fi
		sleep 0.1
	done
	rm -f "$TESTDIR/$1.bare-pid"
	return 0
}

qemu_bare() {
	local name=$1 ver=7.2 extra=() bin env=() n=0
	shift
	while [ $# -gt 0 ]; do
		case $1 in
		--qemu) ver=$2; shift ;;
		--arg) extra+=("$2"); shift ;;
		*) echo "qemu_bare: unknown option $1" >&2; return 1 ;;
		esac
		shift
	done
	case $ver in
	7.2) bin=qemu-system-x86_64 ;;
	10.0) bin=$BARE_QEMU10/usr/bin/qemu-system-x86_64
	      env=(QEMU_MODULE_DIR="$BARE_QEMU10/usr/lib/x86_64-linux-gnu/qemu") ;;
	*) echo "qemu_bare: unknown QEMU version '$ver'" >&2; return 1 ;;
	esac
	bare_have "$ver" || { echo "qemu_bare: QEMU $ver is not installed" >&2; return 1; }
	rm -f "$TESTDIR/$name".{qmp,bare-pid,bare-log}
	at_exit "bare_kill $name"
	# -daemonize: the parent returns once QEMU is set up (socket bound).
	if ! env "${env[@]}" "$bin" -machine q35 -accel tcg \
		-nodefaults -no-user-config -display none -m 64 \
		-qmp "unix:$TESTDIR/$name.qmp,server=on,wait=off" \
		-pidfile "$TESTDIR/$name.bare-pid" -daemonize "${extra[@]}" \
		>"$TESTDIR/$name.bare-log" 2>&1 </dev/null; then
		echo "qemu_bare: QEMU $ver for $name failed:" >&2
		sed 's/^/  /' "$TESTDIR/$name.bare-log" >&2
		return 1
	fi
	while [ ! -S "$TESTDIR/$name.qmp" ] || [ ! -s "$TESTDIR/$name.bare-pid" ]; do
		n=$((n + 1))
		if [ $n -gt 100 ]; then
			echo "qemu_bare: no QMP socket for $name after 10 s" >&2
			return 1
		fi
		sleep 0.1
	done
	return 0
}
