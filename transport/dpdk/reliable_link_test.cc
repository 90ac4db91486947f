// The reliable link over a real DPDK port pair: two net_memif devices (server and client) in this
// process, joined by memif's shared-memory rings. Frame loss is injected between the link and the
// port, so retransmission runs against the real PMD.
#include "transport/dpdk/reliable_link.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "transport/dpdk/eal.h"
#include "transport/dpdk/memif_pair.h"
#include "transport/dpdk/port.h"

namespace migmover::dpdk {
namespace {

// Passes everything through to a port; the wrappers below change what happens on transmit.
class WrappedIo : public FrameIo {
 public:
  explicit WrappedIo(FrameIo* inner) : inner_(inner) {}
  uint16_t Receive(rte_mbuf** f, uint16_t n) override { return inner_->Receive(f, n); }
  rte_mbuf* Alloc() override { return inner_->Alloc(); }
  uint16_t frame_capacity() const override { return inner_->frame_capacity(); }
  rte_ether_addr mac() const override { return inner_->mac(); }

 protected:
  FrameIo* const inner_;
};

// Drops the frames `drop` picks on their way out.
class LossyIo final : public WrappedIo {
 public:
  LossyIo(FrameIo* inner, std::function<bool(const wire::LinkHeader&)> drop)
      : WrappedIo(inner), drop_(std::move(drop)) {}
  uint16_t Transmit(rte_mbuf** f, uint16_t n) override {
    // Dropped frames count as sent: on a wire they would be gone after leaving the queue.
    uint16_t i = 0;
    for (; i < n; ++i) {
      wire::LinkHeader h;
      std::memcpy(&h, rte_pktmbuf_mtod_offset(f[i], const uint8_t*, wire::kEthernetHeaderSize),
                  sizeof(h));
      if (drop_(h)) {
        ++dropped;
        rte_pktmbuf_free(f[i]);
        continue;
      }
      rte_mbuf* one = f[i];
      if (inner_->Transmit(&one, 1) != 1) break;
    }
    return i;  // The first i are gone (sent or dropped); the rest stay the caller's.
  }
  uint64_t dropped = 0;

 private:
  std::function<bool(const wire::LinkHeader&)> drop_;
};

// Flips one byte in the frames `pick` chooses (the last, or one in the middle of the payload), in
// a copy: the link keeps its own frame for retransmission, as a NIC's wire would leave it.
class CorruptingIo final : public WrappedIo {
 public:
  CorruptingIo(FrameIo* inner, std::function<bool()> pick, bool middle = false)
      : WrappedIo(inner), pick_(std::move(pick)), middle_(middle) {}
  uint16_t Transmit(rte_mbuf** f, uint16_t n) override {
    uint16_t i = 0;
    for (; i < n; ++i) {
      rte_mbuf* one = f[i];
      const uint16_t len = rte_pktmbuf_data_len(one);
      if (len > 60 && pick_()) {
        rte_mbuf* copy = inner_->Alloc();
        if (copy == nullptr) break;
        uint8_t* p = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(copy, len));
        std::memcpy(p, rte_pktmbuf_mtod(one, const uint8_t*), len);
        p[middle_ ? 54 + (len - 54) / 2 : len - 1] ^= 0x40;
        if (inner_->Transmit(&copy, 1) != 1) {
          rte_pktmbuf_free(copy);
          break;
        }
        rte_pktmbuf_free(one);
        ++corrupted;
        continue;
      }
      if (inner_->Transmit(&one, 1) != 1) break;
    }
    return i;
  }
  uint64_t corrupted = 0;

 private:
  std::function<bool()> pick_;
  const bool middle_;
};

// Delivers frames of its own ahead of the port's: what anyone on the wire can send.
class InjectingIo final : public WrappedIo {
 public:
  explicit InjectingIo(FrameIo* inner) : WrappedIo(inner) {}
  uint16_t Transmit(rte_mbuf** f, uint16_t n) override { return inner_->Transmit(f, n); }
  uint16_t Receive(rte_mbuf** f, uint16_t n) override {
    uint16_t k = 0;
    while (k < n && !inject_.empty()) {
      rte_mbuf* m = inner_->Alloc();
      if (m == nullptr) break;
      const std::vector<uint8_t>& bytes = inject_.front();
      std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(bytes.size())), bytes.data(),
                  bytes.size());
      inject_.erase(inject_.begin());
      f[k++] = m;
    }
    return k + inner_->Receive(f + k, n - k);
  }
  void Inject(std::vector<uint8_t> frame) { inject_.push_back(std::move(frame)); }

 private:
  std::vector<std::vector<uint8_t>> inject_;
};

