#!/usr/bin/env bash
# t-cli.sh - the command line itself: help, version, usage errors and their
# exit codes, --help and the man page agreeing with the command table.
. "$(dirname "$0")/lib.sh"

expect_code 0 "--version exits 0" "$SNAPCTL" --version
expect_match "--version prints the version" '^snapctl [0-9]+\.[0-9]+\.[0-9]+$' "$TESTDIR/stdout"
expect_code 0 "--help exits 0" "$SNAPCTL" --help
cp "$TESTDIR/stdout" "$TESTDIR/help"
expect_match "--help shows the usage line" '^usage: snapctl ' "$TESTDIR/help"

expect_code 2 "no command is a usage error" "$SNAPCTL"
expect_match "it says so in one line" '^snapctl: no command given$' "$TESTDIR/stderr"
expect_code 2 "an unknown command is a usage error" "$SNAPCTL" frobnicate
expect_match "it names the command" "unknown command 'frobnicate'" "$TESTDIR/stderr"
expect_code 2 "an unknown global option is a usage error" "$SNAPCTL" --frobnicate help
expect_code 2 "a global option without its value" "$SNAPCTL" -s
expect_code 2 "a bad --qmp-timeout" "$SNAPCTL" --qmp-timeout 0 help
expect_match "the bad value is quoted with the reason" "invalid --qmp-timeout '0': too small" "$TESTDIR/stderr"
expect_code 2 "qmp without a socket is a usage error" env -u SNAPCTL_SOCKET "$SNAPCTL" qmp query-status
expect_match "it says how to give one" 'use -s or SNAPCTL_SOCKET' "$TESTDIR/stderr"
expect_code 2 "help for an unknown command" "$SNAPCTL" help frobnicate

# Every command in --help has a help page whose usage line is the man
# page's synopsis for it, and the man page documents exactly these commands.
cmds=$(sed -n '/^Commands:/,/^$/p' "$TESTDIR/help" | awk 'NF && !/^Commands:/ { print $1 }')
[ -n "$cmds" ] && ok "--help lists commands" || not_ok "--help lists commands"
man_cmds=$(grep -E '^\.It Cm [a-z]+' "$TOP/man/snapctl.1" | awk '{ print $3 }' | sort -u)
expect_eq "the man page documents exactly the commands of --help" \
	"$(echo "$cmds" | sort -u | tr '\n' ' ')" "$(echo "$man_cmds" | tr '\n' ' ')"
for c in $cmds; do
	if "$SNAPCTL" help "$c" >"$TESTDIR/h" 2>&1 && grep -q "^usage: snapctl $c" "$TESTDIR/h"; then
		ok "help $c prints its usage"
	else
		not_ok "help $c prints its usage" "$(cat "$TESTDIR/h")"
	fi
	# Every option of the usage line appears in the man page's entry.
	usage=$(sed -n "s/^usage: snapctl $c //p" "$TESTDIR/h")
	item=$(awk -v c="$c" '/^\.It Cm / { on = ($3 == c) } on' "$TOP/man/snapctl.1")
	miss=
	for f in $(echo " $usage" | grep -oE '[ [|]-[a-zA-Z]\b' | tr -d ' [|' | sort -u); do
		echo "$item" | grep -qE -- "Fl ${f#-}( |$)" || miss="$miss $f"
	done
	for f in $(echo "$usage" | grep -oE -- '--[a-z][a-z-]*' | sort -u); do
		echo "$item" | grep -qE -- "Fl Fl ${f#--}( |$)" || miss="$miss $f"
	done
	expect_eq "man page entry of $c has the options of its usage" "" "$miss"
done

if command -v mandoc >/dev/null; then
	expect_code 0 "man pages pass mandoc -Tlint" mandoc -Tlint -Wwarning "$TOP/man/snapctl.1" "$TOP/man/snapctl-image.5"
else
	skip "man pages pass mandoc -Tlint" "mandoc not installed"
fi
if MANWIDTH=80 man -l "$TOP/man/snapctl.1" >"$TESTDIR/man.txt" 2>"$TESTDIR/man.err"; then
	ok "man -l renders snapctl.1"
else
	not_ok "man -l renders snapctl.1" "$(cat "$TESTDIR/man.err")"
fi

# Standard output that cannot be written is an error, not silence.
if [ -w /dev/full ]; then
	expect_code 1 "a full stdout fails the command" sh -c "'$SNAPCTL' --help >/dev/full"
	expect_match "and says why" 'cannot write to standard output' "$TESTDIR/stderr"
fi

# Global options after the command, and the order of the checks.
mkdir -m 700 "$TESTDIR/st"
expect_code 0 "list -d DIR: a global option after the command" "$SNAPCTL" list -d "$TESTDIR/st"
expect_eq "... an empty store prints nothing" "" "$(cat "$TESTDIR/stdout" "$TESTDIR/stderr")"
expect_code 0 "list --dir DIR --json -q -v" "$SNAPCTL" list --dir "$TESTDIR/st" --json -q -v
expect_eq "... []" "[]" "$(cat "$TESTDIR/stdout")"
expect_code 3 "qmp -s SOCKET QUERY: -s after the command" env SNAPCTL_CONNECT_TIMEOUT=0 "$SNAPCTL" qmp -s "$TESTDIR/nosock" query-status
expect_match "... it is used" "^snapctl: cannot connect to '$TESTDIR/nosock'" "$TESTDIR/stderr"
expect_code 2 "checkpoint --bogus" env -u SNAPCTL_SOCKET "$SNAPCTL" checkpoint --bogus
expect_eq "... names the unknown option, not the missing socket" \
	"snapctl: checkpoint: unknown option '--bogus'|Try 'snapctl help checkpoint' for more information." \
	"$(tr '\n' '|' <"$TESTDIR/stderr" | sed 's/|$//')"
