// "Verified" means checked (issue 11). Two daemons whose peers run in the clear
// (--plaintext_peers), so an attacker on the path can read and change the stream's frames
// (CorruptingRelay); the keyed digest is then all that protects the bytes. The devices are the
// agent's own data fds (pipes): nothing but migmover checks what arrives, as with a device whose
// driver does not validate its migration data.
#include <unistd.h>

#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "daemon/intake/fd_intake.h"
#include "gtest/gtest.h"
#include "tests/integration/corrupting_relay.h"
#include "tests/integration/two_daemons.h"
#include "transport/net/socket.h"

namespace migmover {
namespace {

using testing::CorruptingRelay;
using testing::TwoDaemons;
using v1::SessionStatus;

class PlaintextDaemons : public TwoDaemons {
 protected:
  void SetUp() override {
    src_flags_.push_back("--plaintext_peers");
    dst_flags_.push_back("--plaintext_peers");
    TwoDaemons::SetUp();
  }

  struct Outcome {
    SessionStatus source, destination;
    std::vector<uint8_t> sent, received;  // What the source VMM wrote; what reached the target.
  };

  // The agent's data-fd migration (the agent runs the FSM; pipes stand for the VMM's fds) of
  // 4 MiB, to `peer` (default: the destination's own address), on `data_path`.
  Outcome MigrateDataFds(const std::string& id, const std::string& peer = "",
                         const std::string& data_path = "") {
    Outcome o;
    auto in = MakePipe();
    auto out = MakePipe();
    EXPECT_TRUE(in.ok() && out.ok());
    if (!in.ok() || !out.ok()) return o;
    auto h_src = SendFdToIntake(src_->fd_socket(), FdPurpose::kSaveData, in->read.get());
    auto h_dst = SendFdToIntake(dst_->fd_socket(), FdPurpose::kResumeData, out->write.get());
    EXPECT_TRUE(h_src.ok() && h_dst.ok());
    if (!h_src.ok() || !h_dst.ok()) return o;
    in->read.Reset();
    out->write.Reset();
    EXPECT_TRUE(AttachHandle(*src_, "vm", *h_src).ok());
    EXPECT_TRUE(AttachHandle(*dst_, "vm", *h_dst).ok());
    o.sent.resize(4 << 20);
    std::mt19937 rng(11);
    for (auto& b : o.sent) b = static_cast<uint8_t>(rng());
    absl::Notification switched;
    std::thread writer([&] {
      size_t off = 0;
      while (off < o.sent.size()) {
        const ssize_t n = ::write(in->write.get(), o.sent.data() + off, o.sent.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      switched.WaitForNotification();
      in->write.Reset();
    });
    std::thread reader([&] {
      std::vector<uint8_t> buf(1 << 16);
      ssize_t n;
      while ((n = ::read(out->read.get(), buf.data(), buf.size())) > 0) {
        o.received.insert(o.received.end(), buf.data(), buf.data() + n);
      }
    });
    EXPECT_TRUE(Prepare(id, {"vm"}, data_path).ok());
    EXPECT_TRUE(Start(id, {"vm"}, /*precopy=*/true, data_path, "", peer).ok());
    (void)Switchover(id);
    switched.Notify();
    o.source = WaitFinal(*src_, id);
    o.destination = WaitFinal(*dst_, id);
    writer.join();
    reader.join();
    return o;
  }
};

// Without TLS the keyed digest checks every byte: both ends move the stream on the copy path
// (the pipes could splice; that a splice-preferring auto still copies without TLS is
// stream_test's WithoutTlsTheStreamKeepsToTheCopyPathAndTheDigestChecksIt), and the status
// says what checked the stream.
TEST_F(PlaintextDaemons, TheKeyedDigestChecksAPlaintextMigration) {
  Outcome o = MigrateDataFds("plain");
  EXPECT_EQ(o.source.phase(), SessionStatus::SUCCEEDED) << o.source.DebugString();
  ASSERT_EQ(o.destination.phase(), SessionStatus::SUCCEEDED) << o.destination.DebugString();
  EXPECT_EQ(o.received, o.sent);
  ASSERT_EQ(o.destination.devices_size(), 1);
  const auto& d = o.destination.devices(0);
  EXPECT_EQ(d.integrity(), "keyed digest (Poly1305)");
  EXPECT_TRUE(d.digest_checked());
  EXPECT_EQ(d.security(), "plaintext");
  EXPECT_EQ(d.data_path(), "copy");
  EXPECT_EQ(o.source.devices(0).data_path(), "copy");
  EXPECT_TRUE(o.destination.verified());
  // Every line either daemon logged says its peers run in the clear (its own lines: those that
  // start with a timestamp; a library's stray stderr line is not the daemon's log).
  for (testing::DaemonProcess* p : {src_.get(), dst_.get()}) {
    int lines = 0;
    for (absl::string_view line : absl::StrSplit(p->Log(), '\n', absl::SkipEmpty())) {
      if (!absl::StartsWith(line, "20")) continue;
      ++lines;
      EXPECT_TRUE(absl::StrContains(line, "PLAINTEXT-PEERS")) << line;
    }
    EXPECT_GT(lines, 3);
  }
}

// A relay flips a byte: the keyed digest catches it, nothing is committed, and the source's
// VM runs on.
TEST_F(PlaintextDaemons, AFlippedByteIsCaughtByTheKeyedDigest) {
  auto relay = CorruptingRelay::Start(dst_->peer_address());
  ASSERT_TRUE(relay.ok()) << relay.status();
  Outcome o = MigrateDataFds("flip", (*relay)->address());
  EXPECT_TRUE((*relay)->corrupted());
  EXPECT_EQ(o.destination.phase(), SessionStatus::FAILED) << o.destination.DebugString();
  EXPECT_TRUE(absl::StrContains(o.destination.error(), "digest mismatch"))
      << o.destination.error();
  EXPECT_FALSE(o.destination.verified());
  EXPECT_FALSE(o.destination.devices(0).committed());
  EXPECT_EQ(o.source.phase(), SessionStatus::FAILED) << o.source.DebugString();
}

// The case from issue 11: the relay flips a byte and strips the digest, so nothing contradicts
// it. The old destination committed the corrupted stream and reported it verified; now a stream
// nothing checked is refused.
TEST_F(PlaintextDaemons, AFlippedByteWithTheDigestStrippedIsRefused) {
  auto relay = CorruptingRelay::Start(dst_->peer_address(),
                                      CorruptingRelay::Mode::kFlipByteAndStripDigest);
  ASSERT_TRUE(relay.ok()) << relay.status();
  Outcome o = MigrateDataFds("strip", (*relay)->address());
  EXPECT_TRUE((*relay)->corrupted());
  EXPECT_TRUE((*relay)->stripped());
  EXPECT_EQ(o.destination.phase(), SessionStatus::FAILED) << o.destination.DebugString();
  EXPECT_TRUE(absl::StrContains(o.destination.error(), "nothing checked"))
      << o.destination.error();
  EXPECT_EQ(o.destination.error_code(), static_cast<int>(grpc::StatusCode::DATA_LOSS));
  EXPECT_FALSE(o.destination.verified());
  EXPECT_FALSE(o.destination.devices(0).committed());
  EXPECT_EQ(o.source.phase(), SessionStatus::FAILED) << o.source.DebugString();
}

// Splice cannot be honoured without TLS (the digest must see every byte): asked for by name,
// it is refused before anything is prepared.
TEST_F(PlaintextDaemons, SpliceIsRefusedWithoutTls) {
  ASSERT_TRUE(Attach(*dst_, "d", "size=1MiB").ok());
  grpc::Status prepared = Prepare("splice", {"d"}, "splice");
  EXPECT_EQ(prepared.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(prepared.error_message(), "splice needs TLS"))
      << prepared.error_message();
  EXPECT_EQ(StateOf(*dst_, "d"), "RUNNING");
}

// With TLS (the default) a spliced stream is checked too: by TLS's AEAD.
TEST_F(TwoDaemons, ASplicedStreamUnderTlsIsCheckedByTls) {
  ASSERT_TRUE(Attach(*src_, "d", "size=8MiB,seed=4").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=8MiB").ok());
  ASSERT_TRUE(Prepare("tls-splice", {"d"}, "splice").ok());
  ASSERT_TRUE(Start("tls-splice", {"d"}, /*precopy=*/false, "splice").ok());
  auto [s, d] = SwitchoverAndWait("tls-splice");
  ASSERT_TRUE(BothSucceeded(s, d));
  ASSERT_EQ(d.devices_size(), 1);
  EXPECT_TRUE(absl::StartsWith(d.devices(0).security(), "TLS 1.3")) << d.devices(0).security();
  EXPECT_EQ(d.devices(0).data_path(), "splice");
  EXPECT_EQ(d.devices(0).integrity(), "TLS");
  EXPECT_TRUE(d.verified());
}

}  // namespace
}  // namespace migmover
