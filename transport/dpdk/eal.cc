#include "transport/dpdk/eal.h"

#include <pthread.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <sched.h>
#include <unistd.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace migmover::dpdk {
namespace {

std::mutex g_mu;
bool g_up = false;
std::vector<std::string> g_args;  // What the EAL was started with.

std::vector<std::string> Arguments(const EalOptions& o) {
  std::vector<std::string> a = {"migmover"};
  if (o.no_huge) a.push_back("--no-huge");
  a.push_back("-m");
  a.push_back(absl::StrCat(o.memory_mb));
  a.push_back("--no-pci");
  // No shared runtime files: two daemons (or a daemon and a test) on one host stay independent.
  a.push_back("--no-shconf");
  a.push_back(absl::StrCat("--file-prefix=", o.file_prefix.empty()
                                                 ? absl::StrCat("migmover-", ::getpid())
                                                 : o.file_prefix));
  a.push_back("--no-telemetry");
  a.push_back("-l");
  a.push_back("0");
  a.push_back(absl::StrCat("--log-level=", o.log_level));
  for (const std::string& v : o.vdevs) a.push_back(absl::StrCat("--vdev=", v));
  return a;
}

}  // namespace

absl::Status InitEal(const EalOptions& options) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<std::string> args = Arguments(options);
  if (g_up) {
    // The pid-derived prefix is the same within a process; compare everything else.
    if (args == g_args) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("DPDK EAL already started with [", absl::StrJoin(g_args, " "),
                     "]; it cannot restart with [", absl::StrJoin(args, " "), "]"));
  }
  cpu_set_t affinity;
  const bool have_affinity =
      pthread_getaffinity_np(pthread_self(), sizeof(affinity), &affinity) == 0;
  std::vector<std::string> copy = args;  // rte_eal_init may permute argv.
  std::vector<char*> argv;
  for (std::string& s : copy) argv.push_back(s.data());
  argv.push_back(nullptr);
  const int rc = rte_eal_init(static_cast<int>(argv.size() - 1), argv.data());
  if (have_affinity) pthread_setaffinity_np(pthread_self(), sizeof(affinity), &affinity);
  if (rc < 0) {
    return absl::InternalError(
        absl::StrCat("rte_eal_init(", absl::StrJoin(args, " "), "): ", rte_strerror(rte_errno)));
  }
  g_up = true;
  g_args = std::move(args);
  return absl::OkStatus();
}

bool EalInitialized() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_up;
}

}  // namespace migmover::dpdk
