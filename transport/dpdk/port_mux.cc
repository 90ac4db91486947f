#include "transport/dpdk/port_mux.h"

#include <rte_errno.h>
#include <rte_ethdev.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "api/link_wire.h"

namespace migmover::dpdk {
namespace {

constexpr uint16_t kBurst = 32;

// DPDK names rings process-wide.
std::atomic<uint32_t> g_rings_made{0};

// The link id of a link frame, or 0 for anything else.
uint64_t LinkIdOf(rte_mbuf* m) {
  if (rte_pktmbuf_data_len(m) < wire::kEthernetHeaderSize + wire::kLinkHeaderSize) return 0;
  const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  if (eth->ether_type != rte_cpu_to_be_16(wire::kLinkEtherType)) return 0;
  uint64_t id;
  std::memcpy(
      &id,
      rte_pktmbuf_mtod_offset(m, const uint8_t*,
                              wire::kEthernetHeaderSize + offsetof(wire::LinkHeader, link_id)),
      sizeof(id));
  return id;
}

}  // namespace

class PortMux::LinkIo final : public FrameIo {
 public:
  LinkIo(PortMux* mux, uint64_t id, rte_ring* ring)
      : mux_(mux), id_(id), queue_(static_cast<uint16_t>(id % mux->queues_.size())), ring_(ring) {}
  ~LinkIo() override { mux_->Detach(id_); }

  uint16_t Receive(rte_mbuf** frames, uint16_t n) override {
    mux_->Distribute(queue_);
    return static_cast<uint16_t>(
        rte_ring_sc_dequeue_burst(ring_, reinterpret_cast<void**>(frames), n, nullptr));
  }
  uint16_t Transmit(rte_mbuf** frames, uint16_t n) override {
    return mux_->TransmitLocked(queue_, frames, n);
  }
  rte_mbuf* Alloc() override { return mux_->port_->AllocOn(queue_); }
  uint16_t frame_capacity() const override { return mux_->port_->frame_capacity(); }
  rte_ether_addr mac() const override { return mux_->port_->mac(); }

 private:
  PortMux* const mux_;
  const uint64_t id_;
  const uint16_t queue_;
  rte_ring* const ring_;
};

PortMux::PortMux(DpdkPort* port) : port_(port) {
  for (uint16_t q = 0; q < port->queues(); ++q) queues_.push_back(std::make_unique<Queue>());
}

PortMux::~PortMux() {
  std::unique_lock lock(links_mu_);
  for (auto& [id, ring] : links_) {
    rte_mbuf* m;
    while (rte_ring_sc_dequeue(ring, reinterpret_cast<void**>(&m)) == 0) rte_pktmbuf_free(m);
    rte_ring_free(ring);
  }
}

absl::StatusOr<std::unique_ptr<FrameIo>> PortMux::Attach(uint64_t link_id, uint32_t backlog) {
  if (link_id == 0) return absl::InvalidArgumentError("DPDK link id 0 is reserved");
  std::unique_lock lock(links_mu_);
  if (links_.count(link_id) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("DPDK link ", link_id, " is already attached to port ", port_->name()));
  }
  const std::string name = absl::StrCat("mmlink", g_rings_made.fetch_add(1));
  // Several producers: a frame is sorted by whoever polls the queue it arrived on, normally the
  // link's own queue, but a peer with another queue count may send it on any.
  rte_ring* ring =
      rte_ring_create(name.c_str(), rte_align32pow2(backlog), SOCKET_ID_ANY, RING_F_SC_DEQ);
  if (ring == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("rte_ring_create(", name, ", ", backlog, "): ", rte_strerror(rte_errno)));
  }
  links_[link_id] = ring;
  return std::unique_ptr<FrameIo>(new LinkIo(this, link_id, ring));
}

void PortMux::Detach(uint64_t link_id) {
  std::unique_lock lock(links_mu_);
  auto it = links_.find(link_id);
  if (it == links_.end()) return;
  rte_mbuf* m;
  while (rte_ring_sc_dequeue(it->second, reinterpret_cast<void**>(&m)) == 0) rte_pktmbuf_free(m);
  rte_ring_free(it->second);
  links_.erase(it);
}

void PortMux::Distribute(uint16_t q) {
  // One distributor per queue at a time; the others find their frames already queued.
  std::unique_lock rx(queues_[q]->rx_mu, std::try_to_lock);
  if (!rx.owns_lock()) return;
  rte_mbuf* burst[kBurst];
  const uint16_t n = port_->ReceiveOn(q, burst, kBurst);
  if (n == 0) return;
  std::shared_lock lock(links_mu_);
  for (uint16_t i = 0; i < n; ++i) {
    const uint64_t id = LinkIdOf(burst[i]);
    auto it = id == 0 ? links_.end() : links_.find(id);
    // A full queue drops the frame: its link is not polling fast enough and will get it again.
    if (it == links_.end() || rte_ring_enqueue(it->second, burst[i]) != 0) {
      unclaimed_.fetch_add(it == links_.end() ? 1 : 0, std::memory_order_relaxed);
      rte_pktmbuf_free(burst[i]);
    }
  }
}

uint16_t PortMux::TransmitLocked(uint16_t q, rte_mbuf** frames, uint16_t n) {
  std::lock_guard<std::mutex> lock(queues_[q]->tx_mu);
  return port_->TransmitOn(q, frames, n);
}

}  // namespace migmover::dpdk
