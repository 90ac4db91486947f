#include "transport/io/io_queue_factory.h"

#include "absl/strings/str_cat.h"
#include "transport/syscalls/syscall_queue.h"
#include "transport/uring/ring.h"

namespace migmover::io {

absl::StatusOr<EngineChoice> ChooseIoEngine(IoEngine requested) {
  EngineChoice choice;
  if (requested == IoEngine::kSyscalls) {
    choice.engine = IoEngine::kSyscalls;
    return choice;
  }
  absl::StatusOr<std::unique_ptr<uring::Ring>> probe = uring::Ring::Create(2);
  if (probe.ok()) {
    choice.engine = IoEngine::kUring;
    return choice;
  }
  if (requested == IoEngine::kUring) {
    return absl::Status(
        probe.status().code(),
        absl::StrCat("--io_engine=uring, but this process may not use io_uring (",
                     probe.status().message(),
                     "); check sysctl kernel.io_uring_disabled and the container's seccomp "
                     "profile, or run with --io_engine=syscalls"));
  }
  choice.engine = IoEngine::kSyscalls;
  choice.uring_refused = probe.status();
  return choice;
}

absl::StatusOr<std::unique_ptr<IoQueue>> CreateIoQueue(IoEngine engine, unsigned entries) {
  if (engine != IoEngine::kSyscalls) {
    absl::StatusOr<std::unique_ptr<uring::Ring>> ring = uring::Ring::Create(entries);
    if (ring.ok()) return std::unique_ptr<IoQueue>(std::move(*ring));
    if (engine == IoEngine::kUring) return ring.status();
  }
  return std::unique_ptr<IoQueue>(syscalls::SyscallQueue::Create(entries));
}

}  // namespace migmover::io
