// ProbeDataPaths: the evidence `--data_path=auto` decides by. It moves a pipe's bytes into a
// loopback TCP connection through this engine's own StreamSender, by splice and by copy,
// alternating, and picks splice only when it was faster by a clear margin: the copy path is the
// one real VFIO drivers' fds take, and a choice that flips with the machine's noise from one
// start to the next would make the daemon's speed flip with it.
#ifndef MIGMOVER_TRANSPORT_STREAM_DATA_PATH_PROBE_H_
#define MIGMOVER_TRANSPORT_STREAM_DATA_PATH_PROBE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "transport/io/io_engine.h"
#include "transport/stream/data_path.h"

namespace migmover::stream {

// Splice must beat copy by this much (a fraction of copy's rate) to be chosen.
inline constexpr double kSpliceMargin = 0.10;

struct DataPathProbe {
  double copy_bytes_per_second = 0;    // Median of the copy trials.
  double splice_bytes_per_second = 0;  // Median of the splice trials.
  // splice / copy - 1: positive when splice was faster.
  double splice_advantage = 0;
  DataPath faster = DataPath::kCopy;   // The choice: splice only if splice_advantage >= margin.
};

// The choice for measured medians: splice only when it beats copy by at least `margin`.
DataPath ChooseDataPath(double copy_bytes_per_second, double splice_bytes_per_second,
                        double margin = kSpliceMargin);

// `bytes` per trial, `rounds` trials of each path (medians compared), frames of `chunk` bytes,
// the copy path on `engine`'s queue.
// Takes about 2 * rounds * bytes / rate (64 MiB x 3 x 2 at 2 GB/s: ~0.2 s).
absl::StatusOr<DataPathProbe> ProbeDataPaths(uint64_t bytes = 64ull << 20, int rounds = 3,
                                             uint32_t chunk = 256u << 10,
                                             io::IoEngine engine = io::IoEngine::kAuto);

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_DATA_PATH_PROBE_H_
