#!/usr/bin/env bash
# t-qmp.sh - "snapctl qmp" against real QEMU 7.2 and 10.0 (no guest:
# SeaBIOS idles): replies, key=value and JSON arguments, QMP errors, the
# exit codes of connection failures and usage errors, --json, the trace,
# TCP, and a monitor that is busy with another client.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/lib/bare.sh
. "$TOP/tests/lib/bare.sh"

# stderr_is DESC EXPECTED: stderr of the last expect_code is exactly that.
stderr_is() {
	expect_eq "$1" "$2" "$(cat "$TESTDIR/stderr")"
}

# within DESC MS MIN MAX: ok if MIN <= MS < MAX.
within() {
	if [ "$2" -ge "$3" ] && [ "$2" -lt "$4" ]; then
		ok "$1 ($2 ms)"
	else
		not_ok "$1" "took $2 ms, expected $3 to $4"
	fi
}

run_version() {
	local v=$1 s t0 ms port
	if ! bare_have "$v"; then
		skip "[$v] qmp tests" "QEMU $v not installed (tests/deps.sh)"
		return
	fi
	if ! qemu_bare "q$v" --qemu "$v" --arg -qmp --arg "tcp:127.0.0.1:0,server=on,wait=off"; then
		not_ok "[$v] start a bare QEMU"
		return
	fi
	s=$(bare_sock "q$v")

	expect_code 0 "[$v] qmp query-status" "$SNAPCTL" -s "$s" qmp query-status
	expect_match "[$v] prints the return value, pretty" '^  "status": "running",?$' "$TESTDIR/stdout"
	expect_eq "[$v] nothing on stderr" "" "$(cat "$TESTDIR/stderr")"

	# A reader that stops early (| head) is a quiet end: no "Broken pipe".
	"$SNAPCTL" -s "$s" qmp query-qmp-schema 2>"$TESTDIR/stderr" | head -n 1 >/dev/null
	expect_eq "[$v] qmp query-qmp-schema | head -1 exits 0" 0 "${PIPESTATUS[0]}"
	expect_eq "[$v] ... and prints nothing on stderr" "" "$(cat "$TESTDIR/stderr")"

	expect_code 0 "[$v] --json qmp query-status" "$SNAPCTL" --json -s "$s" qmp query-status
	expect_eq "[$v] --json prints one line" 1 "$(wc -l <"$TESTDIR/stdout")"
	expect_match "[$v] ... of compact JSON" '^\{.*"status":"running".*\}$' "$TESTDIR/stdout"

	expect_code 0 "[$v] human-monitor-command command-line=\"info version\"" \
		"$SNAPCTL" -s "$s" qmp human-monitor-command command-line="info version"
	expect_match "[$v] ... prints QEMU's version" "^\"${v//./\\.}\\.[0-9]+" "$TESTDIR/stdout"

	# Dotted keys nest, numbers are JSON: QEMU opens the nested node.
	SNAPCTL_TRACE=1 expect_code 0 "[$v] blockdev-add with dotted keys" \
		"$SNAPCTL" -s "$s" qmp blockdev-add driver=raw node-name=r0 \
		file.driver=null-co file.node-name=n0 file.size=1048576
	expect_match "[$v] ... sent as nested JSON, size a number" \
		'^-> \{"execute":"blockdev-add","arguments":\{"driver":"raw","node-name":"r0","file":\{"driver":"null-co","node-name":"n0","size":1048576\}\},"id":2\}$' \
		"$TESTDIR/stderr"
	expect_match "[$v] ... the trace shows the greeting" '^<- \{"QMP": ' "$TESTDIR/stderr"
	expect_match "[$v] ... and the capabilities negotiation" '^-> \{"execute":"qmp_capabilities","id":1\}$' "$TESTDIR/stderr"
	expect_code 0 "[$v] query-named-block-nodes" "$SNAPCTL" --json -s "$s" qmp query-named-block-nodes
	expect_match "[$v] ... shows the raw node" '"node-name":"r0"' "$TESTDIR/stdout"
	expect_match "[$v] ... over a null-co node" '"node-name":"n0","backing_file_depth":0,"drv":"null-co"' "$TESTDIR/stdout"
	expect_match "[$v] ... of 1 MiB" '"virtual-size":1048576,' "$TESTDIR/stdout"

	expect_code 0 "[$v] one JSON object as arguments" \
		"$SNAPCTL" -s "$s" qmp blockdev-del '{"node-name": "r0"}'
	expect_code 0 "[$v] query-named-block-nodes again" "$SNAPCTL" --json -s "$s" qmp query-named-block-nodes
	if grep -q '"node-name":"r0"' "$TESTDIR/stdout"; then
		not_ok "[$v] ... the node is gone"
	else
		ok "[$v] ... the node is gone"
	fi
	expect_code 0 "[$v] a JSON string value stays a string" \
		"$SNAPCTL" -s "$s" qmp blockdev-add driver=null-co node-name='"true"'
	expect_code 0 "[$v] ... (removed)" "$SNAPCTL" -s "$s" qmp blockdev-del node-name='"true"'

	expect_code 1 "[$v] an unknown command exits 1" "$SNAPCTL" -s "$s" qmp no-such-command
	stderr_is "[$v] ... with CLASS: desc in one line" \
		"snapctl: CommandNotFound: The command no-such-command has not been found"
	expect_code 1 "[$v] a wrongly typed argument exits 1" "$SNAPCTL" -s "$s" qmp blockdev-del node-name=42
	expect_match "[$v] ... GenericError from QEMU" "^snapctl: GenericError: .*'node-name'" "$TESTDIR/stderr"

	# Bad arguments are usage errors, found before connecting.
	expect_code 2 "[$v] qmp without a command" "$SNAPCTL" -s "$s" qmp
	expect_code 2 "[$v] a word that is not KEY=VALUE" "$SNAPCTL" -s "$s" qmp query-status verbose
	expect_match "[$v] ... says what it expected" "'verbose': expected KEY=VALUE or one JSON object" "$TESTDIR/stderr"
	expect_code 2 "[$v] conflicting keys a=1 a.b=2" "$SNAPCTL" -s "$s" qmp query-status a=1 a.b=2
	expect_match "[$v] ... names both" "arguments 'a' and 'a.b' conflict" "$TESTDIR/stderr"
	expect_code 2 "[$v] a key given twice" "$SNAPCTL" -s "$s" qmp query-status a=1 a=1
	expect_code 2 "[$v] an empty key part" "$SNAPCTL" -s "$s" qmp query-status a..b=1
	expect_code 2 "[$v] broken JSON arguments" "$SNAPCTL" -s "$s" qmp query-status '{"a":'
	expect_code 2 "[$v] a JSON object and more" "$SNAPCTL" -s "$s" qmp query-status '{}' a=1
	expect_code 2 "[$v] an unknown option" "$SNAPCTL" -s "$s" qmp -x query-status

	# TCP: QEMU picked the port; query-chardev tells it.
	"$SNAPCTL" --json -s "$s" qmp query-chardev >"$TESTDIR/chardev" 2>&1
	port=$(grep -o 'tcp:127\.0\.0\.1:[0-9]*' "$TESTDIR/chardev" | head -n1)
	if [ -n "$port" ]; then
		expect_code 0 "[$v] qmp over $port" "$SNAPCTL" -s "$port" qmp query-status
		expect_match "[$v] ... replies" '"status": "running"' "$TESTDIR/stdout"
	else
		not_ok "[$v] find the TCP monitor's port" "$(cat "$TESTDIR/chardev")"
	fi

	# QEMU greets one client at a time: a second one gets no greeting.
	rm -f "$TESTDIR/fifo"
	mkfifo "$TESTDIR/fifo"
	"$SNAPCTL" -s "$s" shell <"$TESTDIR/fifo" >"$TESTDIR/bg.out" 2>&1 &
	local bg=$!
	exec 3>"$TESTDIR/fifo"
	sleep 0.5
	t0=$(date +%s%N)
	expect_code 3 "[$v] a monitor busy with another client: exit 3" \
		"$SNAPCTL" -t 1 -s "$s" qmp query-status
	ms=$((($(date +%s%N) - t0) / 1000000))
	expect_match "[$v] ... says why it may be" "^snapctl: no QMP greeting from '.*' within 1 s \(is another client connected\?\)$" "$TESTDIR/stderr"
	within "[$v] ... after the -t timeout" "$ms" 0 3000
	exec 3>&-
	if wait "$bg"; then ok "[$v] ... and the first client ends normally"; else not_ok "[$v] ... and the first client ends normally" "$(cat "$TESTDIR/bg.out")"; fi

	bare_kill "q$v" KILL
	expect_code 3 "[$v] a socket QEMU left behind: exit 3" env SNAPCTL_CONNECT_TIMEOUT=0 "$SNAPCTL" -s "$s" qmp query-status
	expect_match "[$v] ... connection refused" "^snapctl: cannot connect to '.*': Connection refused$" "$TESTDIR/stderr"
}

