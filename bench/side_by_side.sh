#!/usr/bin/env bash
# tunebench vs PyTorch, side by side, in one run per ISA leg (issues 9 and 22): for each shape
# and precision the PyTorch reference (bench/pytorch_reference.py with /usr/bin/python3) and
# then `tunebench profile` with the same shape, cases and precision, so both sides see the same
# machine state; then `tunebench report` renders every profile with the PyTorch column, the
# speed-up and the analytic vs measured memory.
#
# Usage: bench/side_by_side.sh [BUILD_DIR] [OUT_DIR]
#   environment: ISA="native avx2"  (legs, each one run: native | avx2 | avx512_core |
#                  avx512_core_bf16; default native)
#                SHAPES="small 124m"  PRECISIONS="f32 bf16" (default: bf16 only where the leg
#                  has native bf16)  THREADS=<cores>
#                MIN_TIME=2 (tunebench seconds per case)  STEPS=5 WARMUP=2 (PyTorch steps)
#                OPS=0 (1: also profile every core op)
#                GATE_SIZE=1024 (n of the fp32 matmul both sides time first)  MIN_RATIO=0.25
# Writes, per leg, OUT_DIR/<leg>/: gate-pytorch.json, gate-tunebench.json, gate.json (the
# reference check), pytorch-<shape>-<precision>.json, profile-<shape>-<precision>.json,
# report.md and report.html.
#
# The ISA cap applies to both sides:
#   leg               oneDNN (tunebench and PyTorch's mkldnn)  OpenBLAS coretype  ATen kernels
#   native            unset (oneDNN's own choice)              unset (detected)   unset
#   avx2              ONEDNN_MAX_CPU_ISA=AVX2                  Haswell            avx2
#   avx512_core       ONEDNN_MAX_CPU_ISA=AVX512_CORE           SkylakeX           unset
#   avx512_core_bf16  ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16      Cooperlake         unset
# (DNNL_MAX_CPU_ISA is set alike for oneDNN 2.x; ATEN_CPU_CAPABILITY selects rather than caps,
# so it is only set to lower ATen to AVX2.) OPENBLAS_L2_SIZE, which some environments set as an
# old OpenBLAS workaround, is unset in every leg, and OPENBLAS_CORETYPE is set or unset by the
# table, whatever the caller's environment had: each side's JSON records the variables in force
# (machine.isa_cap.env, null = unset) and the caller's (machine.isa_cap.inherited_env), and what
# was dispatched: tunebench's machine.isa (oneDNN's effective ISA); PyTorch's
# machine.blas_runtime (library, OpenBLAS coretype, threads), machine.onednn (oneDNN's ISA and
# kernel) and machine.aten_cpu_capability. A leg above what the CPU has is refused (an OpenBLAS
# coretype the CPU lacks would crash).
#
# The reference check (issue 22): before the models, each leg times an fp32 GATE_SIZE^3 matmul
# in PyTorch and tunebench's matmul peak on the same shape (bench/reference_check.py). When
# PyTorch's runs below MIN_RATIO of tunebench's (the reference BLAS, libblas3, runs at ~2 %) or
# its OpenBLAS pool has another size than THREADS, the script prints the cause and the fix in
# one line and exits 2 instead of printing speed-ups. No torch: exit 2 with the install command.
#
# Threads: both sides use THREADS OpenMP threads with OMP_WAIT_POLICY=PASSIVE (spinning workers
# of one side would steal the cores of the other on a small machine); OpenBLAS (PyTorch's fp32
# matmuls on Debian) gets the same count.
set -euo pipefail

build="${1:-build}"
out="${2:-results/side-by-side}"
legs="${ISA:-native}"
shapes="${SHAPES:-small 124m}"
threads="${THREADS:-$(nproc)}"
min_time="${MIN_TIME:-2}"
steps="${STEPS:-5}"
warmup="${WARMUP:-2}"
ops="${OPS:-0}"
gate_size="${GATE_SIZE:-1024}"
min_ratio="${MIN_RATIO:-0.25}"
here="$(cd "$(dirname "$0")" && pwd)"
tunebench="$build/tunebench"
python=/usr/bin/python3
cap_vars=(ONEDNN_MAX_CPU_ISA DNNL_MAX_CPU_ISA OPENBLAS_CORETYPE OPENBLAS_L2_SIZE ATEN_CPU_CAPABILITY)

die() { echo "side_by_side.sh: $*" >&2; exit 2; }
[ -x "$tunebench" ] || die "$tunebench not found (run make build first)"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, not '$threads'"
[[ "$gate_size" =~ ^[1-9][0-9]*$ ]] && [ "$gate_size" -ge 64 ] || die "GATE_SIZE must be an integer >= 64, not '$gate_size'"
[ -x "$python" ] && "$python" -c "import torch" 2>/dev/null ||
  die "$python has no torch, nothing to compare against: run \`bash bench/install_reference.sh\` (or make side-by-side)"

cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { for f in "$@"; do [[ "$cpu_flags" == *" $f "* ]] || return 1; done; }

