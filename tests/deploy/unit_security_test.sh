#!/usr/bin/env bash
# The shipped systemd units are sandboxed as deploy/SECURITY.md says: `systemd-analyze security`
# rates deploy/migmoverd.service and its DPDK variant (which needs hugepages and device access)
# at or under 2.5 ("OK"), and neither runs as root or keeps a capability (the daemon needs none).
set -uo pipefail
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze is not installed"
  exit 0
fi
fail=0
check() {  # UNIT MAX
  local unit=$1 max=$2 out score
  out=$(systemd-analyze security --offline=true "$unit" 2>&1)
  score=$(grep -oE 'Overall exposure level for [^:]+: [0-9.]+' <<<"$out" | grep -oE '[0-9.]+$')
  if [[ -z "$score" ]]; then
    echo "FAIL: $unit: no exposure score:"; echo "$out" | tail -5; fail=1; return
  fi
  if awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }'; then
    echo "ok: $unit exposure $score (at most $max)"
  else
    echo "FAIL: $unit exposure $score, above $max:"
    grep -E '^✗' <<<"$out" | sort -t$'\t' -k3 | tail -15
    fail=1
  fi
  if grep -qE '^(User=root|DynamicUser=no)' "$unit" || ! grep -qE '^(DynamicUser=yes|User=)' "$unit"; then
    echo "FAIL: $unit does not run as an unprivileged user"; fail=1
  fi
  if ! grep -qE '^CapabilityBoundingSet=$' "$unit"; then
    echo "FAIL: $unit keeps capabilities (the daemon needs none)"; fail=1
  fi
}
check deploy/migmoverd.service 2.5
check deploy/migmoverd-dpdk.service 2.5
exit $fail
