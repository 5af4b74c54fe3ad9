#!/usr/bin/env bash
# fuzz.sh BUILD_DIR SECONDS [TARGET...]: builds tunebench_fuzz (clang, libFuzzer, ASan + UBSan
# over every library; CMake option TB_FUZZ) into BUILD_DIR and runs each fuzz target for
# SECONDS, one after another. The targets are the folders of tests/fuzz/corpus (their seeds;
# tests/fuzz/targets.cpp says what each parses); tests/fuzz/dicts/<target>.dict is used where
# it exists. A target fails on any crash, sanitizer report, leak, an input that takes more than
# 1 s (timeout) or a run above 2 GB (out-of-memory); the input that did it is kept under
# BUILD_DIR/fuzz-artifacts/<target>/ and printed, to be committed to
# tests/fuzz/regressions/<target>/ (which the normal test suite replays) once the parser is
# fixed. New inputs libFuzzer finds go to BUILD_DIR/fuzz-corpus/<target>/, never into the
# repository. Prints one line per target (seconds, inputs executed, corpus size, result) and
# the totals; exit 1 when any target failed.
set -uo pipefail
cd "$(dirname "$0")/.."

build="${1:?usage: scripts/fuzz.sh BUILD_DIR SECONDS [TARGET...]}"
seconds="${2:?usage: scripts/fuzz.sh BUILD_DIR SECONDS [TARGET...]}"
shift 2
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || { echo "fuzz: SECONDS must be a positive integer, got '$seconds'" >&2; exit 2; }
if (($#)); then targets=("$@"); else targets=($(ls tests/fuzz/corpus)); fi
for t in "${targets[@]}"; do
  [ -d "tests/fuzz/corpus/$t" ] || { echo "fuzz: no target '$t' (known: $(ls tests/fuzz/corpus | tr '\n' ' '))" >&2; exit 2; }
done

mkdir -p "$build"
CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTB_FUZZ=ON >"$build/fuzz-configure.log" 2>&1 ||
  { tail -20 "$build/fuzz-configure.log" >&2; echo "fuzz: cmake failed (log: $build/fuzz-configure.log)" >&2; exit 2; }
cmake --build "$build" -j "$(nproc)" --target tunebench_fuzz >"$build/fuzz-build.log" 2>&1 ||
  { grep -m20 -E 'error' "$build/fuzz-build.log" >&2; echo "fuzz: build failed (log: $build/fuzz-build.log)" >&2; exit 2; }

fuzzer="$build/tunebench_fuzz"
failed=0 total_execs=0 total_seconds=0
printf '%-16s %8s %12s %8s  %s\n' target seconds inputs corpus result
for t in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$t" artifacts="$build/fuzz-artifacts/$t/" log="$build/fuzz-$t.log"
  mkdir -p "$corpus" "$artifacts"
  dict=()
  [ -f "tests/fuzz/dicts/$t.dict" ] && dict=(-dict="tests/fuzz/dicts/$t.dict")
  t0=$(date +%s)
  # The first corpus directory receives new inputs; the committed seeds are only read.
  TB_FUZZ_TARGET="$t" ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1" \
    "$fuzzer" -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts" "${dict[@]}" "$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - t0 ))
  execs=$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
  execs=${execs:-0}
  total_execs=$((total_execs + execs)) total_seconds=$((total_seconds + took))
  result=ok
  if [ $rc -ne 0 ]; then
    failed=1
    found=$(ls -t "$artifacts" 2>/dev/null | head -1)
    result="FAILED (exit $rc): ${found:+$artifacts$found}"
  fi
  printf '%-16s %8d %12d %8d  %s\n' "$t" "$took" "$execs" "$(ls "$corpus" | wc -l)" "$result"
  if [ $rc -ne 0 ]; then
    grep -m12 -E 'ERROR|SUMMARY|uncaught|runtime error|timeout|out-of-memory|leak' "$log" | sed 's/^/    /'
    echo "    log: $log; reproduce: TB_FUZZ_TARGET=$t $fuzzer ${found:+$artifacts$found}"
    echo "    once fixed, commit the input as tests/fuzz/regressions/$t/<name> (the test suite replays it)"
  fi
done
echo "fuzz: ${#targets[@]} targets, $total_seconds s, $total_execs inputs executed, $([ $failed -eq 0 ] && echo 'no failures' || echo FAILURES)"
exit $failed