# The shapes of bench/pytorch_reference.py, as tunebench profile flags (GPT-2 style).
shape_flags() {
  case "$1" in
    small) echo "--arch gpt2 --layers 6 --dim 384 --heads 6 --vocab 8192 --seq 128 --batch 8" ;;
    124m) echo "--arch gpt2 --layers 12 --dim 768 --heads 12 --vocab 50257 --seq 64 --batch 4" ;;
    *) die "unknown shape '$1' (small, 124m)" ;;
  esac
}
for shape in $shapes; do shape_flags "$shape" >/dev/null; done

# Per leg: oneDNN cap, OpenBLAS coretype, ATen capability ("" = unset), CPU flags it needs,
# and whether it runs bf16 natively.
leg_settings() {
  case "$1" in
    native) echo "|||avx2|$(has avx512_bf16 && echo 1 || echo 0)" ;;
    avx2) echo "AVX2|Haswell|avx2|avx2 fma|0" ;;
    avx512_core) echo "AVX512_CORE|SkylakeX||avx512f avx512bw avx512vl avx512dq|0" ;;
    avx512_core_bf16) echo "AVX512_CORE_BF16|Cooperlake||avx512f avx512bw avx512vl avx512dq avx512_bf16|1" ;;
    *) die "ISA: unknown leg '$1' (native, avx2, avx512_core, avx512_core_bf16)" ;;
  esac
}
[ -n "${legs// /}" ] || die "ISA is empty (native, avx2, avx512_core, avx512_core_bf16)"
for leg in $legs; do
  leg_settings "$leg" >/dev/null  # an unknown leg exits here, not in a subshell
  IFS='|' read -r _ _ _ needs _ <<<"$(leg_settings "$leg")"
  # shellcheck disable=SC2086
  has $needs || die "ISA=$leg needs CPU flags '$needs' that this CPU lacks"
done

# What the caller's environment had, for the JSON, before each leg sets or unsets it.
for v in "${cap_vars[@]}"; do export "SBS_INHERITED_$v=${!v:-}"; done
export OMP_NUM_THREADS="$threads" OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS="$threads"

for leg in $legs; do
  IFS='|' read -r onednn coretype aten _ bf16 <<<"$(leg_settings "$leg")"
  unset "${cap_vars[@]}"
  if [ -n "$onednn" ]; then export ONEDNN_MAX_CPU_ISA="$onednn" DNNL_MAX_CPU_ISA="$onednn"; fi
  if [ -n "$coretype" ]; then export OPENBLAS_CORETYPE="$coretype"; fi
  if [ -n "$aten" ]; then export ATEN_CPU_CAPABILITY="$aten"; fi
  precisions="${PRECISIONS:-$([ "$bf16" = 1 ] && echo "f32 bf16" || echo f32)}"
  for prec in $precisions; do
    case "$prec" in
      f32) ;;
      bf16) [ "$bf16" = 1 ] || die "PRECISIONS: bf16 needs a leg with native bf16 (native on an AVX512-BF16 CPU, or avx512_core_bf16), not ISA=$leg" ;;
      *) die "PRECISIONS: unknown '$prec' (f32, bf16)" ;;
    esac
  done
  dir="$out/$leg"
  mkdir -p "$dir"
  echo "side_by_side.sh: leg $leg (oneDNN cap ${onednn:-none}, OpenBLAS coretype ${coretype:-detected}, ATen ${aten:-default}, OPENBLAS_L2_SIZE unset), $threads threads, shapes: $shapes, precisions: $precisions -> $dir"

  # The reference check: PyTorch's own fp32 matmul against tunebench's peak, same shape.
  "$python" "$here/pytorch_reference.py" --matmul-only --matmul-size "$gate_size" --threads "$threads" \
    --isa-cap "$leg" --json "$dir/gate-pytorch.json"
  "$tunebench" profile --arch gpt2 --layers 1 --dim 64 --heads 1 --vocab 64 --seq 8 --batch 1 \
    --methods infer --no-ops --min-time 0.01 --peak-size "$gate_size" --json "$dir/gate-tunebench.json" >/dev/null
  "$python" "$here/reference_check.py" cap --requested "$leg" "$dir/gate-pytorch.json" "$dir/gate-tunebench.json"
  "$python" "$here/reference_check.py" judge --pytorch "$dir/gate-pytorch.json" \
    --tunebench "$dir/gate-tunebench.json" --min-ratio "$min_ratio" --json "$dir/gate.json" || exit $?

  for shape in $shapes; do
    flags="$(shape_flags "$shape")"
    for prec in $precisions; do
      "$python" "$here/pytorch_reference.py" --shapes "$shape" --precisions "$prec" --threads "$threads" \
        --steps "$steps" --warmup "$warmup" --matmul-size "$gate_size" --isa-cap "$leg" \
        --json "$dir/pytorch-$shape-$prec.json"
      op_flag=(--no-ops)
      [ "$ops" = 1 ] && op_flag=()
      # shellcheck disable=SC2086
      "$tunebench" profile $flags --precision "$prec" --min-time "$min_time" "${op_flag[@]}" \
        --reference "$dir/pytorch-$shape-$prec.json" --json "$dir/profile-$shape-$prec.json"
      "$python" "$here/reference_check.py" cap --requested "$leg" "$dir/pytorch-$shape-$prec.json" "$dir/profile-$shape-$prec.json"
    done
  done
  "$tunebench" report "$dir"
done
