#!/usr/bin/env bash
# A real single-node Slurm on this machine, and `tunebench slurm submit` against it
# (`make integration-slurm`; needs root and `scripts/deps.sh slurm`).
#
# Brings up munged, slurmctld and slurmd as root in the background, all state in one fresh
# directory: a generated slurm.conf with this node's real CPUs (`slurmd -C`),
# proctrack/linuxproc, task/none, select/cons_tres, no cgroups, free ports, its own munge
# socket (a munged of the system, if any, is left alone). Then:
#   1. the reference: a small suite (models/default, tiny-sst2, majority/head/icl x 2 seeds,
#      --limit 8) run in one process;
#   2. the suite submitted as a 2-task array, held; task 1 cancelled before it starts; both
#      jobs released: the report job (afterany) must mark task 1's runs interrupted (failed
#      records, not holes) and write the report;
#   3. the same submission again: task 0's runs resume (nothing runs again), task 1's run;
#      every record ok and its metrics equal to the single-process run's.
# Everything is torn down on exit, failure included: our jobs cancelled, every process whose
# environment names our slurm.conf killed, the directory removed.
# Usage: tests/integration/slurm_cluster.sh [BUILD_DIR]   (exit 0 pass, 1 fail, 2 cannot run)
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD="${1:-build}"
TB="$(realpath -m "$BUILD/tunebench")"
T0=$(date +%s)

