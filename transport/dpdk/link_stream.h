// LinkStreamSender / LinkStreamReceiver: one device stream over a ReliableLink, in the peer
// protocol's frames (api/PEER_PROTOCOL.md): DATA, END_PHASE, KEEPALIVE and END_STREAM from the
// source, COMMIT or ERROR back. The DPDK counterparts of StreamSender and StreamReceiver for one
// connection; the link is already ordered, so nothing is reassembled.
//
// Zero copy between the device and the frames: the source reads the data fd with readv(2)
// straight into frame buffers (a DATA frame of up to `chunk_size` spans many link frames), the
// destination writes the data fd with writev(2) straight from received frames. Every byte passes
// through userspace. The daemons seal the link (ReliableLink::Seal, keys from the HELLO
// connection's TLS handshake): every frame is encrypted and authenticated, so END_STREAM carries no
// digest. Over an unsealed link END_STREAM carries the stream's keyed digest and the destination
// checks it.
//
// Each call polls the link on the calling thread until it returns; a link belongs to one thread.
// A data fd that is O_NONBLOCK is waited on with poll(2) between link polls; a blocking one (a real
// VFIO data fd) is read and written as it is.
#ifndef MIGMOVER_TRANSPORT_DPDK_LINK_STREAM_H_
#define MIGMOVER_TRANSPORT_DPDK_LINK_STREAM_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "api/peer_wire.h"
#include "transport/api/device_stream.h"
#include "transport/base/unique_fd.h"
#include "transport/peer/stream_auth.h"
#include "transport/dpdk/port.h"
#include "transport/dpdk/reliable_link.h"
#include "transport/peer/frame_codec.h"
#include "transport/stream/rate_limiter.h"
#include "transport/stream/stream_rules.h"

namespace migmover::dpdk {

struct LinkStreamOptions {
  uint32_t chunk_size = 1u << 20;  // Most payload bytes per DATA frame (and per readv).
  absl::Duration idle_timeout = absl::Seconds(30);
  // The migration's bandwidth cap, shared with its other streams (null: none).
  std::shared_ptr<stream::RateLimiter> limiter;
  // Receiver: the TCP connection the source said HELLO on (-1: none). The source keeps it open
  // while it streams, so its closing before END_STREAM means the source is gone: the receive
  // fails at once instead of after the link's dead-peer timeout. Not owned.
  int peer_connection_fd = -1;
};

// The link settings both daemons use for a device stream on link `link_id`: the peer counts as
// dead only after the stream's idle timeout (a source waiting in PRE_COPY polls its link only
// when it sends a KEEPALIVE, every quarter of that timeout).
// Frames as large as the port's buffers (`frame_capacity`) allow.
LinkOptions SessionLinkOptions(uint64_t link_id, absl::Duration idle_timeout,
                               uint16_t frame_capacity);
inline constexpr uint32_t kSessionLinkWindow = 256;

class PeerWatch;

class LinkStreamSender final : public transport::DeviceStreamSender {
 public:
  // `link` must outlive this; frames of device `device` start at sequence number 0.
  LinkStreamSender(ReliableLink* link, uint32_t device, const LinkStreamOptions& options);
  ~LinkStreamSender() override;
  // One that owns its link, made over `io` with `link_options`. Errors: ReliableLink::Create's.
  static absl::StatusOr<std::unique_ptr<LinkStreamSender>> Create(std::unique_ptr<FrameIo> io,
                                                                  const LinkOptions& link_options,
                                                                  uint32_t device,
                                                                  const LinkStreamOptions& options);

  // The transport::DeviceStreamSender contract; besides its errors, Unavailable when the link died.
  absl::StatusOr<transport::PumpResult> Pump(int data_fd, wire::Phase phase, uint64_t max_bytes,
                                          const std::atomic<bool>& stop,
                                          const std::atomic<bool>& cancel) override;
  absl::Status EndPhase(wire::Phase phase) override;
  absl::Status Keepalive() override;
  absl::Status MarkInitialDataSent() override;
  absl::Status EndStream() override;
  absl::Status AwaitCommit(absl::Duration timeout, const std::atomic<bool>& cancel) override;
  absl::Status Confirm() override;
  void SendError(absl::Status why, absl::Duration wait = absl::Seconds(1)) override;
  // Takes the connection the HELLO went out on. The destination keeps its end open while the
  // stream lasts, so its closing means the destination is gone: fail at once instead of after
  // the link's dead-peer timeout.
  void WatchPeerConnection(UniqueFd connection);

