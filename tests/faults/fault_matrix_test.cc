// Every fault at every point of a migration that ../shared/docs/commit-protocol.md lists, between
// two real daemons in their own network namespaces, with two devices per migration: before the
// stream starts, PRE_COPY at 10/50/90 %, at switchover, mid STOP_COPY, after END_STREAM (the
// destination loading its devices), after one device's COMMIT (the other still loading), after
// CONFIRM; faults: a silent cut, a reset, SIGKILL and SIGSTOP of either daemon. Each case checks
// the outcome rule as the surviving daemons report it (after the agent settles a destination
// left IN_DOUBT from the source's outcome), that each daemon that could notice did so within the
// peer timeout (plus slack), and that the same devices then migrate again.
//
// The default run takes one case per point, covering every fault (9 cases, about 2.5 minutes
// here); the whole matrix (54 cases, 51 run, about 6 minutes) runs with
//   bazel test //tests/faults:fault_matrix_test --test_env=MIGMOVER_FAULTS_LONG=1
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/faults/fault_fixture.h"

namespace migmover::testing {
namespace {

enum class Point {
  kBeforeStream,
  kPreCopy10,
  kPreCopy50,
  kPreCopy90,
  kSwitchover,
  kMidStopCopy,
  kAfterEndStream,
  kAfterOneCommit,
  kAfterConfirm,
};
enum class Fault { kDrop, kReset, kKillSource, kKillDestination, kStopSource, kStopDestination };

const char* Name(Point p) {
  switch (p) {
    case Point::kBeforeStream: return "BeforeStream";
    case Point::kPreCopy10: return "PreCopy10";
    case Point::kPreCopy50: return "PreCopy50";
    case Point::kPreCopy90: return "PreCopy90";
    case Point::kSwitchover: return "Switchover";
    case Point::kMidStopCopy: return "MidStopCopy";
    case Point::kAfterEndStream: return "AfterEndStream";
    case Point::kAfterOneCommit: return "AfterOneCommit";
    case Point::kAfterConfirm: return "AfterConfirm";
  }
  return "?";
}
const char* Name(Fault f) {
  switch (f) {
    case Fault::kDrop: return "SilentCut";
    case Fault::kReset: return "Reset";
    case Fault::kKillSource: return "KillSource";
    case Fault::kKillDestination: return "KillDestination";
    case Fault::kStopSource: return "StopSource";
    case Fault::kStopDestination: return "StopDestination";
  }
  return "?";
}

bool LongVariant() {
  const char* v = std::getenv("MIGMOVER_FAULTS_LONG");
  return v != nullptr && std::string(v) == "1";
}

// One case per point, every fault at least once.
bool InDefaultRun(Point p, Fault f) {
  static const std::vector<std::pair<Point, Fault>> kDefault = {
      {Point::kBeforeStream, Fault::kDrop},
      {Point::kPreCopy10, Fault::kKillDestination},
      {Point::kPreCopy50, Fault::kStopSource},
      {Point::kPreCopy90, Fault::kReset},
      {Point::kSwitchover, Fault::kStopDestination},
      {Point::kMidStopCopy, Fault::kKillSource},
      {Point::kAfterEndStream, Fault::kStopSource},
      {Point::kAfterOneCommit, Fault::kDrop},
      {Point::kAfterConfirm, Fault::kKillDestination},
  };
  for (const auto& c : kDefault) {
    if (c.first == p && c.second == f) return true;
  }
  return false;
}

constexpr uint64_t kMiB = 1 << 20;
const std::vector<std::string> kDevices = {"d0", "d1"};

class FaultMatrixTest : public FaultTest,
                        public ::testing::WithParamInterface<std::tuple<Point, Fault>> {
 protected:
  Point point() const { return std::get<0>(GetParam()); }
  Fault fault() const { return std::get<1>(GetParam()); }
  bool Hits(bool source) const {
    const Fault f = fault();
    return source ? (f == Fault::kKillSource || f == Fault::kStopSource)
                  : (f == Fault::kKillDestination || f == Fault::kStopDestination);
  }
  bool Kills() const { return fault() == Fault::kKillSource || fault() == Fault::kKillDestination; }
  bool Stops() const { return fault() == Fault::kStopSource || fault() == Fault::kStopDestination; }

  // Attaches d0 and d1 on both sides, sized and slowed for `point()`.
  void AttachDevices(bool source, bool destination) {
    const bool slow = point() == Point::kPreCopy10 || point() == Point::kPreCopy50 ||
                      point() == Point::kPreCopy90 || point() == Point::kMidStopCopy;
    const std::string size = slow ? "32MiB" : "8MiB";
    for (const std::string& d : kDevices) {
      if (source) {
        ASSERT_TRUE(Attach(*src_, d, "size=" + size).ok());
      }
      std::string spec = "size=" + size;
      if (point() == Point::kAfterEndStream ||
          (point() == Point::kAfterOneCommit && d == "d1")) {
        spec += ",commit_delay_ms=4000";
      }
      if (destination) {
        ASSERT_TRUE(Attach(*dst_, d, spec).ok());
      }
    }
    bandwidth_ = slow ? 16 * kMiB : 0;
  }

  // Runs the migration up to `point()`; false (with a failure recorded) if it ended first.
  void RunUntilPoint(const std::string& id) {
    const Point p = point();
    const bool precopy = p == Point::kPreCopy10 || p == Point::kPreCopy50 ||
                         p == Point::kPreCopy90 || p == Point::kSwitchover;
    ASSERT_TRUE(Prepare(id, kDevices).ok());
    if (p == Point::kBeforeStream) return;
    ASSERT_TRUE(Start(id, kDevices, precopy).ok());
    const uint64_t total = 2 * 32 * kMiB;
    SessionStatus at;
    switch (p) {
      case Point::kPreCopy10:
      case Point::kPreCopy50:
      case Point::kPreCopy90: {
        const uint64_t want =
            total * (p == Point::kPreCopy10 ? 10 : p == Point::kPreCopy50 ? 50 : 90) / 100;
        at = WatchUntil(*src_, id,
                        [want](const SessionStatus& s) { return s.precopy_bytes() >= want; });
        ASSERT_GE(at.precopy_bytes(), want) << at.DebugString();
        break;
      }
      case Point::kSwitchover:
        WatchUntilRounds(id, 1);
        ASSERT_TRUE(Switchover(id).ok());
        at = Get(*src_, id);
        break;
      case Point::kMidStopCopy:
        ASSERT_TRUE(Switchover(id).ok());
        at = WatchUntil(*src_, id, [total](const SessionStatus& s) {
          return s.stop_copy_bytes() >= total / 4;
        });
        ASSERT_GE(at.stop_copy_bytes(), total / 4) << at.DebugString();
        break;
      case Point::kAfterEndStream:
        ASSERT_TRUE(Switchover(id).ok());
        at = WatchUntil(*dst_, id, [](const SessionStatus& s) {
          return s.phase() == SessionStatus::COMMITTING;
        });
        ASSERT_EQ(at.phase(), SessionStatus::COMMITTING) << at.DebugString();
        break;
      case Point::kAfterOneCommit:
        ASSERT_TRUE(Switchover(id).ok());
        at = WatchUntil(*dst_, id, [](const SessionStatus& s) {
          return s.devices_size() == 2 && s.devices(0).committed() && !s.devices(1).committed();
        });
        ASSERT_TRUE(at.devices_size() == 2 && at.devices(0).committed()) << at.DebugString();
        break;
      case Point::kAfterConfirm:
        ASSERT_TRUE(Switchover(id).ok());
        at = WaitFinal(*dst_, id, 30);
        ASSERT_EQ(at.phase(), SessionStatus::SUCCEEDED) << at.DebugString();
        return;
      case Point::kBeforeStream:
        break;
    }
    // At switchover the race with the end is the point: a small STOP_COPY may be over already.
    if (p != Point::kSwitchover) {
      ASSERT_FALSE(Final(at)) << "the migration ended before the fault point: "
                              << at.DebugString();
    }
  }

  void Inject() {
    switch (fault()) {
      case Fault::kDrop:
        ASSERT_TRUE(net_->Drop().ok());
        break;
      case Fault::kReset:
        ASSERT_TRUE(net_->Reset().ok());
        break;
      case Fault::kKillSource:
        ASSERT_EQ(::kill(src_->pid(), SIGKILL), 0);
        break;
      case Fault::kKillDestination:
        ASSERT_EQ(::kill(dst_->pid(), SIGKILL), 0);
        break;
      case Fault::kStopSource:
        ASSERT_EQ(::kill(src_->pid(), SIGSTOP), 0);
        break;
      case Fault::kStopDestination:
        ASSERT_EQ(::kill(dst_->pid(), SIGSTOP), 0);
        break;
    }
  }

  // The outcome rule on whichever daemons kept their sessions (null: killed).
  void ExpectRule(const SessionStatus* s, const SessionStatus* d) {
    SCOPED_TRACE(absl::StrCat("source ", s ? SessionStatus::Phase_Name(s->phase()) : "killed",
                              ", destination ",
                              d ? SessionStatus::Phase_Name(d->phase()) : "killed"));
    for (const std::string& dev : kDevices) {
      SCOPED_TRACE(dev);
      if (s) {
        EXPECT_EQ(StateOf(*src_, dev), s->phase() == SessionStatus::SUCCEEDED ? "STOP" : "RUNNING")
            << "the source runs again exactly when it did not decide to commit";
      }
      if (d) {
        const std::string state = StateOf(*dst_, dev);
        EXPECT_NE(state, "RESUMING") << "destination left half-resumed";
        if (d->phase() == SessionStatus::IN_DOUBT) {
          EXPECT_EQ(state, "STOP");
        }
        if (d->phase() == SessionStatus::SUCCEEDED) {
          EXPECT_EQ(state, "RUNNING");
        }
      }
    }
    if (s && d) {
      // Never live on both hosts: the destination runs the VM only when the source gave it up.
      if (d->phase() == SessionStatus::SUCCEEDED) {
        EXPECT_EQ(s->phase(), SessionStatus::SUCCEEDED);
      }
      if (s->phase() != SessionStatus::SUCCEEDED) {
        EXPECT_NE(d->phase(), SessionStatus::SUCCEEDED);
      }
    }
  }
};

TEST_P(FaultMatrixTest, KeepsTheOutcomeRule) {
  if (!LongVariant() && !InDefaultRun(point(), fault())) {
    GTEST_SKIP() << "in the long variant only (--test_env=MIGMOVER_FAULTS_LONG=1)";
  }
  if (point() == Point::kBeforeStream && Hits(/*source=*/true)) {
    GTEST_SKIP() << "before its start nothing of the migration runs on the source";
  }
  const std::string id = "m";
  const std::string name = absl::StrCat(Name(point()), "_", Name(fault()));
  AttachDevices(true, true);
  RunUntilPoint(id);
  if (HasFatalFailure()) return;

  const absl::Time t0 = absl::Now();
  Inject();
  if (HasFatalFailure()) return;
  if (point() == Point::kBeforeStream) {
    // The agent starts the source only now, into the fault.
    (void)Start(id, kDevices, /*precopy=*/true);
  }

  // The daemon that was not hit notices (both, for a network fault).
  std::optional<SessionStatus> s, d;
  absl::Duration s_took, d_took;
  if (!Hits(true)) {
    s = WaitFinal(*src_, id, 30);
    s_took = absl::Now() - t0;
  }
  if (!Hits(false)) {
    if (point() == Point::kBeforeStream && s && Get(*dst_, id).phase() == SessionStatus::PREPARED) {
      // No source ever reached it: its agent, told the source failed, cancels.
      grpc::ClientContext ctx;
      v1::CancelSessionRequest req;
      req.set_session_id(id);
      SessionStatus out;
      EXPECT_TRUE(dst_->stub()->CancelSession(&ctx, req, &out).ok());
    }
    d = WaitFinal(*dst_, id, 30);
    d_took = absl::Now() - t0;
  }
  // The daemon that was hit: resumed (and then ends too), or started again without its sessions.
  if (fault() == Fault::kStopSource || fault() == Fault::kStopDestination) {
    DaemonProcess& hung = fault() == Fault::kStopSource ? *src_ : *dst_;
    ASSERT_EQ(::kill(hung.pid(), SIGCONT), 0);
    (fault() == Fault::kStopSource ? s : d) = WaitFinal(hung, id, 30);
  }
  const bool noticing = point() != Point::kAfterConfirm;
  const absl::Duration bound = absl::Milliseconds(kPeerTimeoutMs) + kDetectionSlack;
  std::cout << "fault " << name << ": "
            << (Hits(true) ? std::string("source hit")
                           : absl::StrCat("source ended after ", absl::FormatDuration(s_took)))
            << ", "
            << (Hits(false) ? std::string("destination hit")
                            : absl::StrCat("destination ended after ",
                                           absl::FormatDuration(d_took)))
            << std::endl;
  if (noticing && !Hits(true)) {
    EXPECT_LE(s_took, bound) << "the source noticed too late";
  }
  if (noticing && !Hits(false)) {
    EXPECT_LE(d_took, bound) << "the destination noticed too late";
  }

  if (d && d->phase() == SessionStatus::IN_DOUBT) {
    // The agent knows the source's outcome (a killed source never reported SUCCEEDED).
    d = Settle(id, s ? *s : SessionStatus(), *d);
  }
  ExpectRule(s ? &*s : nullptr, d ? &*d : nullptr);
  if (point() == Point::kAfterConfirm) {
    ASSERT_TRUE(s.has_value() || d.has_value());
    if (s) {
      EXPECT_EQ(s->phase(), SessionStatus::SUCCEEDED) << s->DebugString();
    }
    if (d) {
      EXPECT_EQ(d->phase(), SessionStatus::SUCCEEDED) << d->DebugString();
    }
  }

  // Then the same devices migrate again (a killed daemon started again, its devices attached
  // anew), unless the VM left the source for good.
  if (Kills()) {
    const bool source = fault() == Fault::kKillSource;
    if (source) {
      Restart(src_, "src2", src_flags_, src_launch_);
    } else {
      Restart(dst_, "dst2", dst_flags_, dst_launch_);
    }
    AttachDevices(source, !source);
  }
  if (s && s->phase() == SessionStatus::SUCCEEDED) return;
  bandwidth_ = 0;
  ASSERT_TRUE(net_->Clear().ok());
  ASSERT_TRUE(Prepare("again", kDevices).ok());
  ASSERT_TRUE(Start("again", kDevices, /*precopy=*/true).ok());
  Ended e = SwitchoverAndWait("again");
  EXPECT_TRUE(BothSucceeded(e.source, e.destination));
}

INSTANTIATE_TEST_SUITE_P(
    Points, FaultMatrixTest,
    ::testing::Combine(::testing::Values(Point::kBeforeStream, Point::kPreCopy10,
                                         Point::kPreCopy50, Point::kPreCopy90,
                                         Point::kSwitchover, Point::kMidStopCopy,
                                         Point::kAfterEndStream, Point::kAfterOneCommit,
                                         Point::kAfterConfirm),
                       ::testing::Values(Fault::kDrop, Fault::kReset, Fault::kKillSource,
                                         Fault::kKillDestination, Fault::kStopSource,
                                         Fault::kStopDestination)),
    [](const ::testing::TestParamInfo<std::tuple<Point, Fault>>& info) {
      return absl::StrCat(Name(std::get<0>(info.param)), "_", Name(std::get<1>(info.param)));
    });

}  // namespace
}  // namespace migmover::testing
