// SendStream: the state one device stream's sending engines share (the copy job and the splice
// loop move its bytes; StreamSender sends its control frames): its connections, the frame
// writer, how far the stream has got, its digest and progress counters.
//
// Thread use: one pump at a time moves the stream (on a pump worker or the sender's thread);
// the atomics may be read from any thread.
#ifndef MIGMOVER_TRANSPORT_STREAM_SEND_STREAM_H_
#define MIGMOVER_TRANSPORT_STREAM_SEND_STREAM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "transport/peer/stream_auth.h"
#include "transport/base/unique_fd.h"
#include "transport/stream/data_path.h"
#include "transport/stream/stream_options.h"
#include "transport/stream/stream_rules.h"

namespace migmover::stream {

struct SendStream {
  SendStream(std::vector<UniqueFd> connections, uint32_t device_index,
             const StreamOptions& stream_options);

  // The destination's frames on the control connection: HELLO_ACK (0), then its one verdict.
  static constexpr uint64_t kVerdictSeq = 1;

  // The first connection: HELLO and control frames.
  int control_fd() const { return sockets[0].get(); }

  // `n` more payload bytes of the stream reached the peer's socket: advances the offset and
  // the progress counters.
  void Sent(uint32_t n);

  // The destination only speaks mid-stream to give up (ERROR, or a failed COMMIT). If it has,
  // reads its frame and returns its verdict as an error; OK when it has said nothing. Never
  // blocks when nothing arrived; reading the frame waits at most 1 s.
  absl::Status PeerVerdict();

  std::vector<UniqueFd> sockets;
  OutgoingStream out;  // Numbers and builds every frame this end sends.
  const uint32_t device;
  const StreamOptions options;
  size_t next_socket = 0;  // Round-robin start for the next frame.
  uint64_t offset = 0;     // Stream bytes sent so far.
  // The keyed digest of every byte sent (null without a key: framing tests).
  std::unique_ptr<peer::StreamMac> mac;
  bool digest_valid = true;  // Every byte so far passed through userspace (no splice).
  bool aead = false;         // TLS carries every connection (StreamProtection).
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<DataPath> path_used{DataPath::kAuto};
  std::atomic<uint64_t>* counter = nullptr;  // Live progress for status readers, or null.
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_SEND_STREAM_H_
