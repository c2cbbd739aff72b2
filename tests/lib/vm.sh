# tests/lib/vm.sh - start, watch and stop real QEMU VMs in tests (bash;
# source it, tests/lib.sh does).  Every VM is a q35 machine under TCG booting
# the test guest of tests/guest/ (kernel + initramfs running churn).
#
# Files of VM NAME, all in $VM_DIR ($TESTDIR when set, else a mktemp -d):
#   NAME.qmp      QMP socket for snapctl          (-qmp unix:...,server=on,wait=off)
#   NAME.qmp2     QMP socket of vm_qmp_raw
#   NAME.qmp3     QMP socket of vm_watch_events
#   NAME.qga      guest agent chardev socket (--agent)
#   NAME.serial   the guest's serial console (kernel console=ttyS0, churn)
#   NAME.log      QEMU's stdout and stderr
#   NAME.pid      QEMU's pid;  NAME.args  its arguments, one per line
# Disks: the Nth --disk (from 0) is protocol node "diskN-file", format node
# "diskN" and device id "vdN" (virtio-blk-pci on pcie.0 at slot 0x10+N);
# the guest sees them as /dev/vda, /dev/vdb, ... in that order.  The agent
# is virtio-serial-pci "vser0" (slot 0x8) with port "qga0port"; the guest
# starts qemu-ga on it.
#
# Environment: SNAPCTL_TEST_ACCEL (default tcg; kvm on real hardware),
# SNAPCTL_TEST_QEMU (default QEMU version, 7.2), SNAPCTL_TEST_BOOT_TIMEOUT
# (s, default 180), SNAPCTL_TEST_KEEP=1 (copy VM files to a kept directory
# in vm_stop_all and print where).
#
# Functions (return 0 on success; messages on stderr):
#   vm_start NAME [--qemu 7.2|10.0] [--mem MIB] [--cpus N] [--machine TYPE]
#            [--disk FILE[,format=qcow2|raw]]... [--agent] [--incoming]
#            [--append "KERNEL ARGS"] [--no-kernel] [--arg QEMU-ARG]...
#	Starts QEMU in the background and returns once its QMP answers.
#	--mem default 256; --machine default $VM_MACHINE_72 (pc-q35-7.2) for
#	7.2 and $VM_MACHINE_100 (pc-q35-10.0) for 10.0; --disk format default:
#	qcow2 if FILE ends in .qcow2, else raw; --incoming adds
#	"-incoming defer -S" (same devices, to load a checkpoint into);
#	--append adds kernel arguments, e.g. "churn.mb=64 churn.disk=/dev/vda";
#	--no-kernel boots nothing (firmware only: cheap, for QMP-only tests).
#   vm_pid NAME            print QEMU's pid
#   vm_alive NAME          0 if QEMU is running
#   vm_path NAME KIND      print $VM_DIR/NAME.KIND (qmp, qmp2, qga, serial...)
#   vm_machine NAME        print the machine type NAME runs
#   vm_serial_lines NAME   print the number of complete lines in the serial log
#   vm_wait_serial NAME REGEX [TIMEOUT [FROM]]
#	Wait (default $VM_BOOT_TIMEOUT s) for a complete serial line after
#	line FROM (default 0) matching the extended REGEX; print it (without
#	\r).  1 on timeout, 2 if QEMU exited; then the log tail is on stderr.
#   vm_wait_ready NAME [TIMEOUT]  wait for "CHURN READY"; print the line
#   vm_qmp_raw NAME JSON...      send commands on NAME.qmp2, print replies
#	(events skipped); 1 if a reply is an error, 2 on failure.  Uses
#	tests/helper/qmp-raw.c, not snapctl.
#   vm_qga NAME JSON...          the same on the agent socket, after a
#	guest-sync-delimited handshake (--agent).
#   vm_wait_agent NAME [TIMEOUT] wait until the agent answers guest-ping
#   vm_watch_events NAME FILE    log NAME's events (one JSON line each) to
#	FILE from now on, in the background, via NAME.qmp3
#   vm_wait_event FILE REGEX [TIMEOUT]  wait for an event line in FILE
#   vm_save_raw NAME FILE [TIMEOUT [BANDWIDTH]]
#	QEMU's own live migration of NAME into FILE (its raw stream: a
#	baseline to compare snapctl with), through a unix socket and the
#	helper; max-bandwidth is BANDWIDTH bytes/s (default 8 GiB/s) for the
#	run, 128 MiB/s (QEMU's default) after.  NAME ends in postmigrate
#	(vm_qmp_raw NAME '{"execute":"cont"}' resumes it).  Default 120 s.
#   vm_load_raw NAME FILE [TIMEOUT]
#	Load such a FILE into NAME (started with --incoming, same options);
#	NAME is then paused: send cont.  1 if the load fails (QEMU exits).
#   vm_kill NAME [SIGNAL]  send SIGNAL (default KILL); for TERM, INT and
#	KILL also wait until QEMU is gone (KILL after 10 s)
#   vm_stop NAME           TERM, wait, KILL if needed
#   vm_stop_all            stop every VM and watcher this script started,
#	then remove $VM_DIR if vm.sh created it.  tests/lib.sh runs it at
#	exit (at_exit); without lib.sh: trap vm_stop_all EXIT
#   vm_test_pids           print the pids of processes whose command line
#	mentions $VM_DIR (a test asserts it prints nothing at the end)
#   vm_have_qemu VERSION   0 if that QEMU is installed (tests/deps.sh)
#   vm_qemu VERSION ARGS...  run that QEMU binary (right environment)
#   vm_qemu_img VERSION ARGS...  run that version's qemu-img
#   vm_guest               build or find the guest (tests/guest/build.sh);
#	sets GUEST_VMLINUZ, GUEST_INITRAMFS
#   vm_dump NAME           print the tails of NAME's logs as "# " lines
#
# Exported: VM_DIR, VM_MACHINE_72, VM_MACHINE_100, QMP_RAW (the helper).

