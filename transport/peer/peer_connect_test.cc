#include "transport/peer/peer_connect.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "transport/net/socket.h"
#include "transport/tls/testing/test_pki.h"
#include "transport/tls/tls_context.h"
#include "transport/tls/tls_relay.h"

namespace migmover::peer {
namespace {

std::string ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string CongestionOf(int fd) {
  char name[32] = {};
  socklen_t len = sizeof(name);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &len) != 0) return "";
  return name;
}

// The daemon's socket settings must reach the TCP socket itself, before TLS: under userspace TLS
// the data plane only sees the relay's unix end, where setting them does nothing.
TEST(PeerConnect, TuningReachesTheTcpSocketUnderTls) {
  // A congestion control this kernel offers that is not its default, so the setting shows.
  const std::string system = ReadLine("/proc/sys/net/ipv4/tcp_congestion_control");
  std::string other;
  for (absl::string_view c : absl::StrSplit(
           ReadLine("/proc/sys/net/ipv4/tcp_available_congestion_control"), ' ',
           absl::SkipEmpty())) {
    if (c != system) other = std::string(c);
  }
  if (other.empty()) GTEST_SKIP() << "this kernel offers one TCP congestion control only";

  const char* tmp = std::getenv("TEST_TMPDIR");
  auto pki = tls::testing::TestPki::Create(tmp != nullptr ? tmp : "/tmp", "tuning CA", "tune-");
  ASSERT_TRUE(pki.ok());
  auto src = tls::TlsContext::Create(*(*pki)->Issue("src.example"));
  auto dst = tls::TlsContext::Create(*(*pki)->Issue("dst.example"));
  ASSERT_TRUE(src.ok() && dst.ok());

  uint16_t port = 0;
  auto listener = net::TcpListen({"127.0.0.1", 0}, &port);
  ASSERT_TRUE(listener.ok());
  const net::SocketTuning tuning{1 << 20, other, absl::Seconds(7)};
  absl::StatusOr<PeerConnection> client = absl::UnknownError("");
  std::thread t([&] { client = ConnectPeer({"127.0.0.1", port}, absl::Seconds(5), src->get(), tuning); });
  auto tcp = net::Accept(listener->get(), absl::Seconds(5));
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  // The same socket, seen through a second descriptor after AcceptPeer hands it to TLS.
  UniqueFd probe(::dup(tcp->get()));
  auto server = AcceptPeer(std::move(*tcp), dst->get(), absl::Now() + absl::Seconds(5), tuning);
  t.join();
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(server->tls);
  EXPECT_EQ(CongestionOf(probe.get()), other) << "the congestion control set before TLS";
  int user_timeout = 0;
  socklen_t len = sizeof(user_timeout);
  ASSERT_EQ(::getsockopt(probe.get(), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, &len), 0);
  EXPECT_EQ(user_timeout, 7000);
  if (!server->kernel_tls) {
    // What the data plane holds under userspace TLS is the relay's unix end: no TCP options.
    EXPECT_FALSE(net::IsTcp(server->fd.get()));
  }
  // Both ends closed, their relays (detached threads owning the TLS state) finish before the
  // contexts and the process go.
  server->fd.Reset();
  client->fd.Reset();
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (tls::RunningTlsRelays() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(tls::RunningTlsRelays(), 0);
}

}  // namespace
}  // namespace migmover::peer
