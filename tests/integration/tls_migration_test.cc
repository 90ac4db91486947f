// Two daemons with TLS credentials (a throw-away CA): migrations run over TLS 1.3 (userspace on
// hosts without kernel TLS), and a peer without TLS or without a certificate the CA signed gets
// nowhere near a device.
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "openssl/ssl.h"
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

// Fixtures whose destination must refuse some source daemon.
class RefusingDaemons : public TwoDaemons {
 protected:
  // A source daemon the destination must refuse (`flags` are its TLS credentials): its migration
  // fails at the handshake, nothing reaches the device, both devices stay where they were, and
  // the destination's log says `why`.
  void ExpectSourceRefused(const std::vector<std::string>& flags, const std::string& id,
                           const std::string& why) {
    testing::DaemonProcess& dst = *dst_;
    auto intruder = testing::DaemonProcess::Start(testing::MigmoverdPath(), "intruder", flags);
    ASSERT_TRUE(intruder.ok()) << intruder.status();
    ASSERT_TRUE(Attach(**intruder, "d", "size=1MiB").ok());
    ASSERT_TRUE(Attach(dst, "d", "size=1MiB").ok());
    ASSERT_TRUE(Prepare(id, {"d"}).ok());
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id(id);
    req.add_devices("d");
    req.set_peer(dst.peer_address());
    req.set_token(SecretOf(id));
    SessionStatus out;
    ASSERT_TRUE((*intruder)->stub()->StartSource(&ctx, req, &out).ok());
    SessionStatus s = WaitFinal(**intruder, id);
    EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
    // The source hears it too: the handshake failed, or the destination's alert ended it.
    EXPECT_NE(s.error().find("TLS"), std::string::npos) << s.error();
    EXPECT_EQ(s.error_code(), static_cast<int>(grpc::StatusCode::PERMISSION_DENIED)) << s.error();
    SessionStatus d = Get(dst, id);
    EXPECT_EQ(d.phase(), SessionStatus::PREPARED) << d.DebugString();
    EXPECT_EQ(d.bytes_moved(), 0u);
    EXPECT_EQ(StateOf(dst, "d"), "RESUMING");
    EXPECT_EQ(StateOf(**intruder, "d"), "RUNNING");
    EXPECT_NE(dst.Log().find(why), std::string::npos) << dst.Log();
  }
};

class TlsDaemons : public RefusingDaemons {
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
    RefusingDaemons::SetUp();
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

TEST_F(TlsDaemons, ASourceFromAnotherCaIsRefused) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  auto other = tls::testing::TestPki::Create(tmp != nullptr ? tmp : "/tmp", "other CA", "o-");
  ASSERT_TRUE(other.ok());
  auto stranger = (*other)->Issue("src.example");
  ASSERT_TRUE(stranger.ok());
  std::vector<std::string> flags = TlsFlags(*stranger);
  flags[0] = "--tls_ca=" + pki_->ca_file();  // It trusts our CA; ours does not trust it.
  ExpectSourceRefused(flags, "foreign",
                      "the peer's certificate: unable to get local issuer certificate");
}

// Our own CA signed it, but for a name the destination does not accept (--tls_peer_names).
TEST_F(TlsDaemons, ASourceNamedOutsideTheAllowListIsRefused) {
  auto rogue = pki_->Issue("rogue.example");
  ASSERT_TRUE(rogue.ok());
  ExpectSourceRefused(TlsFlags(*rogue), "misnamed",
                      "its names are not in the allow-list");
}

// A client that offers no certificate at all (OpenSSL's own client, the session's secret in
// hand): TLS 1.3 lets it finish its side of the handshake, so it even sends its HELLO; the
// destination refuses the handshake and reads nothing.
TEST_F(TlsDaemons, AClientWithoutACertificateIsRefused) {
  ASSERT_TRUE(Attach(*dst_, "d", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("anonymous", {"d"}).ok());
  auto addr = net::ParseHostPort(dst_->peer_address());
  ASSERT_TRUE(addr.ok());
  auto conn = net::TcpConnect(*addr, absl::Seconds(5));
  ASSERT_TRUE(conn.ok());
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        &SSL_CTX_free);
  ASSERT_NE(ctx, nullptr);
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), &SSL_free);
  ASSERT_NE(ssl, nullptr);
  SSL_set_fd(ssl.get(), conn->get());
  (void)SSL_connect(ssl.get());
  peer::Hello hello;
  hello.session_id = "anonymous";
  const std::string secret = SecretOf("anonymous");
  std::copy(secret.begin(), secret.end(), hello.token.begin());
  const std::string frame = peer::EncodeHello(0, hello);
  (void)SSL_write(ssl.get(), frame.data(), static_cast<int>(frame.size()));
  char answer[256];
  EXPECT_LE(SSL_read(ssl.get(), answer, sizeof(answer)), 0) << "the destination answered";
  EXPECT_EQ(Get(*dst_, "anonymous").phase(), SessionStatus::PREPARED);
  EXPECT_EQ(StateOf(*dst_, "d"), "RESUMING");
  EXPECT_NE(dst_->Log().find("peer did not return a certificate"), std::string::npos)
      << dst_->Log();
}

// Daemons that share a pre-shared key instead of certificates.
class PskDaemons : public RefusingDaemons {
 protected:
  static std::string WriteKey(const std::string& name, char fill) {
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
    std::ofstream(path) << std::string(48, fill);
    return path;
  }
  void SetUp() override {
    const std::string key = WriteKey("fleet.psk", 'k');
    src_flags_.push_back("--tls_psk_file=" + key);
    dst_flags_.push_back("--tls_psk_file=" + key);
    RefusingDaemons::SetUp();
  }
};

TEST_F(PskDaemons, AMigrationRunsOverTlsWithThePsk) {
  ASSERT_TRUE(Attach(*src_, "d", "size=4MiB,seed=5").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=4MiB").ok());
  ASSERT_TRUE(Prepare("psk", {"d"}).ok());
  ASSERT_TRUE(Start("psk", {"d"}, /*precopy=*/false).ok());
  auto [s, d] = SwitchoverAndWait("psk");
  EXPECT_TRUE(BothSucceeded(s, d));
  ASSERT_EQ(d.devices_size(), 1);
  EXPECT_NE(d.devices(0).security().find("pre-shared key"), std::string::npos)
      << d.devices(0).security();
}

TEST_F(PskDaemons, ASourceWithAnotherKeyIsRefused) {
  ExpectSourceRefused({"--tls_psk_file=" + WriteKey("wrong.psk", 'w')}, "wrongkey",
                      "TLS handshake");
}

}  // namespace
}  // namespace migmover
