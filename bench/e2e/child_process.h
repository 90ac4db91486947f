// ChildProcess: a program the bench starts (iperf3, or migmover-bench itself in a VMM role)
// with its stdout and stderr piped back to us and some of our fds placed at chosen numbers in
// it; killed and reaped if destroyed before Wait(). Not thread-safe: one owner.
#ifndef MIGMOVER_BENCH_E2E_CHILD_PROCESS_H_
#define MIGMOVER_BENCH_E2E_CHILD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "transport/base/unique_fd.h"

namespace migmover::bench {

class ChildProcess {
 public:
  struct FdAt {
    int ours;    // An fd of this process (it stays ours).
    int theirs;  // Its number in the child (dup2: not close-on-exec there).
  };
  // Starts `path` (looked up in PATH when it has no '/') with `argv` (argv[0] included).
  // Errors: NotFound naming the Debian package when `path` is not installed; the spawn's errno.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::string& path,
                                                             const std::vector<std::string>& argv,
                                                             const std::vector<FdAt>& fds = {});
  ~ChildProcess();

  // Reads output until `marker` appears; false on EOF or after `timeout`.
  bool AwaitOutput(absl::string_view marker, absl::Duration timeout);
  // Reads to EOF and reaps the child: its exit code, -1 if a signal ended it (or it could not be
  // reaped). Again after that: the same code.
  int Wait();
  // Everything it printed so far (stdout and stderr interleaved).
  const std::string& output() const { return output_; }

 private:
  ChildProcess() = default;
  bool ReadSome();

  pid_t pid_ = -1;
  int exit_code_ = -1;  // Once Wait() reaped it.
  UniqueFd out_;
  std::string output_;
};

}  // namespace migmover::bench

#endif  // MIGMOVER_BENCH_E2E_CHILD_PROCESS_H_
