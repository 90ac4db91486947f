#include "transport/dpdk/dpdk_transport.h"

#include <sys/random.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "transport/base/status_macros.h"
#include "transport/dpdk/eal.h"
#include "transport/dpdk/link_stream.h"
#include "transport/dpdk/port.h"
#include "transport/dpdk/port_mux.h"

namespace migmover::dpdk {

struct DpdkTransport::Impl {
  std::unique_ptr<DpdkPort> port;
  std::unique_ptr<PortMux> mux;  // After the port: goes first.

  absl::Status Up(absl::Duration wait) {
    absl::Status up = port->WaitLinkUp(wait);
    if (up.ok()) return up;
    return absl::UnavailableError(absl::StrCat("DPDK port ", port->name(),
                                               " is down: is the peer daemon's port up? (",
                                               up.message(), ")"));
  }

  // A new link's io on the port, and the settings of a session stream on it.
  absl::StatusOr<std::unique_ptr<FrameIo>> Attach(uint64_t link_id, absl::Duration wait) {
    RETURN_IF_ERROR(Up(wait));
    return mux->Attach(link_id, kSessionLinkWindow);
  }
  LinkOptions Link(uint64_t link_id, const stream::StreamOptions& o) const {
    return SessionLinkOptions(link_id, o.idle_timeout, port->frame_capacity());
  }

  LinkStreamOptions StreamOptions(const stream::StreamOptions& o) const {
    LinkStreamOptions l;
    l.chunk_size = o.chunk_size;
    l.idle_timeout = o.idle_timeout;
    l.limiter = o.limiter;
    return l;
  }
};

absl::StatusOr<std::unique_ptr<DpdkTransport>> DpdkTransport::Start(
    const DpdkTransportOptions& options) {
  EalOptions eal;
  eal.memory_mb = options.memory_mb;
  eal.no_huge = !options.hugepages;
  RETURN_IF_ERROR(InitEal(eal));
  auto impl = std::make_unique<Impl>();
  // Most of DPDK's memory goes to frame buffers: a power of two minus one (what DPDK's pools
  // size best), between 1023 and 16383.
  const uint64_t frame = DpdkPort::BufferRoomFor(options.devargs, options.frame_size) + 512;
  const uint64_t fit = (static_cast<uint64_t>(options.memory_mb) << 20) * 3 / 5 / frame;
  uint32_t buffers = 1023;
  while (buffers < 16383 && (buffers * 2 + 1) <= fit) buffers = buffers * 2 + 1;
  ASSIGN_OR_RETURN(impl->port, DpdkPort::Open({.devargs = options.devargs,
                                               .queues = options.queues,
                                               .buffers = buffers,
                                               .frame_capacity = options.frame_size}));
  impl->mux = std::make_unique<PortMux>(impl->port.get());
  return std::unique_ptr<DpdkTransport>(new DpdkTransport(std::move(impl)));
}

DpdkTransport::DpdkTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DpdkTransport::~DpdkTransport() = default;

absl::StatusOr<std::unique_ptr<stream::DeviceStreamSender>> DpdkTransport::OpenSender(
    uint64_t link_id, uint32_t device, const stream::StreamOptions& options,
    absl::Duration link_wait) {
  ASSIGN_OR_RETURN(std::unique_ptr<FrameIo> io, impl_->Attach(link_id, link_wait));
  ASSIGN_OR_RETURN(std::unique_ptr<LinkStreamSender> s,
                   LinkStreamSender::Create(std::move(io), impl_->Link(link_id, options), device,
                                            impl_->StreamOptions(options)));
  return std::unique_ptr<stream::DeviceStreamSender>(std::move(s));
}

absl::StatusOr<std::unique_ptr<stream::DeviceStreamReceiver>> DpdkTransport::OpenReceiver(
    uint64_t link_id, uint32_t device, const stream::StreamOptions& options, int peer_connection_fd,
    absl::Duration link_wait) {
  ASSIGN_OR_RETURN(std::unique_ptr<FrameIo> io, impl_->Attach(link_id, link_wait));
  LinkStreamOptions so = impl_->StreamOptions(options);
  so.peer_connection_fd = peer_connection_fd;
  ASSIGN_OR_RETURN(
      std::unique_ptr<LinkStreamReceiver> r,
      LinkStreamReceiver::Create(std::move(io), impl_->Link(link_id, options), device, so));
  return std::unique_ptr<stream::DeviceStreamReceiver>(std::move(r));
}

std::string DpdkTransport::Describe() const {
  const rte_ether_addr mac = impl_->port->mac();
  return absl::StrFormat("%s (%02x:%02x:%02x:%02x:%02x:%02x), %d queue(s)", impl_->port->name(),
                         mac.addr_bytes[0], mac.addr_bytes[1], mac.addr_bytes[2], mac.addr_bytes[3],
                         mac.addr_bytes[4], mac.addr_bytes[5], impl_->port->queues());
}

uint32_t DpdkTransport::NewLinkId(uint32_t spread) const {
  const uint32_t queues = impl_->port->queues();
  uint32_t id = 0;
  while (id == 0) {
    uint32_t r = 0;
    if (::getrandom(&r, sizeof(r), 0) != sizeof(r)) continue;
    id = r - r % queues + spread % queues;
  }
  return id;
}

}  // namespace migmover::dpdk