: "${TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/snapctl}"
VM_MACHINE_72=pc-q35-7.2
VM_MACHINE_100=pc-q35-10.0
VM_ACCEL=${SNAPCTL_TEST_ACCEL:-tcg}
VM_BOOT_TIMEOUT=${SNAPCTL_TEST_BOOT_TIMEOUT:-180}
VM_QEMU10_DIR=$CACHE/qemu-10
export VM_MACHINE_72 VM_MACHINE_100 CACHE

if [ -n "${TESTDIR:-}" ] && [ -d "$TESTDIR" ]; then
	VM_DIR=$TESTDIR
	_vm_own_dir=0
else
	VM_DIR=$(mktemp -d "${TMPDIR:-/tmp}/snapctl-vm.XXXXXX")
	_vm_own_dir=1
fi
export VM_DIR
_vm_names=()

# ---- binaries -----------------------------------------------------------

vm_have_qemu() {
	case $1 in
	7.2) command -v qemu-system-x86_64 >/dev/null ;;
	10.0) [ -f "$VM_QEMU10_DIR/.snapctl-complete" ] &&
		[ -x "$VM_QEMU10_DIR/usr/bin/qemu-system-x86_64" ] ;;
	*) return 1 ;;
	esac
}

_vm_bin() {	# _vm_bin VERSION PROGRAM: "env ... /path" words for that QEMU
	case $1 in
	7.2) echo "/usr/bin/$2" ;;
	10.0) echo "env QEMU_MODULE_DIR=$VM_QEMU10_DIR/usr/lib/x86_64-linux-gnu/qemu $VM_QEMU10_DIR/usr/bin/$2" ;;
	*) echo "vm.sh: unknown QEMU version '$1' (7.2 or 10.0)" >&2; return 1 ;;
	esac
}

vm_qemu() {
	local v=$1 b
	shift
	b=$(_vm_bin "$v" qemu-system-x86_64) || return 1
	# shellcheck disable=SC2086
	$b "$@"
}

vm_qemu_img() {
	local v=$1 b
	shift
	b=$(_vm_bin "$v" qemu-img) || return 1
	# shellcheck disable=SC2086
	$b "$@"
}

# The raw QMP helper, compiled once per source version into the cache.
_vm_helper() {
	[ -n "${QMP_RAW:-}" ] && [ -x "$QMP_RAW" ] && return 0
	local src=$TOP/tests/helper/qmp-raw.c key bin tmp
	key=$({ cat "$src"; cc --version 2>/dev/null | head -n1; } | sha256sum | cut -c1-12)
	bin=$CACHE/bin/qmp-raw-$key
	if [ ! -x "$bin" ]; then
		mkdir -p "$CACHE/bin"
		tmp=$bin.$$
		cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$tmp" "$src" ||
			{ echo "vm.sh: cannot build $src" >&2; rm -f "$tmp"; return 1; }
		mv "$tmp" "$bin"
	fi
	QMP_RAW=$bin
	export QMP_RAW
}