cannot() { echo "slurm_cluster: cannot run: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || cannot "needs root (it starts munged, slurmctld and slurmd)"
[ -x "$TB" ] || cannot "$TB is not built (make build)"
[ -r /proc/self/stat ] || cannot "/proc is not mounted (in a chroot: mount --bind /proc ROOT/proc)"
for c in munged mungekey munge unmunge slurmctld slurmd sbatch squeue scontrol sinfo scancel python3; do
  command -v "$c" >/dev/null 2>&1 || cannot "$c is not installed (bash scripts/deps.sh slurm)"
done

# slurmd 22.05 initialises its cgroup plugin even with proctrack/linuxproc and task/none, and
# stops ("No filesystem mounted on /sys/fs/cgroup") when nothing is mounted there, as in a
# chroot whose /sys is bound without its submounts (scripts/fresh_debian.sh, CI): mount an
# empty tmpfs there for the test's duration (no controller is used: proctrack/linuxproc).
CGROUP_MOUNTED=""
if ! awk '$2 == "/sys/fs/cgroup" {f = 1} END {exit !f}' /proc/self/mounts; then
  mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup 2>/dev/null \
    || cannot "nothing is mounted on /sys/fs/cgroup (slurmd needs it) and mounting a tmpfs there failed"
  CGROUP_MOUNTED=1
  # cgroup/v1 (what a tmpfs there means) checks that the named systemd hierarchy is mounted.
  mkdir -p /sys/fs/cgroup/systemd
  mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd 2>/dev/null \
    || { umount /sys/fs/cgroup; cannot "cannot mount the systemd cgroup hierarchy slurmd 22.05 checks for"; }
  echo "slurm_cluster: mounted a tmpfs on /sys/fs/cgroup for slurmd (unmounted at the end)"
fi

D="$(mktemp -d /tmp/tb-slurm.XXXXXX)"
chmod 755 "$D"
CONF="$D/slurm.conf"
# SLURM_CONF names our cluster to the daemons and clients, and marks our processes: it is
# given to each command, never exported to this script (whose subshells must not match).
sl() { SLURM_CONF="$CONF" "$@"; }
MUNGE_SOCKET="$D/munge/munge.socket"
CTLD_PID="" SLURMD_PID=""

log_tail() {
  for f in "$D"/munged.log "$D"/slurmctld.log "$D"/slurmd.log; do
    [ -s "$f" ] && { echo "--- last lines of $f"; tail -n 15 "$f"; }
  done
  for f in "$D"/shared/slurm/*.out; do
    [ -s "$f" ] && { echo "--- last lines of $f"; tail -n 8 "$f"; }
  done
  return 0
}
fail() {
  echo "slurm_cluster: FAIL: $*" >&2
  log_tail >&2
  exit 1
}

# Our processes: every process whose environment names our slurm.conf (the daemons were
# started with it, slurmstepd and the jobs inherit it), plus munged by its pid file.
our_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -qxF "SLURM_CONF=$CONF" && echo "${p#/proc/}"
  done
  return 0
}
teardown() {
  local rc=$? pids i
  trap - EXIT INT TERM
  if [ -n "$CTLD_PID" ] && kill -0 "$CTLD_PID" 2>/dev/null; then
    sl timeout 10 scancel --quiet --user="$(id -un)" 2>/dev/null
    for i in $(seq 1 20); do
      [ -z "$(sl timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  pids="$(our_pids)"
  [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
  for i in $(seq 1 20); do
    pids="$(our_pids)"
    [ -z "$pids" ] && break
    sleep 0.5
  done
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  # munged removes its pid file as it exits: read the pid once.
  local munged_pid
  munged_pid="$(cat "$D/munged.pid" 2>/dev/null)"
  if [ -n "$munged_pid" ]; then
    kill -TERM "$munged_pid" 2>/dev/null
    for i in $(seq 1 20); do
      kill -0 "$munged_pid" 2>/dev/null || break
      sleep 0.25
    done
  fi
  rm -rf "$D"
  [ -n "$CGROUP_MOUNTED" ] && { umount /sys/fs/cgroup/systemd; umount /sys/fs/cgroup; } 2>/dev/null
  echo "slurm_cluster: torn down (daemons stopped, $D removed) after $(( $(date +%s) - T0 )) s"
  exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- munge -------------------------------------------------------------------------------
mkdir -p "$D/munge" "$D/state" "$D/spool"
chmod 700 "$D/munge"
mungekey -c -k "$D/munge/munge.key" >/dev/null 2>&1 || cannot "mungekey could not create a key in $D/munge"
chmod 600 "$D/munge/munge.key"
# --force: munged refuses to run as root, or with its files under /tmp, without it.
munged --force --socket="$MUNGE_SOCKET" --key-file="$D/munge/munge.key" --pid-file="$D/munged.pid" \
  --log-file="$D/munged.log" --seed-file="$D/munge/munged.seed" >/dev/null 2>&1 \
  || { tail -n 5 "$D/munged.log" 2>/dev/null >&2; cannot "munged did not start (log above)"; }
munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 \
  || cannot "munge credentials do not round-trip through $MUNGE_SOCKET"

# ---- slurm.conf --------------------------------------------------------------------------
HOST="$(hostname -s)"
NODE="$(slurmd -C 2>/dev/null | head -n 1)"
CPUS="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE")"
[ -n "$CPUS" ] || cannot "slurmd -C did not report this node's CPUs (got: $NODE)"
NODE_HW="$(sed 's/^NodeName=[^ ]* //' <<<"$NODE")"
CTLD_PORT=$(free_port) SLURMD_PORT=$(free_port)
cat >"$CONF" <<EOF
# Generated by tests/integration/slurm_cluster.sh: one node, this machine ($CPUS CPUs).
ClusterName=tunebench-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
NodeName=tbnode NodeHostname=$HOST NodeAddr=127.0.0.1 $NODE_HW State=UNKNOWN
PartitionName=tb Nodes=tbnode Default=YES MaxTime=INFINITE State=UP
EOF

# ---- the daemons ------------------------------------------------------------------------
sl slurmctld -D -i -f "$CONF" >"$D/slurmctld.stdout" 2>&1 &
CTLD_PID=$!
sl slurmd -D -N tbnode -f "$CONF" >"$D/slurmd.stdout" 2>&1 &
SLURMD_PID=$!
up=0
for i in $(seq 1 60); do
  kill -0 "$CTLD_PID" 2>/dev/null || { cat "$D/slurmctld.stdout" >&2; fail "slurmctld exited at start"; }
  kill -0 "$SLURMD_PID" 2>/dev/null || { cat "$D/slurmd.stdout" >&2; fail "slurmd exited at start"; }
  state="$(sl timeout 5 sinfo -h -N -o %t 2>/dev/null)"
  [ "$state" = "idle" ] && { up=1; break; }
  sleep 0.5
done
[ $up -eq 1 ] || fail "node tbnode not idle after 30 s (sinfo: '${state:-no answer}')"
echo "slurm_cluster: Slurm $(sl sinfo -V | cut -d' ' -f2) up: node tbnode, $CPUS CPUs, ports $CTLD_PORT/$SLURMD_PORT"

# ---- the suite and the single-process reference ------------------------------------------
cat >"$D/suite.ini" <<EOF
[run]
methods = majority, head, icl
tasks = tiny-sst2
seeds = 0, 1
model = models/default
limit = 8
threads = 1

[head]
epochs = 2
max-length = 32

[icl]
k = 0,1
EOF
TASK="$PWD/tasks/examples/tiny-sst2.ini"
"$TB" run --suite "$D/suite.ini" --task-file "$TASK" --out "$D/single" >"$D/single.log" 2>&1 \
  || { tail -n 20 "$D/single.log" >&2; fail "the single-process run failed"; }

# Submits, prints "<array id> <report id>".
submit() {
  local out
  out="$(sl "$TB" slurm submit --suite "$D/suite.ini" --task-file "$TASK" --out "$D/shared" --array-size 2 -- "$@" 2>&1)" \
    || { echo "$out" >&2; fail "tunebench slurm submit failed"; }
  echo "$out" >&2
  sed -n 's/^submitted array job \([0-9]*\) .* report job \([0-9]*\) .*/\1 \2/p' <<<"$out"
}
wait_jobs() {  # until none of our jobs is queued or running (at most 240 s)
  local i
  for i in $(seq 1 480); do
    [ -z "$(sl timeout 5 squeue -h -o %i 2>/dev/null)" ] && return 0
    sleep 0.5
  done
  sl squeue >&2
  fail "jobs still queued or running after 240 s"
}
job_state() { sl scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -n 1; }

# ---- 1st submission: task 1 cancelled before it starts ------------------------------------
read -r ARRAY REPORT < <(submit --hold)
[ -n "${ARRAY:-}" ] && [ -n "${REPORT:-}" ] || fail "no job ids from tunebench slurm submit"
sl scontrol show job "$REPORT" | grep -q "Dependency=afterany:${ARRAY}" || fail "report job $REPORT does not depend afterany on $ARRAY"
sl scancel "${ARRAY}_1" || fail "scancel ${ARRAY}_1"
sl scontrol release "$ARRAY" "$REPORT" || fail "scontrol release"
wait_jobs
[ "$(job_state "$REPORT")" = COMPLETED ] || fail "report job $REPORT: $(job_state "$REPORT")"
python3 - "$D" <<'EOF' || fail "after a cancelled array task"
import json, os, sys
d = sys.argv[1]
names = sorted(f for f in os.listdir(f"{d}/single") if f.endswith(".json") and "__seed" in f)
status = {n: json.load(open(f"{d}/shared/{n}"))["train_info"]["status"] for n in names if os.path.exists(f"{d}/shared/{n}")}
assert len(status) == len(names) == 6, f"holes: {len(status)} of {len(names)} records"
failed = sorted(n for n, s in status.items() if s != "ok")
assert all(status[n] == "interrupted" for n in failed), status
assert 0 < len(failed) < len(names), f"expected shard 1's runs interrupted, got {status}"
assert os.path.exists(f"{d}/shared/report.html"), "no report.html"
print(f"slurm_cluster: task 1 cancelled: {len(names) - len(failed)} runs ok, {len(failed)} marked interrupted, report written")
EOF

# ---- 2nd submission: resumes ----------------------------------------------------------------
read -r ARRAY2 REPORT2 < <(submit)
wait_jobs
[ "$(job_state "$REPORT2")" = COMPLETED ] || fail "report job $REPORT2: $(job_state "$REPORT2")"
grep -q "^0 runs executed" "$D/shared/slurm/array-${ARRAY2}_0.out" || fail "task 0 of the re-submission ran runs again"
python3 - "$D" <<'EOF' || fail "the merged results differ from the single-process run"
import json, os, sys
d = sys.argv[1]
names = sorted(f for f in os.listdir(f"{d}/single") if f.endswith(".json") and "__seed" in f)
for n in names:
    a, b = json.load(open(f"{d}/single/{n}")), json.load(open(f"{d}/shared/{n}"))
    assert b["train_info"]["status"] == "ok", f"{n}: {b['train_info']['status']}: {b['train_info']['message']}"
    assert a["metrics"] == b["metrics"], f"{n}: metrics differ:\n{a['metrics']}\n{b['metrics']}"
    assert a["run_info"]["matrix_index"] == b["run_info"]["matrix_index"], n
extra = sorted(f for f in os.listdir(f"{d}/shared") if f.endswith(".json") and "__seed" in f and f not in names)
assert not extra, f"records the single run has not: {extra}"
report = open(f"{d}/shared/report.md").read()
assert "interrupted" not in report, "the report still lists interrupted runs"
print(f"slurm_cluster: re-submission resumed; {len(names)} records, metrics equal to the single-process run's")
EOF
echo "slurm_cluster: PASS"
