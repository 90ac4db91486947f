#include "transport/peer/stream_auth.h"

#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "transport/peer/frame_codec.h"

namespace migmover::peer {
namespace {

SessionSecretBytes Secret(uint8_t fill) {
  SessionSecretBytes s;
  s.fill(fill);
  return s;
}

Hello SampleHello() {
  Hello h;
  h.session_id = "vm-42";
  h.device = 1;
  h.device_count = 3;
  h.stream = 2;
  h.stream_count = 4;
  h.token = Secret(0x11);
  h.nonce.fill(0x5c);
  return h;
}

// What the destination parses from what EncodeHello sent.
Hello Parsed(const Hello& sent) {
  const std::string frame = EncodeHello(0, sent);
  std::array<uint8_t, wire::kFrameHeaderSize> raw;
  std::memcpy(raw.data(), frame.data(), raw.size());
  auto h = DecodeHeader(raw);
  EXPECT_TRUE(h.ok()) << h.status();
  auto hello = ParseHello(*h, absl::string_view(frame).substr(wire::kFrameHeaderSize));
  EXPECT_TRUE(hello.ok()) << hello.status();
  return *hello;
}

TEST(HelloProof, ProvesTheSecretWithoutSendingIt) {
  const Hello sent = SampleHello();
  const std::string frame = EncodeHello(0, sent);
  const std::string secret(sent.token.begin(), sent.token.end());
  EXPECT_EQ(frame.find(secret.substr(0, 8)), std::string::npos) << "the secret is on the wire";
  const Hello got = Parsed(sent);
  EXPECT_TRUE(got.ProofValid(sent.token));
  EXPECT_FALSE(got.ProofValid(Secret(0x12)));
  EXPECT_FALSE(got.ProofValid(Secret(0)));
}

// A relay that changes any field the destination acts on breaks the proof.
TEST(HelloProof, CoversEveryFieldTheDestinationActsOn) {
  const Hello base = Parsed(SampleHello());
  ASSERT_TRUE(base.ProofValid(Secret(0x11)));
  auto broken = [&](auto change) {
    Hello h = base;
    change(h);
    return !h.ProofValid(Secret(0x11));
  };
  EXPECT_TRUE(broken([](Hello& h) { h.session_id = "vm-43"; }));
  EXPECT_TRUE(broken([](Hello& h) { h.device = 2; }));
  EXPECT_TRUE(broken([](Hello& h) { h.device_count = 4; }));
  EXPECT_TRUE(broken([](Hello& h) { h.stream = 1; }));
  EXPECT_TRUE(broken([](Hello& h) { h.stream_count = 3; }));
  EXPECT_TRUE(broken([](Hello& h) { h.link = 7; }));
  EXPECT_TRUE(broken([](Hello& h) { h.heartbeat = true; }));
  EXPECT_TRUE(broken([](Hello& h) { h.min_version = 2; }));
  EXPECT_TRUE(broken([](Hello& h) { h.max_version = wire::kProtocolVersion + 1; }));
  EXPECT_TRUE(broken([](Hello& h) { h.nonce[0] ^= 1; }));
  // Checked on another TLS connection than the one it was made for (a relaying peer).
  EXPECT_TRUE(broken([](Hello& h) { h.binding[7] ^= 1; }));
  EXPECT_TRUE(broken([](Hello& h) { h.proof[31] ^= 1; }));
}

TEST(HelloNonce, IsFreshEachTime) {
  auto a = NewHelloNonce();
  auto b = NewHelloNonce();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
}

TEST(StreamKeys, DependOnTheSecretNonceDeviceAndSession) {
  HelloNonce n;
  n.fill(1);
  auto key = [](const SessionSecretBytes& s, const HelloNonce& nonce, absl::string_view id,
                uint32_t device) {
    auto k = DeriveStreamKeys(s, nonce, id, device);
    EXPECT_TRUE(k.ok()) << k.status();
    if (!k.ok()) return std::array<uint8_t, 32>{};
    EXPECT_NE(k->digest.bytes, k->control.bytes) << "one key per use";
    return k->digest.bytes;
  };
  const std::array<uint8_t, 32> k = key(Secret(7), n, "s", 0);
  EXPECT_EQ(key(Secret(7), n, "s", 0), k);
  EXPECT_NE(key(Secret(8), n, "s", 0), k);
  EXPECT_NE(key(Secret(7), n, "t", 0), k);
  EXPECT_NE(key(Secret(7), n, "s", 1), k);
  HelloNonce other = n;
  other[15] = 2;
  EXPECT_NE(key(Secret(7), other, "s", 0), k);
  EXPECT_NE(k, StreamKey().bytes) << "HKDF left the key zero";
}

TEST(LinkKeys, DependOnTheTlsConnectionAsWellAsTheSecret) {
  HelloNonce n;
  n.fill(1);
  ChannelBinding tls_a{}, tls_b{};
  tls_a.fill(0xa);
  tls_b.fill(0xb);
  auto key = [&](const SessionSecretBytes& s, const ChannelBinding& b, absl::string_view id,
                 uint32_t device) {
    auto k = DeriveLinkKeys(s, b, n, id, device);
    EXPECT_TRUE(k.ok()) << k.status();
    if (!k.ok()) return std::array<uint8_t, 32>{};
    EXPECT_NE(k->to_destination.bytes, k->to_source.bytes) << "one key per direction";
    return k->to_destination.bytes;
  };
  const std::array<uint8_t, 32> k = key(Secret(7), tls_a, "s", 0);
  EXPECT_EQ(key(Secret(7), tls_a, "s", 0), k);
  EXPECT_NE(key(Secret(7), tls_b, "s", 0), k) << "another TLS connection, other keys";
  EXPECT_NE(key(Secret(8), tls_a, "s", 0), k);
  EXPECT_NE(key(Secret(7), tls_a, "t", 0), k);
  EXPECT_NE(key(Secret(7), tls_a, "s", 1), k);
  // Even with an all-zero secret (TLS without a session token) the key is the connection's.
  EXPECT_NE(key(SessionSecretBytes{}, tls_a, "s", 0), key(SessionSecretBytes{}, tls_b, "s", 0));
  auto stream = DeriveStreamKeys(Secret(7), n, "s", 0);
  ASSERT_TRUE(stream.ok());
  EXPECT_NE(k, stream->digest.bytes);
  EXPECT_NE(k, stream->control.bytes);
}

// RFC 8439, 2.5.2: OpenSSL's Poly1305 is the one the RFC specifies.
TEST(StreamMac, MatchesTheRfc8439Vector) {
  const uint8_t key[32] = {0x85, 0xd6, 0xbe, 0x78, 0x57, 0x55, 0x6d, 0x33, 0x7f, 0x44, 0x52,
                           0xfe, 0x42, 0xd5, 0x06, 0xa8, 0x01, 0x03, 0x80, 0x8a, 0xfb, 0x0d,
                           0xb2, 0xfd, 0x4a, 0xbf, 0xf6, 0xaf, 0x41, 0x49, 0xf5, 0x1b};
  const StreamTag want = {0xa8, 0x06, 0x1d, 0xc1, 0x30, 0x51, 0x36, 0xc6,
                          0xc2, 0x2b, 0x8b, 0xaf, 0x0c, 0x01, 0x27, 0xa9};
  StreamKey k;
  std::memcpy(k.bytes.data(), key, sizeof(key));
  auto mac = StreamMac::Create(k);
  ASSERT_TRUE(mac.ok()) << mac.status();
  const std::string msg = "Cryptographic Forum Research Group";
  (*mac)->Update(msg.data(), 10);  // In pieces, as a stream arrives.
  (*mac)->Update(msg.data() + 10, msg.size() - 10);
  EXPECT_EQ((*mac)->Finish(), std::optional<StreamTag>(want));
  EXPECT_EQ((*mac)->bytes(), msg.size());
}

TEST(StreamMac, OneFlippedByteChangesTheTag) {
  HelloNonce n;
  n.fill(3);
  auto derived = DeriveStreamKeys(Secret(9), n, "s", 0);
  ASSERT_TRUE(derived.ok()) << derived.status();
  const StreamKey k = derived->digest;
  std::string data(1 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  auto a = StreamMac::Create(k);
  auto b = StreamMac::Create(k);
  ASSERT_TRUE(a.ok() && b.ok());
  (*a)->Update(data.data(), data.size());
  data[123457] ^= 0x01;
  (*b)->Update(data.data(), data.size());
  auto ta = (*a)->Finish();
  auto tb = (*b)->Finish();
  ASSERT_TRUE(ta.has_value() && tb.has_value());
  EXPECT_FALSE(TagsEqual(*ta, *tb));
  EXPECT_EQ((*a)->Finish(), ta) << "Finish is idempotent";
}

}  // namespace
}  // namespace migmover::peer
