#!/usr/bin/env bash
# bench/incremental.sh - issue 13's incremental memory table.  A 256 MiB
# guest whose churn rewrites a fixed hot set (no cold writes) between
# checkpoints; BENCH_SHARES (10 25) percent of its RAM per run.  Seven
# `checkpoint`s a run into one store, each after the hot set has been
# rewritten; each later checkpoint's memory shares the chunks that did not
# change with its parent.  Rows: the store's memory bytes (allocated, images
# and packs) after the seven against one full image (the first), beside the
# issue's bound 1 + 6 x changed share, for the share asked of the guest
# and for the share measured (own bytes / frame bytes of the last
# checkpoint, from `info --json` of its image: a chunk of 64 pages counts
# as changed when any of its pages did, and the guest's kernel changes
# pages too).
# Then a guest that changes (almost) nothing: the CPU seconds of the
# checkpoint after a full one, beside the full one's (bound: 0.2 x), for
# the whole process and for compaction alone (timings.compaction_cpu_s of
# the manifest: parsing, the chunk cache, hashing, compressing and the
# commit; not receiving the stream from QEMU's socket, nor QMP and disks).
# Knobs: BENCH_QEMU (10.0), BENCH_SHARES, BENCH_GAP_S (8), BENCH_RUNS (3).
. "$(dirname "$0")/lib.sh"
TESTDIR=$BENCHDIR
. "$TOP/tests/lib/vm.sh"
trap 'vm_stop_all; bench_cleanup' EXIT

QV=${BENCH_QEMU:-10.0}
vm_have_qemu "$QV" || QV=7.2
MODE=""
[ "$QV" = 7.2 ] && MODE=--pause
SHARES=${BENCH_SHARES:-10 25}
GAP=${BENCH_GAP_S:-8}
MEM=256
CHURN_MB=160
JSONQ=$TOP/build/helper-jsonq
[ -x "$JSONQ" ] || die "build the helpers first (make helpers)"
need_space 2048

# store_bytes STORE: allocated bytes of every memory image and pack.
store_bytes() {
	local f t=0
	while IFS= read -r f; do
		t=$((t + $(allocated "$f")))
	done < <(find "$1" -type f \( -name memory.img -o -path '*/.packs/*' \))
	echo "$t"
}

table_row changed_pct_nominal changed_pct_measured full_MiB store_MiB_after_7 store_over_full bound_1+6s_nominal bound_1+6s_measured
for share in $SHARES; do
	# The hot set is share % of the guest's RAM, inside churn's buffer.
	hot=$((share * MEM / CHURN_MB))
	[ "$hot" -le 100 ] || die "share $share % does not fit churn.mb=$CHURN_MB"
	vm_start inc --qemu "$QV" --mem "$MEM" \
		--append "churn.mb=$CHURN_MB churn.hot=$hot churn.rate=0 churn.cold=0 churn.verify=0 churn.tick=1000" ||
		die "vm_start failed"
	vm_wait_ready inc 180 >/dev/null || die "the guest did not start churning"
	SOCK=$(vm_path inc qmp)
	STORE=$BENCHDIR/store$share
	for n in 1 2 3 4 5 6 7; do
		sleep "$GAP"
		# shellcheck disable=SC2086
		"$SNAPCTL" -q -s "$SOCK" -d "$STORE" checkpoint $MODE "c$n" || die "checkpoint c$n failed"
	done
	full=$(allocated "$STORE/c1/memory.img")
	total=$(store_bytes "$STORE")
	"$SNAPCTL" --json info "$STORE/c7/memory.img" >"$BENCHDIR/i.json" || die "info c7 failed"
	own=$("$JSONQ" "$BENCHDIR/i.json" own_bytes)
	shared=$("$JSONQ" "$BENCHDIR/i.json" shared_bytes)
	measured=$(awk -v o="$own" -v s="$shared" 'BEGIN { if (o + s > 0) printf "%.1f", 100 * o / (o + s); else print "?" }')
	bound=$(awk -v s="$share" 'BEGIN { printf "%.2f", 1 + 6 * s / 100 }')
	mbound=$(awk -v s="$measured" 'BEGIN { printf "%.2f", 1 + 6 * s / 100 }')
	table_row "$share" "$measured" "$(mib "$full")" "$(mib "$total")" "$(ratio "$total" "$full")" "$bound" "$mbound"
	vm_stop inc
