#!/usr/bin/env bash
# phase.sh NAME CMD [ARGS...]: runs CMD and then prints one line "== NAME  <seconds> s  ok|exit N",
# so a long `./tb test` (and CI, which collects these lines) shows where its time went.
name=$1; shift
t0=$(date +%s)
"$@"
rc=$?
printf '== %-28s %5d s  %s\n' "$name" $(( $(date +%s) - t0 )) "$([ $rc -eq 0 ] && echo ok || echo "exit $rc")"
exit $rc
