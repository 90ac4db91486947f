#include "transport/tcp/tcp_transport.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"
#include "transport/peer/handshake.h"
#include "transport/peer/peer_connect.h"
#include "transport/peer/heartbeat_connection.h"
#include "transport/peer/stream_auth.h"
#include "transport/stream/pump_pool.h"
#include "transport/stream/stream_receiver.h"
#include "transport/stream/stream_sender.h"
#include "transport/tcp/resume_slot.h"
#include "transport/tcp/resuming_receiver.h"
#include "transport/tcp/resuming_sender.h"

namespace migmover::transport {
namespace {

// The buffer budget, decided here once. A source device's stream's own buffers: a frame in
// flight per connection while the next ones are read.
uint32_t SourceBuffersPerDevice(const SessionSpec& spec) {
  // Frames in flight, and those the replay buffer keeps until acknowledged.
  return std::min<uint32_t>(
             64, std::max<uint32_t>(spec.stream.buffers, std::max<uint32_t>(1, spec.streams) + 2)) +
         stream::ReplayFrames(spec.stream);
}

// A destination device's buffers: a striped receive wants two per connection; with fewer each
// connection still gets one.
uint32_t DestinationBuffersPerDevice(const SessionSpec& spec) {
  return std::min<uint32_t>(64, std::max<uint32_t>(spec.stream.buffers, 4));
}

// The host's pump workers a session's devices run on, device d on workers[d % size]; none: each
// device's stream runs on its own thread's queue.
using Workers = std::vector<stream::PumpPool::Lease>;

Workers LeaseWorkers(stream::PumpPool* pumps, uint32_t workers, uint32_t devices) {
  if (pumps == nullptr || workers == 0) return {};
  return pumps->Acquire(std::min(workers, devices));
}

// One set of connections for a device's stream: every stripe connected (TLS done) to the peer.
struct Stripes {
  std::vector<UniqueFd> socks;
  std::vector<std::string> security;
  // What Explain needs of each connection (its failure note, kernel TLS or not); the fds move
  // on to the sender.
  std::vector<peer::PeerConnection> tls_failures;
  std::vector<peer::ChannelBinding> bindings;
  bool all_tls = true;
};

absl::StatusOr<Stripes> ConnectStripes(const SessionSpec& spec, absl::Time deadline) {
  Stripes s;
  for (uint32_t k = 0; k < std::max<uint32_t>(1, spec.streams); ++k) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("connecting stripe ", k + 1, " of ",
                                                      spec.streams, " to the peer: out of time"));
    }
    ASSIGN_OR_RETURN(peer::PeerConnection conn,
                     peer::ConnectPeer(spec.peer, left, spec.tls.get(),
                                       {spec.stream.socket_buffer, spec.stream.tcp_congestion,
                                        spec.stream.peer_timeout}));
    s.socks.push_back(std::move(conn.fd));
    s.security.push_back(std::move(conn.security));
    s.bindings.push_back(conn.binding);
    s.all_tls = s.all_tls && conn.tls;
    peer::PeerConnection note{UniqueFd(), "", std::move(conn.tls_failure)};
    note.kernel_tls = conn.kernel_tls;
    s.tls_failures.push_back(std::move(note));
  }
  return s;
}

class TcpSourceChannel final : public SourceChannel {
 public:
  TcpSourceChannel(const SessionSpec& spec, Workers workers)
      : spec_(std::make_shared<const SessionSpec>(spec)), workers_(std::move(workers)) {}

