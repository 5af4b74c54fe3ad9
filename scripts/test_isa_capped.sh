#!/usr/bin/env bash
# test_isa_capped.sh BUILD [ISA] [JOBS]: the core and model tests (every suite defined in
# tests/core/ and tests/model/) again, with oneDNN capped at ISA (default AVX2) through
# ONEDNN_MAX_CPU_ISA. The capability query that gates bf16 reads oneDNN's effective ISA, so
# on an AVX-512/bf16 machine this runs what an AVX2-only CPU runs: its bf16 tests skip with
# a reason, and a test that would fail there fails here. Dnn.HonoursIsaCap checks the cap took.
set -euo pipefail
build=${1:?usage: test_isa_capped.sh BUILD [ISA] [JOBS]}
isa=${2:-AVX2}
jobs=${3:-$(nproc)}
cd "$(dirname "$0")/.."
suites=$(grep -hoE '^(TEST|TEST_F|TEST_P|TYPED_TEST)\( *[A-Za-z0-9_]+' tests/core/*.cpp tests/model/*.cpp \
         | sed -E 's/.*\( *//' | sort -u | paste -sd'|')
[ -n "$suites" ] || { echo "test_isa_capped.sh: no test suites found in tests/core, tests/model" >&2; exit 2; }
export ONEDNN_MAX_CPU_ISA=$isa
# -R matches "Suite.Case" and parameterised "Prefix/Suite.Case/N"; --no-tests=error fails on none.
rc=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" --no-tests=error -R "(^|/)($suites)\." || rc=$?
bash scripts/skip_reasons.sh "$build"
exit $rc
