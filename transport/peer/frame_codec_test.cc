#include "transport/peer/frame_codec.h"

#include <cstring>
#include <random>

#include "gtest/gtest.h"

namespace migmover::peer {
namespace {

FrameHeader Data(uint32_t length) {
  return FrameHeader{wire::kFrameMagic, static_cast<uint8_t>(FrameType::kData),
                     static_cast<uint8_t>(Phase::kStopCopy), 0, 3, length, 9, 4096};
}

absl::StatusOr<FrameHeader> RoundTrip(const FrameHeader& h) {
  uint8_t buf[wire::kFrameHeaderSize];
  EncodeHeader(h, buf);
  return DecodeHeader(buf);
}

TEST(FrameCodecTest, DataHeaderRoundTrips) {
  auto h = RoundTrip(Data(1 << 20));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->device, 3u);
  EXPECT_EQ(h->length, 1u << 20);
  EXPECT_EQ(h->seq, 9u);
  EXPECT_EQ(h->offset, 4096u);
}

TEST(FrameCodecTest, WireLayoutIsLittleEndianAtFixedOffsets) {
  uint8_t buf[wire::kFrameHeaderSize];
  EncodeHeader(Data(0x01020304), buf);
  EXPECT_EQ(std::memcmp(buf, "MMF1", 4), 0);
  EXPECT_EQ(buf[4], 3);   // type DATA
  EXPECT_EQ(buf[5], 2);   // phase STOP_COPY
  EXPECT_EQ(buf[8], 3);   // device
  EXPECT_EQ(buf[12], 0x04);
  EXPECT_EQ(buf[15], 0x01);
  EXPECT_EQ(buf[16], 9);  // seq
  EXPECT_EQ(buf[25], 0x10);  // offset 4096
}

TEST(FrameCodecTest, RejectsOutOfBoundFields) {
  FrameHeader h = Data(wire::kMaxDataLength + 1);
  EXPECT_EQ(RoundTrip(h).status().code(), absl::StatusCode::kDataLoss);
  h = Data(0);
  EXPECT_FALSE(RoundTrip(h).ok());
  h = Data(10);
  h.magic = 0x12345678;
  EXPECT_NE(RoundTrip(h).status().message().find("bad magic"), std::string::npos);
  h = Data(10);
  h.type = 99;
  EXPECT_FALSE(RoundTrip(h).ok());
  h = Data(10);
  h.phase = 7;
  EXPECT_FALSE(RoundTrip(h).ok());
  h = Data(10);
  h.phase = 0;
  EXPECT_FALSE(RoundTrip(h).ok());
  h = Data(10);
  h.flags = 1;
  EXPECT_FALSE(RoundTrip(h).ok());
  h = Data(10);
  h.device = wire::kMaxDevicesPerSession;
  EXPECT_FALSE(RoundTrip(h).ok());
  h = Data(10);
  h.type = static_cast<uint8_t>(FrameType::kCommit);
  h.phase = 0;
  h.offset = 0;
  h.length = wire::kMaxControlLength + 1;
  EXPECT_FALSE(RoundTrip(h).ok());
  h.length = 4;  // Shorter than the status payload.
  EXPECT_FALSE(RoundTrip(h).ok());
  h.length = 8;  // The status payload, but no seal.
  EXPECT_FALSE(RoundTrip(h).ok());
  h.length = 8 + wire::kVerdictSealSize;
  h.offset = 5;  // Offsets only on DATA.
  EXPECT_FALSE(RoundTrip(h).ok());
}

std::pair<FrameHeader, std::string> Split(const std::string& frame) {
  auto h = DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize>(
      reinterpret_cast<const uint8_t*>(frame.data()), wire::kFrameHeaderSize));
  EXPECT_TRUE(h.ok()) << h.status();
  return {*h, frame.substr(wire::kFrameHeaderSize)};
}