  absl::StatusOr<std::unique_ptr<DeviceStreamSender>> Open(uint32_t device,
                                                           absl::Duration timeout) override {
    const SessionSpec& spec = *spec_;
    ASSIGN_OR_RETURN(Stripes stripes, ConnectStripes(spec, absl::Now() + timeout));
    std::vector<peer::PeerConnection> tls_failures = std::move(stripes.tls_failures);
    const bool all_tls = stripes.all_tls;
    ASSIGN_OR_RETURN(std::unique_ptr<stream::StreamSender> sender,
                     stream::StreamSender::Create(nullptr, std::move(stripes.socks), device,
                                                  spec.stream));
    sender->set_security(peer::DescribeStripes(stripes.security));
    sender->set_channel_bindings(std::move(stripes.bindings));
    ASSIGN_OR_RETURN(peer::HelloNonce nonce, peer::NewHelloNonce());
    stream::StreamProtection protection;
    ASSIGN_OR_RETURN(protection.keys,
                     peer::DeriveStreamKeys(spec.token, nonce, spec.session_id, device));
    protection.aead = all_tls;
    RETURN_IF_ERROR(sender->Protect(protection));
    if (!workers_.empty()) {
      sender->set_worker(workers_[device % workers_.size()].worker(),
                         SourceBuffersPerDevice(spec));
    }
    peer::Hello hello;
    hello.session_id = spec.session_id;
    hello.device = device;
    hello.device_count = spec.device_count;
    hello.token = spec.token;
    hello.nonce = nonce;
    if (absl::Status s = sender->Handshake(hello, timeout); !s.ok()) {
      // The first connection that knows more says it (once, not once per stripe).
      for (const peer::PeerConnection& c : tls_failures) {
        absl::Status explained = c.Explain(s);
        if (explained != s) return explained;
      }
      return s;
    }
    if (spec.stream.reconnect_window <= absl::ZeroDuration() || !sender->replays()) {
      return std::unique_ptr<DeviceStreamSender>(std::move(sender));
    }
    // The resumes connect as the first connections did (the spec outlives this channel).
    ResumingSender::Connect connect =
        [spec = spec_](absl::Time deadline) -> absl::StatusOr<ResumingSender::Connections> {
      ASSIGN_OR_RETURN(Stripes s, ConnectStripes(*spec, deadline));
      ResumingSender::Connections c;
      c.fds = std::move(s.socks);
      c.bindings = std::move(s.bindings);
      c.security = peer::DescribeStripes(s.security);
      return c;
    };
    return std::unique_ptr<DeviceStreamSender>(new ResumingSender(
        std::move(sender), hello, std::move(connect), spec.stream.reconnect_window));
  }

  absl::StatusOr<std::unique_ptr<HeartbeatLink>> OpenHeartbeat(absl::Duration timeout) override {
    return peer::OpenHeartbeat(*spec_, timeout);
  }

  std::string Describe() const override {
    return absl::StrCat(spec_->peer.host, ":", spec_->peer.port, " over ",
                        std::max<uint32_t>(1, spec_->streams), " TCP connection(s) per device, ",
                        spec_->tls ? "TLS" : "PLAINTEXT (--plaintext_peers)");
  }

 private:
  const std::shared_ptr<const SessionSpec> spec_;
  const Workers workers_;  // Immutable after construction: read by every device thread.
};

class TcpDestinationChannel final : public DestinationChannel {
 public:
  TcpDestinationChannel(const SessionSpec& spec, Workers workers)
      : spec_(spec),
        workers_(std::move(workers)),
        pending_(spec.device_count),
        resume_slots_(spec.device_count) {}

  absl::Status AcceptResume(const peer::Hello& hello, UniqueFd connection,
                            const std::string& security, bool tls,
                            absl::Time deadline) override {
    std::shared_ptr<ResumeSlot> slot;
    {
      absl::MutexLock l(&mu_);
      if (hello.device < resume_slots_.size()) slot = resume_slots_[hello.device];
    }
    absl::Status offered =
        slot == nullptr
            ? absl::FailedPreconditionError(absl::StrCat(
                  "device ", hello.device, ": no stream of it to resume on this daemon",
                  spec_.stream.reconnect_window > absl::ZeroDuration()
                      ? ""
                      : " (its session's reconnect window is 0)"))
            : slot->Offer(hello, &connection, tls, security);
    if (!offered.ok()) (void)peer::SendHelloAck(connection.get(), offered, hello.device, deadline);
    return offered;
  }

