// CPU time and peak RSS of a process, from /proc.
#ifndef MIGMOVER_BENCH_E2E_PROC_STATS_H_
#define MIGMOVER_BENCH_E2E_PROC_STATS_H_

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace migmover::bench {

struct ProcStats {
  double cpu_seconds = 0;       // user + system, all threads including exited ones.
  uint64_t peak_rss_bytes = 0;  // VmHWM.
};

absl::StatusOr<ProcStats> ReadProcStats(pid_t pid);

}  // namespace migmover::bench

#endif  // MIGMOVER_BENCH_E2E_PROC_STATS_H_
