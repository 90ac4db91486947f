#include "transport/stream/stream_sender.h"

#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"
#include "transport/peer/handshake.h"
#include "transport/stream/copy_send_job.h"
#include "transport/stream/splice_send.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {

using wire::Phase;

StreamSender::StreamSender(io::IoQueue* ring, std::vector<UniqueFd> sockets, uint32_t device,
                           const StreamOptions& options)
    : runner_(ring, options.io_engine, options.chunk_size),
      s_(std::move(sockets), device, options) {}

StreamSender::~StreamSender() = default;

absl::StatusOr<std::unique_ptr<StreamSender>> StreamSender::Create(io::IoQueue* ring,
                                                                   UniqueFd socket, uint32_t device,
                                                                   const StreamOptions& options) {
  std::vector<UniqueFd> sockets;
  sockets.push_back(std::move(socket));
  return Create(ring, std::move(sockets), device, options);
}

absl::StatusOr<std::unique_ptr<StreamSender>> StreamSender::Create(io::IoQueue* ring,
                                                                   std::vector<UniqueFd> sockets,
                                                                   uint32_t device,
                                                                   const StreamOptions& options) {
  if (sockets.empty() || sockets.size() > wire::kMaxStreamsPerDevice) {
    return absl::InvalidArgumentError(absl::StrCat("a device stream takes 1..",
                                                   wire::kMaxStreamsPerDevice, " connections, not ",
                                                   sockets.size()));
  }
  if (options.chunk_size == 0 || options.chunk_size > wire::kMaxDataLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk size ", options.chunk_size, " outside 1..", wire::kMaxDataLength));
  }
  if (options.buffers < 2) return absl::InvalidArgumentError("a stream needs at least 2 buffers");
  std::unique_ptr<StreamSender> s(new StreamSender(ring, std::move(sockets), device, options));
  for (const UniqueFd& fd : s->s_.sockets) {
    RETURN_IF_ERROR(net::TuneDataSocket(fd.get(), options.socket_buffer, options.tcp_congestion,
                                        options.peer_timeout));
  }
  return s;
}

absl::Status StreamSender::Protect(const StreamProtection& protection) {
  if (protection.keys.has_value()) {
    ASSIGN_OR_RETURN(s_.mac, peer::StreamMac::Create(protection.keys->digest));
    s_.out.set_control_key(protection.keys->control);
  }
  s_.aead = protection.aead;
  return absl::OkStatus();
}

DataPath StreamSender::PlannedDataPath(int data_fd) const {
  // Without TLS only the keyed digest checks the bytes, and it must see every one of them.
  if (!s_.aead) return DataPath::kCopy;
  // Spliced bytes never reach a buffer that could keep them for a resend.
  if (s_.replay.enabled()) return DataPath::kCopy;
  return ResolveDataPath(s_.options.data_path, data_fd, s_.options.auto_spliceable);
}

std::string StreamSender::transport_name() const {
  return s_.sockets.size() > 1 ? absl::StrCat("tcp x ", s_.sockets.size()) : "tcp";
}

absl::Status StreamSender::SendControl(const std::string& frame) {
  absl::Status sent = net::SendAll(s_.control_fd(), frame, absl::Now() + s_.options.idle_timeout);
  if (sent.ok()) return sent;
  // A destination that gave up says why before it closes: that, not the broken pipe it left,
  // is the error (as on the data path).
  absl::Status why = s_.PeerVerdict();
  if (!why.ok()) return why;
  // A send that failed or never got through (a silent peer): the connection.
  return absl::IsUnavailable(sent) || absl::IsDeadlineExceeded(sent) ? ConnectionLostError(sent)
                                                                     : sent;
}

absl::Status StreamSender::Handshake(const peer::Hello& hello, absl::Duration timeout,
                                     uint64_t* resume_offset) {
  const absl::Time deadline = absl::Now() + timeout;
  for (size_t k = 0; k < s_.sockets.size(); ++k) {
    peer::Hello h = hello;
    if (k < bindings_.size()) h.binding = bindings_[k];  // Each proof bound to its connection.
    RETURN_IF_ERROR(net::SendAll(s_.sockets[k].get(), s_.out.Hello(k, h), deadline));
  }
  for (size_t k = 0; k < s_.sockets.size(); ++k) {
    uint64_t offset = 0;
    RETURN_IF_ERROR(peer::AwaitHelloAck(s_.sockets[k].get(), deadline, &offset));
    if (k == 0 && resume_offset != nullptr) *resume_offset = offset;
  }
  return absl::OkStatus();
}

