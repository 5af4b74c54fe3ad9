#!/usr/bin/env bash
# skip_reasons.sh BUILD: after a ctest run in BUILD, one line per skipped GoogleTest case with
# the reason it printed (ctest itself shows only "Skipped"), so a log says why each did not run.
log="${1:?usage: skip_reasons.sh BUILD}/Testing/Temporary/LastTest.log"
[ -f "$log" ] || exit 0
awk '/: Skipped$/ { getline reason; pending = reason; next }
     /^\[  SKIPPED \] / && pending != "" { name = $4; print "skipped: " name " (" pending ")"; pending = "" }' "$log"
