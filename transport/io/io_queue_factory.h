// Makes IoQueues of the engine the daemon chose, and makes that choice: io_uring when the kernel
// allows this process to set one up, plain syscalls otherwise (or when asked for).
#ifndef MIGMOVER_TRANSPORT_IO_IO_QUEUE_FACTORY_H_
#define MIGMOVER_TRANSPORT_IO_IO_QUEUE_FACTORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "transport/io/io_engine.h"
#include "transport/io/io_queue.h"

namespace migmover::io {

struct EngineChoice {
  IoEngine engine = IoEngine::kUring;  // kUring or kSyscalls, never kAuto.
  // Why io_uring is not used when auto fell back ("io_uring_queue_init(2): EPERM"); OK otherwise.
  absl::Status uring_refused;
};

// Resolves `requested` by setting up (and closing) one small ring. Errors: kUring requested
// and refused, with the refusal and what to do about it (kernel.io_uring_disabled, seccomp,
// --io_engine=syscalls).
absl::StatusOr<EngineChoice> ChooseIoEngine(IoEngine requested);

// A queue of `engine` for up to `entries` requests in flight. kAuto tries io_uring, then
// syscalls. Errors: io_uring's refusal for kUring (see Ring::Create).
absl::StatusOr<std::unique_ptr<IoQueue>> CreateIoQueue(IoEngine engine, unsigned entries);

}  // namespace migmover::io

#endif  // MIGMOVER_TRANSPORT_IO_IO_QUEUE_FACTORY_H_
