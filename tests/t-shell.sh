#!/usr/bin/env bash
# t-shell.sh - "snapctl shell" against real QEMU 7.2 and 10.0 (no guest):
# line mode on a pipe (replies, failures, comments, raw JSON, help, QEMU
# going away) and, in a real terminal through tmux, completion from the
# schema, help, events, history and a clean exit (no leaks under ASan).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/lib/bare.sh
. "$TOP/tests/lib/bare.sh"

# shell_in DESC CODE SOCKET INPUT [OPTIONS...]: INPUT on stdin.
shell_in() {
	local d=$1 want=$2 s=$3 in=$4 got
	shift 4
	printf '%s' "$in" | "$SNAPCTL" "$@" -s "$s" shell >"$TESTDIR/stdout" 2>"$TESTDIR/stderr"
	got=$?
	if [ "$got" = "$want" ]; then
		ok "$d"
	else
		not_ok "$d" "expected exit $want, got $got"
		_t_detail
	fi
}

lines() { wc -l <"$1" | tr -d ' '; }

# ---- line mode -------------------------------------------------------------

pipe_tests() {
	local v=$1 s=$2

	shell_in "[$v] query-name and query-version on a pipe" 0 "$s" $'query-name\nquery-version\n'
	expect_match "[$v] ... the first reply" '^\{\}$' "$TESTDIR/stdout"
	expect_match "[$v] ... the second, pretty" "^    \"major\": ${v%%.*},?\$" "$TESTDIR/stdout"
	expect_eq "[$v] ... nothing on stderr" "" "$(cat "$TESTDIR/stderr")"

	shell_in "[$v] --json: one line per reply" 0 "$s" $'query-name\nquery-version\n' --json
	expect_eq "[$v] ... two lines" 2 "$(lines "$TESTDIR/stdout")"
	expect_match "[$v] ... compact" '^\{"qemu":\{.*\}$' "$TESTDIR/stdout"

	shell_in "[$v] a failing line makes the shell exit 1" 1 "$s" $'query-name\nno-such-command\nquery-status\n'
	expect_match "[$v] ... the error as CLASS: desc" '^snapctl: CommandNotFound: The command no-such-command has not been found$' "$TESTDIR/stderr"
	expect_match "[$v] ... and a summary" '^snapctl: 1 of 3 commands failed$' "$TESTDIR/stderr"
	expect_eq "[$v] ... two lines on stderr" 2 "$(lines "$TESTDIR/stderr")"
	expect_match "[$v] ... the lines after it still ran" '"status": "running"' "$TESTDIR/stdout"

	shell_in "[$v] --json with a failing line" 1 "$s" $'query-name\nno-such-command\nquery-status\n' --json
	expect_eq "[$v] ... one line per command" 3 "$(lines "$TESTDIR/stdout")"
	expect_eq "[$v] ... the second the error" '{"error":{"class":"CommandNotFound","desc":"The command no-such-command has not been found"}}' \
		"$(sed -n 2p "$TESTDIR/stdout")"
	expect_match "[$v] ... the third the reply" '^\{"status":"running"' "$TESTDIR/stdout"
	shell_in "[$v] --json: a line that never reached QEMU" 1 "$s" $'query-status a=1 a=2\n' --json
	expect_match "[$v] ... is an error object too" '^\{"error":\{"class":"SnapctlError","desc":".*given twice"\}\}$' "$TESTDIR/stdout"
	shell_in "[$v] a bad line is a failure too, not a usage exit" 1 "$s" $'query-status a=1 a=2\n'
	expect_match "[$v] ... says why" "argument 'a' given twice" "$TESTDIR/stderr"

	shell_in "[$v] blank lines and comments are skipped" 0 "$s" $'# a comment\n\n   \n\t# indented\nquery-name\n'
	expect_eq "[$v] ... one reply" "{}" "$(cat "$TESTDIR/stdout")"

	shell_in "[$v] raw JSON" 0 "$s" $'{"execute": "query-status"}\n{"execute": "qom-get", "arguments": {"path": "/machine", "property": "type"}, "id": 7}\n'
	expect_match "[$v] ... runs the command" '"status": "running"' "$TESTDIR/stdout"
	expect_match "[$v] ... with its arguments" '^"pc-q35-.*-machine"$' "$TESTDIR/stdout"
	shell_in "[$v] raw JSON with an unknown member fails" 1 "$s" $'{"execute": "query-status", "oob": 1}\n'

	shell_in "[$v] quoted values as in sh" 0 "$s" $'human-monitor-command command-line="info version"\nhuman-monitor-command \'command-line=info name\'\n'
	expect_match "[$v] ... the version" "^\"${v//./\\.}\\." "$TESTDIR/stdout"

	shell_in "[$v] unquoted JSON values" 0 "$s" \
		$'blockdev-add driver=raw node-name=r1 file={"driver": "null-co", "size": 4096}\nquery-named-block-nodes\nblockdev-del node-name=r1\n' --json
	expect_match "[$v] ... made the nested node" '"node-name":"r1".*"virtual-size":4096' "$TESTDIR/stdout"

	shell_in "[$v] help CMD" 0 "$s" $'help blockdev-snapshot-sync\n'
	expect_match "[$v] ... names the command" '^blockdev-snapshot-sync$' "$TESTDIR/stdout"
	expect_match "[$v] ... snapshot-file, a str, required" '^  snapshot-file +str$' "$TESTDIR/stdout"
	expect_match "[$v] ... device, optional" '^  device +str  \(optional\)$' "$TESTDIR/stdout"
	expect_match "[$v] ... mode, an enum with its values" '^  mode +enum (existing\|absolute-paths|absolute-paths\|existing)  \(optional\)$' "$TESTDIR/stdout"
	shell_in "[$v] help" 0 "$s" $'help\n'
	expect_match "[$v] ... lists QMP commands" '(^| )query-status( |$)' "$TESTDIR/stdout"
	shell_in "[$v] help for an unknown command fails" 1 "$s" $'help no-such-command\n'
	expect_match "[$v] ... says so" "^snapctl: unknown command 'no-such-command'$" "$TESTDIR/stderr"

	shell_in "[$v] exit ends the input" 0 "$s" $'query-name\nexit\nno-such-command\n'
	expect_eq "[$v] ... nothing after it ran" "{}" "$(cat "$TESTDIR/stdout")"
	shell_in "[$v] help exit" 0 "$s" $'help exit\n'
	expect_eq "[$v] ... a shell command" "exit: a shell command" "$(cat "$TESTDIR/stdout")"
	shell_in "[$v] help quit is QMP's quit" 0 "$s" $'help quit\n'
	expect_eq "[$v] ... no arguments" "quit|  (no arguments)|returns: {}" "$(tr '\n' '|' <"$TESTDIR/stdout" | sed 's/|$//')"

	expect_code 2 "[$v] shell takes no arguments" "$SNAPCTL" -s "$s" shell now

	# A reader that goes away stops the script; it is not silent.
	local rcs
	yes query-name | head -n 20000 | "$SNAPCTL" -s "$s" shell 2>"$TESTDIR/stderr" | head -n 1 >/dev/null
	rcs=("${PIPESTATUS[@]}")
	expect_eq "[$v] a closed stdout ends the script quietly, exit 0" 0 "${rcs[2]}"
	expect_eq "[$v] ... no Broken pipe on stderr" "" "$(cat "$TESTDIR/stderr")"
	"$SNAPCTL" -s "$s" shell <<<$'query-name\nquery-qmp-schema\nquery-name\n' 2>"$TESTDIR/stderr" | head -n 1 >/dev/null
	expect_eq "[$v] shell | head -1 exits 0" 0 "${PIPESTATUS[0]}"
	expect_eq "[$v] ... and prints nothing on stderr" "" "$(cat "$TESTDIR/stderr")"
}

