#!/usr/bin/env bash
# bench/scale.sh - compaction at scale on a synthetic stream: SCALE_RAM_GIB
# (default 16) GiB of guest RAM, every page sent three times, ~30% zero, ~20%
# random and ~50% text-like pages.  The stream is generated on the fly and
# piped, so it never touches the disk.  At SCALE_SMALL_GIB (2): snapctl
# compact (time, peak RSS, image size) beside zstd -1 -T2 of the same stream,
# the generator alone, and zstd -1 of the final RAM.  At SCALE_RAM_GIB:
# compact time, peak RSS and image size, to show RSS does not grow with the
# guest.
. "$(dirname "$0")/lib.sh"
GEN=$TOP/build/helper-synthstream
GIB=${SCALE_RAM_GIB:-16}
[ -x "$GEN" ] || { echo "bench/scale.sh: build the helpers first (make helpers)" >&2; exit 1; }
trap 'rm -rf "$BENCHDIR"' EXIT

# full GIB: stream, zstd -1 -T2 of it, compact, zstd -1 of the final RAM.
full() {
	local gib=$1 mibs=$(($1 * 1024)) img=$BENCHDIR/scale.img bytes zsize tf isize ialloc fz
	echo "scale: ${gib} GiB x 3 passes, full comparison ..." >&2
	measure gen bash -c "'$GEN' --ram-mib $mibs --passes 3 | cat >/dev/null"
	bytes=$("$GEN" --ram-mib $mibs --passes 3 | wc -c)
	measure zstd bash -c "'$GEN' --ram-mib $mibs --passes 3 | zstd -q -1 -T2 -c >'$BENCHDIR/z.zst'"
	zsize=$(apparent "$BENCHDIR/z.zst")
	rm -f "$BENCHDIR/z.zst"
	compact_run "$mibs" "$img"
	ialloc=$(allocated "$img")
	rm -f "$img"
	"$GEN" --ram-mib $mibs --passes 3 --final-ram "$BENCHDIR/final.ram" >/dev/null
	zstd -q -1 -f "$BENCHDIR/final.ram" -o "$BENCHDIR/final.zst"
	fz=$(apparent "$BENCHDIR/final.zst")
	rm -f "$BENCHDIR/final.ram" "$BENCHDIR/final.zst"
	table_row "${gib} GiB x3" "$(mib "$bytes")" "$gen_s" "$zstd_s" "$(mib "$zsize")" \
		"$comp_s" "$((comp_rss / 1024))" "$(mib "$ialloc")" "$(mib "$fz")" "$(ratio "$ialloc" "$fz")"
}

# compact_run MIB IMAGE: generator piped into snapctl compact; the time and
# peak RSS are those of the compact process alone.
compact_run() {
	local tf
	tf=$(mktemp)
	"$GEN" --ram-mib "$1" --passes 3 |
		/usr/bin/time -f '%e %M' -o "$tf" "$SNAPCTL" -q --json compact - "$2" >"$BENCHDIR/compact.json"
	read -r comp_s comp_rss <"$tf"
	comp_stream=$(sed -n 's/.*"stream_bytes": *\([0-9]*\).*/\1/p' "$BENCHDIR/compact.json")
	rm -f "$tf"
}

# big GIB: the scale point: compact time, peak RSS, image size.
big() {
	local gib=$1 img=$BENCHDIR/scale.img
	echo "scale: ${gib} GiB x 3 passes, compact only ..." >&2
	compact_run $((gib * 1024)) "$img"
	table_row "${gib} GiB x3" "$(mib "$comp_stream")" "" "" "" \
		"$comp_s" "$((comp_rss / 1024))" "$(mib "$(allocated "$img")")" "" ""
	rm -f "$img"
}

table_row "stream" "raw MiB" "gen only s" "zstd -1 -T2 s" "zstd MiB" "compact s" "compact RSS MiB" \
	"image alloc MiB" "zstd -1 final MiB" "image/final"
full "${SCALE_SMALL_GIB:-2}"
big "$GIB"
table_print "Scale: synthetic stream, every page sent 3 times, ~30% zero / 20% random / 50% text pages (targets: RSS <= 256 MiB and flat; image <= 1.10 x final)"
