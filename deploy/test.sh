#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test.
#   ./deploy/test.sh            all tests, then the kernel-in-the-loop VM (tests/kernel/run.sh)
#   ./deploy/test.sh //daemon/...   only the given Bazel targets (no VM)
#   MIGMOVER_SKIP_KERNEL=1 ./deploy/test.sh   all Bazel tests, no VM (quick local runs)
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/install-deps.sh

targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(//...)
fi

bazel build "${targets[@]}"
# Tests start real daemons and io_uring rings on 2 shared cores: run them one at a time.
set +e
bazel test --local_test_jobs=1 "${targets[@]}" 2>&1 | tee /tmp/migmover-test.log
rc=${PIPESTATUS[0]}
set -e

passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' /tmp/migmover-test.log || true)
failed=$(grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' /tmp/migmover-test.log || true)

# The real kernel's VFIO migration driver in a VM: one more test, counted as one.
if ((${#@} == 0)) && [[ "${MIGMOVER_SKIP_KERNEL:-0}" != 1 ]]; then
  if tests/kernel/run.sh; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    rc=1
  fi
elif ((${#@} == 0)); then
  echo "kernel-in-the-loop: skipped (MIGMOVER_SKIP_KERNEL=1)"
fi

# One closing line CI can read: "N passed, N failed".
echo "${passed} passed, ${failed} failed"
exit "$rc"
