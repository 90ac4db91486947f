// RunInProcess: a quick migration inside the bench process itself: the destination's device
// registry, sessions and peer listener and the source's, over loopback TCP, with the same
// session code the daemons run but no gRPC and no process start-up.
#ifndef MIGMOVER_BENCH_E2E_INPROCESS_RUN_H_
#define MIGMOVER_BENCH_E2E_INPROCESS_RUN_H_

#include <vector>

#include "absl/status/statusor.h"
#include "bench/e2e/raw_tcp_baseline.h"
#include "daemon/device/sim/sim_device_spec.h"
#include "transport/stream/stream_options.h"

namespace migmover::bench {

struct InProcessResult {
  uint64_t bytes = 0;
  double downtime_seconds = 0;  // Switchover to the last COMMIT.
  // CPU by thread role (mm-src-*/mm-sim-save vs mm-dst-*/mm-sim-resume), sampled from /proc
  // every few milliseconds, so a thread's last few milliseconds before it exits may be missed.
  SideFigures source, destination;  // peak_rss_bytes: the whole process, on both sides.
  std::string data_path;
  bool verified = false;
};

absl::StatusOr<InProcessResult> RunInProcess(const std::vector<sim::SimDeviceSpec>& specs,
                                             const stream::StreamOptions& options, uint32_t streams,
                                             uint64_t bandwidth, bool precopy, uint32_t workers);

}  // namespace migmover::bench

#endif  // MIGMOVER_BENCH_E2E_INPROCESS_RUN_H_
