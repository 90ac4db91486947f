#include "transport/stream/send_stream.h"

#include <poll.h>
#include <sys/ioctl.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"
#include "transport/peer/handshake.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {

SendStream::SendStream(std::vector<UniqueFd> connections, uint32_t device_index,
                       const StreamOptions& stream_options)
    : sockets(std::move(connections)),
      out(device_index, sockets.size()),
      device(device_index),
      options(stream_options),
      replay(ReplayFrames(stream_options)) {}

void SendStream::Sent(uint32_t n) {
  offset += n;
  bytes_sent.fetch_add(n, std::memory_order_relaxed);
  if (counter) counter->fetch_add(n, std::memory_order_relaxed);
}

absl::Status SendStream::PeerVerdict(uint32_t max_frames) {
  for (uint32_t n = 0; n < max_frames; ++n) {
    pollfd p{control_fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) {
      return absl::OkStatus();
    }
    // Within a bounded turn, only the first frame may wait (at most 1 s) for bytes still on
    // their way: a peer that drips its frames costs the turn one such wait, not one per frame.
    int buffered = 0;
    if (max_frames != UINT32_MAX && n > 0 && ::ioctl(control_fd(), FIONREAD, &buffered) == 0 &&
        buffered < static_cast<int>(wire::kFrameHeaderSize + wire::kVerdictSealSize)) {
      return absl::OkStatus();
    }
    absl::StatusOr<peer::ControlFrame> read =
        peer::ReadControlFrame(control_fd(), absl::Now() + absl::Seconds(1));
    if (!read.ok()) {
      // Reset or silent without a word: the connection, not a verdict. Closed in order (its
      // FIN): the destination's process closed it (it ended, or died).
      const absl::Status& s = read.status();
      const bool lost =
          (absl::IsUnavailable(s) && !net::IsPeerClosed(s)) || absl::IsDeadlineExceeded(s);
      return lost ? ConnectionLostError(s) : s;
    }
    const peer::ControlFrame& f = *read;
    if (f.header.type == static_cast<uint8_t>(wire::FrameType::kAck)) {
      RETURN_IF_ERROR(OnAck(f.header, f.payload));
      continue;
    }
    absl::Status verdict = peer::VerdictOf(f, "destination gave up", peer_seq, out.control_key());
    // Even a COMMIT(0) is wrong mid-stream: nothing was committed yet.
    return verdict.ok() ? absl::DataLossError("destination committed before END_STREAM") : verdict;
  }
  return absl::OkStatus();  // More may be waiting: the next turn reads it.
}

absl::Status SendStream::OnAck(const wire::FrameHeader& h, absl::string_view payload) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("device stream ", device, ": the destination's ACK ",
                                            h.seq, " ", why));
  };
  if (h.seq != peer_seq) return bad(absl::StrCat("arrived where frame ", peer_seq, " was due"));
  if (h.device != device) return bad(absl::StrCat("names device ", h.device));
  ASSIGN_OR_RETURN(absl::string_view body, peer::OpenVerdict(h, payload, out.control_key()));
  if (!body.empty()) return bad("carries a payload");
  const uint64_t last = acked.load(std::memory_order_relaxed);
  if (h.offset < last || h.offset > framed) {
    return bad(absl::StrCat("acknowledges offset ", h.offset, ", outside ", last, "..", framed,
                            " (the last ACK .. the bytes sent)"));
  }
  ++peer_seq;
  acked.store(h.offset, std::memory_order_relaxed);
  acks.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace migmover::stream
