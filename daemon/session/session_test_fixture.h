// SessionTest: a source and a destination session in one process, joined by a FakeTransport,
// over small simulated devices ("dev0", "dev1", ...) in two registries, one per host. Tests
// tune the configs and the fake's fault knobs, then prepare the destination and start the
// source, and synchronise on the sessions' own change notifications.
#ifndef MIGMOVER_DAEMON_SESSION_SESSION_TEST_FIXTURE_H_
#define MIGMOVER_DAEMON_SESSION_SESSION_TEST_FIXTURE_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "daemon/device/mig_state.h"
#include "daemon/device/sim/sim_device_spec.h"
#include "daemon/registry/device_registry.h"
#include "daemon/session/destination_session.h"
#include "daemon/session/session.h"
#include "daemon/session/source_session.h"
#include "gtest/gtest.h"
#include "transport/api/transport_set.h"
#include "transport/testing/fake_transport.h"

namespace migmover {

// Failure messages name states and phases, not their numbers.
inline void PrintTo(MigState s, std::ostream* os) { *os << MigStateName(s); }
inline void PrintTo(SessionPhase p, std::ostream* os) { *os << SessionPhaseName(p); }

class SessionTest : public ::testing::Test {
 protected:
  SessionTest();
  // Source first: its device threads may still be handing streams to the destination.
  ~SessionTest() override;

  // 2 MiB with PRE_COPY: a migration of a few of these takes milliseconds.
  static sim::SimDeviceSpec SmallDevice();
  // Adds `n` devices to both registries: the source's from `spec` (each with its own content),
  // the destination's blank, of the same size and features. Both configs list them all.
  void AddDevices(int n, const sim::SimDeviceSpec& spec = SmallDevice());
  // Adds one device: `source` on the source, `destination` on the destination.
  void AddDevice(const sim::SimDeviceSpec& source, const sim::SimDeviceSpec& destination);
  // A blank device that can resume what a device of `source` saves.
  static sim::SimDeviceSpec BlankLike(const sim::SimDeviceSpec& source);

  // DestinationSession::Prepare with `dst_config`; the fake then delivers HELLOs to it.
  absl::Status PrepareDestination();
  // SourceSession::Start with `src_config`.
  absl::Status StartSource();

  // Waits (on the session's change notifications, at most `timeout`) until `done` holds for its
  // snapshot, and returns the last snapshot seen.
  static SessionSnapshot AwaitSnapshot(Session& session,
                                       const std::function<bool(const SessionSnapshot&)>& done,
                                       absl::Duration timeout = absl::Seconds(30));
  // Waits until the session ended.
  static SessionSnapshot AwaitEnd(Session& session);
  // Every device of the source (or destination) in PRE_COPY and a round completed on each.
  static bool PrecopyRoundDone(const SessionSnapshot& s);

  // A device's state as the session's device object knows it (under the entry's mutex),
  // checked against the simulated driver's own.
  static MigState StateOf(DeviceEntry* entry);
  MigState SourceState(size_t i) { return StateOf(src_entries[i]); }
  MigState DestinationState(size_t i) { return StateOf(dst_entries[i]); }
  // Device `i` runs on the destination with the state the source saved: the VM is live there
  // (a reset device runs too, but with nothing migrated).
  bool DestinationRunsMigratedState(size_t i) {
    const MigState s = DestinationState(i);
    return (s == MigState::kRunning || s == MigState::kRunningP2P) &&
           dst_entries[i]->sim->content_digest() == src_entries[i]->sim->content_digest();
  }
  // The outcome rule's first promise: no device of the VM is live on both hosts.
  void ExpectNeverLiveOnBoth() {
    for (size_t i = 0; i < src_entries.size(); ++i) {
      SCOPED_TRACE(names[i]);
      const MigState s = SourceState(i);
      const bool source_live = s == MigState::kRunning || s == MigState::kRunningP2P;
      EXPECT_FALSE(source_live && DestinationRunsMigratedState(i))
          << "running on both hosts: source " << MigStateName(s) << ", destination "
          << MigStateName(DestinationState(i)) << " with the migrated state";
      EXPECT_NE(DestinationState(i), MigState::kResuming) << "left half-resumed";
    }
  }
  // The session holding a device ("" when none).
  static std::string ClaimOf(DeviceRegistry& registry, const std::string& name);

  transport::FakeTransport fake;
  transport::TransportSet transports;
  DeviceRegistry src_registry, dst_registry;
  std::vector<std::string> names;
  std::vector<DeviceEntry*> src_entries, dst_entries;  // Owned by the registries.
  SourceConfig src_config;
  DestinationConfig dst_config;
  std::shared_ptr<DestinationSession> dst;
  std::shared_ptr<SourceSession> src;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_SESSION_TEST_FIXTURE_H_
