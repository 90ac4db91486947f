// SourceSession against the fake transport, with a real DestinationSession on the other end and
// simulated devices on both: the outcome rule (success leaves the source in STOP and the
// destination RUNNING; any failure or cancel brings every source device back to RUNNING and
// resets the destination's) under each way a migration can end.
#include "daemon/session/source_session.h"

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "daemon/session/session_test_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace migmover {
namespace {

using ::testing::HasSubstr;

class SourceSessionTest : public SessionTest {};

TEST_F(SourceSessionTest, MigratesEveryDeviceAndLeavesTheSourceStopped) {
  AddDevices(2);
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  SessionSnapshot s = AwaitSnapshot(*src, PrecopyRoundDone);
  ASSERT_TRUE(PrecopyRoundDone(s)) << SessionPhaseName(s.phase) << " " << s.error;
  ASSERT_TRUE(src->Switchover().ok());

  s = AwaitEnd(*src);
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(s.phase, SessionPhase::kSucceeded) << s.error;
  EXPECT_EQ(d.phase, SessionPhase::kSucceeded) << d.error;
  EXPECT_TRUE(d.verified);
  EXPECT_GE(s.precopy_rounds, 1u);
  EXPECT_GT(s.precopy_bytes, 0u);
  ASSERT_EQ(s.devices.size(), 2u);
  ASSERT_EQ(d.devices.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kStop);
    EXPECT_EQ(DestinationState(i), MigState::kRunning);
    EXPECT_EQ(s.devices[i].transport, "fake");
    EXPECT_EQ(d.devices[i].transport, "fake");
    EXPECT_EQ(s.devices[i].state, "STOP");
    EXPECT_EQ(d.devices[i].state, "RUNNING");
    EXPECT_TRUE(s.devices[i].committed);
    EXPECT_TRUE(d.devices[i].committed);
    EXPECT_TRUE(d.devices[i].digest_checked);
    EXPECT_EQ(d.devices[i].bytes, s.devices[i].bytes);
    // The destination resumed exactly the state the source saved.
    EXPECT_EQ(dst_entries[i]->sim->state_digest(), src_entries[i]->sim->state_digest());
    EXPECT_EQ(ClaimOf(src_registry, names[i]), "");
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
  EXPECT_EQ(fake.opens(), 2);
}

// The session's rounds are the fewest any device completed: an agent that switches over after
// "one round" expects every device to have sent its initial state. A device still connecting
// has done none (the kernel VM test once saw its second device still RUNNING at that point).
TEST_F(SourceSessionTest, ADeviceStillConnectingHoldsTheSessionsRoundsAtZero) {
  AddDevices(2);
  fake.HoldOpen(1);
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  SessionSnapshot s = AwaitSnapshot(*src, [](const SessionSnapshot& s) {
    return s.devices.size() == 2 && s.devices[0].precopy_rounds >= 1;
  });
  ASSERT_GE(s.devices[0].precopy_rounds, 1u) << SessionPhaseName(s.phase) << " " << s.error;
  EXPECT_EQ(s.devices[1].precopy_rounds, 0u);
  EXPECT_EQ(s.precopy_rounds, 0u);
  EXPECT_EQ(SourceState(1), MigState::kRunning);

  fake.ReleaseOpen(1);
  s = AwaitSnapshot(*src, PrecopyRoundDone);
  ASSERT_TRUE(PrecopyRoundDone(s)) << SessionPhaseName(s.phase) << " " << s.error;
  EXPECT_EQ(SourceState(1), MigState::kPreCopy);
  ASSERT_TRUE(src->Switchover().ok());
  EXPECT_EQ(AwaitEnd(*src).phase, SessionPhase::kSucceeded);
  EXPECT_EQ(AwaitEnd(*dst).phase, SessionPhase::kSucceeded);
}

TEST_F(SourceSessionTest, APumpFailureSendsEveryDeviceBackToRunning) {
  AddDevices(2);
  const absl::Status reset = absl::UnavailableError("injected: connection reset by peer");
  fake.pump_faults[1] = {256u << 10, reset};
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());

  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_EQ(s.phase, SessionPhase::kFailed);
  EXPECT_EQ(s.error, reset);
  EXPECT_EQ(s.devices[1].error, reset.message());
  // No switchover: whatever moved, moved in PRE_COPY, the failed pump's bytes too.
  EXPECT_GT(s.precopy_bytes, 0u);
  EXPECT_EQ(s.stop_copy_bytes, 0u);
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kFailed);
  // Which device's abandon the destination hears first is a race; both say the source gave up.
  EXPECT_THAT(std::string(d.error.message()), HasSubstr("source abandoned the stream"));
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kRunning);
    EXPECT_EQ(s.devices[i].state, "RUNNING");
    EXPECT_NE(DestinationState(i), MigState::kResuming);
    EXPECT_FALSE(d.devices[i].committed);
    EXPECT_EQ(ClaimOf(src_registry, names[i]), "");
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
}

