#!/usr/bin/env bash
# bench/scale.sh - compaction at scale on a synthetic stream: every page sent
# three times, ~30% zero, ~20% random and ~50% text-like pages.  The stream is
# generated on the fly and piped, so it never touches the disk.  At
# SCALE_SMALL_GIB (2) and SCALE_RAM_GIB (16) GiB of guest RAM: the generator
# alone (time, stream bytes), zstd -1 -T2 of the stream (time, peak RSS,
# size), snapctl compact (time, peak RSS, image allocated bytes) and zstd -1
# of the final RAM; to show that compact's RSS does not grow with the guest.
# zstd's output goes to a pipe (wc -c), compact's image to the scratch disk
# (BENCH_TMP, default /var/tmp): any disk cost is on snapctl's side.
. "$(dirname "$0")/lib.sh"
set -o pipefail
GEN=$TOP/build/helper-synthstream
JSONQ=$TOP/build/helper-jsonq
SMALL=${SCALE_SMALL_GIB:-2}
GIB=${SCALE_RAM_GIB:-16}
[ -x "$GEN" ] && [ -x "$JSONQ" ] || die "build the helpers first (make helpers)"
trap bench_cleanup EXIT
# The image is about a third of the stream (every page thrice) at most.
need_space $((GIB * 1024 + 1024))

# timed_tail OUTVAR MIB CMD...: the generator piped into CMD; OUTVAR_s and
# OUTVAR_rss (KiB) are CMD's alone.  Fails if either side fails.
timed_tail() {
	local var=$1 mibs=$2 tf
	shift 2
	tf=$(mktemp "$BENCHDIR/time.XXXXXX")
	"$GEN" --ram-mib "$mibs" --passes 3 | /usr/bin/time -f '%e %M' -o "$tf" "$@" ||
		{ rm -f "$tf"; return 1; }
	read -r "${var}_s" "${var}_rss" <"$tf"
	rm -f "$tf"
}

# point GIB: one table row.
point() {
	local gib=$1 mibs=$(($1 * 1024)) img=$BENCHDIR/scale.img bytes zsize ialloc fz
	echo "scale: ${gib} GiB x 3 passes: generator alone ..." >&2
	measure gen bash -o pipefail -c "'$GEN' --ram-mib $mibs --passes 3 | wc -c >'$BENCHDIR/bytes'" ||
		die "generator failed"
	bytes=$(cat "$BENCHDIR/bytes")
	echo "scale: ${gib} GiB: zstd -1 -T2 ..." >&2
	timed_tail zstd "$mibs" bash -o pipefail -c "zstd -q -1 -T2 -c | wc -c >'$BENCHDIR/zsize'" ||
		die "zstd -1 -T2 of the stream failed"
	zsize=$(cat "$BENCHDIR/zsize")
	echo "scale: ${gib} GiB: snapctl compact ..." >&2
	timed_tail comp "$mibs" "$SNAPCTL" -q --json compact - "$img" >"$BENCHDIR/compact.json" ||
		die "snapctl compact failed"
	[ "$("$JSONQ" "$BENCHDIR/compact.json" stream_bytes)" = "$bytes" ] ||
		die "snapctl compact read $("$JSONQ" "$BENCHDIR/compact.json" stream_bytes) bytes, the stream has $bytes"
	ialloc=$(allocated "$img")
	rm -f "$img"
	echo "scale: ${gib} GiB: zstd -1 of the final RAM ..." >&2
	"$GEN" --ram-mib $mibs --passes 3 --final-ram >(zstd -q -1 -c | wc -c >"$BENCHDIR/fz") >/dev/null ||
		die "generator (final RAM) failed"
	# The process substitution may still be finishing.
	for _ in $(seq 600); do [ -s "$BENCHDIR/fz" ] && break; sleep 0.1; done
	fz=$(cat "$BENCHDIR/fz")
	[ "${fz:-0}" -gt 0 ] || die "zstd -1 of the final RAM failed"
	rm -f "$BENCHDIR/bytes" "$BENCHDIR/zsize" "$BENCHDIR/fz"
	VERDICTS+=("$(awk -v g="$gib" -v r="$comp_rss" -v i="$ialloc" -v f="$fz" -v c="$comp_s" -v z="$zstd_s" 'BEGIN {
		printf "%s GiB: compact RSS %d MiB <= 256: %s; image/final %.3f <= 1.10: %s; compact %s s <= zstd %s s: %s",
			g, r / 1024, (r <= 262144) ? "met" : "MISSED", i / f, (i <= 1.10 * f) ? "met" : "MISSED",
			c, z, (c <= z) ? "met" : "MISSED" }')")
	table_row "${gib} GiB x3" "$(mib "$bytes")" "$gen_s" "$zstd_s" "$((zstd_rss / 1024))" "$(mib "$zsize")" \
		"$comp_s" "$((comp_rss / 1024))" "$(mib "$ialloc")" "$(mib "$fz")" "$(ratio "$ialloc" "$fz")"
}

table_row "stream" "raw MiB" "gen only s" "zstd -1 -T2 s" "zstd RSS MiB" "zstd MiB" "compact s" \
	"compact RSS MiB" "image alloc MiB" "zstd -1 final MiB" "image/final"
VERDICTS=()
point "$SMALL"
[ "$GIB" != "$SMALL" ] && point "$GIB"
table_print "Scale: synthetic stream, every page sent 3 times, ~30% zero / 20% random / 50% text pages (targets: compact RSS <= 256 MiB and flat; image <= 1.10 x final; compact s <= zstd -1 -T2 s)"
st=$?
printf 'targets: %s\n' "${VERDICTS[@]}"
exit $st
