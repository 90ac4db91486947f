// A device stream over the DPDK link, end to end: a source thread pumps a pipe (the device's
// saving data fd) into a real net_memif port, a destination thread writes what arrives into
// another pipe (the resuming data fd), and the bytes are checked on the far side.
#include "transport/dpdk/link_stream.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"
#include "transport/dpdk/eal.h"
#include "transport/dpdk/memif_pair.h"
#include "transport/dpdk/port.h"
#include "transport/peer/frame_codec.h"

namespace migmover::dpdk {
namespace {

// Both ends' digest key (the transport derives it from the session secret and HELLO nonce).
peer::StreamKeys TestKey() {
  peer::SessionSecretBytes secret;
  secret.fill(0x21);
  peer::HelloNonce nonce;
  nonce.fill(0x7e);
  return *peer::DeriveStreamKeys(secret, nonce, "link test", 3);
}

// Both ends' link keys (the transport derives them from the HELLO connection's TLS handshake).
peer::LinkKeys TestLinkKeys() {
  peer::SessionSecretBytes secret;
  secret.fill(0x21);
  peer::ChannelBinding binding;
  binding.fill(0x33);
  peer::HelloNonce nonce;
  nonce.fill(0x7e);
  return *peer::DeriveLinkKeys(secret, binding, nonce, "link test", 3);
}

using wire::Phase;

uint8_t Pattern(uint64_t i) { return static_cast<uint8_t>((i * 2654435761u) >> 11); }

class LinkStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    ASSERT_TRUE(InitEal(EalOptions{}).ok());
    auto pair = KeptMemifPair("stream");
    ASSERT_TRUE(pair.ok()) << pair.status();
    a_ = (*pair)->server.get();
    b_ = (*pair)->client.get();
    link_id_ = next_link_id_++;
    LinkOptions o;
    o.link_id = link_id_;
    auto tx = ReliableLink::Create(a_, o);
    auto rx = ReliableLink::Create(b_, o);
    ASSERT_TRUE(tx.ok() && rx.ok());
    src_link_ = std::move(*tx);
    dst_link_ = std::move(*rx);
  }

  // Writes `total` patterned bytes into a pipe from a thread; returns the read end (the
  // "device's" saving data fd) and closes the write end when done.
  UniqueFd Producer(uint64_t total, int flags = 0) {
    auto p = MakePipe(flags);
    EXPECT_TRUE(p.ok());
    // Only the reader's end is the "device's"; the producer blocks as it pleases.
    ::fcntl(p->write.get(), F_SETFL, 0);
    threads_.emplace_back([w = std::move(p->write), total] {
      std::vector<uint8_t> buf(1 << 16);
      for (uint64_t at = 0; at < total;) {
        const size_t n = std::min<uint64_t>(buf.size(), total - at);
        for (size_t i = 0; i < n; ++i) buf[i] = Pattern(at + i);
        size_t off = 0;
        while (off < n) {
          ssize_t k = ::write(w.get(), buf.data() + off, n - off);
          if (k <= 0) return;
          off += k;
        }
        at += n;
      }
    });
    return std::move(p->read);
  }