TEST_F(SourceSessionTest, ARefusedOpenFailsTheSessionAndRestoresRunning) {
  AddDevices(2);
  const absl::Status refused =
      absl::PermissionDeniedError("destination refused the stream: injected refusal");
  fake.open_errors[1] = refused;
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());

  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_EQ(s.phase, SessionPhase::kFailed);
  EXPECT_EQ(s.error, refused);
  EXPECT_EQ(fake.opens(), 2);  // Each device tried once; the refusal is not retried.
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kFailed);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kRunning);
    EXPECT_EQ(DestinationState(i), MigState::kRunning);  // Reset, whether it connected or not.
    EXPECT_EQ(ClaimOf(src_registry, names[i]), "");
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
}

TEST_F(SourceSessionTest, CancelDuringPreCopyRestoresRunning) {
  AddDevices(2);
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  SessionSnapshot s = AwaitSnapshot(*src, PrecopyRoundDone);
  ASSERT_TRUE(PrecopyRoundDone(s)) << SessionPhaseName(s.phase) << " " << s.error;
  ASSERT_EQ(SourceState(0), MigState::kPreCopy);

  ASSERT_TRUE(src->Cancel().ok());
  s = AwaitEnd(*src);
  EXPECT_EQ(s.phase, SessionPhase::kCancelled);
  EXPECT_EQ(s.error.code(), absl::StatusCode::kCancelled);
  // The destination heard the source give up and reset its devices.
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kFailed);
  EXPECT_EQ(d.error.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(d.error.message()),
              HasSubstr("source abandoned the stream: session cancelled"));
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kRunning);
    EXPECT_FALSE(s.devices[i].committed);
    EXPECT_EQ(DestinationState(i), MigState::kRunning);
    EXPECT_EQ(ClaimOf(src_registry, names[i]), "");
  }
}

TEST_F(SourceSessionTest, CancelWhileAwaitingCommitRestoresRunning) {
  AddDevices(2);
  fake.withhold_verdicts = true;  // The destination's COMMITs never arrive.
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  ASSERT_TRUE(fake.WaitForCommitWaiters(2, absl::Seconds(30)));
  EXPECT_EQ(src->phase(), SessionPhase::kCommitting);

  ASSERT_TRUE(src->Cancel().ok());
  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_EQ(s.phase, SessionPhase::kCancelled);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kRunning);
    EXPECT_EQ(s.devices[i].state, "RUNNING");
    EXPECT_FALSE(s.devices[i].committed);
    EXPECT_EQ(ClaimOf(src_registry, names[i]), "");
  }
  // The destination may have committed before the source's abandon reached it (only its
  // answer was withheld): it held the devices stopped, and the source's ERROR reset them.
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kFailed) << SessionPhaseName(d.phase);
  ExpectNeverLiveOnBoth();
}