vm_guest() {
	[ -n "${GUEST_VMLINUZ:-}" ] && [ -f "$GUEST_VMLINUZ" ] && return 0
	local out
	out=$(bash "$TOP/tests/guest/build.sh") || { echo "vm.sh: guest build failed" >&2; return 1; }
	eval "$out"
	export GUEST_VMLINUZ GUEST_INITRAMFS GUEST_KVER
}

# ---- paths and state ----------------------------------------------------

vm_path() { echo "$VM_DIR/$1.$2"; }
vm_pid() { cat "$VM_DIR/$1.pid" 2>/dev/null; }
vm_machine() { cat "$VM_DIR/$1.machine" 2>/dev/null; }

_vm_pid_alive() {	# running and not a zombie
	local st
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

vm_alive() { _vm_pid_alive "$(vm_pid "$1")"; }

_vm_json_str() {	# JSON string literal of $1
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

# ---- start --------------------------------------------------------------

vm_start() {
	local name=$1
	shift
	local ver=${SNAPCTL_TEST_QEMU:-7.2} mem=256 cpus=1 machine='' agent=0
	local incoming=0 append='' kernel=1 disks=() extra=()
	while [ $# -gt 0 ]; do
		case $1 in
		--qemu) ver=$2; shift ;;
		--mem) mem=$2; shift ;;
		--cpus) cpus=$2; shift ;;
		--machine) machine=$2; shift ;;
		--disk) disks+=("$2"); shift ;;
		--agent) agent=1 ;;
		--incoming) incoming=1 ;;
		--append) append="$append $2"; shift ;;
		--no-kernel) kernel=0 ;;
		--arg) extra+=("$2"); shift ;;
		*) echo "vm_start: unknown option $1" >&2; return 1 ;;
		esac
		shift
	done
	case $name in '' | *[!A-Za-z0-9_-]*) echo "vm_start: bad name '$name'" >&2; return 1 ;; esac
	if vm_alive "$name"; then
		echo "vm_start: $name is already running" >&2
		return 1
	fi
	vm_have_qemu "$ver" || { echo "vm_start: QEMU $ver is not installed (run tests/deps.sh)" >&2; return 1; }
	if [ -z "$machine" ]; then
		case $ver in 7.2) machine=$VM_MACHINE_72 ;; 10.0) machine=$VM_MACHINE_100 ;; esac
	fi
	_vm_helper || return 1
	local d=$VM_DIR
	if [ ${#d} -gt 90 ]; then
		echo "vm_start: VM_DIR '$d' is too long for unix socket paths" >&2
		return 1
	fi
	rm -f "$d/$name".{qmp,qmp2,qmp3,qga,serial,log,pid}

	local args=(-name "$name" -machine "$machine" -accel "$VM_ACCEL"
		-m "$mem" -smp "$cpus" -nodefaults -no-user-config -display none
		-no-reboot -serial "file:$d/$name.serial"
		-qmp "unix:$d/$name.qmp,server=on,wait=off"
		-qmp "unix:$d/$name.qmp2,server=on,wait=off"
		-qmp "unix:$d/$name.qmp3,server=on,wait=off"
		-pidfile "$d/$name.pid")
	if [ $kernel -eq 1 ]; then
		vm_guest || return 1
		args+=(-kernel "$GUEST_VMLINUZ" -initrd "$GUEST_INITRAMFS"
			-append "console=ttyS0 panic=-1 mitigations=off${append}")
	fi
	local i=0 spec file fmt opt opts
	for spec in "${disks[@]}"; do
		file=${spec%%,*}
		fmt=
		if [ "$file" != "$spec" ]; then
			IFS=, read -r -a opts <<<"${spec#*,}"
			for opt in "${opts[@]}"; do
				case $opt in format=*) fmt=${opt#format=} ;; *) echo "vm_start: unknown disk option $opt" >&2; return 1 ;; esac
			done
		fi
		[ -n "$fmt" ] || case $file in *.qcow2) fmt=qcow2 ;; *) fmt=raw ;; esac
		[ -e "$file" ] || { echo "vm_start: no disk image $file" >&2; return 1; }
		case $file in /*) ;; *) file=$PWD/$file ;; esac
		args+=(-blockdev "{\"driver\":\"file\",\"filename\":$(_vm_json_str "$file"),\"node-name\":\"disk$i-file\"}"
			-blockdev "{\"driver\":\"$fmt\",\"file\":\"disk$i-file\",\"node-name\":\"disk$i\"}"
			-device "virtio-blk-pci,drive=disk$i,id=vd$i,bus=pcie.0,addr=$(printf '0x%x' $((0x10 + i)))")
		i=$((i + 1))
	done
	if [ $agent -eq 1 ]; then
		args+=(-chardev "socket,path=$d/$name.qga,server=on,wait=off,id=qga0"
			-device "virtio-serial-pci,id=vser0,bus=pcie.0,addr=0x8"
			-device "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0,id=qga0port")
	fi
	[ $incoming -eq 1 ] && args+=(-incoming defer -S)
	args+=("${extra[@]}")

	local bin
	bin=$(_vm_bin "$ver" qemu-system-x86_64) || return 1
	printf '%s\n' "$bin" "${args[@]}" >"$d/$name.args"
	echo "$ver" >"$d/$name.qemu"
	echo "$machine" >"$d/$name.machine"
	_vm_names+=("$name")
	# A subshell forks QEMU so that it is no job of the test's shell (no
	# "Killed" notices); it stays in the test's process group, so the
	# runner's timeout reaches it too.
	# shellcheck disable=SC2086
	( $bin "${args[@]}" >"$d/$name.log" 2>&1 </dev/null &
	  echo $! >"$d/$name.bgpid" )

	# Ready when QMP answers on the third monitor.
	local t=0 bgpid
	bgpid=$(cat "$d/$name.bgpid")
	while :; do
		if ! _vm_pid_alive "$bgpid"; then
			echo "vm_start: QEMU $ver for $name exited:" >&2
			sed 's/^/  /' "$d/$name.log" >&2
			return 1
		fi
		if [ -S "$d/$name.qmp3" ] && [ -s "$d/$name.pid" ] &&
			"$QMP_RAW" -t 5 "$d/$name.qmp3" '{"execute":"query-status"}' >/dev/null 2>&1; then
			break
		fi
		t=$((t + 1))
		if [ $t -gt 300 ]; then
			echo "vm_start: QEMU for $name did not answer QMP within 30 s" >&2
			vm_kill "$name" KILL
			return 1
		fi
		sleep 0.1
	done
	return 0
}

# ---- serial console -----------------------------------------------------

vm_serial_lines() {
	local n
	n=$(wc -l <"$VM_DIR/$1.serial" 2>/dev/null) || n=0
	echo "${n:-0}"
}

vm_wait_serial() {
	local name=$1 re=$2 tmo=${3:-$VM_BOOT_TIMEOUT} from=${4:-0}
	local f=$VM_DIR/$name.serial end line
	end=$(($(date +%s) + tmo))
	while :; do
		local total
		total=$(vm_serial_lines "$name")
		if [ "$total" -gt "$from" ]; then
			line=$(sed -n "$((from + 1)),${total}p" "$f" | tr -d '\r' | grep -m1 -E -- "$re")
			if [ -n "$line" ]; then
				printf '%s\n' "$line"
				return 0
			fi
			from=$total
		fi
		if ! vm_alive "$name"; then
			# One more look: QEMU may have printed and exited.
			total=$(vm_serial_lines "$name")
			line=$(sed -n "$((from + 1)),${total}p" "$f" | tr -d '\r' | grep -m1 -E -- "$re")
			[ -n "$line" ] && { printf '%s\n' "$line"; return 0; }
			echo "vm_wait_serial: $name: QEMU exited before /$re/" >&2
			vm_dump "$name" >&2
			return 2
		fi
		if [ "$(date +%s)" -ge "$end" ]; then
			echo "vm_wait_serial: $name: no line matching /$re/ within $tmo s" >&2
			vm_dump "$name" >&2
			return 1
		fi
		sleep 0.2
	done
}

vm_wait_ready() {
	vm_wait_serial "$1" '^CHURN READY' "${2:-$VM_BOOT_TIMEOUT}"
}

vm_dump() {
	local name=$1
	echo "# --- $name: serial (last 15 lines) ---"
	tail -n 15 "$VM_DIR/$name.serial" 2>/dev/null | tr -d '\r' | sed 's/^/#   /'
	if [ -s "$VM_DIR/$name.log" ]; then
		echo "# --- $name: QEMU output (last 10 lines) ---"
		tail -n 10 "$VM_DIR/$name.log" | sed 's/^/#   /'
	fi
}

# ---- QMP and agent ------------------------------------------------------

vm_qmp_raw() {
	local name=$1
	shift
	_vm_helper || return 2
	"$QMP_RAW" -t "${VM_QMP_TIMEOUT:-30}" "$VM_DIR/$name.qmp2" "$@"
}

vm_qga() {
	local name=$1
	shift
	_vm_helper || return 2
	"$QMP_RAW" -g -t "${VM_QGA_TIMEOUT:-20}" "$VM_DIR/$name.qga" "$@"
}

vm_wait_agent() {
	local name=$1 tmo=${2:-60} end
	end=$(($(date +%s) + tmo))
	_vm_helper || return 2
	while :; do
		"$QMP_RAW" -g -t 3 "$VM_DIR/$name.qga" '{"execute":"guest-ping"}' >/dev/null 2>&1 && return 0
		if ! vm_alive "$name" || [ "$(date +%s)" -ge "$end" ]; then
			echo "vm_wait_agent: $name: no answer to guest-ping within $tmo s" >&2
			return 1
		fi
		sleep 0.5
	done
}

vm_watch_events() {
	local name=$1 file=$2 t=0
	_vm_helper || return 1
	: >"$file"
	# The query-status reply, first in FILE, says the watcher is listening.
	( "$QMP_RAW" -e -t 0 "$VM_DIR/$name.qmp3" '{"execute":"query-status"}' >>"$file" 2>&1 </dev/null &
	  echo $! >>"$VM_DIR/.watchers" )
	while ! grep -q '"return"' "$file" 2>/dev/null; do
		t=$((t + 1))
		if [ $t -gt 100 ]; then
			echo "vm_watch_events: $name: watcher did not connect" >&2
			return 1
		fi
		sleep 0.1
	done
}

vm_wait_event() {
	local file=$1 re=$2 tmo=${3:-60} end line
	end=$(($(date +%s) + tmo))
	while :; do
		line=$(grep -m1 -E -- "$re" "$file" 2>/dev/null)
		[ -n "$line" ] && { printf '%s\n' "$line"; return 0; }
		if [ "$(date +%s)" -ge "$end" ]; then
			echo "vm_wait_event: no event matching /$re/ within $tmo s in $file" >&2
			return 1
		fi
		sleep 0.1
	done
}

# ---- QEMU's own raw stream (baseline) ------------------------------------

_vm_field() {	# _vm_field JSON KEY: the first "KEY": "value" string
	sed -n "s/.*\"$2\": \"\([^\"]*\)\".*/\1/p" <<<"$1" | head -n1
}