done
table_print "incremental: store bytes after 7 checkpoints (QEMU $QV, ${MEM} MiB guest)" || exit 1

# A guest that changes (almost) nothing: one page rewritten once a second.
# RUNS (3) times into a new store: the full checkpoint, then the one after
# it; medians.  The checkpoint's CPU also receives and parses the stream
# and copies pages into the chunk cache, which sharing does not save.
vm_start idle --qemu "$QV" --mem "$MEM" \
	--append "churn.mb=$CHURN_MB churn.hot=0 churn.rate=1 churn.cold=0 churn.verify=0 churn.tick=1000" ||
	die "vm_start failed"
vm_wait_ready idle 180 >/dev/null || die "the idle guest did not start"
SOCK=$(vm_path idle qmp)
fc=() fs=() fr=() ic=() is=() ir=() fk=() ik=()
# compaction_cpu STORE NAME: the checkpoint's compaction CPU seconds.
compaction_cpu() {
	"$SNAPCTL" --json -d "$1" info "$2" >"$BENCHDIR/m.json" &&
		"$JSONQ" "$BENCHDIR/m.json" timings.compaction_cpu_s
}
for r in $(seq "${BENCH_RUNS:-3}"); do
	STORE=$BENCHDIR/store-idle$r
	sleep 2
	# shellcheck disable=SC2086
	measure full "$SNAPCTL" -q -s "$SOCK" -d "$STORE" checkpoint $MODE i1 || die "checkpoint i1 failed"
	sleep 2
	# shellcheck disable=SC2086
	measure inc "$SNAPCTL" -q -s "$SOCK" -d "$STORE" checkpoint $MODE i2 || die "checkpoint i2 failed"
	fc+=("$full_cpu") fs+=("$full_s") fr+=("$full_rss") ic+=("$inc_cpu") is+=("$inc_s") ir+=("$inc_rss")
	fk+=("$(compaction_cpu "$STORE" i1)") ik+=("$(compaction_cpu "$STORE" i2)")
done
"$SNAPCTL" --json info "$STORE/i2/memory.img" >"$BENCHDIR/i.json" || die "info i2 failed"
own=$("$JSONQ" "$BENCHDIR/i.json" own_bytes)
shared=$("$JSONQ" "$BENCHDIR/i.json" shared_bytes)
full_cpu=$(median "${fc[@]}") inc_cpu=$(median "${ic[@]}")
full_k=$(median "${fk[@]}") inc_k=$(median "${ik[@]}")
table_row what process_cpu_s compaction_cpu_s wall_s peak_RSS_MiB own_MiB shared_MiB
table_row "full checkpoint" "$full_cpu" "$full_k" "$(median "${fs[@]}")" "$(mib $(($(median "${fr[@]}" | cut -d. -f1) * 1024)))" \
	"$(mib "$(allocated "$STORE/i1/memory.img")")" 0.0
table_row "unchanged since parent" "$inc_cpu" "$inc_k" "$(median "${is[@]}")" "$(mib $(($(median "${ir[@]}" | cut -d. -f1) * 1024)))" \
	"$(mib "$own")" "$(mib "$shared")"
table_row "ratio (bound 0.2)" "$(ratio "$inc_cpu" "$full_cpu")" "$(ratio "$inc_k" "$full_k")" - - - -
# The floor: the chunk hash of the unchanged checkpoint's data pages
# (helper-imgv2tool hashtime: every chunk decoded into memory as the writer
# holds it, then hashed), which a checkpoint that proves every chunk
# unchanged cannot go below; BLAKE3, what snapctl hashes with, and SHA-256,
# what it hashed with before (image flag 0x10).
IMGV2=$TOP/build/helper-imgv2tool
if [ -x "$IMGV2" ] && ht=$("$IMGV2" hashtime "$STORE/i1/memory.img"); then
	read -r _ b3 _ sha <<<"$ht"
	table_row "BLAKE3 of its data pages alone" - "$b3" - - - -
	table_row "floor ratio" - "$(ratio "$b3" "$full_k")" - - - -
	table_row "SHA-256 of the same (before)" - "$sha" - - - -
fi
table_print "incremental: CPU of a checkpoint of an unchanged guest (QEMU $QV, medians of ${BENCH_RUNS:-3})"