expect_code 2 "checkpoint without a socket" env -u SNAPCTL_SOCKET "$SNAPCTL" checkpoint -d "$TESTDIR/st"
expect_match "... says so" "^snapctl: checkpoint: no QMP socket: use -s or SNAPCTL_SOCKET$" "$TESTDIR/stderr"
expect_code 2 "prune --keep -1" "$SNAPCTL" prune -d "$TESTDIR/st" --keep -1
expect_eq "... says what --keep takes, and where to look" \
	"snapctl: invalid --keep '-1': must be a whole number from 0 to 1000000|Try 'snapctl help prune' for more information." \
	"$(tr '\n' '|' <"$TESTDIR/stderr" | sed 's/|$//')"
expect_code 2 "a global usage error points to --help" "$SNAPCTL" --frob list
expect_match "... so" "^Try 'snapctl --help' for more information\.$" "$TESTDIR/stderr"

# Bash completion, generated from the command table.
expect_code 0 "completion bash" "$SNAPCTL" completion bash
cp "$TESTDIR/stdout" "$TESTDIR/comp.bash"
check "... is valid bash" bash -n "$TESTDIR/comp.bash"
expect_eq "... and not in --help's command list" "" "$(echo "$cmds" | grep -x completion)"
expect_code 2 "completion of another shell" "$SNAPCTL" completion fish
expect_match "... names the shells it knows" "^snapctl: completion: unknown shell 'fish' \\(bash\\)$" "$TESTDIR/stderr"
# comp WORD...: the completions of the last word, one line, sorted.
comp() {
	PATH=$(dirname "$SNAPCTL"):$PATH bash -c '. "$1"; shift
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _snapctl
		printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "' _ "$TESTDIR/comp.bash" "$@"
}
expect_eq "... every command of --help" "$(echo "$cmds" | sort | tr '\n' ' ')" \
	"$(comp snapctl '' | tr ' ' '\n' | grep -v '^-' | tr '\n' ' ')"
expect_eq "... a command from its start" "verify " "$(comp snapctl ver)"
expect_eq "... a command's options" "--keep " "$(comp snapctl prune --k)"
expect_eq "... global options after the command too" "--dir --disks --dry-run " "$(comp snapctl prune --d)"
expect_eq "... help COMMAND" "checkpoint " "$(comp snapctl help che)"
mkdir -m 700 "$TESTDIR/cs" "$TESTDIR/cs/nightly1" "$TESTDIR/cs/nightly2"
for n in nightly1 nightly2; do
	cat >"$TESTDIR/cs/$n/manifest.json" <<-EOF
	{"snapctl_manifest": 1, "name": "$n", "created": "20261123T08150${n#nightly}Z", "parent": null,
	 "vm": {"name": "vm1", "uuid": null, "qemu": "10.0.0", "machine": "q35"}, "mode": "disk-only",
	 "forced": false, "quiesced": false, "memory": null, "disks": [], "timings": {"total_s": 0.1, "paused_ms": 1.0, "passes": 0}}
	EOF
done
expect_eq "... checkpoint names of -d STORE" "nightly1 nightly2 " "$(comp snapctl -d "$TESTDIR/cs" delete nig)"
expect_eq "... and of -d after the command" "nightly2 " "$(comp snapctl verify -d "$TESTDIR/cs" nightly2)"

# The systemd units in contrib/ run commands snapctl accepts.
svc=$TOP/contrib/systemd/snapctl-checkpoint@.service
n=0
while IFS= read -r l; do
	n=$((n + 1))
	# shellcheck disable=SC2086
	set -- ${l#ExecStart=/usr/local/bin/snapctl }
	expect_code "$([ "$1 $2 $3" = "-q --wait 600" ] && [ "$4" = checkpoint ] && echo 3 || echo 0)" \
		"the unit's ExecStart $n runs (no VM: exit 3; prune: 0)" \
		env SNAPCTL_SOCKET="$TESTDIR/none.qmp" SNAPCTL_DIR="$TESTDIR/cs" SNAPCTL_CONNECT_TIMEOUT=0 "$SNAPCTL" "$@"
	expect_eq "... quietly but for the error" "$([ "$4" = checkpoint ] && echo 1 || echo 0)" "$(cat "$TESTDIR/stdout" "$TESTDIR/stderr" | wc -l)"
done < <(grep '^ExecStart=' "$svc")
expect_eq "... two of them" 2 "$n"
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$TESTDIR/units"
	sed "s|/usr/local/bin/snapctl|$SNAPCTL|" "$svc" >"$TESTDIR/units/snapctl-checkpoint@.service"
	cp "$TOP/contrib/systemd/snapctl-checkpoint@.timer" "$TESTDIR/units/"
	expect_code 0 "systemd-analyze verify accepts the service and timer" \
		systemd-analyze verify --man=no "$TESTDIR/units/snapctl-checkpoint@vm1.service" "$TESTDIR/units/snapctl-checkpoint@vm1.timer"
else
	skip "systemd-analyze verify accepts the service and timer" "no systemd-analyze"
fi

# Subcommand usage errors.
expect_code 2 "compact with one argument" "$SNAPCTL" compact only-one
expect_code 2 "compact with a bad --level" "$SNAPCTL" compact --level 99 a b
expect_match "the bad level is reported as such" "invalid --level '99': too large" "$TESTDIR/stderr"
expect_code 2 "an unknown command option" "$SNAPCTL" compact --frob a b
expect_code 2 "read with a bad offset" "$SNAPCTL" read img pc.ram zz 10

done_testing
