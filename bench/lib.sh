# shellcheck shell=bash
# bench/lib.sh - shared helpers for the benchmarks: timing with peak RSS,
# allocated bytes, and printing one aligned table.
set -u
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SNAPCTL=${SNAPCTL:-$TOP/snapctl}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/snapctl
# Scratch: BENCHDIR if given (kept), else a new directory under BENCH_TMP
# (default /var/tmp: disk, not a tmpfs /tmp), removed by bench_cleanup.
if [ -n "${BENCHDIR:-}" ]; then
	mkdir -p "$BENCHDIR" || exit 1
	_bench_own_dir=0
else
	BENCHDIR=$(mktemp -d "${BENCH_TMP:-/var/tmp}/snapctl-bench.XXXXXX") || exit 1
	_bench_own_dir=1
fi
export SNAPCTL TOP CACHE BENCHDIR
# A signal ends the script through its EXIT trap (VMs stopped, scratch gone).
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# bench_cleanup: remove the scratch directory if this script made it (run
# it from the EXIT trap, after stopping the VMs).
bench_cleanup() {
	[ "$_bench_own_dir" = 1 ] && rm -rf "$BENCHDIR"
	return 0
}

# die MESSAGE: a benchmark that cannot measure fails loudly.
die() {
	echo "$(basename "$0"): $*" >&2
	exit 1
}

# need_space MIB: fail unless BENCHDIR's filesystem has MIB MiB free.
need_space() {
	local avail
	avail=$(df -Pk "$BENCHDIR" | awk 'NR == 2 { print int($4 / 1024) }')
	[ "${avail:-0}" -ge "$1" ] ||
		die "needs $1 MiB free in $BENCHDIR, has ${avail:-?} (set BENCH_TMP)"
}

# measure OUTVAR CMD...: runs CMD with GNU time; sets OUTVAR_s (seconds),
# OUTVAR_rss (peak RSS in KiB) and OUTVAR_cpu (user + system CPU seconds,
# children included) of the measured command.
measure() {
	local var=$1 tf u s
	shift
	tf=$(mktemp)
	/usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" || { rm -f "$tf"; return 1; }
	read -r "${var}_s" "${var}_rss" u s <"$tf"
	printf -v "${var}_cpu" '%s' "$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')"
	rm -f "$tf"
}

apparent() { stat -c %s "$1"; }
allocated() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "?" }'; }
# median NUMBER...: the median (mean of the middle two for an even count).
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2];
		      else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# least NUMBER...: the smallest.
least() { printf '%s\n' "$@" | sort -g | head -n 1; }
# secs_since T0: seconds from wall-clock T0 (date +%s.%N) to now, 2 decimals.
secs_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

# table_row COL... / table_print TITLE: collect rows, print aligned.
_rows=()
table_row() { local IFS=$'\t'; _rows+=("$*"); }
# A table with an empty, "n/a" or "?" cell is a measurement that silently
# failed: table_print prints it anyway, says which, and returns 1.
table_print() {
	local r c bad=0
	echo
	echo "## $1"
	printf '%s\n' "${_rows[@]}" | column -t -s $'\t'
	for r in "${_rows[@]}"; do
		local IFS=$'\t' cells
		read -r -a cells <<<"$r"
		[ "${#cells[@]}" -eq "$(awk -F'\t' '{ print NF }' <<<"${_rows[0]}")" ] || bad=1
		for c in "${cells[@]}"; do
			case $c in '' | n/a | '?') bad=1 ;; esac
		done
	done
	_rows=()
	if [ $bad = 1 ]; then
		echo "$(basename "$0"): the table has missing values" >&2
		return 1
	fi
}
