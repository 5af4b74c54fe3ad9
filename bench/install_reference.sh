#!/usr/bin/env bash
# Installs the PyTorch side of bench/side_by_side.sh as it is meant to be measured (issue 22,
# item 5): Debian's PyTorch with OpenBLAS as its BLAS, not the reference BLAS.
#
# Why this script exists: Debian's libtorch1.13 depends on `libblas3 | libblas.so.3` and only
# *recommends* OpenBLAS. Installed with --no-install-recommends (as scripts/deps.sh installs
# everything), apt picks libblas3, the unoptimised reference BLAS, and PyTorch's fp32 matmuls
# run ~44x slower (2.8 against 124.6 GFLOP/s at 1024^3, 2 threads). So OpenBLAS is named here,
# and the libblas.so.3 / liblapack.so.3 alternatives are pointed at it when they are not.
#
# Packages, each with its reason:
#   python3-torch         the PyTorch reference itself (1.13 on bookworm); runs with /usr/bin/python3
#   libopenblas0-pthread  the optimised BLAS for PyTorch's fp32 matmuls; with --no-install-recommends
#                         the reference BLAS (libblas3) would be used instead
#   python3-threadpoolctl lets bench/pytorch_reference.py record which BLAS was loaded, its
#                         coretype (the kernels OpenBLAS dispatched to) and its thread count
#
# Usage: bash bench/install_reference.sh      (root, or sudo available; idempotent)
set -euo pipefail

pkgs=(python3-torch libopenblas0-pthread python3-threadpoolctl)
arch_triplet="x86_64-linux-gnu"
openblas_dir="/usr/lib/$arch_triplet/openblas-pthread"

if [ "$(id -u)" = 0 ]; then as_root=(); elif command -v sudo >/dev/null; then as_root=(sudo); else
  echo "install_reference.sh: needs root (or sudo) for apt-get and update-alternatives" >&2; exit 2
fi
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || {
  echo "install_reference.sh: only amd64 Debian is supported (dpkg architecture: $(dpkg --print-architecture 2>/dev/null || echo none))" >&2; exit 2; }

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install_reference.sh: installing ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install_reference.sh: ${pkgs[*]} already installed"
fi

# Point libblas.so.3 and liblapack.so.3 at OpenBLAS when they are not (libblas3 may have been
# installed first, or selected by hand: the alternative then stays in manual mode).
for lib in blas lapack; do
  name="lib$lib.so.3-$arch_triplet"
  want="$openblas_dir/lib$lib.so.3"
  [ -e "$want" ] || { echo "install_reference.sh: $want missing after installing libopenblas0-pthread" >&2; exit 2; }
  current="$(update-alternatives --query "$name" 2>/dev/null | sed -n 's/^Value: //p')"
  if [ "$current" != "$want" ]; then
    echo "install_reference.sh: $name pointed at ${current:-nothing}; selecting OpenBLAS ($want)"
    "${as_root[@]}" update-alternatives --set "$name" "$want"
  fi
done
update-alternatives --display "libblas.so.3-$arch_triplet" | sed -n '1,3p' | sed 's/^/install_reference.sh: /'
/usr/bin/python3 -c "import torch; print('install_reference.sh: torch', torch.__version__)"
