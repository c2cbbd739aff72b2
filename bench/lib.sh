# bench/lib.sh - shared helpers for the benchmarks: timing with peak RSS,
# allocated bytes, and printing one aligned table.
set -u
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SNAPCTL=${SNAPCTL:-$TOP/snapctl}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/snapctl
BENCHDIR=${BENCHDIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/snapctl-bench.XXXXXX")}
export SNAPCTL TOP CACHE BENCHDIR

# measure OUTVAR CMD...: runs CMD with GNU time; sets OUTVAR_s (seconds)
# and OUTVAR_rss (peak RSS in KiB) of the measured command.
measure() {
	local var=$1 tf
	shift
	tf=$(mktemp)
	/usr/bin/time -f '%e %M' -o "$tf" "$@" || { rm -f "$tf"; return 1; }
	read -r "${var}_s" "${var}_rss" <"$tf"
	rm -f "$tf"
}

apparent() { stat -c %s "$1"; }
allocated() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }

# table_row COL... / table_print TITLE: collect rows, print aligned.
_rows=()
table_row() { local IFS=$'\t'; _rows+=("$*"); }
table_print() {
	echo
	echo "## $1"
	printf '%s\n' "${_rows[@]}" | column -t -s $'\t'
	_rows=()
}
