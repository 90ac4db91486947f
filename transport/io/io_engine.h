// Which IoQueue backend carries the data path: chosen once at start-up (--io_engine) and
// carried in the stream options to every queue the daemon makes.
#ifndef MIGMOVER_TRANSPORT_IO_IO_ENGINE_H_
#define MIGMOVER_TRANSPORT_IO_IO_ENGINE_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migmover::io {

enum class IoEngine {
  kAuto,      // io_uring where the kernel allows it, else plain syscalls.
  kUring,     // io_uring only: refusing it is an error.
  kSyscalls,  // ppoll and nonblocking calls (transport/syscalls/syscall_queue.h).
};

// "auto", "uring", "syscalls".
const char* IoEngineName(IoEngine engine);
// The names above. InvalidArgument otherwise, listing them.
absl::StatusOr<IoEngine> ParseIoEngine(absl::string_view text);

}  // namespace migmover::io

#endif  // MIGMOVER_TRANSPORT_IO_IO_ENGINE_H_
