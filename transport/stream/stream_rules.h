// The peer stream's rules, written once for every transport (api/PEER_PROTOCOL.md):
// OutgoingStream numbers and builds what a source sends; IncomingStream checks what a destination
// receives.
//
// IncomingStream: the rules a destination checks on every frame of one device's stream. A transport reads frames its own way (io_uring
// receives into buffers, a DPDK link's queue) and asks this object, per header, whether the frame
// may come now; it acts on the answer (a DATA payload's length, the stream's end).
//
// Rules: per connection, sequence numbers count up from the first expected one; every frame is
// for this device; control frames travel on the first connection only; DATA offsets tile the
// stream (exactly the bytes received so far on one connection; increasing on each connection when
// striped, where the reassembly checks holes and overlaps); phases only move forward on each
// connection (no PRE_COPY DATA after STOP_COPY DATA, none after END_PHASE(PRE_COPY), which comes
// at most once); nothing follows END_STREAM on the first connection; END_STREAM's total is what
// arrived, and its digest, when both ends saw every byte, is the bytes' own.
//
// Not thread-safe: one receiving thread owns it (OutgoingStream: one sending thread).
#ifndef MIGMOVER_TRANSPORT_STREAM_STREAM_RULES_H_
#define MIGMOVER_TRANSPORT_STREAM_STREAM_RULES_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "api/peer_wire.h"
#include "transport/peer/frame_codec.h"

namespace migmover::stream {

// The frames of one device's stream as its source sends them: sequence numbers per connection
// (or link) from `first_seq`, +1 per frame; control frames on the first connection; END_STREAM
// with the total and, when every byte passed through the sender's userspace, their keyed digest.
class OutgoingStream {
 public:
  OutgoingStream(uint32_t device, size_t connections, uint64_t first_seq = 0);

  // HELLO on connection `k` (with its stream index and the stripe count filled in).
  std::string Hello(size_t k, const peer::Hello& hello);
  // The header of the next DATA frame on connection `k`: `length` stream bytes at `offset`.
  wire::FrameHeader Data(size_t k, wire::Phase phase, uint32_t length, uint64_t offset);
  // `offset`: the stream bytes sent before it (version 6).
  std::string EndPhase(wire::Phase phase, uint64_t offset);
  // `offset`: the stream bytes sent before it.
  std::string InitialDataSent(uint64_t offset);
  // Sealed (peer::SealVerdict): each KEEPALIVE restarts the destination's idle timer, and after
  // COMMIT its wait for CONFIRM, so nobody but the source may make one.
  std::string Keepalive();
  // `digest`: the keyed digest of every byte, or nullopt when some never passed through
  // userspace (spliced) or the stream has no key.
  std::string EndStream(uint64_t total, std::optional<peer::StreamTag> digest);
  std::string Error(const absl::Status& why);
  // After every device's COMMIT(0): the source's point of no return is behind it.
  std::string Confirm();

  // The stream goes on over `connections` new connections: their numbering starts again at 0
  // (their HELLO).
  void Reconnected(size_t connections) { next_seq_.assign(connections, 0); }

  // The stream's control key: ERROR, CONFIRM and KEEPALIVE are sealed with it
  // (peer::SealVerdict). Unset
  // only in tests of framing alone.
  void set_control_key(const peer::ControlKey& key) { control_key_ = key; }
  const peer::ControlKey* control_key() const {
    return control_key_.has_value() ? &*control_key_ : nullptr;
  }

 private:
  std::optional<peer::ControlKey> control_key_;
  const uint32_t device_;
  std::vector<uint64_t> next_seq_;  // Per connection.
};

class IncomingStream {
 public:
  // `connections`: 1, or the stripes of the stream; `first_seq`: the sequence number each
  // connection's next frame must carry (1 after a HELLO on it, 0 on a DPDK link).
  IncomingStream(uint32_t device, size_t connections, uint64_t first_seq);

  // What a header that passed the checks asks of the receiver.
  struct Frame {
    wire::FrameType type = wire::FrameType::kData;
    uint32_t data_length = 0;   // DATA: payload bytes to take now.
    // END_STREAM, ERROR or KEEPALIVE: read the payload, then call OnEndStream, OnError or
    // OnKeepalive.
    bool needs_payload = false;
  };
  // Checks a frame header that arrived on connection `k`, given the stream bytes received so
  // far (on all connections). Errors: DataLoss naming the rule it breaks.
  absl::StatusOr<Frame> OnHeader(size_t k, const wire::FrameHeader& h, uint64_t received);

