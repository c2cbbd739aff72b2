#!/usr/bin/env bash
# bench/run.sh - every benchmark, each printing one table.  BENCH=REGEX picks.
set -u
cd "$(dirname "$0")/.." || exit 1
make --no-print-directory -s all helpers >/dev/null || exit 1
rc=0
for b in bench/image.sh bench/checkpoint.sh bench/restore.sh bench/scale.sh; do
	[[ -n "${BENCH:-}" && ! "$b" =~ $BENCH ]] && continue
	bash "$b" || { echo "$b failed" >&2; rc=1; }
done
exit $rc