  // A pipe whose reader checks every byte against the pattern; returns the write end.
  UniqueFd Consumer(uint64_t* checked, bool* intact) {
    auto p = MakePipe();
    EXPECT_TRUE(p.ok());
    threads_.emplace_back([r = std::move(p->read), checked, intact] {
      std::vector<uint8_t> buf(1 << 16);
      uint64_t at = 0;
      bool ok = true;
      while (true) {
        ssize_t n = ::read(r.get(), buf.data(), buf.size());
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; ++i) ok = ok && buf[i] == Pattern(at + i);
        at += n;
      }
      *checked = at;
      *intact = ok;
    });
    return std::move(p->write);
  }

  void TearDown() override {
    for (auto& t : threads_) t.join();
  }

  DpdkPort* a_ = nullptr;
  DpdkPort* b_ = nullptr;
  uint64_t link_id_ = 0;
  static inline uint64_t next_link_id_ = 1000;
  std::unique_ptr<ReliableLink> src_link_, dst_link_;
  std::vector<std::thread> threads_;

  // A DATA frame as a source would send it.
  static std::string RawData(uint64_t seq, Phase phase, uint64_t offset, const std::string& bytes) {
    wire::FrameHeader h{};
    h.magic = wire::kFrameMagic;
    h.type = static_cast<uint8_t>(wire::FrameType::kData);
    h.phase = static_cast<uint8_t>(phase);
    h.length = static_cast<uint32_t>(bytes.size());
    h.seq = seq;
    h.offset = offset;
    std::array<uint8_t, wire::kFrameHeaderSize> raw{};
    peer::EncodeHeader(h, raw);
    return std::string(reinterpret_cast<const char*>(raw.data()), raw.size()) + bytes;
  }

  // What a destination's Receive makes of `frames` arriving from the source's end of the link.
  absl::Status ReceiveRaw(const std::string& frames) {
    EXPECT_EQ(src_link_->Write({reinterpret_cast<const uint8_t*>(frames.data()), frames.size()}),
              frames.size());
    std::atomic<bool> cancel{false};
    std::thread pump([&] {
      for (int i = 0; i < 2000 && !cancel.load(); ++i) {
        src_link_->Poll().IgnoreError();
        ::usleep(500);
      }
    });
    auto p = MakePipe();
    EXPECT_TRUE(p.ok());
    LinkStreamReceiver r(dst_link_.get(), 0, {});
    auto got = r.Receive(p->write.get(), cancel);
    cancel = true;
    pump.join();
    return got.status();
  }

  // What the source's AwaitCommit makes of `frame` arriving from the destination.
  absl::Status VerdictOf(const std::string& frame) {
    EXPECT_EQ(dst_link_->Write({reinterpret_cast<const uint8_t*>(frame.data()), frame.size()}),
              frame.size());
    std::atomic<bool> done{false};
    std::thread pump([&] {
      for (int i = 0; i < 20000 && !done.load(); ++i) {
        dst_link_->Poll().IgnoreError();
        ::usleep(200);
      }
    });
    LinkStreamSender s(src_link_.get(), 0, {});
    std::atomic<bool> cancel{false};
    absl::Status v = s.AwaitCommit(absl::Seconds(5), cancel);
    done = true;
    pump.join();
    return v;
  }
};