// Records what crossed the wire: every frame's bytes, copied before the port takes it.
class RecordingIo final : public WrappedIo {
 public:
  explicit RecordingIo(FrameIo* inner) : WrappedIo(inner) {}
  uint16_t Transmit(rte_mbuf** f, uint16_t n) override {
    std::vector<std::vector<uint8_t>> copies;
    for (uint16_t i = 0; i < n; ++i) {
      const auto* p = rte_pktmbuf_mtod(f[i], const uint8_t*);
      copies.emplace_back(p, p + rte_pktmbuf_data_len(f[i]));
    }
    const uint16_t sent = inner_->Transmit(f, n);
    for (uint16_t i = 0; i < sent; ++i) frames.push_back(std::move(copies[i]));
    return sent;
  }
  std::vector<std::vector<uint8_t>> frames;
};

// A port whose transmissions can be blocked (a full queue) or held back and released later (a
// slow wire).
class GateIo final : public WrappedIo {
 public:
  explicit GateIo(FrameIo* inner) : WrappedIo(inner) {}
  ~GateIo() override {
    for (rte_mbuf* m : held_) rte_pktmbuf_free(m);
  }
  uint16_t Transmit(rte_mbuf** f, uint16_t n) override {
    if (blocked) return 0;
    if (hold) {
      held_.insert(held_.end(), f, f + n);
      return n;
    }
    return inner_->Transmit(f, n);
  }
  void Release() {
    hold = false;
    while (!held_.empty()) {
      rte_mbuf* m = held_.front();
      if (inner_->Transmit(&m, 1) != 1) break;
      held_.erase(held_.begin());
    }
  }
  bool blocked = false, hold = false;

 private:
  std::vector<rte_mbuf*> held_;
};

class ReliableLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(InitEal(EalOptions{}).ok());
    auto pair = KeptMemifPair("link");
    ASSERT_TRUE(pair.ok()) << pair.status();
    a_ = (*pair)->server.get();
    b_ = (*pair)->client.get();
    link_id_ = next_link_id_++;
  }

  LinkOptions Options() const {
    LinkOptions o;
    o.link_id = link_id_;
    o.retransmit_after = absl::Milliseconds(5);
    o.window = 256;
    return o;
  }

  static std::string Describe(const ReliableLink& l) {
    const LinkStats& s = l.stats();
    return absl::StrCat("sent ", s.frames_sent, " retx ", s.frames_retransmitted, " recv ",
                        s.frames_received, " dropped ", s.frames_dropped, " ignored ",
                        s.frames_ignored, " acks ", s.acks_sent, "/", s.acks_received);
  }

  static uint8_t Pattern(uint64_t i) { return static_cast<uint8_t>((i * 2654435761u) >> 13); }

  // Moves `total` patterned bytes from `tx` to `rx` (both polled here) and checks every byte.
  // `read_gate` says whether the reader may read in this round (a slow reader).
  void Move(
      ReliableLink& tx, ReliableLink& rx, uint64_t total,
      const std::function<bool()>& read_gate = [] { return true; }) {
    std::vector<uint8_t> out(100'000), in(70'000);
    uint64_t written = 0, read = 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (read < total) {
      ASSERT_LT(absl::Now(), deadline) << "stuck at " << read << " of " << total << " bytes; "
                                       << Describe(tx) << "; " << Describe(rx);
      if (written < total) {
        const size_t n = std::min<uint64_t>(out.size(), total - written);
        for (size_t i = 0; i < n; ++i) out[i] = Pattern(written + i);
        written += tx.Write({out.data(), n});
        // Bytes Write did not take are regenerated from `written` next round.
      }
      ASSERT_TRUE(tx.Poll().ok());
      ASSERT_TRUE(rx.Poll().ok());
      if (!read_gate()) continue;
      const size_t got = rx.Read({in.data(), in.size()});
      for (size_t i = 0; i < got; ++i) {
        ASSERT_EQ(in[i], Pattern(read + i)) << "byte " << read + i;
      }
      read += got;
    }
    // The sender learns that everything arrived.
    for (int i = 0; i < 10000 && !tx.AllAcknowledged(); ++i) {
      ASSERT_TRUE(rx.Poll().ok());
      ASSERT_TRUE(tx.Poll().ok());
      usleep(100);
    }
    EXPECT_TRUE(tx.AllAcknowledged());
    EXPECT_EQ(rx.Read({in.data(), in.size()}), 0u) << "bytes beyond what was written";
  }

  DpdkPort* a_ = nullptr;
  DpdkPort* b_ = nullptr;
  uint64_t link_id_ = 0;
  static inline uint64_t next_link_id_ = 1000;
};

