#include "transport/stream/stream_rules.h"

#include <atomic>
#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {
namespace {

using ::testing::HasSubstr;
using wire::FrameHeader;
using wire::FrameType;
using wire::Phase;

FrameHeader Header(FrameType type, uint64_t seq, Phase phase = Phase::kNone, uint32_t length = 0,
                   uint64_t offset = 0, uint32_t device = 3) {
  FrameHeader h{};
  h.magic = wire::kFrameMagic;
  h.type = static_cast<uint8_t>(type);
  h.phase = static_cast<uint8_t>(phase);
  h.device = device;
  h.length = length;
  h.seq = seq;
  h.offset = offset;
  return h;
}

FrameHeader Data(uint64_t seq, Phase phase, uint64_t offset, uint32_t length = 100) {
  return Header(FrameType::kData, seq, phase, length, offset);
}

// END_STREAM's payload, as the codec writes it.
std::string EndPayload(uint64_t total) {
  peer::EndStream end;
  end.total_bytes = total;
  const std::string frame = peer::EncodeEndStream(0, 3, end);
  return frame.substr(wire::kFrameHeaderSize);
}

TEST(StreamRulesTest, AWellFormedStreamPasses) {
  IncomingStream in(3, 1, 1);
  ASSERT_TRUE(in.OnHeader(0, Data(1, Phase::kPreCopy, 0), 0).ok());
  ASSERT_TRUE(in.OnHeader(0, Header(FrameType::kKeepalive, 2), 100).ok());
  ASSERT_TRUE(in.OnHeader(0, Header(FrameType::kEndPhase, 3, Phase::kPreCopy, 0, 100), 100).ok());
  EXPECT_EQ(in.precopy_phases_ended(), 1u);
  auto f = in.OnHeader(0, Data(4, Phase::kStopCopy, 100), 100);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->data_length, 100u);
  const std::string end = EndPayload(200);
  auto e = in.OnHeader(0, Header(FrameType::kEndStream, 5, Phase::kNone, end.size()), 200);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->needs_payload);
  ASSERT_TRUE(
      in.OnEndStream(Header(FrameType::kEndStream, 5, Phase::kNone, end.size()), end, 200).ok());
  auto done = in.CheckComplete(200, std::nullopt);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_FALSE(*done) << "no digest was sent: nothing checked";
}

TEST(StreamRulesTest, SequenceNumbersCountPerConnection) {
  IncomingStream in(3, 2, 1);
  ASSERT_TRUE(in.OnHeader(1, Data(1, Phase::kStopCopy, 100), 0).ok());
  ASSERT_TRUE(in.OnHeader(0, Data(1, Phase::kStopCopy, 0), 0).ok());
  auto bad = in.OnHeader(1, Data(3, Phase::kStopCopy, 200), 200);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("frame sequence 3, expected 2"));
}

TEST(StreamRulesTest, PreCopyDataAfterThePreCopyPhaseEndedIsRefused) {
  IncomingStream in(3, 1, 0);
  ASSERT_TRUE(in.OnHeader(0, Header(FrameType::kEndPhase, 0, Phase::kPreCopy), 0).ok());
  auto bad = in.OnHeader(0, Data(1, Phase::kPreCopy, 0), 0);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("after the PRE_COPY phase ended"));
}

TEST(StreamRulesTest, PreCopyDataAfterStopCopyDataOnAConnectionIsRefused) {
  IncomingStream in(3, 2, 1);
  ASSERT_TRUE(in.OnHeader(1, Data(1, Phase::kStopCopy, 0), 0).ok());
  // Another connection may still carry PRE_COPY stripes: only this one's order counts.
  ASSERT_TRUE(in.OnHeader(0, Data(1, Phase::kPreCopy, 100), 100).ok());
  auto bad = in.OnHeader(1, Data(2, Phase::kPreCopy, 200), 200);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
}

TEST(StreamRulesTest, EndPhaseComesOnceAndOnlyForPreCopy) {
  {
    IncomingStream in(3, 1, 0);
    ASSERT_TRUE(in.OnHeader(0, Header(FrameType::kEndPhase, 0, Phase::kPreCopy), 0).ok());
    EXPECT_FALSE(in.OnHeader(0, Header(FrameType::kEndPhase, 1, Phase::kPreCopy), 0).ok());
  }
  {
    IncomingStream in(3, 1, 0);
    EXPECT_FALSE(in.OnHeader(0, Header(FrameType::kEndPhase, 0, Phase::kStopCopy), 0).ok());
  }
}

