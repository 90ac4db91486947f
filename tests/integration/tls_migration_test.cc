// Two daemons with TLS credentials (a throw-away CA): migrations run over TLS 1.3 (userspace on
// hosts without kernel TLS), and a peer without TLS or without a certificate the CA signed gets
// nowhere near a device.
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/two_daemons.h"
#include "transport/net/socket.h"
#include "transport/peer/frame_codec.h"
#include "transport/peer/handshake.h"
#include "transport/tls/testing/test_pki.h"

namespace migmover {
namespace {

using testing::TwoDaemons;
using v1::SessionStatus;

std::vector<std::string> TlsFlags(const tls::TlsConfig& c) {
  return {"--tls_ca=" + c.ca_file, "--tls_cert=" + c.cert_file, "--tls_key=" + c.key_file};
}

class TlsDaemons : public TwoDaemons {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    auto pki = tls::testing::TestPki::Create(tmp != nullptr ? tmp : "/tmp", "test CA", "t-");
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = std::move(*pki);
    auto src = pki_->Issue("src.example", {"dst.example"});
    auto dst = pki_->Issue("dst.example", {"src.example"});
    ASSERT_TRUE(src.ok() && dst.ok());
    for (const std::string& f : TlsFlags(*src)) src_flags_.push_back(f);
    for (const std::string& f : TlsFlags(*dst)) dst_flags_.push_back(f);
    src_flags_.push_back("--tls_peer_names=dst.example");
    dst_flags_.push_back("--tls_peer_names=src.example");
    TwoDaemons::SetUp();
  }
  std::unique_ptr<tls::testing::TestPki> pki_;
};

TEST_F(TlsDaemons, AMigrationRunsOverTls) {
  ASSERT_TRUE(Attach(*src_, "d", "size=16MiB,chunk=256KiB,seed=9").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=16MiB").ok());
  ASSERT_TRUE(Prepare("tls", {"d"}, "copy").ok());
  ASSERT_TRUE(Start("tls", {"d"}, /*precopy=*/true, "copy").ok());
  WatchUntilRounds("tls", 1);
  auto [s, d] = SwitchoverAndWait("tls");
  EXPECT_TRUE(BothSucceeded(s, d));
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");
  EXPECT_NE(src_->Log().find("peers TLS 1.3 with certificates"), std::string::npos);
  EXPECT_NE(dst_->Log().find("peers TLS 1.3 with certificates"), std::string::npos);
}

// A source without TLS: its HELLO is not TLS, so the destination ends the connection without
// reading it as a HELLO, and the session still waits for its real source.
TEST_F(TlsDaemons, APlaintextPeerIsRefusedBeforeItsHelloIsRead) {
  ASSERT_TRUE(Attach(*dst_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("plain", {"d"}).ok());
  auto addr = net::ParseHostPort(dst_->peer_address());
  ASSERT_TRUE(addr.ok());
  auto conn = net::TcpConnect(*addr, absl::Seconds(5));
  ASSERT_TRUE(conn.ok());
  peer::Hello hello;
  hello.session_id = "plain";
  const std::string secret = SecretOf("plain");
  std::copy(secret.begin(), secret.end(), hello.token.begin());
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  ASSERT_TRUE(net::SendAll(conn->get(), peer::EncodeHello(0, hello), deadline).ok());
  absl::Status answer = peer::AwaitHelloAck(conn->get(), deadline);
  EXPECT_FALSE(answer.ok()) << "a plaintext HELLO was answered";
  EXPECT_EQ(Get(*dst_, "plain").phase(), SessionStatus::PREPARED);
  EXPECT_EQ(StateOf(*dst_, "d"), "RESUMING");
  EXPECT_NE(dst_->Log().find("does not speak TLS"), std::string::npos);
}

// A source daemon whose certificate another CA signed: its migration fails at the handshake,
// nothing reaches the device, and both devices are where they were.
TEST_F(TlsDaemons, ASourceFromAnotherCaIsRefused) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  auto other = tls::testing::TestPki::Create(tmp != nullptr ? tmp : "/tmp", "other CA", "o-");
  ASSERT_TRUE(other.ok());
  auto stranger = (*other)->Issue("src.example");
  ASSERT_TRUE(stranger.ok());
  std::vector<std::string> flags = TlsFlags(*stranger);
  flags[0] = "--tls_ca=" + pki_->ca_file();  // It trusts our CA; ours does not trust it.
  auto intruder =
      testing::DaemonProcess::Start(testing::MigmoverdPath(), "intruder", flags);
  ASSERT_TRUE(intruder.ok()) << intruder.status();
  ASSERT_TRUE(Attach(**intruder, "d", "size=1MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("foreign", {"d"}).ok());
  grpc::ClientContext ctx;
  v1::StartSourceRequest req;
  req.set_session_id("foreign");
  req.add_devices("d");
  req.set_peer(dst_->peer_address());
  req.set_token(SecretOf("foreign"));
  SessionStatus out;
  ASSERT_TRUE((*intruder)->stub()->StartSource(&ctx, req, &out).ok());
  SessionStatus s = WaitFinal(**intruder, "foreign");
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_EQ(Get(*dst_, "foreign").phase(), SessionStatus::PREPARED);
  EXPECT_EQ(StateOf(*dst_, "d"), "RESUMING");
  EXPECT_EQ(StateOf(**intruder, "d"), "RUNNING");
  EXPECT_NE(dst_->Log().find("certificate verify failed"), std::string::npos) << dst_->Log();
}

}  // namespace
}  // namespace migmover
