// Two real migmoverd processes whose device streams travel over DPDK: each daemon opens one
// net_memif port (the destination's the server, the source's the client, on one abstract socket),
// every device stream runs on its own link over it, and only the HELLO exchange uses TCP.
// Simulated devices verify every byte they receive, so "verified" means byte-exact.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/two_daemons.h"
#include "transport/net/socket.h"
#include "transport/peer/handshake.h"

namespace migmover {
namespace {

using testing::DaemonProcess;
using testing::TwoDaemons;
using v1::SessionStatus;

class DpdkDaemons : public TwoDaemons {
 protected:
  void SetUp() override {
    static int n = 0;
    const std::string sock = absl::StrCat("migmover-it-", ::getpid(), "-", n++);
    dst_flags_.push_back(absl::StrCat("--dpdk_port=net_memif0,role=server,socket=", sock));
    src_flags_.push_back(absl::StrCat("--dpdk_port=net_memif0,role=client,socket=", sock));
    transport_ = "dpdk";
    TwoDaemons::SetUp();
  }
};

TEST_F(DpdkDaemons, TwoDevicesWithPrecopyMoveByteExact) {
  const std::vector<std::string> specs = {"size=48MiB,chunk=128KiB,seed=21,dirty_rate=64MiB",
                                          "size=24MiB,chunk=64KiB,seed=22,initial=4MiB"};
  std::vector<std::string> names;
  for (size_t i = 0; i < specs.size(); ++i) {
    names.push_back(absl::StrCat("dev", i));
    ASSERT_TRUE(Attach(*src_, names[i], specs[i]).ok());
    ASSERT_TRUE(Attach(*dst_, names[i], specs[i].substr(0, specs[i].find(','))).ok());
  }
  ASSERT_TRUE(Prepare("dpdk-pre", names).ok());
  grpc::Status started = Start("dpdk-pre", names, true);
  ASSERT_TRUE(started.ok()) << started.error_message();
  SessionStatus r = WatchUntilRounds("dpdk-pre", 1);
  EXPECT_EQ(r.phase(), SessionStatus::PRE_COPY);
  auto [s, d] = SwitchoverAndWait("dpdk-pre");
  ASSERT_TRUE(BothSucceeded(s, d));
  EXPECT_EQ(s.bytes_moved(), d.bytes_moved());
  EXPECT_GT(s.precopy_bytes(), 0u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(s.devices(i).data_path(), "copy") << "a link reads into its frames";
    EXPECT_EQ(d.devices(i).data_path(), "copy");
    EXPECT_EQ(d.devices(i).integrity(), "sealed DPDK link frames (ChaCha20-Poly1305)")
        << d.DebugString();
    EXPECT_EQ(s.devices(i).security().rfind(
                  "DPDK link frames sealed (ChaCha20-Poly1305, keys from the HELLO connection's "
                  "TLS handshake); HELLO connection TLS 1.3",
                  0),
              0u)
        << s.DebugString();
    EXPECT_TRUE(d.devices(i).committed());
    EXPECT_EQ(s.devices(i).transport().rfind("dpdk link ", 0), 0u) << s.DebugString();
    EXPECT_EQ(d.devices(i).transport(), s.devices(i).transport()) << "both name the same link";
  }
  EXPECT_NE(s.devices(0).transport(), s.devices(1).transport()) << "a link per device";
  EXPECT_EQ(StateOf(*src_, "dev0"), "STOP");
  EXPECT_EQ(StateOf(*dst_, "dev0"), "RUNNING");
  EXPECT_NE(src_->Log().find("stream on dpdk link"), std::string::npos) << src_->Log();
}

TEST_F(DpdkDaemons, WithoutPrecopyFourDevicesAtOnce) {
  std::vector<std::string> names;
  for (int i = 0; i < 4; ++i) {
    names.push_back(absl::StrCat("d", i));
    ASSERT_TRUE(Attach(*src_, names.back(), absl::StrCat("size=16MiB,seed=", 30 + i)).ok());
    ASSERT_TRUE(Attach(*dst_, names.back(), "size=16MiB").ok());
  }
  ASSERT_TRUE(Prepare("dpdk-four", names).ok());
  ASSERT_TRUE(Start("dpdk-four", names, false).ok());
  auto [s, d] = SwitchoverAndWait("dpdk-four");
  ASSERT_TRUE(BothSucceeded(s, d));
  EXPECT_EQ(s.bytes_moved(), d.bytes_moved());
  EXPECT_GE(s.bytes_moved(), 4u * (16u << 20)) << "every device's whole state";
}

class DpdkDaemonsFourQueues : public DpdkDaemons {
 protected:
  void SetUp() override {
    for (auto* flags : {&src_flags_, &dst_flags_}) flags->push_back("--dpdk_queues=4");
    DpdkDaemons::SetUp();
  }
};

TEST_F(DpdkDaemonsFourQueues, DevicesSpreadOverQueuePairsMoveByteExact) {
  std::vector<std::string> names;
  for (int i = 0; i < 5; ++i) {  // One more than the queues: two links share one.
    names.push_back(absl::StrCat("q", i));
    ASSERT_TRUE(Attach(*src_, names.back(), absl::StrCat("size=8MiB,seed=", 40 + i)).ok());
    ASSERT_TRUE(Attach(*dst_, names.back(), "size=8MiB").ok());
  }
  ASSERT_TRUE(Prepare("dpdk-queues", names).ok());
  ASSERT_TRUE(Start("dpdk-queues", names, false).ok());
  auto [s, d] = SwitchoverAndWait("dpdk-queues");
  ASSERT_TRUE(BothSucceeded(s, d));
  std::set<uint64_t> queues;
  for (const auto& dev : s.devices()) {
    queues.insert(std::stoull(dev.transport().substr(strlen("dpdk link "))) % 4);
  }
  EXPECT_EQ(queues.size(), 4u) << "a session's devices land on every queue pair";
  EXPECT_NE(src_->Log().find("4 queue(s)"), std::string::npos);
}

TEST_F(DpdkDaemons, CorruptedStreamIsRejectedAndSourceRunsAgain) {
  ASSERT_TRUE(Attach(*src_, "d", "size=8MiB,corrupt_at=3000000").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=8MiB").ok());
  ASSERT_TRUE(Prepare("dpdk-corrupt", {"d"}).ok());
  ASSERT_TRUE(Start("dpdk-corrupt", {"d"}, false).ok());
  auto [s, d] = SwitchoverAndWait("dpdk-corrupt");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED);
  EXPECT_EQ(d.phase(), SessionStatus::FAILED);
  EXPECT_NE(s.error().find("destination"), std::string::npos) << s.error();
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING") << "reset, not left half-resumed";
}

TEST_F(DpdkDaemons, FailedResumeFailsBothSidesAndSourceRunsAgain) {
  ASSERT_TRUE(Attach(*src_, "d", "size=8MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=8MiB,fail_arc=RESUMING:STOP:EIO").ok());
  ASSERT_TRUE(Prepare("dpdk-bad-commit", {"d"}).ok());
  ASSERT_TRUE(Start("dpdk-bad-commit", {"d"}, true).ok());
  WatchUntilRounds("dpdk-bad-commit", 1);
  auto [s, d] = SwitchoverAndWait("dpdk-bad-commit");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED);
  EXPECT_EQ(d.phase(), SessionStatus::FAILED);
  EXPECT_NE(s.error().find("RESUMING->STOP"), std::string::npos) << s.error();
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");
}

TEST_F(DpdkDaemons, CancelDuringPrecopyRestoresBothSides) {
  ASSERT_TRUE(Attach(*src_, "d", "size=32MiB,dirty_rate=256MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=32MiB").ok());
  ASSERT_TRUE(Prepare("dpdk-cancel", {"d"}).ok());
  ASSERT_TRUE(Start("dpdk-cancel", {"d"}, true).ok());
  WatchUntilRounds("dpdk-cancel", 1);
  grpc::ClientContext ctx;
  v1::CancelSessionRequest req;
  req.set_session_id("dpdk-cancel");
  SessionStatus out;
  ASSERT_TRUE(src_->stub()->CancelSession(&ctx, req, &out).ok());
  SessionStatus s = WaitFinal(*src_, "dpdk-cancel");
  SessionStatus d = WaitFinal(*dst_, "dpdk-cancel");
  EXPECT_EQ(s.phase(), SessionStatus::CANCELLED) << s.DebugString();
  EXPECT_NE(d.phase(), SessionStatus::SUCCEEDED) << d.DebugString();
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");
}

TEST_F(DpdkDaemons, SourceDaemonKilledMidStreamResetsTheDestinationAtOnce) {
  ASSERT_TRUE(Attach(*src_, "d", "size=64MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=64MiB").ok());
  ASSERT_TRUE(Prepare("dpdk-killed", {"d"}).ok());
  bandwidth_ = 16 << 20;  // Capped, so the stream is still running when the source dies.
  ASSERT_TRUE(Start("dpdk-killed", {"d"}, false).ok());
  ASSERT_TRUE(Switchover("dpdk-killed").ok());
  absl::SleepFor(absl::Milliseconds(800));
  SessionStatus mid = Get(*dst_, "dpdk-killed");
  ASSERT_FALSE(Final(mid)) << mid.DebugString();
  ASSERT_GT(mid.bytes_moved(), 0u);
  ::kill(src_->pid(), SIGKILL);
  const absl::Time killed = absl::Now();
  // The daemons run with a 10 s idle timeout: the destination must not need it.
  SessionStatus d = WaitFinal(*dst_, "dpdk-killed", 8);
  EXPECT_LT(absl::Now() - killed, absl::Seconds(3));
  EXPECT_EQ(d.phase(), SessionStatus::FAILED) << d.DebugString();
  EXPECT_NE(d.error().find("the source closed its connection"), std::string::npos) << d.error();
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING") << "reset, not left half-resumed";
}

TEST_F(DpdkDaemons, DestinationDaemonKilledMidStreamSourceRunsAgainAtOnce) {
  ASSERT_TRUE(Attach(*src_, "d", "size=64MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=64MiB").ok());
  ASSERT_TRUE(Prepare("dpdk-dst-killed", {"d"}).ok());
  bandwidth_ = 16 << 20;  // Capped, so the stream is still running when the destination dies.
  ASSERT_TRUE(Start("dpdk-dst-killed", {"d"}, false).ok());
  ASSERT_TRUE(Switchover("dpdk-dst-killed").ok());
  absl::SleepFor(absl::Milliseconds(800));
  ASSERT_FALSE(Final(Get(*src_, "dpdk-dst-killed")));
  ::kill(dst_->pid(), SIGKILL);
  const absl::Time killed = absl::Now();
  SessionStatus s = WaitFinal(*src_, "dpdk-dst-killed", 8);
  EXPECT_LT(absl::Now() - killed, absl::Seconds(3));
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_NE(s.error().find("the destination closed its connection"), std::string::npos)
      << s.error();
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING") << "the VM runs on here";
}

TEST_F(DpdkDaemons, RequestsThatCannotWorkAreRefusedClearly) {
  ASSERT_TRUE(Attach(*src_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("dpdk-bad", {"d"}).ok());
  // A DPDK link carries a stream whole: no striping.
  grpc::Status striped = Start("dpdk-bad", {"d"}, false, "", "", "", 2);
  EXPECT_EQ(striped.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(striped.error_message().find("streams"), std::string::npos) << striped.error_message();
  transport_ = "rdma";
  grpc::Status unknown = Start("dpdk-bad", {"d"}, false);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(unknown.error_message().find("\"tcp\" or \"dpdk\""), std::string::npos)
      << unknown.error_message();
}

// Not memif: each daemon's port is net_af_packet on one end of a veth pair, so frames cross the
// kernel's network stack (a real interface, with its MTU and its drops).
class DpdkOverVeth : public TwoDaemons {
 protected:
  void SetUp() override {
    const std::string a = absl::StrCat("mmv", ::getpid() % 100000, "a");
    const std::string b = absl::StrCat("mmv", ::getpid() % 100000, "b");
    if (std::system(absl::StrCat("ip link add ", a, " type veth peer name ", b,
                                 " >/dev/null 2>&1 && ip link set ", a,
                                 " mtu 9202 up && ip link set ", b, " mtu 9202 up")
                        .c_str()) != 0) {
      GTEST_SKIP() << "cannot create a veth pair here (needs root and iproute2)";
    }
    veth_ = a;
    const std::string ring = ",framesz=16384,blocksz=16384,framecnt=1024";
    dst_flags_.push_back(absl::StrCat("--dpdk_port=net_af_packet0,iface=", b, ring));
    src_flags_.push_back(absl::StrCat("--dpdk_port=net_af_packet0,iface=", a, ring));
    transport_ = "dpdk";
    TwoDaemons::SetUp();
  }
  void TearDown() override {
    TwoDaemons::TearDown();
    src_.reset();
    dst_.reset();
    if (!veth_.empty())
      std::system(absl::StrCat("ip link del ", veth_, " >/dev/null 2>&1").c_str());
  }
  std::string veth_;
};

TEST_F(DpdkOverVeth, TwoDevicesMoveByteExactOverAfPacket) {
  std::vector<std::string> names;
  for (int i = 0; i < 2; ++i) {
    names.push_back(absl::StrCat("v", i));
    ASSERT_TRUE(Attach(*src_, names.back(), absl::StrCat("size=32MiB,seed=", 50 + i)).ok());
    ASSERT_TRUE(Attach(*dst_, names.back(), "size=32MiB").ok());
  }
  ASSERT_TRUE(Prepare("veth", names).ok());
  ASSERT_TRUE(Start("veth", names, true).ok());
  WatchUntilRounds("veth", 1);
  auto [s, d] = SwitchoverAndWait("veth");
  ASSERT_TRUE(BothSucceeded(s, d));
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(d.devices(i).integrity(), "sealed DPDK link frames (ChaCha20-Poly1305)");
    EXPECT_EQ(d.devices(i).transport().rfind("dpdk link ", 0), 0u);
  }
  EXPECT_NE(src_->Log().find("net_af_packet0"), std::string::npos);
}

// A daemon without --dpdk_port refuses DPDK, whether its own agent asks for it or a source's
// HELLO names a link.
TEST_F(DpdkDaemons, DaemonWithoutAPortRefusesDpdkByRequestAndByHello) {
  auto plain = DaemonProcess::Start(testing::MigmoverdPath(), "plain", {});
  ASSERT_TRUE(plain.ok()) << plain.status();
  {
    grpc::ClientContext ctx;
    v1::PrepareDestinationRequest req;
    req.set_session_id("x");
    req.add_devices("d");
    req.mutable_options()->set_transport("dpdk");
    SessionStatus out;
    grpc::Status st = (*plain)->stub()->PrepareDestination(&ctx, req, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(st.error_message().find("--dpdk_port"), std::string::npos) << st.error_message();
  }
  // The agent prepared it for TCP, but the source (whose port is up) sends over DPDK.
  ASSERT_TRUE(Attach(*src_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Attach(**plain, "d", "size=1MiB").ok());
  {
    grpc::ClientContext ctx;
    v1::PrepareDestinationRequest req;
    req.set_session_id("to-plain");
    req.add_devices("d");
    SessionStatus out;
    ASSERT_TRUE((*plain)->stub()->PrepareDestination(&ctx, req, &out).ok());
    Remember("to-plain", out.token());
  }
  ASSERT_TRUE(Start("to-plain", {"d"}, false, "", "", (*plain)->peer_address()).ok());
  SessionStatus s = WaitFinal(*src_, "to-plain");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_NE(s.error().find("this daemon has no DPDK port"), std::string::npos) << s.error();
  EXPECT_EQ(StateOf(*src_, "d"), "RUNNING");
  EXPECT_EQ(StateOf(**plain, "d"), "RESUMING") << "its session still waits for a TCP source";
}

// Two HELLOs for the same device, each naming its own link, answered at the same time: one
// device has one link, so one of them is refused (AlreadyExists) at once, whatever the order.
// The port here is down (a memif server with no client), so the other waits for it and is
// refused as Unavailable; without the check both waited and neither was told of the other.
TEST_F(DpdkDaemons, TwoHellosForOneDeviceGetOneLink) {
  auto lone = DaemonProcess::Start(
      testing::MigmoverdPath(), "lone",
      {absl::StrCat("--dpdk_port=net_memif0,role=server,socket=migmover-lone-", ::getpid())});
  ASSERT_TRUE(lone.ok()) << lone.status();
  ASSERT_TRUE(Attach(**lone, "d", "size=1MiB").ok());
  std::string secret;
  {
    grpc::ClientContext ctx;
    v1::PrepareDestinationRequest req;
    req.set_session_id("dup");
    req.add_devices("d");
    SessionStatus out;
    ASSERT_TRUE((*lone)->stub()->PrepareDestination(&ctx, req, &out).ok());
    secret = out.token();
  }
  absl::Status answers[2];
  std::vector<std::thread> sources;
  for (int i = 0; i < 2; ++i) {
    sources.emplace_back([&, i] {
      auto conn = (*lone)->ConnectAsPeer("src");
      if (!conn.ok()) {
        answers[i] = conn.status();
        return;
      }
      peer::Hello hello;
      hello.session_id = "dup";
      hello.link = 1000 + i;
      ASSERT_EQ(secret.size(), hello.token.size());
      std::copy(secret.begin(), secret.end(), hello.token.begin());
      hello.binding = conn->binding;
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      answers[i] = net::SendAll(conn->fd.get(), peer::EncodeHello(0, hello), deadline);
      if (answers[i].ok()) answers[i] = peer::AwaitHelloAck(conn->fd.get(), deadline);
    });
  }
  for (auto& t : sources) t.join();
  int already = 0, unavailable = 0;
  for (const absl::Status& a : answers) {
    already += a.code() == absl::StatusCode::kAlreadyExists;
    unavailable += a.code() == absl::StatusCode::kUnavailable;
  }
  EXPECT_EQ(already, 1) << answers[0] << " / " << answers[1];
  EXPECT_EQ(unavailable, 1) << answers[0] << " / " << answers[1];
  EXPECT_EQ(StateOf(**lone, "d"), "RESUMING") << "refusals change nothing";
}

}  // namespace
}  // namespace migmover
