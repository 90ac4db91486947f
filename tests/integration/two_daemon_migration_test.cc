// Two real migmoverd processes on loopback, driven over their gRPC and fd-intake sockets as a
// hypervisor agent would. Simulated devices verify every byte they receive (stream digest and
// final state digest), so "verified" below means byte-exact.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "daemon/intake/fd_intake.h"
#include "daemon/testing/daemon_process.h"
#include "transport/net/socket.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/two_daemons.h"

namespace migmover {
namespace {

using testing::DaemonProcess;
using testing::TwoDaemons;
using v1::SessionStatus;

struct PathCase {
  std::string data_path;
  bool precopy;
  std::string save_fd = "pipe";  // The simulated source's data fd: pipe, or mtty-like file.
  int streams = 1;               // Connections per device.
};

class MigrationMatrix : public TwoDaemons, public ::testing::WithParamInterface<PathCase> {};

TEST_P(MigrationMatrix, TwoDevicesMoveByteExact) {
  const PathCase& c = GetParam();
  const std::string id =
      absl::StrCat("m-", c.data_path, c.precopy ? "-pre-" : "-nopre-", c.save_fd, "-", c.streams);
  // Device 0 dirties state while running, device 1 has a small initial chunk.
  const std::vector<std::string> specs = {
      "size=48MiB,chunk=128KiB,seed=11,dirty_rate=64MiB,save_fd=" + c.save_fd,
      "size=24MiB,chunk=64KiB,seed=12,initial=4MiB,save_fd=" + c.save_fd};
  std::vector<std::string> names;
  for (size_t i = 0; i < specs.size(); ++i) {
    names.push_back(absl::StrCat("dev", i));
    ASSERT_TRUE(Attach(*src_, names[i], specs[i]).ok());
    ASSERT_TRUE(Attach(*dst_, names[i], specs[i].substr(0, specs[i].find(','))).ok());
  }
  ASSERT_TRUE(Prepare(id, names, c.data_path).ok());
  EXPECT_EQ(StateOf(*dst_, "dev0"), "RESUMING");
  grpc::Status started = Start(id, names, c.precopy, c.data_path, "", "", c.streams);
  ASSERT_TRUE(started.ok()) << started.error_message();
  if (c.precopy) {
    SessionStatus s = WatchUntilRounds(id, 1);
    EXPECT_GE(s.precopy_rounds(), 1u) << s.DebugString();
    EXPECT_EQ(s.phase(), SessionStatus::PRE_COPY);
    EXPECT_EQ(StateOf(*src_, "dev0"), "PRE_COPY");
  } else {
    absl::SleepFor(absl::Milliseconds(100));
    EXPECT_EQ(StateOf(*src_, "dev0"), "RUNNING");
  }
  auto [s, d] = SwitchoverAndWait(id);
  ASSERT_TRUE(BothSucceeded(s, d));
  EXPECT_EQ(s.bytes_moved(), d.bytes_moved());
  EXPECT_GT(s.bytes_moved(), (48u + 24u) << 20);
  if (c.precopy) {
    EXPECT_GT(s.precopy_bytes(), 0u);
  } else {
    EXPECT_EQ(s.precopy_bytes(), 0u);
  }
  EXPECT_GT(s.stop_copy_seconds(), 0);
  for (int i = 0; i < 2; ++i) {
    // Striped streams are put back in order in buffers: the destination copies.
    const std::string dst_path = c.streams > 1 ? "copy" : c.data_path;
    EXPECT_EQ(d.devices(i).data_path(), dst_path) << d.DebugString();
    EXPECT_EQ(s.devices(i).data_path(), c.data_path) << s.DebugString();
    EXPECT_EQ(d.devices(i).digest_checked(), c.data_path == "copy");
    EXPECT_TRUE(d.devices(i).committed());
    const std::string transport = c.streams > 1 ? "tcp x " + std::to_string(c.streams) : "tcp";
    EXPECT_EQ(s.devices(i).transport(), transport);
    EXPECT_EQ(d.devices(i).transport(), transport);
  }
  // Where a hypervisor expects them: source stopped, destination running the new state.
  EXPECT_EQ(StateOf(*src_, "dev0"), "STOP");
  EXPECT_EQ(StateOf(*src_, "dev1"), "STOP");
  EXPECT_EQ(StateOf(*dst_, "dev0"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "dev1"), "RUNNING");
}

INSTANTIATE_TEST_SUITE_P(
    DataPaths, MigrationMatrix,
    ::testing::Values(PathCase{"copy", true}, PathCase{"copy", false}, PathCase{"splice", true},
                      PathCase{"splice", false}, PathCase{"copy", true, "file"},
                      PathCase{"splice", true, "file"}, PathCase{"copy", true, "pipe", 3},
                      PathCase{"splice", false, "pipe", 2}),
    [](const auto& info) {
      return info.param.data_path + (info.param.precopy ? "_precopy" : "_no_precopy") + "_" +
             info.param.save_fd + "_fd_" + std::to_string(info.param.streams) + "_streams";
    });

TEST_F(TwoDaemons, ManyDevicesStripedAtOnce) {
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) {
    names.push_back(absl::StrCat("many", i));
    const std::string size = absl::StrCat(2 + 3 * i, "MiB");
    ASSERT_TRUE(Attach(*src_, names.back(),
                       absl::StrCat("size=", size, ",chunk=64KiB,seed=", 40 + i,
                                    i % 2 ? ",dirty_rate=32MiB" : ""))
                    .ok());
    ASSERT_TRUE(Attach(*dst_, names.back(), "size=" + size).ok());
  }
  ASSERT_TRUE(Prepare("many", names, "copy").ok());
  ASSERT_TRUE(Start("many", names, true, "copy", "", "", 3).ok());
  WatchUntilRounds("many", 1);
  auto [s, d] = SwitchoverAndWait("many");
  ASSERT_TRUE(BothSucceeded(s, d));
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(d.devices(i).digest_checked()) << i;
    EXPECT_EQ(StateOf(*src_, names[i]), "STOP");
    EXPECT_EQ(StateOf(*dst_, names[i]), "RUNNING");
  }
}