vm_save_raw() {
	local name=$1 file=$2 tmo=${3:-120} bw=${4:-8589934592} sock=$VM_DIR/$1.mig-out end st out
	_vm_helper || return 1
	rm -f "$sock"
	( "$QMP_RAW" -L -t "$tmo" "$sock" "$file" >"$VM_DIR/$name.mig-out.log" 2>&1 </dev/null &
	  echo $! >"$VM_DIR/$name.mig-out.pid"; echo $! >>"$VM_DIR/.watchers" )
	end=$(($(date +%s) + 10))
	while [ ! -S "$sock" ]; do
		[ "$(date +%s)" -lt "$end" ] || { echo "vm_save_raw: listener did not start" >&2; return 1; }
		sleep 0.05
	done
	vm_qmp_raw "$name" '{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":'"$bw"'}}' >/dev/null ||
		return 1
	out=$(vm_qmp_raw "$name" "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"unix:$sock\"}}") ||
		{ echo "vm_save_raw: migrate: $out" >&2; return 1; }
	end=$(($(date +%s) + tmo))
	while :; do
		out=$(vm_qmp_raw "$name" '{"execute":"query-migrate"}') || return 1
		st=$(_vm_field "$out" status)
		case $st in
		completed) break ;;
		failed | cancelled)
			echo "vm_save_raw: migration $st: $(_vm_field "$out" error-desc)" >&2
			return 1 ;;
		esac
		if [ "$(date +%s)" -ge "$end" ]; then
			echo "vm_save_raw: no convergence within $tmo s; cancelling" >&2
			vm_qmp_raw "$name" '{"execute":"migrate_cancel"}' >/dev/null
			return 1
		fi
		sleep 0.2
	done
	# The listener ends at EOF, once QEMU closed the stream.
	local lp
	lp=$(cat "$VM_DIR/$name.mig-out.pid")
	if ! _vm_wait_gone "$lp" 300; then
		echo "vm_save_raw: the stream did not end" >&2
		return 1
	fi
	vm_qmp_raw "$name" '{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":134217728}}' >/dev/null
	[ -s "$file" ]
}

