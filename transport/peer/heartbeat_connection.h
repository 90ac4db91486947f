// HeartbeatConnection: a session's heartbeat over TCP (transport/api/heartbeat_link.h): the
// source's end sends PING and reads PONG, the destination's the reverse. Frames are numbered per
// direction from 1 (HELLO and HELLO_ACK were frame 0), and a gap or any other frame type is
// DataLoss: the peer is not speaking the protocol. The destination's end also sends LOADED
// (a device's initial precopy data is in it), which the source's AwaitBeat collects.
#ifndef MIGMOVER_TRANSPORT_PEER_HEARTBEAT_CONNECTION_H_
#define MIGMOVER_TRANSPORT_PEER_HEARTBEAT_CONNECTION_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/api/heartbeat_link.h"
#include "transport/api/transport.h"
#include "transport/base/unique_fd.h"
#include "transport/net/socket.h"
#include "transport/tls/tls_context.h"
#include "transport/peer/frame_codec.h"

namespace migmover::peer {

class HeartbeatConnection final : public transport::HeartbeatLink {
 public:
  enum class End { kSource, kDestination };

  // The source's end: connects to the destination daemon's peer listener at `peer`, sends
  // `hello` (its heartbeat flag set here) and waits for HELLO_ACK, all within `timeout`. The
  // connection fails after `peer_timeout` of silence from the peer's kernel as well
  // (net::TuneDataSocket; 0 = the kernel's defaults). With `tls`, over TLS (peer_connect.h).
  // Errors: Unavailable (unreachable), the destination's refusal as its canonical code,
  // DataLoss, DeadlineExceeded; the TLS handshake's.
  static absl::StatusOr<std::unique_ptr<HeartbeatConnection>> Open(
      const net::HostPort& peer, Hello hello, absl::Duration timeout,
      absl::Duration peer_timeout, const tls::TlsContext* tls = nullptr);

  // Either end of a connection whose HELLO / HELLO_ACK exchange is done (the destination's
  // after it answered; a test's socketpair). Takes ownership of `fd`.
  HeartbeatConnection(UniqueFd fd, End end) : fd_(std::move(fd)), end_(end) {}

  absl::Status Beat(absl::Time deadline, const std::atomic<bool>& stop) override;
  absl::Status AwaitBeat(absl::Time deadline, const std::atomic<bool>& stop) override;
  absl::Status SendLoaded(uint32_t device, absl::Time deadline,
                          const std::atomic<bool>& stop) override;
  std::vector<uint32_t> TakeLoaded() override;

 private:
  std::vector<uint32_t> loaded_;  // LOADED frames AwaitBeat read, not yet taken.
  UniqueFd fd_;
  const End end_;
  uint64_t sent_ = 1;      // Sequence number of our next beat.
  uint64_t expected_ = 1;  // Of the peer's next beat.
};

// A source session's heartbeat (SourceChannel::OpenHeartbeat of every transport): Open to
// `spec.peer` with the session's id, device count and token, within `timeout`.
absl::StatusOr<std::unique_ptr<transport::HeartbeatLink>> OpenHeartbeat(
    const transport::SessionSpec& spec, absl::Duration timeout);

}  // namespace migmover::peer

#endif  // MIGMOVER_TRANSPORT_PEER_HEARTBEAT_CONNECTION_H_
