#include "transport/peer/heartbeat_connection.h"

#include <sys/socket.h>

#include <atomic>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "transport/net/socket.h"

namespace migmover::peer {
namespace {

struct Pair {
  Pair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    source = std::make_unique<HeartbeatConnection>(UniqueFd(fds[0]),
                                                   HeartbeatConnection::End::kSource);
    destination_fd = fds[1];
    destination = std::make_unique<HeartbeatConnection>(UniqueFd(fds[1]),
                                                        HeartbeatConnection::End::kDestination);
  }
  std::unique_ptr<HeartbeatConnection> source, destination;
  int destination_fd = -1;
  std::atomic<bool> stop{false};
};

TEST(HeartbeatConnectionTest, PingIsAnsweredWithPongInSequence) {
  Pair p;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(p.source->Beat(absl::Now() + absl::Seconds(1), p.stop).ok());
    ASSERT_TRUE(p.destination->AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).ok());
    ASSERT_TRUE(p.destination->Beat(absl::Now() + absl::Seconds(1), p.stop).ok());
    ASSERT_TRUE(p.source->AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).ok());
  }
}

TEST(HeartbeatConnectionTest, SilenceIsDeadlineExceededAndLeavesTheStreamInStep) {
  Pair p;
  EXPECT_EQ(p.source->AwaitBeat(absl::Now() + absl::Milliseconds(50), p.stop).code(),
            absl::StatusCode::kDeadlineExceeded);
  // The timed-out wait consumed nothing: the next beat still reads as frame 1.
  ASSERT_TRUE(p.destination->Beat(absl::Now() + absl::Seconds(1), p.stop).ok());
  EXPECT_TRUE(p.source->AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).ok());
}

TEST(HeartbeatConnectionTest, StopEndsAWaitAtOnce) {
  Pair p;
  std::thread stopper([&] { p.stop = true; });
  const absl::Time start = absl::Now();
  EXPECT_EQ(p.source->AwaitBeat(absl::Now() + absl::Seconds(30), p.stop).code(),
            absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  stopper.join();
}

TEST(HeartbeatConnectionTest, PeerClosingIsUnavailable) {
  Pair p;
  p.destination.reset();
  EXPECT_EQ(p.source->AwaitBeat(absl::Now() + absl::Seconds(5), p.stop).code(),
            absl::StatusCode::kUnavailable);
}

TEST(HeartbeatConnectionTest, AnyOtherFrameIsDataLoss) {
  Pair p;
  // A destination answering with a PING (its own frame 1) is not speaking the protocol.
  ASSERT_TRUE(
      net::SendAll(p.destination_fd, EncodePing(1), absl::Now() + absl::Seconds(1)).ok());
  EXPECT_EQ(p.source->AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).code(),
            absl::StatusCode::kDataLoss);
}

TEST(HeartbeatConnectionTest, ASequenceGapIsDataLoss) {
  Pair p;
  ASSERT_TRUE(
      net::SendAll(p.destination_fd, EncodePong(2), absl::Now() + absl::Seconds(1)).ok());
  EXPECT_EQ(p.source->AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).code(),
            absl::StatusCode::kDataLoss);
}

TEST(HeartbeatConnectionTest, LoadedFramesBeforeAPongAreCollectedInSequence) {
  Pair p;
  ASSERT_TRUE(p.source->Beat(absl::Now() + absl::Seconds(1), p.stop).ok());
  ASSERT_TRUE(p.destination->AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).ok());
  ASSERT_TRUE(p.destination->SendLoaded(2, absl::Now() + absl::Seconds(1), p.stop).ok());
  ASSERT_TRUE(p.destination->SendLoaded(0, absl::Now() + absl::Seconds(1), p.stop).ok());
  ASSERT_TRUE(p.destination->Beat(absl::Now() + absl::Seconds(1), p.stop).ok());
  ASSERT_TRUE(p.source->AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).ok());
  EXPECT_EQ(p.source->TakeLoaded(), (std::vector<uint32_t>{2, 0}));
  EXPECT_TRUE(p.source->TakeLoaded().empty());
  // The beat stays in step after them.
  ASSERT_TRUE(p.source->Beat(absl::Now() + absl::Seconds(1), p.stop).ok());
  ASSERT_TRUE(p.destination->AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).ok());
  ASSERT_TRUE(p.destination->Beat(absl::Now() + absl::Seconds(1), p.stop).ok());
  ASSERT_TRUE(p.source->AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).ok());
}

TEST(HeartbeatConnectionTest, ALoadedFromTheSourceIsDataLoss) {
  Pair p;
  // Only a destination says LOADED; one sent the other way is not the protocol.
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  UniqueFd source_end(fds[0]);
  HeartbeatConnection destination(UniqueFd(fds[1]), HeartbeatConnection::End::kDestination);
  ASSERT_TRUE(net::SendAll(source_end.get(), EncodeLoaded(1, 0), absl::Now() + absl::Seconds(1))
                  .ok());
  EXPECT_EQ(destination.AwaitBeat(absl::Now() + absl::Seconds(1), p.stop).code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace migmover::peer
