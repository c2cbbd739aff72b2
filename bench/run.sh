#!/usr/bin/env bash
# bench/run.sh - every benchmark, each printing one table.  BENCH=REGEX picks.
# bench/blkstress.sh (outcome counts of restores under block I/O, ~25 min)
# runs only when BENCH names it: BENCH=blkstress make bench.
set -u
cd "$(dirname "$0")/.." || exit 1
make --no-print-directory -s all helpers >/dev/null || exit 1
rc=0
for b in bench/image.sh bench/incremental.sh bench/checkpoint.sh bench/swappause.sh bench/restore.sh bench/scale.sh bench/lifecycle.sh bench/blkstress.sh; do
	[[ -n "${BENCH:-}" && ! "$b" =~ $BENCH ]] && continue
	[[ $b == bench/blkstress.sh && ! "$b" =~ ${BENCH:-^$} ]] && continue
	bash "$b" || { echo "$b failed" >&2; rc=1; }
done
exit $rc
