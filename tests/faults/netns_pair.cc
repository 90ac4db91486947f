#include "tests/faults/netns_pair.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace migmover::testing {

absl::Status Sh(const std::string& command) {
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return absl::InternalError(absl::StrCat("popen(", command, ") failed"));
  std::string out;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  if (status != 0) {
    return absl::InternalError(absl::StrCat("`", command, "` exited ", WEXITSTATUS(status), ": ",
                                            out));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<NetnsPair>> NetnsPair::Create() {
  if (::geteuid() != 0) return absl::FailedPreconditionError("network namespaces need root");
  for (const char* tool : {"ip", "nft"}) {
    if (!Sh(absl::StrCat("command -v ", tool)).ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("`", tool, "` is not installed (deploy/install-deps.sh installs it)"));
    }
  }
  const std::string prefix = absl::StrCat("mmf", ::getpid());
  std::unique_ptr<NetnsPair> n(new NetnsPair(prefix + "a", prefix + "b"));
  const std::string& a = n->a_;
  const std::string& b = n->b_;
  for (const std::string& cmd : {
           absl::StrCat("ip netns add ", a),
           absl::StrCat("ip netns add ", b),
           absl::StrCat("ip link add ", a, " netns ", a, " type veth peer name ", b, " netns ", b),
           absl::StrCat("ip -n ", a, " addr add ", kAddressA, "/24 dev ", a),
           absl::StrCat("ip -n ", b, " addr add ", kAddressB, "/24 dev ", b),
           absl::StrCat("ip -n ", a, " link set ", a, " up"),
           absl::StrCat("ip -n ", b, " link set ", b, " up"),
           absl::StrCat("ip -n ", a, " link set lo up"),
           absl::StrCat("ip -n ", b, " link set lo up"),
       }) {
    if (absl::Status s = Sh(cmd); !s.ok()) return s;
  }
  for (const std::string& ns : {a, b}) {
    if (absl::Status s = Sh(absl::StrCat("ip netns exec ", ns, " nft 'add table inet mmfault; ",
                                         "add chain inet mmfault in { type filter hook input ",
                                         "priority 0; policy accept; }'"));
        !s.ok()) {
      return s;
    }
  }
  return n;
}

NetnsPair::~NetnsPair() {
  (void)Sh(absl::StrCat("ip netns del ", a_));
  (void)Sh(absl::StrCat("ip netns del ", b_));
}

absl::Status NetnsPair::Both(const std::string& rule_from_a, const std::string& rule_from_b) {
  if (absl::Status s = Clear(); !s.ok()) return s;
  if (absl::Status s = Sh(absl::StrCat("ip netns exec ", b_, " nft 'add rule inet mmfault in ip ",
                                       "saddr ", kAddressA, " ", rule_from_a, "'"));
      !s.ok()) {
    return s;
  }
  return Sh(absl::StrCat("ip netns exec ", a_, " nft 'add rule inet mmfault in ip saddr ",
                         kAddressB, " ", rule_from_b, "'"));
}

absl::Status NetnsPair::Drop() { return Both("drop", "drop"); }

absl::Status NetnsPair::DropFromA() {
  if (absl::Status s = Clear(); !s.ok()) return s;
  return Sh(absl::StrCat("ip netns exec ", b_, " nft 'add rule inet mmfault in ip saddr ",
                         kAddressA, " drop'"));
}

absl::Status NetnsPair::Reset() {
  return Both("meta l4proto tcp reject with tcp reset", "meta l4proto tcp reject with tcp reset");
}

absl::Status NetnsPair::Loss(int percent) {
  const std::string rule = absl::StrCat("numgen random mod 100 < ", percent, " drop");
  return Both(rule, rule);
}

absl::Status NetnsPair::Bottleneck(uint64_t bits_per_second) {
  for (const std::string& ns : {a_, b_}) {
    if (absl::Status s = Sh(absl::StrCat("ip netns exec ", ns, " tc qdisc replace dev ", ns,
                                         " root tbf rate ", bits_per_second,
                                         "bit burst 64kb latency 100ms"));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status NetnsPair::Clear() {
  for (const std::string& ns : {a_, b_}) {
    // No qdisc of ours there is fine.
    (void)Sh(absl::StrCat("ip netns exec ", ns, " tc qdisc del dev ", ns, " root 2>/dev/null"));
  }
  for (const std::string& ns : {a_, b_}) {
    if (absl::Status s = Sh(absl::StrCat("ip netns exec ", ns, " nft flush chain inet mmfault in"));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace migmover::testing
