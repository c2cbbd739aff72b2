#!/usr/bin/env bash
# tests/deps.sh - install what building and testing snapctl needs on Debian 12.
#
# Idempotent and silent when nothing is missing (exit 0, no output, no
# network).  Otherwise it:
#   1. installs the missing Debian packages with apt-get (one apt-get update,
#      only when something must be installed or downloaded);
#   2. makes QEMU 10.0 available beside the system's 7.2: adds a
#      bookworm-backports sources entry derived from
#      /etc/apt/sources.list.d/debian.sources, downloads the 10.0 packages
#      (apt-get download, never installed) and unpacks them with dpkg-deb -x
#      into $CACHE/qemu-10/.  Run that binary with
#      QEMU_MODULE_DIR=$CACHE/qemu-10/usr/lib/x86_64-linux-gnu/qemu
#      (tests/lib/vm.sh does).  A marker file makes reruns instant.
#
# CACHE = ${XDG_CACHE_HOME:-$HOME/.cache}/snapctl; downloads are kept in
# $CACHE/debs/.  Runs non-interactively (CI: root, no stdin).  As non-root it
# uses "sudo -n" for apt, or fails saying what to install.
# Environment: SNAPCTL_SKIP_QEMU10=1 skips step 2.
set -euo pipefail

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/snapctl
QEMU10_DIR=$CACHE/qemu-10
QEMU10_MARKER=$QEMU10_DIR/.snapctl-complete
BACKPORTS_LIST=/etc/apt/sources.list.d/snapctl-backports.sources
DEBIAN_SOURCES=/etc/apt/sources.list.d/debian.sources

# Build: gcc make pkg-config libc6-dev + the -dev packages (libssl-dev:
# libcrypto's SHA-256, the chunk hash of older images, imghash.c).  Tests: QEMU,
# the guest (busybox-static cpio gzip qemu-guest-agent; xz-utils and zstd
# for compressed kernel modules), mandoc (make lint), clang and
# libclang-rt-14-dev (libFuzzer); bench/: time (/usr/bin/time) and
# bsdextrautils (column), python3 (bench/qmpseq.py: the scripted QMP
# sequence); the shell tests: tmux (a real terminal).
PKGS=(gcc make pkg-config libc6-dev libjansson-dev libzstd-dev libreadline-dev
	libssl-dev qemu-system-x86 qemu-utils busybox-static cpio gzip xz-utils
	zstd qemu-guest-agent mandoc clang libclang-rt-14-dev time bsdextrautils
	tmux python3)

# The QEMU 10.0 packages to unpack (gui and modules-* so that every module
# the binary probes exists in its own module folder).
QEMU10_PKGS=(qemu-system-x86 qemu-system-common qemu-system-data qemu-utils
	qemu-block-extra qemu-system-gui qemu-system-modules-opengl
	qemu-system-modules-spice)

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-q -y -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=600
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

say() { echo "deps.sh: $*" >&2; }
die() { say "$*"; exit 1; }

missing_pkgs() {
	# One dpkg-query for all (unknown packages are reported on stderr).
	dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PKGS[@]}" 2>/dev/null |
		awk -v want="${PKGS[*]}" '$2 ~ /^ii/ { ok[$1] = 1 }
		END { n = split(want, w, " "); for (i = 1; i <= n; i++) if (!(w[i] in ok)) print w[i] }'
}

qemu10_ok() {
	[ -f "$QEMU10_MARKER" ] && [ -x "$QEMU10_DIR/usr/bin/qemu-system-x86_64" ]
}

mapfile -t missing < <(missing_pkgs)
need_qemu10=1
if [ "${SNAPCTL_SKIP_QEMU10:-0}" = 1 ] || qemu10_ok; then
	need_qemu10=0
