#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test.
#   ./deploy/test.sh            all tests
#   ./deploy/test.sh //daemon/...   only the given Bazel targets
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

# One closing line CI can read: "N passed, N failed".
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' /tmp/migmover-test.log || true)
failed=$(grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' /tmp/migmover-test.log || true)
echo "${passed} passed, ${failed} failed"
exit "$rc"
