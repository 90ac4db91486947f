#include "transport/dpdk/memif_pair.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "transport/base/status_macros.h"

namespace migmover::dpdk {

absl::StatusOr<MemifPair> OpenMemifPair(absl::string_view tag, uint32_t buffers) {
  const std::string sock = absl::StrCat("migmover-", ::getpid(), "-", tag);
  MemifPair p;
  ASSIGN_OR_RETURN(
      p.server,
      DpdkPort::Open({.devargs = absl::StrCat("net_memif_", tag, "s,role=server,socket=", sock),
                      .buffers = buffers}));
  ASSIGN_OR_RETURN(
      p.client,
      DpdkPort::Open({.devargs = absl::StrCat("net_memif_", tag, "c,role=client,socket=", sock),
                      .buffers = buffers}));
  RETURN_IF_ERROR(p.server->WaitLinkUp(absl::Seconds(10)));
  RETURN_IF_ERROR(p.client->WaitLinkUp(absl::Seconds(10)));
  return p;
}

}  // namespace migmover::dpdk
