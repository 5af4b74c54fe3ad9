#!/usr/bin/env bash
# The speed gate tried on real runs (issue 22): does `tunebench compare` pass two identical
# runs on a loaded machine and fail a real slowdown? Makes three result sets of the same small
# matrix, one after the other, under the same competing load:
#   baseline   — the build as it is;
#   identical  — the same again;
#   slowed     — the same with a per-step delay injected into every training step
#                (TB_TEST_STEP_DELAY_MS, a test fault; the records say so in
#                run_info.injected_step_delay_ms) sized from the baseline's mean step time so
#                that training throughput drops by SLOWDOWN (default 0.30, i.e. 30 %);
# then judges `compare baseline identical` (must exit 0) and `compare baseline slowed` (must
# exit 1 naming timing.train.tokens_per_s) and prints what it saw: the load, the machine, each
# run's median step tokens/s with its spread, and both verdicts.
#
# Usage: bench/speed_gate.sh [BUILD_DIR] [OUT_DIR] [--fixtures DIR]
#   environment: METHODS=head,lora TASKS=spam LIMIT=150 THREADS=<cores>
#                (not feature by default: its training steps are logistic-regression iterations
#                of microseconds, so a delay sized for a transformer step multiplies its time)
#                LOAD=1 (busy processes competing for the cores during all three sets;
#                0 = an unloaded machine)  SLOWDOWN=0.30
#   --fixtures DIR: also copy the three sets' records to DIR/{baseline,identical,slowed}
#                (how tests/runner/fixtures/speed_gate was made).
# Exit 0 when both verdicts are as expected, 1 when not, 2 on bad usage or a failed run.
set -euo pipefail

build="${1:-build}"
out="${2:-results/speed-gate}"
fixtures=""
if [[ $# -ge 3 ]]; then
  [[ "$3" == "--fixtures" && $# -eq 4 ]] || { echo "usage: bench/speed_gate.sh [BUILD_DIR] [OUT_DIR] [--fixtures DIR]" >&2; exit 2; }
  fixtures="$4"
fi
methods="${METHODS:-head,lora}"
tasks="${TASKS:-spam}"
limit="${LIMIT:-150}"
threads="${THREADS:-$(nproc)}"
load="${LOAD:-1}"
slowdown="${SLOWDOWN:-0.30}"
tunebench="$build/tunebench"
python=/usr/bin/python3

[[ -x "$tunebench" ]] || { echo "speed_gate: $tunebench not found (build first: make build)" >&2; exit 2; }
[[ "$load" =~ ^[0-9]+$ ]] || { echo "speed_gate: LOAD must be a count of busy processes, got '$load'" >&2; exit 2; }
if [[ -e "$out" ]]; then echo "speed_gate: $out exists; give a fresh OUT_DIR" >&2; exit 2; fi
mkdir -p "$out"

busy=()
stop_load() { for p in "${busy[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_load EXIT
for ((i = 0; i < load; ++i)); do
  sh -c 'while :; do :; done' &
  busy+=($!)
done

run_set() {  # name [env...]
  local name="$1"; shift
  echo "== $name"
  if ! env "$@" "$tunebench" run --methods "$methods" --tasks "$tasks" --limit "$limit" --seeds 0 \
        --threads "$threads" --out "$out/$name" >"$out/$name.log" 2>&1; then
    echo "speed_gate: the $name runs failed; see $out/$name.log" >&2
    tail -5 "$out/$name.log" >&2
    exit 2
  fi
}

# The per-step delay that takes `slowdown` off the slowest-stepping training run's throughput:
# a step of mean length s becomes s + d, so throughput falls by d / (s + d).
step_delay_ms() {
  "$python" - "$out/baseline" "$slowdown" <<'EOF'
import json, math, pathlib, sys
d, slow = pathlib.Path(sys.argv[1]), float(sys.argv[2])
steps = []
for f in sorted(d.glob("*__seed*.json")):
    ti = json.loads(f.read_text())["train_info"]
    if ti.get("steps", 0) > 0 and ti.get("train_seconds", 0) > 0:
        steps.append(ti["train_seconds"] / ti["steps"])
if not steps:
    sys.exit("speed_gate: the baseline has no timed training steps")
# The longest mean step: every other run's throughput falls by at least as much.
s = max(steps)
print(math.ceil(1000.0 * s * slow / (1.0 - slow)))
EOF
}

# "method task: median tok/s ±spread (n)" for each record's train phase.
summarise() {
  "$python" - "$out/$1" <<'EOF'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*__seed*.json")):
    j = json.loads(f.read_text())
    t = j["train_info"].get("timing", {}).get("train")
    u = t and t.get("unit_tokens_per_s")
    name = j["run_info"]["method"] + " " + j["run_info"]["task"]
    if not u:
        print(f"  {name:24s} no per-step train timing")
        continue
    spread = (u["p75"] - u["p25"]) / (2 * u["median"])
    print(f"  {name:24s} train {u['median']:10.0f} tok/s ±{100*spread:4.1f}% over {u['n']} steps"
          + (f", peak fraction {t['peak_fraction']:.3f}" if t.get("peak_fraction") is not None else ""))
EOF
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "speed gate: $methods on $tasks, limit $limit, $threads threads, $load busy competing processes"
echo "machine: $cpu, $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
run_set baseline
run_set identical
delay=$(step_delay_ms)
run_set slowed TB_TEST_STEP_DELAY_MS="$delay"
for s in baseline identical slowed; do echo "$s:"; summarise "$s"; done
echo "injected delay: $delay ms per training step (for a ${slowdown} drop of the slowest-stepping run)"

set +e
"$tunebench" compare "$out/baseline" "$out/identical" >"$out/compare-identical.txt" 2>&1
same=$?
"$tunebench" compare "$out/baseline" "$out/slowed" >"$out/compare-slowed.txt" 2>&1
slowed=$?
set -e
echo "--- compare baseline identical (expected exit 0): exit $same"
cat "$out/compare-identical.txt"
echo "--- compare baseline slowed (expected exit 1): exit $slowed"
cat "$out/compare-slowed.txt"

if [[ -n "$fixtures" ]]; then
  for s in baseline identical slowed; do
    rm -rf "${fixtures:?}/$s"
    mkdir -p "$fixtures/$s"
    cp "$out/$s"/*__seed*.json "$fixtures/$s/"
  done
  echo "fixtures written to $fixtures"
fi

ok=1
[[ $same -eq 0 ]] || { echo "speed_gate: FAIL — two identical runs were judged different (exit $same)"; ok=0; }
if [[ $slowed -ne 1 ]] || ! grep -q "timing.train.tokens_per_s" "$out/compare-slowed.txt"; then
  echo "speed_gate: FAIL — the injected slowdown was not judged a train-speed regression (exit $slowed)"
  ok=0
fi
[[ $ok -eq 1 ]] && echo "speed_gate: ok — identical runs pass, a ${slowdown} slowdown fails"
[[ $ok -eq 1 ]]
