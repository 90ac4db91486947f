// ReceiveStream: the state one device stream's receiving engines share (the copy job and the
// splice loop write its bytes into the device; StreamReceiver sends the verdict): its
// connections, the stream's rules (what may arrive), how far it has got, its digest and
// progress counters.
//
// Thread use: one receive at a time (on a pump worker or the receiver's thread); the atomics
// may be read from any thread.
#ifndef MIGMOVER_TRANSPORT_STREAM_RECEIVE_STREAM_H_
#define MIGMOVER_TRANSPORT_STREAM_RECEIVE_STREAM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "api/peer_wire.h"
#include "transport/api/device_stream.h"
#include "transport/peer/stream_auth.h"
#include "transport/base/unique_fd.h"
#include "transport/stream/data_path.h"
#include "transport/stream/stream_options.h"
#include "transport/stream/stream_rules.h"

namespace migmover::stream {

struct ReceiveStream {
  // `next_seq`: the sequence number the next frame on each connection must carry.
  ReceiveStream(std::vector<UniqueFd> connections, uint32_t device_index, uint64_t next_seq,
                const StreamOptions& stream_options);

  // The first connection: control frames, and the verdict back.
  int control_fd() const { return sockets[0].get(); }

  // Checks a header that arrived on connection `k` against the rules; for control frames
  // (first connection only) reads and acts on the payload (waiting at most the idle timeout).
  // Sets *data_len for DATA, *ended for END_STREAM. Errors: DataLoss for what the rules refuse,
  // Aborted with the source's message for its ERROR.
  absl::Status OnHeader(size_t k, const wire::FrameHeader& h, uint32_t* data_len, bool* ended,
                        transport::ReceiveResult* result);

  // A receive that returned `res` <= 0: the source went away (0: Unavailable, naming the
  // offset) or the recv failed (naming the call).
  absl::Status RecvFailure(int res, absl::string_view where) const;

  // `n` more bytes reached the device: the progress counters.
  void Written(uint32_t n);

  std::vector<UniqueFd> sockets;
  const uint32_t device;
  IncomingStream rules;  // What may arrive, on every connection.
  const StreamOptions options;
  uint64_t offset = 0;  // Stream bytes received in DATA frames.
  // The number of this end's next frame on the first connection: HELLO_ACK was 0; its ACKs and
  // its verdict follow.
  uint64_t next_out_seq = 1;
  uint64_t acked = 0;  // The offset of the last ACK sent: stream bytes written then.
  // Stream bytes written into the device by the receives so far; the next one goes on from
  // here.
  uint64_t written = 0;
  // The last receive ended on a lost connection with every byte the digest took written into
  // the device (and none after): the stream may go on, on new connections, from `written`.
  bool resumable = false;
  // The keyed digest of every byte received (null without a key: framing tests).
  std::unique_ptr<peer::StreamMac> mac;
  bool digest_valid = true;  // Every byte so far passed through userspace (no splice).
  bool aead = false;         // TLS carries every connection (StreamProtection).
  std::atomic<uint64_t> bytes_written{0};
  std::atomic<DataPath> path_used{DataPath::kAuto};
  std::atomic<uint64_t>* counter = nullptr;  // Live progress for status readers, or null.
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_RECEIVE_STREAM_H_
