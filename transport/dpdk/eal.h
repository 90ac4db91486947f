// The DPDK environment (EAL) of a process: started once, before any port is opened.
#ifndef MIGMOVER_TRANSPORT_DPDK_EAL_H_
#define MIGMOVER_TRANSPORT_DPDK_EAL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace migmover::dpdk {

struct EalOptions {
  // Memory DPDK reserves for packet buffers, in MiB.
  int memory_mb = 512;
  // Anonymous memory instead of hugepages: works on any machine (vdevs such as net_memif need no
  // physically contiguous memory); set false where hugepages are mounted and a NIC needs them.
  bool no_huge = true;
  // Keep DPDK's runtime files apart from other DPDK processes; empty = "migmover-<pid>".
  std::string file_prefix;
  // Devices to create at start (`--vdev` syntax, e.g. "net_memif0,role=server,socket=/run/x").
  // Ports can also be created later with DpdkPort::Open.
  std::vector<std::string> vdevs;
  // DPDK's own log level (1 = critical ... 8 = debug).
  int log_level = 4;
};

// Starts the EAL with `options`. The calling thread's CPU affinity is kept (DPDK would pin it to
// one core, and every thread started later would inherit that). Safe to call again: once the EAL
// is up, later calls return OK if `options` are the same and FailedPrecondition otherwise (the
// EAL cannot restart within a process). Errors: Internal with DPDK's reason (rte_strerror) and
// the arguments it was given.
absl::Status InitEal(const EalOptions& options);

// Whether InitEal has succeeded in this process.
bool EalInitialized();

}  // namespace migmover::dpdk

#endif  // MIGMOVER_TRANSPORT_DPDK_EAL_H_
