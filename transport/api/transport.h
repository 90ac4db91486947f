// Transport: what carries a session's device streams between two daemons. Sessions hold one and
// never look behind it: the source opens each device's stream to the peer, the destination
// accepts them. Implementations: TCP (transport/tcp: one or several connections per device, on
// io_uring or plain syscalls) and DPDK (transport/dpdk: a reliable link per device over the
// daemon's port). Whatever the transport, a stream begins with the peer protocol's HELLO exchange
// on a TCP connection to the destination's peer listener (api/PEER_PROTOCOL.md): HELLO's `link`
// field says which transport carries the rest.
//
// Threads: a Transport is shared by every session of the daemon and is thread-safe. A session's
// SourceChannel / DestinationChannel is called concurrently by that session's device threads
// (Open) or by the peer listener's handshake threads (Accept); neither holds a lock across a
// call that waits on the peer.
#ifndef MIGMOVER_TRANSPORT_API_TRANSPORT_H_
#define MIGMOVER_TRANSPORT_API_TRANSPORT_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "api/peer_wire.h"
#include "transport/api/device_stream.h"
#include "transport/api/heartbeat_link.h"
#include "transport/base/unique_fd.h"
#include "transport/net/socket.h"
#include "transport/peer/frame_codec.h"
#include "transport/peer/handshake.h"
#include "transport/stream/stream_options.h"
#include "transport/tls/tls_context.h"

namespace migmover::transport {

// One session's settings, as the transport needs them.
struct SessionSpec {
  std::string session_id;
  uint32_t device_count = 0;
  std::array<uint8_t, wire::kTokenSize> token{};
  stream::StreamOptions stream;
  // Connections each device's stream is striped over (TCP); 1 for transports without striping.
  uint32_t streams = 1;
  // How many of the host's pump workers (threads shared by all sessions) the session's devices
  // spread over, at most one per device; 0 = each device's own thread moves its data.
  uint32_t workers = 0;
  // Source only: the destination daemon's peer listener.
  net::HostPort peer;
  // Source only: the TLS every connection to the peer runs (null: plaintext, by the operator's
  // explicit choice).
  std::shared_ptr<const tls::TlsContext> tls;
};

// A source session's streams out.
class SourceChannel {
 public:
  virtual ~SourceChannel() = default;
  // Connects device `device`'s stream to the peer, says HELLO and waits for the answer (up to
  // `timeout`). Errors: Unavailable (peer unreachable), the destination's refusal as its
  // canonical code ("destination refused the stream: unknown session"), DataLoss for a malformed
  // answer, DeadlineExceeded.
  virtual absl::StatusOr<std::unique_ptr<DeviceStreamSender>> Open(uint32_t device,
                                                                   absl::Duration timeout) = 0;
  // Opens the session's heartbeat with the destination daemon (heartbeat_link.h): a TCP
  // connection to its peer listener, HELLO with the heartbeat flag, answered within `timeout`,
  // whatever transport carries the streams. Errors: as Open's.
  virtual absl::StatusOr<std::unique_ptr<HeartbeatLink>> OpenHeartbeat(absl::Duration timeout) = 0;
  // For logs: where the streams go and over what ("127.0.0.1:7411 over 2 TCP connection(s)").
  virtual std::string Describe() const = 0;
};

// A destination session's streams in.
class DestinationChannel {
 public:
  virtual ~DestinationChannel() = default;
  // A connection whose HELLO named this session and which the session accepted (token, device
  // index and count checked). Answers it with HELLO_ACK (by `deadline`) and returns the device's
  // receiver once every connection of the device has come; null while more are due. Errors are
  // refusals, already sent to the peer: InvalidArgument (stream count disagrees with an earlier
  // connection's), AlreadyExists (stream index already connected), FailedPrecondition (what
  // the HELLO asks this transport cannot do), Unavailable (the transport's port is down); or the
  // send's error if the answer did not go out (the stream may connect again).
  // `security` says what protects `connection` (peer::PeerConnection::security); `tls`:
  // whether TLS ran on it (its AEAD then checks every byte of the stream on it).
  virtual absl::StatusOr<std::unique_ptr<DeviceStreamReceiver>> Accept(
      const peer::Hello& hello, UniqueFd connection, const std::string& security, bool tls,
      absl::Time deadline) = 0;
  // A connection whose resuming HELLO (api/PEER_PROTOCOL.md, "Resume") named this session and
  // passed its proof: the device's receiver, waiting to resume, answers it once every
  // connection of the resume has come. Errors are refusals, already sent to the peer (by
  // `deadline`):
  // FailedPrecondition when the device's stream cannot resume (not connected yet, ended,
  // failed, or this transport does not resume), InvalidArgument for a HELLO that disagrees with
  // the stream's first ones (nonce, stream count, TLS or not), AlreadyExists for a resume's
  // number not above the last one's.
  virtual absl::Status AcceptResume(const peer::Hello& hello, UniqueFd connection,
                                    const std::string& security, bool tls,
                                    absl::Time deadline) {
    absl::Status no = absl::FailedPreconditionError("this transport does not resume streams");
    (void)peer::SendHelloAck(connection.get(), no, hello.device, deadline);
    return no;
  }
  // Closes the connections of devices whose streams have not all come (cancel).
  virtual void DropPending() = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // "tcp", "dpdk": what TransferOptions.transport names.
  virtual absl::string_view name() const = 0;
  // The most connections one device's stream may be striped over.
  virtual uint32_t max_streams_per_device() const = 0;
  // Whether a source's HELLO asks for this transport.
  virtual bool Carries(const peer::Hello& hello) const = 0;

  // A source session's channel. Errors: InvalidArgument for a spec this transport cannot carry
  // (more streams per device than it stripes over); resource errors (threads, rings, buffers).
  virtual absl::StatusOr<std::unique_ptr<SourceChannel>> StartSource(const SessionSpec& spec) = 0;
  // A destination session's channel, for the streams of it that this transport carries.
  virtual absl::StatusOr<std::unique_ptr<DestinationChannel>> StartDestination(
      const SessionSpec& spec) = 0;
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_API_TRANSPORT_H_