TEST(FrameCodecTest, ReadinessFramesCarryOnlyWhatTheyMay) {
  auto [sent, sent_payload] = Split(EncodeInitialDataSent(7, 2, 123456));
  EXPECT_EQ(sent.type, static_cast<uint8_t>(FrameType::kInitialDataSent));
  EXPECT_EQ(sent.offset, 123456u);
  EXPECT_EQ(sent.phase, static_cast<uint8_t>(Phase::kPreCopy));
  EXPECT_EQ(sent.device, 2u);
  EXPECT_TRUE(sent_payload.empty());
  auto [loaded, loaded_payload] = Split(EncodeLoaded(3, 5));
  EXPECT_EQ(loaded.type, static_cast<uint8_t>(FrameType::kLoaded));
  EXPECT_EQ(loaded.device, 5u);
  // INITIAL_DATA_SENT only in PRE_COPY, without payload; LOADED without offset or payload.
  FrameHeader h = sent;
  h.phase = static_cast<uint8_t>(Phase::kStopCopy);
  EXPECT_FALSE(RoundTrip(h).ok());
  h = sent;
  h.length = 1;
  EXPECT_FALSE(RoundTrip(h).ok());
  h = loaded;
  h.offset = 1;
  EXPECT_FALSE(RoundTrip(h).ok());
  h = loaded;
  h.length = 1;
  EXPECT_FALSE(RoundTrip(h).ok());
  h = loaded;
  h.type = static_cast<uint8_t>(FrameType::kAck) + 1;
  EXPECT_FALSE(RoundTrip(h).ok());
}

TEST(FrameCodecTest, AnAckCarriesTheOffsetWrittenUnderItsSeal) {
  ControlKey key;
  key.bytes.fill(0x21);
  const std::string sealed = SealVerdict(EncodeAck(4, 6, 8u << 20), &key);
  auto [h, p] = Split(sealed);
  auto decoded = RoundTrip(h);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->type, static_cast<uint8_t>(FrameType::kAck));
  EXPECT_STREQ(FrameTypeName(decoded->type), "ACK");
  EXPECT_EQ(decoded->offset, 8u << 20);
  EXPECT_EQ(decoded->device, 6u);
  auto body = OpenVerdict(h, p, &key);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_TRUE(body->empty());
  // The offset is under the seal: a relay that raises it is caught.
  std::string raised = sealed;
  raised[24] ^= 1;
  auto [rh, rp] = Split(raised);
  EXPECT_FALSE(OpenVerdict(rh, rp, &key).ok());
  // The seal alone: no more, no less.
  FrameHeader bad = h;
  bad.length = 0;
  EXPECT_FALSE(RoundTrip(bad).ok());
  bad.length = wire::kVerdictSealSize + 1;
  EXPECT_FALSE(RoundTrip(bad).ok());
}

TEST(FrameCodecTest, AResumingHelloCarriesItsNumberUnderTheProof) {
  Hello hello;
  hello.session_id = "vm-42";
  hello.device_count = 2;
  hello.device = 1;
  hello.stream_count = 2;
  hello.stream = 1;
  hello.token[0] = 0x5a;
  hello.nonce[0] = 0x11;
  hello.resume = 3;
  const std::string frame = EncodeHello(0, hello);
  auto [h, payload] = Split(frame);
  EXPECT_EQ(h.flags, wire::kHelloResume);
  EXPECT_EQ(h.offset, 3u);
  ASSERT_TRUE(RoundTrip(h).ok());
  auto back = ParseHello(h, payload);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->resume, 3u);
  EXPECT_TRUE(back->ProofValid(hello.token));
  // An older resume's HELLO played again with a new number: the proof no longer holds.
  FrameHeader renumbered = h;
  renumbered.offset = 4;
  auto replayed = ParseHello(renumbered, payload);
  ASSERT_TRUE(replayed.ok());
  EXPECT_FALSE(replayed->ProofValid(hello.token));
  // Without the flag, the same frame is a first connection, and its proof fails too.
  FrameHeader unflagged = h;
  unflagged.flags = 0;
  unflagged.offset = 0;
  auto first = ParseHello(unflagged, payload);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->resume, 0u);
  EXPECT_FALSE(first->ProofValid(hello.token));
  // Numbered from 1; never a heartbeat's or a DPDK link's; an offset only with the flag.
  FrameHeader zero = h;
  zero.offset = 0;
  EXPECT_FALSE(ParseHello(zero, payload).ok());
  Hello beat = hello;
  beat.heartbeat = true;
  beat.device = beat.stream = 0;
  beat.stream_count = 1;
  auto [bh, bp] = Split(EncodeHello(0, beat));
  EXPECT_FALSE(ParseHello(bh, bp).ok());
  Hello link = hello;
  link.link = 9;
  link.stream = 0;
  link.stream_count = 1;
  auto [lh, lp] = Split(EncodeHello(0, link));
  EXPECT_FALSE(ParseHello(lh, lp).ok());
  FrameHeader stray = unflagged;
  stray.offset = 5;
  EXPECT_FALSE(RoundTrip(stray).ok());
}

