#!/usr/bin/env bash
# Proves scripts/check_layering.sh fails on forbidden edges (ctest architecture.layering_rejects).
# Copies the tree's C++ sources to a temporary directory, checks that the copy passes, then
# adds one forbidden include (or file) at a time and expects exit 1 with a message naming it.
# Usage: check_layering_test.sh SOURCE_ROOT
set -euo pipefail
src="$(cd "${1:?usage: check_layering_test.sh SOURCE_ROOT}" && pwd)"
checker="$src/scripts/check_layering.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

copy_tree() {
  rm -rf "$tmp/tree"
  mkdir -p "$tmp/tree"
  (cd "$src" && find harness datasets tasks methods reports bench tests -type f \
     \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cc' \) -print0 |
     xargs -0 cp --parents -t "$tmp/tree")
}

failures=0
# expect_rejected NAME EXPECTED_TEXT: runs the checker on the (modified) copy.
expect_rejected() {
  local name="$1" want="$2" out rc=0
  out=$(bash "$checker" "$tmp/tree" 2>&1) || rc=$?
  if [ "$rc" -ne 1 ]; then
    echo "FAIL $name: exit $rc, expected 1"; echo "$out"; failures=$((failures + 1))
  elif ! grep -qF -- "$want" <<< "$out"; then
    echo "FAIL $name: output does not name the edge ('$want')"; echo "$out"; failures=$((failures + 1))
  else
    echo "ok   $name: $(grep -F -- "$want" <<< "$out" | head -1)"
  fi
}

copy_tree
out=$(bash "$checker" "$tmp/tree" 2>&1) || { echo "FAIL: the unmodified tree does not pass:"; echo "$out"; exit 1; }
echo "ok   unmodified tree: $out"

# Each case: one forbidden include appended to one file of the copy.
add_include() { printf '#include "%s"\n' "$2" >> "$tmp/tree/$1"; }

add_include reports/results.h methods/method.h
expect_rejected "reports -> methods" "reports -> methods/method.h: not allowed"

copy_tree; add_include reports/report.cpp harness/runner/runner.h
expect_rejected "reports -> a runner header other than the record type" "reports -> harness/runner/runner.h: not allowed"

copy_tree; add_include reports/report.cpp harness/tools/profile.h
expect_rejected "reports -> tools" "reports -> harness/tools/profile.h: not allowed"

copy_tree; add_include harness/core/model.h harness/runner/record.h
expect_rejected "core -> runner" "harness/core -> harness/runner/record.h: not allowed"

copy_tree; add_include harness/base/hash.h harness/core/model.h
expect_rejected "base -> core" "harness/base -> harness/core/model.h: not allowed"

copy_tree; add_include datasets/text.h harness/core/model.h
expect_rejected "datasets -> core" "datasets -> harness/core/model.h: not allowed"

copy_tree; add_include datasets/builders.cpp tasks/task.h
expect_rejected "datasets -> tasks" "datasets -> tasks/task.h: not allowed"

copy_tree; add_include tasks/task.h methods/method.h
expect_rejected "tasks -> methods" "tasks -> methods/method.h: not allowed"

copy_tree; add_include methods/method.h harness/runner/runner.h
expect_rejected "methods -> runner" "methods -> harness/runner/runner.h: not allowed"

copy_tree; add_include harness/runner/runner.h reports/results.h
expect_rejected "runner -> reports" "harness/runner -> reports/results.h: not allowed"

copy_tree; add_include harness/tools/pretrain.h harness/cli/commands.h
expect_rejected "tools -> cli" "harness/tools -> harness/cli/commands.h: not allowed"

copy_tree; add_include methods/lora.h harness/core/dnnl/dnn.h
expect_rejected "methods -> the oneDNN wrapper" "methods -> harness/core/dnnl/dnn.h: not allowed"

# (the header name is assembled so that this script itself never reads as an include of it)
copy_tree; printf '#include <oneapi/%s.hpp>\n' "dnnl/dnnl" >> "$tmp/tree/harness/core/ops.h"
expect_rejected "oneDNN outside harness/core/dnnl" "harness/core/ops.h:"

copy_tree; printf '// stray\n' > "$tmp/tree/harness/stray.cpp"
expect_rejected "a file in harness/ outside a layer folder" "harness/stray.cpp: in no layer folder"

copy_tree; add_include methods/lora.h harness/runner/no_such.h
expect_rejected "an include of a missing header" "no such file"

# (assembled for the same reason: this script must not itself read as a spelled name)
copy_tree; printf 'const char* kName = "model.%s.0.%s.q_proj.weight";\n' "layers" "self_attn" >> "$tmp/tree/methods/lora.cpp"
expect_rejected "a checkpoint tensor name in methods/" "methods/ spells checkpoint tensor names"

copy_tree; printf '// the fused %s linear\n' "c_attn" >> "$tmp/tree/methods/head.cpp"
expect_rejected "a checkpoint module name in a methods/ comment" "methods/head.cpp:"

if [ "$failures" -ne 0 ]; then echo "$failures case(s) failed"; exit 1; fi
echo "every forbidden edge was rejected"
