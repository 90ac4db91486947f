#include "transport/dpdk/link_stream.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/peer/handshake.h"
#include "transport/stream/stream_errors.h"
#include "transport/stream/stream_rules.h"

namespace migmover::dpdk {
namespace {

using wire::FrameHeader;
using wire::FrameType;
using wire::Phase;

// Pieces of link room per readv: a whole 1 MiB chunk in 8 KiB frames, plus the frame being
// filled.
constexpr size_t kMaxPieces = 160;
// The destination's verdict (COMMIT or ERROR) is its first and only frame on the link.
constexpr uint64_t kVerdictSeq = 0;
// Link polls without progress before a wait on the data fd gives the core away.
constexpr int kSpinsBeforeWait = 64;

// How long an idle receive loop sleeps between link polls: nothing while data flows, then
// longer the longer nothing comes (up to 1 ms, so a PRE_COPY wait costs little CPU).
int IdleSleepUs(int spins) {
  return spins < kSpinsBeforeWait ? 0 : std::min(1000, 50 * (spins / kSpinsBeforeWait));
}

bool NonBlocking(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_NONBLOCK);
}

// Waits up to 1 ms for `fd` to be ready: keeps a stalled device from burning a shared core while
// the link is still polled a thousand times a second.
void WaitFd(int fd, short events) {
  pollfd p{fd, events, 0};
  ::poll(&p, 1, 1);
}

// Copies `n` bytes of `src` into the start of the pieces `iov`.
void Scatter(const iovec* iov, const uint8_t* src, size_t n) {
  for (size_t i = 0; n > 0; ++i) {
    const size_t k = std::min(n, iov[i].iov_len);
    std::memcpy(iov[i].iov_base, src, k);
    src += k;
    n -= k;
  }
}

// The pieces of `iov` after the first `skip` bytes, into `out`; returns their count.
size_t Skip(const iovec* iov, size_t pieces, size_t skip, iovec* out) {
  size_t k = 0;
  for (size_t i = 0; i < pieces; ++i) {
    if (skip >= iov[i].iov_len) {
      skip -= iov[i].iov_len;
      continue;
    }
    out[k++] = {static_cast<uint8_t*>(iov[i].iov_base) + skip, iov[i].iov_len - skip};
    skip = 0;
  }
  return k;
}

// Reads one whole frame's header (and, for control frames, its payload) off the link once
// enough bytes are there. DATA payloads stay on the link for the caller to take in place.
class FrameReader {
 public:
  // True once a frame is complete: `frame()` holds its header (and a control frame's payload).
  absl::StatusOr<bool> Next(ReliableLink* link) {
    if (!have_header_) {
      if (link->readable() < wire::kFrameHeaderSize) return false;
      std::array<uint8_t, wire::kFrameHeaderSize> raw;
      link->Read(raw);
      ASSIGN_OR_RETURN(frame_.header, peer::DecodeHeader(raw));
      have_header_ = true;
      frame_.payload.clear();
    }
    const FrameHeader& h = frame_.header;
    if (h.type == static_cast<uint8_t>(FrameType::kData)) return true;
    if (link->readable() < h.length) return false;
    frame_.payload.resize(h.length);
    link->Read({reinterpret_cast<uint8_t*>(frame_.payload.data()), frame_.payload.size()});
    return true;
  }
  void Done() { have_header_ = false; }
  const peer::ControlFrame& frame() const { return frame_; }

 private:
  bool have_header_ = false;
  peer::ControlFrame frame_{};
};

// Hands as much of `frame` after its first `*done` bytes to the link as it takes.
void WriteRest(ReliableLink* link, const std::string& frame, size_t* done) {
  *done +=
      link->Write({reinterpret_cast<const uint8_t*>(frame.data()) + *done, frame.size() - *done});
}

// Whether the connection `fd` was closed by the other end (it never sends after HELLO).
bool ConnectionClosed(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) return true;
  char c;
  return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

// The error for a stream that stopped moving, with what its link saw: an SRE can tell a dead
// peer (nothing received) from a lossy one (retransmissions) from a slow device.
absl::Status Idle(uint32_t device, absl::Duration timeout, absl::string_view waiting_on,
                  const ReliableLink& link) {
  const LinkStats& s = link.stats();
  return stream::NoProgressError(
      device, timeout,
      absl::StrCat(waiting_on, " over the DPDK link: ", s.frames_sent, " frames sent, ",
                   s.frames_retransmitted, " retransmitted, ", s.frames_received, " received, ",
                   s.frames_dropped, " refused, ", s.frames_corrupt, " corrupt, ", s.acks_sent, "/",
                   s.acks_received, " acks sent/received; ", link.DebugState()));
}

}  // namespace

