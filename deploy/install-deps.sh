#!/usr/bin/env bash
# Installs the Debian 12 packages migmover builds, tests and runs with. Idempotent: does nothing
# (and needs no network) when everything is already there. Run as root.
#   ./deploy/install-deps.sh            what builds, tests and runs migmover
#   ./deploy/install-deps.sh --kernel   also what tests/kernel/run.sh needs (a kernel source
#                                       tree, QEMU, busybox and the kernel's build tools)
set -euo pipefail

PACKAGES=(
  bazel-bootstrap
  build-essential
  pkg-config
  protobuf-compiler
  protobuf-compiler-grpc
  libprotobuf-dev
  libgrpc++-dev
  libabsl-dev
  liburing-dev
  libdpdk-dev
  libxxhash-dev
  libssl-dev
  # migmoverd --metrics_listen (Prometheus), and sd_notify readiness and watchdog under systemd.
  prometheus-cpp-dev
  libsystemd-dev
  # deploy/demo.sh makes its daemons' throw-away certificates with the openssl tool.
  openssl
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  python3
  # deploy/examples/python_agent (run by tests/examples): gRPC for Debian's python3; its stubs
  # are generated at start-up with protoc and grpc_python_plugin (protobuf-compiler-grpc).
  python3-grpcio
  python3-protobuf
  iproute2
  # migmover-bench --baseline measures the network stack's own limit with iperf3 (its debconf
  # question, start a server at boot, keeps its default: no).
  iperf3
  # tests/faults: the network faults are nftables rules on a veth between two namespaces.
  nftables
  clang
  # libFuzzer's runtime, for tests/fuzz/run.sh (clang only recommends it).
  libclang-rt-14-dev
  # tests/deploy: systemd-analyze rates the units' sandboxing.
  systemd
  # The sanitizer runs of deploy/test.sh: their runtimes (gcc links them), and unzip to read the
  # daemons' logs a test saved.
  libasan8
  libubsan1
  libtsan2
  unzip
)
if [[ "${1:-}" == "--kernel" ]]; then
  PACKAGES+=(linux-source-6.12 qemu-system-x86 busybox-static bc bison flex libelf-dev cpio
             xz-utils)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root (or install them)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