TEST(FrameCodecTest, HelloRoundTripsAndIsBounded) {
  Hello hello;
  hello.session_id = "vm-42.migration-7";
  hello.device_count = 4;
  hello.device = 2;
  hello.token[0] = 0xab;
  hello.nonce[3] = 0xcd;
  auto [h, payload] = Split(EncodeHello(0, hello));
  auto back = ParseHello(h, payload);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->session_id, "vm-42.migration-7");
  EXPECT_EQ(back->device, 2u);
  EXPECT_EQ(back->device_count, 4u);
  EXPECT_EQ(back->nonce, hello.nonce);
  EXPECT_EQ(back->token, SessionSecretBytes{}) << "the secret never travels";
  EXPECT_TRUE(back->ProofValid(hello.token));

  hello.stream = 1;
  hello.stream_count = 3;
  {
    auto [hs, ps] = Split(EncodeHello(0, hello));
    auto st = ParseHello(hs, ps);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->stream, 1);
    EXPECT_EQ(st->stream_count, 3);
  }
  hello.stream = 3;  // Not below stream_count.
  {
    auto [hs, ps] = Split(EncodeHello(0, hello));
    EXPECT_FALSE(ParseHello(hs, ps).ok());
  }
  hello.stream = 0;
  hello.stream_count = wire::kMaxStreamsPerDevice + 1;
  {
    auto [hs, ps] = Split(EncodeHello(0, hello));
    EXPECT_FALSE(ParseHello(hs, ps).ok());
  }
  hello.stream_count = 1;
  hello.link = 0x1234'5678;  // The stream travels on a DPDK link.
  {
    auto [hs, ps] = Split(EncodeHello(0, hello));
    auto st = ParseHello(hs, ps);
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->link, 0x1234'5678u);
  }
  hello.stream_count = 2;  // A link stream is not striped.
  {
    auto [hs, ps] = Split(EncodeHello(0, hello));
    auto st = ParseHello(hs, ps);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.status().message().find("cannot be striped"), std::string::npos) << st.status();
  }
  hello.stream_count = 1;
  hello.link = 0;
  hello.device = 4;  // Not below device_count.
  auto [h2, p2] = Split(EncodeHello(0, hello));
  EXPECT_FALSE(ParseHello(h2, p2).ok());

  hello.device = 0;
  hello.session_id = "has space";
  auto [h3, p3] = Split(EncodeHello(0, hello));
  EXPECT_FALSE(ParseHello(h3, p3).ok());

  hello.session_id = std::string(wire::kMaxSessionIdLength + 1, 'x');
  std::string too_long = EncodeHello(0, hello);
  auto decoded = DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize>(
      reinterpret_cast<const uint8_t*>(too_long.data()), wire::kFrameHeaderSize));
  EXPECT_FALSE(decoded.ok());
}

TEST(FrameCodecTest, HeartbeatHelloCarriesNoStreamAndOnlyHelloTakesTheFlag) {
  Hello hello;
  hello.session_id = "s1";
  hello.device_count = 4;
  hello.heartbeat = true;
  {
    auto [h, payload] = Split(EncodeHello(0, hello));
    EXPECT_EQ(h.flags, wire::kHelloHeartbeat);
    auto back = ParseHello(h, payload);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(back->heartbeat);
  }
  hello.device = 1;  // A heartbeat names no device.
  {
    auto [h, payload] = Split(EncodeHello(0, hello));
    EXPECT_EQ(ParseHello(h, payload).status().code(), absl::StatusCode::kDataLoss);
  }
  hello.device = 0;
  hello.link = 7;
  {
    auto [h, payload] = Split(EncodeHello(0, hello));
    EXPECT_EQ(ParseHello(h, payload).status().code(), absl::StatusCode::kDataLoss);
  }
  // PING and PONG are empty control frames; the heartbeat flag on anything but HELLO is refused.
  for (const std::string& f : {EncodePing(3), EncodePong(3)}) {
    auto [h, payload] = Split(f);
    EXPECT_EQ(h.length, 0u);
    EXPECT_EQ(h.seq, 3u);
  }
  FrameHeader ping{wire::kFrameMagic, static_cast<uint8_t>(FrameType::kPing), 0,
                   wire::kHelloHeartbeat, 0, 0, 1, 0};
  EXPECT_EQ(RoundTrip(ping).status().code(), absl::StatusCode::kDataLoss);
  ping.flags = 0;
  EXPECT_TRUE(RoundTrip(ping).ok());
  ping.length = 1;
  EXPECT_FALSE(RoundTrip(ping).ok());
}

