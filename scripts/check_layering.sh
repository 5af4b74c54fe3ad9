#!/usr/bin/env bash
# Enforces DESIGN.md's layering: only harness/core/dnnl includes oneDNN headers, and the
# core never includes methods/, tasks/, datasets/, reports/ or the runner.
set -euo pipefail
root="${1:-.}"
cd "$root"
fail=0
bad=$(grep -rlE '#\s*include\s*[<"](oneapi/)?dnnl' --include='*.h' --include='*.hpp' --include='*.cpp' \
        harness methods tasks datasets reports bench tests 2>/dev/null | grep -v '^harness/core/dnnl/' || true)
if [ -n "$bad" ]; then echo "oneDNN included outside harness/core/dnnl: $bad"; fail=1; fi
bad=$(grep -rlE '#\s*include\s*"(methods|tasks|datasets|reports)/|#\s*include\s*"harness/[a-z_]+\.h"' \
        harness/core 2>/dev/null || true)
if [ -n "$bad" ]; then echo "core includes a higher layer: $bad"; fail=1; fi
[ $fail -eq 0 ] && echo "layering ok"
exit $fail