t0=$(date +%s%N)
expect_code 3 "no such socket directory: exit 3" "$SNAPCTL" -s /nonexistent/sock qmp query-status
ms=$((($(date +%s%N) - t0) / 1000000))
stderr_is "... with exactly one line" "snapctl: cannot connect to '/nonexistent/sock': No such file or directory"
within "... at once" "$ms" 0 1000

t0=$(date +%s%N)
expect_code 3 "a socket that never appears: exit 3" env SNAPCTL_CONNECT_TIMEOUT=1 "$SNAPCTL" -s "$TESTDIR/none.qmp" qmp query-status
ms=$((($(date +%s%N) - t0) / 1000000))
within "... after SNAPCTL_CONNECT_TIMEOUT" "$ms" 900 3000
expect_code 2 "a bad SNAPCTL_CONNECT_TIMEOUT is a usage error" env SNAPCTL_CONNECT_TIMEOUT=soon "$SNAPCTL" -s "$TESTDIR/none.qmp" qmp query-status
expect_code 2 "bad arguments win over a missing socket" "$SNAPCTL" -s /nonexistent/sock qmp query-status a=1 a=2
: >"$TESTDIR/plain"
expect_code 3 "a file that is not a socket: exit 3" "$SNAPCTL" -s "$TESTDIR/plain" qmp query-status
stderr_is "... says so" "snapctl: cannot connect to '$TESTDIR/plain': not a socket"

run_version 7.2
run_version 10.0

done_testing