TEST_F(ReliableLinkTest, MovesBytesInOrderByteExact) {
  auto tx = ReliableLink::Create(a_, Options());
  auto rx = ReliableLink::Create(b_, Options());
  ASSERT_TRUE(tx.ok() && rx.ok());
  Move(**tx, **rx, 64ull << 20);
  EXPECT_EQ((*rx)->stats().bytes_read, 64ull << 20);
  EXPECT_GE((*tx)->stats().frames_sent, (64ull << 20) / 8192);
}

TEST_F(ReliableLinkTest, LostDataFramesAreSentAgain) {
  uint64_t n = 0;
  LossyIo lossy(a_, [&](const wire::LinkHeader& h) {
    return h.type == static_cast<uint8_t>(wire::LinkFrameType::kData) && ++n % 97 == 0;
  });
  auto tx = ReliableLink::Create(&lossy, Options());
  auto rx = ReliableLink::Create(b_, Options());
  ASSERT_TRUE(tx.ok() && rx.ok());
  Move(**tx, **rx, 32ull << 20);
  EXPECT_GT(lossy.dropped, 0u);
  EXPECT_GT((*tx)->stats().frames_retransmitted, 0u);
  EXPECT_GT((*rx)->stats().frames_dropped, 0u) << "frames after each gap must be refused";
}

TEST_F(ReliableLinkTest, LostAcksAreRecovered) {
  uint64_t n = 0;
  LossyIo lossy(b_, [&](const wire::LinkHeader& h) {
    return h.type == static_cast<uint8_t>(wire::LinkFrameType::kAck) && ++n % 3 != 0;
  });
  auto tx = ReliableLink::Create(a_, Options());
  auto rx = ReliableLink::Create(&lossy, Options());
  ASSERT_TRUE(tx.ok() && rx.ok());
  Move(**tx, **rx, 16ull << 20);
  EXPECT_GT(lossy.dropped, 0u);
}

TEST_F(ReliableLinkTest, OneFrameInTenLostBothWays) {
  // Random, not periodic: a fixed period can line up with go-back-N's resend batch and hit the
  // same frame every time, which no real wire does.
  std::mt19937 rng(1234);
  auto one_in_ten = [&](const wire::LinkHeader&) { return rng() % 10 == 0; };
  LossyIo lossy_tx(a_, one_in_ten);
  LossyIo lossy_rx(b_, one_in_ten);
  auto tx = ReliableLink::Create(&lossy_tx, Options());
  auto rx = ReliableLink::Create(&lossy_rx, Options());
  ASSERT_TRUE(tx.ok() && rx.ok());
  Move(**tx, **rx, 8ull << 20);
}

TEST_F(ReliableLinkTest, LostAcksWhileTheReaderLagsNeverWedgeTheLink) {
  // A small window that fills often, a reader that reads one round in three, a third of the
  // acks lost and some data too: every way an ack can be stale or missing when the sender goes
  // back. The sender must still accept acks for frames it sent before going back.
  // Acks are lost in bursts (as when a busy link's queue overflows): every other 15 ms.
  std::mt19937 rng(7);
  LossyIo lossy_tx(a_, [&](const wire::LinkHeader&) { return rng() % 20 == 0; });
  LossyIo lossy_rx(
      b_, [&](const wire::LinkHeader&) { return absl::ToUnixMillis(absl::Now()) / 15 % 2 == 1; });
  LinkOptions o = Options();
  o.window = 16;
  o.ack_every = 4;
  o.retransmit_after = absl::Milliseconds(1);
  o.keepalive = absl::Milliseconds(5);
  auto tx = ReliableLink::Create(&lossy_tx, o);
  auto rx = ReliableLink::Create(&lossy_rx, o);
  ASSERT_TRUE(tx.ok() && rx.ok());
  int round = 0;
  Move(**tx, **rx, 2ull << 20, [&] { return ++round % 10 == 0; });
  EXPECT_GT((*tx)->stats().frames_retransmitted, 0u);
}

