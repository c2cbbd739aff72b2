#!/usr/bin/env bash
# bench/scale.sh - compaction at scale on a synthetic stream: SCALE_RAM_GIB
# (default 16) GiB of guest RAM, every page sent three times, ~30% zero, ~20%
# random and ~50% text-like pages.  The stream is generated on the fly and
# piped, so it never touches the disk.  Measured: snapctl compact (time, peak
# RSS, image size) beside zstd -1 -T2 of the same stream and the generator
# alone; then the same at a quarter of the size, to show RSS does not grow
# with the guest.
. "$(dirname "$0")/lib.sh"
GEN=$TOP/build/helper-synthstream
GIB=${SCALE_RAM_GIB:-16}
[ -x "$GEN" ] || { echo "bench/scale.sh: build the helpers first (make helpers)" >&2; exit 1; }
trap 'rm -rf "$BENCHDIR"' EXIT

run_size() {
	local gib=$1 mibs=$(($1 * 1024)) img=$BENCHDIR/scale-$1.img
	echo "scale: ${gib} GiB x 3 passes ..." >&2
	measure gen bash -c "'$GEN' --ram-mib $mibs --passes 3 | cat >/dev/null"
	local bytes
	bytes=$("$GEN" --ram-mib $mibs --passes 3 | wc -c)
	measure zstd bash -c "'$GEN' --ram-mib $mibs --passes 3 | zstd -q -1 -T2 -c >'$BENCHDIR/z.zst'"
	local zsize
	zsize=$(apparent "$BENCHDIR/z.zst")
	rm -f "$BENCHDIR/z.zst"
	# Only the compact process is measured for RSS (right side of the pipe).
	local tf
	tf=$(mktemp)
	"$GEN" --ram-mib $mibs --passes 3 |
		/usr/bin/time -f '%e %M' -o "$tf" "$SNAPCTL" -q compact - "$img" >/dev/null
	read -r comp_s comp_rss <"$tf"
	rm -f "$tf"
	local isize ialloc fz
	isize=$(apparent "$img")
	ialloc=$(allocated "$img")
	"$GEN" --ram-mib $mibs --passes 3 --final-ram "$BENCHDIR/final.ram" >/dev/null
	measure fin zstd -q -1 -f "$BENCHDIR/final.ram" -o "$BENCHDIR/final.zst"
	fz=$(apparent "$BENCHDIR/final.zst")
	rm -f "$BENCHDIR/final.ram" "$BENCHDIR/final.zst" "$img"
	table_row "${gib} GiB x3" "$(mib "$bytes")" "$gen_s" "$zstd_s" "$(mib "$zsize")" \
		"$comp_s" "$((comp_rss / 1024))" "$(mib "$ialloc")" "$(mib "$fz")" "$(ratio "$ialloc" "$fz")" \
		"$(awk -v z="$zstd_s" -v c="$comp_s" 'BEGIN { printf "%.2f", z / c }')"
}

table_row "stream" "raw MiB" "gen only s" "zstd -1 -T2 s" "zstd MiB" "compact s" "compact RSS MiB" \
	"image alloc MiB" "zstd -1 final MiB" "image/final" "speed vs zstd"
run_size $((GIB / 4 > 0 ? GIB / 4 : 1))
run_size "$GIB"
table_print "Scale: synthetic stream, every page sent 3 times (targets: RSS <= 256 MiB and flat; image <= 1.10 x final; compact faster than zstd -1 -T2)"
