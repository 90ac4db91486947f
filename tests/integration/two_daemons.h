// TwoDaemons: a test fixture with two real migmoverd processes (source and destination) on
// loopback, and the gRPC calls a hypervisor agent makes, for the integration tests.
#ifndef MIGMOVER_TESTS_INTEGRATION_TWO_DAEMONS_H_
#define MIGMOVER_TESTS_INTEGRATION_TWO_DAEMONS_H_

#include <signal.h>

#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "daemon/testing/daemon_process.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace migmover::testing {

using v1::SessionStatus;

class TwoDaemons : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    src_flags_.push_back("--idle_timeout_ms=10000");
    dst_flags_.push_back("--idle_timeout_ms=10000");
    auto src = DaemonProcess::Start(MigmoverdPath(), "src", src_flags_, src_launch_);
    ASSERT_TRUE(src.ok()) << src.status();
    auto dst = DaemonProcess::Start(MigmoverdPath(), "dst", dst_flags_, dst_launch_);
    ASSERT_TRUE(dst.ok()) << dst.status();
    src_ = std::move(*src);
    dst_ = std::move(*dst);
    if (ForbidIoUringRequested()) {
      // The rerun without io_uring (MIGMOVER_TEST_FORBID_IO_URING=1) must really move its
      // bytes with plain syscalls.
      for (DaemonProcess* d : {src_.get(), dst_.get()}) {
        ASSERT_NE(d->Log().find("io engine: syscalls, because io_uring is refused"),
                  std::string::npos)
            << d->Log();
      }
    }
  }

  void TearDown() override {
    // MIGMOVER_TEST_DAEMON_LOGS=1 (--test_env) prints them for passing tests too.
    const char* always = std::getenv("MIGMOVER_TEST_DAEMON_LOGS");
    if (HasFailure() || (always != nullptr && std::string(always) == "1")) {
      if (src_) std::cerr << "---- source daemon log ----\n" << src_->Log();
      if (dst_) std::cerr << "---- destination daemon log ----\n" << dst_->Log();
    }
  }

  grpc::Status Attach(DaemonProcess& d, const std::string& name, const std::string& spec) {
    grpc::ClientContext ctx;
    v1::AttachDeviceRequest req;
    req.set_name(name);
    req.set_simulated(spec);
    v1::Device out;
    return d.stub()->AttachDevice(&ctx, req, &out);
  }

  grpc::Status AttachHandle(DaemonProcess& d, const std::string& name, uint64_t handle) {
    grpc::ClientContext ctx;
    v1::AttachDeviceRequest req;
    req.set_name(name);
    req.set_fd_handle(handle);
    v1::Device out;
    return d.stub()->AttachDevice(&ctx, req, &out);
  }

  grpc::Status Prepare(const std::string& id, const std::vector<std::string>& devices,
                       const std::string& data_path = "", const std::string& token = "") {
    grpc::ClientContext ctx;
    v1::PrepareDestinationRequest req;
    req.set_session_id(id);
    for (const auto& d : devices) req.add_devices(d);
    req.set_token(token);
    req.mutable_options()->set_data_path(data_path);
    req.mutable_options()->set_transport(transport_);
    SessionStatus out;
    grpc::Status s = dst_->stub()->PrepareDestination(&ctx, req, &out);
    if (s.ok()) Remember(id, token.empty() ? out.token() : token);
    return s;
  }

  // The secret Start presents for session `id` when given none: the one its Prepare gave or
  // got back (as an agent passes it on).
  void Remember(const std::string& id, const std::string& secret) { secrets_[id] = secret; }
  std::string SecretOf(const std::string& id) const {
    auto it = secrets_.find(id);
    // A session never prepared: a well-formed secret no destination knows.
    return it == secrets_.end() ? std::string(32, 'u') : it->second;
  }

  grpc::Status Start(const std::string& id, const std::vector<std::string>& devices, bool precopy,
                     const std::string& data_path = "", const std::string& token = "",
                     const std::string& peer = "", int streams = 1) {
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id(id);
    for (const auto& d : devices) req.add_devices(d);
    req.set_peer(peer.empty() ? dst_->peer_address() : peer);
    req.set_precopy(precopy);
    req.set_token(token.empty() ? SecretOf(id) : token);
    req.mutable_options()->set_data_path(data_path);
    req.mutable_options()->set_streams(streams);
    req.mutable_options()->set_transport(transport_);
    req.set_bandwidth_bytes_per_second(bandwidth_);
    SessionStatus out;
    return src_->stub()->StartSource(&ctx, req, &out);
  }

  SessionStatus Get(DaemonProcess& d, const std::string& id) {
    grpc::ClientContext ctx;
    v1::GetSessionRequest req;
    req.set_session_id(id);
    SessionStatus out;
    grpc::Status s = d.stub()->GetSession(&ctx, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  static bool Final(const SessionStatus& s) {
    return s.phase() == SessionStatus::SUCCEEDED || s.phase() == SessionStatus::FAILED ||
           s.phase() == SessionStatus::CANCELLED || s.phase() == SessionStatus::IN_DOUBT;
  }

  SessionStatus WaitFinal(DaemonProcess& d, const std::string& id, double seconds = 60) {
    const absl::Time deadline = absl::Now() + absl::Seconds(seconds);
    SessionStatus s;
    do {
      s = Get(d, id);
      if (Final(s)) return s;
      absl::SleepFor(absl::Milliseconds(20));
    } while (absl::Now() < deadline);
    ADD_FAILURE() << "session " << id << " did not end: " << s.DebugString();
    return s;
  }

  // Streams the source's status until `until` holds (true), or the stream ends (the session
  // ended) or `seconds` pass (false); `*last` is the last status read.
  bool WatchSourceUntil(const std::string& id,
                        const std::function<bool(const SessionStatus&)>& until,
                        SessionStatus* last, double seconds = 60) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
    v1::WatchSessionRequest req;
    req.set_session_id(id);
    auto reader = src_->stub()->WatchSession(&ctx, req);
    bool reached = false;
    while (reader->Read(last)) {
      if (until(*last)) {
        reached = true;
        ctx.TryCancel();
        break;
      }
    }
    reader->Finish();
    return reached;
  }

  // Waits (via WatchSession) until the source has done `rounds` precopy rounds.
  SessionStatus WatchUntilRounds(const std::string& id, uint32_t rounds) {
    SessionStatus s;
    const bool reached = WatchSourceUntil(
        id, [&](const SessionStatus& st) { return st.precopy_rounds() >= rounds || Final(st); },
        &s, 20);
    // Every device must get through its rounds promptly: a stall here is a bug, not slowness.
    EXPECT_TRUE(reached) << "session " << id << " did not reach " << rounds
                         << " precopy round(s)  within 20 s: " << s.DebugString();
    return s;
  }

  // CancelSession on daemon `d`.
  grpc::Status Cancel(DaemonProcess& d, const std::string& id) {
    grpc::ClientContext ctx;
    v1::CancelSessionRequest req;
    req.set_session_id(id);
    SessionStatus out;
    return d.stub()->CancelSession(&ctx, req, &out);
  }

  grpc::Status Switchover(const std::string& id) {
    grpc::ClientContext ctx;
    v1::SwitchoverRequest req;
    req.set_session_id(id);
    SessionStatus out;
    return src_->stub()->Switchover(&ctx, req, &out);
  }
  // The two sides' final statuses of a session.
  struct Ended {
    SessionStatus source, destination;
  };
  // Switches over and waits until the session ends on both sides (a refused switchover fails
  // the test and returns the current statuses).
  Ended SwitchoverAndWait(const std::string& id, double seconds = 60) {
    grpc::Status sw = Switchover(id);
    EXPECT_TRUE(sw.ok()) << "Switchover(" << id << "): " << sw.error_message();
    if (!sw.ok()) return {Get(*src_, id), Get(*dst_, id)};
    SessionStatus s = WaitFinal(*src_, id, seconds);
    return {s, WaitFinal(*dst_, id, seconds)};
  }
  // Both sides succeeded and the destination verified every stream.
  static ::testing::AssertionResult BothSucceeded(const SessionStatus& s, const SessionStatus& d) {
    if (s.phase() == SessionStatus::SUCCEEDED && d.phase() == SessionStatus::SUCCEEDED &&
        d.verified()) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << "source: " << s.DebugString() << "destination: " << d.DebugString();
  }

  std::string StateOf(DaemonProcess& d, const std::string& name) {
    grpc::ClientContext ctx;
    v1::ListDevicesResponse resp;
    d.stub()->ListDevices(&ctx, v1::ListDevicesRequest(), &resp);
    for (const auto& dev : resp.devices()) {
      if (dev.name() == name) return dev.state();
    }
    return "<missing>";
  }

  // Set by a subclass before SetUp: more flags for each daemon, the transport requests ask for.
  std::vector<std::string> src_flags_, dst_flags_;
  LaunchOptions src_launch_, dst_launch_;  // Where and how each daemon runs.
  std::string transport_;
  uint64_t bandwidth_ = 0;  // Start's bandwidth cap (0 = none).
  std::unique_ptr<DaemonProcess> src_, dst_;
  std::map<std::string, std::string> secrets_;  // Session id -> its secret (Remember).
};

}  // namespace migmover::testing

#endif  // MIGMOVER_TESTS_INTEGRATION_TWO_DAEMONS_H_