fi
[ ${#missing[@]} -eq 0 ] && [ $need_qemu10 -eq 0 ] && exit 0

command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"

# The version bookworm-backports offers: in the version table of apt-cache
# policy, the version line followed by a bookworm-backports source line.
backports_version() {
	apt-cache policy qemu-system-x86 2>/dev/null | awk '
		/^ +(\*\*\* )?[0-9]+:?[^ ]* [0-9]+$/ { v = ($1 == "***") ? $2 : $1; next }
		/bookworm-backports/ && v != "" { print v; exit }'
}

# Root (or password-less sudo) is needed to install packages, to add the
# backports entry and to update the lists; downloading and unpacking QEMU
# 10.0 into one's own cache is not.
need_update=0
[ ${#missing[@]} -gt 0 ] && need_update=1
ver=
if [ $need_qemu10 -eq 1 ]; then
	if [ ! -f "$BACKPORTS_LIST" ]; then
		need_update=1
	else
		ver=$(backports_version)
		[ -n "$ver" ] || need_update=1
	fi
fi
SUDO=()
if [ $need_update -eq 1 ] && [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		SUDO=(sudo -n)
	else
		die "not root and no password-less sudo: run tests/deps.sh as root once${missing[*]:+ (missing: ${missing[*]})}"
	fi
fi

LOG=$(mktemp "${TMPDIR:-/tmp}/snapctl-deps.XXXXXX")
trap 'rm -f "$LOG"' EXIT
# run CMD...: quietly, showing the log if it fails.
run() {
	if ! "$@" >>"$LOG" 2>&1 </dev/null; then
		say "failed: $*"
		tail -n 30 "$LOG" >&2
		exit 1
	fi
}

# Write the bookworm-backports entry: the stanza of debian.sources whose
# Suites include "bookworm" (the main archive, not -security), with its
# URIs, Components and Signed-By (a multi-line inline key included).
write_backports_sources() {
	local tmp
	[ -f "$BACKPORTS_LIST" ] && return 0
	tmp=$(mktemp)
	if [ -f "$DEBIAN_SOURCES" ]; then
		awk '
		function flush() {
			if (keep && !done) { printf "%s", out; done = 1 }
			out = ""; keep = 0; field = ""
		}
		/^[ \t]*$/ { flush(); next }
		/^#/ { next }
		/^[ \t]/ { if (field == "URIs" || field == "Signed-By" || field == "Types") out = out $0 "\n"; next }
		{
			field = $1; sub(/:$/, "", field)
			if (field == "Suites") {
				for (i = 2; i <= NF; i++) if ($i == "bookworm") keep = 1
				out = out "Suites: bookworm-backports\n"
			} else if (field == "Components") {
				out = out "Components: main\n"
			} else if (field == "Types" || field == "URIs" || field == "Signed-By") {
				out = out $0 "\n"
			}
		}
		END { flush() }' "$DEBIAN_SOURCES" >"$tmp"
	fi
	if ! grep -q '^URIs:' "$tmp"; then
		# No deb822 main stanza: the standard mirror and archive key.
		printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' \
			'Suites: bookworm-backports' 'Components: main' \
			'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$tmp"
	fi
	{
		echo "# Added by snapctl tests/deps.sh: QEMU 10.0 is downloaded from here"
		echo "# and unpacked into ~/.cache/snapctl/qemu-10 (never installed)."
		cat "$tmp"
	} | "${SUDO[@]}" tee "$BACKPORTS_LIST" >/dev/null
	"${SUDO[@]}" chmod 644 "$BACKPORTS_LIST"
	rm -f "$tmp"
}

start=$(date +%s)
if [ $need_update -eq 1 ]; then
	[ $need_qemu10 -eq 1 ] && write_backports_sources
	what=${missing[*]:-}
	[ $need_qemu10 -eq 1 ] && what="$what QEMU-10.0"
	say "needed: ${what# }; updating the package lists"
	run "${SUDO[@]}" apt-get "${APT_OPTS[@]}" update
fi

if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	run "${SUDO[@]}" apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}"
fi

if [ $need_qemu10 -eq 1 ]; then
	[ -n "$ver" ] || ver=$(backports_version)
	[ -n "$ver" ] || die "no qemu-system-x86 in bookworm-backports (see $BACKPORTS_LIST)"
	case $ver in 1:10.0.*) ;; *) say "note: backports offers QEMU $ver (expected 10.0.x)" ;; esac
	debs=$CACHE/debs
	mkdir -p "$debs"
	want=()
	for p in "${QEMU10_PKGS[@]}"; do
		f=$(printf '%s_%s_' "$p" "${ver//:/%3a}")
		ls "$debs/$f"*.deb >/dev/null 2>&1 || want+=("$p=$ver")
	done
	if [ ${#want[@]} -gt 0 ]; then
		say "downloading QEMU $ver (${#want[@]} packages)"
		# As root apt sandboxes downloads to user _apt, which cannot write
		# into $HOME; download into a temp dir _apt can write, then move.
		dl=$(mktemp -d "${TMPDIR:-/tmp}/snapctl-debs.XXXXXX")
		chmod 755 "$dl"
		if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
			chown _apt "$dl"
		fi
		(cd "$dl" && run apt-get -q -o Dpkg::Use-Pty=0 download "${want[@]}")
		mv "$dl"/*.deb "$debs"/
		rm -rf "$dl"
	fi
	say "unpacking QEMU $ver into $QEMU10_DIR"
	rm -rf "$QEMU10_DIR.tmp" "$QEMU10_DIR"
	mkdir -p "$QEMU10_DIR.tmp"
	for p in "${QEMU10_PKGS[@]}"; do
		f=$(printf '%s_%s_' "$p" "${ver//:/%3a}")
		for d in "$debs/$f"*.deb; do
			run dpkg-deb -x "$d" "$QEMU10_DIR.tmp"
		done
	done
	bin=$QEMU10_DIR.tmp/usr/bin/qemu-system-x86_64
	[ -x "$bin" ] || die "unpacked QEMU has no $bin"
	v=$(QEMU_MODULE_DIR=$QEMU10_DIR.tmp/usr/lib/x86_64-linux-gnu/qemu "$bin" --version 2>/dev/null | head -n1)
	case $v in *"version 10."*) ;; *) die "unpacked QEMU does not run: '$v'" ;; esac
	echo "$ver" >"$QEMU10_DIR.tmp/.snapctl-complete"
	mv "$QEMU10_DIR.tmp" "$QEMU10_DIR"
	# Old versions' downloads are of no further use.
	for d in "$debs"/qemu-*.deb; do
		case $d in *"_${ver//:/%3a}_"*) ;; *) rm -f "$d" ;; esac
	done
fi
say "done in $(($(date +%s) - start)) s"