  uint64_t bytes_sent() const override { return sent_.load(std::memory_order_relaxed); }
  // readv into frames: every byte passes through userspace.
  stream::DataPath PlannedDataPath(int) const override { return stream::DataPath::kCopy; }
  stream::DataPath data_path_used() const override { return stream::DataPath::kCopy; }
  std::string transport_name() const override;
  // The stream's keys (stream_auth.h); before the first byte moves. The control key seals the
  // verdicts either way. With `link_keys` the link's frames are sealed (encrypted and
  // authenticated: the daemons' way); without, they cross in clear and the keyed digest checks
  // the bytes. Errors: ReliableLink::Seal's, StreamMac::Create's.
  absl::Status Protect(const peer::StreamKeys& keys, const peer::LinkKeys& link_keys);
  absl::Status Protect(const peer::StreamKeys& keys);
  // What protects the connections (DeviceStreamSender::security()); set before use.
  void set_security(std::string security) { security_ = std::move(security); }
  std::string security() const override { return security_; }
  void set_progress_counter(std::atomic<uint64_t>* counter) override { counter_ = counter; }

 private:
  absl::Status SendControl(const std::string& frame);
  absl::Status DestinationGone() const;
  // Polls once; if the destination spoke, returns its verdict as an error.
  absl::Status PollAndCheckPeer();

  // Owned only when made by Create; the link goes before its io.
  std::unique_ptr<FrameIo> io_;
  std::unique_ptr<ReliableLink> owned_link_;
  ReliableLink* const link_;
  const uint32_t device_;
  const LinkStreamOptions options_;
  stream::OutgoingStream out_;  // The link is one connection; its first frame is number 0.
  uint64_t offset_ = 0;
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t>* counter_ = nullptr;
  std::unique_ptr<peer::StreamMac> mac_;  // The keyed digest; null without a key (tests).
  UniqueFd peer_connection_;
  std::unique_ptr<PeerWatch> watch_;
  std::string security_ = "plaintext";
};

class LinkStreamReceiver final : public transport::DeviceStreamReceiver {
 public:
  LinkStreamReceiver(ReliableLink* link, uint32_t device, const LinkStreamOptions& options);
  static absl::StatusOr<std::unique_ptr<LinkStreamReceiver>> Create(
      std::unique_ptr<FrameIo> io, const LinkOptions& link_options, uint32_t device,
      const LinkStreamOptions& options);

  // The transport::DeviceStreamReceiver contract (the digest is always checked: every byte passes
  // through userspace); Unavailable also when the link died.
  absl::StatusOr<transport::ReceiveResult> Receive(int data_fd,
                                                const std::atomic<bool>& cancel) override;
  absl::Status SendCommit(const absl::Status& result,
                          absl::Duration linger = absl::Seconds(2)) override;
  absl::Status AwaitConfirm(absl::Duration timeout, const std::atomic<bool>& cancel) override;

  // Owns the connection `options.peer_connection_fd` names, closing it with the stream.
  void OwnPeerConnection(UniqueFd connection) { peer_connection_ = std::move(connection); }

  uint64_t bytes_received() const override { return received_.load(std::memory_order_relaxed); }
  stream::DataPath PlannedDataPath(int) const override { return stream::DataPath::kCopy; }
  stream::DataPath data_path_used() const override { return stream::DataPath::kCopy; }
  std::string transport_name() const override;
  // The stream's keys (stream_auth.h); before the first byte moves. The control key seals the
  // verdicts either way. With `link_keys` the link's frames are sealed (encrypted and
  // authenticated: the daemons' way); without, they cross in clear and the keyed digest checks
  // the bytes. Errors: ReliableLink::Seal's, StreamMac::Create's.
  absl::Status Protect(const peer::StreamKeys& keys, const peer::LinkKeys& link_keys);
  absl::Status Protect(const peer::StreamKeys& keys);
  // What protects the connections (DeviceStreamSender::security()); set before use.
  void set_security(std::string security) { security_ = std::move(security); }
  std::string security() const override { return security_; }
  void set_progress_counter(std::atomic<uint64_t>* counter) override { counter_ = counter; }
  void set_initial_data_end(std::atomic<uint64_t>* end) override {
    rules_.set_initial_end_out(end);
  }

 private:
  std::unique_ptr<FrameIo> io_;
  std::unique_ptr<ReliableLink> owned_link_;
  ReliableLink* const link_;
  const uint32_t device_;
  const LinkStreamOptions options_;
  uint64_t offset_ = 0;
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t>* counter_ = nullptr;
  std::unique_ptr<peer::StreamMac> mac_;  // The keyed digest; null without a key (tests).
  // The link is one ordered connection; the source's first frame on it is number 0.
  stream::IncomingStream rules_{device_, 1, 0};
  UniqueFd peer_connection_;
  std::string security_ = "plaintext";
};

}  // namespace migmover::dpdk

#endif  // MIGMOVER_TRANSPORT_DPDK_LINK_STREAM_H_
