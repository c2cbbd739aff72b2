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

# A store others can write (issue 11): ours is made 0700, a sticky one
# (shared like /tmp) is refused and left as it was.
mkdir "$TESTDIR/st777" && chmod 0777 "$TESTDIR/st777"
expect_code 0 "list of a store of ours that is 0777" "$SNAPCTL" -d "$TESTDIR/st777" list
expect_eq "... it is made 0700" 700 "$(stat -c %a "$TESTDIR/st777")"
mkdir "$TESTDIR/st1777" && chmod 1777 "$TESTDIR/st1777"
expect_code 1 "a sticky store writable by others is refused" "$SNAPCTL" -d "$TESTDIR/st1777" list
expect_match "... saying why" "^snapctl: store '.*/st1777' is a shared directory \(sticky, writable by others\): use a directory of its own$" "$TESTDIR/stderr"
expect_eq "... and its mode is untouched" 1777 "$(stat -c %a "$TESTDIR/st1777")"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	mkdir "$TESTDIR/stother" && chmod 0777 "$TESTDIR/stother" && chown 65534 "$TESTDIR/stother"
	chmod o+x "$TESTDIR"
	expect_code 1 "someone else's store writable by others is refused" \
		setpriv --reuid 1000 --regid 1000 --clear-groups "$SNAPCTL" -d "$TESTDIR/stother" list
	expect_match "... saying why" "can be written by others and is not ours: refused" "$TESTDIR/stderr"
	expect_eq "... and its mode is untouched" 777 "$(stat -c %a "$TESTDIR/stother")"
else
	skip "someone else's store writable by others" "needs root and setpriv"
fi
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

# --json: exactly one document on stdout, success or failure.  The image
# commands on a real 7.2 stream (no QEMU needed), qmp without a QEMU.
JQ=$TOP/build/helper-jsonq
# one_doc DESC KEYS: stdout is one line holding one JSON object whose keys
# are KEYS (sorted, space-separated).
one_doc() {
	if [ "$(wc -l <"$TESTDIR/stdout")" = 1 ] && "$JQ" -v "$TESTDIR/stdout"; then
		expect_eq "$1: one JSON document, keys $2" "$2" \
			"$("$JQ" -k "$TESTDIR/stdout" . | tr '\n' ' ' | sed 's/ $//')"
	else
		not_ok "$1: one JSON document" "$(head -c 300 "$TESTDIR/stdout")"
	fi
}
# failed_doc DESC: "ok" false and "error" the message stderr gives.
failed_doc() {
	expect_eq "$1: ok false, error as on stderr" \
		"false|$(sed -n '1s/^snapctl: //p' "$TESTDIR/stderr")" \
		"$("$JQ" "$TESTDIR/stdout" ok)|$("$JQ" "$TESTDIR/stdout" error)"
}
# man_keys CMD DESC: every key of stdout's document is in CMD's man entry.
man_keys() {
	local item k miss=
	item=$(awk -v c="$1" '/^\.It Cm / { on = ($3 == c) } on' "$TOP/man/snapctl.1")
	for k in $("$JQ" -k "$TESTDIR/stdout" .); do
		echo "$item" | grep -E '^\.Brq ' | grep -qw -- "$k" || miss="$miss $k"
	done
	expect_eq "the man page lists the keys of $2" "" "$miss"
}
ij=$TESTDIR/ij
mkdir "$ij"
zstd -qdc "$TOP/tests/data/streams/stream_72_pc-q35-7.2.bin.zst" >"$ij/s.raw"
img_keys="file_bytes hashed_only image ok pages ram_bytes seconds shared_bytes shared_chunks shared_elsewhere stream_bytes zero_pages"
expect_code 0 "compact --json" "$SNAPCTL" compact --json "$ij/s.raw" "$ij/a.img"
one_doc "compact --json" "$img_keys"
expect_eq "... ok, the image, the stream's bytes" "true|$ij/a.img|$(stat -c %s "$ij/s.raw")" \
	"$("$JQ" "$TESTDIR/stdout" ok)|$("$JQ" "$TESTDIR/stdout" image)|$("$JQ" "$TESTDIR/stdout" stream_bytes)"
man_keys compact "compact --json"
expect_code 0 "--json compact (the global option)" "$SNAPCTL" --json compact "$ij/s.raw" "$ij/b.img"
one_doc "--json compact" "$img_keys"
expect_code 0 "compact, text" "$SNAPCTL" compact "$ij/s.raw" "$ij/c.img"
expect_eq "... one line as before" \
	"$ij/c.img: 2.3 MiB stream -> 984.1 KiB image, 69906 pages (69577 zero)" "$(cat "$TESTDIR/stdout")"
expect_code 1 "compact --json onto an existing image" "$SNAPCTL" compact --json "$ij/s.raw" "$ij/a.img"
one_doc "... fails" "error image ok"
failed_doc "... fails"
expect_code 1 "compact --json of a missing stream" "$SNAPCTL" compact --json "$ij/none.raw" "$ij/d.img"
one_doc "... fails" "error image ok"
failed_doc "... fails"
expect_code 2 "compact --json --level 99" "$SNAPCTL" compact --json --level 99 "$ij/s.raw" "$ij/d.img"
one_doc "... a usage error" "error image ok"
failed_doc "... a usage error"