vm_load_raw() {
	local name=$1 file=$2 tmo=${3:-120} sock=$VM_DIR/$1.mig-in end out st sp
	_vm_helper || return 1
	rm -f "$sock"
	out=$(vm_qmp_raw "$name" "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"unix:$sock\"}}") ||
		{ echo "vm_load_raw: migrate-incoming: $out" >&2; return 1; }
	( "$QMP_RAW" -C -t "$tmo" "$sock" "$file" >"$VM_DIR/$name.mig-in.log" 2>&1 </dev/null &
	  echo $! >"$VM_DIR/$name.mig-in.pid"; echo $! >>"$VM_DIR/.watchers" )
	end=$(($(date +%s) + tmo))
	while :; do
		if ! vm_alive "$name"; then
			echo "vm_load_raw: QEMU exited (load failed):" >&2
			tail -n 5 "$VM_DIR/$name.log" >&2
			return 1
		fi
		out=$(vm_qmp_raw "$name" '{"execute":"query-status"}' 2>/dev/null)
		st=$(_vm_field "$out" status)
		case $st in
		paused | running) break ;;
		esac
		if [ "$(date +%s)" -ge "$end" ]; then
			echo "vm_load_raw: still '$st' after $tmo s" >&2
			return 1
		fi
		sleep 0.2
	done
	sp=$(cat "$VM_DIR/$name.mig-in.pid")
	_vm_wait_gone "$sp" 100
	return 0
}

