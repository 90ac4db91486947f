// SendStream's reading of what the destination says mid-stream: its ACKs (version 6) and its
// verdict, over a real socket pair.
#include "transport/stream/send_stream.h"

#include <sys/socket.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"
#include "transport/net/socket.h"
#include "transport/peer/frame_codec.h"

namespace migmover::stream {
namespace {

struct Pair {
  std::unique_ptr<SendStream> s;
  UniqueFd peer;  // The destination's end of the control connection.
};

Pair Make(const peer::ControlKey& key, uint64_t framed) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  std::vector<UniqueFd> socks;
  socks.emplace_back(fds[0]);
  Pair p{std::make_unique<SendStream>(std::move(socks), 3, StreamOptions{}), UniqueFd(fds[1])};
  p.s->out.set_control_key(key);
  p.s->framed = framed;
  return p;
}

peer::ControlKey Key(uint8_t fill) {
  peer::ControlKey k;
  k.bytes.fill(fill);
  return k;
}

void Say(int fd, const std::string& frame) {
  ASSERT_TRUE(net::SendAll(fd, frame, absl::Now() + absl::Seconds(1)).ok());
}

std::string Ack(uint64_t seq, uint64_t offset, const peer::ControlKey& key, uint32_t device = 3) {
  return peer::SealVerdict(peer::EncodeAck(seq, device, offset), &key);
}

TEST(SendStreamTest, AcksAdvanceWhatTheDestinationHasWrittenAndAVerdictStillEndsTheStream) {
  const peer::ControlKey key = Key(7);
  Pair p = Make(key, 64 << 20);
  EXPECT_TRUE(p.s->PeerVerdict().ok());  // Nothing said yet.
  Say(p.peer.get(), Ack(1, 4 << 20, key));
  Say(p.peer.get(), Ack(2, 8 << 20, key));
  EXPECT_TRUE(p.s->PeerVerdict().ok());
  EXPECT_EQ(p.s->acked.load(), 8u << 20);
  EXPECT_EQ(p.s->acks.load(), 2u);
  // The same offset again is no news but no fault (a tick with nothing new written).
  Say(p.peer.get(), Ack(3, 8 << 20, key));
  // Then it gives up: its ERROR is numbered after the ACKs, and read as its verdict.
  Say(p.peer.get(), peer::SealVerdict(peer::EncodeStatusFrame(wire::FrameType::kError, 4, 3,
                                                              {9, "device refused a write"}),
                                      &key));
  absl::Status v = p.s->PeerVerdict();
  EXPECT_EQ(v.code(), absl::StatusCode::kFailedPrecondition) << v;
  EXPECT_NE(v.message().find("device refused a write"), absl::string_view::npos) << v;
  EXPECT_EQ(p.s->acks.load(), 3u);
}

TEST(SendStreamTest, AnAckThatBreaksTheRulesIsDataLossAndAcknowledgesNothing) {
  const peer::ControlKey key = Key(7);
  struct Case {
    const char* what;
    std::string frame;
  };
  const std::vector<Case> cases = {
      {"out of sequence", Ack(2, 1 << 20, key)},
      {"forged seal", Ack(1, 1 << 20, Key(8))},
      {"past the bytes sent", Ack(1, (16 << 20) + 1, key)},
      {"another device's", Ack(1, 1 << 20, key, 4)},
  };
  for (const Case& c : cases) {
    Pair p = Make(key, 16 << 20);
    Say(p.peer.get(), c.frame);
    absl::Status v = p.s->PeerVerdict();
    EXPECT_EQ(v.code(), absl::StatusCode::kDataLoss) << c.what << ": " << v;
    EXPECT_EQ(p.s->acked.load(), 0u) << c.what;
  }
  // Backwards: after 8 MiB, 4 MiB.
  Pair p = Make(key, 16 << 20);
  Say(p.peer.get(), Ack(1, 8 << 20, key));
  Say(p.peer.get(), Ack(2, 4 << 20, key));
  EXPECT_EQ(p.s->PeerVerdict().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(p.s->acked.load(), 8u << 20);
}

}  // namespace
}  // namespace migmover::stream
