#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test.
#   ./deploy/test.sh            all tests, then the kernel-in-the-loop VM (tests/kernel/run.sh)
#   ./deploy/test.sh //daemon/...   only the given Bazel targets (no VM)
#   MIGMOVER_SKIP_KERNEL=1 ./deploy/test.sh   all Bazel tests, no VM (quick local runs)
#   MIGMOVER_SKIP_SANITIZERS=1 ./deploy/test.sh   without the ASan+UBSan and TSan runs of the tests
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

# Bazel's per-target verdicts in a log: "count_passed LOG", "count_failed LOG".
count_passed() { grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$1" || true; }
count_failed() { grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "$1" || true; }
passed=$(count_passed /tmp/migmover-test.log)
failed=$(count_failed /tmp/migmover-test.log)

# The same tests built with AddressSanitizer + UndefinedBehaviorSanitizer (.bazelrc's
# --config=asan; tests tagged no_sanitizer are timing-bound and skip it). Each counts again.
if [[ "${MIGMOVER_SKIP_SANITIZERS:-0}" != 1 ]]; then
  set +e
  # Built first, so no compile competes with the tests for the two cores.
  { bazel build --config=asan "${targets[@]}" &&
      bazel test --config=asan --local_test_jobs=1 "${targets[@]}"; } 2>&1 |
    tee /tmp/migmover-asan.log
  arc=${PIPESTATUS[0]}
  set -e
  apassed=$(count_passed /tmp/migmover-asan.log)
  afailed=$(count_failed /tmp/migmover-asan.log)
  echo "ASan+UBSan run: ${apassed} tests passed, ${afailed} failed"
  passed=$((passed + apassed))
  failed=$((failed + afailed))
  if ((arc != 0)); then
    rc=1
    ((afailed > 0)) || failed=$((failed + 1))
  fi
fi

# The same tests built with ThreadSanitizer (.bazelrc's --config=tsan: the abseil shim makes
# Debian's uninstrumented locks visible). A report fails the test that printed it; the daemons a
# test starts write theirs to their own logs (the test's outputs), so those are counted here.
if [[ "${MIGMOVER_SKIP_SANITIZERS:-0}" != 1 ]]; then
  set +e
  { bazel build --config=tsan "${targets[@]}" &&
      bazel test --config=tsan --local_test_jobs=1 "${targets[@]}"; } 2>&1 |
    tee /tmp/migmover-tsan.log
  trc=${PIPESTATUS[0]}
  set -e
  tpassed=$(count_passed /tmp/migmover-tsan.log)
  tfailed=$(count_failed /tmp/migmover-tsan.log)
  # bazel-testlogs now points at the tsan run's logs.
  daemon_reports=0
  while IFS= read -r zip; do
    n=$(unzip -p "$zip" 2>/dev/null | grep -c 'WARNING: ThreadSanitizer' || true)
    if ((n > 0)); then
      echo "ThreadSanitizer: ${n} report(s) in the daemon logs of ${zip}"
      daemon_reports=$((daemon_reports + n))
    fi
  done < <(find -L bazel-testlogs/ -name outputs.zip 2>/dev/null)
  echo "ThreadSanitizer run: ${tpassed} tests passed, ${tfailed} failed," \
    "${daemon_reports} report(s) in daemon logs"
  passed=$((passed + tpassed))
  failed=$((failed + tfailed))
  if ((daemon_reports > 0)); then
    failed=$((failed + 1))
    rc=1
  fi
  if ((trc != 0)); then
    rc=1
    ((tfailed > 0)) || failed=$((failed + 1))
  fi
fi

# Clang's thread-safety analysis of the ABSL_GUARDED_BY annotations (GCC ignores them): one test.
if ((${#@} == 0)); then
  if tests/static/thread_safety.sh 2>&1 | tee /tmp/migmover-thread-safety.log | tail -20; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    rc=1
  fi
fi

# The real kernel's VFIO migration driver in a VM; its tests count like the others.
if ((${#@} == 0)) && [[ "${MIGMOVER_SKIP_KERNEL:-0}" != 1 ]]; then
  set +e
  tests/kernel/run.sh 2>&1 | tee /tmp/migmover-kernel.log
  krc=${PIPESTATUS[0]}
  set -e
  verdict=$(grep -E '^kernel-in-the-loop: [0-9]+ passed, [0-9]+ failed$' /tmp/migmover-kernel.log |
            tail -1)
  kpassed=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"${verdict:-x: 0 passed}")
  kfailed=$(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"${verdict:-x: 1 failed}")
  passed=$((passed + kpassed))
  failed=$((failed + kfailed))
  if ((krc != 0)); then
    rc=1
    ((kfailed > 0)) || failed=$((failed + 1))
  fi
elif ((${#@} == 0)); then
  echo "kernel-in-the-loop: skipped (MIGMOVER_SKIP_KERNEL=1)"
fi

# One closing line CI can read: "N passed, N failed".
echo "${passed} passed, ${failed} failed"
exit "$rc"