// Watches the connection the peer said HELLO on. Gone() turns true once it has been closed for
// a moment: a peer that gave up sends its verdict on the link before it closes, and that verdict
// should win.
class PeerWatch {
 public:
  explicit PeerWatch(int fd) : fd_(fd) {}
  bool Gone(absl::Time now) {
    if (fd_ < 0) return false;
    if (closed_at_ == absl::InfiniteFuture() && now >= next_check_) {
      next_check_ = now + absl::Milliseconds(10);
      if (ConnectionClosed(fd_)) closed_at_ = now;
    }
    return now - closed_at_ > absl::Milliseconds(200);
  }

 private:
  const int fd_;
  absl::Time next_check_ = absl::InfinitePast();
  absl::Time closed_at_ = absl::InfiniteFuture();
};

LinkOptions SessionLinkOptions(uint64_t link_id, absl::Duration idle_timeout,
                               uint16_t frame_capacity) {
  LinkOptions o;
  o.link_id = link_id;
  // 2-8 MiB in flight per stream covers far more than a NIC's bandwidth-delay product, and keeps
  // sixteen streams' frames (window plus queue, at each end) within one port's buffer pool.
  o.window = kSessionLinkWindow;
  o.ack_every = kSessionLinkWindow / 16;
  // Room for the tag: session links are sealed.
  o.mss = static_cast<uint16_t>(frame_capacity - wire::kEthernetHeaderSize -
                                wire::kLinkHeaderSize - wire::kLinkTagSize);
  o.dead_after = std::max(o.dead_after, idle_timeout);
  return o;
}

LinkStreamSender::LinkStreamSender(ReliableLink* link, uint32_t device,
                                   const LinkStreamOptions& options)
    : link_(link), device_(device), options_(options), out_(device, 1) {}

absl::StatusOr<std::unique_ptr<LinkStreamSender>> LinkStreamSender::Create(
    std::unique_ptr<FrameIo> io, const LinkOptions& link_options, uint32_t device,
    const LinkStreamOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<ReliableLink> link,
                   ReliableLink::Create(io.get(), link_options));
  auto s = std::make_unique<LinkStreamSender>(link.get(), device, options);
  s->io_ = std::move(io);
  s->owned_link_ = std::move(link);
  return s;
}

absl::Status LinkStreamSender::DestinationGone() const {
  return absl::UnavailableError(absl::StrCat(
      "device stream ", device_, ": the destination closed its connection after ", offset_,
      " bytes, without a verdict (its daemon stopped or the session ended there)"));
}

absl::Status LinkStreamSender::PollAndCheckPeer() {
  RETURN_IF_ERROR(link_->Poll());
  if (link_->readable() == 0) {
    return watch_ && watch_->Gone(absl::Now()) ? DestinationGone() : absl::OkStatus();
  }
  // The destination only speaks mid-stream to give up.
  FrameReader reader;
  const absl::Time deadline = absl::Now() + absl::Seconds(1);
  while (true) {
    ASSIGN_OR_RETURN(bool complete, reader.Next(link_));
    if (complete) break;
    if (absl::Now() > deadline) return absl::DataLossError("destination sent a partial frame");
    RETURN_IF_ERROR(link_->Poll());
  }
  absl::Status v = peer::VerdictOf(reader.frame(), "destination", kVerdictSeq, out_.control_key());
  return v.ok() ? absl::DataLossError("destination committed before END_STREAM") : v;
}

