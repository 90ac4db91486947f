// Turning a failed syscall into an absl::Status that names the call, its arguments and errno.
#ifndef MIGMOVER_TRANSPORT_BASE_ERRNO_STATUS_H_
#define MIGMOVER_TRANSPORT_BASE_ERRNO_STATUS_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace migmover {

// "EIO", "EAGAIN", ...; "E<n>" for a value without a name.
std::string ErrnoName(int err);

// The canonical code that best describes `err` (EINVAL -> InvalidArgument, ENOENT -> NotFound,
// EAGAIN -> Unavailable, ...).
absl::StatusCode ErrnoToCode(int err);

// Status for a failed call: message "<call>: <ENAME> (<strerror>)", code from ErrnoToCode.
// `call` names the call and its arguments, e.g. "ioctl(VFIO_DEVICE_RESET, fd 7)".
absl::Status ErrnoStatus(absl::string_view call, int err);
// Same, with "; <detail>" appended to the message.
absl::Status ErrnoStatus(absl::string_view call, int err, absl::string_view detail);

// The errno an ErrnoStatus carries (0 if `status` did not come from ErrnoStatus).
int StatusErrno(const absl::Status& status);

}  // namespace migmover

#endif  // MIGMOVER_TRANSPORT_BASE_ERRNO_STATUS_H_
