// DpdkTransport: a daemon's DPDK port and the device streams on it. The one DPDK entry point for
// the daemon and its sessions; it includes no DPDK header, so they build without DPDK's flags.
#ifndef MIGMOVER_TRANSPORT_DPDK_DPDK_TRANSPORT_H_
#define MIGMOVER_TRANSPORT_DPDK_DPDK_TRANSPORT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/stream/device_stream.h"
#include "transport/stream/stream_options.h"

namespace migmover::dpdk {

struct DpdkTransportOptions {
  // The port: DPDK device arguments, e.g. "net_memif0,role=server,socket=migmover-memif"
  // (see api/DPDK_LINK.md).
  std::string devargs;
  // Memory for DPDK's buffers, in MiB (anonymous memory unless `hugepages`).
  int memory_mb = 512;
  bool hugepages = false;
  // Queue pairs on the port; a stream's link uses queue (link id mod queues), and NewLinkId
  // spreads a session's devices over them. Both daemons of a pair should use the same count.
  // One by default: on memif here four measured no faster and cost 50 MB more resident each.
  uint16_t queues = 1;
  // Bytes per frame, Ethernet header included (0: 32 KiB on net_memif, 9216 elsewhere). At most
  // the port's MTU + 14; net_af_packet needs its framesz minus 32.
  uint16_t frame_size = 0;
};

class DpdkTransport {
 public:
  // Starts DPDK's EAL in this process and opens the port (it need not be up yet: a memif peer
  // may come later). Errors: those of InitEal and DpdkPort::Open (a bad devargs is
  // InvalidArgument).
  static absl::StatusOr<std::unique_ptr<DpdkTransport>> Start(const DpdkTransportOptions& options);
  ~DpdkTransport();

  // A device stream's sending or receiving end on link `link_id` of this port, in the peer
  // protocol's frames, with `options`' chunk size, idle timeout and bandwidth cap. Waits up to
  // `link_wait` for the port to be up. Thread-safe: each session thread opens its own. Errors:
  // Unavailable if the port stays down; AlreadyExists if another stream holds the link id;
  // InvalidArgument for id 0.
  absl::StatusOr<std::unique_ptr<stream::DeviceStreamSender>> OpenSender(
      uint64_t link_id, uint32_t device, const stream::StreamOptions& options,
      absl::Duration link_wait = absl::Seconds(10));
  // `peer_connection_fd`: the connection the source said HELLO on, watched while receiving (its
  // closing means the source is gone); -1 for none. Not owned.
  absl::StatusOr<std::unique_ptr<stream::DeviceStreamReceiver>> OpenReceiver(
      uint64_t link_id, uint32_t device, const stream::StreamOptions& options,
      int peer_connection_fd = -1, absl::Duration link_wait = absl::Seconds(10));

  // "net_memif0 (02:..:..), 1 queue(s)": for logs.
  std::string Describe() const;

  // A fresh random link id (never 0) whose queue is `spread` mod the port's queues: devices
  // 0, 1, 2, ... of a session land on different queues.
  uint32_t NewLinkId(uint32_t spread) const;

 private:
  struct Impl;
  explicit DpdkTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace migmover::dpdk

#endif  // MIGMOVER_TRANSPORT_DPDK_DPDK_TRANSPORT_H_