// Text from a peer reaches logs and agents: a newline in it must not forge a log line, nor any
// other control byte reach a terminal.
TEST(FrameCodecTest, PeerTextHasItsControlBytesEscaped) {
  PeerStatus forged{13, "write failed\n2026-11-28T00:00:00.000 I migmover: session s: SUCCEEDED\x1b[2J"};
  auto [h, payload] = Split(SealVerdict(EncodeStatusFrame(FrameType::kError, 1, 0, forged), nullptr));
  auto st = ParseStatus(h, *OpenVerdict(h, payload, nullptr));
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->message.find('\n'), std::string::npos) << st->message;
  EXPECT_EQ(st->message.find('\x1b'), std::string::npos) << st->message;
  EXPECT_EQ(st->message,
            "write failed\\x0a2026-11-28T00:00:00.000 I migmover: session s: SUCCEEDED\\x1b[2J");
  // Printable text, UTF-8 included, passes unchanged.
  PeerStatus plain{5, "device 'd0': write(data fd 9): EIO \u2014 r\u00e9sum\u00e9"};
  auto [h2, p2] = Split(SealVerdict(EncodeStatusFrame(FrameType::kCommit, 1, 0, plain), nullptr));
  EXPECT_EQ(ParseStatus(h2, *OpenVerdict(h2, p2, nullptr))->message, plain.message);
}

TEST(FrameCodecTest, StatusAndEndStreamRoundTrip) {
  auto [h, payload] = Split(SealVerdict(
      EncodeStatusFrame(FrameType::kCommit, 5, 1, PeerStatus{9, "RESUMING->STOP: EIO"}), nullptr));
  auto st = ParseStatus(h, *OpenVerdict(h, payload, nullptr));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->code, 9u);
  EXPECT_EQ(st->message, "RESUMING->STOP: EIO");

  EndStream sent;
  sent.total_bytes = 123;
  sent.digest_kind = wire::DigestKind::kPoly1305;
  sent.digest[0] = 0xfe;
  sent.digest[15] = 0xed;
  auto [h2, p2] = Split(EncodeEndStream(6, 1, sent));
  auto end = ParseEndStream(h2, p2);
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(end->total_bytes, 123u);
  EXPECT_EQ(end->digest, sent.digest);
  EXPECT_EQ(end->digest_kind, wire::DigestKind::kPoly1305);

  std::string bad = EncodeEndStream(6, 1, EndStream{});
  bad[wire::kFrameHeaderSize + 8] = 9;  // digest kind 9
  auto [h3, p3] = Split(bad);
  EXPECT_FALSE(ParseEndStream(h3, p3).ok());
  // Version 2's unkeyed XXH3-64: anyone on the path could fix it.
  bad[wire::kFrameHeaderSize + 8] = 1;
  auto [h5, p5] = Split(bad);
  auto unkeyed = ParseEndStream(h5, p5);
  EXPECT_FALSE(unkeyed.ok());
  EXPECT_NE(unkeyed.status().message().find("unkeyed"), absl::string_view::npos);

  std::string bad_code =
      SealVerdict(EncodeStatusFrame(FrameType::kError, 1, 0, PeerStatus{77, "x"}), nullptr);
  auto [h4, p4] = Split(bad_code);
  EXPECT_FALSE(ParseStatus(h4, *OpenVerdict(h4, p4, nullptr)).ok());
}

// Whatever arrives, the decoder either refuses it or returns a header within every bound.
TEST(FrameCodecTest, RandomHeadersAreRefusedOrBounded) {
  std::mt19937_64 rng(42);
  int accepted = 0;
  for (int i = 0; i < 200000; ++i) {
    uint8_t buf[wire::kFrameHeaderSize];
    for (auto& b : buf) b = static_cast<uint8_t>(rng());
    if (i % 2) {
      // Keep the magic and a plausible type half the time, so the later checks get exercised.
      std::memcpy(buf, "MMF1", 4);
      buf[4] = static_cast<uint8_t>(1 + rng() % 8);
      buf[5] = static_cast<uint8_t>(rng() % 3);
      buf[6] = buf[7] = 0;
      buf[9] = buf[10] = buf[11] = 0;
      if (rng() % 2) {
        buf[13] = buf[14] = buf[15] = 0;
      }
      if (buf[4] != 3) std::memset(buf + 24, 0, 8);
    }
    auto h = DecodeHeader(buf);
    if (!h.ok()) continue;
    ++accepted;
    EXPECT_EQ(h->magic, wire::kFrameMagic);
    EXPECT_LE(h->device, wire::kMaxDevicesPerSession - 1);
    EXPECT_EQ(h->flags, 0);
    if (h->type == static_cast<uint8_t>(FrameType::kData)) {
      EXPECT_GE(h->length, 1u);
      EXPECT_LE(h->length, wire::kMaxDataLength);
    } else {
      EXPECT_LE(h->length, wire::kMaxControlLength);
      EXPECT_EQ(h->offset, 0u);
    }
  }
  EXPECT_GT(accepted, 1000);  // The generator reaches the accepting paths.
}