absl::Status StreamSender::Reconnect(std::vector<UniqueFd> sockets) {
  if (sockets.size() != s_.sockets.size()) {
    return absl::InvalidArgumentError(absl::StrCat("device stream ", s_.device, " resumes on ",
                                                   sockets.size(), " connections, it had ",
                                                   s_.sockets.size()));
  }
  for (const UniqueFd& fd : sockets) {
    RETURN_IF_ERROR(net::TuneDataSocket(fd.get(), s_.options.socket_buffer,
                                        s_.options.tcp_congestion, s_.options.peer_timeout));
  }
  for (const UniqueFd& fd : s_.sockets) {
    // Given up: reset, not closed in order. A destination that answered these (an attempt
    // that timed out here) must see a lost connection it may resume from, not the source's
    // deliberate end.
    if (net::IsTcp(fd.get())) {
      const linger abort{1, 0};
      (void)::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
    }
  }
  s_.sockets = std::move(sockets);
  // The old connections' TLS exporter values would prove nothing on the new ones.
  bindings_.clear();
  s_.out.Reconnected(s_.sockets.size());
  s_.peer_seq = SendStream::kFirstPeerSeq;
  s_.next_socket = 0;
  return absl::OkStatus();
}

absl::Status StreamSender::ReplayFrom(uint64_t from) {
  if (!s_.replay.enabled()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device stream ", s_.device, " cannot resume: it keeps no replay buffer"));
  }
  const uint64_t acked = s_.acked.load(std::memory_order_relaxed);
  const uint64_t first = s_.replay.first_offset(s_.read);
  // Up to the bytes put in frames: what was read but never sent cannot be in the device.
  if (from < acked || from > s_.framed || from < first) {
    return absl::DataLossError(absl::StrCat(
        "device stream ", s_.device, ": the destination resumes at offset ", from,
        ", outside what this source can send again (", std::max(acked, first), "..", s_.framed,
        ": its last ACK or the first byte still held, .. the bytes sent)"));
  }
  // No pump runs: no send is in flight on any held buffer.
  s_.replay.Release(from, [](uint32_t) { return true; });
  s_.replay_held.store(s_.replay.bytes(), std::memory_order_relaxed);
  s_.acked.store(from, std::memory_order_relaxed);
  s_.framed = from;
  s_.offset = from;
  s_.replay_from = from;
  // The marks go again, in the order they went, before the held frames: the destination places
  // each by its offset, and takes one it already has as a repeat.
  if (s_.initial_sent_at != SendStream::kNoMark) {
    RETURN_IF_ERROR(SendControl(s_.out.InitialDataSent(s_.initial_sent_at)));
  }
  if (s_.precopy_end_at != SendStream::kNoMark) {
    RETURN_IF_ERROR(SendControl(s_.out.EndPhase(Phase::kPreCopy, s_.precopy_end_at)));
  }
  return absl::OkStatus();
}

absl::StatusOr<PumpResult> StreamSender::Pump(int data_fd, Phase phase, uint64_t max_bytes,
                                              const std::atomic<bool>& stop,
                                              const std::atomic<bool>& cancel) {
  if (PlannedDataPath(data_fd) == DataPath::kSplice && !FdSupportsSplice(data_fd) &&
      s_.options.data_path == DataPath::kSplice) {
    return absl::FailedPreconditionError(
        absl::StrCat("--data_path=splice: data fd ", data_fd,
                     " does not support splice (only pipes, files and nonblocking sockets do)"));
  }
  if (PlannedDataPath(data_fd) == DataPath::kSplice && FdSupportsSplice(data_fd)) {
    RETURN_IF_ERROR(PrepareSplice(&pipe_, s_.options, s_.sockets));
    ASSIGN_OR_RETURN(std::unique_ptr<PumpJob> job,
                     runner_.Run(0, [&](io::IoQueue* queue, BufferPool*, std::span<const uint32_t>,
                                        uint32_t id) -> std::unique_ptr<PumpJob> {
                       return SpliceSendJob::Create(&s_, &pipe_, queue, id, data_fd, phase,
                                                    max_bytes, stop, cancel);
                     }));
    const auto& splice = static_cast<const SpliceSendJob&>(*job);
    if (!splice.unsupported()) return splice.Result();
    if (s_.options.data_path == DataPath::kSplice) {
      return absl::FailedPreconditionError(absl::StrCat("--data_path=splice: data fd ", data_fd,
                                                        " does not support splice (EINVAL)"));
    }
  }
  return Copy(data_fd, phase, max_bytes, stop, cancel, std::nullopt);
}