  // END_STREAM's payload. Checks that `received` (so far: on one connection, the whole stream)
  // does not exceed the total; returns the source's account. Errors: DataLoss.
  absl::StatusOr<peer::EndStream> OnEndStream(const wire::FrameHeader& h,
                                              absl::string_view payload, uint64_t received);
  // The stream is complete: every counted byte arrived. Checks the total and, when `digest`
  // holds the receiver's keyed digest of every byte and the source sent one, the source's (in
  // constant time). Returns whether the digest was checked. Errors: DataLoss (total or digest
  // mismatch).
  absl::StatusOr<bool> CheckComplete(uint64_t received,
                                     std::optional<peer::StreamTag> digest) const;
  // An ERROR frame's payload: the source's reason, as Aborted.
  absl::Status OnError(const wire::FrameHeader& h, absl::string_view payload) const;
  // A KEEPALIVE's payload, its seal. Errors: DataLoss when the seal does not match (anyone on a
  // plaintext path could otherwise keep an abandoned destination waiting).
  absl::Status OnKeepalive(const wire::FrameHeader& h, absl::string_view payload) const;
  // What the source sends after the destination's COMMIT(0), on the first connection: true for
  // CONFIRM (settled), false for a KEEPALIVE (it waits for its other devices to commit; keep
  // waiting). Errors: ERROR as OnError (the source abandoned the migration); DataLoss for any
  // other frame, a wrong sequence number, or a frame before the stream ended.
  absl::StatusOr<bool> OnSettle(const wire::FrameHeader& h, absl::string_view payload);

  // The stream goes on over `connections` new connections from stream offset `offset` (every
  // byte before it is written): each connection's numbering starts again at `first_seq` and
  // its DATA at `offset`; what the stream as a whole has seen (PRE_COPY ended, the initial
  // data's end) stays, and the source may say it once more, as it said it before (it cannot
  // know whether it arrived).
  void Reconnected(size_t connections, uint64_t first_seq, uint64_t offset);

  // The stream's control key: the source's ERROR and CONFIRM must carry its seal
  // (peer::OpenVerdict). Unset only in tests of framing alone.
  void set_control_key(const peer::ControlKey& key) { control_key_ = key; }
  const peer::ControlKey* control_key() const {
    return control_key_.has_value() ? &*control_key_ : nullptr;
  }

  bool ended() const { return end_.has_value(); }
  const peer::EndStream& end() const { return *end_; }
  uint32_t precopy_phases_ended() const { return precopy_ended_ ? 1 : 0; }

  // Where INITIAL_DATA_SENT's offset goes (DeviceStreamReceiver::set_initial_data_end).
  void set_initial_end_out(std::atomic<uint64_t>* out) { initial_end_out_ = out; }

 private:
  std::atomic<uint64_t>* initial_end_out_ = nullptr;
  bool initial_end_seen_ = false;
  uint64_t initial_end_ = 0;
  struct Conn {
    uint64_t next_seq;
    uint64_t next_offset = 0;  // End of this connection's last DATA frame.
    wire::Phase phase = wire::Phase::kPreCopy;
  };
  absl::Status Violation(size_t k, const wire::FrameHeader& h, absl::string_view rule) const;

  std::optional<peer::ControlKey> control_key_;
  uint32_t device_;
  std::vector<Conn> conns_;
  bool precopy_ended_ = false;
  uint64_t precopy_end_ = 0;        // END_PHASE(PRE_COPY)'s offset, once it came.
  uint64_t precopy_data_end_ = 0;   // The end of the last PRE_COPY byte seen.
  uint64_t stop_data_start_ = UINT64_MAX;  // The first STOP_COPY byte seen.
  // Connection sets so far (Reconnected adds one), and the one each mark came on: a mark may
  // come again only on a later set.
  uint64_t epoch_ = 0;
  uint64_t precopy_end_epoch_ = 0;
  uint64_t initial_end_epoch_ = 0;
  std::optional<peer::EndStream> end_;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_STREAM_RULES_H_
