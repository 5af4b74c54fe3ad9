#!/usr/bin/env bash
# The layering of docs/ARCHITECTURE.md, checked on every test run (ctest architecture.layering).
#
# Every C++ file (*.h, *.hpp, *.cpp, *.cc) belongs to the longest folder of the table below that
# holds it (tests/core/x.cpp to tests, harness/core/dnnl/dnn.h to harness/core/dnnl); every
# `#include "..."` of a project header is an edge from the including file's folder to the
# header's folder. An edge the table does not list fails, and so does a file
# outside every folder of the table (harness/ holds only layer folders). A folder may always
# include its own headers. An entry that names a header (ends in .h) allows that one header of
# its folder and no other. Also: only harness/core/dnnl/ includes oneDNN's headers, and no file
# in methods/ spells a checkpoint tensor name.
#
# Usage: check_layering.sh [ROOT]   (exit 0: ok, 1: a forbidden edge, each printed as
#                                   "file:line: from-folder -> header: not allowed")
set -euo pipefail
root="${1:-.}"
cd "$root"

# The table: folder -> what it may include, lowest layer first.
#   base <- core <- datasets <- tasks <- methods <- runner <- {reports, tools} <- cli
declare -A allow=(
  [harness/base]=""
  [harness/core/dnnl]="harness/base"
  [harness/core]="harness/base harness/core/dnnl"
  [datasets]="harness/base"
  [tasks]="harness/base datasets"
  [methods]="harness/base harness/core datasets tasks"
  [harness/runner]="harness/base harness/core harness/core/dnnl datasets tasks methods"
  [reports]="harness/base harness/runner/record.h harness/runner/profile_json.h"
  [harness/tools]="harness/base harness/core harness/core/dnnl datasets tasks methods harness/runner"
  [harness/cli]="harness/base harness/core datasets tasks methods harness/runner reports harness/tools"
  [bench]="harness/base harness/core harness/core/dnnl"
  [tests]="harness/base harness/core harness/core/dnnl datasets tasks methods harness/runner reports harness/tools"
)
# Generated headers (build/generated), with the folder they belong to.
declare -A generated=([tb_version.h]=harness/base)
# Folders whose C++ files the check reads; a file in none of the table's folders fails.
scan="harness datasets tasks methods reports bench tests"

# The table folder that holds `path` (longest match), or "" if none does.
owner() {
  local path="$1" best="" key
  for key in "${!allow[@]}"; do
    if [[ "$path" == "$key/"* && ${#key} -gt ${#best} ]]; then best="$key"; fi
  done
  printf '%s' "$best"
}

fail=0
declare -A owner_of=()
files=$(find $scan -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cc' \) 2>/dev/null | sort)
for f in $files; do
  o=$(owner "$f")
  if [ -z "$o" ]; then
    echo "$f: in no layer folder of the table (harness/ holds only layer folders)"
    fail=1
    continue
  fi
  owner_of[$f]="$o"
done

# Every quoted include: file:line:header.
edges=$(grep -HnE '^\s*#\s*include\s*"[^"]+"' $files 2>/dev/null |
        sed -E 's/^([^:]+):([0-9]+):.*#\s*include\s*"([^"]+)".*/\1:\2:\3/' || true)
while IFS=: read -r f line header; do
  [ -n "$f" ] || continue
  from="${owner_of[$f]:-}"
  [ -n "$from" ] || continue  # already reported above
  if [[ "$header" != */* ]]; then
    if [ -n "${generated[$header]:-}" ]; then
      to="${generated[$header]}"
    else
      echo "$f:$line: includes \"$header\": not a project path (write the header's path from the root)"
      fail=1
      continue
    fi
  else
    if [ ! -e "$header" ]; then
      echo "$f:$line: includes \"$header\": no such file in the tree"
      fail=1
      continue
    fi
    to=$(owner "$header")
    if [ -z "$to" ]; then
      echo "$f:$line: includes \"$header\": in no layer folder of the table"
      fail=1
      continue
    fi
  fi
  [ "$to" = "$from" ] && continue
  ok=0
  for a in ${allow[$from]}; do
    if [ "$a" = "$to" ] || [ "$a" = "$header" ]; then ok=1; break; fi
  done
  if [ $ok -eq 0 ]; then
    echo "$f:$line: $from -> $header: not allowed (allowed: ${allow[$from]:-nothing})"
    fail=1
  fi
done <<< "$edges"

# oneDNN: only its wrapper includes it.
bad=$(grep -HnE '^\s*#\s*include\s*[<"](oneapi/)?dnnl' $files 2>/dev/null | grep -v '^harness/core/dnnl/' || true)
if [ -n "$bad" ]; then
  echo "oneDNN included outside harness/core/dnnl:"
  echo "$bad"
  fail=1
fi

# Methods address the model through its site table (harness/core/model.h: site, layer_of,
# token_embedding, lm_head, layer_prefix, site_module), never by a checkpoint tensor name, so
# a new model family is a change to the core alone. Comments count too: a name in a comment
# is a name the next edit copies.
names=$(grep -rnE '"model\.|transformer\.h|self_attn|c_attn' methods/ 2>/dev/null || true)
if [ -n "$names" ]; then
  echo "methods/ spells checkpoint tensor names (use the model's site table in harness/core/model.h):"
  echo "$names"
  fail=1
fi

[ $fail -eq 0 ] && echo "layering ok"
exit $fail
