// Many migrations at once on one pair of daemons: 32 concurrent sessions byte-exact under a
// host-wide bandwidth cap (--max_bandwidth) shared fairly, a slow and a failing session among
// them, and admission by memory (--max_memory).
#include <algorithm>
#include <iostream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/integration/two_daemons.h"

namespace migmover::testing {
namespace {

constexpr uint64_t kHostCap = 48'000'000;  // Bytes per second, all sessions together.
constexpr int kSessions = 32;

class ManySessions : public TwoDaemons {
 protected:
  ManySessions() {
    src_flags_.push_back(absl::StrCat("--max_bandwidth=", kHostCap));
    // Small frames, so each session's share (1.5 MB/s) is many frames a second.
    src_flags_.push_back("--chunk_size=65536");
    dst_flags_.push_back("--chunk_size=65536");
  }

  // Sum of bytes moved by every source session, and each one's, at one instant.
  struct Sample {
    absl::Time at;
    std::map<std::string, SessionStatus> sessions;
    uint64_t total = 0;
  };
  Sample TakeSample() {
    Sample out;
    grpc::ClientContext ctx;
    v1::ListSessionsResponse resp;
    const absl::Time before = absl::Now();
    grpc::Status st = src_->stub()->ListSessions(&ctx, v1::ListSessionsRequest(), &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    // The snapshots are taken while the call runs: its midpoint is their time.
    out.at = before + (absl::Now() - before) / 2;
    for (const auto& s : resp.sessions()) {
      out.total += s.bytes_moved();
      out.sessions[s.session_id()] = s;
    }
    return out;
  }

  grpc::Status StartCapped(const std::string& id, uint64_t cap) {
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id(id);
    req.add_devices(id);
    req.set_peer(dst_->peer_address());
    req.set_precopy(false);
    req.set_token(SecretOf(id));
    req.set_bandwidth_bytes_per_second(cap);
    SessionStatus out;
    return src_->stub()->StartSource(&ctx, req, &out);
  }
};

// 30 sessions of 16 MiB, one of them capped at 1 MB/s by its own cap, one whose source device
// corrupts its stream (it fails, by the commit rule); all 32 switch over at once. While the 30
// all move, the sum of every session's bytes stays within 5% of the host cap (measured over 3 s),
// each of the 30 gets an equal part, the capped one keeps its cap; every session but the
// corrupted one ends byte-exact (the destination's device checked every byte and committed), and
// the corrupted one ends FAILED on both sides, its source device RUNNING and its destination's
// reset (a reset device is RUNNING, with no state), never left in RESUMING.
TEST_F(ManySessions, ThirtyTwoSessionsShareTheHostCapFairlyAndEndByteExact) {
  std::vector<std::string> ids;
  for (int i = 0; i < kSessions; ++i) ids.push_back(absl::StrCat("s", i));
  const std::string slow = ids[0], bad = ids[1];
  for (const std::string& id : ids) {
    const std::string spec = id == slow ? "size=4MiB" : "size=16MiB";
    ASSERT_TRUE(Attach(*src_, id, absl::StrCat(spec, ",seed=", id.size() + id.back(),
                                               id == bad ? ",corrupt_at=5000000" : ""))
                    .ok());
    ASSERT_TRUE(Attach(*dst_, id, spec).ok());
    ASSERT_TRUE(Prepare(id, {id}).ok()) << id;
    ASSERT_TRUE(StartCapped(id, id == slow ? 1'000'000 : 0).ok()) << id;
  }
  for (const std::string& id : ids) ASSERT_TRUE(Switchover(id).ok()) << id;

  // Measure once every one of the 30 has moved something, and while none has ended.
  std::vector<std::string> fair(ids.begin() + 2, ids.end());
  Sample first;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  for (;;) {
    first = TakeSample();
    bool all_moving = true;
    for (const std::string& id : fair) all_moving &= first.sessions[id].bytes_moved() > 0;
    if (all_moving) break;
    ASSERT_LT(absl::Now(), deadline) << "not every session started moving within 30 s";
    absl::SleepFor(absl::Milliseconds(50));
  }
  absl::SleepFor(absl::Seconds(3));  // The measurement window, not a wait for an event.
  const Sample second = TakeSample();
  const double seconds = absl::ToDoubleSeconds(second.at - first.at);
  for (const std::string& id : fair) {
    ASSERT_FALSE(Final(second.sessions.at(id)))
        << id << " ended inside the window: the measurement would not be under contention";
  }
  const double sum = static_cast<double>(second.total - first.total) / seconds;
  std::cout << "host cap " << kHostCap << " B/s, " << kSessions << " sessions moved "
            << static_cast<uint64_t>(sum) << " B/s together over " << seconds << " s: "
            << sum / kHostCap << " of the cap\n";
  RecordProperty("host_cap_ratio", absl::StrCat(sum / kHostCap));
  EXPECT_LE(sum, 1.05 * kHostCap) << "the host cap did not hold";
  // An overloaded machine may deliver less than the cap, never more; far less is a bug.
  EXPECT_GE(sum, 0.5 * kHostCap) << "the sessions together got far less than the cap";

  std::vector<double> parts;
  std::string each;
  for (const std::string& id : fair) {
    parts.push_back(static_cast<double>(second.sessions.at(id).bytes_moved() -
                                        first.sessions.at(id).bytes_moved()) /
                    seconds);
    absl::StrAppend(&each, " ", id, "=", static_cast<uint64_t>(parts.back()));
  }
  const double mean = std::accumulate(parts.begin(), parts.end(), 0.0) / parts.size();
  const auto [lo, hi] = std::minmax_element(parts.begin(), parts.end());
  std::cout << "equal sessions: mean " << mean << " B/s, least " << *lo << ", most " << *hi
            << "; each:" << each << "\n";
  EXPECT_GT(*lo, 0.6 * mean) << "a session got far less than an equal part";
  EXPECT_LT(*hi, 1.4 * mean) << "a session got far more than an equal part";
  const SessionStatus& slow_now = second.sessions.at(slow);
  if (!Final(slow_now)) {
    const double slow_rate =
        static_cast<double>(slow_now.bytes_moved() - first.sessions.at(slow).bytes_moved()) /
        seconds;
    EXPECT_LE(slow_rate, 1.05 * 1'000'000) << "the session's own cap did not hold";
  }

  for (const std::string& id : ids) {
    const SessionStatus s = WaitFinal(*src_, id, 120);
    const SessionStatus d = WaitFinal(*dst_, id, 120);
    if (id == bad) {
      EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
      EXPECT_EQ(d.phase(), SessionStatus::FAILED) << d.DebugString();
      EXPECT_EQ(StateOf(*src_, id), "RUNNING");
      EXPECT_EQ(StateOf(*dst_, id), "RUNNING") << "reset, not left half-resumed";
      continue;
    }
    EXPECT_TRUE(BothSucceeded(s, d)) << id;
    EXPECT_EQ(d.bytes_moved(), s.bytes_moved()) << id;
  }

  // The 32 stay queryable (--session_retention_s) but hold no part of the cap: one session
  // alone now gets all of it.
  ASSERT_TRUE(Attach(*src_, "alone", "size=48MiB,seed=3").ok());
  ASSERT_TRUE(Attach(*dst_, "alone", "size=48MiB").ok());
  ASSERT_TRUE(Prepare("alone", {"alone"}).ok());
  ASSERT_TRUE(StartCapped("alone", 0).ok());
  ASSERT_TRUE(Switchover("alone").ok());
  const SessionStatus alone = WaitFinal(*src_, "alone", 60);
  ASSERT_EQ(alone.phase(), SessionStatus::SUCCEEDED) << alone.DebugString();
  const double alone_rate = static_cast<double>(alone.bytes_moved()) / alone.stop_copy_seconds();
  std::cout << "one session after the 32 ended: " << alone_rate / kHostCap << " of the cap\n";
  EXPECT_GT(alone_rate, 0.85 * kHostCap) << "ended sessions still hold part of the host's cap";
  EXPECT_LT(alone_rate, 1.05 * kHostCap);
}

class SmallMemory : public TwoDaemons {
 protected:
  SmallMemory() {
    src_flags_.push_back("--max_memory=64MiB");
    dst_flags_.push_back("--max_memory=64MiB");
  }
  v1::DaemonInfo::Limits LimitsOf(DaemonProcess& d) {
    grpc::ClientContext ctx;
    v1::DaemonInfo info;
    EXPECT_TRUE(d.stub()->GetDaemonInfo(&ctx, v1::GetDaemonInfoRequest(), &info).ok());
    return info.limits();
  }
};

// A simulated device's bookkeeping grows with size/chunk: one that would not fit is refused
// before anything is allocated, and the daemon has no device more.
TEST_F(SmallMemory, ADeviceWhoseBookkeepingWouldNotFitIsResourceExhausted) {
  EXPECT_EQ(LimitsOf(*src_).max_memory_bytes(), 64u << 20);
  grpc::Status st = Attach(*src_, "huge", "size=1TiB,chunk=64");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("--max_memory"), std::string::npos) << st.error_message();
  EXPECT_EQ(StateOf(*src_, "huge"), "<missing>");
  EXPECT_EQ(LimitsOf(*src_).memory_in_use_bytes(), 0u);
  // A taken name is ALREADY_EXISTS, even when a second copy would not fit either.
  ASSERT_TRUE(Attach(*src_, "big", "size=320MiB,chunk=64").ok());
  st = Attach(*src_, "big", "size=320MiB,chunk=64");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS) << st.error_message();
  grpc::ClientContext detach_ctx;
  v1::DetachDeviceRequest detach;
  detach.set_name("big");
  v1::Device detached;
  ASSERT_TRUE(src_->stub()->DetachDevice(&detach_ctx, detach, &detached).ok());
  // What fits is charged while attached and given back on detach.
  ASSERT_TRUE(Attach(*src_, "d", "size=64MiB,chunk=4KiB").ok());
  const uint64_t held = LimitsOf(*src_).memory_in_use_bytes();
  EXPECT_GE(held, (64u << 20) / 4096 * 8);
  grpc::ClientContext ctx;
  v1::DetachDeviceRequest req;
  req.set_name("d");
  v1::Device out;
  ASSERT_TRUE(src_->stub()->DetachDevice(&ctx, req, &out).ok());
  EXPECT_EQ(LimitsOf(*src_).memory_in_use_bytes(), 0u);
}

// A session whose stream buffers would pass the budget is refused (its devices stay free); once
// an admitted session ends, its memory is free for the next.
TEST_F(SmallMemory, ASessionWhoseBuffersWouldNotFitIsRefusedAndEndedSessionsGiveTheirsBack) {
  for (const char* d : {"a", "b", "c"}) {
    ASSERT_TRUE(Attach(*src_, d, "size=4MiB").ok());
    ASSERT_TRUE(Attach(*dst_, d, "size=4MiB").ok());
  }
  // 16 MiB frames: 5 x 16 MiB per connection, 3 devices: far past 64 MiB.
  ASSERT_TRUE(Prepare("big", {"a", "b", "c"}).ok());
  {
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id("big");
    for (const char* d : {"a", "b", "c"}) req.add_devices(d);
    req.set_peer(dst_->peer_address());
    req.set_token(SecretOf("big"));
    req.mutable_options()->set_chunk_size(16u << 20);
    req.mutable_options()->set_streams(1);
    SessionStatus out;
    grpc::Status st = src_->stub()->StartSource(&ctx, req, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    EXPECT_NE(st.error_message().find("session 'big'"), std::string::npos) << st.error_message();
  }
  EXPECT_EQ(StateOf(*src_, "a"), "RUNNING");
  ASSERT_TRUE(Cancel(*dst_, "big").ok());
  WaitFinal(*dst_, "big");

  // The daemon's own frames fit; after the session ends, only the devices hold memory.
  const uint64_t devices_only = LimitsOf(*src_).memory_in_use_bytes();
  ASSERT_TRUE(Prepare("ok", {"a", "b", "c"}).ok());
  ASSERT_TRUE(Start("ok", {"a", "b", "c"}, /*precopy=*/false).ok());
  EXPECT_GT(LimitsOf(*src_).memory_in_use_bytes(), devices_only);
  auto [s, d] = SwitchoverAndWait("ok");
  EXPECT_TRUE(BothSucceeded(s, d));
  EXPECT_EQ(LimitsOf(*src_).memory_in_use_bytes(), devices_only);
}

}  // namespace
}  // namespace migmover::testing
