#!/usr/bin/env bash
# Clang's thread-safety analysis over our code: every field written ABSL_GUARDED_BY(mu) is only
# touched with `mu` held, every ABSL_EXCLUSIVE_LOCKS_REQUIRED function is only called with it.
# GCC builds the daemon and ignores the annotations; this checks them (-Werror). Needs clang and
# the generated gRPC headers (it builds them). Last line: "thread-safety: N files, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

bazel build //api:migmover_cc_grpc >/dev/null 2>&1 || { echo "thread-safety: 0 files, 1 failed"; exit 1; }
gen="$(bazel info bazel-bin 2>/dev/null)"
flags=$(pkg-config --cflags absl_synchronization absl_status absl_strings absl_time liburing \
        libxxhash grpc++ protobuf gtest gmock benchmark)
dpdk_flags="$(pkg-config --cflags libdpdk) -march=corei7 -Wno-volatile"

files=$(ls daemon/*/*.cc daemon/device/sim/*.cc transport/*/*.cc bench/*/*.cc tests/*/*.cc \
        2>/dev/null)
checked=0
failed=0
for f in $files; do
  extra=""
  case "$f" in
    transport/dpdk/*|bench/e2e/dpdk_*|tests/fuzz/link_*) extra="$dpdk_flags" ;;
  esac
  # shellcheck disable=SC2086
  if ! out=$(clang++ -std=c++20 -fsyntax-only -Wthread-safety -Werror=thread-safety \
             -Wno-unknown-warning-option -I. -I"$gen" $flags $extra "$f" 2>&1); then
    echo "$out" | grep -E "error|warning" | head -5
    failed=$((failed + 1))
  fi
  checked=$((checked + 1))
done
echo "thread-safety: ${checked} files, ${failed} failed"
((failed == 0))
