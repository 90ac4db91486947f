// Settings shared by the sending and receiving ends of a device stream.
#ifndef MIGMOVER_TRANSPORT_STREAM_STREAM_OPTIONS_H_
#define MIGMOVER_TRANSPORT_STREAM_STREAM_OPTIONS_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "transport/io/io_engine.h"
#include "transport/stream/data_path.h"
#include "transport/stream/rate_limiter.h"

namespace migmover::stream {

struct StreamOptions {
  DataPath data_path = DataPath::kAuto;
  // What kAuto picks for fds that can splice (pipes, sockets, files): set from the daemon's
  // start-up measurement (data_path_probe.h), splice until measured.
  DataPath auto_spliceable = DataPath::kSplice;
  // Bytes per DATA frame (and per read of the data fd). 256 KiB: a frame's buffer stays in the
  // core's cache from the data fd's read through the send and the digest (1 MiB frames measured
  // 0.85x the throughput between daemons, bench/README.md).
  uint32_t chunk_size = 256u << 10;
  // Splice path: the size of the intermediate pipe (0 = chunk_size).
  uint32_t pipe_size = 0;
  // Buffers in flight on the copy path: one being read/received while others are sent/written.
  uint32_t buffers = 4;
  // Source, copy path: how many stream bytes the destination has not acknowledged yet may be
  // out (api/PEER_PROTOCOL.md, "Acknowledgements"). Each frame's buffer is kept, not reused,
  // until an ACK covers it, so the bytes can be sent again; when these are all held, the stream
  // waits for the next ACK. Whole chunks (rounded down); 0: off, a buffer is reused as soon as
  // its frame went out. Streams on it take the copy path.
  uint64_t replay_bytes = 0;
  // Kernel socket buffer size for data connections (0 = the kernel's autotuning).
  int socket_buffer = 0;
  // TCP congestion control of data connections (empty = the system's default). On these
  // machines' loopback, BBR's pacing costs a third of a raw loop's throughput (bench/README.md).
  std::string tcp_congestion;
  // Destination, copy path: an ACK (api/PEER_PROTOCOL.md) goes back each time this many more
  // bytes are written into the device, and at least every 100 ms while any are unacknowledged.
  // 0: none (a source with a replay buffer then waits; for tests).
  uint32_t ack_every = 1u << 20;
  // Resume (api/PEER_PROTOCOL.md, "Resume"): how long after a lost connection the source keeps
  // trying to reconnect, and the destination waits for it, before the stream fails. 0: off, a
  // lost connection fails the stream at once. A destination with it receives on the copy path
  // (only that one can resume); a source needs a replay buffer (replay_bytes) too.
  absl::Duration reconnect_window = absl::ZeroDuration();
  // A stream that makes no progress for this long fails with DeadlineExceeded.
  absl::Duration idle_timeout = absl::Seconds(30);
  // A TCP connection whose peer stays silent this long fails (net::TuneDataSocket: probes every
  // second while idle, TCP_USER_TIMEOUT): a cut without a reset is noticed within it whatever
  // the stream is doing. 0: the kernel's keepalive defaults (about 25 s).
  absl::Duration peer_timeout = absl::Seconds(4);
  // Copy path: send with IORING_OP_SEND_ZC from the stream's buffers (the NIC reads them; a
  // buffer is reused only after the kernel's notification). Pays on real NICs with large
  // frames; on loopback the kernel copies anyway, so it cannot win there.
  bool send_zc = false;
  // What carries the engines' requests: io_uring or plain syscalls (io_queue_factory.h). The
  // daemon resolves kAuto once at start-up and sets what it chose.
  io::IoEngine io_engine = io::IoEngine::kAuto;
  // The migration's bandwidth cap, shared by all its streams (null: none).
  std::shared_ptr<RateLimiter> limiter;
};

// The frames a source's replay buffer holds at most (StreamOptions::replay_bytes).
inline uint32_t ReplayFrames(const StreamOptions& o) {
  return o.chunk_size == 0 ? 0 : static_cast<uint32_t>(std::min<uint64_t>(
                                     o.replay_bytes / o.chunk_size, 1u << 16));
}

// The memory one connection of a device's stream holds while it runs: the copy path's buffers,
// and the splice path's pipe (kernel memory, the host's all the same). Sessions charge it to the
// daemon's --max_memory (daemon/base/memory_budget.h) before they start.
inline uint64_t StreamMemoryBytes(const StreamOptions& o) {
  return static_cast<uint64_t>(o.buffers) * o.chunk_size + (o.pipe_size ? o.pipe_size : o.chunk_size);
}

// A source device's replay buffer, once per device whatever its connections.
inline uint64_t ReplayMemoryBytes(const StreamOptions& o) {
  return uint64_t{ReplayFrames(o)} * o.chunk_size;
}

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_STREAM_OPTIONS_H_
