// DpdkTransport: a daemon's DPDK port and the device streams on it. The one DPDK entry point for
// the daemon and its sessions; it includes no DPDK header, so they build without DPDK's flags.
#ifndef MIGMOVER_TRANSPORT_DPDK_DPDK_TRANSPORT_H_
#define MIGMOVER_TRANSPORT_DPDK_DPDK_TRANSPORT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/api/transport.h"
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

class DpdkTransport final : public transport::Transport {
 public:
  // Starts DPDK's EAL in this process and opens the port (it need not be up yet: a memif peer
  // may come later). Errors: those of InitEal and DpdkPort::Open (a bad devargs is
  // InvalidArgument).
  static absl::StatusOr<std::unique_ptr<DpdkTransport>> Start(const DpdkTransportOptions& options);
  ~DpdkTransport() override;

  absl::string_view name() const override { return "dpdk"; }
  // A link carries a device's stream whole.
  uint32_t max_streams_per_device() const override { return 1; }
  // HELLO naming a link: the stream runs on that link of this port.
  bool Carries(const peer::Hello& hello) const override { return hello.link != 0; }
  // Each device's stream on a fresh link (waiting up to 10 s for the port to be up), named in
  // its HELLO on one TCP connection that stays open, watched, while the stream runs. Errors:
  // InvalidArgument for more than one stream per device.
  absl::StatusOr<std::unique_ptr<transport::SourceChannel>> StartSource(
      const transport::SessionSpec& spec) override;
  // Attaches the link a HELLO names before answering it, so the link's first frames find their
  // queue. Refusals: Unavailable (port down), AlreadyExists (link id taken), InvalidArgument
  // (more than one stream per device).
  absl::StatusOr<std::unique_ptr<transport::DestinationChannel>> StartDestination(
      const transport::SessionSpec& spec) override;

  // "net_memif0 (02:..:..), 1 queue(s)": for logs.
  std::string Describe() const;

 private:
  struct Impl;
  class Source;
  class Destination;
  explicit DpdkTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace migmover::dpdk

#endif  // MIGMOVER_TRANSPORT_DPDK_DPDK_TRANSPORT_H_
