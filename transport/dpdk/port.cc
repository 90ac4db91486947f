#include "transport/dpdk/port.h"

#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "transport/dpdk/eal.h"

#if defined(__SANITIZE_THREAD__)
#include <rte_mempool.h>
#include <sanitizer/tsan_interface.h>
#endif

namespace migmover::dpdk {
namespace {

absl::Status RteError(absl::string_view call, int rc) {
  const int err = rc < 0 ? -rc : rte_errno;
  return absl::InternalError(absl::StrCat(call, ": ", rte_strerror(err)));
}

// The mempool driver our pools use ("lf_stack"). Under ThreadSanitizer, the same driver wrapped
// so TSan sees a buffer's hand-over: DPDK's drivers are not instrumented, so a buffer freed by
// one thread (or by the PMD inside tx_burst) and allocated again by another (or by the PMD inside
// rx_burst) would look like one buffer written by two threads with nothing ordering them. The
// wrapper releases on each object it takes back and acquires on each it hands out; every alloc
// and free goes through it (the pools have no per-lcore cache).
#if defined(__SANITIZE_THREAD__)
int g_tsan_inner_ops = -1;

int TsanEnqueue(rte_mempool* mp, void* const* objs, unsigned int n) {
  for (unsigned int i = 0; i < n; ++i) __tsan_release(objs[i]);
  return rte_mempool_ops_table.ops[g_tsan_inner_ops].enqueue(mp, objs, n);
}

int TsanDequeue(rte_mempool* mp, void** objs, unsigned int n) {
  const int rc = rte_mempool_ops_table.ops[g_tsan_inner_ops].dequeue(mp, objs, n);
  if (rc == 0) {
    for (unsigned int i = 0; i < n; ++i) __tsan_acquire(objs[i]);
  }
  return rc;
}

const char* PoolOps() {
  static const char* const name = []() -> const char* {
    for (uint32_t i = 0; i < rte_mempool_ops_table.num_ops; ++i) {
      if (std::string(rte_mempool_ops_table.ops[i].name) != "lf_stack") continue;
      g_tsan_inner_ops = static_cast<int>(i);
      rte_mempool_ops ops = rte_mempool_ops_table.ops[i];
      std::snprintf(ops.name, sizeof(ops.name), "%s", "tsan_lf_stack");
      ops.enqueue = TsanEnqueue;
      ops.dequeue = TsanDequeue;
      if (rte_mempool_register_ops(&ops) >= 0) return "tsan_lf_stack";
      break;
    }
    return "lf_stack";  // Pool creation reports a missing driver.
  }();
  return name;
}
#else
const char* PoolOps() { return "lf_stack"; }
#endif

}  // namespace

uint16_t DpdkPort::FrameCapacityFor(const std::string& devargs, uint16_t requested) {
  if (requested != 0) return requested;
  return devargs.rfind("net_memif", 0) == 0 ? 32768 : 9216;
}

uint32_t DpdkPort::BufferRoomFor(const std::string& devargs, uint16_t requested) {
  uint32_t room = FrameCapacityFor(devargs, requested);
  // net_af_packet receives into whole ring frames and wants buffers of its `framesz` (default
  // 2048) minus 32, whatever the frames it carries.
  if (devargs.rfind("net_af_packet", 0) == 0) {
    const size_t at = devargs.find("framesz=");
    const uint32_t framesz =
        at == std::string::npos ? 2048 : std::strtoul(devargs.c_str() + at + 8, nullptr, 10);
    if (framesz > 32) room = std::max(room, framesz - 32);
  }
  return room;
}

absl::StatusOr<std::unique_ptr<DpdkPort>> DpdkPort::Open(const PortOptions& o) {
  if (!EalInitialized()) {
    return absl::FailedPreconditionError("DPDK port " + o.devargs + ": the EAL is not started");
  }
  const std::string name = o.devargs.substr(0, o.devargs.find(','));
  std::string devargs = o.devargs;
  const bool memif = name.rfind("net_memif", 0) == 0;
  const uint16_t capacity = FrameCapacityFor(o.devargs, o.frame_capacity);
  const uint32_t room = BufferRoomFor(o.devargs, o.frame_capacity);
  if (room > 65535 - RTE_PKTMBUF_HEADROOM) {
    return absl::InvalidArgumentError(
        absl::StrCat("DPDK port ", name, ": ", room, "-byte buffers exceed DPDK's 64 KiB"));
  }
  if (memif && devargs.find("bsize=") == std::string::npos) {
    // memif splits a frame larger than its buffers over several ring slots, and DPDK 22.11
    // garbles such frames for good once the ring fills in the middle of one (seen here): one
    // slot per frame.
    absl::StrAppend(&devargs, ",bsize=", capacity);
  }
  if (memif && devargs.find("rsize=") == std::string::npos) {
    // 512 slots each way (16 MiB of 32 KiB frames) instead of memif's 1024: measured here, one
    // stream 0.97-0.98 of loopback TCP (1024: 1.00-1.03, 256: 0.89-0.95), four 0.82-0.83
    // (1024: 0.75-0.78), 20 MB less resident per daemon.
    absl::StrAppend(&devargs, ",rsize=9");
  }
  if (name.empty()) return absl::InvalidArgumentError("DPDK port: empty devargs");
  uint16_t port = 0;
  bool created = false;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &port) != 0) {
    const size_t comma = devargs.find(',');
    const std::string args = comma == std::string::npos ? "" : devargs.substr(comma + 1);
    if (int rc = rte_vdev_init(name.c_str(), args.c_str()); rc != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("rte_vdev_init(", name, ", \"", args, "\"): ", rte_strerror(-rc)));
    }
    created = true;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &port) != 0) {
      rte_vdev_uninit(name.c_str());
      return absl::InternalError(absl::StrCat("DPDK device ", name, " created no Ethernet port"));
    }
  }
  auto undo = [&] {
    if (created) rte_vdev_uninit(name.c_str());
  };
  // A pool per queue pair: links on different queues never touch the same pool head.
  const uint16_t nq = std::max<uint16_t>(1, o.queues);
  const uint32_t per_queue = std::max<uint32_t>(511, o.buffers / nq);
  std::vector<rte_mempool*> pools;
  auto free_pools = [&] {
    for (rte_mempool* m : pools) rte_mempool_free(m);
  };
  static std::atomic<int> made{0};
  for (uint16_t q = 0; q < nq; ++q) {
    const std::string pool_name = absl::StrCat("mm", port, "_", made.fetch_add(1));
    rte_mempool* pool =
        // The lock-free stack: our polling threads are ordinary threads that the kernel may
        // preempt anywhere, and DPDK's default ring-backed pool makes every other thread spin
        // while one is preempted in the middle of a put (seen here: four receivers spinning in
        // rte_pktmbuf_free for seconds on 2 cores). No per-lcore cache: our threads have none.
        rte_pktmbuf_pool_create_by_ops(pool_name.c_str(), per_queue, 0, 0,
                                       static_cast<uint16_t>(RTE_PKTMBUF_HEADROOM + room),
                                       rte_eth_dev_socket_id(port), PoolOps());
    if (pool == nullptr) {
      const absl::Status err = RteError(
          absl::StrCat("rte_pktmbuf_pool_create(", per_queue, " x ", capacity, " bytes)"), 0);
      free_pools();
      undo();
      return err;
    }
    pools.push_back(pool);
  }
  std::unique_ptr<DpdkPort> p(new DpdkPort(port, name, created, pools, capacity));
  p->reconnects_ = memif && devargs.find("role=client") != std::string::npos;
  rte_eth_conf conf{};
  p->queues_ = nq;
  if (int rc = rte_eth_dev_configure(port, nq, nq, &conf); rc != 0) {
    return RteError(absl::StrCat("rte_eth_dev_configure(", name, ")"), rc);
  }
  uint16_t rx = o.ring_size, tx = o.ring_size;
  if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &rx, &tx); rc != 0) {
    return RteError(absl::StrCat("rte_eth_dev_adjust_nb_rx_tx_desc(", name, ")"), rc);
  }
  const int socket = rte_eth_dev_socket_id(port);
  for (uint16_t q = 0; q < nq; ++q) {
    if (int rc = rte_eth_rx_queue_setup(port, q, rx, socket, nullptr, pools[q]); rc != 0) {
      return RteError(
          absl::StrCat("rte_eth_rx_queue_setup(", name, ", queue ", q, ", ", rx, " descriptors)"),
          rc);
    }
    if (int rc = rte_eth_tx_queue_setup(port, q, tx, socket, nullptr); rc != 0) {
      return RteError(
          absl::StrCat("rte_eth_tx_queue_setup(", name, ", queue ", q, ", ", tx, " descriptors)"),
          rc);
    }
  }
  // A memif client cannot start while its server is not there yet (DPDK 22.11 says EPERM):
  // daemons start in any order, so WaitLinkUp starts the port again until it comes up.
  p->started_ = rte_eth_dev_start(port) == 0;
  p->started_at_ = absl::Now();
  rte_eth_macaddr_get(port, &p->mac_);
  return p;
}

