// RunDpdkLinkInProcess: the STOP_COPY stream of each simulated device moved over the DPDK
// transport inside the bench process: per device, a source thread pumps the saving data fd into a
// net_memif port and a destination thread writes the resuming data fd from its peer port, in the
// peer protocol's frames (transport/dpdk/link_stream.h), and commits. The daemons do not
// negotiate DPDK yet; this measures the transport with the devices and framing they would use.
#ifndef MIGMOVER_BENCH_E2E_DPDK_LINK_RUN_H_
#define MIGMOVER_BENCH_E2E_DPDK_LINK_RUN_H_

#include <vector>

#include "absl/status/statusor.h"
#include "bench/e2e/inprocess_run.h"
#include "daemon/device/sim/sim_device_spec.h"

namespace migmover::bench {

// `chunk_size`: most bytes per DATA frame (and per readv of the data fd). Starts DPDK's EAL in
// this process on first use (anonymous memory, no PCI) and keeps its ports for later calls,
// which must ask for no more devices than the first. `sealed`: the links' frames are sealed, as
// the daemons' are; otherwise they cross in clear and the stream's keyed digest checks them.
absl::StatusOr<InProcessResult> RunDpdkLinkInProcess(const std::vector<sim::SimDeviceSpec>& specs,
                                                     uint32_t chunk_size, bool sealed = true);

}  // namespace migmover::bench

#endif  // MIGMOVER_BENCH_E2E_DPDK_LINK_RUN_H_