absl::StatusOr<transport::PumpResult> LinkStreamSender::Pump(int data_fd, Phase phase,
                                                          uint64_t max_bytes,
                                                          const std::atomic<bool>& stop,
                                                          const std::atomic<bool>& cancel) {
  transport::PumpResult result;
  const bool nonblocking = NonBlocking(data_fd);
  const bool precopy = phase == Phase::kPreCopy;
  iovec room[kMaxPieces], data[kMaxPieces];
  absl::Time progress = absl::Now();
  absl::Time not_before = absl::InfinitePast();  // The bandwidth cap's next read.
  int spins = 0;
  while (true) {
    if (cancel.load()) return absl::CancelledError("stream cancelled");
    if (not_before > absl::Now()) {
      // Over the cap: keep the link (acks, the peer's verdict) going while the time passes.
      RETURN_IF_ERROR(PollAndCheckPeer());
      // Clamped at 0: the time may pass between the two clock reads, and a negative wait cast to
      // useconds_t slept for 71 minutes (seen: a source that never noticed its peer die).
      ::usleep(static_cast<useconds_t>(std::clamp<int64_t>(
          absl::ToInt64Microseconds(not_before - absl::Now()), 0, 200)));
      progress = absl::Now();
      continue;
    }
    if (result.bytes == max_bytes) {
      result.end = transport::PumpResult::End::kBudget;
      return result;
    }
    if (stop.load()) {
      result.end = transport::PumpResult::End::kStopped;
      return result;
    }
    const size_t want =
        wire::kFrameHeaderSize + std::min<uint64_t>(options_.chunk_size, max_bytes - result.bytes);
    const size_t pieces = link_->Reserve(want, room, kMaxPieces);
    size_t got_room = 0;
    for (size_t i = 0; i < pieces; ++i) got_room += room[i].iov_len;
    if (got_room <= wire::kFrameHeaderSize) {
      // Backpressure: the window is full. Let acks in, and after a while let other threads run
      // (streams of other devices share the cores).
      link_->Commit(0);
      RETURN_IF_ERROR(PollAndCheckPeer());
      if (++spins > kSpinsBeforeWait) ::usleep(std::min(20, IdleSleepUs(spins)));
      if (absl::Now() - progress > options_.idle_timeout) {
        return Idle(device_, options_.idle_timeout, "waiting on the peer", *link_);
      }
      continue;
    }
    const size_t n_data = Skip(room, pieces, wire::kFrameHeaderSize, data);
    const ssize_t n = ::readv(data_fd, data, static_cast<int>(n_data));
    if (n > 0) {
      std::array<uint8_t, wire::kFrameHeaderSize> raw;
      peer::EncodeHeader(out_.Data(0, phase, static_cast<uint32_t>(n), offset_), raw);
      Scatter(room, raw.data(), raw.size());
      for (size_t i = 0, left = n; left > 0; ++i) {
        const size_t k = std::min(left, data[i].iov_len);
        if (mac_ != nullptr) mac_->Update(static_cast<const uint8_t*>(data[i].iov_base), k);
        left -= k;
      }
      link_->Commit(wire::kFrameHeaderSize + n);
      if (options_.limiter) {
        not_before = absl::Now() + options_.limiter->Reserve(wire::kFrameHeaderSize + n);
      }
      offset_ += n;
      sent_.store(offset_, std::memory_order_relaxed);
      if (counter_ != nullptr) counter_->fetch_add(n, std::memory_order_relaxed);
      result.bytes += n;
      progress = absl::Now();
      spins = 0;
      RETURN_IF_ERROR(PollAndCheckPeer());
      continue;
    }
    link_->Commit(0);
    const int err = n < 0 ? errno : 0;
    if (n == 0 || (precopy && (err == ENOMSG || err == EAGAIN))) {
      result.end = precopy ? transport::PumpResult::End::kDrained : transport::PumpResult::End::kEof;
      return result;
    }
    if (err != EAGAIN && err != EINTR) {
      return ErrnoStatus(absl::StrCat("readv(data fd ", data_fd, ", ", peer::PhaseName(phase), ", ",
                                      n_data, " pieces)"),
                         err);
    }
    RETURN_IF_ERROR(PollAndCheckPeer());
    if (nonblocking && ++spins > kSpinsBeforeWait) WaitFd(data_fd, POLLIN);
    if (absl::Now() - progress > options_.idle_timeout) {
      return Idle(device_, options_.idle_timeout, "waiting on the data fd", *link_);
    }
  }
}