absl::StatusOr<PumpResult> StreamSender::Copy(int data_fd, Phase phase, uint64_t max_bytes,
                                              const std::atomic<bool>& stop,
                                              const std::atomic<bool>& cancel,
                                              std::optional<CopySendJob::StreamFd> stream_fd) {
  s_.path_used = DataPath::kCopy;
  absl::StatusOr<std::unique_ptr<PumpJob>> job =
      runner_.Run(CopySendJob::SlotsWanted(s_, runner_.buffer_cap()),
                  [&](io::IoQueue* queue, BufferPool* pool, std::span<const uint32_t> slots,
                      uint32_t id) -> std::unique_ptr<PumpJob> {
                    return CopySendJob::Create(&s_, queue, pool, slots, id, data_fd, phase,
                                               max_bytes, stop, cancel, stream_fd);
                  });
  if (!job.ok()) {
    // The buffers that held the unacknowledged frames are gone with the pool.
    s_.replay.Clear();
    s_.replay_held.store(0, std::memory_order_relaxed);
    return job.status();
  }
  return static_cast<const CopySendJob&>(**job).Result();
}

absl::StatusOr<PumpResult> StreamSender::PumpStreamFd(int data_fd, Phase phase,
                                                      absl::Duration idle_return,
                                                      std::atomic<uint64_t>* phase_bytes,
                                                      const std::atomic<bool>& stop,
                                                      const std::atomic<bool>& cancel) {
  if (PlannedDataPath(data_fd) == DataPath::kSplice) {
    // Pump splices it, or says why it cannot (--data_path=splice on an fd that cannot).
    return absl::UnimplementedError("the splice path pumps a stream fd piece by piece");
  }
  return Copy(data_fd, phase, UINT64_MAX, stop, cancel,
              CopySendJob::StreamFd{idle_return, phase_bytes});
}

absl::Status StreamSender::EndPhase(Phase phase) {
  // Recorded before it goes: if its connection is lost, a resume says it again.
  if (phase == Phase::kPreCopy) s_.precopy_end_at = s_.end();
  return SendControl(s_.out.EndPhase(phase, s_.end()));
}

absl::Status StreamSender::MarkInitialDataSent() {
  s_.initial_sent_at = s_.end();
  RETURN_IF_ERROR(s_.PeerVerdict());
  return SendControl(s_.out.InitialDataSent(s_.initial_sent_at));
}

absl::StatusOr<PumpResult> StreamSender::FlushReplay(const std::atomic<bool>& cancel) {
  if (s_.replay_from == SendStream::kNoReplay) return PumpResult{0, PumpResult::End::kBudget};
  static const std::atomic<bool> kNever{false};
  // No budget: the job reads nothing, sends the held frames and ends.
  return Copy(-1, Phase::kStopCopy, 0, kNever, cancel, std::nullopt);
}

absl::Status StreamSender::Keepalive() {
  RETURN_IF_ERROR(s_.PeerVerdict());
  return SendControl(s_.out.Keepalive());
}

absl::Status StreamSender::EndStream() {
  return SendControl(s_.out.EndStream(s_.offset, s_.digest_valid && s_.mac != nullptr
                                                     ? s_.mac->Finish()
                                                     : std::nullopt));
}

absl::Status StreamSender::AwaitCommit(absl::Duration timeout, const std::atomic<bool>& cancel) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::StatusOr<peer::ControlFrame> read =
        peer::ReadControlFrame(s_.control_fd(), deadline, &cancel);
    if (!read.ok()) {
      // Reset or cut before the verdict came (not a close in order, nor the wait's own end):
      // the connection. The destination resumes it only if its receive had not ended.
      const absl::Status& s = read.status();
      return absl::IsUnavailable(s) && !net::IsPeerClosed(s) ? ConnectionLostError(s) : s;
    }
    const peer::ControlFrame& f = *read;
    // The destination's last ACKs may come before its verdict.
    if (f.header.type == static_cast<uint8_t>(wire::FrameType::kAck)) {
      RETURN_IF_ERROR(s_.OnAck(f.header, f.payload));
      continue;
    }
    absl::Status verdict = peer::VerdictOf(f, "destination", s_.peer_seq, s_.out.control_key());
    // COMMIT(0): every byte is in the device, none will be sent again.
    if (verdict.ok()) {
      s_.acked.store(s_.offset, std::memory_order_relaxed);
      s_.replay.Clear();
      s_.replay_held.store(0, std::memory_order_relaxed);
    }
    return verdict;
  }
}

absl::Status StreamSender::Confirm() { return SendControl(s_.out.Confirm()); }

void StreamSender::SendError(absl::Status why, absl::Duration wait) {
  (void)net::SendAll(s_.control_fd(), s_.out.Error(why), absl::Now() + wait);
}

}  // namespace migmover::stream
