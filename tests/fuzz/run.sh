#!/usr/bin/env bash
# Builds the fuzz targets with clang + libFuzzer (+ ASan/UBSan) and runs each for a bounded time
# on a copy of its seed corpus. Exit status non-zero if any target found a crash, a sanitizer
# report, a leak, a timeout or ran out of memory; the reproducer is left in $out.
#   tests/fuzz/run.sh                 30 s per target (deploy/test.sh runs it with 20)
#   tests/fuzz/run.sh 3600            an hour per target
#   tests/fuzz/run.sh 600 frame_decoder_fuzz   one target
# The build uses its own Bazel output base (MIGMOVER_FUZZ_OUTPUT_BASE, default
# /var/tmp/migmover-fuzz-bazel) so the gcc tree stays cached. Last line: "fuzz: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-30}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(frame_decoder_fuzz handshake_fuzz intake_request_fuzz link_frame_fuzz)
fi
base=${MIGMOVER_FUZZ_OUTPUT_BASE:-/var/tmp/migmover-fuzz-bazel}
out=${MIGMOVER_FUZZ_OUT:-/tmp/migmover-fuzz}
bz=(bazel --output_base="$base")
cfg=(--config=fuzz --repo_env=CC=clang --repo_env=CXX=clang++ --symlink_prefix=/)

rm -rf "$out" && mkdir -p "$out"
labels=()
for t in "${targets[@]}"; do labels+=("//tests/fuzz:$t"); done
echo "fuzz: building ${#targets[@]} target(s) with clang + libFuzzer (log: $out/build.log)"
if ! "${bz[@]}" build "${cfg[@]}" "${labels[@]}" >"$out/build.log" 2>&1; then
  grep -vE 'ld.gold: warning' "$out/build.log" | tail -30
  echo "fuzz: 0 passed, ${#targets[@]} failed (build)"
  "${bz[@]}" shutdown
  exit 1
fi
bin=$("${bz[@]}" info "${cfg[@]}" bazel-bin 2>/dev/null)
"${bz[@]}" shutdown  # Its server's memory is not needed while the targets run.

passed=0
failed=0
for t in "${targets[@]}"; do
  work="$out/$t.corpus"
  mkdir -p "$work"
  cp tests/fuzz/corpus/"$t"/* "$work"/
  echo "fuzz: $t for ${secs} s"
  # -rss_limit_mb: the DPDK target reserves its EAL memory up front.
  if "$bin/tests/fuzz/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 \
      -artifact_prefix="$out/$t-" -print_final_stats=1 "$work" >"$out/$t.log" 2>&1; then
    echo "fuzz: $t: clean, $(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' \
        "$out/$t.log" | grep -oE '[0-9]+$') inputs, corpus $(ls "$work" | wc -l) entries"
    passed=$((passed + 1))
  else
    echo "fuzz: $t: FAILED; reproducer and log in $out:"
    grep -E "ERROR|SUMMARY|Test unit written" "$out/$t.log" | head -10
    failed=$((failed + 1))
  fi
done
echo "fuzz: ${passed} passed, ${failed} failed"
((failed == 0))
