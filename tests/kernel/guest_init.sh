#!/bin/busybox sh
# /init of the kernel-in-the-loop VM: mounts what the agent needs, brings up loopback, runs the
# test agent (which starts the two migmoverd processes) and powers off. The host reads the
# agent's verdict line from the serial console.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Kernel messages would interleave with the agent's output on the one console.
echo 4 >/proc/sys/kernel/printk 2>/dev/null
ip link set lo up
echo "guest: Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPU(s), mtty types: $(ls /sys/class/mdev_bus/mtty/mdev_supported_types 2>/dev/null | tr '\n' ' ')"
# The agent finds migmoverd where Bazel's test runner would put it.
export TEST_SRCDIR=/opt
/bin/kernel_agent --gtest_color=no $(cat /agent_args 2>/dev/null)
echo "guest: agent exited with status $?"
if [ -x /bin/tls_stream_benchmark ]; then
  # MIGMOVER_KERNEL_BENCH=1: the cost of TLS where the kernel does it (run.sh).
  echo "guest: bench: tls_stream_benchmark"
  TMPDIR=/tmp /bin/tls_stream_benchmark --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true
  for peers in plaintext tls; do
    echo "guest: bench: migmover-bench --peer_security=$peers"
    (cd /tmp && /bin/migmover-bench --migmoverd=/opt/bench/migmoverd --baseline \
      --peer_security=$peers --device_size=256MiB --repeat=3)
  done
  echo "guest: bench: done"
fi
sync
reboot -f
