// ProbeDataPaths: the evidence `--data_path=auto` decides by. It moves a pipe's bytes into a
// loopback TCP connection through this engine's own StreamSender, once by splice and once by
// copy, alternating, and reports which was faster on this machine.
#ifndef MIGMOVER_TRANSPORT_STREAM_DATA_PATH_PROBE_H_
#define MIGMOVER_TRANSPORT_STREAM_DATA_PATH_PROBE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "transport/io/io_engine.h"
#include "transport/stream/data_path.h"

namespace migmover::stream {

struct DataPathProbe {
  double copy_bytes_per_second = 0;
  double splice_bytes_per_second = 0;
  DataPath faster = DataPath::kSplice;
};

// `bytes` per trial, `rounds` trials of each path (medians compared), frames of `chunk` bytes,
// the copy path on `engine`'s queue.
// Takes about 2 * rounds * bytes / rate (64 MiB x 2 x 2 at 2 GB/s: ~0.15 s).
absl::StatusOr<DataPathProbe> ProbeDataPaths(uint64_t bytes = 64ull << 20, int rounds = 2,
                                             uint32_t chunk = 1u << 20,
                                             io::IoEngine engine = io::IoEngine::kAuto);

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_DATA_PATH_PROBE_H_