TEST(StreamRulesTest, InitialDataSentComesOnceInPreCopyAfterItsDataAndIsReported) {
  std::atomic<uint64_t> end{UINT64_MAX};
  {
    IncomingStream in(3, 1, 1);
    in.set_initial_end_out(&end);
    ASSERT_TRUE(in.OnHeader(0, Data(1, Phase::kPreCopy, 0), 0).ok());
    // Before its data has all come: refused.
    EXPECT_FALSE(
        in.OnHeader(0, Header(FrameType::kInitialDataSent, 2, Phase::kPreCopy, 0, 50), 100).ok());
  }
  IncomingStream in(3, 1, 1);
  in.set_initial_end_out(&end);
  ASSERT_TRUE(in.OnHeader(0, Data(1, Phase::kPreCopy, 0), 0).ok());
  auto f = in.OnHeader(0, Header(FrameType::kInitialDataSent, 2, Phase::kPreCopy, 0, 100), 100);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_FALSE(f->needs_payload);
  EXPECT_EQ(f->data_length, 0u);
  EXPECT_EQ(end.load(), 100u);
  // Once only.
  EXPECT_FALSE(
      in.OnHeader(0, Header(FrameType::kInitialDataSent, 3, Phase::kPreCopy, 0, 100), 100).ok());
}

// Phases are placed by offset: after a resume the source says its marks again, before it sends
// its held frames again, PRE_COPY ones among them.
TEST(StreamRulesTest, AfterAResumeTheMarksComeAgainAndHeldPreCopyFramesStillPass) {
  std::atomic<uint64_t> end{UINT64_MAX};
  IncomingStream in(3, 1, 1);
  in.set_initial_end_out(&end);
  ASSERT_TRUE(in.OnHeader(0, Data(1, Phase::kPreCopy, 0), 0).ok());
  ASSERT_TRUE(
      in.OnHeader(0, Header(FrameType::kInitialDataSent, 2, Phase::kPreCopy, 0, 100), 100).ok());
  ASSERT_TRUE(in.OnHeader(0, Data(3, Phase::kPreCopy, 100), 100).ok());
  ASSERT_TRUE(in.OnHeader(0, Header(FrameType::kEndPhase, 4, Phase::kPreCopy, 0, 200), 200).ok());
  // Without a resume a repeat is a violation.
  EXPECT_FALSE(
      in.OnHeader(0, Header(FrameType::kEndPhase, 5, Phase::kPreCopy, 0, 200), 200).ok());

  // Only the first 100 bytes were written: the stream goes on from there.
  in.Reconnected(1, 1, 100);
  auto a = in.OnHeader(0, Header(FrameType::kInitialDataSent, 1, Phase::kPreCopy, 0, 100), 100);
  EXPECT_TRUE(a.ok()) << a.status();
  auto b = in.OnHeader(0, Header(FrameType::kEndPhase, 2, Phase::kPreCopy, 0, 200), 100);
  EXPECT_TRUE(b.ok()) << b.status();
  auto c = in.OnHeader(0, Data(3, Phase::kPreCopy, 100), 100);
  EXPECT_TRUE(c.ok()) << c.status() << ": a held PRE_COPY frame before END_PHASE's offset";
  EXPECT_TRUE(in.OnHeader(0, Data(4, Phase::kStopCopy, 200), 200).ok());
  EXPECT_EQ(end.load(), 100u);
  EXPECT_EQ(in.precopy_phases_ended(), 1u);

  // A mark said differently, or PRE_COPY data past where PRE_COPY ended, is refused.
  in.Reconnected(1, 1, 300);
  EXPECT_FALSE(
      in.OnHeader(0, Header(FrameType::kEndPhase, 1, Phase::kPreCopy, 0, 250), 300).ok());
  IncomingStream other(3, 1, 1);
  ASSERT_TRUE(other.OnHeader(0, Data(1, Phase::kPreCopy, 0), 0).ok());
  ASSERT_TRUE(
      other.OnHeader(0, Header(FrameType::kEndPhase, 2, Phase::kPreCopy, 0, 100), 100).ok());
  other.Reconnected(1, 1, 100);
  auto late = other.OnHeader(0, Data(1, Phase::kPreCopy, 100), 100);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDataLoss);
  auto early = other.OnHeader(0, Data(1, Phase::kStopCopy, 50), 100);
  EXPECT_FALSE(early.ok());
}

