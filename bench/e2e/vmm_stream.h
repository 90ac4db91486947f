// A VMM's own migration stream carried by migmover in data-fd mode, against the same stream
// over a direct connection between the two ends (what the VMMs would do without a mover). QEMU
// writes its migration stream in small pieces (its QEMUFile buffer is 32 KiB) into a socket or
// pipe, and reads it the same way on the other side; a mover in the middle of that stream must
// cost it almost nothing.
//
// The two ends are child processes of migmover-bench (the binary re-executed with --vmm_role),
// so the VMM's work runs on its own, as QEMU's would: a writer that writes `bytes` of content
// in `write_size` pieces (at `rate` bytes/s if set: the VMM's own pace, as QEMU's
// max-bandwidth sets it; else as fast as the channel takes them), waits for its switchover
// point (Go(): through migmover, once the agent called Switchover) and closes, and a reader
// that reads `read_size` pieces until the end.
// Both digest what they move (XXH3-64), and report when they started and finished
// (CLOCK_MONOTONIC, comparable across processes) and the CPU they used.
#ifndef MIGMOVER_BENCH_E2E_VMM_STREAM_H_
#define MIGMOVER_BENCH_E2E_VMM_STREAM_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bench/e2e/child_process.h"
#include "transport/base/unique_fd.h"

namespace migmover::bench {

enum class VmmChannel { kSocket, kPipe };
absl::StatusOr<VmmChannel> ParseVmmChannel(const std::string& text);

// The two ends of a VMM-side channel: `vmm` for the writer or reader process, `other` for the
// daemon (or, for a direct connection, the other VMM process).
struct VmmChannelFds {
  UniqueFd write_end, read_end;
};
absl::StatusOr<VmmChannelFds> MakeVmmChannel(VmmChannel kind);

struct VmmEndReport {
  uint64_t bytes = 0;
  uint64_t digest = 0;
  int64_t start_ns = 0, end_ns = 0;
  double cpu_seconds = 0;
};

// A writer or reader child process (killed and reaped if destroyed before Wait()).
class VmmEnd {
 public:
  // Starts `/proc/self/exe --vmm_role=writer|reader` with `fd` as its fd 3.
  static absl::StatusOr<std::unique_ptr<VmmEnd>> StartWriter(int fd, uint64_t bytes,
                                                            uint64_t write_size,
                                                            uint64_t rate = 0);
  static absl::StatusOr<std::unique_ptr<VmmEnd>> StartReader(int fd, uint64_t read_size);
  // A writer: the switchover happened; close the stream once everything is written.
  void Go();
  // Waits for the child's report. Errors: what the child said went wrong, or that it died.
  absl::StatusOr<VmmEndReport> Wait();

 private:
  VmmEnd() = default;
  static absl::StatusOr<std::unique_ptr<VmmEnd>> Start(const std::string& role, int fd,
                                                       uint64_t bytes, uint64_t io_size,
                                                       uint64_t rate);
  std::unique_ptr<ChildProcess> child_;  // Reports on its stdout.
  UniqueFd go_;                           // The writer's stdin.
};

// The child's side (main() calls it when --vmm_role is set): runs the role on fd 3, prints its
// report on stdout, and returns the process's exit code.
int RunVmmRole(const std::string& role, uint64_t bytes, uint64_t io_size, uint64_t rate);

struct DirectFigures {
  uint64_t bytes = 0;
  double seconds = 0;  // Writer's first write to the reader's end of stream.
  double vmm_cpu_seconds = 0;
  double throughput() const { return seconds > 0 ? bytes / seconds : 0; }
};

// The reference: one writer and one reader per device, connected directly, all at once.
absl::StatusOr<DirectFigures> RunDirectVmmStreams(int devices, uint64_t bytes,
                                                  uint64_t write_size, VmmChannel kind,
                                                  uint64_t rate = 0);

}  // namespace migmover::bench

#endif  // MIGMOVER_BENCH_E2E_VMM_STREAM_H_