TEST_F(TwoDaemons, SharedPumpWorkersMoveSeveralDevices) {
  std::vector<std::string> names = {"w0", "w1", "w2"};
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(Attach(*src_, names[i],
                       absl::StrCat("size=", 4 + 4 * i, "MiB,seed=", 70 + i, ",dirty_rate=16MiB"))
                    .ok());
    ASSERT_TRUE(Attach(*dst_, names[i], absl::StrCat("size=", 4 + 4 * i, "MiB")).ok());
  }
  ASSERT_TRUE(Prepare("workers", names, "copy").ok());
  {
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id("workers");
    for (const auto& n : names) req.add_devices(n);
    req.set_peer(dst_->peer_address());
    req.set_token(SecretOf("workers"));
    req.mutable_options()->set_data_path("copy");
    req.mutable_options()->set_workers(1);  // All three devices' data on one thread.
    req.mutable_options()->set_streams(2);
    SessionStatus out;
    ASSERT_TRUE(src_->stub()->StartSource(&ctx, req, &out).ok());
  }
  WatchUntilRounds("workers", 1);
  auto [s, d] = SwitchoverAndWait("workers");
  ASSERT_EQ(s.phase(), SessionStatus::SUCCEEDED) << s.DebugString();
  EXPECT_TRUE(d.verified()) << d.DebugString();
  for (const auto& n : names) EXPECT_EQ(StateOf(*dst_, n), "RUNNING");
}

// The host's pump workers are shared by all of its sessions: four concurrent sessions on a
// daemon started with --workers=2 run on those two threads (with a worker per session, four),
// and all four migrate exactly.
class SharedPumps : public TwoDaemons {
 protected:
  SharedPumps() {
    src_flags_.push_back("--workers=2");
    dst_flags_.push_back("--workers=2");
  }

  static int PumpThreads(pid_t pid) {
    int n = 0;
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(
             absl::StrCat("/proc/", pid, "/task"), ec)) {
      std::ifstream comm(t.path() / "comm");
      std::string name;
      std::getline(comm, name);
      n += name == "mm-pump-worker";
    }
    return n;
  }
};