// The verdicts decide where the VM runs: only the holder of the stream's control key can
// seal one, and a seal covers the header (type, device, sequence number) and the payload.
TEST(FrameCodecTest, AVerdictOpensOnlyWithItsStreamsKeyAndUnchanged) {
  ControlKey key;
  key.bytes.fill(0x44);
  ControlKey other;
  other.bytes.fill(0x45);
  const std::string sealed =
      SealVerdict(EncodeStatusFrame(FrameType::kCommit, 1, 2, PeerStatus{0, ""}), &key);
  {
    auto [h, p] = Split(sealed);
    EXPECT_TRUE(OpenVerdict(h, p, &key).ok());
    auto forged = OpenVerdict(h, p, &other);
    EXPECT_EQ(forged.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(forged.status().message().find("seal does not match"), absl::string_view::npos);
  }
  // An unsealed COMMIT(0), as an attacker without the key would send it: zeros.
  {
    auto [h, p] = Split(SealVerdict(EncodeStatusFrame(FrameType::kCommit, 1, 2, {0, ""}), nullptr));
    EXPECT_FALSE(OpenVerdict(h, p, &key).ok());
  }
  // The same seal on another device's, or a later, frame.
  for (size_t at : {size_t{8}, size_t{16}}) {  // The header's device, then its sequence number.
    std::string moved = sealed;
    moved[at] ^= 1;
    auto [h, p] = Split(moved);
    EXPECT_FALSE(OpenVerdict(h, p, &key).ok()) << at;
  }
  // A changed code.
  std::string changed = sealed;
  changed[wire::kFrameHeaderSize] = 9;
  auto [h, p] = Split(changed);
  EXPECT_FALSE(OpenVerdict(h, p, &key).ok());
}

// A version-2 peer (48-byte HELLO payload, its secret in the clear) with a short session id: it
// hears which versions this daemon speaks, not that its HELLO is short.
TEST(FrameCodecTest, AnOlderPeersShortHelloIsToldTheVersion) {
  std::string payload(48, '\0');
  const uint16_t v2[2] = {2, 2};
  std::memcpy(payload.data(), v2, sizeof(v2));
  payload += "vm-1";
  FrameHeader h{};
  h.magic = wire::kFrameMagic;
  h.type = static_cast<uint8_t>(FrameType::kHello);
  h.length = static_cast<uint32_t>(payload.size());
  std::array<uint8_t, wire::kFrameHeaderSize> raw;
  EncodeHeader(h, raw);
  auto decoded = DecodeHeader(raw);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  auto hello = ParseHello(*decoded, payload);
  EXPECT_EQ(hello.status().code(), absl::StatusCode::kFailedPrecondition) << hello.status();
  EXPECT_NE(hello.status().message().find("peer speaks protocol versions 2..2; this daemon "
                                          "speaks 6"),
            absl::string_view::npos)
      << hello.status();
}

// A verdict with a reason longer than a control frame holds is cut so that, sealed, it still
// decodes at the peer (an undecodable ERROR after the commits would leave the destination in
// doubt instead of resetting).
TEST(FrameCodecTest, ALongVerdictStillFitsWithItsSeal) {
  ControlKey key;
  key.bytes.fill(3);
  for (FrameType type : {FrameType::kCommit, FrameType::kError}) {
    const std::string frame =
        SealVerdict(EncodeStatusFrame(type, 1, 0, PeerStatus{13, std::string(5000, 'r')}), &key);
    auto [h, p] = Split(frame);
    auto body = OpenVerdict(h, p, &key);
    ASSERT_TRUE(body.ok()) << body.status();
    auto st = ParseStatus(h, *body);
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->code, 13u);
  }
}

}  // namespace
}  // namespace migmover::peer
