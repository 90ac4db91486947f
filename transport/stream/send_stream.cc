#include "transport/stream/send_stream.h"

#include <poll.h>

#include "absl/time/clock.h"
#include "transport/base/status_macros.h"
#include "transport/peer/handshake.h"

namespace migmover::stream {
SendStream::SendStream(std::vector<UniqueFd> connections, uint32_t device_index,
                       const StreamOptions& stream_options)
    : sockets(std::move(connections)),
      out(device_index, sockets.size()),
      device(device_index),
      options(stream_options) {}

void SendStream::Sent(uint32_t n) {
  offset += n;
  bytes_sent.fetch_add(n, std::memory_order_relaxed);
  if (counter) counter->fetch_add(n, std::memory_order_relaxed);
}

absl::Status SendStream::PeerVerdict() {
  pollfd p{control_fd(), POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(peer::ControlFrame f,
                   peer::ReadControlFrame(control_fd(), absl::Now() + absl::Seconds(1)));
  absl::Status verdict = peer::VerdictOf(f, "destination gave up", kVerdictSeq, out.control_key());
  // Even a COMMIT(0) is wrong mid-stream: nothing was committed yet.
  return verdict.ok() ? absl::DataLossError("destination committed before END_STREAM") : verdict;
}

}  // namespace migmover::stream