# ---- stopping -----------------------------------------------------------

_vm_wait_gone() {	# _vm_wait_gone PID TENTHS
	local pid=$1 n=0
	while _vm_pid_alive "$pid"; do
		n=$((n + 1))
		[ $n -ge "$2" ] && return 1
		sleep 0.1
	done
	return 0
}

vm_kill() {
	local name=$1 sig=${2:-KILL} pid
	pid=$(vm_pid "$name")
	[ -n "$pid" ] || pid=$(cat "$VM_DIR/$name.bgpid" 2>/dev/null)
	[ -n "$pid" ] && _vm_pid_alive "$pid" || return 0
	kill -s "$sig" "$pid" 2>/dev/null
	case $sig in
	TERM | SIGTERM | INT | SIGINT | KILL | SIGKILL | 9 | 15)
		if ! _vm_wait_gone "$pid" 100; then
			kill -s KILL "$pid" 2>/dev/null
			_vm_wait_gone "$pid" 50
		fi
		;;
	esac
	return 0
}

vm_stop() { vm_kill "$1" TERM; }

vm_test_pids() {
	local p cmd
	for p in /proc/[0-9]*; do
		case ${p#/proc/} in "$$" | "$BASHPID") continue ;; esac
		cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
		[[ $cmd == *"$VM_DIR/"* ]] || continue
		_vm_pid_alive "${p#/proc/}" && echo "${p#/proc/}"
	done
	return 0
}

vm_stop_all() {
	local n pid f
	# Watchers first (they would only see the VMs go away).
	if [ -f "$VM_DIR/.watchers" ]; then
		while read -r pid; do
			_vm_pid_alive "$pid" && kill "$pid" 2>/dev/null
		done <"$VM_DIR/.watchers"
		rm -f "$VM_DIR/.watchers"
	fi
	for f in "$VM_DIR"/*.bgpid; do
		[ -e "$f" ] || continue
		n=$(basename "$f" .bgpid)
		vm_kill "$n" TERM
	done
	# Anything else still holding our files (a VM whose pid file is gone).
	for pid in $(vm_test_pids); do
		kill -s KILL "$pid" 2>/dev/null
		_vm_wait_gone "$pid" 50
	done
	if [ "${SNAPCTL_TEST_KEEP:-0}" = 1 ] && [ -d "$VM_DIR" ]; then
		local keep
		keep=$(mktemp -d "${TMPDIR:-/tmp}/snapctl-kept.XXXXXX")
		cp -a "$VM_DIR"/*.serial "$VM_DIR"/*.log "$VM_DIR"/*.args "$keep"/ 2>/dev/null
		echo "# vm.sh: VM logs kept in $keep" >&2
	fi
	if [ "$_vm_own_dir" = 1 ]; then
		rm -rf "$VM_DIR"
	else
		for n in "${_vm_names[@]}"; do
			rm -f "$VM_DIR/$n".{qmp,qmp2,qmp3,qga,pid,bgpid}
		done
	fi
	return 0
}

# Stop everything at exit: through tests/lib.sh's at_exit when it is there.
if declare -F at_exit >/dev/null; then
	at_exit vm_stop_all
fi
