#!/usr/bin/env bash
# Runs commands in a bare Debian 12, as a new user has it: debootstrap a minimal bookworm
# (variant minbase, plus git and ca-certificates, nothing else) into ROOT, clone the committed
# project into it, and run each COMMAND there from the clone's root, timed, one log per command.
# This is what CI runs (.ci/run); run it yourself before trusting an install change:
#
#   scripts/fresh_debian.sh [--root DIR] [--keep] [--commit REF] -- "./tb run" "./tb test"
#
# As root (debootstrap, chroot and bind mounts need it), from inside the checkout.
#   --root DIR    where the fresh system goes (default /var/tmp/tunebench-fresh); made anew
#                 unless --keep, which reuses an existing one (faster, but no longer bare)
#   --commit REF  what to clone (default HEAD); uncommitted changes are never seen
# The host's Debian mirror and its trusted CA certificates (the package registries are reached
# through them) are the only things taken from this machine. Exit 0 only if every command
# exits 0; a failing command's last log lines are printed.
set -uo pipefail
ROOT=/var/tmp/tunebench-fresh
KEEP=0
REF=HEAD
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --commit) REF=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh_debian.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "fresh_debian.sh: no command given (see --help)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "fresh_debian.sh: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
SRC=$(git rev-parse --show-toplevel 2>/dev/null) || { echo "fresh_debian.sh: run it inside the project checkout" >&2; exit 2; }
SHA=$(git -C "$SRC" rev-parse --verify "$REF^{commit}" 2>/dev/null) || { echo "fresh_debian.sh: --commit '$REF' is not a commit" >&2; exit 2; }
case "$ROOT" in /|/usr|/var|/tmp|/root|"") echo "fresh_debian.sh: refusing --root '$ROOT'" >&2; exit 2 ;; esac

now() { date +%s; }
phase() { printf '== %-28s %5d s  %s\n' "$1" "$2" "$3"; }
T_START=$(now)

# The host needs debootstrap (the host only: nothing of the host reaches the fresh root).
if ! command -v debootstrap >/dev/null; then
  t=$(now)
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap; } \
    >/tmp/fresh-debian-host.log 2>&1 || { echo "fresh_debian.sh: cannot install debootstrap on the host:" >&2; tail -5 /tmp/fresh-debian-host.log >&2; exit 2; }
  phase "host: install debootstrap" $(( $(now)-t )) ok
fi

umount_all() {
  for m in dev/pts dev sys proc; do
    mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
  done
  return 0
}
trap umount_all EXIT
trap 'umount_all; exit 130' INT TERM

# The mirror this machine already uses (deb822 sources first, then the one-line format).
mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | grep '/debian/*$' | head -1)
[ -n "$mirror" ] || mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | grep '/debian/*$' | head -1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

if [ $KEEP -eq 0 ] || [ ! -x "$ROOT/usr/bin/apt-get" ]; then
  umount_all
  if awk -v r="$ROOT/" 'index($2, r) == 1 {found=1} END {exit !found}' /proc/mounts; then
    echo "fresh_debian.sh: something is still mounted under $ROOT; not removing it" >&2; exit 1
  fi
  rm -rf --one-file-system "$ROOT"
  mkdir -p "$(dirname "$ROOT")"
  t=$(now)
  if ! debootstrap --variant=minbase --include=ca-certificates,git bookworm "$ROOT" "$mirror" \
       >"$ROOT.debootstrap.log" 2>&1; then
    phase "debootstrap (minbase)" $(( $(now)-t )) FAILED
    tail -20 "$ROOT.debootstrap.log" | sed 's/^/    /'
    exit 1
  fi
  phase "debootstrap (minbase)" $(( $(now)-t )) "bookworm from $mirror"
fi

# Name resolution and this machine's trust roots, nothing else.
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp -r /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
  chroot "$ROOT" update-ca-certificates >/dev/null 2>&1 || true
fi
for m in proc sys dev dev/pts; do
  mkdir -p "$ROOT/$m"
  mountpoint -q "$ROOT/$m" || mount --bind "/$m" "$ROOT/$m"
done

t=$(now)
rm -rf "$ROOT/root/project"
if ! git clone -q --no-hardlinks "$SRC" "$ROOT/root/project" || ! git -C "$ROOT/root/project" checkout -q "$SHA"; then
  echo "fresh_debian.sh: cannot clone $SRC at $SHA" >&2; exit 1
fi
phase "clone" $(( $(now)-t )) "$(git -C "$SRC" log -1 --format='%h %s' "$SHA" | cut -c1-70)"

rc_all=0; n=0
for cmd in "$@"; do
  n=$((n+1)); t=$(now)
  log="$ROOT/root/$n.log"
  chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    /bin/bash -c "cd /root/project && $cmd" >"$log" 2>&1
  rc=$?
  # The phases a command printed itself (scripts/phase.sh), then the command's own line.
  grep -E '^== ' "$log" | sed 's/^/  /'
  phase "[$n] $cmd" $(( $(now)-t )) "exit $rc (log $log)"
  if [ $rc -ne 0 ]; then
    rc_all=1
    echo "   last lines of $log:"
    tail -40 "$log" | sed 's/^/    /'
  fi
done
phase "total" $(( $(now)-T_START )) "$([ $rc_all -eq 0 ] && echo ok || echo FAILED)"
exit $rc_all
