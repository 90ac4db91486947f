#include "bench/e2e/proc_stats.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace migmover::bench {

absl::StatusOr<ProcStats> ReadProcStats(pid_t pid) {
  ProcStats out;
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(stat, line)) {
    return absl::NotFoundError(absl::StrCat("/proc/", pid, "/stat: no such process"));
  }
  // The command name may hold spaces: fields are counted after its closing parenthesis.
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::vector<std::string> f;
  std::string tok;
  while (rest >> tok) f.push_back(tok);
  if (f.size() < 13) return absl::DataLossError("short /proc/<pid>/stat");
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  out.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / tick;  // utime, stime
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      out.peak_rss_bytes = std::stoull(line.substr(6)) * 1024;
    }
  }
  return out;
}

}  // namespace migmover::bench