DpdkPort::DpdkPort(uint16_t port, std::string name, bool created, std::vector<rte_mempool*> pools,
                   uint16_t frame_capacity)
    : port_(port),
      name_(std::move(name)),
      created_(created),
      pools_(std::move(pools)),
      frame_capacity_(frame_capacity) {}

DpdkPort::~DpdkPort() {
  if (started_) rte_eth_dev_stop(port_);
  rte_eth_dev_close(port_);
  if (created_) rte_vdev_uninit(name_.c_str());
  // Only after the device is gone: its queues held buffers of these pools.
  for (rte_mempool* pool : pools_) rte_mempool_free(pool);
}

absl::Status DpdkPort::WaitLinkUp(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  int start_rc = 0;
  while (true) {
    if (!started_) {
      std::lock_guard<std::mutex> lock(start_mu_);
      if (!started_) {
        start_rc = rte_eth_dev_start(port_);
        started_ = start_rc == 0;
        started_at_ = absl::Now();
      }
    }
    rte_eth_link link{};
    if (rte_eth_link_get_nowait(port_, &link) == 0 && link.link_status == RTE_ETH_LINK_UP) {
      return absl::OkStatus();
    }
    if (reconnects_) {
      // A memif client that reached its server while the server was still starting stays down
      // for good (seen here when two daemons start at once): connect again, soon at first (a
      // session is waiting), then once a second.
      std::lock_guard<std::mutex> lock(start_mu_);
      if (started_ && absl::Now() - started_at_ > reconnect_after_) {
        rte_eth_dev_stop(port_);
        start_rc = rte_eth_dev_start(port_);
        started_ = start_rc == 0;
        started_at_ = absl::Now();
        reconnect_after_ = std::min(reconnect_after_ * 2, absl::Seconds(1));
      }
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "DPDK port ", name_, ": link still down after ", absl::FormatDuration(timeout),
          started_ ? "" : absl::StrCat(" (rte_eth_dev_start: ", rte_strerror(-start_rc), ")")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

uint16_t DpdkPort::Receive(rte_mbuf** frames, uint16_t n) { return ReceiveOn(0, frames, n); }

uint16_t DpdkPort::ReceiveOn(uint16_t queue, rte_mbuf** frames, uint16_t n) {
  return rte_eth_rx_burst(port_, queue, frames, n);
}

uint16_t DpdkPort::TransmitOn(uint16_t queue, rte_mbuf** frames, uint16_t n) {
  return rte_eth_tx_burst(port_, queue, frames, n);
}

uint16_t DpdkPort::Transmit(rte_mbuf** frames, uint16_t n) { return TransmitOn(0, frames, n); }

rte_mbuf* DpdkPort::Alloc() { return AllocOn(0); }

rte_mbuf* DpdkPort::AllocOn(uint16_t queue) { return rte_pktmbuf_alloc(pools_[queue]); }

}  // namespace migmover::dpdk