TEST_F(LinkStreamTest, MovesAStreamByteExactAndCommits) {
  constexpr uint64_t kTotal = 48ull << 20;
  std::atomic<bool> stop{false}, cancel{false};
  uint64_t checked = 0;
  bool intact = false;
  UniqueFd saving = Producer(kTotal);
  UniqueFd resuming = Consumer(&checked, &intact);

  absl::StatusOr<transport::ReceiveResult> received;
  std::thread dst([&] {
    LinkStreamReceiver r(dst_link_.get(), 3, {});
    ASSERT_TRUE(r.Protect(TestKey()).ok());
    received = r.Receive(resuming.get(), cancel);
    resuming.Reset();  // The "device" has everything: commit.
    EXPECT_TRUE(r.SendCommit(received.status()).ok());
  });
  LinkStreamSender s(src_link_.get(), 3, {});
  ASSERT_TRUE(s.Protect(TestKey()).ok());
  ASSERT_TRUE(s.EndPhase(Phase::kPreCopy).ok());
  auto pumped = s.Pump(saving.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
  ASSERT_TRUE(pumped.ok()) << pumped.status();
  EXPECT_EQ(pumped->end, transport::PumpResult::End::kEof);
  EXPECT_EQ(pumped->bytes, kTotal);
  ASSERT_TRUE(s.EndStream().ok());
  const absl::Status commit = s.AwaitCommit(absl::Seconds(30), cancel);
  dst.join();
  EXPECT_TRUE(commit.ok()) << commit;
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ(received->total_bytes, kTotal);
  EXPECT_TRUE(received->digest_checked);
  EXPECT_EQ(received->precopy_phases_ended, 1u);
  threads_[1].join();
  threads_.erase(threads_.begin() + 1);
  EXPECT_EQ(checked, kTotal);
  EXPECT_TRUE(intact) << "a byte differs from what the source read";
}

TEST_F(LinkStreamTest, SealedLinkStreamIsCheckedByItsAeadAndCommits) {
  constexpr uint64_t kTotal = 16ull << 20;
  std::atomic<bool> stop{false}, cancel{false};
  uint64_t checked = 0;
  bool intact = false;
  UniqueFd saving = Producer(kTotal);
  UniqueFd resuming = Consumer(&checked, &intact);
  absl::StatusOr<transport::ReceiveResult> received;
  std::thread dst([&] {
    LinkStreamReceiver r(dst_link_.get(), 3, {});
    ASSERT_TRUE(r.Protect(TestKey(), TestLinkKeys()).ok());
    received = r.Receive(resuming.get(), cancel);
    resuming.Reset();
    EXPECT_TRUE(r.SendCommit(received.status()).ok());
  });
  LinkStreamSender s(src_link_.get(), 3, {});
  ASSERT_TRUE(s.Protect(TestKey(), TestLinkKeys()).ok());
  auto pumped = s.Pump(saving.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
  ASSERT_TRUE(pumped.ok()) << pumped.status();
  ASSERT_TRUE(s.EndStream().ok());
  const absl::Status commit = s.AwaitCommit(absl::Seconds(30), cancel);
  dst.join();
  EXPECT_TRUE(commit.ok()) << commit;
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ(received->total_bytes, kTotal);
  EXPECT_TRUE(received->aead) << "every frame opened with the source's key";
  EXPECT_FALSE(received->digest_checked) << "no digest needed over sealed frames";
  EXPECT_TRUE(received->checked());
  EXPECT_TRUE(src_link_->sealed() && dst_link_->sealed());
  threads_[1].join();
  threads_.erase(threads_.begin() + 1);
  EXPECT_EQ(checked, kTotal);
  EXPECT_TRUE(intact) << "a byte differs from what the source read";
}

TEST_F(LinkStreamTest, NonBlockingSourceInPreCopyDrainsThenStopCopyEnds) {
  constexpr uint64_t kTotal = 8ull << 20;
  std::atomic<bool> stop{false}, cancel{false};
  uint64_t checked = 0;
  bool intact = false;
  UniqueFd saving = Producer(kTotal, O_NONBLOCK);
  UniqueFd resuming = Consumer(&checked, &intact);
  absl::StatusOr<transport::ReceiveResult> received;
  std::thread dst([&] {
    LinkStreamReceiver r(dst_link_.get(), 0, {});
    received = r.Receive(resuming.get(), cancel);
    resuming.Reset();
    r.SendCommit(received.status()).IgnoreError();
  });
  LinkStreamSender s(src_link_.get(), 0, {});
  // PRE_COPY: whatever is there now; EAGAIN means "drained for now", not an error.
  auto pre = s.Pump(saving.get(), Phase::kPreCopy, UINT64_MAX, stop, cancel);
  ASSERT_TRUE(pre.ok()) << pre.status();
  EXPECT_TRUE(pre->end == transport::PumpResult::End::kDrained ||
              pre->end == transport::PumpResult::End::kEof);
  ASSERT_TRUE(s.EndPhase(Phase::kPreCopy).ok());
  auto rest = s.Pump(saving.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(pre->bytes + rest->bytes, kTotal);
  ASSERT_TRUE(s.EndStream().ok());
  EXPECT_TRUE(s.AwaitCommit(absl::Seconds(30), cancel).ok());
  dst.join();
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ(received->total_bytes, kTotal);
}

TEST_F(LinkStreamTest, DestinationWriteFailureReachesTheSource) {
  std::atomic<bool> stop{false}, cancel{false};
  UniqueFd saving = Producer(16ull << 20);
  auto broken = MakePipe();
  ASSERT_TRUE(broken.ok());
  broken->read.Reset();  // The "device" refuses data: every write gets EPIPE.
  absl::StatusOr<transport::ReceiveResult> received;
  std::thread dst([&] {
    LinkStreamReceiver r(dst_link_.get(), 0, {});
    received = r.Receive(broken->write.get(), cancel);
    r.SendCommit(received.status()).IgnoreError();
  });
  LinkStreamSender s(src_link_.get(), 0, {});
  absl::Status st = s.Pump(saving.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel).status();
  if (st.ok()) st = s.EndStream();
  if (st.ok()) st = s.AwaitCommit(absl::Seconds(30), cancel);
  dst.join();
  ASSERT_FALSE(received.ok());
  EXPECT_NE(received.status().message().find("writev(data fd"), std::string::npos)
      << received.status();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("destination: "), std::string::npos) << st;
  EXPECT_NE(st.message().find("EPIPE"), std::string::npos) << st;
  // Unblock the producer.
  saving.Reset();
}

TEST_F(LinkStreamTest, UnreadPeerEndsInNoProgressWithTheLinkState) {
  // Nobody polls the destination's link: the source fills its window and must give up after its
  // idle timeout, saying what the link saw.
  std::atomic<bool> stop{false}, cancel{false};
  UniqueFd saving = Producer(32ull << 20);
  LinkStreamOptions o;
  o.idle_timeout = absl::Milliseconds(300);
  LinkStreamSender s(src_link_.get(), 0, o);
  auto r = s.Pump(saving.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_NE(r.status().message().find("no progress for 300ms (waiting on the peer over the DPDK "
                                      "link: "),
            std::string::npos)
      << r.status();
  EXPECT_NE(r.status().message().find(" frames sent, "), std::string::npos) << r.status();
  saving.Reset();  // Unblocks the producer.
}

// The verdict rules every transport shares (the TCP stream's in stream_test): an ERROR that
// carries code 0 is ABORTED; the verdict is the destination's first frame on the link (0), so a
// COMMIT with another sequence number is refused.
TEST_F(LinkStreamTest, AnErrorWithCodeZeroIsAborted) {
  absl::Status v =
      VerdictOf(peer::SealVerdict(
          peer::EncodeStatusFrame(wire::FrameType::kError, 0, 0, {0, "gave up"}), nullptr));
  EXPECT_EQ(v.code(), absl::StatusCode::kAborted) << v;
}

TEST_F(LinkStreamTest, ACommitOutOfSequenceIsRefused) {
  absl::Status v = VerdictOf(
      peer::SealVerdict(peer::EncodeStatusFrame(wire::FrameType::kCommit, 57, 0, {0, ""}), nullptr));
  EXPECT_EQ(v.code(), absl::StatusCode::kDataLoss) << v;
  EXPECT_NE(v.message().find("sequence number 57, expected 0"), std::string::npos) << v;
}

// The stream's rules, as on TCP (stream_test): PRE_COPY data after END_PHASE(PRE_COPY) is refused.
TEST_F(LinkStreamTest, PreCopyDataAfterItsPhaseEndedIsDataLoss) {
  const std::string frames = peer::EncodeEndPhase(0, 0, Phase::kPreCopy, 0) +
                             RawData(1, Phase::kPreCopy, 0, "late");
  absl::Status got = ReceiveRaw(frames);
  EXPECT_EQ(got.code(), absl::StatusCode::kDataLoss) << got;
  EXPECT_NE(got.message().find("after the PRE_COPY phase ended"), std::string::npos) << got;
}

TEST_F(LinkStreamTest, OutOfPlaceDataIsDataLoss) {
  // The stream starts at 0.
  absl::Status got = ReceiveRaw(RawData(0, Phase::kStopCopy, 4096, "abcd"));
  EXPECT_EQ(got.code(), absl::StatusCode::kDataLoss) << got;
  EXPECT_NE(got.message().find("offset 4096, expected 0"), std::string::npos) << got;
}

}  // namespace
}  // namespace migmover::dpdk