// The split brain of issue 10: the destination committed but its COMMIT never reached the
// source, which timed out and resumed its VM. The destination must not run it too: it holds its
// devices stopped until the source confirms, and the source's ERROR makes it reset them.
TEST_F(SourceSessionTest, ALostCommitLeavesTheVmRunningOnlyOnTheSource) {
  AddDevices(2);
  fake.withhold_verdicts = true;
  src_config.stream.idle_timeout = absl::Milliseconds(250);  // COMMIT awaited 4x as long.
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());

  SessionSnapshot s = AwaitEnd(*src);
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(s.phase, SessionPhase::kFailed);
  EXPECT_EQ(s.error.code(), absl::StatusCode::kDeadlineExceeded) << s.error;
  EXPECT_EQ(d.phase, SessionPhase::kFailed) << d.error;
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kRunning);
    EXPECT_FALSE(DestinationRunsMigratedState(i));
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
  ExpectNeverLiveOnBoth();
}

// The destination runs nothing before the source's CONFIRM, which comes only once every device
// committed: a device that committed early is held in STOP while another still streams.
TEST_F(SourceSessionTest, TheDestinationRunsNothingBeforeEveryDeviceCommitted) {
  AddDevices(2);
  fake.HoldReceive(1);
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  SessionSnapshot d = AwaitSnapshot(*dst, [](const SessionSnapshot& s) {
    return IsFinal(s.phase) || s.devices[0].committed;
  });
  ASSERT_TRUE(d.devices[0].committed) << SessionPhaseName(d.phase) << " " << d.error;
  EXPECT_EQ(DestinationState(0), MigState::kStop);
  EXPECT_EQ(SourceState(0), MigState::kStopCopy) << "the source stops only at the decision";
  EXPECT_FALSE(IsFinal(src->phase()));

  fake.ResumeReceive(1);
  SessionSnapshot s = AwaitEnd(*src);
  d = AwaitEnd(*dst);
  EXPECT_EQ(s.phase, SessionPhase::kSucceeded) << s.error;
  EXPECT_EQ(d.phase, SessionPhase::kSucceeded) << d.error;
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kStop);
    EXPECT_TRUE(DestinationRunsMigratedState(i));
  }
}

// Every device committed and the source passed its point of no return, its CONFIRM still on
// the way: a cancel on either side now could only lose the VM (the source stopped for good, the
// destination reset), so both refuse it, and the destination runs once the CONFIRM arrives.
TEST_F(SourceSessionTest, ACancelAfterEveryDeviceCommittedIsRefusedOnBothSides) {
  AddDevices(2);
  fake.HoldConfirms();
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  // Both CONFIRMs are on their way: every COMMIT(0) went out and the source decided.
  ASSERT_TRUE(fake.WaitForConfirmWaiters(2, absl::Seconds(30)));
  EXPECT_EQ(dst->Cancel().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(src->Cancel().code(), absl::StatusCode::kFailedPrecondition);

  fake.ReleaseConfirms();
  SessionSnapshot s = AwaitEnd(*src);
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(s.phase, SessionPhase::kSucceeded) << s.error;
  EXPECT_EQ(d.phase, SessionPhase::kSucceeded) << d.error;
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(DestinationRunsMigratedState(i)) << names[i];
  ExpectNeverLiveOnBoth();
}

// The CONFIRM is lost: the source is past its point of no return (stopped, SUCCEEDED); the
// destination cannot tell that from a source that gave up, so it runs nothing and resets
// nothing: IN_DOUBT, its devices stopped and still claimed, for the agent to settle.
TEST_F(SourceSessionTest, ALostConfirmLeavesTheDestinationInDoubtWithItsDevicesStopped) {
  AddDevices(2);
  fake.withhold_confirms = true;
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());

  SessionSnapshot s = AwaitEnd(*src);
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(s.phase, SessionPhase::kSucceeded) << s.error;
  EXPECT_EQ(d.phase, SessionPhase::kInDoubt) << d.error;
  EXPECT_THAT(std::string(d.error.message()), HasSubstr("CONFIRM never came"));
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kStop);
    EXPECT_EQ(DestinationState(i), MigState::kStop);
    EXPECT_TRUE(d.devices[i].committed);
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), dst_config.session_id);
  }
  ExpectNeverLiveOnBoth();
}

