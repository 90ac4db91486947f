// TransportSet: the transports a daemon offers, by name, and the one a source's HELLO asks for.
// Built once at start-up and read-only afterwards, so any thread may use it without a lock.
#ifndef MIGMOVER_TRANSPORT_API_TRANSPORT_SET_H_
#define MIGMOVER_TRANSPORT_API_TRANSPORT_SET_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "transport/api/transport.h"
#include "transport/peer/frame_codec.h"

namespace migmover::transport {

class TransportSet {
 public:
  // Offers `transport` (not owned; it outlives the set). The first one added is the default.
  void Add(Transport* transport);
  // Records a transport this daemon knows of but does not offer, and why (an operator's hint:
  // "this daemon has no DPDK port (start migmoverd with --dpdk_port)").
  void AddMissing(std::string name, std::string why);

  // The transport named `name` ("" = the default). Errors: InvalidArgument for a name nobody
  // knows; FailedPrecondition for a missing one, with its hint.
  absl::StatusOr<Transport*> Find(absl::string_view name) const;
  // The transport that carries the stream `hello` announces. Errors: FailedPrecondition when
  // this daemon does not offer it, with the hint.
  absl::StatusOr<Transport*> ForHello(const peer::Hello& hello) const;

  const std::vector<Transport*>& all() const { return transports_; }

 private:
  std::vector<Transport*> transports_;
  std::vector<std::pair<std::string, std::string>> missing_;
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_API_TRANSPORT_SET_H_
