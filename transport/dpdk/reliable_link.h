// ReliableLink: an ordered, lossless byte stream over Ethernet frames (api/link_wire.h,
// api/DPDK_LINK.md). DPDK has no TCP; this is what carries the peer protocol's bytes when the
// transport is DPDK.
//
// Each DATA frame holds up to `mss` bytes and a sequence number. The receiver keeps frames that
// arrive in order, in a queue of `window` frames, and acknowledges them (cumulative `ack`) with the
// room left in its queue (`window`): the sender never has more in flight than the reader can
// hold, so a slow reader stalls the sender instead of losing or buffering without bound. Lost
// frames are sent again from the first unacknowledged one (go-back-N): at once when the receiver
// reports a gap, otherwise after `retransmit_after` without progress. Both ends send an ACK at
// least every `keepalive`, so a dead peer is noticed after `dead_after`.
//
// Zero copy where the caller allows it: Reserve/Commit fill frame buffers in place (read(2) from a
// data fd straight into the frame), Peek/Consume hand out received bytes in place (write(2) to the
// data fd straight from the frame). Write/Read are the copying conveniences.
//
// Sealed links (Seal, api/DPDK_LINK.md "Sealed frames"): every frame, DATA and ACK, is encrypted
// and authenticated with its direction's key (FrameSeal), in place in its buffer. A frame that
// fails its tag (forged, damaged, an old link's, a replayed ACK) is dropped before it can move
// anything: not the reader's bytes, not the sender's window, not even the dead-peer timer.
//
// Not thread-safe: one thread polls a link (and its FrameIo). Nothing here blocks.
#ifndef MIGMOVER_TRANSPORT_DPDK_RELIABLE_LINK_H_
#define MIGMOVER_TRANSPORT_DPDK_RELIABLE_LINK_H_

#include <rte_ether.h>
#include <rte_mbuf.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "api/link_wire.h"
#include "transport/dpdk/frame_seal.h"
#include "transport/dpdk/port.h"
#include "transport/peer/stream_auth.h"

namespace migmover::dpdk {

struct LinkOptions {
  // Both ends use the same id; frames with any other id (an earlier link, another migration on
  // the same port) are ignored.
  uint64_t link_id = 0;
  // Payload bytes per DATA frame; at most the FrameIo's frame_capacity minus 54 header bytes
  // (and minus the 16-byte tag on a sealed link).
  uint16_t mss = 8192;
  // Frames in flight (sender) and queued for the reader (receiver). A power of two; the two ends
  // may differ (each advertises its own).
  uint32_t window = 1024;
  // The receiver acknowledges at least every `ack_every` in-order frames.
  uint32_t ack_every = 32;
  absl::Duration retransmit_after = absl::Milliseconds(20);
  absl::Duration keepalive = absl::Milliseconds(100);
  absl::Duration dead_after = absl::Seconds(10);
  // Where frames go; broadcast by default (the link id tells links apart).
  rte_ether_addr peer = {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
};

struct LinkStats {
  uint64_t frames_sent = 0;  // DATA frames handed to the port, retransmissions included.
  uint64_t frames_retransmitted = 0;
  uint64_t frames_received = 0;  // DATA frames taken in order.
  uint64_t frames_dropped = 0;   // DATA frames refused: out of order, duplicate or no room.
  uint64_t frames_ignored = 0;   // Not ours: another EtherType or link, or malformed.
  // Ours, but the payload fails its checksum (sent again), or on a sealed link the frame fails
  // its tag: damaged, forged or replayed.
  uint64_t frames_corrupt = 0;
  uint64_t acks_sent = 0;
  uint64_t acks_received = 0;
  uint64_t bytes_written = 0;
  uint64_t bytes_read = 0;
};

class ReliableLink {
 public:
  // `io` must outlive the link. InvalidArgument if `mss` does not fit the io's frames or `window`
  // is not a power of two in [2, 32768].
  static absl::StatusOr<std::unique_ptr<ReliableLink>> Create(FrameIo* io, LinkOptions options);
  // Frees every frame the link holds; bytes not yet acknowledged are lost (see AllAcknowledged).
  ~ReliableLink();
  ReliableLink(const ReliableLink&) = delete;
  ReliableLink& operator=(const ReliableLink&) = delete;

  // From now on every frame this link sends is sealed with `send` and every frame it takes must
  // open with `receive` (the peer's `send`). Before the first Reserve, Write or Poll.
  // Errors: FailedPrecondition once frames moved; InvalidArgument when mss leaves no room for
  // the tag; FrameSeal::Create's.
  absl::Status Seal(const peer::LinkKey& send, const peer::LinkKey& receive);
  bool sealed() const { return seal_ != nullptr; }