// The agent settles the doubt: it saw the source SUCCEEDED, so the destination runs.
TEST_F(SourceSessionTest, AnInDoubtDestinationRunsWhenItsAgentSaysTheSourceSucceeded) {
  AddDevices(2);
  fake.withhold_confirms = true;
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  ASSERT_EQ(AwaitEnd(*src).phase, SessionPhase::kSucceeded);
  ASSERT_EQ(AwaitEnd(*dst).phase, SessionPhase::kInDoubt);
  // Not a way out of doubt: refused, changes nothing.
  EXPECT_EQ(dst->Cancel().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(dst->phase(), SessionPhase::kInDoubt);
  EXPECT_EQ(DestinationState(0), MigState::kStop);

  ASSERT_TRUE(dst->Resolve(/*run=*/true).ok());
  SessionSnapshot d = dst->Snapshot();
  EXPECT_EQ(d.phase, SessionPhase::kSucceeded) << d.error;
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_TRUE(DestinationRunsMigratedState(i));
    EXPECT_EQ(SourceState(i), MigState::kStop);
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
  // Settled once: a second word changes nothing.
  EXPECT_EQ(dst->Resolve(false).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(DestinationRunsMigratedState(0));
}

// Or the VM stays on the source: the destination resets its devices and lets them go.
TEST_F(SourceSessionTest, AnInDoubtDestinationAbandonedByItsAgentResetsItsDevices) {
  AddDevices(2);
  fake.withhold_confirms = true;
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  AwaitEnd(*src);
  ASSERT_EQ(AwaitEnd(*dst).phase, SessionPhase::kInDoubt);

  ASSERT_TRUE(dst->Resolve(/*run=*/false).ok());
  SessionSnapshot d = dst->Snapshot();
  EXPECT_EQ(d.phase, SessionPhase::kFailed);
  EXPECT_EQ(d.error.code(), absl::StatusCode::kAborted) << d.error;
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_FALSE(DestinationRunsMigratedState(i));
    EXPECT_NE(DestinationState(i), MigState::kResuming);
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
}

// Only an IN_DOUBT destination is settled: never a session still moving or already decided.
TEST_F(SourceSessionTest, ResolveIsRefusedUnlessTheDestinationIsInDoubt) {
  AddDevices(1);
  ASSERT_TRUE(PrepareDestination().ok());
  EXPECT_EQ(dst->Resolve(true).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  ASSERT_EQ(AwaitEnd(*dst).phase, SessionPhase::kSucceeded);
  EXPECT_EQ(dst->Resolve(false).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(DestinationRunsMigratedState(0));
}

// Rule 5 of the commit protocol with several P2P devices: at switchover every source device
// reaches its P2P state before any enters STOP_COPY, and after CONFIRM every destination device
// reaches RUNNING_P2P before any runs (each arc numbered across devices by the simulator).
TEST_F(SourceSessionTest, EveryDeviceIsQuiescedBeforeAnyStopsOrRuns) {
  AddDevices(3);
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  SessionSnapshot s = AwaitSnapshot(*src, PrecopyRoundDone);
  ASSERT_TRUE(PrecopyRoundDone(s)) << s.error;
  ASSERT_TRUE(src->Switchover().ok());
  ASSERT_EQ(AwaitEnd(*src).phase, SessionPhase::kSucceeded);
  ASSERT_EQ(AwaitEnd(*dst).phase, SessionPhase::kSucceeded);

  // The latest arc into `into` across devices, and the earliest into `next`.
  auto check = [](const std::vector<DeviceEntry*>& entries, MigState into, MigState next) {
    uint64_t last_quiet = 0, first_next = UINT64_MAX;
    for (DeviceEntry* e : entries) {
      bool quiet = false;
      for (const auto& arc : e->sim->arcs()) {
        if (arc.to == into) {
          quiet = true;
          last_quiet = std::max(last_quiet, arc.seq);
        }
        if (arc.to == next) first_next = std::min(first_next, arc.seq);
      }
      EXPECT_TRUE(quiet) << e->name << " never reached " << MigStateName(into);
    }
    EXPECT_LT(last_quiet, first_next) << "a device reached " << MigStateName(next)
                                      << " before every device was in " << MigStateName(into);
  };
  check(src_entries, MigState::kPreCopyP2P, MigState::kStopCopy);
  // RUNNING_P2P -> RUNNING on the destination; its first RUNNING_P2P is after RESUMING.
  check(dst_entries, MigState::kRunningP2P, MigState::kRunning);
}

// Rule 5 on the way back: a device failing mid STOP_COPY fails the migration, and the source's
// devices, quiesced and stopped, resume together: every one reaches RUNNING_P2P before any runs.
TEST_F(SourceSessionTest, AFailureAfterSwitchoverResumesEveryDeviceThroughRunningP2PTogether) {
  AddDevices(3);
  src_config.precopy = false;  // The whole state moves in STOP_COPY.
  fake.pump_faults[1] = {1u << 20, absl::UnavailableError("injected: connection reset by peer")};
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  SessionSnapshot s = AwaitEnd(*src);
  ASSERT_EQ(s.phase, SessionPhase::kFailed) << s.error;
  uint64_t last_p2p = 0, first_running = UINT64_MAX;
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kRunning);
    bool ran = false;
    for (const auto& arc : src_entries[i]->sim->arcs()) {
      if (arc.to == MigState::kRunningP2P) last_p2p = std::max(last_p2p, arc.seq);
      if (arc.to == MigState::kRunning) {
        ran = true;
        first_running = std::min(first_running, arc.seq);
      }
    }
    EXPECT_TRUE(ran);
  }
  EXPECT_LT(last_p2p, first_running)
      << "a device ran again before every device was back in RUNNING_P2P";
  AwaitEnd(*dst);
  ExpectNeverLiveOnBoth();
}

TEST_F(SourceSessionTest, ADestinationFailureReachesTheSource) {
  AddDevices(1);
  const absl::Status bad = absl::DataLossError("injected: record 3 is malformed");
  fake.receive_faults[0] = {512u << 10, bad};
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());

  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_EQ(s.phase, SessionPhase::kFailed);
  EXPECT_EQ(s.error.code(), bad.code());
  EXPECT_THAT(std::string(s.error.message()), HasSubstr(std::string(bad.message())));
  EXPECT_EQ(SourceState(0), MigState::kRunning);
  EXPECT_EQ(ClaimOf(src_registry, names[0]), "");
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kFailed);
  EXPECT_EQ(d.error, bad);
  EXPECT_EQ(DestinationState(0), MigState::kRunning);
}