absl::Status LinkStreamSender::SendControl(const std::string& frame) {
  size_t done = 0;
  const absl::Time deadline = absl::Now() + options_.idle_timeout;
  while (done < frame.size()) {
    WriteRest(link_, frame, &done);
    RETURN_IF_ERROR(PollAndCheckPeer());
    if (absl::Now() > deadline)
      return Idle(device_, options_.idle_timeout, "waiting on the peer", *link_);
  }
  return absl::OkStatus();
}

absl::Status LinkStreamSender::EndPhase(Phase phase) {
  return SendControl(out_.EndPhase(phase, bytes_sent()));
}

absl::Status LinkStreamSender::MarkInitialDataSent() {
  return SendControl(out_.InitialDataSent(bytes_sent()));
}

absl::Status LinkStreamSender::Keepalive() {
  return SendControl(out_.Keepalive());
}

absl::Status LinkStreamSender::EndStream() {
  // Every byte passed through userspace (readv into frames): the digest goes unless the link's
  // AEAD already authenticated every frame.
  return SendControl(out_.EndStream(
      offset_, mac_ != nullptr ? mac_->Finish() : std::nullopt));
}

void LinkStreamSender::WatchPeerConnection(UniqueFd connection) {
  peer_connection_ = std::move(connection);
  watch_ = std::make_unique<PeerWatch>(peer_connection_.get());
}

absl::Status LinkStreamSender::Protect(const peer::StreamKeys& keys) {
  ASSIGN_OR_RETURN(mac_, peer::StreamMac::Create(keys.digest));
  out_.set_control_key(keys.control);
  return absl::OkStatus();
}

absl::Status LinkStreamSender::Protect(const peer::StreamKeys& keys,
                                       const peer::LinkKeys& link_keys) {
  RETURN_IF_ERROR(link_->Seal(link_keys.to_destination, link_keys.to_source));
  // The frames' tags authenticate every byte: a digest over them would check nothing more.
  mac_.reset();
  out_.set_control_key(keys.control);
  return absl::OkStatus();
}

absl::Status LinkStreamReceiver::Protect(const peer::StreamKeys& keys) {
  ASSIGN_OR_RETURN(mac_, peer::StreamMac::Create(keys.digest));
  rules_.set_control_key(keys.control);
  return absl::OkStatus();
}

absl::Status LinkStreamReceiver::Protect(const peer::StreamKeys& keys,
                                         const peer::LinkKeys& link_keys) {
  RETURN_IF_ERROR(link_->Seal(link_keys.to_source, link_keys.to_destination));
  mac_.reset();
  rules_.set_control_key(keys.control);
  return absl::OkStatus();
}

std::string LinkStreamSender::transport_name() const {
  return absl::StrCat("dpdk link ", link_->link_id());
}

std::string LinkStreamReceiver::transport_name() const {
  return absl::StrCat("dpdk link ", link_->link_id());
}

LinkStreamSender::~LinkStreamSender() = default;

void LinkStreamSender::SendError(absl::Status why, absl::Duration wait) {
  const std::string frame = out_.Error(why);
  // Best effort, briefly: the destination may be gone, which is why we give up.
  size_t done = 0;
  const absl::Time deadline = absl::Now() + std::min(wait, absl::Milliseconds(500));
  while ((done < frame.size() || !link_->AllAcknowledged()) && absl::Now() < deadline) {
    WriteRest(link_, frame, &done);
    if (!link_->Poll().ok()) return;
  }
}

absl::Status LinkStreamSender::AwaitCommit(absl::Duration timeout,
                                           const std::atomic<bool>& cancel) {
  FrameReader reader;
  const absl::Time deadline = absl::Now() + timeout;
  int spins = 0;
  while (true) {
    if (cancel.load()) return absl::CancelledError("stream cancelled while awaiting COMMIT");
    RETURN_IF_ERROR(link_->Poll());
    ASSIGN_OR_RETURN(bool complete, reader.Next(link_));
    if (complete) return peer::VerdictOf(reader.frame(), "destination", kVerdictSeq, out_.control_key());
    if (watch_ && watch_->Gone(absl::Now())) return DestinationGone();
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "device stream ", device_, ": no COMMIT within ", absl::FormatDuration(timeout)));
    }
    // The destination is writing the device and committing it: no hurry to spin.
    if (++spins > kSpinsBeforeWait) ::usleep(100);
  }
}