  absl::StatusOr<std::unique_ptr<DeviceStreamReceiver>> Accept(const peer::Hello& hello,
                                                               UniqueFd connection,
                                                               const std::string& security,
                                                               bool tls,
                                                               absl::Time deadline) override {
    const uint32_t d = hello.device;  // The session checked it against its device count.
    absl::Status verdict;
    {
      absl::MutexLock l(&mu_);
      Group& g = pending_[d];
      if (dropped_) {
        verdict = absl::FailedPreconditionError(
            absl::StrCat("session '", spec_.session_id, "' is over"));
      } else if (g.slots.empty()) {
        g.slots.resize(hello.stream_count);
        g.security.resize(hello.stream_count);
        g.answering.assign(hello.stream_count, false);
        g.nonce = hello.nonce;
      }
      if (!verdict.ok()) {
      } else if (g.slots.size() != hello.stream_count) {
        verdict = absl::InvalidArgumentError(
            absl::StrCat("device ", d, ": stream ", hello.stream, " says ", hello.stream_count,
                         " streams, an earlier one said ", g.slots.size()));
      } else if (hello.nonce != g.nonce) {
        // The nonce salts the stream's digest key: one stream, one nonce.
        verdict = absl::InvalidArgumentError(
            absl::StrCat("device ", d, ": stream ", hello.stream,
                         " carries another nonce than the device's first stream"));
      } else if (g.slots[hello.stream].valid() || g.answering[hello.stream]) {
        verdict = absl::AlreadyExistsError(
            absl::StrCat("device ", d, " stream ", hello.stream, " is already connected"));
      } else {
        g.answering[hello.stream] = true;  // Ours while the answer goes out, without the lock.
      }
    }
    absl::Status acked = peer::SendHelloAck(connection.get(), verdict, d, deadline);
    if (!verdict.ok()) return verdict;
    absl::MutexLock l(&mu_);
    Group& g = pending_[d];
    if (g.answering.size() <= hello.stream || !g.answering[hello.stream]) {
      // Dropped (cancel) while we answered.
      return absl::FailedPreconditionError(absl::StrCat("session '", spec_.session_id, "' is over"));
    }
    g.answering[hello.stream] = false;
    if (!acked.ok()) return acked;  // This stream may connect again.
    g.slots[hello.stream] = std::move(connection);
    g.security[hello.stream] = security;
    g.all_tls = g.all_tls && tls;
    if (!std::all_of(g.slots.begin(), g.slots.end(),
                     [](const UniqueFd& fd) { return fd.valid(); })) {
      return nullptr;  // More connections of this device to come.
    }
    std::vector<UniqueFd> socks;
    socks.swap(g.slots);
    std::vector<std::string> security_of;
    security_of.swap(g.security);
    const peer::HelloNonce nonce = g.nonce;
    const bool all_tls = g.all_tls;
    g.answering.clear();
    g.all_tls = true;
    ASSIGN_OR_RETURN(std::unique_ptr<stream::StreamReceiver> receiver,
                     stream::StreamReceiver::Create(nullptr, std::move(socks), d, spec_.stream));
    receiver->set_security(peer::DescribeStripes(security_of));
    stream::StreamProtection protection;
    ASSIGN_OR_RETURN(protection.keys,
                     peer::DeriveStreamKeys(spec_.token, nonce, spec_.session_id, d));
    // What each connection really ran, not what this daemon was configured with.
    protection.aead = all_tls;
    RETURN_IF_ERROR(receiver->Protect(protection));
    if (!workers_.empty()) {
      receiver->set_worker(workers_[d % workers_.size()].worker(),
                           DestinationBuffersPerDevice(spec_));
    }
    if (spec_.stream.reconnect_window <= absl::ZeroDuration()) {
      return std::unique_ptr<DeviceStreamReceiver>(std::move(receiver));
    }
    auto slot = std::make_shared<ResumeSlot>(d, nonce, hello.stream_count, all_tls);
    // Under mu_, held since the answer went out. Only the device's first stream set has one: a
    // second set that raced it (its receiver is dropped) must not take the running one's place.
    if (resume_slots_[d] == nullptr) resume_slots_[d] = slot;
    return std::unique_ptr<DeviceStreamReceiver>(new ResumingReceiver(
        std::move(receiver), std::move(slot), spec_.stream.reconnect_window));
  }

  void DropPending() override {
    std::vector<Group> gone;
    {
      absl::MutexLock l(&mu_);
      dropped_ = true;
      gone.swap(pending_);
      pending_.resize(gone.size());
    }
    // The connections close here, outside the lock.
  }

 private:
  struct Group {
    std::vector<UniqueFd> slots;  // By stream index, once connected.
    std::vector<std::string> security;  // By stream index: what protects it.
    peer::HelloNonce nonce{};           // The first stream's; every stream's must match.
    bool all_tls = true;                // Every stream connected so far ran TLS.
    std::vector<bool> answering;  // By stream index: HELLO_ACK on its way.
  };
  const SessionSpec spec_;
  const Workers workers_;
  absl::Mutex mu_;
  std::vector<Group> pending_ ABSL_GUARDED_BY(mu_);
  // By device: where its stream's resumes go, once its first connections all came.
  std::vector<std::shared_ptr<ResumeSlot>> resume_slots_ ABSL_GUARDED_BY(mu_);
  bool dropped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SourceChannel>> TcpTransport::StartSource(const SessionSpec& spec) {
  if (spec.streams == 0 || spec.streams > wire::kMaxStreamsPerDevice) {
    return absl::InvalidArgumentError(
        absl::StrCat("streams ", spec.streams, " outside 1..", wire::kMaxStreamsPerDevice));
  }
  return std::unique_ptr<SourceChannel>(
      new TcpSourceChannel(spec, LeaseWorkers(pumps_, spec.workers, spec.device_count)));
}

absl::StatusOr<std::unique_ptr<DestinationChannel>> TcpTransport::StartDestination(
    const SessionSpec& spec) {
  return std::unique_ptr<DestinationChannel>(
      new TcpDestinationChannel(spec, LeaseWorkers(pumps_, spec.workers, spec.device_count)));
}

}  // namespace migmover::transport
