#include "transport/stream/stream_receiver.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"
#include "transport/peer/frame_codec.h"
#include "transport/peer/handshake.h"
#include "transport/stream/copy_receive_job.h"
#include "transport/stream/splice_io.h"
#include "transport/stream/send_stream.h"
#include "transport/stream/splice_receive.h"

namespace migmover::stream {

using wire::FrameType;

StreamReceiver::StreamReceiver(io::IoQueue* ring, std::vector<UniqueFd> sockets, uint32_t device,
                               uint64_t next_seq, const StreamOptions& options)
    : runner_(ring, options.io_engine, options.chunk_size),
      r_(std::move(sockets), device, next_seq, options) {}

StreamReceiver::~StreamReceiver() = default;

absl::StatusOr<std::unique_ptr<StreamReceiver>> StreamReceiver::Create(
    io::IoQueue* ring, UniqueFd socket, uint32_t device, uint64_t next_seq,
    const StreamOptions& options) {
  std::vector<UniqueFd> sockets;
  sockets.push_back(std::move(socket));
  std::unique_ptr<StreamReceiver> r;
  ASSIGN_OR_RETURN(r, Create(ring, std::move(sockets), device, options));
  r->r_.rules = IncomingStream(device, 1, next_seq);
  return r;
}

absl::StatusOr<std::unique_ptr<StreamReceiver>> StreamReceiver::Create(
    io::IoQueue* ring, std::vector<UniqueFd> sockets, uint32_t device,
    const StreamOptions& options) {
  if (options.chunk_size == 0 || options.chunk_size > wire::kMaxDataLength || options.buffers < 2) {
    return absl::InvalidArgumentError("receiver: bad chunk size or buffer count");
  }
  if (sockets.empty() || sockets.size() > wire::kMaxStreamsPerDevice) {
    return absl::InvalidArgumentError(
        absl::StrCat("a device stream takes 1..", wire::kMaxStreamsPerDevice, " connections"));
  }
  std::unique_ptr<StreamReceiver> r(
      new StreamReceiver(ring, std::move(sockets), device, 1, options));
  for (const UniqueFd& fd : r->r_.sockets) {
    RETURN_IF_ERROR(net::TuneDataSocket(fd.get(), options.socket_buffer, options.tcp_congestion,
                                        options.peer_timeout));
  }
  return r;
}

absl::Status StreamReceiver::Protect(const StreamProtection& protection) {
  if (protection.keys.has_value()) {
    ASSIGN_OR_RETURN(r_.mac, peer::StreamMac::Create(protection.keys->digest));
    r_.rules.set_control_key(protection.keys->control);
  }
  r_.aead = protection.aead;
  return absl::OkStatus();
}

DataPath StreamReceiver::PlannedDataPath(int data_fd) const {
  // Without TLS only the keyed digest checks the bytes, and it must see every one of them.
  if (!r_.aead) return DataPath::kCopy;
  // Striped frames must be put back in order in buffers: splice cannot reorder.
  if (r_.sockets.size() > 1) return DataPath::kCopy;
  // Only the copy path ends a lost connection with the bytes it took all written, and resumes.
  if (r_.options.reconnect_window > absl::ZeroDuration()) return DataPath::kCopy;
  return ResolveDataPath(r_.options.data_path, data_fd, r_.options.auto_spliceable);
}

std::string StreamReceiver::transport_name() const {
  return r_.sockets.size() > 1 ? absl::StrCat("tcp x ", r_.sockets.size()) : "tcp";
}

absl::StatusOr<ReceiveResult> StreamReceiver::Receive(int data_fd,
                                                      const std::atomic<bool>& cancel) {
  if (ResolveDataPath(r_.options.data_path, data_fd, r_.options.auto_spliceable) ==
          DataPath::kSplice &&
      !FdSupportsSplice(data_fd)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--data_path=splice: data fd ", data_fd, " does not support splice"));
  }
  const DataPath path = PlannedDataPath(data_fd);
  r_.path_used = path;
  if (path == DataPath::kSplice) {
    RETURN_IF_ERROR(PrepareSplice(&pipe_, r_.options, r_.sockets));
    ASSIGN_OR_RETURN(std::unique_ptr<PumpJob> job,
                     runner_.Run(0, [&](io::IoQueue* queue, BufferPool*, std::span<const uint32_t>,
                                        uint32_t id) -> std::unique_ptr<PumpJob> {
                       return SpliceReceiveJob::Create(&r_, &pipe_, queue, id, data_fd, cancel);
                     }));
    return static_cast<const SpliceReceiveJob&>(*job).Result();
  }
  ASSIGN_OR_RETURN(
      std::unique_ptr<PumpJob> job,
      runner_.Run(CopyReceiveJob::SlotsWanted(r_, runner_.buffer_cap()),
                  [&](io::IoQueue* queue, BufferPool* pool, std::span<const uint32_t> slots,
                      uint32_t id) -> std::unique_ptr<PumpJob> {
                    return CopyReceiveJob::Create(&r_, queue, pool, slots, id, data_fd, cancel);
                  }));
  return static_cast<const CopyReceiveJob&>(*job).Result();
}

absl::StatusOr<uint64_t> StreamReceiver::Resume(std::vector<UniqueFd> sockets) {
  if (!r_.resumable) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device stream ", r_.device,
        " cannot resume: its last receive did not end on a lost connection with every byte it "
        "checked written into the device"));
  }
  if (r_.rules.ended()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device stream ", r_.device, " cannot resume: its END_STREAM had arrived"));
  }
  if (sockets.size() != r_.sockets.size()) {
    return absl::InvalidArgumentError(absl::StrCat("device stream ", r_.device, " resumes on ",
                                                   sockets.size(), " connections, it had ",
                                                   r_.sockets.size()));
  }
  for (const UniqueFd& fd : sockets) {
    RETURN_IF_ERROR(net::TuneDataSocket(fd.get(), r_.options.socket_buffer,
                                        r_.options.tcp_congestion, r_.options.peer_timeout));
  }
  r_.sockets = std::move(sockets);
  // Frames on the new connections are numbered after their HELLO (0), as on the first ones.
  r_.rules.Reconnected(r_.sockets.size(), 1, r_.written);
  r_.offset = r_.written;
  r_.next_out_seq = 1;
  r_.acked = r_.written;
  r_.resumable = false;
  return r_.written;
}

