#include "transport/dpdk/memif_pair.h"

#include <unistd.h>

#include <map>
#include <mutex>

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

absl::StatusOr<MemifPair*> KeptMemifPair(absl::string_view tag, uint32_t buffers) {
  static std::mutex mu;
  static auto* kept = new std::map<std::string, MemifPair, std::less<>>;
  std::lock_guard<std::mutex> lock(mu);
  auto it = kept->find(tag);
  if (it == kept->end()) {
    ASSIGN_OR_RETURN(MemifPair pair, OpenMemifPair(tag, buffers));
    it = kept->emplace(std::string(tag), std::move(pair)).first;
  }
  return &it->second;
}

}  // namespace migmover::dpdk
