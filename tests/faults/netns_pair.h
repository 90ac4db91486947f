// NetnsPair: two network namespaces joined by a veth pair, for fault tests between two real
// daemons: each daemon runs in its own namespace (LaunchOptions::netns) and the faults are
// nftables rules on that link only, never on the machine's own traffic. Needs root, `ip` and
// `nft` (Debian's iproute2 and nftables); Create says what is missing otherwise.
//
// Faults, each applied to what either side receives from the other (both directions):
//   Drop():     every packet silently dropped (a cut without a reset).
//   Reset():    every TCP segment answered with a reset (the peer's stack is gone).
//   DropFromA(): what b receives from a dropped, the other way open (a one-way cut: a's
//               segments, acknowledgements included, never arrive; b's do).
//   Loss(p):    each packet dropped with probability p percent (nft's `numgen random`; this
//               kernel has no sch_netem).
//   Bottleneck(rate): both ends of the veth send at most `rate` bits per second (a `tbf` qdisc,
//               100 ms of queue), what a slow or shared link does.
//   Clear():    none of the above.
#ifndef MIGMOVER_TESTS_FAULTS_NETNS_PAIR_H_
#define MIGMOVER_TESTS_FAULTS_NETNS_PAIR_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace migmover::testing {

class NetnsPair {
 public:
  // Makes the namespaces "<prefix>a" and "<prefix>b" (a name this process owns: its pid in it)
  // with 10.77.0.1 and 10.77.0.2 on the veth between them, and an empty nftables table in each.
  // Errors: FailedPrecondition naming what the machine lacks (root, ip, nft); the command that
  // failed, with its output.
  static absl::StatusOr<std::unique_ptr<NetnsPair>> Create();
  // Deletes both namespaces (and with them the veth and the rules).
  ~NetnsPair();

  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }
  static constexpr const char* kAddressA = "10.77.0.1";
  static constexpr const char* kAddressB = "10.77.0.2";

  absl::Status Drop();
  absl::Status DropFromA();
  absl::Status Reset();
  absl::Status Loss(int percent);
  absl::Status Bottleneck(uint64_t bits_per_second);
  absl::Status Clear();

 private:
  NetnsPair(std::string a, std::string b) : a_(std::move(a)), b_(std::move(b)) {}
  // The same rule in both namespaces, after clearing.
  absl::Status Both(const std::string& rule_from_a, const std::string& rule_from_b);

  std::string a_, b_;
};

// Runs `command` with /bin/sh; its output goes into the error when it exits non-zero.
absl::Status Sh(const std::string& command);

}  // namespace migmover::testing

#endif  // MIGMOVER_TESTS_FAULTS_NETNS_PAIR_H_
