// Several links over one real port pair at once, each on its own thread, as a daemon runs the
// streams of several devices over its one DPDK port.
#include "transport/dpdk/port_mux.h"

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "transport/dpdk/eal.h"
#include "transport/dpdk/memif_pair.h"
#include "transport/dpdk/reliable_link.h"

namespace migmover::dpdk {
namespace {

uint8_t Pattern(uint64_t link, uint64_t i) {
  return static_cast<uint8_t>(((i + link * 7919) * 2654435761u) >> 13);
}

MemifPair* Shared() {
  EXPECT_TRUE(InitEal(EalOptions{}).ok());
  auto p = KeptMemifPair("mux");
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : nullptr;
}

TEST(PortMuxTest, FourLinksAtOnceEachByteExact) {
  MemifPair* pair = Shared();
  ASSERT_NE(pair, nullptr);
  PortMux src(pair->server.get()), dst(pair->client.get());
  constexpr int kLinks = 4;
  constexpr uint64_t kBytes = 8ull << 20;
  std::vector<std::thread> threads;
  std::vector<uint64_t> received(kLinks, 0);
  // Not std::vector<bool>: its elements share words, so two receivers' stores would race.
  std::vector<char> intact(kLinks, false);
  for (int l = 0; l < kLinks; ++l) {
    const uint64_t id = 100 + l;
    auto tx_io = src.Attach(id);
    auto rx_io = dst.Attach(id);
    ASSERT_TRUE(tx_io.ok()) << tx_io.status();
    ASSERT_TRUE(rx_io.ok()) << rx_io.status();
    threads.emplace_back([io = std::move(*tx_io), id] {
      LinkOptions o;
      o.link_id = id;
      auto link = ReliableLink::Create(io.get(), o);
      ASSERT_TRUE(link.ok());
      std::vector<uint8_t> buf(50'000);
      uint64_t sent = 0;
      while (sent < kBytes) {
        const size_t n = std::min<uint64_t>(buf.size(), kBytes - sent);
        for (size_t i = 0; i < n; ++i) buf[i] = Pattern(id, sent + i);
        sent += (*link)->Write({buf.data(), n});
        ASSERT_TRUE((*link)->Poll().ok());
      }
      // Frames lost on the way (a busy link's queue overflowing) go out again meanwhile.
      const absl::Time deadline = absl::Now() + absl::Seconds(30);
      while (!(*link)->AllAcknowledged() && absl::Now() < deadline) {
        ASSERT_TRUE((*link)->Poll().ok());
        ::usleep(20);
      }
      EXPECT_TRUE((*link)->AllAcknowledged());
    });
    threads.emplace_back([io = std::move(*rx_io), id, l, &received, &intact] {
      LinkOptions o;
      o.link_id = id;
      auto link = ReliableLink::Create(io.get(), o);
      ASSERT_TRUE(link.ok());
      std::vector<uint8_t> buf(70'000);
      uint64_t got = 0;
      bool ok = true;
      const absl::Time deadline = absl::Now() + absl::Seconds(60);
      while (got < kBytes && absl::Now() < deadline) {
        ASSERT_TRUE((*link)->Poll().ok());
        const size_t n = (*link)->Read({buf.data(), buf.size()});
        for (size_t i = 0; i < n; ++i) ok = ok && buf[i] == Pattern(id, got + i);
        got += n;
      }
      // Keep acknowledging until the sender has heard (its last acks may be lost too).
      for (int i = 0; i < 4000; ++i) {
        ASSERT_TRUE((*link)->Poll().ok());
        ::usleep(50);
      }
      received[l] = got;
      intact[l] = ok;
    });
  }
  for (auto& t : threads) t.join();
  for (int l = 0; l < kLinks; ++l) {
    EXPECT_EQ(received[l], kBytes) << "link " << l;
    EXPECT_TRUE(intact[l]) << "link " << l << " got bytes of another link or out of order";
  }
}

TEST(PortMuxTest, RefusesATakenOrReservedIdAndCountsStrayFrames) {
  MemifPair* pair = Shared();
  ASSERT_NE(pair, nullptr);
  PortMux src(pair->server.get()), dst(pair->client.get());
  auto a = dst.Attach(7);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(dst.Attach(7).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(dst.Attach(0).status().code(), absl::StatusCode::kInvalidArgument);
  a->reset();
  EXPECT_TRUE(dst.Attach(7).ok()) << "a detached id is free again";

  // Frames for a link nobody attached on the receiving side: every one of them is counted as
  // unclaimed, and none reaches another link.
  auto listener = dst.Attach(8);
  ASSERT_TRUE(listener.ok());
  rte_mbuf* frames[32];
  for (int i = 0; i < 50; ++i) {  // Whatever an earlier test left in flight goes first.
    EXPECT_EQ((*listener)->Receive(frames, 32), 0);
    ::usleep(1000);
  }
  const uint64_t before = dst.unclaimed();
  auto tx_io = src.Attach(9);
  ASSERT_TRUE(tx_io.ok());
  LinkOptions o;
  o.link_id = 9;
  auto link = ReliableLink::Create(tx_io->get(), o);
  ASSERT_TRUE(link.ok());
  std::vector<uint8_t> buf(20'000, 1);
  ASSERT_EQ((*link)->Write({buf.data(), buf.size()}), buf.size());
  auto sent = [&] { return (*link)->stats().frames_sent + (*link)->stats().acks_sent; };
  for (int i = 0; i < 200 && (sent() == 0 || dst.unclaimed() - before < sent()); ++i) {
    ASSERT_TRUE((*link)->Poll().ok());
    EXPECT_EQ((*listener)->Receive(frames, 32), 0) << "link 8 must not get link 9's frames";
    ::usleep(500);
  }
  EXPECT_GT(sent(), 0u);
  EXPECT_EQ(dst.unclaimed() - before, sent()) << "every frame of link 9, and only those";
}

}  // namespace
}  // namespace migmover::dpdk
