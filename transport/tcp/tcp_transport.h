// TcpTransport: device streams over TCP connections to the peer daemon's listener. A device's
// stream may be striped over several connections (frames go to whichever is free, each carrying
// its stream offset; the destination puts them back in order). The HELLO exchange runs on every
// connection, which then carries the stream. Data moves with the stream engines of
// transport/stream (copy or splice jobs on an IoQueue, io_uring or plain syscalls), on the
// device's thread or on the session's shared pump workers.
#ifndef MIGMOVER_TRANSPORT_TCP_TCP_TRANSPORT_H_
#define MIGMOVER_TRANSPORT_TCP_TCP_TRANSPORT_H_

#include <memory>

#include "absl/status/statusor.h"
#include "transport/api/transport.h"

namespace migmover::transport {

class TcpTransport final : public Transport {
 public:
  absl::string_view name() const override { return "tcp"; }
  uint32_t max_streams_per_device() const override { return wire::kMaxStreamsPerDevice; }
  // HELLO with no link: the stream runs on the HELLO's connections.
  bool Carries(const peer::Hello& hello) const override { return hello.link == 0; }

  // Starts the session's pump workers (spec.workers, at most one per device). Errors:
  // InvalidArgument for streams outside 1..kMaxStreamsPerDevice; those of starting a worker
  // (--io_engine=uring refused, buffers not registrable).
  absl::StatusOr<std::unique_ptr<SourceChannel>> StartSource(const SessionSpec& spec) override;
  absl::StatusOr<std::unique_ptr<DestinationChannel>> StartDestination(
      const SessionSpec& spec) override;
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_TCP_TCP_TRANSPORT_H_