TEST(StreamRulesTest, NothingFollowsEndStreamOnTheFirstConnection) {
  IncomingStream in(3, 1, 0);
  const std::string end = EndPayload(0);
  const FrameHeader h = Header(FrameType::kEndStream, 0, Phase::kNone, end.size());
  ASSERT_TRUE(in.OnHeader(0, h, 0).ok());
  ASSERT_TRUE(in.OnEndStream(h, end, 0).ok());
  auto bad = in.OnHeader(0, Header(FrameType::kKeepalive, 1), 0);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("after END_STREAM"));
}

// After the destination's COMMIT(0) the source may only confirm, keep the destination waiting,
// or abandon; and only once its stream ended.
TEST(StreamRulesTest, AfterCommitOnlyConfirmKeepaliveOrErrorAndOnlyAfterEndStream) {
  IncomingStream early(3, 1, 1);
  auto too_soon = early.OnSettle(Header(FrameType::kConfirm, 1), "");
  EXPECT_EQ(too_soon.status().code(), absl::StatusCode::kDataLoss);

  auto ended = [] {
    IncomingStream in(3, 1, 1);
    const std::string end = EndPayload(0);
    const FrameHeader h = Header(FrameType::kEndStream, 1, Phase::kNone, end.size());
    EXPECT_TRUE(in.OnHeader(0, h, 0).ok());
    EXPECT_TRUE(in.OnEndStream(h, end, 0).ok());
    return in;
  };
  IncomingStream in = ended();
  const std::string seal(wire::kVerdictSealSize, '\0');  // No key here: the seal is stripped.
  auto k = in.OnSettle(Header(FrameType::kKeepalive, 2, Phase::kNone, seal.size()), seal);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_FALSE(*k) << "a KEEPALIVE settles nothing";
  auto c = in.OnSettle(Header(FrameType::kConfirm, 3, Phase::kNone, seal.size()), seal);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(*c);

  IncomingStream wrong_seq = ended();
  EXPECT_EQ(wrong_seq.OnSettle(Header(FrameType::kConfirm, 7), "").status().code(),
            absl::StatusCode::kDataLoss);
  IncomingStream data = ended();
  EXPECT_EQ(data.OnSettle(Data(2, Phase::kStopCopy, 0), "").status().code(),
            absl::StatusCode::kDataLoss);
  IncomingStream error = ended();
  const std::string why = peer::SealVerdict(
      peer::EncodeStatusFrame(FrameType::kError, 2, 3, {10, "source gave up"}), nullptr);
  auto e = error.OnSettle(Header(FrameType::kError, 2, Phase::kNone,
                                 why.size() - wire::kFrameHeaderSize),
                          why.substr(wire::kFrameHeaderSize));
  EXPECT_EQ(e.status().code(), absl::StatusCode::kAborted) << e.status();
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("source gave up"));
}

TEST(StreamRulesTest, OffsetsMustTileTheStream) {
  IncomingStream one(3, 1, 0);
  auto gap = one.OnHeader(0, Data(0, Phase::kStopCopy, 4096), 0);
  EXPECT_THAT(std::string(gap.status().message()), HasSubstr("offset 4096, expected 0"));
  IncomingStream striped(3, 2, 1);
  ASSERT_TRUE(striped.OnHeader(1, Data(1, Phase::kStopCopy, 100), 0).ok());
  auto back = striped.OnHeader(1, Data(2, Phase::kStopCopy, 50), 0);
  EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
}

TEST(StreamRulesTest, ControlFramesOnlyOnTheFirstConnectionAndOnlyForThisDevice) {
  IncomingStream in(3, 2, 1);
  EXPECT_FALSE(in.OnHeader(1, Header(FrameType::kKeepalive, 1), 0).ok());
  IncomingStream other(3, 1, 1);
  FrameHeader h = Data(1, Phase::kStopCopy, 0);
  h.device = 4;
  EXPECT_THAT(std::string(other.OnHeader(0, h, 0).status().message()),
              HasSubstr("frame for device 4"));
}

