#!/usr/bin/env bash
# `make run`: the default suite (suites/default.ini: every method on sentiment-yelp, spam
# and fortune-topics with models/default, seed 0) into a results directory, then the path
# of its records and summary. Usage: scripts/run_default.sh BUILD_DIR OUT_DIR
# OUT_DIR is resumed when it already holds records of this suite (a finished suite re-runs
# nothing); pass a fresh OUT_DIR for a new run.
set -euo pipefail

build=${1:-build}
out=${2:-results/default}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

cli="$build/tunebench"
if [[ ! -x "$cli" ]]; then
  echo "run_default.sh: $cli not found; build first (make build)" >&2
  exit 2
fi
model=models/default
for f in config.json model.safetensors tokenizer.json; do
  if [[ ! -f "$model/$f" ]]; then
    echo "run_default.sh: $model/$f is missing: the default model does not exist yet." >&2
    echo "  make it with: $cli pretrain --out $model   (see tunebench pretrain --help)" >&2
    exit 2
  fi
done

mkdir -p "$out"
status=0
"$cli" run --suite suites/default.ini --out "$out" --resume || status=$?
if [[ -f "$out/summary.md" ]]; then
  # The report reads every record, failed runs included (shown as failed).
  "$cli" report "$out" || status=$?
  echo
  echo "records: $(cd "$out" && pwd)"
  echo "report:  $(cd "$out" && pwd)/report.html (and report.md, summary.csv)"
fi
exit $status
