#include "transport/net/socket.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace migmover::net {
namespace {

std::string CongestionOf(int fd) {
  char name[32] = {};
  socklen_t len = sizeof(name);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &len) != 0) return "?";
  return std::string(name, strnlen(name, len));
}

// Reno is built into every kernel; "nope" into none.
TEST(SocketTest, CheckCongestionControlKnowsWhatTheKernelOffers) {
  EXPECT_TRUE(CheckCongestionControl("reno").ok());
  absl::Status s = CheckCongestionControl("nope");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("tcp_available_congestion_control"), std::string::npos) << s;
  EXPECT_NE(s.message().find("reno"), std::string::npos) << s;
}

TEST(SocketTest, TuneDataSocketSetsTheCongestionControl) {
  uint16_t port = 0;
  auto l = TcpListen({"127.0.0.1", 0}, &port);
  ASSERT_TRUE(l.ok()) << l.status();
  auto c = TcpConnect({"127.0.0.1", port}, absl::Seconds(5));
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string before = CongestionOf(c->get());
  ASSERT_TRUE(TuneDataSocket(c->get(), 0).ok());
  EXPECT_EQ(CongestionOf(c->get()), before);  // Empty: the system's default stays.
  ASSERT_TRUE(TuneDataSocket(c->get(), 0, "reno").ok());
  EXPECT_EQ(CongestionOf(c->get()), "reno");
  absl::Status s = TuneDataSocket(c->get(), 0, "nope");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("TCP_CONGESTION, nope"), std::string::npos) << s;
}

}  // namespace
}  // namespace migmover::net
