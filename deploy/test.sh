#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test.
#   ./deploy/test.sh            all tests, then the kernel-in-the-loop VM (tests/kernel/run.sh)
#   ./deploy/test.sh //daemon/...   only the given Bazel targets (no VM)
#   MIGMOVER_SKIP_KERNEL=1 ./deploy/test.sh   all Bazel tests, no VM (quick local runs)
#   MIGMOVER_SKIP_SANITIZERS=1 ./deploy/test.sh   without the ASan+UBSan and TSan runs of the tests
#   MIGMOVER_SKIP_FUZZ=1 ./deploy/test.sh   without the libFuzzer runs (tests/fuzz/run.sh)
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

# The same tests again under a sanitizer config of .bazelrc; each counts again. Tests tagged
# no_sanitizer are timing-bound and skip these runs. A report fails the test that printed it; the
# daemons a test starts write theirs to their own logs (the test's outputs), so those are counted
# here: "run_sanitized CONFIG LABEL REPORT_PATTERN".
run_sanitized() {
  local config=$1 label=$2 pattern=$3 log=/tmp/migmover-$1.log
  set +e
  # Built first, so no compile competes with the tests for the two cores.
  { bazel build --config="$config" "${targets[@]}" &&
      bazel test --config="$config" --local_test_jobs=1 "${targets[@]}"; } 2>&1 | tee "$log"
  local src=${PIPESTATUS[0]}
  set -e
  local spassed sfailed reports=0 n zip
  spassed=$(count_passed "$log")
  sfailed=$(count_failed "$log")
  # The outputs of this run's tests (cached ones too, not those of tests it did not run);
  # bazel-testlogs now points at this config's logs.
  while IFS= read -r target; do
    zip="bazel-testlogs/${target#//}"
    zip="${zip/://}/test.outputs/outputs.zip"
    [[ -f "$zip" ]] || continue
    n=$(unzip -p "$zip" 2>/dev/null | grep -cE "$pattern" || true)
    if ((n > 0)); then
      echo "${label}: ${n} report(s) in the daemon logs of ${target}"
      reports=$((reports + n))
    fi
  done < <(grep -oE '^//[^ ]+' "$log" | sort -u)
  echo "${label} run: ${spassed} tests passed, ${sfailed} failed, ${reports} report(s) in daemon logs"
  passed=$((passed + spassed))
  failed=$((failed + sfailed))
  if ((reports > 0)); then
    failed=$((failed + 1))
    rc=1
  fi
  if ((src != 0)); then
    rc=1
    ((sfailed > 0)) || failed=$((failed + 1))
  fi
}

if [[ "${MIGMOVER_SKIP_SANITIZERS:-0}" != 1 ]]; then
  # AddressSanitizer + UndefinedBehaviorSanitizer.
  run_sanitized asan "ASan+UBSan" 'ERROR: AddressSanitizer|runtime error:'
  # ThreadSanitizer (the abseil shim makes Debian's uninstrumented locks visible).
  run_sanitized tsan "ThreadSanitizer" 'WARNING: ThreadSanitizer'
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

# libFuzzer on every fuzz target (tests/fuzz), 20 s each; each target counts as a test.
if ((${#@} == 0)) && [[ "${MIGMOVER_SKIP_FUZZ:-0}" != 1 ]]; then
  set +e
  tests/fuzz/run.sh 20 2>&1 | tee /tmp/migmover-fuzz.log | grep -E '^fuzz: '
  frc=${PIPESTATUS[0]}
  set -e
  verdict=$(grep -E '^fuzz: [0-9]+ passed, [0-9]+ failed$' /tmp/migmover-fuzz.log | tail -1)
  fpassed=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"${verdict:-x: 0 passed}")
  ffailed=$(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"${verdict:-x: 1 failed}")
  passed=$((passed + fpassed))
  failed=$((failed + ffailed))
  if ((frc != 0)); then
    rc=1
    ((ffailed > 0)) || failed=$((failed + 1))
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