TEST_F(ReliableLinkTest, AcksForFramesSentBeforeGoingBackStillCount) {
  // The sender goes back (its acks are late) while its port queue is full, so it cannot resend
  // anything; the late acks then arrive. They acknowledge frames it did send, and must count:
  // refusing them left a sender whose peer advertised no room wedged for good.
  GateIo tx_io(a_), rx_io(b_);
  LinkOptions o = Options();
  o.window = 8;
  auto tx = ReliableLink::Create(&tx_io, o);
  auto rx = ReliableLink::Create(&rx_io, o);
  ASSERT_TRUE(tx.ok() && rx.ok());
  std::vector<uint8_t> data(8 * o.mss, 3);
  ASSERT_EQ((*tx)->Write({data.data(), data.size()}), data.size());
  rx_io.hold = true;  // The receiver's acks are late.
  ASSERT_TRUE((*tx)->Poll().ok());
  for (int i = 0; i < 1000 && (*rx)->stats().frames_received < 8; ++i) {
    ASSERT_TRUE((*rx)->Poll().ok());
    ASSERT_TRUE((*tx)->Poll().ok());  // Resends what a port just up may have dropped.
    ::usleep(100);
  }
  ASSERT_EQ((*rx)->stats().frames_received, 8u);
  tx_io.blocked = true;  // The sender's queue is full: going back resends nothing.
  ::usleep(absl::ToInt64Microseconds(o.retransmit_after) * 3);
  ASSERT_TRUE((*tx)->Poll().ok());
  EXPECT_GT((*tx)->stats().frames_retransmitted, 0u) << "the timer must have fired";
  rx_io.Release();
  for (int i = 0; i < 1000 && !(*tx)->AllAcknowledged(); ++i) {
    ASSERT_TRUE((*tx)->Poll().ok());
    ::usleep(100);
  }
  EXPECT_TRUE((*tx)->AllAcknowledged()) << (*tx)->DebugState();
  tx_io.blocked = false;
}

TEST_F(ReliableLinkTest, CorruptedFramesAreRefusedAndSentAgain) {
  std::mt19937 rng(99);
  CorruptingIo corrupting(a_, [&] { return rng() % 20 == 0; });
  auto tx = ReliableLink::Create(&corrupting, Options());
  auto rx = ReliableLink::Create(b_, Options());
  ASSERT_TRUE(tx.ok() && rx.ok());
  Move(**tx, **rx, 16ull << 20);  // Checks every byte: no damaged byte may reach the reader.
  EXPECT_GT(corrupting.corrupted, 0u);
  EXPECT_GT((*rx)->stats().frames_corrupt, 0u);
}

TEST_F(ReliableLinkTest, SlowReaderStallsTheSenderWithinTheWindow) {
  LinkOptions o = Options();
  auto tx = ReliableLink::Create(a_, o);
  auto rx = ReliableLink::Create(b_, o);
  ASSERT_TRUE(tx.ok() && rx.ok());
  // The reader reads nothing: the sender must stop at one window of frames, not before.
  std::vector<uint8_t> chunk(1 << 20, 7);
  uint64_t taken = 0;
  for (int i = 0; i < 2000; ++i) {
    taken += (*tx)->Write({chunk.data(), chunk.size()});
    ASSERT_TRUE((*tx)->Poll().ok());
    ASSERT_TRUE((*rx)->Poll().ok());
  }
  // One window waits in the reader's queue (acknowledged), one more in the sender's.
  EXPECT_EQ(taken, 2 * uint64_t{o.window} * o.mss) << "bounded by the two windows";
  EXPECT_EQ((*rx)->stats().frames_received, o.window) << "the reader's queue holds one window";
  EXPECT_EQ((*tx)->stats().frames_retransmitted, 0u) << "a full reader is not a lost frame";
  // Now read: everything arrives and the sender moves on.
  std::vector<uint8_t> in(1 << 20);
  uint64_t got = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (got < taken && absl::Now() < deadline) {
    got += (*rx)->Read({in.data(), in.size()});
    ASSERT_TRUE((*rx)->Poll().ok());
    ASSERT_TRUE((*tx)->Poll().ok());
  }
  EXPECT_EQ(got, taken);
  EXPECT_GT((*tx)->Write({chunk.data(), chunk.size()}), 0u) << "room again once the reader read";
}

TEST_F(ReliableLinkTest, IgnoresFramesOfAnotherLink) {
  LinkOptions other = Options();
  other.link_id = link_id_ + 500000;
  auto tx = ReliableLink::Create(a_, other);
  auto rx = ReliableLink::Create(b_, Options());
  ASSERT_TRUE(tx.ok() && rx.ok());
  std::vector<uint8_t> chunk(100'000, 1);
  (*tx)->Write({chunk.data(), chunk.size()});
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE((*tx)->Poll().ok());
    ASSERT_TRUE((*rx)->Poll().ok());
    usleep(100);
  }
  EXPECT_EQ((*rx)->readable(), 0u);
  EXPECT_GT((*rx)->stats().frames_ignored, 0u);
  EXPECT_EQ((*rx)->stats().frames_received, 0u);
}

