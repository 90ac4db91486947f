// What a peer without the session's secret can do to a prepared destination: nothing. Each case
// plays the attacker from issue 11 on a real daemon (a HELLO without the secret, as every
// token-less session used to accept, then stream frames), checks the refusal and that nothing
// reached the device, and then migrates the session for real. The attacker holds a certificate
// from the fleet's CA (another daemon, compromised): TLS lets it in, the secret must not.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/two_daemons.h"
#include "transport/base/unique_fd.h"
#include "transport/net/socket.h"
#include "transport/peer/frame_codec.h"
#include "transport/peer/handshake.h"

namespace migmover {
namespace {

using testing::TwoDaemons;
using v1::SessionStatus;

class PeerAuth : public TwoDaemons {
 protected:
  // A HELLO as an attacker writes it: the real session id, no secret (all zeros, what a session
  // prepared without a token used to expect).
  static peer::Hello StrayHello(const std::string& session) {
    peer::Hello h;
    h.session_id = session;
    return h;
  }

  // Connects to the destination's peer port, sends `hello` and returns its answer. When the
  // answer accepts the stream, goes on as an attacker would: a whole STOP_COPY stream of
  // garbage with no digest, END_STREAM, and CONFIRM.
  absl::Status Intrude(const peer::Hello& as_written) {
    // Through TLS, with a certificate from the fleet's CA: a daemon the destination trusts,
    // but not this session's source.
    auto conn = dst_->ConnectAsPeer();
    if (!conn.ok()) return conn.status();
    peer::Hello hello = as_written;
    hello.binding = conn->binding;  // Its own connection's: only the secret is missing.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    uint64_t seq = 0;
    if (absl::Status s = net::SendAll(conn->fd.get(), peer::EncodeHello(seq++, hello), deadline);
        !s.ok()) {
      return s;
    }
    absl::Status answer = peer::AwaitHelloAck(conn->fd.get(), deadline);
    if (!answer.ok() || hello.heartbeat) return answer;
    const std::string garbage(4096, 'X');
    wire::FrameHeader h{};
    h.magic = wire::kFrameMagic;
    h.type = static_cast<uint8_t>(wire::FrameType::kData);
    h.phase = static_cast<uint8_t>(wire::Phase::kStopCopy);
    h.device = hello.device;
    h.length = garbage.size();
    h.seq = seq++;
    std::string frames(wire::kFrameHeaderSize, '\0');
    peer::EncodeHeader(h, std::span<uint8_t, wire::kFrameHeaderSize>(
                              reinterpret_cast<uint8_t*>(frames.data()), wire::kFrameHeaderSize));
    frames += garbage;
    frames += peer::EncodeEndPhase(seq++, hello.device, wire::Phase::kStopCopy,
                                    garbage.size());
    peer::EndStream end;
    end.total_bytes = garbage.size();
    frames += peer::EncodeEndStream(seq++, hello.device, end);
    (void)net::SendAll(conn->fd.get(), frames, deadline);
    (void)peer::ReadControlFrame(conn->fd.get(), deadline);  // COMMIT, if it came to that.
    (void)net::SendAll(conn->fd.get(), peer::EncodeConfirm(seq++, hello.device), deadline);
    absl::SleepFor(absl::Milliseconds(200));  // Room for the destination to act on it.
    return answer;
  }

  // The HELLO_ACK frame `hello` gets, as bytes on the wire (header and payload).
  std::string RawAnswer(const peer::Hello& as_written) {
    auto conn = dst_->ConnectAsPeer();
    if (!conn.ok()) return std::string(conn.status().message());
    peer::Hello hello = as_written;
    hello.binding = conn->binding;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    if (!net::SendAll(conn->fd.get(), peer::EncodeHello(0, hello), deadline).ok()) return "send";
    std::string frame(wire::kFrameHeaderSize, '\0');
    if (!net::RecvExact(conn->fd.get(), frame.data(), frame.size(), deadline).ok()) return "recv";
    wire::FrameHeader h;
    std::memcpy(&h, frame.data(), sizeof(h));
    std::string payload(std::min<uint32_t>(h.length, 4096), '\0');
    if (!net::RecvExact(conn->fd.get(), payload.data(), payload.size(), deadline).ok()) {
      return "recv payload";
    }
    return frame + payload;
  }

  // The refusal every stray peer must get: the one for a session that does not exist.
  static void ExpectRefused(const absl::Status& answer) {
    EXPECT_EQ(answer.code(), absl::StatusCode::kPermissionDenied) << answer;
    EXPECT_NE(answer.message().find("no session on this daemon accepts this session id with "
                                    "this secret"),
              absl::string_view::npos)
        << answer;
  }

  // Nothing reached the device and the session still waits for its source.
  void ExpectUntouched(const std::string& id) {
    SessionStatus d = Get(*dst_, id);
    EXPECT_EQ(d.phase(), SessionStatus::PREPARED) << d.DebugString();
    EXPECT_EQ(d.bytes_moved(), 0u) << d.DebugString();
    EXPECT_EQ(StateOf(*dst_, "d"), "RESUMING");
  }

  // The real source, with the secret PrepareDestination returned, migrates byte-exact.
  void ExpectTheRealSourceMigrates(const std::string& id) {
    grpc::Status started = Start(id, {"d"}, /*precopy=*/false);
    ASSERT_TRUE(started.ok()) << started.error_message();
    auto [s, d] = SwitchoverAndWait(id);
    EXPECT_TRUE(BothSucceeded(s, d));
    EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");
    EXPECT_EQ(StateOf(*src_, "d"), "STOP");
  }