  // Sending, in place. Room for up to `max` bytes, as up to `max_iov` pieces in `iov`: the rest
  // of the frame being filled, then new frames. Returns the number of pieces; 0 when the window
  // is full or the pool has no free buffer (backpressure: Poll and try again). Commit(n) keeps
  // the first n bytes in piece order (n <= the room handed out) and gives the rest back. No Poll
  // between the two: Poll sends the frame being filled as it is.
  size_t Reserve(size_t max, iovec* iov, size_t max_iov);
  void Commit(size_t n);
  // Copies up to bytes.size() bytes into frames; returns how many it took (0 = backpressure).
  size_t Write(std::span<const uint8_t> bytes);

  // Receiving, in place. Up to `max` of the next in-order bytes as up to `max_iov` pieces in
  // `iov` (0 pieces: none yet); Consume(n) releases the first n (n <= what Peek handed out).
  size_t Peek(size_t max, iovec* iov, size_t max_iov) const;
  void Consume(size_t n);
  // Bytes ready to read.
  size_t readable() const { return readable_; }
  // Copies up to out.size() bytes; returns how many (0 = none yet).
  size_t Read(std::span<uint8_t> out);

  // One round of work: takes in received frames, acknowledges, sends what was committed (a frame
  // partly filled goes out too), retransmits. Call it in the polling loop. Unavailable once
  // nothing was heard from the peer for `dead_after`; the link is then dead for good. Internal
  // once OpenSSL failed to seal a frame (never seen: the frame would be lost for good).
  absl::Status Poll();

  uint64_t link_id() const { return o_.link_id; }
  // Every committed byte has reached the peer's receive queue.
  bool AllAcknowledged() const;
  const LinkStats& stats() const { return stats_; }
  // The protocol state in one line, for errors and logs: "una 12 sent 40 nxt 40 peer_window 0
  // ... rcv_nxt 0 queued 0".
  std::string DebugState() const;

 private:
  ReliableLink(FrameIo* io, LinkOptions options);

  void HandleFrame(rte_mbuf* m, int64_t now);
  void OnAck(uint32_t ack, uint32_t window, uint32_t flags, int64_t now);
  void CloseOpenFrame();
  // Queues the next in-order DATA frame (`length` payload bytes) for the reader.
  void TakeInOrder(rte_mbuf* m, uint16_t length);
  // Whether a DATA frame of a sealed link opens; counts it as corrupt if not.
  bool OpenData(rte_mbuf* m, const wire::LinkHeader& h);
  void SendAck(int64_t now);
  // Go-back-N: everything unacknowledged goes out again, from the oldest.
  void GoBack(int64_t now);
  void Transmit(int64_t now);
  rte_mbuf* NewFrame(wire::LinkFrameType type);

  FrameIo* const io_;
  const LinkOptions o_;
  std::unique_ptr<FrameSeal> seal_;  // Null: an unsealed link (XXH3 checksums only).
  bool polled_ = false;
  bool seal_failed_ = false;
  const uint32_t mask_;
  const int64_t rto_ns_, keepalive_ns_, dead_ns_;

  // Sender: frames [snd_una_, snd_nxt_) are held until acknowledged; [snd_una_, snd_sent_) have
  // been transmitted. The last one may still be open (being filled).
  std::vector<rte_mbuf*> tx_;
  uint32_t snd_una_ = 0, snd_sent_ = 0, snd_nxt_ = 0;
  uint32_t snd_max_ = 0;  // One past the furthest frame ever transmitted.
  uint64_t snd_nxt64_ = 0;  // snd_nxt_ with the wraps counted: the next frame's number.
  uint64_t acks_numbered_ = 0;  // Sealed: the next ACK's number.
  bool open_ = false;
  std::vector<rte_mbuf*> reserved_;  // New frames handed out by Reserve, not yet committed.
  std::vector<rte_mbuf*> spare_;     // Reserved, then not needed: the next Reserve's first.
  uint32_t peer_window_;             // Frames past snd_una_ the peer can take.
  uint32_t recover_until_ = 0;
  bool recovering_ = false;
  int64_t progress_ns_;  // Last time snd_una_ advanced (or a retransmission started).
  int backoff_ = 0;      // The retransmit timer is retransmit_after << backoff_.

  // Receiver: frames queued for the reader, oldest first; rcv_nxt_ is the next expected seq.
  std::vector<rte_mbuf*> rx_;
  uint32_t rx_head_ = 0, rx_count_ = 0, rx_offset_ = 0;
  uint32_t rcv_nxt_ = 0;
  uint64_t rcv_nxt64_ = 0;  // rcv_nxt_ with the wraps counted.
  uint64_t peer_acks_ = 0;  // Sealed: an ACK numbered below this is a replay.
  uint64_t gap_reported_at_ = UINT64_MAX;  // Sealed: rcv_nxt64_ when a gap was last reported.
  size_t readable_ = 0;
  uint32_t unacked_in_order_ = 0;
  uint32_t advertised_room_ = 0;
  bool gap_seen_ = false;

  int64_t heard_ns_, sent_ns_ = 0;
  LinkStats stats_;
};

}  // namespace migmover::dpdk

#endif  // MIGMOVER_TRANSPORT_DPDK_RELIABLE_LINK_H_