TEST_F(ReliableLinkTest, SilentPeerIsReportedDead) {
  LinkOptions o = Options();
  o.dead_after = absl::Milliseconds(200);
  auto tx = ReliableLink::Create(a_, o);
  ASSERT_TRUE(tx.ok());
  std::vector<uint8_t> chunk(10'000, 1);
  (*tx)->Write({chunk.data(), chunk.size()});
  absl::Status st;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (st.ok() && absl::Now() < deadline) {
    st = (*tx)->Poll();
    usleep(1000);
  }
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_NE(st.message().find("nothing heard from the peer"), std::string::npos) << st;
}

TEST_F(ReliableLinkTest, ZeroCopyReserveCommitPeekConsume) {
  const uint16_t mss = Options().mss;
  auto tx = ReliableLink::Create(a_, Options());
  auto rx = ReliableLink::Create(b_, Options());
  ASSERT_TRUE(tx.ok() && rx.ok());
  iovec iov[8];
  // Three frames' worth handed out; only 1.5 frames written: the rest goes back.
  ASSERT_EQ((*tx)->Reserve(3 * mss, iov, 8), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(iov[i].iov_len, mss);
  size_t k = 0;
  for (int i = 0; i < 2; ++i) {
    auto* p = static_cast<uint8_t*>(iov[i].iov_base);
    for (size_t j = 0; j < iov[i].iov_len; ++j) p[j] = Pattern(k++);
  }
  (*tx)->Commit(mss + mss / 2);
  // The half-filled frame goes on filling.
  ASSERT_EQ((*tx)->Reserve(1000, iov, 8), 1u);
  EXPECT_EQ(iov[0].iov_len, 1000u);
  for (size_t j = 0; j < 1000; ++j) {
    static_cast<uint8_t*>(iov[0].iov_base)[j] = Pattern(mss + mss / 2 + j);
  }
  (*tx)->Commit(1000);
  const size_t total = mss + mss / 2 + 1000;
  for (int i = 0; i < 1000 && (*rx)->readable() < total; ++i) {
    ASSERT_TRUE((*tx)->Poll().ok());
    ASSERT_TRUE((*rx)->Poll().ok());
  }
  ASSERT_EQ((*rx)->readable(), total) << "two frames, the second partly filled, sent at Poll";
  EXPECT_EQ((*tx)->stats().frames_sent, 2u) << "given-back room makes no frame";
  ASSERT_EQ((*rx)->Peek(total, iov, 8), 2u);
  size_t at = 0;
  for (int i = 0; i < 2; ++i) {
    const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
    for (size_t j = 0; j < iov[i].iov_len; ++j, ++at) ASSERT_EQ(p[j], Pattern(at));
  }
  EXPECT_EQ(at, total);
  (*rx)->Consume(100);
  ASSERT_EQ((*rx)->Peek(total, iov, 8), 2u);
  EXPECT_EQ(*static_cast<const uint8_t*>(iov[0].iov_base), Pattern(100));
  (*rx)->Consume(total - 100);
  EXPECT_EQ((*rx)->readable(), 0u);
  EXPECT_EQ((*rx)->Peek(total, iov, 8), 0u);
}

peer::LinkKey Key(uint8_t fill) {
  peer::LinkKey k;
  k.bytes.fill(fill);
  return k;
}

// A frame as anyone on the wire can make one: right EtherType and link id, whatever else.
std::vector<uint8_t> ForgedFrame(uint64_t link_id, wire::LinkFrameType type, uint32_t seq,
                                 uint32_t ack, uint16_t payload, bool tag) {
  std::vector<uint8_t> f(wire::kEthernetHeaderSize + wire::kLinkHeaderSize + payload +
                             (tag ? wire::kLinkTagSize : 0),
                         0x41);
  std::memset(f.data(), 0xff, 6);
  std::memset(f.data() + 6, 0x02, 6);
  f[12] = wire::kLinkEtherType >> 8;
  f[13] = wire::kLinkEtherType & 0xff;
  wire::LinkHeader h{};
  h.magic = wire::kLinkMagic;
  h.version = wire::kLinkVersion;
  h.type = static_cast<uint8_t>(type);
  h.length = payload;
  h.link_id = link_id;
  h.seq = seq;
  h.ack = ack;
  h.window = 256;
  h.check = seq;
  std::memcpy(f.data() + wire::kEthernetHeaderSize, &h, sizeof(h));
  return f;
}

class SealedLinkTest : public ReliableLinkTest {
 public:
  // tx and rx over `tx_io` and `rx_io`, sealed with each other's keys unless `sealed` is false.
  void Make(FrameIo* tx_io, FrameIo* rx_io, bool sealed = true, LinkOptions o = {}) {
    if (o.link_id == 0) o = Options();
    auto tx = ReliableLink::Create(tx_io, o);
    auto rx = ReliableLink::Create(rx_io, o);
    ASSERT_TRUE(tx.ok() && rx.ok());
    tx_ = std::move(*tx);
    rx_ = std::move(*rx);
    if (sealed) {
      ASSERT_TRUE(tx_->Seal(Key(1), Key(2)).ok());
      ASSERT_TRUE(rx_->Seal(Key(2), Key(1)).ok());
    }
  }
  // Writes `data` whole and reads it back at the other end.
  std::vector<uint8_t> Carry(const std::vector<uint8_t>& data) {
    std::vector<uint8_t> got(data.size());
    size_t written = 0, read = 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (read < data.size() && absl::Now() < deadline) {
      written += tx_->Write(std::span<const uint8_t>(data).subspan(written));
      EXPECT_TRUE(tx_->Poll().ok());
      EXPECT_TRUE(rx_->Poll().ok());
      read += rx_->Read(std::span<uint8_t>(got).subspan(read));
    }
    got.resize(read);
    return got;
  }
  std::unique_ptr<ReliableLink> tx_, rx_;
};

bool Contains(const std::vector<uint8_t>& frame, const std::string& needle) {
  return std::search(frame.begin(), frame.end(), needle.begin(), needle.end()) != frame.end();
}

TEST_F(SealedLinkTest, NoPlaintextCrossesTheWire) {
  const std::string marker = "device state a VM would not want read on the wire: ";
  std::vector<uint8_t> data;
  while (data.size() < (2u << 20)) data.insert(data.end(), marker.begin(), marker.end());
  for (const bool sealed : {false, true}) {
    RecordingIo wire(a_);
    Make(&wire, b_, sealed);
    ASSERT_EQ(Carry(data), data) << (sealed ? "sealed" : "unsealed");
    size_t frames = 0, readable = 0;
    for (const std::vector<uint8_t>& f : wire.frames) {
      if (f.size() > 200) ++frames;
      if (Contains(f, marker)) ++readable;
    }
    EXPECT_GT(frames, 100u);
    if (sealed) {
      EXPECT_EQ(readable, 0u) << "a sealed link's frames must show nothing of the stream";
      EXPECT_TRUE(rx_->sealed());
    } else {
      EXPECT_GT(readable, 0u) << "the sniffer must see an unsealed link's bytes";
    }
  }
}

TEST_F(SealedLinkTest, DamagedFramesAreRefusedAndSentAgain) {
  std::mt19937 rng(5);
  CorruptingIo corrupting(a_, [&] { return rng() % 20 == 0; }, /*middle=*/true);
  Make(&corrupting, b_);
  Move(*tx_, *rx_, 16ull << 20);  // Checks every byte.
  EXPECT_GT(corrupting.corrupted, 0u);
  EXPECT_GT(rx_->stats().frames_corrupt, 0u);
}

TEST_F(SealedLinkTest, OneFrameInTenLostBothWays) {
  // Gaps are reported once per missing frame on a sealed link (a replayed frame from further on
  // must not make the sender go back again and again): the timer recovers the rest.
  std::mt19937 rng(4321);
  auto one_in_ten = [&](const wire::LinkHeader&) { return rng() % 10 == 0; };
  LossyIo lossy_tx(a_, one_in_ten);
  LossyIo lossy_rx(b_, one_in_ten);
  Make(&lossy_tx, &lossy_rx);
  Move(*tx_, *rx_, 8ull << 20);
  EXPECT_GT(tx_->stats().frames_retransmitted, 0u);
}

TEST_F(SealedLinkTest, AReplayedFrameFromAheadReportsItsGapOnce) {
  RecordingIo tx_wire(a_);
  Make(&tx_wire, b_);
  std::vector<uint8_t> data(3 * 8192, 5);
  ASSERT_EQ(Carry(data), data);
  // Frame 2, genuine and sealed, captured; the reader is past it. Played to a fresh reader
  // whose next frame is 0 (same keys): it opens, and reports one gap, however often it comes.
  std::vector<uint8_t> frame2;
  for (const std::vector<uint8_t>& f : tx_wire.frames) {
    wire::LinkHeader h;
    std::memcpy(&h, f.data() + wire::kEthernetHeaderSize, sizeof(h));
    if (h.type == static_cast<uint8_t>(wire::LinkFrameType::kData) && h.seq == 2) frame2 = f;
  }
  ASSERT_FALSE(frame2.empty());
  RecordingIo fresh_out(b_);
  InjectingIo fresh_wire(&fresh_out);
  LinkOptions o = Options();
  o.link_id = link_id_;
  auto fresh = ReliableLink::Create(&fresh_wire, o);
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE((*fresh)->Seal(Key(2), Key(1)).ok());
  for (int round = 0; round < 5; ++round) {
    fresh_wire.Inject(frame2);
    ASSERT_TRUE((*fresh)->Poll().ok());
  }
  EXPECT_EQ((*fresh)->stats().frames_corrupt, 0u) << "a genuine frame opens";
  EXPECT_EQ((*fresh)->readable(), 0u) << "but is not taken out of order";
  EXPECT_EQ((*fresh)->stats().frames_dropped, 5u);
  int gaps = 0;
  for (const std::vector<uint8_t>& f : fresh_out.frames) {
    wire::LinkHeader h;
    std::memcpy(&h, f.data() + wire::kEthernetHeaderSize, sizeof(h));
    if (h.type == static_cast<uint8_t>(wire::LinkFrameType::kAck) && (h.flags & wire::kLinkAckGap)) {
      ++gaps;
    }
  }
  EXPECT_EQ(gaps, 1) << "five replays, one gap reported";
}

TEST_F(SealedLinkTest, ForgedDataFrameNeverReachesTheReader) {
  InjectingIo wire(b_);
  Make(a_, &wire);
  // The next frame the reader expects, with the right link id: only the tag gives it away.
  wire.Inject(ForgedFrame(link_id_, wire::LinkFrameType::kData, 0, 0, 1000, true));
  ASSERT_TRUE(rx_->Poll().ok());
  EXPECT_EQ(rx_->readable(), 0u);
  EXPECT_EQ(rx_->stats().frames_corrupt, 1u);
  // An unsealed frame on a sealed link is no better.
  wire.Inject(ForgedFrame(link_id_, wire::LinkFrameType::kData, 0, 0, 1000, false));
  ASSERT_TRUE(rx_->Poll().ok());
  EXPECT_EQ(rx_->readable(), 0u);
  // The genuine stream still starts at frame 0.
  std::vector<uint8_t> data(100'000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = Pattern(i);
  EXPECT_EQ(Carry(data), data);
}

// Frames sent but lost on the wire; then an ACK claiming all of them arrives. Whether the
// sender believes it (and frees frames the reader never got).
bool ForgedAckAcknowledges(SealedLinkTest& t, DpdkPort* a, DpdkPort* b, bool sealed,
                           uint64_t link_id) {
  bool lose = true;
  LossyIo lossy(a, [&](const wire::LinkHeader& h) {
    return lose && h.type == static_cast<uint8_t>(wire::LinkFrameType::kData);
  });
  InjectingIo wire(&lossy);
  t.Make(&wire, b, sealed);
  std::vector<uint8_t> data(8 * 8192, 9);
  EXPECT_EQ(t.tx_->Write(data), data.size());
  EXPECT_TRUE(t.tx_->Poll().ok());
  EXPECT_GT(lossy.dropped, 0u);
  wire.Inject(ForgedFrame(link_id, wire::LinkFrameType::kAck, 0, 8, 0, sealed));
  EXPECT_TRUE(t.tx_->Poll().ok());
  const bool believed = t.tx_->AllAcknowledged();
  if (!believed) {
    // The real reader still gets everything once the wire works again.
    lose = false;
    std::vector<uint8_t> got(data.size());
    size_t read = 0;
    for (int i = 0; i < 20000 && read < data.size(); ++i) {
      EXPECT_TRUE(t.tx_->Poll().ok());
      EXPECT_TRUE(t.rx_->Poll().ok());
      read += t.rx_->Read(std::span<uint8_t>(got).subspan(read));
      ::usleep(50);
    }
    EXPECT_EQ(got, data);
  }
  return believed;
}

TEST_F(SealedLinkTest, ForgedAckCannotAcknowledgeLostFrames) {
  EXPECT_TRUE(ForgedAckAcknowledges(*this, a_, b_, /*sealed=*/false, link_id_))
      << "the threat: an unsealed link believes anyone's ACK";
  link_id_ = next_link_id_++;
  EXPECT_FALSE(ForgedAckAcknowledges(*this, a_, b_, /*sealed=*/true, link_id_));
  EXPECT_EQ(tx_->stats().frames_corrupt, 1u);
}

TEST_F(SealedLinkTest, ReplayedAckIsRefused) {
  RecordingIo rx_wire(b_);
  InjectingIo tx_wire(a_);
  Make(&tx_wire, &rx_wire);
  std::vector<uint8_t> data(1 << 20, 3);
  ASSERT_EQ(Carry(data), data);
  std::vector<uint8_t> first_ack;
  for (const std::vector<uint8_t>& f : rx_wire.frames) {
    wire::LinkHeader h;
    std::memcpy(&h, f.data() + wire::kEthernetHeaderSize, sizeof(h));
    if (h.type == static_cast<uint8_t>(wire::LinkFrameType::kAck)) {
      first_ack = f;
      break;
    }
  }
  ASSERT_FALSE(first_ack.empty());
  // Quiet: everything acknowledged and every ACK in flight taken (rx, unpolled, sends no more).
  for (int i = 0; i < 10000 && !tx_->AllAcknowledged(); ++i) {
    ASSERT_TRUE(rx_->Poll().ok());
    ASSERT_TRUE(tx_->Poll().ok());
  }
  ASSERT_TRUE(tx_->AllAcknowledged());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(tx_->Poll().ok());
    ::usleep(500);
  }
  const uint64_t acks = tx_->stats().acks_received, corrupt = tx_->stats().frames_corrupt;
  tx_wire.Inject(first_ack);  // A genuine ACK, sealed with the right key, sent again.
  ASSERT_TRUE(tx_->Poll().ok());
  EXPECT_EQ(tx_->stats().frames_corrupt, corrupt + 1);
  EXPECT_EQ(tx_->stats().acks_received, acks);
}

TEST_F(SealedLinkTest, EndsWithOtherKeysHearNothing) {
  Make(a_, b_, /*sealed=*/false);
  ASSERT_TRUE(tx_->Seal(Key(1), Key(2)).ok());
  ASSERT_TRUE(rx_->Seal(Key(3), Key(4)).ok());
  std::vector<uint8_t> data(100'000, 1);
  tx_->Write(data);
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(tx_->Poll().ok());
    ASSERT_TRUE(rx_->Poll().ok());
    usleep(100);
  }
  EXPECT_EQ(rx_->readable(), 0u);
  EXPECT_EQ(rx_->stats().frames_received, 0u);
  EXPECT_GT(rx_->stats().frames_corrupt, 0u);
}

TEST_F(SealedLinkTest, SealIsRefusedOnceFramesMoved) {
  Make(a_, b_, /*sealed=*/false);
  ASSERT_TRUE(tx_->Poll().ok());
  EXPECT_EQ(tx_->Seal(Key(1), Key(2)).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ReliableLinkOptionsTest, RefusesWhatCannotWork) {
  ASSERT_TRUE(InitEal(EalOptions{}).ok());
  class NoIo final : public FrameIo {
   public:
    uint16_t Receive(rte_mbuf**, uint16_t) override { return 0; }
    uint16_t Transmit(rte_mbuf**, uint16_t) override { return 0; }
    rte_mbuf* Alloc() override { return nullptr; }
    uint16_t frame_capacity() const override { return 1518; }
    rte_ether_addr mac() const override { return {}; }
  } io;
  LinkOptions o;
  o.mss = 1465;
  EXPECT_EQ(ReliableLink::Create(&io, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.mss = 1464;
  o.window = 100;
  EXPECT_EQ(ReliableLink::Create(&io, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.window = 128;
  auto link = ReliableLink::Create(&io, o);
  ASSERT_TRUE(link.ok());
  EXPECT_EQ((*link)->Seal(peer::LinkKey{}, peer::LinkKey{}).code(),
            absl::StatusCode::kInvalidArgument)
      << "1464 + 54 header bytes leave no room for the tag";
  o.mss = 1448;
  link = ReliableLink::Create(&io, o);
  ASSERT_TRUE(link.ok());
  EXPECT_TRUE((*link)->Seal(peer::LinkKey{}, peer::LinkKey{}).ok());
}

TEST(EalTest, RestartWithOtherOptionsIsRefused) {
  ASSERT_TRUE(InitEal(EalOptions{}).ok());
  EXPECT_TRUE(InitEal(EalOptions{}).ok()) << "the same options again are fine";
  EalOptions other;
  other.memory_mb = 1024;
  const absl::Status st = InitEal(other);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
}

}  // namespace
}  // namespace migmover::dpdk
