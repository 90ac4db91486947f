// PortMux: many links over one DPDK port. A daemon has one port; every device stream of every
// session runs its own ReliableLink on it, told apart by link id. A link sends and receives on
// queue pair (link id mod queues); each link's thread polls through its own FrameIo: whichever
// thread polls a queue takes a burst off it and hands each frame to the link it belongs to (on
// whatever queue that link lives), then takes its own.
#ifndef MIGMOVER_TRANSPORT_DPDK_PORT_MUX_H_
#define MIGMOVER_TRANSPORT_DPDK_PORT_MUX_H_

#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/dpdk/port.h"

namespace migmover::dpdk {

class PortMux {
 public:
  // Serves every queue pair of `port`, which must outlive the mux and every FrameIo it hands out.
  explicit PortMux(DpdkPort* port);
  ~PortMux();
  PortMux(const PortMux&) = delete;
  PortMux& operator=(const PortMux&) = delete;

  // A FrameIo that receives the frames of link `link_id` (frames waiting for its thread to poll:
  // up to `backlog` of them; more are dropped, and the link sends them again) and transmits on
  // the port. Valid until destroyed; thread-safe against other links' FrameIos, not against
  // itself. AlreadyExists if the id is taken; InvalidArgument for id 0; ResourceExhausted if DPDK
  // has no memory for the queue.
  absl::StatusOr<std::unique_ptr<FrameIo>> Attach(uint64_t link_id, uint32_t backlog = 4096);

  // Frames no attached link claimed (another EtherType, an unknown or departed link id).
  uint64_t unclaimed() const { return unclaimed_.load(std::memory_order_relaxed); }
  DpdkPort* port() const { return port_; }

 private:
  class LinkIo;
  struct Queue {
    std::mutex rx_mu, tx_mu;
  };
  // Takes one burst off queue `q` and sorts it into the links' queues, unless another thread is
  // doing so right now.
  void Distribute(uint16_t q);
  void Detach(uint64_t link_id);
  uint16_t TransmitLocked(uint16_t q, rte_mbuf** frames, uint16_t n);

  DpdkPort* const port_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::shared_mutex links_mu_;
  std::unordered_map<uint64_t, rte_ring*> links_;
  std::atomic<uint64_t> unclaimed_{0};
};

}  // namespace migmover::dpdk

#endif  // MIGMOVER_TRANSPORT_DPDK_PORT_MUX_H_