// A device whose own stream committed is undone when another device then fails: the source
// takes it back to RUNNING and the destination resets the device it held stopped (final state
// STOP here, so a device left committed would show).
TEST_F(SourceSessionTest, AFailureAfterAnotherDeviceCommittedUndoesThatCommitOnBothSides) {
  AddDevices(2);
  dst_config.final_state = MigState::kStop;
  // Only after the switchover: a PRE_COPY that filled device 1's held wire (1 MiB) before the
  // switchover was seen would keep that device from quiescing, and so every device from
  // stopping (a chunk read from a device must be delivered), until the idle timeout.
  src_config.precopy = false;
  const absl::Status bad = absl::DataLossError("injected: device 1 rejected its stream");
  fake.HoldReceive(1);
  fake.receive_faults[1] = {64u << 10, bad};
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  SessionSnapshot d = AwaitSnapshot(*dst, [](const SessionSnapshot& s) {
    return IsFinal(s.phase) || s.devices[0].committed;
  });
  ASSERT_TRUE(d.devices[0].committed) << d.error;
  ASSERT_EQ(DestinationState(0), MigState::kStop);
  SessionSnapshot s = AwaitSnapshot(*src, [](const SessionSnapshot& s) {
    return IsFinal(s.phase) || s.devices[0].committed;
  });
  ASSERT_TRUE(s.devices[0].committed) << s.error;
  EXPECT_EQ(SourceState(0), MigState::kStopCopy) << "stopped only once every device committed";

  fake.ResumeReceive(1);
  s = AwaitEnd(*src);
  d = AwaitEnd(*dst);
  EXPECT_EQ(s.phase, SessionPhase::kFailed);
  EXPECT_THAT(std::string(s.error.message()), HasSubstr(std::string(bad.message())));
  EXPECT_EQ(d.phase, SessionPhase::kFailed);
  EXPECT_EQ(d.error, bad);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(SourceState(i), MigState::kRunning);
    EXPECT_EQ(DestinationState(i), MigState::kRunning);
    EXPECT_FALSE(d.devices[i].committed);
    EXPECT_FALSE(s.devices[i].committed) << "the commit was undone here too";
  }
}

