#!/usr/bin/env bash
# Kernel in the loop: migrates the state of real VFIO devices (the kernel's mtty sample driver,
# migration v2 with PRE_COPY and P2P) between two migmoverd processes inside a QEMU VM, through
# the production VfioDevice code and the kernel's own ioctls and data fds.
#
#   tests/kernel/run.sh                         everything (installs what is missing, as root)
#   tests/kernel/run.sh --gtest_filter=*Blocked* only some of the agent's tests
#
# Steps: install packages (deploy/install-deps.sh --kernel); build migmoverd, migmoverctl and the
# test agent; build the kernel once (build_kernel.sh caches it outside the clone); pack an
# initramfs with busybox, the binaries and their shared libraries; boot it under QEMU (TCG: KVM
# is not usable on these machines) with a time limit; read the agent's verdict from the serial
# console. The last line is "kernel-in-the-loop: N passed, M failed"; the exit status is non-zero
# unless every test passed.
#
# Environment: MIGMOVER_KERNEL_TIMEOUT (seconds for the VM, default 600, 1500 with the bench),
# MIGMOVER_KERNEL_CACHE (kernel cache directory, default ~/.cache/migmover/kernel),
# MIGMOVER_KERNEL_BENCH=1: also measure, in the VM, what kernel TLS costs against plain TCP and
# the userspace relay (tls_stream_benchmark) and end to end (migmover-bench --baseline, plaintext
# peers then TLS peers); only the agent's KernelTls tests run then, unless arguments choose.
# Under TCG the absolute figures are the emulator's; the ratios within one run are the point
# (bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/kernel
bench="${MIGMOVER_KERNEL_BENCH:-0}"
timeout_s="${MIGMOVER_KERNEL_TIMEOUT:-$([[ $bench == 1 ]] && echo 1500 || echo 600)}"
start=$SECONDS

verdict() {  # passed failed why
  [[ -n "${3:-}" ]] && echo "kernel-in-the-loop: $3" >&2
  echo "kernel-in-the-loop: $1 passed, $2 failed"
}

./deploy/install-deps.sh --kernel

bazel build //daemon/server:migmoverd //daemon/cli:migmoverctl //tests/kernel:kernel_agent
bin="$(bazel info bazel-bin 2>/dev/null)"

kernel="$("$here/build_kernel.sh" | tail -1)"

work="$(mktemp -d /tmp/migmover-kernel.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/bin" "$root/opt/migmover/daemon/server"
cp /bin/busybox "$root/bin/busybox"
install -m 0755 "$here/guest_init.sh" "$root/init"
# Stripped: the guest unpacks the initramfs into its RAM, and TCG does so slowly.
install -s -m 0755 "$bin/daemon/server/migmoverd" "$root/opt/migmover/daemon/server/migmoverd"
install -s -m 0755 "$bin/daemon/cli/migmoverctl" "$root/bin/migmoverctl"
install -s -m 0755 "$bin/tests/kernel/kernel_agent" "$root/bin/kernel_agent"
printf '%s\n' "$@" >"$root/agent_args"
extra=()
if [[ $bench == 1 ]]; then
  ((${#@} == 0)) && echo "--gtest_filter=KernelTls.*" >"$root/agent_args"
  # Optimised, as every figure in bench/README.md.
  bazel build -c opt //bench/tls:tls_stream_benchmark //bench/e2e:migmover-bench \
    //daemon/server:migmoverd
  opt="$(bazel info -c opt bazel-bin 2>/dev/null)"
  mkdir -p "$root/opt/bench"
  install -s -m 0755 "$opt/bench/tls/tls_stream_benchmark" "$root/bin/tls_stream_benchmark"
  install -s -m 0755 "$opt/bench/e2e/migmover-bench" "$root/bin/migmover-bench"
  install -s -m 0755 "$opt/daemon/server/migmoverd" "$root/opt/bench/migmoverd"
  extra=("$root/bin/tls_stream_benchmark" "$root/bin/migmover-bench" "$root/opt/bench/migmoverd")
fi
# Every shared library the binaries load, at the path the loader will look for it.
for f in "$root/opt/migmover/daemon/server/migmoverd" "$root/bin/migmoverctl" \
         "$root/bin/kernel_agent" "${extra[@]}"; do
  ldd "$f" | grep -o '/[^ ]*' | sort -u
done | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.cpio.gz"
echo "kernel-in-the-loop: initramfs $(du -h "$work/initramfs.cpio.gz" | cut -f1), kernel $kernel"

console="$work/console.log"
vm_start=$SECONDS
set +e
# -cpu max: the binaries are built for the host's CPU (DPDK's code assumes SSE4.2 and more);
# QEMU's default qemu64 model lacks them.
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 -no-reboot -nographic \
  -kernel "$kernel" -initrd "$work/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet" </dev/null 2>&1 | tee "$console"
qemu_rc=${PIPESTATUS[0]}
set -e
tr -d '\r' <"$console" >"$console.txt"
line="$(grep -E '^kernel-in-the-loop: [0-9]+ passed, [0-9]+ failed' "$console.txt" | tail -1 || true)"
echo "kernel-in-the-loop: the VM ran $((SECONDS - vm_start)) s, $((SECONDS - start)) s in all with the builds (QEMU exit status $qemu_rc)"
if [[ -z "$line" ]]; then
  why="no verdict from the guest"
  ((qemu_rc == 124)) && why="the VM did not finish within ${timeout_s} s"
  verdict 0 1 "$why"
  exit 1
fi
echo "$line"
[[ "$line" =~ ,\ 0\ failed$ ]]
