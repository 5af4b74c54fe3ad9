#!/usr/bin/env bash
# tunebench vs PyTorch, side by side, in one run (issue 9): for each shape and precision the
# PyTorch reference (bench/pytorch_reference.py, when /usr/bin/python3 has torch) and then
# `tunebench profile` with the same shape, cases and precision, so both sides see the same
# machine state; then `tunebench report` renders every profile with the PyTorch column, the
# speed-up and the analytic vs measured memory.
#
# Usage: bench/side_by_side.sh [BUILD_DIR] [OUT_DIR]
#   environment: SHAPES="small 124m"  PRECISIONS="f32 bf16"  THREADS=<cores>
#                MIN_TIME=2 (tunebench seconds per case)  STEPS=5 WARMUP=2 (PyTorch steps)
#                OPS=0 (1: also profile every core op)
# Writes OUT_DIR/pytorch-<shape>-<precision>.json, OUT_DIR/profile-<shape>-<precision>.json,
# OUT_DIR/report.md and report.html. Threads: both sides use THREADS OpenMP threads with
# OMP_WAIT_POLICY=PASSIVE (spinning workers of one side would steal the cores of the other
# on a small machine); OpenBLAS (PyTorch's fp32 matmuls on Debian) gets the same count.
set -euo pipefail

build="${1:-build}"
out="${2:-results/side-by-side}"
shapes="${SHAPES:-small 124m}"
precisions="${PRECISIONS:-f32 bf16}"
threads="${THREADS:-$(nproc)}"
min_time="${MIN_TIME:-2}"
steps="${STEPS:-5}"
warmup="${WARMUP:-2}"
ops="${OPS:-0}"
here="$(cd "$(dirname "$0")" && pwd)"
tunebench="$build/tunebench"

[ -x "$tunebench" ] || { echo "side_by_side.sh: $tunebench not found (run make build first)" >&2; exit 2; }
mkdir -p "$out"
export OMP_NUM_THREADS="$threads" OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS="$threads"

have_torch=0
if /usr/bin/python3 -c "import torch" 2>/dev/null; then have_torch=1; else
  echo "side_by_side.sh: /usr/bin/python3 has no torch; profiling tunebench alone (apt-get install python3-torch for the comparison)" >&2
fi

# The shapes of bench/pytorch_reference.py, as tunebench profile flags (GPT-2 style).
shape_flags() {
  case "$1" in
    small) echo "--arch gpt2 --layers 6 --dim 384 --heads 6 --vocab 8192 --seq 128 --batch 8" ;;
    124m) echo "--arch gpt2 --layers 12 --dim 768 --heads 12 --vocab 50257 --seq 64 --batch 4" ;;
    *) echo "side_by_side.sh: unknown shape '$1' (small, 124m)" >&2; exit 2 ;;
  esac
}

echo "side_by_side.sh: $threads threads, shapes: $shapes, precisions: $precisions -> $out"
for shape in $shapes; do
  flags="$(shape_flags "$shape")"
  for prec in $precisions; do
    ref=()
    if [ "$have_torch" = 1 ]; then
      /usr/bin/python3 "$here/pytorch_reference.py" --shapes "$shape" --precisions "$prec" --threads "$threads" \
        --steps "$steps" --warmup "$warmup" --json "$out/pytorch-$shape-$prec.json"
      ref=(--reference "$out/pytorch-$shape-$prec.json")
    fi
    op_flag=(--no-ops)
    [ "$ops" = 1 ] && op_flag=()
    # shellcheck disable=SC2086
    "$tunebench" profile $flags --precision "$prec" --min-time "$min_time" "${op_flag[@]}" "${ref[@]}" \
      --json "$out/profile-$shape-$prec.json"
  done
done
"$tunebench" report "$out"