  void SetUpDevices(const std::string& id) {
    ASSERT_TRUE(Attach(*src_, "d", "size=4MiB,chunk=64KiB,seed=5").ok());
    ASSERT_TRUE(Attach(*dst_, "d", "size=4MiB").ok());
    ASSERT_TRUE(Prepare(id, {"d"}).ok());  // No token: the destination generates the secret.
    ASSERT_EQ(SecretOf(id).size(), 32u) << "PrepareDestination returns the generated secret";
  }
};

// Issue 11's injection: HELLO, DATA and END_STREAM from a peer that knows only the session id
// used to be committed into the agent's device.
TEST_F(PeerAuth, APeerWithoutTheSecretCannotWriteIntoTheDevice) {
  SetUpDevices("inject");
  ExpectRefused(Intrude(StrayHello("inject")));
  ExpectUntouched("inject");
  ExpectTheRealSourceMigrates("inject");
}

// Issue 11's wedge: a stray HELLO claiming 16 streams made the real source's 1-stream HELLO be
// refused ("an earlier one said 16").
TEST_F(PeerAuth, AStrayHelloClaimingSixteenStreamsDoesNotWedgeTheSession) {
  SetUpDevices("wedge");
  peer::Hello h = StrayHello("wedge");
  h.stream_count = 16;
  ExpectRefused(Intrude(h));
  ExpectUntouched("wedge");
  ExpectTheRealSourceMigrates("wedge");
}

// A stray heartbeat HELLO used to take the session's one heartbeat slot, and the real source,
// refused its heartbeat, abandoned the migration.
TEST_F(PeerAuth, AStrayHeartbeatDoesNotTakeTheSessionsSlot) {
  SetUpDevices("beat");
  peer::Hello h = StrayHello("beat");
  h.heartbeat = true;
  ExpectRefused(Intrude(h));
  ExpectUntouched("beat");
  ExpectTheRealSourceMigrates("beat");
}

// A resuming HELLO (protocol 6) with the right secret, for a device not yet connected: there is
// no stream to resume, and it must not be taken as the device's first connection.
TEST_F(PeerAuth, AResumingHelloIsRefusedAndTakesNoDeviceSlot) {
  SetUpDevices("resume");
  peer::Hello h = StrayHello("resume");
  const std::string secret = SecretOf("resume");
  std::copy(secret.begin(), secret.end(), h.token.begin());
  h.resume = 1;
  const absl::Status answer = Intrude(h);
  EXPECT_EQ(answer.code(), absl::StatusCode::kFailedPrecondition) << answer;
  EXPECT_NE(answer.message().find("no stream of it to resume"), absl::string_view::npos) << answer;
  ExpectUntouched("resume");
  ExpectTheRealSourceMigrates("resume");
}

// A flood of connections that never say HELLO used to hold every handshake place (64) for 5 s:
// the real source's HELLOs were refused (RESOURCE_EXHAUSTED) and the migration failed. New
// connections now take the places of silent ones.
TEST_F(PeerAuth, AFloodOfSilentConnectionsDoesNotKeepTheRealSourceOut) {
  SetUpDevices("flood");
  auto addr = net::ParseHostPort(dst_->peer_address());
  ASSERT_TRUE(addr.ok());
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 80; ++i) {
    auto c = net::TcpConnect(*addr, absl::Seconds(5));
    ASSERT_TRUE(c.ok()) << c.status();
    silent.push_back(std::move(*c));
  }
  ExpectTheRealSourceMigrates("flood");
  EXPECT_NE(dst_->Log().find("cut before its HELLO"), std::string::npos);
}

// No oracle: a session that does not exist, one that exists (with a wrong secret), and a
// session id this daemon has only as a source all get the same answer, byte for byte.
TEST_F(PeerAuth, UnknownSessionsAndWrongSecretsAreRefusedAlike) {
  SetUpDevices("real");
  ASSERT_TRUE(Attach(*dst_, "s", "size=1MiB,seed=3").ok());
  ASSERT_TRUE(Attach(*src_, "t", "size=1MiB").ok());
  {
    // A source session on the destination daemon, toward the source daemon's port.
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id("outbound");
    req.add_devices("s");
    req.set_peer(src_->peer_address());
    req.set_token(std::string(32, 'k'));
    req.set_precopy(true);
    SessionStatus out;
    ASSERT_TRUE(dst_->stub()->StartSource(&ctx, req, &out).ok());
  }
  peer::Hello wrong = StrayHello("real");
  wrong.token.fill(0x5a);
  const absl::Status a = Intrude(wrong);
  const absl::Status b = Intrude(StrayHello("no-such-session"));
  const absl::Status c = Intrude(StrayHello("outbound"));
  ExpectRefused(a);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  // Byte for byte on the wire.
  const std::string raw = RawAnswer(wrong);
  EXPECT_GT(raw.size(), wire::kFrameHeaderSize);
  EXPECT_EQ(raw, RawAnswer(StrayHello("no-such-session")));
  EXPECT_EQ(raw, RawAnswer(StrayHello("outbound")));
  ExpectUntouched("real");
  // The daemon's own log says which it was, for the SRE.
  EXPECT_NE(dst_->Log().find("the HELLO's proof of the secret does not match"),
            std::string::npos);
  EXPECT_NE(dst_->Log().find("'no-such-session'"), std::string::npos);
}

}  // namespace
}  // namespace migmover