TEST_F(SharedPumps, ConcurrentSessionsRunOnTheHostsPumpWorkers) {
  EXPECT_EQ(PumpThreads(src_->pid()), 2);  // Started with the daemon, before any session.
  const std::vector<std::string> ids = {"p0", "p1", "p2", "p3"};
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(Attach(*src_, ids[i], absl::StrCat("size=4MiB,seed=", 90 + i,
                                                  ",dirty_rate=16MiB")).ok());
    ASSERT_TRUE(Attach(*dst_, ids[i], "size=4MiB").ok());
    ASSERT_TRUE(Prepare(ids[i], {ids[i]}, "copy").ok());
    ASSERT_TRUE(Start(ids[i], {ids[i]}, true, "copy").ok());
  }
  // Every session is moving PRE_COPY data now, each on one of the two threads.
  for (const auto& id : ids) WatchUntilRounds(id, 1);
  EXPECT_EQ(PumpThreads(src_->pid()), 2);
  for (const auto& id : ids) {
    auto [s, d] = SwitchoverAndWait(id);
    EXPECT_TRUE(BothSucceeded(s, d)) << id;
    EXPECT_TRUE(d.verified()) << id;
    EXPECT_EQ(StateOf(*dst_, id), "RUNNING") << id;
  }
}

TEST_F(TwoDaemons, ShortReadsAndWritesStillExact) {
  ASSERT_TRUE(Attach(*src_, "d", "size=4MiB,chunk=16KiB,short_io=1").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=4MiB,short_io=1").ok());
  ASSERT_TRUE(Prepare("short", {"d"}, "copy").ok());
  ASSERT_TRUE(Start("short", {"d"}, true, "copy").ok());
  WatchUntilRounds("short", 1);
  ASSERT_TRUE(Switchover("short").ok());
  EXPECT_EQ(WaitFinal(*src_, "short").phase(), SessionStatus::SUCCEEDED);
  EXPECT_TRUE(WaitFinal(*dst_, "short").verified());
}

// Connections that never say HELLO (a port scanner, a half-open peer) must not hold up a real
// source's handshake: handshakes are served concurrently. The destination gives each silent
// connection 5 s; the migration completes while all of them are still open and unanswered,
// which a listener that served them one at a time (5 s each, the source giving up after 10 s)
// could not do.
TEST_F(TwoDaemons, SilentPeerConnectionsDoNotDelayAnotherSessionsHandshake) {
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 3; ++i) {
    auto addr = net::ParseHostPort(dst_->peer_address());
    ASSERT_TRUE(addr.ok()) << addr.status();
    auto c = net::TcpConnect(*addr, absl::Seconds(2));
    ASSERT_TRUE(c.ok()) << c.status();
    silent.push_back(std::move(*c));
  }
  ASSERT_TRUE(Attach(*src_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("past-silent", {"d"}).ok());
  ASSERT_TRUE(Start("past-silent", {"d"}, false).ok());
  auto [s, d] = SwitchoverAndWait("past-silent");
  ASSERT_TRUE(BothSucceeded(s, d));
  for (const UniqueFd& c : silent) {
    char byte;
    // Still open and unanswered: nothing to read yet, no end of stream.
    EXPECT_EQ(::recv(c.get(), &byte, 1, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, EAGAIN);
  }
}

TEST_F(TwoDaemons, FailedResumeFailsBothSidesAndSourceRunsAgain) {
  ASSERT_TRUE(Attach(*src_, "d", "size=8MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=8MiB,fail_arc=RESUMING:STOP:EIO").ok());
  ASSERT_TRUE(Prepare("bad-commit", {"d"}).ok());
  ASSERT_TRUE(Start("bad-commit", {"d"}, true).ok());
  WatchUntilRounds("bad-commit", 1);
  auto [s, d] = SwitchoverAndWait("bad-commit");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED);
  EXPECT_EQ(d.phase(), SessionStatus::FAILED);
  EXPECT_FALSE(d.verified());
  EXPECT_NE(s.error().find("RESUMING->STOP"), std::string::npos) << s.error();
  EXPECT_NE(s.error().find("EIO"), std::string::npos) << s.error();
  EXPECT_NE(d.error().find("RESUMING->STOP"), std::string::npos) << d.error();
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");  // Reset, not left in RESUMING.
}

TEST_F(TwoDaemons, OneDeviceFailingFailsTheWholeMigration) {
  // Device a is small and commits first; device b then fails its commit. The VM stays on the
  // source, so every source device must run again and no destination device keeps the state.
  ASSERT_TRUE(Attach(*src_, "a", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*src_, "b", "size=16MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "a", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "b", "size=16MiB,fail_arc=RESUMING:STOP:EIO").ok());
  ASSERT_TRUE(Prepare("one-bad", {"a", "b"}).ok());
  ASSERT_TRUE(Start("one-bad", {"a", "b"}, false).ok());
  auto [s, d] = SwitchoverAndWait("one-bad");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED);
  EXPECT_EQ(d.phase(), SessionStatus::FAILED);
  EXPECT_FALSE(d.verified());
  for (const char* dev : {"a", "b"}) {
    EXPECT_EQ(StateOf(*src_, dev), "RUNNING") << dev;
    EXPECT_EQ(StateOf(*dst_, dev), "RUNNING") << dev;
  }
}

TEST_F(TwoDaemons, CorruptedStreamIsRejectedAndSourceRunsAgain) {
  ASSERT_TRUE(Attach(*src_, "d", "size=8MiB,corrupt_at=3000000").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=8MiB").ok());
  ASSERT_TRUE(Prepare("corrupt", {"d"}, "copy").ok());
  ASSERT_TRUE(Start("corrupt", {"d"}, false, "copy").ok());
  auto [s, d] = SwitchoverAndWait("corrupt");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED);
  EXPECT_EQ(d.phase(), SessionStatus::FAILED);
  EXPECT_NE(s.error().find("destination"), std::string::npos) << s.error();
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");
}

TEST_F(TwoDaemons, SourceArcFailureReturnsDeviceToRunning) {
  ASSERT_TRUE(Attach(*src_, "d", "size=8MiB,fail_arc=PRE_COPY_P2P:STOP_COPY:ENOMEM").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=8MiB").ok());
  ASSERT_TRUE(Prepare("bad-arc", {"d"}).ok());
  ASSERT_TRUE(Start("bad-arc", {"d"}, true).ok());
  WatchUntilRounds("bad-arc", 1);
  ASSERT_TRUE(Switchover("bad-arc").ok());
  SessionStatus s = WaitFinal(*src_, "bad-arc");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED);
  EXPECT_NE(s.error().find("PRE_COPY_P2P->STOP_COPY"), std::string::npos) << s.error();
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");
  SessionStatus d = WaitFinal(*dst_, "bad-arc");
  EXPECT_EQ(d.phase(), SessionStatus::FAILED);
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");
}

TEST_F(TwoDaemons, CancelDuringPrecopyRestoresBothSides) {
  ASSERT_TRUE(Attach(*src_, "d", "size=8MiB,dirty_rate=16MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=8MiB").ok());
  ASSERT_TRUE(Prepare("cancel", {"d"}).ok());
  ASSERT_TRUE(Start("cancel", {"d"}, true).ok());
  WatchUntilRounds("cancel", 1);
  {
    grpc::ClientContext ctx;
    v1::CancelSessionRequest req;
    req.set_session_id("cancel");
    SessionStatus out;
    ASSERT_TRUE(src_->stub()->CancelSession(&ctx, req, &out).ok());
  }
  EXPECT_EQ(WaitFinal(*src_, "cancel").phase(), SessionStatus::CANCELLED);
  EXPECT_NE(WaitFinal(*dst_, "cancel").phase(), SessionStatus::SUCCEEDED);
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");
  // Cancel is idempotent.
  grpc::ClientContext ctx;
  v1::CancelSessionRequest req;
  req.set_session_id("cancel");
  SessionStatus out;
  EXPECT_TRUE(src_->stub()->CancelSession(&ctx, req, &out).ok());
  EXPECT_EQ(out.phase(), SessionStatus::CANCELLED);
}

TEST_F(TwoDaemons, DataFdModeOverFdIntakeMovesAnyStream) {
  // The agent runs the FSM itself and hands the daemons plain stream fds (pipes here).
  auto in = MakePipe();
  auto out = MakePipe();
  ASSERT_TRUE(in.ok() && out.ok());
  auto h_src = SendFdToIntake(src_->fd_socket(), FdPurpose::kSaveData, in->read.get());
  auto h_dst = SendFdToIntake(dst_->fd_socket(), FdPurpose::kResumeData, out->write.get());
  ASSERT_TRUE(h_src.ok()) << h_src.status();
  ASSERT_TRUE(h_dst.ok()) << h_dst.status();
  in->read.Reset();
  out->write.Reset();
  ASSERT_TRUE(AttachHandle(*src_, "stream", *h_src).ok());
  ASSERT_TRUE(AttachHandle(*dst_, "stream", *h_dst).ok());
  // A handle is good for one attach.
  EXPECT_EQ(AttachHandle(*src_, "again", *h_src).error_code(), grpc::StatusCode::NOT_FOUND);

  std::vector<uint8_t> data(5 << 20 | 321);
  std::mt19937 rng(7);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  // The VMM writes its stream; the agent says Switchover before the VMM's end-of-file, which
  // then completes the stream.
  absl::Notification switched;
  std::thread writer([&] {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(in->write.get(), data.data() + off, data.size() - off);
      if (n <= 0) break;
      off += n;
    }
    switched.WaitForNotification();
    in->write.Reset();
  });
  std::vector<uint8_t> got;
  std::thread reader([&] {
    std::vector<uint8_t> buf(1 << 16);
    ssize_t n;
    while ((n = ::read(out->read.get(), buf.data(), buf.size())) > 0) {
      got.insert(got.end(), buf.data(), buf.data() + n);
    }
  });
  ASSERT_TRUE(Prepare("fds", {"stream"}, "copy").ok());
  ASSERT_TRUE(Start("fds", {"stream"}, true, "copy").ok());
  grpc::Status sw = Switchover("fds");
  switched.Notify();
  ASSERT_TRUE(sw.ok()) << sw.error_message();
  SessionStatus s = WaitFinal(*src_, "fds");
  SessionStatus d = WaitFinal(*dst_, "fds");
  writer.join();
  reader.join();
  EXPECT_EQ(s.phase(), SessionStatus::SUCCEEDED) << s.DebugString();
  EXPECT_EQ(d.phase(), SessionStatus::SUCCEEDED) << d.DebugString();
  EXPECT_TRUE(d.devices(0).digest_checked());
  EXPECT_EQ(got, data);
}

// A VMM that gives up closes its save-data fd halfway. Before the agent's Switchover that
// end-of-file is not the end of the stream: both sessions fail, the destination's device
// never sees a "complete" stream, and each daemon closes the agent's data fd at once, so the
// VMM on either side sees the end (EPIPE for the writer, end-of-file for the reader).
TEST_F(TwoDaemons, DataFdEndOfFileBeforeSwitchoverFailsTheMigration) {
  auto in = MakePipe();
  auto out = MakePipe();
  ASSERT_TRUE(in.ok() && out.ok());
  auto h_src = SendFdToIntake(src_->fd_socket(), FdPurpose::kSaveData, in->read.get());
  auto h_dst = SendFdToIntake(dst_->fd_socket(), FdPurpose::kResumeData, out->write.get());
  ASSERT_TRUE(h_src.ok() && h_dst.ok());
  in->read.Reset();
  out->write.Reset();
  ASSERT_TRUE(AttachHandle(*src_, "half", *h_src).ok());
  ASSERT_TRUE(AttachHandle(*dst_, "half", *h_dst).ok());
  const std::string part(300000, 'v');
  ASSERT_EQ(::write(in->write.get(), part.data(), 65536), 65536);
  std::thread reader([&] {
    std::vector<uint8_t> buf(1 << 16);
    while (::read(out->read.get(), buf.data(), buf.size()) > 0) {
    }
  });
  ASSERT_TRUE(Prepare("half", {"half"}, "copy").ok());
  ASSERT_TRUE(Start("half", {"half"}, true, "copy").ok());
  in->write.Reset();  // The VMM gave up.
  SessionStatus s = WaitFinal(*src_, "half");
  SessionStatus d = WaitFinal(*dst_, "half");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_NE(s.error().find("before Switchover"), std::string::npos) << s.error();
  EXPECT_EQ(d.phase(), SessionStatus::FAILED) << d.DebugString();
  EXPECT_FALSE(d.devices(0).committed());
  reader.join();  // The destination closed its end: the reader saw end-of-file.
  // A new session with the same (closed) fd is refused, saying why.
  grpc::Status again = Prepare("half2", {"half"}, "copy");
  EXPECT_EQ(again.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << again.error_message();
  EXPECT_NE(again.error_message().find("closed"), std::string::npos) << again.error_message();
}

// The agent's save-data fd is closed by the daemon once its session failed: a VMM still
// writing sees EPIPE instead of blocking forever.
TEST_F(TwoDaemons, ADataFdWriterSeesTheEndWhenTheMigrationFails) {
  auto in = MakePipe();
  ASSERT_TRUE(in.ok());
  auto h_src = SendFdToIntake(src_->fd_socket(), FdPurpose::kSaveData, in->read.get());
  ASSERT_TRUE(h_src.ok());
  in->read.Reset();
  ASSERT_TRUE(AttachHandle(*src_, "w", *h_src).ok());
  // No destination session: the source's stream is refused, the session fails.
  ASSERT_TRUE(Start("nowhere", {"w"}, true, "copy").ok());
  SessionStatus s = WaitFinal(*src_, "nowhere");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  ::signal(SIGPIPE, SIG_IGN);
  char byte = 'x';
  EXPECT_EQ(::write(in->write.get(), &byte, 1), -1);
  EXPECT_EQ(errno, EPIPE) << "the daemon still holds the save-data fd open";
}

TEST_F(TwoDaemons, BandwidthCapAppliesAndChangesWhileRunning) {
  ASSERT_TRUE(Attach(*src_, "d", "size=32MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=32MiB").ok());
  ASSERT_TRUE(Prepare("capped", {"d"}, "copy").ok());
  {
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id("capped");
    req.add_devices("d");
    req.set_peer(dst_->peer_address());
    req.set_token(SecretOf("capped"));
    req.set_bandwidth_bytes_per_second(8u << 20);
    req.mutable_options()->set_data_path("copy");
    SessionStatus out;
    ASSERT_TRUE(src_->stub()->StartSource(&ctx, req, &out).ok());
    EXPECT_EQ(out.bandwidth_bytes_per_second(), 8u << 20);
  }
  absl::SleepFor(absl::Milliseconds(500));
  SessionStatus s = Get(*src_, "capped");
  // Half a second at 8 MiB/s (plus the burst allowance): far from the 32 MiB an uncapped
  // stream would have moved by now.
  EXPECT_LT(s.bytes_moved(), 6u << 20) << s.DebugString();
  EXPECT_GT(s.bytes_moved(), 0u);
  {
    grpc::ClientContext ctx;
    v1::SetBandwidthRequest req;
    req.set_session_id("capped");
    req.set_bytes_per_second(0);
    SessionStatus out;
    ASSERT_TRUE(src_->stub()->SetBandwidth(&ctx, req, &out).ok());
    EXPECT_EQ(out.bandwidth_bytes_per_second(), 0u);
  }
  WatchUntilRounds("capped", 1);
  ASSERT_TRUE(Switchover("capped").ok());
  EXPECT_EQ(WaitFinal(*src_, "capped", 30).phase(), SessionStatus::SUCCEEDED);
  EXPECT_TRUE(WaitFinal(*dst_, "capped").verified());
}

TEST_F(TwoDaemons, BadRequestsGetClearErrors) {
  ASSERT_TRUE(Attach(*src_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=1MiB").ok());
  EXPECT_EQ(Attach(*src_, "d", "size=1MiB").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Attach(*src_, "bad name", "size=1MiB").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Attach(*src_, "e", "size=lots").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Start("x", {"nope"}, true).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Start("x", {"d"}, true, "", "", "no-port").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Start("x", {"d"}, true, "warp").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext ctx;
    v1::GetSessionRequest req;
    req.set_session_id("x");
    SessionStatus out;
    EXPECT_EQ(src_->stub()->GetSession(&ctx, req, &out).error_code(),
              grpc::StatusCode::NOT_FOUND);  // Refused requests create no session.
  }

  // A source needs the session's secret, 16 to 32 bytes.
  EXPECT_EQ(Start("x", {"d"}, true, "", "short").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Prepare("x", {"d"}, "", "short").error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The source names a session the destination does not know: refused at the handshake, with
  // the answer a wrong secret gets (PeerAuth tests that the two are identical).
  ASSERT_TRUE(Start("unknown", {"d"}, true).ok());
  SessionStatus s = WaitFinal(*src_, "unknown");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED);
  EXPECT_EQ(s.error_code(), static_cast<int>(grpc::StatusCode::PERMISSION_DENIED)) << s.error();
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");

  // Wrong secret.
  ASSERT_TRUE(Prepare("tok", {"d"}, "", "the agents' shared secret").ok());
  EXPECT_EQ(Prepare("tok", {"d"}).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_TRUE(Start("tok", {"d"}, true, "", "a guess at the secret").ok());
  s = WaitFinal(*src_, "tok");
  EXPECT_EQ(s.error_code(), static_cast<int>(grpc::StatusCode::PERMISSION_DENIED)) << s.error();
  // The destination still waits for the right source.
  EXPECT_EQ(Get(*dst_, "tok").phase(), SessionStatus::PREPARED);
  grpc::ClientContext ctx;
  v1::CancelSessionRequest req;
  req.set_session_id("tok");
  SessionStatus out;
  ASSERT_TRUE(dst_->stub()->CancelSession(&ctx, req, &out).ok());
  EXPECT_EQ(out.phase(), SessionStatus::CANCELLED);
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");
  // An ended session's id stays taken (its status queryable) until it is forgotten.
  EXPECT_EQ(Prepare("tok", {"d"}).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  {
    grpc::ClientContext c;
    v1::ForgetSessionRequest r;
    r.set_session_id("tok");
    SessionStatus o;
    ASSERT_TRUE(dst_->stub()->ForgetSession(&c, r, &o).ok());
    EXPECT_EQ(o.phase(), SessionStatus::CANCELLED);
  }
  ASSERT_TRUE(Prepare("tok", {"d"}).ok());
  EXPECT_EQ(Get(*dst_, "tok").phase(), SessionStatus::PREPARED);
  {
    grpc::ClientContext c;
    v1::CancelSessionRequest r;
    r.set_session_id("tok");
    SessionStatus o;
    ASSERT_TRUE(dst_->stub()->CancelSession(&c, r, &o).ok());
  }

  // A character device that is not a VFIO device, passed as one: refused at the intake, which
  // names its class (the migration ioctls would mean something else to it).
  {
    UniqueFd not_vfio(::open("/dev/null", O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(not_vfio.valid());
    auto handle = SendFdToIntake(src_->fd_socket(), FdPurpose::kVfioDevice, not_vfio.get());
    EXPECT_EQ(handle.status().code(), absl::StatusCode::kInvalidArgument) << handle.status();
    EXPECT_NE(handle.status().message().find("class 'mem'"), std::string::npos)
        << handle.status();
  }
  // FSM requests through the daemon: the blocked arc is refused before any ioctl.
  grpc::ClientContext c1;
  v1::SetDeviceStateRequest sreq;
  sreq.set_name("d");
  sreq.set_state("STOP_COPY");
  v1::SetDeviceStateResponse sresp;
  ASSERT_TRUE(src_->stub()->SetDeviceState(&c1, sreq, &sresp).ok());
  EXPECT_EQ(sresp.path(), "RUNNING > RUNNING_P2P > STOP > STOP_COPY");
  EXPECT_TRUE(sresp.data_fd_opened());
  grpc::ClientContext c2;
  sreq.set_state("PRE_COPY");
  grpc::Status blocked = src_->stub()->SetDeviceState(&c2, sreq, &sresp);
  EXPECT_EQ(blocked.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(blocked.error_message().find("blocked"), std::string::npos);
  EXPECT_EQ(StateOf(*src_, "d"), "STOP_COPY");
}

}  // namespace
}  // namespace migmover