absl::Status StreamReceiver::AnswerResume(absl::Time deadline) {
  for (const UniqueFd& fd : r_.sockets) {
    RETURN_IF_ERROR(peer::SendHelloAck(fd.get(), absl::OkStatus(), r_.device, deadline, r_.written));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<UniqueFd>> StreamReceiver::DupConnections() const {
  std::vector<UniqueFd> dups;
  for (const UniqueFd& fd : r_.sockets) {
    const int d = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0);
    if (d < 0) return ErrnoStatus(absl::StrCat("fcntl(fd ", fd.get(), ", F_DUPFD_CLOEXEC)"), errno);
    dups.emplace_back(d);
  }
  return dups;
}

absl::Status StreamReceiver::AwaitConfirm(absl::Duration timeout,
                                          const std::atomic<bool>& cancel) {
  while (true) {
    // Each KEEPALIVE restarts the wait: the source is alive, its other devices still moving.
    ASSIGN_OR_RETURN(peer::ControlFrame f,
                     peer::ReadControlFrame(r_.control_fd(), absl::Now() + timeout, &cancel));
    ASSIGN_OR_RETURN(bool confirmed, r_.rules.OnSettle(f.header, f.payload));
    if (confirmed) return absl::OkStatus();
  }
}

absl::Status StreamReceiver::SendCommit(const absl::Status& verdict, absl::Duration linger) {
  peer::PeerStatus st{static_cast<uint32_t>(verdict.code()), std::string(verdict.message())};
  absl::Status sent = net::SendAll(
      r_.control_fd(),
      peer::SealVerdict(
          peer::EncodeStatusFrame(FrameType::kCommit, r_.next_out_seq++, r_.device, st),
          r_.rules.control_key()),
      absl::Now() + (verdict.ok() ? r_.options.idle_timeout : linger));
  if (verdict.ok() || !sent.ok()) return sent;
  // Closing with unread data would reset the connection and could drop the verdict.
  for (const UniqueFd& fd : r_.sockets) ::shutdown(fd.get(), SHUT_WR);
  const absl::Time until = absl::Now() + linger;
  char sink[64 << 10];
  pollfd p[wire::kMaxStreamsPerDevice];
  size_t open = r_.sockets.size();
  for (size_t k = 0; k < r_.sockets.size(); ++k) p[k] = {r_.sockets[k].get(), POLLIN, 0};
  while (open > 0 && absl::Now() < until) {
    if (::poll(p, r_.sockets.size(), 50) <= 0) continue;
    for (size_t k = 0; k < r_.sockets.size(); ++k) {
      if (p[k].fd < 0 || !p[k].revents) continue;
      ssize_t n = ::recv(p[k].fd, sink, sizeof(sink), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        p[k].fd = -1;  // poll ignores negative fds.
        --open;
      }
    }
  }
  return sent;
}

}  // namespace migmover::stream
