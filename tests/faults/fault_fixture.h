// FaultTest: two real daemons, each in its own network namespace (NetnsPair), with a short peer
// timeout, and the checks every fault case makes: the outcome rule as both daemons report it,
// the detection time against the bound, and a new migration of the same devices afterwards.
#ifndef MIGMOVER_TESTS_FAULTS_FAULT_FIXTURE_H_
#define MIGMOVER_TESTS_FAULTS_FAULT_FIXTURE_H_

#include <csignal>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/faults/netns_pair.h"
#include "tests/integration/two_daemons.h"

namespace migmover::testing {

// Short enough to keep the suite quick; the detection bound scales with it.
inline constexpr int kPeerTimeoutMs = 3000;
// Scheduling and polling on two shared cores, on top of the timeout itself.
inline constexpr absl::Duration kDetectionSlack = absl::Seconds(2);

class FaultTest : public TwoDaemons {
 protected:
  void SetUp() override {
    auto pair = NetnsPair::Create();
    if (pair.status().code() == absl::StatusCode::kFailedPrecondition) {
      GTEST_SKIP() << "no network namespaces here: " << pair.status().message();
    }
    ASSERT_TRUE(pair.ok()) << pair.status();
    net_ = std::move(*pair);
    src_launch_.netns = net_->a();
    src_launch_.listen_host = NetnsPair::kAddressA;
    dst_launch_.netns = net_->b();
    dst_launch_.listen_host = NetnsPair::kAddressB;
    for (auto* flags : {&src_flags_, &dst_flags_}) {
      flags->push_back(absl::StrCat("--peer_timeout_ms=", kPeerTimeoutMs));
      // These cases are about noticing a fault and the outcome rule: no resume unless a
      // test asks for one (resume_test.cc).
      flags->push_back(absl::StrCat("--reconnect_window_ms=", reconnect_window_ms_));
    }
    TwoDaemons::SetUp();
  }

  // A device on each side: the source's with content, the destination's blank.
  void AttachPair(const std::string& name, const std::string& spec) {
    ASSERT_TRUE(Attach(*src_, name, spec).ok());
    ASSERT_TRUE(Attach(*dst_, name, "size=" + spec.substr(spec.find('=') + 1,
                                                           spec.find(',') - spec.find('=') - 1))
                    .ok());
  }

  // Waits until both sides ended; returns how long each took from `since`.
  struct Outcome {
    Ended ended;
    absl::Duration source, destination;
  };
  Outcome AwaitBoth(const std::string& id, absl::Time since) {
    Outcome o;
    o.ended.source = WaitFinal(*src_, id, 60);
    o.source = absl::Now() - since;
    o.ended.destination = WaitFinal(*dst_, id, 60);
    o.destination = absl::Now() - since;
    return o;
  }

  // The outcome rule, as each daemon reports its session and device.
  void ExpectOutcomeRule(const Ended& e, const std::string& device) {
    const SessionStatus& s = e.source;
    const SessionStatus& d = e.destination;
    const std::string src_state = StateOf(*src_, device);
    const std::string dst_state = StateOf(*dst_, device);
    SCOPED_TRACE(absl::StrCat("source ", SessionStatus::Phase_Name(s.phase()), " ", src_state,
                              ", destination ", SessionStatus::Phase_Name(d.phase()), " ",
                              dst_state));
    EXPECT_NE(dst_state, "RESUMING") << "destination left half-resumed";
    if (s.phase() != SessionStatus::SUCCEEDED) {
      EXPECT_EQ(src_state, "RUNNING") << "the source must run again when nothing committed";
      EXPECT_NE(d.phase(), SessionStatus::SUCCEEDED) << "running on both hosts";
    } else {
      EXPECT_EQ(src_state, "STOP");
    }
    if (d.phase() == SessionStatus::IN_DOUBT) {
      EXPECT_EQ(dst_state, "STOP");
    }
  }

  void ExpectNoticedInTime(const Outcome& o, const std::string& fault) {
    const absl::Duration bound = absl::Milliseconds(kPeerTimeoutMs) + kDetectionSlack;
    std::cout << "fault " << fault << ": source ended after " << absl::FormatDuration(o.source)
              << ", destination after " << absl::FormatDuration(o.destination) << std::endl;
    RecordProperty(fault + "_source_ms", static_cast<int>(absl::ToInt64Milliseconds(o.source)));
    RecordProperty(fault + "_destination_ms",
                   static_cast<int>(absl::ToInt64Milliseconds(o.destination)));
    EXPECT_LE(o.source, bound) << fault << ": the source noticed too late";
    EXPECT_LE(o.destination, bound) << fault << ": the destination noticed too late";
  }

