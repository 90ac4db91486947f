#include "daemon/session/session_test_fixture.h"

#include <signal.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "daemon/device/sim/sim_driver.h"

namespace migmover {

SessionTest::SessionTest() {
  // A data fd whose other end went away is an error result, as in migmoverd.
  ::signal(SIGPIPE, SIG_IGN);
  transports.Add(&fake);
  for (size_t k = 0; k < src_config.token.size(); ++k) src_config.token[k] = 0xa0 + k;
  src_config.session_id = "fake-session";
  src_config.transport = &fake;
  src_config.connect_timeout = absl::Seconds(5);
  dst_config.session_id = src_config.session_id;
  dst_config.token = src_config.token;
  dst_config.transports = &transports;
  // `dst` is set before any source starts and reset only after the source is gone.
  fake.deliver = [this](const peer::Hello& hello, UniqueFd connection, absl::Time deadline) {
    if (dst == nullptr) return absl::UnavailableError("no destination session");
    return dst->AcceptStream(hello, std::move(connection), "fake", false, deadline);
  };
}

SessionTest::~SessionTest() {
  src.reset();
  dst.reset();
}

sim::SimDeviceSpec SessionTest::SmallDevice() {
  sim::SimDeviceSpec spec;
  spec.state_size = 2u << 20;
  spec.chunk_size = 256u << 10;
  return spec;
}

sim::SimDeviceSpec SessionTest::BlankLike(const sim::SimDeviceSpec& source) {
  sim::SimDeviceSpec blank;
  blank.state_size = source.state_size;
  blank.features = source.features;
  blank.seed = source.seed + 0x10000;  // Its own content: a reset one differs from a migrated one.
  return blank;
}

void SessionTest::AddDevices(int n, const sim::SimDeviceSpec& spec) {
  for (int i = 0; i < n; ++i) {
    sim::SimDeviceSpec source = spec;
    source.seed = spec.seed + names.size();  // Each device's state its own.
    AddDevice(source, BlankLike(spec));
  }
}

void SessionTest::AddDevice(const sim::SimDeviceSpec& source,
                            const sim::SimDeviceSpec& destination) {
  const std::string name = absl::StrCat("dev", names.size());
  for (bool on_source : {true, false}) {
    auto e = std::make_unique<DeviceEntry>();
    e->name = name;
    e->kind = DeviceKind::kSimulated;
    auto device = sim::OpenSimulatedDevice(on_source ? source : destination, &e->sim);
    ASSERT_TRUE(device.ok()) << device.status();
    e->device = std::move(*device);
    (on_source ? src_entries : dst_entries).push_back(e.get());
    ASSERT_TRUE((on_source ? src_registry : dst_registry).Add(std::move(e)).ok());
  }
  names.push_back(name);
  src_config.devices = names;
  dst_config.devices = names;
}

absl::Status SessionTest::PrepareDestination() {
  absl::StatusOr<std::shared_ptr<DestinationSession>> d =
      DestinationSession::Prepare(dst_config, &dst_registry);
  if (!d.ok()) return d.status();
  dst = std::move(*d);
  return absl::OkStatus();
}

absl::Status SessionTest::StartSource() {
  absl::StatusOr<std::shared_ptr<SourceSession>> s =
      SourceSession::Start(src_config, &src_registry);
  if (!s.ok()) return s.status();
  src = std::move(*s);
  return absl::OkStatus();
}

SessionSnapshot SessionTest::AwaitSnapshot(Session& session,
                                           const std::function<bool(const SessionSnapshot&)>& done,
                                           absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  SessionSnapshot s = session.Snapshot();
  while (!done(s) && absl::Now() < deadline) {
    s = session.WaitForChange(s.version, deadline - absl::Now());
  }
  return s;
}

SessionSnapshot SessionTest::AwaitEnd(Session& session) {
  session.Join();
  return AwaitSnapshot(session, [](const SessionSnapshot& s) { return IsFinal(s.phase); });
}

bool SessionTest::PrecopyRoundDone(const SessionSnapshot& s) {
  if (s.precopy_rounds < 1) return false;
  for (const DeviceSnapshot& d : s.devices) {
    if (d.state != "PRE_COPY") return false;
  }
  return true;
}

MigState SessionTest::StateOf(DeviceEntry* entry) {
  absl::MutexLock l(&entry->mu);
  const MigState known = entry->device->last_known_state();
  EXPECT_EQ(entry->sim->state(), known)
      << entry->name << ": the device object and the simulated driver disagree";
  return known;
}

std::string SessionTest::ClaimOf(DeviceRegistry& registry, const std::string& name) {
  absl::StatusOr<DeviceInfo> info = registry.Info(name);
  EXPECT_TRUE(info.ok()) << info.status();
  return info.ok() ? info->session_id : "?";
}

}  // namespace migmover
