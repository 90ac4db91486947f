// Fuzz target: the DPDK reliable link's receive side (transport/dpdk/reliable_link.h), fed
// Ethernet frames as a port would deliver them, with the EAL and a real mbuf pool.
//
// Input: one flags byte, then frames, each a little-endian u16 length and that many bytes
// (Ethernet header, link header, payload). Flag bit 0 recomputes each DATA frame's checksum
// (XXH3 of the payload seeded with its seq) so the fuzzer gets past it to the window, ordering
// and ack logic; bit 1 has the link send 64 KiB first, so ACK frames move a real sender; bit 2
// seals the link (the daemons' way), and with bit 0 each frame is then sealed with the peer's key
// (numbered by its `check` field, its tag appended) so it gets past the tag.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <xxhash.h>

#include "api/link_wire.h"
#include "transport/dpdk/eal.h"
#include "transport/dpdk/frame_seal.h"
#include "transport/dpdk/port.h"
#include "transport/dpdk/reliable_link.h"

using namespace migmover;  // NOLINT: a fuzz target's few functions.

namespace {

constexpr uint16_t kFrameCapacity = 2048;
constexpr uint64_t kLinkId = 7;

rte_mempool* g_pool = nullptr;

// Delivers the frames queued in `rx`; what the link sends is freed as a wire would lose it.
class FeedIo final : public dpdk::FrameIo {
 public:
  uint16_t Receive(rte_mbuf** frames, uint16_t n) override {
    uint16_t k = 0;
    while (k < n && !rx.empty()) {
      frames[k++] = rx.front();
      rx.pop_front();
    }
    return k;
  }
  uint16_t Transmit(rte_mbuf** frames, uint16_t n) override {
    for (uint16_t i = 0; i < n; ++i) rte_pktmbuf_free(frames[i]);
    return n;
  }
  rte_mbuf* Alloc() override { return rte_pktmbuf_alloc(g_pool); }
  uint16_t frame_capacity() const override { return kFrameCapacity; }
  rte_ether_addr mac() const override { return {{0x02, 0, 0, 0, 0, 1}}; }
  std::deque<rte_mbuf*> rx;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  dpdk::EalOptions o;
  o.memory_mb = 64;
  o.log_level = 1;
  if (!dpdk::InitEal(o).ok()) std::abort();
  g_pool = rte_pktmbuf_pool_create("fuzz", 4095, 0, 0, kFrameCapacity + RTE_PKTMBUF_HEADROOM,
                                   SOCKET_ID_ANY);
  if (g_pool == nullptr) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  FeedIo io;
  dpdk::LinkOptions o;
  o.link_id = kLinkId;
  o.mss = 1024;
  o.window = 64;
  auto link = dpdk::ReliableLink::Create(&io, o);
  if (!link.ok()) std::abort();
  peer::LinkKey ours, theirs;
  ours.bytes.fill(1);
  theirs.bytes.fill(2);
  std::unique_ptr<dpdk::FrameSeal> peer_seal;
  if (flags & 4) {
    if (!(*link)->Seal(ours, theirs).ok()) std::abort();
    auto s = dpdk::FrameSeal::Create(theirs, ours);
    if (!s.ok()) std::abort();
    peer_seal = std::move(*s);
  }
  if (flags & 2) {
    std::vector<uint8_t> bytes(64 * 1024, 0x5a);
    size_t sent = 0;
    for (int i = 0; i < 200 && sent < bytes.size(); ++i) {
      sent += (*link)->Write(std::span<const uint8_t>(bytes).subspan(sent));
      (void)(*link)->Poll();
    }
  }
  size_t at = 1;
  while (at + 2 <= size) {
    uint16_t len;
    std::memcpy(&len, data + at, 2);
    at += 2;
    len = static_cast<uint16_t>(std::min<size_t>({len, size - at, kFrameCapacity}));
    rte_mbuf* m = rte_pktmbuf_alloc(g_pool);
    if (m == nullptr) break;
    constexpr size_t kHeaders = wire::kEthernetHeaderSize + wire::kLinkHeaderSize;
    const bool seal = peer_seal != nullptr && (flags & 1) && len >= kHeaders &&
                      len + wire::kLinkTagSize <= kFrameCapacity;
    auto* p = reinterpret_cast<uint8_t*>(
        rte_pktmbuf_append(m, static_cast<uint16_t>(len + (seal ? wire::kLinkTagSize : 0))));
    if (p == nullptr && len > 0) {
      rte_pktmbuf_free(m);
      break;
    }
    if (len > 0) std::memcpy(p, data + at, len);
    at += len;
    if (seal) {
      wire::LinkHeader h;
      std::memcpy(&h, p + wire::kEthernetHeaderSize, sizeof(h));
      peer_seal->Seal(h.type, h.check, p + wire::kEthernetHeaderSize, sizeof(h), p + kHeaders,
                      len - kHeaders, p + len);
    } else if ((flags & 1) && len > kHeaders) {
      wire::LinkHeader h;
      std::memcpy(&h, p + wire::kEthernetHeaderSize, sizeof(h));
      h.check = XXH3_64bits_withSeed(p + kHeaders, len - kHeaders, h.seq);
      std::memcpy(p + wire::kEthernetHeaderSize, &h, sizeof(h));
    }
    io.rx.push_back(m);
    (void)(*link)->Poll();
    uint8_t out[4096];
    while ((*link)->Read(out) > 0) {
    }
  }
  (void)(*link)->Poll();
  (void)(*link)->DebugState();
  for (rte_mbuf* m : io.rx) rte_pktmbuf_free(m);
  return 0;
}
