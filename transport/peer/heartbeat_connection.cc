#include "transport/peer/heartbeat_connection.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/peer/handshake.h"
#include "transport/peer/peer_connect.h"

namespace migmover::peer {

absl::StatusOr<std::unique_ptr<HeartbeatConnection>> HeartbeatConnection::Open(
    const net::HostPort& peer, Hello hello, absl::Duration timeout, absl::Duration peer_timeout,
    const tls::TlsContext* tls) {
  const absl::Time deadline = absl::Now() + timeout;
  hello.heartbeat = true;
  hello.device = 0;
  hello.stream = 0;
  hello.stream_count = 1;
  hello.link = 0;
  ASSIGN_OR_RETURN(hello.nonce, NewHelloNonce());
  ASSIGN_OR_RETURN(PeerConnection conn, ConnectPeer(peer, timeout, tls, {.peer_timeout = peer_timeout}));
  hello.binding = conn.binding;
  RETURN_IF_ERROR(conn.Explain(net::SendAll(conn.fd.get(), EncodeHello(0, hello), deadline)));
  RETURN_IF_ERROR(conn.Explain(AwaitHelloAck(conn.fd.get(), deadline)));
  return std::make_unique<HeartbeatConnection>(std::move(conn.fd), End::kSource);
}

absl::StatusOr<std::unique_ptr<transport::HeartbeatLink>> OpenHeartbeat(
    const transport::SessionSpec& spec, absl::Duration timeout) {
  Hello hello;
  hello.session_id = spec.session_id;
  hello.device_count = spec.device_count;
  hello.token = spec.token;
  ASSIGN_OR_RETURN(std::unique_ptr<HeartbeatConnection> c,
                   HeartbeatConnection::Open(spec.peer, std::move(hello), timeout,
                                             spec.stream.peer_timeout, spec.tls.get()));
  return std::unique_ptr<transport::HeartbeatLink>(std::move(c));
}

absl::Status HeartbeatConnection::Beat(absl::Time deadline, const std::atomic<bool>& stop) {
  const uint64_t seq = sent_++;
  return net::SendAll(fd_.get(), end_ == End::kSource ? EncodePing(seq) : EncodePong(seq),
                      deadline, &stop);
}

absl::Status HeartbeatConnection::SendLoaded(uint32_t device, absl::Time deadline,
                                             const std::atomic<bool>& stop) {
  if (end_ != End::kDestination) return absl::InternalError("LOADED comes from the destination");
  return net::SendAll(fd_.get(), EncodeLoaded(sent_++, device), deadline, &stop);
}

std::vector<uint32_t> HeartbeatConnection::TakeLoaded() { return std::exchange(loaded_, {}); }

absl::Status HeartbeatConnection::AwaitBeat(absl::Time deadline, const std::atomic<bool>& stop) {
  while (true) {
    // Wait for the first byte without consuming any: a deadline that passed halfway through a
    // frame would leave the next read out of step.
    // What already arrived counts even past the deadline (a waiter that was itself descheduled
    // must not blame the peer for beats waiting in its buffer).
    while (true) {
      if (stop.load()) return absl::CancelledError("heartbeat stopped");
      const absl::Duration left = std::max(deadline - absl::Now(), absl::ZeroDuration());
      pollfd pf{fd_.get(), POLLIN, 0};
      const int ms = left == absl::ZeroDuration()
                         ? 0
                         : static_cast<int>(absl::ToInt64Milliseconds(
                               std::min(left, absl::Milliseconds(100)))) + 1;
      const int n = ::poll(&pf, 1, ms);
      if (n < 0 && errno != EINTR) {
        return ErrnoStatus(absl::StrCat("poll(heartbeat fd ", fd_.get(), ")"), errno);
      }
      if (n > 0) break;
      if (left == absl::ZeroDuration()) {
        return absl::DeadlineExceededError("heartbeat: no beat from the peer before the deadline");
      }
    }
    // A frame has begun: the rest of it is due at once.
    ASSIGN_OR_RETURN(ControlFrame f,
                     ReadControlFrame(fd_.get(), absl::Now() + absl::Seconds(1), &stop));
    const FrameType want = end_ == End::kSource ? FrameType::kPong : FrameType::kPing;
    const bool loaded = end_ == End::kSource &&
                        f.header.type == static_cast<uint8_t>(FrameType::kLoaded);
    if ((f.header.type != static_cast<uint8_t>(want) && !loaded) || f.header.seq != expected_) {
      return absl::DataLossError(absl::StrCat(
          "heartbeat: expected ", FrameTypeName(static_cast<uint8_t>(want)), " ", expected_,
          ", got ", FrameTypeName(f.header.type), " ", f.header.seq));
    }
    ++expected_;
    if (!loaded) return absl::OkStatus();
    // A device's initial data is in the destination's device; its PONG follows.
    loaded_.push_back(f.header.device);
  }
}

}  // namespace migmover::peer