# ---- a terminal ------------------------------------------------------------

TMUX_SOCK=$TESTDIR/tmux.sock
tm() { tmux -S "$TMUX_SOCK" -f /dev/null "$@"; }

# wait_pane REGEX [SECONDS]: until the visible pane has a line matching.
wait_pane() {
	local re=$1 n=0 max=$((${2:-15} * 10))
	while [ $n -lt $max ]; do
		tm capture-pane -p -t sh -J >"$TESTDIR/pane" 2>/dev/null
		grep -Eq -- "$re" "$TESTDIR/pane" && return 0
		n=$((n + 1))
		sleep 0.1
	done
	return 1
}

pane_ok() {	# pane_ok DESC REGEX [SECONDS]
	if wait_pane "$2" "${3:-15}"; then
		ok "$1"
	else
		not_ok "$1" "no line matches /$2/ in the pane:"
		grep -v '^$' "$TESTDIR/pane" | tail -n 12 | sed 's/^/#   | /'
	fi
}

terminal_tests() {
	local v=$1 s=$2 home
	home=$TESTDIR/home$v
	mkdir -p "$home"
	rm -f "$TESTDIR/shell.exit"
	tm kill-server 2>/dev/null
	at_exit "tmux -S '$TMUX_SOCK' kill-server"
	if ! tm new-session -d -s sh -x 200 -y 50 \
		"env HOME='$home' ASAN_OPTIONS='$ASAN_OPTIONS' UBSAN_OPTIONS='$UBSAN_OPTIONS' '$SNAPCTL' -s '$s' shell; echo EXIT=\$? >'$TESTDIR/shell.exit'; sleep 60"; then
		not_ok "[$v] start tmux"
		return
	fi
	pane_ok "[$v] the shell shows its prompt" "^\\(QEMU ${v//./\\.}\\.[0-9]+\\) "

	tm send-keys -t sh 'blockdev-snapshot-sync ' Tab Tab
	pane_ok "[$v] Tab Tab after a command offers snapshot-file=" 'snapshot-file= \(str\)'
	expect_match "[$v] ... and node-name= (optional)" 'node-name= \(str, optional\)' "$TESTDIR/pane"
	expect_match "[$v] ... and mode= with its values" 'mode= \(enum [a-z|-]*existing' "$TESTDIR/pane"
	tm send-keys -t sh 'sn' Tab 'f' Tab
	pane_ok "[$v] Tab completes a unique argument name" 'blockdev-snapshot-sync snapshot-file=$'
	tm send-keys -t sh C-u

	tm send-keys -t sh 'query-statu' Tab
	pane_ok "[$v] Tab completes a command name" '\) query-status +$'
	tm send-keys -t sh Enter
	pane_ok "[$v] ... which runs" '"status": "running"'

	tm send-keys -t sh 'help blockdev-snapshot-sync' Enter
	pane_ok "[$v] help CMD lists arguments with types" '^  snapshot-node-name +str  \(optional\)$'

	tm send-keys -t sh 'stop' Enter
	pane_ok "[$v] events are printed" '^\[[0-9:.]+\] STOP$'
	tm send-keys -t sh 'cont' Enter
	pane_ok "[$v] ... each one" '^\[[0-9:.]+\] RESUME$'

	tm send-keys -t sh 'no-such-command' Enter
	pane_ok "[$v] an error shows and the shell goes on" 'CommandNotFound: The command no-such-command'

	tm send-keys -t sh 'query-na'
	wait_pane '\) query-na *$' 5	# else the tty flushes it with the ^C
	tm send-keys -t sh C-c
	tm send-keys -t sh 'query-name' Enter
	pane_ok "[$v] Ctrl-C drops the line being typed" '\) query-name$'
	expect_match "[$v] ... and not the next" '\) query-na\^C *$' "$TESTDIR/pane"

	tm send-keys -t sh 'exit' Enter
	local n=0
	while [ ! -s "$TESTDIR/shell.exit" ] && [ $n -lt 100 ]; do
		n=$((n + 1))
		sleep 0.1
	done
	expect_eq "[$v] exit exits 0 (no leaks under ASan)" "EXIT=0" "$(cat "$TESTDIR/shell.exit" 2>/dev/null)"
	tm capture-pane -p -t sh -J -S -200 >"$TESTDIR/pane"
	if grep -Eq 'Sanitizer|runtime error|warning' "$TESTDIR/pane"; then
		not_ok "[$v] ... no sanitizer report or warning" "$(grep -v '^$' "$TESTDIR/pane" | tail -n 20)"
	else
		ok "[$v] ... no sanitizer report or warning"
	fi
	expect_match "[$v] history is saved in ~/.snapctl_history" '^help blockdev-snapshot-sync$' "$home/.snapctl_history"
	tm kill-server 2>/dev/null
}

