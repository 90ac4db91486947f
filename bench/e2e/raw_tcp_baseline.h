// The baseline migmover-bench measures against: per device, a plain sender process and a plain
// receiver process moving the same simulated device's stream over loopback TCP with blocking
// read/send and recv/write loops (one buffer, no framing, no io_uring) — what a minimal mover
// on the same path costs. Same simulated devices at both ends, so both sides include the same
// device work.
#ifndef MIGMOVER_BENCH_E2E_RAW_TCP_BASELINE_H_
#define MIGMOVER_BENCH_E2E_RAW_TCP_BASELINE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/device/sim/sim_device_spec.h"

namespace migmover::bench {

struct SideFigures {
  double cpu_seconds = 0;         // Everything the side's processes spent.
  double device_cpu_seconds = 0;  // Of which the simulated device's own threads.
  uint64_t peak_rss_bytes = 0;
  double mover_cpu_seconds() const { return cpu_seconds - device_cpu_seconds; }
};

struct BaselineResult {
  uint64_t bytes = 0;
  double seconds = 0;               // First sender start to last receiver commit.
  SideFigures source, destination;  // Summed over the per-device processes.
  bool verified = false;            // Every receiver's device committed the stream (and, with
                                    // `digest`, both ends' Poly1305 tags matched).
};

// Forks the processes (call before this process starts threads), moves every device's stream
// with `buffer_bytes` per read, and waits for all of them. A non-empty `tcp_congestion` is set
// on every connection, as migmoverd --tcp_congestion sets it on its own. With `digest`, both
// loops also feed every byte through the keyed Poly1305 that migmover's copy path checks
// (peer::StreamMac), after each send and each write as migmover does, and the two tags are
// compared: the same integrity work as the mover, so its CPU per GB compares like for like.
absl::StatusOr<BaselineResult> RunRawTcpBaseline(const std::vector<sim::SimDeviceSpec>& sources,
                                                 size_t buffer_bytes,
                                                 const std::string& tcp_congestion = "",
                                                 bool digest = false);

}  // namespace migmover::bench

#endif  // MIGMOVER_BENCH_E2E_RAW_TCP_BASELINE_H_