expect_code 0 "verify --json IMAGE" "$SNAPCTL" verify --json "$ij/a.img"
one_doc "verify --json IMAGE" "image ok"
expect_eq "... ok" "true|$ij/a.img" "$("$JQ" "$TESTDIR/stdout" ok)|$("$JQ" "$TESTDIR/stdout" image)"
head -c 100 "$ij/a.img" >"$ij/cut.img"
expect_code 1 "verify --json of a cut image" "$SNAPCTL" verify --json "$ij/cut.img"
one_doc "... fails" "error image ok"
failed_doc "... fails"
expect_code 1 "verify --json of a missing image" "$SNAPCTL" verify --json "$ij/none.img"
one_doc "... fails" "error image ok"
failed_doc "... fails"

expect_code 0 "info --json IMAGE" "$SNAPCTL" info --json "$ij/a.img"
one_doc "info --json IMAGE" "allocated_bytes background blocks chunk_hash data_bytes file_bytes format_version frame_crcs image image_id machine own_bytes packs pages ram_bytes ratio shared_bytes switchover_start tail_bytes zero_pages"
man_keys info "info --json IMAGE"
expect_code 1 "info --json of a cut image" "$SNAPCTL" info --json "$ij/cut.img"
one_doc "... fails" "error image ok"
failed_doc "... fails"

expect_code 0 "export --json" "$SNAPCTL" export --json "$ij/a.img" "$ij/a.exp"
one_doc "export --json" "image ok output seconds stream_bytes"
expect_eq "... ok, its output and the bytes written" "true|$ij/a.exp|$(stat -c %s "$ij/a.exp")" \
	"$("$JQ" "$TESTDIR/stdout" ok)|$("$JQ" "$TESTDIR/stdout" output)|$("$JQ" "$TESTDIR/stdout" stream_bytes)"
man_keys export "export --json"
expect_code 0 "export, text" "$SNAPCTL" export "$ij/a.img" "$ij/b.exp"
expect_eq "... prints nothing, the same stream" "|same" "$(cat "$TESTDIR/stdout")|$(cmp -s "$ij/a.exp" "$ij/b.exp" && echo same)"
expect_code 1 "export --json of a cut image" "$SNAPCTL" export --json "$ij/cut.img" "$ij/c.exp"
one_doc "... fails" "error image ok output"
failed_doc "... fails"
expect_eq "... and leaves no output" "" "$(ls "$ij" | grep '^c\.exp')"
expect_code 2 "export --json to standard output is refused" "$SNAPCTL" export --json "$ij/a.img" -
expect_eq "... nothing on stdout, which would be the stream" "" "$(cat "$TESTDIR/stdout")"
expect_match "... says why" "^snapctl: export: --json needs an OUT file" "$TESTDIR/stderr"
expect_code 2 "--json read is refused" "$SNAPCTL" --json read "$ij/a.img" pc.ram 0 16
expect_eq "... nothing on stdout" "" "$(cat "$TESTDIR/stdout")"
expect_match "... says why" "^snapctl: read: no --json" "$TESTDIR/stderr"
expect_code 2 "read --json is an unknown option" "$SNAPCTL" read --json "$ij/a.img" pc.ram 0 16
expect_code 0 "read without --json still works" "$SNAPCTL" read "$ij/a.img" pc.ram 0 16
expect_eq "... 16 bytes" 16 "$(wc -c <"$TESTDIR/stdout")"

expect_code 3 "qmp --json without a QEMU" env SNAPCTL_CONNECT_TIMEOUT=0 "$SNAPCTL" qmp --json -s "$ij/nosock" query-status
one_doc "... fails" "error"
expect_eq "... {error: {class, desc}}, desc as on stderr" \
	"SnapctlError|$(sed -n '1s/^snapctl: //p' "$TESTDIR/stderr")" \
	"$("$JQ" "$TESTDIR/stdout" error.class)|$("$JQ" "$TESTDIR/stdout" error.desc)"
expect_code 2 "qmp --json with conflicting arguments" "$SNAPCTL" --json qmp -s "$ij/nosock" query-status a=1 a.b=2
one_doc "... a usage error" "error"

# Subcommand usage errors.
expect_code 2 "compact with one argument" "$SNAPCTL" compact only-one
expect_code 2 "compact with a bad --level" "$SNAPCTL" compact --level 99 a b
expect_match "the bad level is reported as such" "invalid --level '99': too large" "$TESTDIR/stderr"
expect_code 2 "an unknown command option" "$SNAPCTL" compact --frob a b
expect_code 2 "read with a bad offset" "$SNAPCTL" read img pc.ram zz 10

# Any --json command that fails before printing its own document prints
# the generic one, with the kind of its exit status.
expect_code 2 "--json list without a store" "$SNAPCTL" --json list
one_doc "--json list without a store" "command error kind ok"
failed_doc "--json list without a store"
expect_eq "--json list without a store: kind usage" usage "$("$JQ" "$TESTDIR/stdout" kind)"
expect_code 1 "list --json of a missing store" "$SNAPCTL" list --json -d "$TESTDIR/none"
one_doc "list --json of a missing store" "command error kind ok"
failed_doc "list --json of a missing store"
expect_code 3 "checkpoint --json, no QEMU" "$SNAPCTL" checkpoint --json -s "$TESTDIR/none.qmp" -d "$TESTDIR/st3"
one_doc "checkpoint --json, no QEMU" "command error kind ok"
expect_eq "checkpoint --json, no QEMU: kind qemu" qemu "$("$JQ" "$TESTDIR/stdout" kind)"
expect_code 2 "restore --json of an unknown option" "$SNAPCTL" restore --json --bogus c1 -d "$TESTDIR/st3"
one_doc "restore --json of an unknown option" "command error kind ok"
expect_code 2 "read refuses --json, stdout empty" "$SNAPCTL" --json read x y z
expect_eq "read refuses --json: nothing on stdout" "" "$(cat "$TESTDIR/stdout")"

done_testing
