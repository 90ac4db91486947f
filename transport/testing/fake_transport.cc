#include "transport/testing/fake_transport.h"

#include <array>
#include <cstring>

#include <sys/socket.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/peer/handshake.h"
#include "transport/peer/heartbeat_connection.h"

namespace migmover::transport {
namespace {

// The HELLO as the destination reads it off a real connection: the secret replaced by the
// proof EncodeHello computes from it.
peer::Hello OnTheWire(const peer::Hello& sent) {
  const std::string frame = peer::EncodeHello(0, sent);
  std::array<uint8_t, wire::kFrameHeaderSize> raw;
  std::memcpy(raw.data(), frame.data(), raw.size());
  absl::StatusOr<wire::FrameHeader> h = peer::DecodeHeader(raw);
  absl::StatusOr<peer::Hello> got =
      h.ok() ? peer::ParseHello(*h, absl::string_view(frame).substr(raw.size())) : h.status();
  // The fake's own HELLOs are well formed; a malformed one would be a bug in the test.
  return got.ok() ? *got : sent;
}

}  // namespace

class FakeSourceChannel final : public SourceChannel {
 public:
  FakeSourceChannel(FakeTransport* transport, const SessionSpec& spec)
      : transport_(transport), spec_(spec) {}

  absl::StatusOr<std::unique_ptr<DeviceStreamSender>> Open(uint32_t device,
                                                           absl::Duration timeout) override {
    return transport_->Open(spec_, device, timeout);
  }
  absl::StatusOr<std::unique_ptr<HeartbeatLink>> OpenHeartbeat(absl::Duration timeout) override {
    return transport_->OpenHeartbeat(spec_, timeout);
  }
  std::string Describe() const override { return "the fake transport (in memory)"; }

 private:
  FakeTransport* const transport_;
  const SessionSpec spec_;
};

class FakeDestinationChannel final : public DestinationChannel {
 public:
  FakeDestinationChannel(FakeTransport* transport, const SessionSpec& spec)
      : transport_(transport), spec_(spec) {}

  absl::StatusOr<std::unique_ptr<DeviceStreamReceiver>> Accept(const peer::Hello& hello,
                                                               UniqueFd connection,
                                                               const std::string&, bool,
                                                               absl::Time) override {
    {
      absl::MutexLock l(&mu_);
      if (dropped_) {
        return absl::FailedPreconditionError(
            absl::StrCat("session '", spec_.session_id, "' is over"));
      }
    }
    return transport_->Accept(spec_, hello, std::move(connection));
  }

  // No stream is ever partly connected (one connection each), so there is nothing to close;
  // later HELLOs are refused, as a real channel's are.
  void DropPending() override {
    absl::MutexLock l(&mu_);
    dropped_ = true;
  }

 private:
  FakeTransport* const transport_;
  const SessionSpec spec_;
  absl::Mutex mu_;
  bool dropped_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<SourceChannel>> FakeTransport::StartSource(const SessionSpec& spec) {
  if (spec.streams != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("streams ", spec.streams, ": the fake transport does not stripe"));
  }
  return std::unique_ptr<SourceChannel>(new FakeSourceChannel(this, spec));
}

absl::StatusOr<std::unique_ptr<DestinationChannel>> FakeTransport::StartDestination(
    const SessionSpec& spec) {
  if (!start_destination_error.ok()) return start_destination_error;
  return std::unique_ptr<DestinationChannel>(new FakeDestinationChannel(this, spec));
}

FakeStreamOptions FakeTransport::OptionsFor(const SessionSpec& spec,
                                            const std::map<uint32_t, FakeFault>& faults,
                                            uint32_t device) const {
  FakeStreamOptions o;
  o.idle_timeout = spec.stream.idle_timeout;
  if (auto it = faults.find(device); it != faults.end()) o.fault = it->second;
  o.withhold_verdict = withhold_verdicts;
  o.withhold_confirm = withhold_confirms;
  o.confirm_gate = confirm_gate_;
  o.confirm_waiters = const_cast<WaitableCount*>(&confirm_waiters_);
  o.unchecked = unchecked_devices.count(device) > 0;
  return o;
}

absl::StatusOr<std::unique_ptr<DeviceStreamSender>> FakeTransport::Open(const SessionSpec& spec,
                                                                        uint32_t device,
                                                                        absl::Duration timeout) {
  ++opens_;
  if (auto it = open_errors.find(device); it != open_errors.end()) return it->second;
  if (!deliver) return absl::FailedPreconditionError("fake transport: nothing to deliver to");
  {
    absl::MutexLock l(&mu_);
    auto released = [this, device]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !held_opens_[device];
    };
    mu_.Await(absl::Condition(&released));
  }
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return ErrnoStatus("socketpair(AF_UNIX, SOCK_STREAM)", errno);
  }
  UniqueFd source_end(fds[0]), destination_end(fds[1]);
  auto wire = std::make_shared<FakeWire>(device, max_queued_bytes);
  wire->source_end = std::move(source_end);
  wire->commit_waiters = &commit_waiters_;
  const Key key{spec.session_id, device};
  {
    absl::MutexLock l(&mu_);
    {
      absl::MutexLock w(&wire->mu);
      wire->held = held_[device];
    }
    waiting_[key] = wire;
    all_[key] = wire;
  }
  peer::Hello hello;
  hello.session_id = spec.session_id;
  hello.device = device;
  hello.device_count = spec.device_count;
  hello.token = spec.token;
  // No lock held: the destination calls back into Accept from here.
  absl::Status answer =
      deliver(OnTheWire(hello), std::move(destination_end), absl::Now() + timeout);
  {
    absl::MutexLock l(&mu_);
    if (auto it = waiting_.find(key); it != waiting_.end() && it->second == wire) {
      waiting_.erase(it);
    }
  }
  if (!answer.ok()) {
    return absl::Status(answer.code(),
                        absl::StrCat("destination refused the stream: ", answer.message()));
  }
  return std::unique_ptr<DeviceStreamSender>(
      new FakeSender(std::move(wire), OptionsFor(spec, pump_faults, device)));
}