// What the source's writer builds is exactly what the destination's checker takes: one set of
// rules, both ends.
TEST(StreamRulesTest, WhatTheWriterSendsTheCheckerAccepts) {
  OutgoingStream out(3, 2, 0);
  IncomingStream in(3, 2, 1);  // Each connection's HELLO (0) is read before the stream starts.
  peer::Hello hello;
  hello.session_id = "s";
  hello.device = 3;
  hello.device_count = 4;
  for (size_t k = 0; k < 2; ++k) {
    const std::string h = out.Hello(k, hello);
    auto decoded = peer::DecodeHeader(
        std::span<const uint8_t, wire::kFrameHeaderSize>(
            reinterpret_cast<const uint8_t*>(h.data()), wire::kFrameHeaderSize));
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->seq, 0u);
  }
  auto header_of = [](const std::string& frame) {
    return *peer::DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize>(
        reinterpret_cast<const uint8_t*>(frame.data()), wire::kFrameHeaderSize));
  };
  uint64_t received = 0;
  ASSERT_TRUE(in.OnHeader(1, out.Data(1, Phase::kPreCopy, 100, 100), received).ok());
  ASSERT_TRUE(in.OnHeader(0, out.Data(0, Phase::kPreCopy, 100, 0), received).ok());
  received = 200;
  ASSERT_TRUE(in.OnHeader(0, header_of(out.EndPhase(Phase::kPreCopy, 200)), received).ok());
  ASSERT_TRUE(in.OnHeader(0, header_of(out.Keepalive()), received).ok());
  ASSERT_TRUE(in.OnHeader(0, out.Data(0, Phase::kStopCopy, 50, 200), received).ok());
  received = 250;
  peer::StreamTag tag;
  tag.fill(99);
  const std::string end = out.EndStream(250, tag);
  const FrameHeader eh = header_of(end);
  ASSERT_TRUE(in.OnHeader(0, eh, received).ok());
  ASSERT_TRUE(in.OnEndStream(eh, end.substr(wire::kFrameHeaderSize), received).ok());
  auto checked = in.CheckComplete(250, tag);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_TRUE(*checked);
}

TEST(StreamRulesTest, TotalsAndDigestAreChecked) {
  IncomingStream in(3, 1, 0);
  peer::EndStream end;
  end.total_bytes = 10;
  end.digest.fill(77);
  end.digest_kind = wire::DigestKind::kPoly1305;
  const std::string frame = peer::EncodeEndStream(0, 3, end);
  const std::string payload = frame.substr(wire::kFrameHeaderSize);
  const FrameHeader h = Header(FrameType::kEndStream, 0, Phase::kNone, payload.size());
  EXPECT_FALSE(in.OnEndStream(h, payload, 9).ok()) << "one connection: the total is all there";
  ASSERT_TRUE(in.OnEndStream(h, payload, 10).ok());
  peer::StreamTag other = end.digest;
  other[15] ^= 1;
  EXPECT_THAT(std::string(in.CheckComplete(10, other).status().message()), HasSubstr("digest"));
  auto ok = in.CheckComplete(10, end.digest);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(*ok);
  // A receiver that saw no byte in userspace (spliced) checks nothing.
  auto unchecked = in.CheckComplete(10, std::nullopt);
  ASSERT_TRUE(unchecked.ok());
  EXPECT_FALSE(*unchecked);
}

// CONFIRM passes the destination's point of no return: only the source, which holds the
// stream's control key, can send one. An unsealed or wrongly sealed one is refused.
TEST(StreamRulesTest, AConfirmMustCarryTheStreamsSeal) {
  peer::ControlKey key;
  key.bytes.fill(0x5e);
  auto ended = [&] {
    IncomingStream in(3, 1, 1);
    in.set_control_key(key);
    const std::string end = EndPayload(0);
    const FrameHeader h = Header(FrameType::kEndStream, 1, Phase::kNone, end.size());
    EXPECT_TRUE(in.OnHeader(0, h, 0).ok());
    EXPECT_TRUE(in.OnEndStream(h, end, 0).ok());
    return in;
  };
  OutgoingStream out(3, 1, 2);
  out.set_control_key(key);
  const std::string confirm = out.Confirm();
  FrameHeader h;
  std::memcpy(&h, confirm.data(), sizeof(h));
  IncomingStream good = ended();
  auto ok = good.OnSettle(h, confirm.substr(wire::kFrameHeaderSize));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(*ok);

  const std::string forged = peer::SealVerdict(peer::EncodeConfirm(2, 3), nullptr);
  std::memcpy(&h, forged.data(), sizeof(h));
  IncomingStream bad = ended();
  auto refused = bad.OnSettle(h, forged.substr(wire::kFrameHeaderSize));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << refused.status();
}

