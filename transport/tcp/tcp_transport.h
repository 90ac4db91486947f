// TcpTransport: device streams over TCP connections to the peer daemon's listener. A device's
// stream may be striped over several connections (frames go to whichever is free, each carrying
// its stream offset; the destination puts them back in order). The HELLO exchange runs on every
// connection, which then carries the stream. Data moves with the stream engines of
// transport/stream (copy or splice jobs on an IoQueue, io_uring or plain syscalls), on the
// device's thread or on the host's pump workers, which all sessions share (pump_pool.h).
#ifndef MIGMOVER_TRANSPORT_TCP_TCP_TRANSPORT_H_
#define MIGMOVER_TRANSPORT_TCP_TCP_TRANSPORT_H_

#include <memory>

#include "absl/status/statusor.h"
#include "transport/api/transport.h"
#include "transport/stream/pump_pool.h"

namespace migmover::transport {

class TcpTransport final : public Transport {
 public:
  // `pumps`: the host's pump workers (not owned; must outlive every channel), or null to run
  // every stream on its device's thread.
  explicit TcpTransport(stream::PumpPool* pumps) : pumps_(pumps) {}

  absl::string_view name() const override { return "tcp"; }
  uint32_t max_streams_per_device() const override { return wire::kMaxStreamsPerDevice; }
  // HELLO with no link: the stream runs on the HELLO's connections.
  bool Carries(const peer::Hello& hello) const override { return hello.link == 0; }

  // Leases min(spec.workers, devices) of the host's pump workers for the session's devices
  // (none for 0: each device's thread moves its stream). Errors: InvalidArgument for streams
  // outside 1..kMaxStreamsPerDevice.
  absl::StatusOr<std::unique_ptr<SourceChannel>> StartSource(const SessionSpec& spec) override;
  absl::StatusOr<std::unique_ptr<DestinationChannel>> StartDestination(
      const SessionSpec& spec) override;

 private:
  stream::PumpPool* const pumps_;
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_TCP_TCP_TRANSPORT_H_
