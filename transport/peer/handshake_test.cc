#include "transport/peer/handshake.h"

#include <sys/socket.h>

#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"
#include "transport/net/socket.h"

namespace migmover::peer {
namespace {

// A peer of another protocol version is refused with a message that says which versions each
// side speaks: version 1 commits without CONFIRM, so the two must not be spoken to each other.
TEST(HandshakeTest, APeerOfAnotherVersionIsRefusedSayingWhichVersions) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  Hello old;
  old.min_version = old.max_version = 1;
  old.session_id = "s";
  ASSERT_TRUE(net::SendAll(a.get(), EncodeHello(0, old), absl::Now() + absl::Seconds(5)).ok());
  absl::StatusOr<Hello> got = ReadHello(b.get(), absl::Now() + absl::Seconds(5));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(got.status().message().find("peer speaks protocol versions 1..1; this daemon speaks 6"),
            std::string::npos)
      << got.status();

  Hello current;
  current.session_id = "s";
  ASSERT_TRUE(
      net::SendAll(a.get(), EncodeHello(0, current), absl::Now() + absl::Seconds(5)).ok());
  EXPECT_TRUE(ReadHello(b.get(), absl::Now() + absl::Seconds(5)).ok());
}

TEST(HandshakeTest, TheHelloAckToAResumeSaysWhereTheStreamGoesOn) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  ASSERT_TRUE(SendHelloAck(b.get(), absl::OkStatus(), 2, deadline, 123456789).ok());
  uint64_t offset = 0;
  ASSERT_TRUE(AwaitHelloAck(a.get(), deadline, &offset).ok());
  EXPECT_EQ(offset, 123456789u);
  // A first connection's HELLO_ACK carries none.
  ASSERT_TRUE(SendHelloAck(b.get(), absl::OkStatus(), 2, deadline).ok());
  ASSERT_TRUE(AwaitHelloAck(a.get(), deadline, &offset).ok());
  EXPECT_EQ(offset, 0u);
}

}  // namespace
}  // namespace migmover::peer