// One device's stream fails on the destination while another device's stream is busy. The
// destination fails the whole session and stops every other stream; the source must still end
// FAILED with the real error, not CANCELLED as if its agent had asked. (It used to: the busy
// device heard the destination's CANCELLED first, and the source took any Cancelled error for
// its own cancel, so the real error was lost.)
TEST_F(SourceSessionTest, ADestinationFailureOnOneDeviceIsNotReportedAsACancel) {
  sim::SimDeviceSpec busy = SmallDevice();
  busy.dirty_rate = 256u << 20;  // dev0 always has PRE_COPY data: its sender is always pumping.
  AddDevices(1, busy);
  sim::SimDeviceSpec quiet = SmallDevice();
  quiet.features.flags = MigFeatures::kStopCopy | MigFeatures::kP2P;  // dev1 waits idle.
  quiet.seed = 7;
  AddDevice(quiet, BlankLike(quiet));
  const absl::Status bad = absl::DataLossError("injected: device 1 rejected its stream");
  fake.receive_faults[1] = {0, bad};
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());

  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.error, bad);
  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_EQ(s.phase, SessionPhase::kFailed) << s.error;
  EXPECT_THAT(std::string(s.error.message()), HasSubstr(std::string(bad.message())));
  EXPECT_EQ(SourceState(0), MigState::kRunning);
  EXPECT_EQ(SourceState(1), MigState::kRunning);
}

TEST_F(SourceSessionTest, ASpecTheTransportRefusesLeavesTheDevicesUnclaimed) {
  AddDevices(2);
  src_config.streams = 2;  // The fake transport does not stripe.
  absl::Status started = StartSource();
  EXPECT_EQ(started.code(), absl::StatusCode::kInvalidArgument) << started;
  EXPECT_EQ(fake.opens(), 0);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(ClaimOf(src_registry, names[i]), "");
    EXPECT_EQ(SourceState(i), MigState::kRunning);
  }
}

TEST_F(SourceSessionTest, ADeviceNotRunningIsRefusedAndNothingIsClaimed) {
  AddDevices(2);
  {
    absl::MutexLock l(&src_entries[1]->mu);
    ASSERT_TRUE(src_entries[1]->device->SetState(MigState::kStop).ok());
  }
  absl::Status started = StartSource();
  EXPECT_EQ(started.code(), absl::StatusCode::kFailedPrecondition) << started;
  EXPECT_THAT(std::string(started.message()), HasSubstr("dev1"));
  EXPECT_EQ(ClaimOf(src_registry, names[0]), "");
  EXPECT_EQ(ClaimOf(src_registry, names[1]), "");
  EXPECT_EQ(SourceState(0), MigState::kRunning);
  EXPECT_EQ(SourceState(1), MigState::kStop);
}

}  // namespace
}  // namespace migmover
