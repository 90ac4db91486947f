// The daemon-to-daemon TLS over real loopback TCP: mutual authentication by certificates or a
// PSK, each way it must refuse (no client certificate, another CA, a name outside the
// allow-list, the wrong PSK, a peer without TLS, a silent peer), and the data path it leaves
// (userspace relay here; kernel TLS where the kernel has it) carrying bytes exactly, both ways.
#include "transport/tls/tls_handshake.h"

#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "transport/net/socket.h"
#include "transport/tls/testing/test_pki.h"
#include "transport/tls/tls_relay.h"

namespace migmover::tls {
namespace {

using testing::TestPki;

std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t != nullptr ? t : "/tmp";
}

// A connected loopback TCP pair: {client end, server end}.
std::pair<UniqueFd, UniqueFd> TcpPair() {
  uint16_t port = 0;
  auto listener = net::TcpListen({"127.0.0.1", 0}, &port);
  EXPECT_TRUE(listener.ok()) << listener.status();
  auto client = net::TcpConnect({"127.0.0.1", port}, absl::Seconds(5));
  EXPECT_TRUE(client.ok()) << client.status();
  auto server = net::Accept(listener->get(), absl::Seconds(5));
  EXPECT_TRUE(server.ok()) << server.status();
  return {std::move(*client), std::move(*server)};
}

struct Outcome {
  absl::StatusOr<TlsConnection> client = absl::UnknownError("not run");
  absl::StatusOr<TlsConnection> server = absl::UnknownError("not run");
};

Outcome Handshake(const TlsContext& client_ctx, const TlsContext& server_ctx,
                  KernelTlsUse kernel = KernelTlsUse::kNever) {
  auto [c, s] = TcpPair();
  Outcome o;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  std::thread server([&, s = std::move(s)]() mutable {
    o.server = EstablishTls(std::move(s), TlsRole::kServer, server_ctx, deadline, nullptr, kernel);
  });
  o.client = EstablishTls(std::move(c), TlsRole::kClient, client_ctx, deadline, nullptr, kernel);
  server.join();
  return o;
}

// The client was refused. In TLS 1.3 a client finishes its side of the handshake before the
// server has checked the client's certificate, so the refusal may come as an alert on the first
// read instead: either way the client cannot use the connection.
void ExpectClientCutOff(Outcome& o) {
  if (!o.client.ok()) return;
  char b;
  timeval tv{10, 0};
  ::setsockopt(o.client->fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const ssize_t n = ::recv(o.client->fd.get(), &b, 1, 0);
  EXPECT_LE(n, 0) << "the refused client's connection still carries data";
}

std::shared_ptr<const TlsContext> Context(const absl::StatusOr<TlsConfig>& config) {
  EXPECT_TRUE(config.ok()) << config.status();
  auto c = TlsContext::Create(*config);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// `n` bytes each way at once, checked byte for byte.
void ExpectCarries(int a, int b, size_t n) {
  std::string sent_ab(n, '\0'), sent_ba(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    sent_ab[i] = static_cast<char>(i * 7 + 1);
    sent_ba[i] = static_cast<char>(i * 13 + 5);
  }
  std::string got_ab(n, '\0'), got_ba(n, '\0');
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  // All four at once: neither direction fits in the buffers on the way.
  std::thread t1([&] { EXPECT_TRUE(net::SendAll(b, sent_ba, deadline).ok()); });
  std::thread t2([&] { EXPECT_TRUE(net::RecvExact(b, got_ab.data(), n, deadline).ok()); });
  std::thread t3([&] { EXPECT_TRUE(net::RecvExact(a, got_ba.data(), n, deadline).ok()); });
  EXPECT_TRUE(net::SendAll(a, sent_ab, deadline).ok());
  t1.join();
  t2.join();
  t3.join();
  EXPECT_EQ(got_ab, sent_ab);
  EXPECT_EQ(got_ba, sent_ba);
}

class TlsHandshakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = TestPki::Create(TempDir(), "migmover test CA", "a-");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    auto other = TestPki::Create(TempDir(), "another CA", "b-");
    ASSERT_TRUE(other.ok()) << other.status();
    other_ca_ = std::move(*other);
  }
  std::unique_ptr<TestPki> ca_, other_ca_;
};

TEST_F(TlsHandshakeTest, MutualCertificatesCarryBytesBothWaysInUserspace) {
  auto src = Context(ca_->Issue("src.example", {"dst.example"}));
  auto dst = Context(ca_->Issue("dst.example", {"src.example"}));
  Outcome o = Handshake(*src, *dst);
  ASSERT_TRUE(o.client.ok()) << o.client.status();
  ASSERT_TRUE(o.server.ok()) << o.server.status();
  EXPECT_FALSE(o.client->kernel);
  EXPECT_EQ(o.client->cipher, "TLS_AES_128_GCM_SHA256");
  EXPECT_NE(o.client->peer.find("CN=dst.example"), std::string::npos) << o.client->peer;
  EXPECT_NE(o.server->peer.find("CN=src.example"), std::string::npos) << o.server->peer;
  EXPECT_NE(o.client->Describe().find("TLS 1.3 in userspace"), std::string::npos);
  ExpectCarries(o.client->fd.get(), o.server->fd.get(), 8 << 20);
  // Closing both ends ends both relays.
  o.client->fd.Reset();
  o.server->fd.Reset();
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (RunningTlsRelays() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(RunningTlsRelays(), 0);
}

TEST_F(TlsHandshakeTest, KernelTlsCarriesTheSameBytesWhereTheKernelHasIt) {
  auto src = Context(ca_->Issue("src.example"));
  auto dst = Context(ca_->Issue("dst.example"));
  Outcome o = Handshake(*src, *dst, KernelTlsUse::kAuto);
  ASSERT_TRUE(o.client.ok()) << o.client.status();
  ASSERT_TRUE(o.server.ok()) << o.server.status();
  if (!o.client->kernel) {
    ExpectCarries(o.client->fd.get(), o.server->fd.get(), 1 << 20);  // The fallback works.
    GTEST_SKIP() << "this kernel has no TLS upper-layer protocol (CONFIG_TLS): userspace ran";
  }
  EXPECT_TRUE(o.server->kernel);
  EXPECT_EQ(o.client->tcp_fd, -1);
  ExpectCarries(o.client->fd.get(), o.server->fd.get(), 8 << 20);
}

TEST_F(TlsHandshakeTest, APreSharedKeyAuthenticatesBothEnds) {
  TlsConfig psk;
  psk.psk = std::string(32, 'k');
  auto a = Context(psk);
  auto b = Context(psk);
  Outcome o = Handshake(*a, *b);
  ASSERT_TRUE(o.client.ok()) << o.client.status();
  ASSERT_TRUE(o.server.ok()) << o.server.status();
  EXPECT_EQ(o.server->peer, "pre-shared key 'migmover'");
  ExpectCarries(o.client->fd.get(), o.server->fd.get(), 1 << 20);
}

TEST_F(TlsHandshakeTest, TheWrongPreSharedKeyIsRefused) {
  TlsConfig right, wrong;
  right.psk = std::string(32, 'k');
  wrong.psk = std::string(32, 'x');
  Outcome o = Handshake(*Context(wrong), *Context(right));
  EXPECT_FALSE(o.server.ok());
  ExpectClientCutOff(o);
  EXPECT_EQ(o.server.status().code(), absl::StatusCode::kPermissionDenied) << o.server.status();
}

TEST_F(TlsHandshakeTest, ACertificateFromAnotherCaIsRefused) {
  // A source whose certificate another CA signed (it trusts ours, so it gets as far as
  // presenting it).
  auto issued = other_ca_->Issue("src.example");
  ASSERT_TRUE(issued.ok());
  issued->ca_file = ca_->ca_file();
  auto stranger = Context(issued);
  auto dst = Context(ca_->Issue("dst.example"));
  Outcome o = Handshake(*stranger, *dst);
  EXPECT_FALSE(o.server.ok());
  ExpectClientCutOff(o);
  EXPECT_EQ(o.server.status().code(), absl::StatusCode::kPermissionDenied) << o.server.status();
  EXPECT_NE(o.server.status().message().find("certificate verify failed"), std::string::npos)
      << o.server.status();
  // And a destination whose certificate another CA signed is refused by the source.
  auto src = Context(ca_->Issue("src.example"));
  auto other_dst = other_ca_->Issue("dst.example");
  ASSERT_TRUE(other_dst.ok());
  other_dst->ca_file = ca_->ca_file();
  Outcome back = Handshake(*src, *Context(other_dst));
  EXPECT_EQ(back.client.status().code(), absl::StatusCode::kPermissionDenied)
      << back.client.status();
  EXPECT_FALSE(back.server.ok());
}

TEST_F(TlsHandshakeTest, ANameOutsideTheAllowListIsRefused) {
  auto intruder = Context(ca_->Issue("intruder.example"));
  auto dst = Context(ca_->Issue("dst.example", {"src.example"}));
  Outcome o = Handshake(*intruder, *dst);
  EXPECT_EQ(o.server.status().code(), absl::StatusCode::kPermissionDenied) << o.server.status();
  ExpectClientCutOff(o);
  // And the other way: a source that expects dst.example refuses another server.
  auto src = Context(ca_->Issue("src.example", {"dst.example"}));
  auto other_dst = Context(ca_->Issue("elsewhere.example"));
  Outcome back = Handshake(*src, *other_dst);
  EXPECT_EQ(back.client.status().code(), absl::StatusCode::kPermissionDenied)
      << back.client.status();
}

TEST_F(TlsHandshakeTest, AClientWithoutACertificateIsRefused) {
  auto dst = Context(ca_->Issue("dst.example"));
  auto [c, s] = TcpPair();
  std::thread server([&, s = std::move(s)]() mutable {
    auto r = EstablishTls(std::move(s), TlsRole::kServer, *dst, absl::Now() + absl::Seconds(10));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  });
  // A TLS 1.3 client with no certificate at all, as any TLS library would be.
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, c.get());
  (void)SSL_connect(ssl);
  char b;
  (void)SSL_read(ssl, &b, 1);  // The server's refusal (certificate required) arrives here.
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  server.join();
}

TEST_F(TlsHandshakeTest, APeerWithoutTlsIsRefusedAsNotSpeakingTls) {
  auto dst = Context(ca_->Issue("dst.example"));
  auto [c, s] = TcpPair();
  // A plaintext source's first bytes: a peer HELLO frame header ("MMF1"...).
  std::string hello(80, '\0');
  hello.replace(0, 4, "MMF1");
  ASSERT_TRUE(net::SendAll(c.get(), hello, absl::Now() + absl::Seconds(5)).ok());
  auto r = EstablishTls(std::move(s), TlsRole::kServer, *dst, absl::Now() + absl::Seconds(5));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(r.status().message().find("does not speak TLS"), std::string::npos) << r.status();
}

TEST_F(TlsHandshakeTest, ASilentPeerRunsIntoTheDeadline) {
  auto dst = Context(ca_->Issue("dst.example"));
  auto [c, s] = TcpPair();
  auto r = EstablishTls(std::move(s), TlsRole::kServer, *dst,
                        absl::Now() + absl::Milliseconds(300));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
}

TEST_F(TlsHandshakeTest, BadCredentialsAreClearErrors) {
  TlsConfig none;
  EXPECT_EQ(TlsContext::Create(none).status().code(), absl::StatusCode::kInvalidArgument);
  TlsConfig short_psk;
  short_psk.psk = "short";
  EXPECT_EQ(TlsContext::Create(short_psk).status().code(), absl::StatusCode::kInvalidArgument);
  auto good = ca_->Issue("x.example");
  ASSERT_TRUE(good.ok());
  TlsConfig missing = *good;
  missing.key_file = "/nonexistent/key.pem";
  auto m = TlsContext::Create(missing);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound) << m.status();
  auto other = ca_->Issue("y.example");
  ASSERT_TRUE(other.ok());
  TlsConfig mismatched = *good;
  mismatched.key_file = other->key_file;
  auto mm = TlsContext::Create(mismatched);
  EXPECT_EQ(mm.status().code(), absl::StatusCode::kInvalidArgument) << mm.status();
}

}  // namespace
}  // namespace migmover::tls