absl::Status LinkStreamSender::Confirm() {
  RETURN_IF_ERROR(SendControl(out_.Confirm()));
  // The link (and with it the retransmission of a lost frame) goes with this sender as soon as
  // the session's device thread returns: stay until the destination has the CONFIRM.
  const absl::Time deadline = absl::Now() + options_.idle_timeout;
  while (!link_->AllAcknowledged()) {
    RETURN_IF_ERROR(link_->Poll());
    if (watch_ && watch_->Gone(absl::Now())) return DestinationGone();
    if (absl::Now() > deadline) {
      return Idle(device_, options_.idle_timeout, "waiting for CONFIRM's acknowledgement",
                  *link_);
    }
    ::usleep(100);
  }
  return absl::OkStatus();
}

absl::Status LinkStreamReceiver::AwaitConfirm(absl::Duration timeout,
                                              const std::atomic<bool>& cancel) {
  FrameReader reader;
  PeerWatch watch(options_.peer_connection_fd);
  absl::Time deadline = absl::Now() + timeout;
  int spins = 0;
  while (true) {
    if (cancel.load()) return absl::CancelledError("stream cancelled while awaiting CONFIRM");
    RETURN_IF_ERROR(link_->Poll());
    ASSIGN_OR_RETURN(bool complete, reader.Next(link_));
    if (complete) {
      ASSIGN_OR_RETURN(bool confirmed,
                       rules_.OnSettle(reader.frame().header, reader.frame().payload));
      if (confirmed) return absl::OkStatus();
      reader.Done();
      deadline = absl::Now() + timeout;  // A KEEPALIVE: the source is alive.
      spins = 0;
      continue;
    }
    if (watch.Gone(absl::Now())) {
      return absl::UnavailableError(absl::StrCat(
          "device stream ", device_, ": the source closed its connection before CONFIRM"));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "device stream ", device_, ": no CONFIRM within ", absl::FormatDuration(timeout)));
    }
    if (++spins > kSpinsBeforeWait) ::usleep(100);
  }
}

LinkStreamReceiver::LinkStreamReceiver(ReliableLink* link, uint32_t device,
                                       const LinkStreamOptions& options)
    : link_(link), device_(device), options_(options) {}

absl::StatusOr<std::unique_ptr<LinkStreamReceiver>> LinkStreamReceiver::Create(
    std::unique_ptr<FrameIo> io, const LinkOptions& link_options, uint32_t device,
    const LinkStreamOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<ReliableLink> link,
                   ReliableLink::Create(io.get(), link_options));
  auto r = std::make_unique<LinkStreamReceiver>(link.get(), device, options);
  r->io_ = std::move(io);
  r->owned_link_ = std::move(link);
  return r;
}

