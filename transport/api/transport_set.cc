#include "transport/api/transport_set.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace migmover::transport {

void TransportSet::Add(Transport* transport) { transports_.push_back(transport); }

void TransportSet::AddMissing(std::string name, std::string why) {
  missing_.emplace_back(std::move(name), std::move(why));
}

absl::StatusOr<Transport*> TransportSet::Find(absl::string_view name) const {
  if (name.empty() && !transports_.empty()) return transports_.front();
  for (Transport* t : transports_) {
    if (t->name() == name) return t;
  }
  for (const auto& [missing, why] : missing_) {
    if (missing == name) return absl::FailedPreconditionError(absl::StrCat("transport ", name, ": ", why));
  }
  std::vector<std::string> known;
  for (Transport* t : transports_) known.emplace_back(absl::StrCat("\"", t->name(), "\""));
  for (const auto& m : missing_) known.push_back(absl::StrCat("\"", m.first, "\""));
  return absl::InvalidArgumentError(
      absl::StrCat("transport '", name, "': expected ", absl::StrJoin(known, " or ")));
}

absl::StatusOr<Transport*> TransportSet::ForHello(const peer::Hello& hello) const {
  for (Transport* t : transports_) {
    if (t->Carries(hello)) return t;
  }
  // The wire says which transport: a HELLO naming a link is for DPDK (api/PEER_PROTOCOL.md).
  const std::string over = hello.link != 0 ? absl::StrCat("DPDK link ", hello.link) : "TCP";
  const absl::string_view name = hello.link != 0 ? "dpdk" : "tcp";
  std::string why = "this daemon does not offer it";
  for (const auto& [missing, hint] : missing_) {
    if (missing == name) why = hint;
  }
  return absl::FailedPreconditionError(absl::StrCat("the source sends device ", hello.device,
                                                    " over ", over, ", but ", why));
}

}  // namespace migmover::transport
