#include "transport/stream/receive_stream.h"

#include "transport/stream/send_stream.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/peer/frame_codec.h"
#include "transport/peer/handshake.h"

namespace migmover::stream {

using wire::FrameType;

ReceiveStream::ReceiveStream(std::vector<UniqueFd> connections, uint32_t device_index,
                             uint64_t next_seq, const StreamOptions& stream_options)
    : sockets(std::move(connections)),
      device(device_index),
      rules(device_index, sockets.size(), next_seq),
      options(stream_options) {}

absl::Status ReceiveStream::OnHeader(size_t k, const wire::FrameHeader& h, uint32_t* data_len,
                                     bool* ended, transport::ReceiveResult* result) {
  *data_len = 0;
  ASSIGN_OR_RETURN(IncomingStream::Frame f, rules.OnHeader(k, h, offset));
  result->precopy_phases_ended = rules.precopy_phases_ended();
  if (f.needs_payload) {
    // Control payloads are small and follow their header at once.
    ASSIGN_OR_RETURN(std::string payload,
                     peer::ReadControlPayload(sockets[k].get(), h,
                                              absl::Now() + options.idle_timeout));
    if (f.type == FrameType::kError) return rules.OnError(h, payload);
    if (f.type == FrameType::kKeepalive) return rules.OnKeepalive(h, payload);
    RETURN_IF_ERROR(rules.OnEndStream(h, payload, offset).status());
    *ended = true;
  }
  *data_len = f.data_length;
  return absl::OkStatus();
}

absl::Status ReceiveStream::RecvFailure(int res, absl::string_view where) const {
  if (res == 0) {
    return absl::UnavailableError(absl::StrCat("source closed the connection of device stream ",
                                               device, " at stream offset ", offset, ", ",
                                               where));
  }
  return ErrnoStatus(absl::StrCat("recv(device stream ", device, " connection, ", where, ")"),
                     -res);
}

void ReceiveStream::Written(uint32_t n) {
  bytes_written.fetch_add(n, std::memory_order_relaxed);
  if (counter) counter->fetch_add(n, std::memory_order_relaxed);
}

}  // namespace migmover::stream