namespace {

// The source's end of a real heartbeat connection, dropping beats on the fake's knobs.
class FakeHeartbeat final : public HeartbeatLink {
 public:
  FakeHeartbeat(std::unique_ptr<peer::HeartbeatConnection> c, const FakeTransport* t)
      : c_(std::move(c)), t_(t) {}
  absl::Status Beat(absl::Time deadline, const std::atomic<bool>& stop) override {
    if (t_->drop_pings.load()) return absl::OkStatus();
    return c_->Beat(deadline, stop);
  }
  absl::Status AwaitBeat(absl::Time deadline, const std::atomic<bool>& stop) override {
    while (true) {
      absl::Status s = c_->AwaitBeat(deadline, stop);
      if (!s.ok() || !t_->drop_pongs.load()) return s;
    }
  }
  absl::Status SendLoaded(uint32_t device, absl::Time deadline,
                          const std::atomic<bool>& stop) override {
    return c_->SendLoaded(device, deadline, stop);
  }
  std::vector<uint32_t> TakeLoaded() override { return c_->TakeLoaded(); }

 private:
  std::unique_ptr<peer::HeartbeatConnection> c_;
  const FakeTransport* t_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HeartbeatLink>> FakeTransport::OpenHeartbeat(
    const SessionSpec& spec, absl::Duration timeout) {
  if (!heartbeat_open_error.ok()) return heartbeat_open_error;
  if (!deliver) return absl::FailedPreconditionError("fake transport: nothing to deliver to");
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return ErrnoStatus("socketpair(AF_UNIX, SOCK_STREAM)", errno);
  }
  UniqueFd source_end(fds[0]), destination_end(fds[1]);
  peer::Hello hello;
  hello.session_id = spec.session_id;
  hello.device_count = spec.device_count;
  hello.token = spec.token;
  hello.heartbeat = true;
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status answer = deliver(OnTheWire(hello), std::move(destination_end), deadline);
  if (!answer.ok()) {
    return absl::Status(answer.code(),
                        absl::StrCat("destination refused the heartbeat: ", answer.message()));
  }
  RETURN_IF_ERROR(peer::AwaitHelloAck(source_end.get(), deadline));
  return std::unique_ptr<HeartbeatLink>(new FakeHeartbeat(
      std::make_unique<peer::HeartbeatConnection>(std::move(source_end),
                                                  peer::HeartbeatConnection::End::kSource),
      this));
}

absl::StatusOr<std::unique_ptr<DeviceStreamReceiver>> FakeTransport::Accept(
    const SessionSpec& spec, const peer::Hello& hello, UniqueFd connection) {
  std::shared_ptr<FakeWire> wire;
  {
    absl::MutexLock l(&mu_);
    auto it = waiting_.find(Key{hello.session_id, hello.device});
    if (it == waiting_.end()) {
      return absl::FailedPreconditionError(absl::StrCat("fake transport: no stream of session '",
                                                        hello.session_id, "' device ", hello.device,
                                                        " is being opened"));
    }
    wire = std::move(it->second);
    waiting_.erase(it);
  }
  {
    absl::MutexLock w(&wire->mu);
    wire->destination_end = std::move(connection);
  }
  return std::unique_ptr<DeviceStreamReceiver>(
      new FakeReceiver(std::move(wire), OptionsFor(spec, receive_faults, hello.device)));
}

void FakeTransport::HoldReceive(uint32_t device) {
  absl::MutexLock l(&mu_);
  held_[device] = true;
  for (auto& [key, wire] : all_) {
    if (key.second != device) continue;
    absl::MutexLock w(&wire->mu);
    wire->held = true;
  }
}

void FakeTransport::ResumeReceive(uint32_t device) {
  absl::MutexLock l(&mu_);
  held_[device] = false;
  for (auto& [key, wire] : all_) {
    if (key.second != device) continue;
    absl::MutexLock w(&wire->mu);
    wire->held = false;
  }
}

void FakeTransport::HoldOpen(uint32_t device) {
  absl::MutexLock l(&mu_);
  held_opens_[device] = true;
}

void FakeTransport::ReleaseOpen(uint32_t device) {
  absl::MutexLock l(&mu_);
  held_opens_[device] = false;
}

bool FakeTransport::WaitForCommitWaiters(int n, absl::Duration timeout) {
  return commit_waiters_.AwaitAtLeast(n, timeout);
}

}  // namespace migmover::transport
