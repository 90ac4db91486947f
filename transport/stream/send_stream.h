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
#include "absl/strings/string_view.h"
#include "api/peer_wire.h"
#include "transport/peer/stream_auth.h"
#include "transport/base/unique_fd.h"
#include "transport/stream/data_path.h"
#include "transport/stream/replay_buffer.h"
#include "transport/stream/stream_options.h"
#include "transport/stream/stream_rules.h"

namespace migmover::stream {

struct SendStream {
  SendStream(std::vector<UniqueFd> connections, uint32_t device_index,
             const StreamOptions& stream_options);

  // The destination's frames on the control connection are numbered: HELLO_ACK (0), then its
  // ACKs and its one verdict from 1 on (peer_seq: the next one's).
  static constexpr uint64_t kFirstPeerSeq = 1;

  // The first connection: HELLO and control frames.
  int control_fd() const { return sockets[0].get(); }

  // `n` more payload bytes of the stream reached the peer's socket: advances the offset and
  // the progress counters.
  void Sent(uint32_t n);

  // Mid-stream the destination acknowledges what it wrote (ACK) or gives up (ERROR, or a
  // failed COMMIT). Takes every ACK that arrived (OnAck) and, if it gave up, returns its verdict
  // as an error; OK when it has said nothing else. Never blocks when nothing arrived; reading a
  // frame waits at most 1 s. At most `max_frames` are read: a job on a shared pump worker reads
  // kPeerFramesPerTurn and the rest at its next turn, so a destination that floods its source
  // with ACKs holds up only its own stream, never the worker's others.
  absl::Status PeerVerdict(uint32_t max_frames = UINT32_MAX);
  static constexpr uint32_t kPeerFramesPerTurn = 64;

  // An ACK from the destination: its sequence number must be the next (peer_seq), its seal the
  // stream's, and its offset no lower than the last ACK's and no higher than the bytes framed.
  // Advances `acked`. Errors: DataLoss naming what was wrong (nothing is acknowledged then).
  absl::Status OnAck(const wire::FrameHeader& h, absl::string_view payload);

  std::vector<UniqueFd> sockets;
  OutgoingStream out;  // Numbers and builds every frame this end sends.
  const uint32_t device;
  const StreamOptions options;
  size_t next_socket = 0;  // Round-robin start for the next frame.
  uint64_t offset = 0;     // Stream bytes sent so far.
  uint64_t read = 0;       // Copy path: stream bytes read from the data fd so far.
  // Stream bytes handed to a connection in DATA frames (>= offset: a frame counts in `offset`
  // once the kernel took all of it, and may be written at the destination before that).
  uint64_t framed = 0;
  uint64_t peer_seq = kFirstPeerSeq;  // The destination's next frame number on connection 0.
  // The destination's last ACK: stream bytes written into its device. Read by any thread.
  std::atomic<uint64_t> acked{0};
  std::atomic<uint64_t> acks{0};  // ACKs taken.
  // The copy path's frames not acknowledged yet (options.replay_bytes), across pumps.
  ReplayBuffer replay;
  std::atomic<uint64_t> replay_held{0};  // replay.bytes(), for readers on other threads.
  // After a resume: the next copy pump first sends the held frames again from here.
  static constexpr uint64_t kNoReplay = UINT64_MAX;
  uint64_t replay_from = kNoReplay;
  std::atomic<uint64_t> replayed_bytes{0};  // Sent again after resumes.
  // The marks this stream put in it (INITIAL_DATA_SENT, END_PHASE(PRE_COPY)), at their offsets:
  // a resume says them again, as the destination may have lost them with a connection.
  static constexpr uint64_t kNoMark = UINT64_MAX;
  uint64_t initial_sent_at = kNoMark;
  uint64_t precopy_end_at = kNoMark;
  // The stream bytes before whatever is sent next: with a replay buffer every byte read is
  // held and goes out (again) before anything after it, sent or not yet.
  uint64_t end() const { return replay.enabled() ? std::max(read, offset) : offset; }
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