for v in 7.2 10.0; do
	if ! bare_have "$v"; then
		skip "[$v] shell tests" "QEMU $v not installed (tests/deps.sh)"
		continue
	fi
	if ! qemu_bare "s$v" --qemu "$v"; then
		not_ok "[$v] start a bare QEMU"
		continue
	fi
	pipe_tests "$v" "$(bare_sock "s$v")"
	if command -v tmux >/dev/null; then
		terminal_tests "$v" "$(bare_sock "s$v")"
	else
		skip "[$v] the shell in a terminal" "tmux not installed"
	fi

	# QEMU goes away in the middle of a script: exit 3, one line.
	if qemu_bare "g$v" --qemu "$v"; then
		shell_in "[$v] QEMU quitting mid-script: exit 3" 3 "$(bare_sock "g$v")" \
			$'query-name\n{"execute": "quit"}\nquery-status\nquery-name\n'
		expect_eq "[$v] ... with one line" 1 "$(lines "$TESTDIR/stderr")"
		expect_match "[$v] ... saying QEMU closed the connection" "^snapctl: QEMU closed the connection while .*'query-status'" "$TESTDIR/stderr"
	else
		not_ok "[$v] start a second bare QEMU"
	fi
	# quit is QMP's quit, not the shell's: QEMU ends.
	if qemu_bare "k$v" --qemu "$v"; then
		shell_in "[$v] quit is QEMU's quit" 3 "$(bare_sock "k$v")" $'query-name\nquit\nquery-name\n' --json
		expect_eq "[$v] ... QEMU answered it" '{}|{}' "$(head -n 2 "$TESTDIR/stdout" | tr '\n' '|' | sed 's/|$//')"
		expect_match "[$v] ... then closed the connection" "^snapctl: QEMU closed the connection" "$TESTDIR/stderr"
		n=0
		while bare_alive "k$v" && [ $n -lt 50 ]; do
			n=$((n + 1))
			sleep 0.1
		done
		check "[$v] ... and QEMU is gone" test "$n" -lt 50
	else
		not_ok "[$v] start a third bare QEMU"
	fi
done

done_testing