absl::StatusOr<transport::ReceiveResult> LinkStreamReceiver::Receive(int data_fd,
                                                                  const std::atomic<bool>& cancel) {
  transport::ReceiveResult result;
  const bool nonblocking = NonBlocking(data_fd);
  FrameReader reader;
  uint64_t payload_left = 0;  // Of the DATA frame being written.
  iovec pieces[kMaxPieces];
  absl::Time progress = absl::Now();
  PeerWatch watch(options_.peer_connection_fd);
  stream::IncomingStream& rules = rules_;
  int spins = 0;
  while (true) {
    if (cancel.load()) return absl::CancelledError("stream cancelled");
    RETURN_IF_ERROR(link_->Poll());
    const absl::Time now = absl::Now();
    if (now - progress > options_.idle_timeout) {
      return Idle(device_, options_.idle_timeout,
                  payload_left > 0 ? "waiting on the data fd or the peer" : "waiting on the peer",
                  *link_);
    }
    if (watch.Gone(now)) {
      return absl::UnavailableError(absl::StrCat(
          "device stream ", device_, ": the source closed its connection after ", offset_,
          " bytes, before END_STREAM (its daemon stopped or the session ended there)"));
    }
    if (payload_left > 0) {
      const size_t n = link_->Peek(payload_left, pieces, kMaxPieces);
      if (n == 0) {
        if (int us = IdleSleepUs(++spins); us > 0) ::usleep(us);
        continue;
      }
      const ssize_t w = ::writev(data_fd, pieces, static_cast<int>(n));
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) {
          if (nonblocking) WaitFd(data_fd, POLLOUT);
          continue;
        }
        return stream::DeviceSideError(
            ErrnoStatus(absl::StrCat("writev(data fd ", data_fd, ", ", n, " pieces)"), errno));
      }
      for (size_t i = 0, left = w; left > 0; ++i) {
        const size_t k = std::min<size_t>(left, pieces[i].iov_len);
        if (mac_ != nullptr) mac_->Update(static_cast<const uint8_t*>(pieces[i].iov_base), k);
        left -= k;
      }
      link_->Consume(w);
      payload_left -= w;
      offset_ += w;
      received_.store(offset_, std::memory_order_relaxed);
      if (counter_ != nullptr) counter_->fetch_add(w, std::memory_order_relaxed);
      result.total_bytes += w;
      progress = absl::Now();
      spins = 0;
      continue;
    }
    ASSIGN_OR_RETURN(bool complete, reader.Next(link_));
    if (!complete) {
      if (int us = IdleSleepUs(++spins); us > 0) ::usleep(us);
      continue;
    }
    progress = absl::Now();
    spins = 0;
    const FrameHeader& h = reader.frame().header;
    reader.Done();
    ASSIGN_OR_RETURN(stream::IncomingStream::Frame f, rules.OnHeader(0, h, offset_));
    result.precopy_phases_ended = rules.precopy_phases_ended();
    payload_left = f.data_length;
    if (f.type == FrameType::kError) return rules.OnError(h, reader.frame().payload);
    if (f.type == FrameType::kKeepalive) {
      RETURN_IF_ERROR(rules.OnKeepalive(h, reader.frame().payload));
      continue;
    }
    if (f.type == FrameType::kEndStream) {
      RETURN_IF_ERROR(rules.OnEndStream(h, reader.frame().payload, offset_).status());
      // Every byte passed through userspace here: the digest is always checked when sent.
      ASSIGN_OR_RETURN(result.digest_checked,
                       rules.CheckComplete(offset_, mac_ != nullptr ? mac_->Finish() : std::nullopt));
      // Every frame the link took opened with the source's key.
      result.aead = link_->sealed();
      result.aead_name = "sealed DPDK link frames (ChaCha20-Poly1305)";
      return result;
    }
  }
}

absl::Status LinkStreamReceiver::SendCommit(const absl::Status& result, absl::Duration linger) {
  peer::PeerStatus st;
  st.code = static_cast<uint32_t>(result.code());
  st.message = std::string(result.message());
  // The destination's one frame on the link (its HELLO_ACK went on the TCP connection).
  const std::string frame = peer::SealVerdict(
      peer::EncodeStatusFrame(FrameType::kCommit, kVerdictSeq, device_, st), rules_.control_key());
  size_t done = 0;
  const absl::Time deadline = absl::Now() + linger;
  while (done < frame.size() || !link_->AllAcknowledged()) {
    WriteRest(link_, frame, &done);
    RETURN_IF_ERROR(link_->Poll());
    // After a failure the source may still be sending: drop it, so its frames cannot fill our
    // window and hide the verdict.
    if (!result.ok()) {
      iovec pieces[kMaxPieces];
      size_t n = 0;
      for (size_t k = 0, c = link_->Peek(SIZE_MAX, pieces, kMaxPieces); k < c; ++k) {
        n += pieces[k].iov_len;
      }
      link_->Consume(n);
    }
    if (!result.ok() && options_.peer_connection_fd >= 0 &&
        ConnectionClosed(options_.peer_connection_fd)) {
      // The source is gone (or gave up and left): nobody will take the verdict.
      return absl::UnavailableError(
          absl::StrCat("device stream ", device_, ": the source left before taking the verdict"));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("device stream ", device_, ": the source did not take the verdict within ",
                       absl::FormatDuration(linger)));
    }
  }
  return absl::OkStatus();
}

}  // namespace migmover::dpdk
