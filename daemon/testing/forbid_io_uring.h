// A seccomp filter that refuses io_uring to a process, as container runtimes' default profiles
// and kernel.io_uring_disabled=2 do: io_uring_setup, io_uring_enter and io_uring_register fail
// with EPERM; every other syscall is allowed. Tests install it in a daemon's child process
// before exec to show that migmoverd still migrates without io_uring.
#ifndef MIGMOVER_DAEMON_TESTING_FORBID_IO_URING_H_
#define MIGMOVER_DAEMON_TESTING_FORBID_IO_URING_H_

#include "absl/status/status.h"

namespace migmover::testing {

// Installs the filter on the calling thread (inherited by exec and by threads made after it);
// sets no_new_privs, which seccomp requires without CAP_SYS_ADMIN. Async-signal-safe: may run
// between fork and exec. Errors name the prctl call.
absl::Status ForbidIoUring();

// Whether MIGMOVER_TEST_FORBID_IO_URING=1 asks for it (test targets set it to rerun the
// integration tests without io_uring).
bool ForbidIoUringRequested();

}  // namespace migmover::testing

#endif  // MIGMOVER_DAEMON_TESTING_FORBID_IO_URING_H_