  // After the fault is gone, the same devices migrate again.
  void ExpectANewMigrationSucceeds(const std::string& id, const std::string& device) {
    ASSERT_TRUE(net_->Clear().ok());
    ASSERT_TRUE(Prepare(id, {device}).ok());
    ASSERT_TRUE(Start(id, {device}, /*precopy=*/true).ok());
    Ended e = SwitchoverAndWait(id);
    EXPECT_TRUE(BothSucceeded(e.source, e.destination));
    EXPECT_EQ(StateOf(*dst_, device), "RUNNING");
  }

  // A daemon killed is started again, in its namespace, as the agent's host would.
  void Restart(std::unique_ptr<DaemonProcess>& d, const std::string& name,
               const std::vector<std::string>& flags, const LaunchOptions& launch) {
    d.reset();
    auto again = DaemonProcess::Start(MigmoverdPath(), name, flags, launch);
    ASSERT_TRUE(again.ok()) << again.status();
    d = std::move(*again);
  }

  // Starts a STOP_COPY that lasts several seconds (a bandwidth cap) and returns once bytes flow.
  void StartLongStopCopy(const std::string& id) {
    AttachPair("d0", "size=128MiB");
    bandwidth_ = 16 << 20;
    ASSERT_TRUE(Prepare(id, {"d0"}).ok());
    ASSERT_TRUE(Start(id, {"d0"}, /*precopy=*/false).ok());
    ASSERT_TRUE(Switchover(id).ok());
    // Until STOP_COPY bytes flow (the cap makes the phase last seconds, so no race with its end).
    SessionStatus st = WatchUntil(*src_, id, [](const SessionStatus& s) {
      return s.phase() == SessionStatus::STOP_COPY && s.stop_copy_bytes() > 0;
    }, 20);
    ASSERT_EQ(st.phase(), SessionStatus::STOP_COPY) << st.DebugString();
    ASSERT_GT(st.stop_copy_bytes(), 0u);
    bandwidth_ = 0;
  }

  // Starts a migration without PRE_COPY and returns once the destination loads its device
  // (COMMITTING: the stream is in, RESUMING -> STOP under way; a commit_delay_ms makes it last).
  void StartUntilDestinationCommits(const std::string& id) {
    ASSERT_TRUE(Prepare(id, {"d0"}).ok());
    ASSERT_TRUE(Start(id, {"d0"}, /*precopy=*/false).ok());
    ASSERT_TRUE(Switchover(id).ok());
    SessionStatus st = WatchUntil(*dst_, id, [](const SessionStatus& s) {
      return s.phase() == SessionStatus::COMMITTING;
    }, 20);
    ASSERT_EQ(st.phase(), SessionStatus::COMMITTING) << st.DebugString();
  }

  // Waits (on `d`'s WatchSession stream, at most `seconds`) until `done` holds for the session's
  // status or it ended; returns the last status seen.
  template <typename Pred>
  SessionStatus WatchUntil(DaemonProcess& d, const std::string& id, Pred done,
                           double seconds = 30) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
    v1::WatchSessionRequest req;
    req.set_session_id(id);
    auto reader = d.stub()->WatchSession(&ctx, req);
    SessionStatus s;
    while (reader->Read(&s)) {
      if (done(s) || Final(s)) {
        ctx.TryCancel();
        break;
      }
    }
    reader->Finish();
    return s;
  }

  // What the agent does with a destination left IN_DOUBT: it knows the source's outcome, so RUN
  // when the source SUCCEEDED, ABANDON otherwise. Returns the settled status.
  SessionStatus Settle(const std::string& id, const SessionStatus& source,
                       const SessionStatus& destination) {
    if (destination.phase() != SessionStatus::IN_DOUBT) return destination;
    grpc::ClientContext ctx;
    v1::ResolveSessionRequest req;
    req.set_session_id(id);
    req.set_outcome(source.phase() == SessionStatus::SUCCEEDED
                        ? v1::ResolveSessionRequest::RUN
                        : v1::ResolveSessionRequest::ABANDON);
    SessionStatus settled;
    grpc::Status st = dst_->stub()->ResolveSession(&ctx, req, &settled);
    EXPECT_TRUE(st.ok()) << "ResolveSession: " << st.error_message();
    return settled;
  }

  std::unique_ptr<NetnsPair> net_;
  int reconnect_window_ms_ = 0;  // Both daemons' --reconnect_window_ms; set before SetUp.
};

}  // namespace migmover::testing

#endif  // MIGMOVER_TESTS_FAULTS_FAULT_FIXTURE_H_
