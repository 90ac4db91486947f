// Convergence against real daemons: switchover readiness (only once the destination has the
// initial precopy data in its device), the stop-copy size (unknown when a driver refuses it),
// the downtime limit, and the policy timeouts, each ending the session with its own name and
// the outcome rule.
#include <functional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/two_daemons.h"

namespace migmover {
namespace {

using testing::DaemonProcess;
using testing::TwoDaemons;
using v1::SessionStatus;

class Convergence : public TwoDaemons {
 protected:
  grpc::Status StartWith(const std::string& id, const std::vector<std::string>& devices,
                         const std::function<void(v1::StartSourceRequest*)>& edit) {
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id(id);
    for (const auto& d : devices) req.add_devices(d);
    req.set_peer(dst_->peer_address());
    req.set_token(SecretOf(id));
    req.mutable_options()->set_streams(1);
    edit(&req);
    SessionStatus out;
    return src_->stub()->StartSource(&ctx, req, &out);
  }

  v1::DeviceProgress DestinationDevice(const std::string& id, int index) {
    SessionStatus d = Get(*dst_, id);
    return index < d.devices_size() ? d.devices(index) : v1::DeviceProgress();
  }

  // The outcome rule after a source-side failure: the source device runs again, the
  // destination session failed and reset its device.
  void ExpectBothBack(const std::string& id, const std::string& device) {
    SessionStatus d = WaitFinal(*dst_, id);
    EXPECT_EQ(d.phase(), SessionStatus::FAILED) << d.DebugString();
    EXPECT_EQ(StateOf(*src_, device), "RUNNING");
    EXPECT_EQ(StateOf(*dst_, device), "RUNNING");
  }
};

TEST_F(Convergence, SwitchoverReadyOnlyAfterTheDestinationLoadedTheInitialData) {
  // The destination's device takes all but the last ~68 KiB of the stream, then stops taking
  // data for 5 s: the source has sent every initial byte (the rest fits in the socket buffers)
  // well before the destination's device has them. The rest must fit with room to spare: a
  // receive window held shut for --peer_timeout_ms (4 s) ends the connection (TCP_USER_TIMEOUT),
  // and with the TLS relay's buffers in the way ~400 KiB did not always fit.
  ASSERT_TRUE(Attach(*src_, "d", "size=8MiB,chunk=64KiB,seed=5").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=8MiB,chunk=64KiB,stall=8128KiB:5000").ok());
  ASSERT_TRUE(Prepare("ready", {"d"}).ok());
  ASSERT_TRUE(StartWith("ready", {"d"}, [](auto* r) { r->set_downtime_limit_ms(60000); }).ok());

  SessionStatus s;
  ASSERT_TRUE(WatchSourceUntil(
      "ready", [](const SessionStatus& st) {
        return st.devices_size() == 1 && st.devices(0).initial_data_sent();
      }, &s))
      << s.DebugString();
  // Sent, not yet in the destination's device: not ready.
  EXPECT_FALSE(s.switchover_ready()) << s.DebugString();
  EXPECT_FALSE(s.devices(0).initial_data_loaded());
  EXPECT_FALSE(DestinationDevice("ready", 0).initial_data_loaded());
  const absl::Time sent_seen = absl::Now();

  ASSERT_TRUE(WatchSourceUntil(
      "ready", [](const SessionStatus& st) { return st.switchover_ready(); }, &s))
      << s.DebugString();
  EXPECT_TRUE(s.devices(0).initial_data_loaded());
  EXPECT_EQ(s.phase(), SessionStatus::PRE_COPY);
  // The device's stall (5 s), not the heartbeat's latency, held it back. A lower bound only:
  // a loaded machine only makes it later.
  EXPECT_GE(absl::Now() - sent_seen, absl::Seconds(1));
  // The destination said so only once its device had every initial byte.
  v1::DeviceProgress dst = DestinationDevice("ready", 0);
  EXPECT_TRUE(dst.initial_data_loaded());
  EXPECT_GE(dst.bytes(), 8u << 20);
  Ended e = SwitchoverAndWait("ready");
  EXPECT_TRUE(BothSucceeded(e.source, e.destination));
}

TEST_F(Convergence, AConvergedPrecopyIsReadyUnderTheDefaultLimit) {
  // Once the initial data is across, the state dirties slowly: precopy trickles (its recent
  // rate says nothing of the link), and what a switchover would move is small.
  ASSERT_TRUE(Attach(*src_, "d", "size=16MiB,chunk=64KiB,dirty_rate=256KiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=16MiB,chunk=64KiB").ok());
  ASSERT_TRUE(Prepare("conv", {"d"}).ok());
  ASSERT_TRUE(StartWith("conv", {"d"}, [](auto*) {}).ok());
  SessionStatus s;
  ASSERT_TRUE(WatchSourceUntil(
      "conv", [](const SessionStatus& st) { return st.switchover_ready(); }, &s, 30))
      << s.DebugString();
  EXPECT_NEAR(s.downtime_limit_seconds(), 0.3, 1e-9);
  EXPECT_LE(s.expected_downtime_seconds(), 0.3);
  Ended e = SwitchoverAndWait("conv");
  EXPECT_TRUE(BothSucceeded(e.source, e.destination));
}

TEST_F(Convergence, StopCopySizeIsReportedAndUnknownWhenTheDriverRefusesIt) {
  ASSERT_TRUE(Attach(*src_, "a", "size=4MiB").ok());
  ASSERT_TRUE(Attach(*src_, "b", "size=4MiB,data_size=off").ok());
  ASSERT_TRUE(Attach(*dst_, "a", "size=4MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "b", "size=4MiB").ok());
  ASSERT_TRUE(Prepare("size", {"a", "b"}).ok());
  ASSERT_TRUE(StartWith("size", {"a", "b"}, [](auto* r) { r->set_downtime_limit_ms(60000); }).ok());
  SessionStatus s;
  ASSERT_TRUE(WatchSourceUntil(
      "size", [](const SessionStatus& st) { return st.switchover_ready(); }, &s))
      << s.DebugString();
  ASSERT_EQ(s.devices_size(), 2);
  EXPECT_TRUE(s.devices(0).stop_copy_size_known());
  EXPECT_GT(s.devices(0).stop_copy_size_bytes(), 0u);  // At least the stream's end record.
  EXPECT_FALSE(s.devices(1).stop_copy_size_known());
  EXPECT_EQ(s.devices(1).stop_copy_size_bytes(), 0u);
  EXPECT_FALSE(s.stop_copy_size_known());
  EXPECT_EQ(s.stop_copy_size_bytes(), s.devices(0).stop_copy_size_bytes());
  EXPECT_GT(s.transfer_rate_bytes_per_second(), 0);
  Ended e = SwitchoverAndWait("size");
  EXPECT_TRUE(BothSucceeded(e.source, e.destination));
}

TEST_F(Convergence, ExpectedDowntimeOverTheLimitIsNotReady) {
  // All of the state dirties faster than a capped link moves it: the stop-copy size stays near
  // the whole state, whose transfer takes far longer than 1 ms.
  ASSERT_TRUE(Attach(*src_, "d", "size=4MiB,chunk=64KiB,dirty_rate=64MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=4MiB,chunk=64KiB").ok());
  ASSERT_TRUE(Prepare("limit", {"d"}).ok());
  ASSERT_TRUE(StartWith("limit", {"d"}, [](auto* r) {
                r->set_downtime_limit_ms(1);
                r->set_bandwidth_bytes_per_second(8 << 20);
              }).ok());
  SessionStatus s;
  ASSERT_TRUE(WatchSourceUntil(
      "limit", [](const SessionStatus& st) {
        return st.devices_size() == 1 && st.devices(0).initial_data_loaded() &&
               st.transfer_rate_bytes_per_second() > 0;
      }, &s))
      << s.DebugString();
  // Every status for the next second: loaded, estimated, over the limit, not ready.
  const absl::Time until = absl::Now() + absl::Seconds(1);
  int seen = 0;
  WatchSourceUntil(
      "limit", [&](const SessionStatus& st) {
        ++seen;
        EXPECT_FALSE(st.switchover_ready()) << st.DebugString();
        EXPECT_GT(st.expected_downtime_seconds(), 0.001) << st.DebugString();
        EXPECT_NEAR(st.downtime_limit_seconds(), 0.001, 1e-9);
        return absl::Now() > until;
      }, &s, 10);
  EXPECT_GT(seen, 0);
  ASSERT_TRUE(Cancel(*src_, "limit").ok());
  ExpectBothBack("limit", "d");
}

struct TimeoutCase {
  std::string name;  // What the error must open with.
  std::string device;
  std::function<void(v1::StartSourceRequest*)> edit;
};

class PolicyTimeouts : public Convergence, public ::testing::WithParamInterface<TimeoutCase> {};

TEST_P(PolicyTimeouts, FiresNamesItselfAndKeepsTheOutcomeRule) {
  const TimeoutCase& c = GetParam();
  ASSERT_TRUE(Attach(*src_, "d", c.device).ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=4MiB,chunk=64KiB").ok());
  ASSERT_TRUE(Prepare("t", {"d"}).ok());
  ASSERT_TRUE(StartWith("t", {"d"}, [&](auto* r) {
                // Only the timeout under test.
                r->set_progress_timeout_seconds(0);
                r->set_completion_timeout_per_gib_seconds(0);
                c.edit(r);
              }).ok());
  // Never switched over: the timeout ends it.
  SessionStatus s = WaitFinal(*src_, "t", 90);
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_EQ(s.error_code(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED)) << s.error();
  EXPECT_EQ(s.error().rfind(c.name + ":", 0), 0u) << s.error();
  ExpectBothBack("t", "d");
  // The destination heard why.
  EXPECT_NE(Get(*dst_, "t").error().find(c.name), std::string::npos) << Get(*dst_, "t").error();
}

INSTANTIATE_TEST_SUITE_P(
    All, PolicyTimeouts,
    ::testing::Values(
        // Dirtied faster than the capped link moves it: never closer to switchover.
        TimeoutCase{"progress_timeout", "size=4MiB,chunk=64KiB,dirty_rate=64MiB",
                    [](v1::StartSourceRequest* r) {
                      r->set_progress_timeout_seconds(2);
                      r->set_bandwidth_bytes_per_second(2 << 20);
                    }},
        TimeoutCase{"completion_timeout", "size=4MiB,chunk=64KiB",
                    [](v1::StartSourceRequest* r) { r->set_completion_timeout_seconds(2); }},
        // 4 MiB counts as the one GiB minimum: 2 s.
        TimeoutCase{"completion_timeout_per_gib", "size=4MiB,chunk=64KiB",
                    [](v1::StartSourceRequest* r) {
                      r->set_completion_timeout_per_gib_seconds(2);
                    }}),
    [](const ::testing::TestParamInfo<TimeoutCase>& i) { return i.param.name; });

}  // namespace
}  // namespace migmover
