// OpenMemifPair: two DPDK ports in this process joined by net_memif (a server and a client on one
// abstract unix socket, shared-memory rings between them), both up. What tests and the bench run
// the DPDK transport over on machines without NICs.
#ifndef MIGMOVER_TRANSPORT_DPDK_MEMIF_PAIR_H_
#define MIGMOVER_TRANSPORT_DPDK_MEMIF_PAIR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "transport/dpdk/port.h"

namespace migmover::dpdk {

struct MemifPair {
  std::unique_ptr<DpdkPort> server, client;
};

// Ports "net_memif_<tag>s" and "net_memif_<tag>c" on a socket named after `tag` and this process
// (`tag` must be unique among the pairs open at once), each with `buffers` frame buffers; waits
// up to 10 s for both links. The EAL must be up. Errors: DpdkPort::Open's and WaitLinkUp's.
absl::StatusOr<MemifPair> OpenMemifPair(absl::string_view tag, uint32_t buffers = 4095);

// The pair `tag`, opened on first use and kept for the life of the process: DPDK 22.11's memif
// crashed in its control thread when pairs were torn down and created again in one process
// (seen here), so tests and the bench reuse theirs, giving each use new link ids. Thread-safe.
absl::StatusOr<MemifPair*> KeptMemifPair(absl::string_view tag, uint32_t buffers = 4095);

}  // namespace migmover::dpdk

#endif  // MIGMOVER_TRANSPORT_DPDK_MEMIF_PAIR_H_
