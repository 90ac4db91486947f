// DpdkPort: one DPDK Ethernet port with one receive and one transmit queue, and the packet
// buffer pool it draws from. FrameIo is the frame-level seam the reliable link runs over.
#ifndef MIGMOVER_TRANSPORT_DPDK_PORT_H_
#define MIGMOVER_TRANSPORT_DPDK_PORT_H_

#include <rte_ether.h>
#include <rte_mbuf.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace migmover::dpdk {

// Frames in and out. Not thread-safe: one polling thread per FrameIo.
class FrameIo {
 public:
  virtual ~FrameIo() = default;
  // Up to `n` received frames into `frames`; the caller owns (and frees) them. Never blocks.
  virtual uint16_t Receive(rte_mbuf** frames, uint16_t n) = 0;
  // Queues up to `n` frames; returns k, the number taken (the first k: their ownership passes
  // on). The rest stay the caller's: a full queue is backpressure, not an error.
  virtual uint16_t Transmit(rte_mbuf** frames, uint16_t n) = 0;
  // An empty frame buffer from the pool, or nullptr when the pool is exhausted (backpressure).
  virtual rte_mbuf* Alloc() = 0;
  // Bytes one frame's buffer holds (Ethernet header included).
  virtual uint16_t frame_capacity() const = 0;
  virtual rte_ether_addr mac() const = 0;
};

struct PortOptions {
  // DPDK device arguments; the port's name is the part before the first comma, e.g.
  // "net_memif0,role=server,socket=/run/migmover/memif0.sock,bsize=9216". A port created at EAL
  // start (EalOptions::vdevs) is found by its name; otherwise the device is created here.
  std::string devargs;
  uint16_t ring_size = 1024;  // Descriptors per queue.
  // Receive/transmit queue pairs. A memif peer receives on the queue a frame was sent on, so
  // links spread over queues poll without sharing one (both ends should use the same count).
  uint16_t queues = 1;
  uint32_t buffers = 8191;  // Frame buffers, split among the queue pairs' pools.
  // Bytes per frame buffer (Ethernet header included). 0: 32768 for net_memif (shared memory
  // has no MTU, and 4x fewer frames than jumbo frames measured 0.87 -> 0.97 of loopback TCP
  // here), 9216 (jumbo) for anything else.
  uint16_t frame_capacity = 0;
};

class DpdkPort final : public FrameIo {
 public:
  // The frame capacity Open gives a port for `devargs` when asked for `requested` (0 = auto).
  static uint16_t FrameCapacityFor(const std::string& devargs, uint16_t requested);
  // Bytes of each buffer in its pools: the frame capacity, or more where the driver wants more.
  static uint32_t BufferRoomFor(const std::string& devargs, uint16_t requested);

  // Creates (or finds) the device, configures its queue pairs, starts it (or leaves that to
  // WaitLinkUp when the device cannot start yet). The EAL must be up
  // (InitEal). Errors: FailedPrecondition without the EAL; InvalidArgument for devargs DPDK
  // refuses; Internal naming the rte_ call and DPDK's reason otherwise.
  static absl::StatusOr<std::unique_ptr<DpdkPort>> Open(const PortOptions& options);
  // Stops and closes the port and frees the pool; removes the device if Open created it.
  ~DpdkPort() override;
  DpdkPort(const DpdkPort&) = delete;
  DpdkPort& operator=(const DpdkPort&) = delete;

  // Waits until the port reports link up (for net_memif: the peer process has connected),
  // starting it first if Open could not (a memif client whose server is not there yet).
  // DeadlineExceeded after `timeout`. Thread-safe.
  absl::Status WaitLinkUp(absl::Duration timeout);

  // On queue 0; ReceiveOn/TransmitOn name the queue. One thread per queue at a time.
  uint16_t Receive(rte_mbuf** frames, uint16_t n) override;
  uint16_t Transmit(rte_mbuf** frames, uint16_t n) override;
  uint16_t ReceiveOn(uint16_t queue, rte_mbuf** frames, uint16_t n);
  uint16_t TransmitOn(uint16_t queue, rte_mbuf** frames, uint16_t n);
  uint16_t queues() const { return queues_; }
  // A buffer from queue `queue`'s pool (each queue pair has its own).
  rte_mbuf* AllocOn(uint16_t queue);
  rte_mbuf* Alloc() override;
  uint16_t frame_capacity() const override { return frame_capacity_; }
  rte_ether_addr mac() const override { return mac_; }

  uint16_t port_id() const { return port_; }
  const std::string& name() const { return name_; }

 private:
  DpdkPort(uint16_t port, std::string name, bool created, std::vector<rte_mempool*> pools,
           uint16_t frame_capacity);

  const uint16_t port_;
  const std::string name_;
  const bool created_;
  const std::vector<rte_mempool*> pools_;
  const uint16_t frame_capacity_;
  uint16_t queues_ = 1;
  rte_ether_addr mac_{};
  std::mutex start_mu_;
  std::atomic<bool> started_{false};
  absl::Time started_at_;    // Guarded by start_mu_ once the port is shared.
  bool reconnects_ = false;  // A memif client: WaitLinkUp connects again while down.
  absl::Duration reconnect_after_ = absl::Milliseconds(100);  // Guarded by start_mu_.
};

}  // namespace migmover::dpdk

#endif  // MIGMOVER_TRANSPORT_DPDK_PORT_H_