// After COMMIT the destination holds a committed device and waits for the source's word, each
// KEEPALIVE restarting the wait. An unsealed one (anyone on a plaintext path can inject it, with
// the right sequence number) would keep it waiting forever for a source long gone.
TEST(StreamRulesTest, AKeepaliveWhileSettlingMustCarryTheStreamsSeal) {
  peer::ControlKey key;
  key.bytes.fill(0x5e);
  auto ended = [&] {
    IncomingStream in(3, 1, 1);
    in.set_control_key(key);
    const std::string end = EndPayload(0);
    const FrameHeader h = Header(FrameType::kEndStream, 1, Phase::kNone, end.size());
    EXPECT_TRUE(in.OnHeader(0, h, 0).ok());
    EXPECT_TRUE(in.OnEndStream(h, end, 0).ok());
    return in;
  };
  // What the source sends: its KEEPALIVEs are sealed.
  OutgoingStream out(3, 1, 1);
  out.set_control_key(key);
  out.EndStream(0, std::nullopt);
  const std::string keepalive = out.Keepalive();
  FrameHeader h;
  std::memcpy(&h, keepalive.data(), sizeof(h));
  EXPECT_EQ(h.length, wire::kVerdictSealSize);
  EXPECT_TRUE(peer::DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize>(
                                     reinterpret_cast<const uint8_t*>(keepalive.data()),
                                     wire::kFrameHeaderSize))
                  .ok())
      << "a sealed KEEPALIVE is a valid frame";
  IncomingStream good = ended();
  auto waits = good.OnSettle(h, keepalive.substr(wire::kFrameHeaderSize));
  ASSERT_TRUE(waits.ok()) << waits.status();
  EXPECT_FALSE(*waits) << "a KEEPALIVE settles nothing";

  IncomingStream forged = ended();
  auto refused = forged.OnSettle(Header(FrameType::kKeepalive, 2), "");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << "an unsealed KEEPALIVE";
  const std::string other_key = peer::SealVerdict(peer::EncodeKeepalive(2, 3), nullptr);
  std::memcpy(&h, other_key.data(), sizeof(h));
  IncomingStream zeros = ended();
  EXPECT_EQ(zeros.OnSettle(h, other_key.substr(wire::kFrameHeaderSize)).status().code(),
            absl::StatusCode::kDataLoss)
      << "a KEEPALIVE sealed without the stream's key";

}

// While the stream runs each KEEPALIVE restarts the destination's idle timer: one nobody sealed
// could keep a destination whose source is gone waiting, so it is refused there too.
TEST(StreamRulesTest, AKeepaliveWhileStreamingMustCarryTheStreamsSeal) {
  peer::ControlKey key;
  key.bytes.fill(0x5e);
  OutgoingStream out(3, 1, 1);
  out.set_control_key(key);
  const std::string keepalive = out.Keepalive();
  ASSERT_EQ(keepalive.size(), wire::kFrameHeaderSize + wire::kVerdictSealSize);
  FrameHeader h;
  std::memcpy(&h, keepalive.data(), sizeof(h));
  IncomingStream in(3, 1, 1);
  in.set_control_key(key);
  auto f = in.OnHeader(0, h, 0);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->needs_payload) << "its seal is read and checked";
  EXPECT_TRUE(in.OnKeepalive(h, keepalive.substr(wire::kFrameHeaderSize)).ok());
  const std::string forged = peer::SealVerdict(peer::EncodeKeepalive(1, 3), nullptr);
  std::memcpy(&h, forged.data(), sizeof(h));
  EXPECT_EQ(in.OnKeepalive(h, forged.substr(wire::kFrameHeaderSize)).code(),
            absl::StatusCode::kDataLoss);
  // A bare KEEPALIVE (protocol 3's) is not a frame at all.
  const std::string bare = peer::EncodeKeepalive(2, 3);
  EXPECT_FALSE(peer::DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize>(
                                      reinterpret_cast<const uint8_t*>(bare.data()),
                                      wire::kFrameHeaderSize))
                   .ok());
}

// A device's failure is told apart from the connection's, whatever its code: the destination
// lingers for a source that can still hear its verdict.
TEST(StreamErrorsTest, ADeviceSideFailureIsMarkedAsSuch) {
  const absl::Status epipe = DeviceSideError(absl::UnavailableError("write(data fd 9): EPIPE"));
  EXPECT_TRUE(IsDeviceSide(epipe));
  EXPECT_EQ(epipe.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(IsDeviceSide(absl::UnavailableError("source closed the connection")));
  EXPECT_TRUE(DeviceSideError(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace migmover::stream
