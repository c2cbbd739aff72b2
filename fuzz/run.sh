#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] - build every fuzz/fuzz_NAME.c as a libFuzzer target
# (ASan+UBSan) against the core sources and run it for SECONDS (default 20)
# on a copy of its seed corpus fuzz/corpus/NAME/ (new inputs stay in the
# copy, build-fuzz/corpus/NAME/).  Crashes land in build-fuzz/crash/NAME/.
# FUZZ_TARGETS="stream image" selects targets; FUZZ_JOBS=N runs N workers
# per target.  Exit status 1 if any target fails to build or crashes.
set -u
cd "$(dirname "$0")/.." || exit 1

secs=${1:-20}
case $secs in '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;; esac
CC=${FUZZ_CC:-clang}
out=build-fuzz
mkdir -p "$out/obj" "$out/corpus" "$out/crash" "$out/logs"

if ! command -v "$CC" >/dev/null; then
	echo "fuzz/run.sh: $CC not found (apt-get install clang libclang-rt-14-dev)" >&2
	exit 1
fi

# shellcheck disable=SC2054
flags=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
	-fno-omit-frame-pointer -g -O1 -D_GNU_SOURCE -std=c11 -I.)
# shellcheck disable=SC2207
pkg_cflags=($(pkg-config --cflags jansson libzstd readline libcrypto)) || exit 1
# shellcheck disable=SC2207
pkg_libs=($(pkg-config --libs jansson libzstd readline libcrypto)) || exit 1

# The core: every top-level .c but the command-line layer.
core=()
for f in *.c; do
	case $f in snapctl.c | shell.c | cmd_*.c) continue ;; esac
	core+=("$f")
done

# Core objects once, with the fuzzer's instrumentation (no main).
objs=()
for f in "${core[@]}"; do
	o=$out/obj/${f%.c}.o
	if [ ! -e "$o" ] || [ "$f" -nt "$o" ] || [ -n "$(find . -maxdepth 1 -name '*.h' -newer "$o")" ]; then
		if ! "$CC" "${flags[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}" "${pkg_cflags[@]}" -c -o "$o" "$f"; then
			echo "FAIL build of $f" >&2
			exit 1
		fi
	fi
	objs+=("$o")
done

# BLAKE3 (third_party/blake3): its C with the sanitizers, its x86-64
# assembly as is; the portable code alone on other machines.
b3=third_party/blake3
b3_srcs=("$b3/blake3.c" "$b3/blake3_dispatch.c" "$b3/blake3_portable.c")
b3_defs=()
case $("$CC" -dumpmachine) in
x86_64-*) b3_srcs+=("$b3"/blake3_{sse2,sse41,avx2,avx512}_x86-64_unix.S) ;;
*) b3_defs=(-DBLAKE3_NO_SSE2 -DBLAKE3_NO_SSE41 -DBLAKE3_NO_AVX2 -DBLAKE3_NO_AVX512) ;;
esac
for f in "${b3_srcs[@]}"; do
	o=$out/obj/b3-$(basename "${f%.*}").o
	if [ ! -e "$o" ] || [ "$f" -nt "$o" ]; then
		case $f in
		*.S) "$CC" -c -o "$o" "$f" ;;
		*) "$CC" "${flags[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}" "${b3_defs[@]}" -c -o "$o" "$f" ;;
		esac || { echo "FAIL build of $f" >&2; exit 1; }
	fi
	objs+=("$o")
done

failed=()
for src in fuzz/fuzz_*.c; do
	[ -f "$src" ] || continue
	name=$(basename "$src" .c)
	name=${name#fuzz_}
	if [ -n "${FUZZ_TARGETS:-}" ] && [[ " $FUZZ_TARGETS " != *" $name "* ]]; then
		continue
	fi
	bin=$out/fuzz_$name
	if ! "$CC" "${flags[@]}" "${pkg_cflags[@]}" -o "$bin" "$src" "${objs[@]}" \
		"${pkg_libs[@]}" -lpthread; then
		echo "FAIL $name: does not build"
		failed+=("$name")
		continue
	fi
	corpus=$out/corpus/$name
	rm -rf "$corpus"
	mkdir -p "$corpus" "$out/crash/$name"
	if [ -d "fuzz/corpus/$name" ]; then
		cp -R "fuzz/corpus/$name/." "$corpus/"
	fi
	log=$out/logs/$name.log
	jobs=()
	if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
		jobs=(-fork="$FUZZ_JOBS")
	fi
	echo "fuzz $name: $secs s on $(find "$corpus" -type f | wc -l) seeds"
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
		"$bin" "${jobs[@]}" -max_total_time="$secs" -timeout=20 \
		-rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$out/crash/$name/" "$corpus" >"$log" 2>&1
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "FAIL $name: exit $rc (log $log, inputs in $out/crash/$name/)"
		grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -n 10 | sed 's/^/    /'
		failed+=("$name")
	else
		echo "ok   $name: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') runs, corpus $(find "$corpus" -type f | wc -l) inputs"
	fi
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz failures: ${failed[*]}"
	exit 1
fi
exit 0
