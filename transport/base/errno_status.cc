#include "transport/base/errno_status.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace migmover {
namespace {
constexpr char kErrnoPayloadUrl[] = "migmover/errno";
}  // namespace

std::string ErrnoName(int err) {
  // strerrorname_np is glibc >= 2.32; Debian 12 ships 2.36.
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return absl::StrCat("E", err);
}

absl::StatusCode ErrnoToCode(int err) {
  switch (err) {
    case EINVAL:
    case ENOTTY:
    case EBADF:
    case ESPIPE:
    case EMSGSIZE:
      return absl::StatusCode::kInvalidArgument;
    case ENOENT:
    case ENODEV:
    case ENXIO:
      return absl::StatusCode::kNotFound;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case EAGAIN:
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case ENOTCONN:
    case EHOSTUNREACH:
    case ENETUNREACH:
      return absl::StatusCode::kUnavailable;
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
      return absl::StatusCode::kResourceExhausted;
    case EOPNOTSUPP:
    case ENOSYS:
      return absl::StatusCode::kUnimplemented;
    case ECANCELED:
    case EINTR:
      return absl::StatusCode::kCancelled;
    case EIO:
    case EFAULT:
      return absl::StatusCode::kDataLoss;
    default:
      return absl::StatusCode::kUnknown;
  }
}

absl::Status ErrnoStatus(absl::string_view call, int err) { return ErrnoStatus(call, err, ""); }

absl::Status ErrnoStatus(absl::string_view call, int err, absl::string_view detail) {
  absl::Status status(ErrnoToCode(err),
                      absl::StrCat(call, ": ", ErrnoName(err), " (", std::strerror(err), ")",
                                   detail.empty() ? "" : "; ", detail));
  status.SetPayload(kErrnoPayloadUrl, absl::Cord(absl::StrCat(err)));
  return status;
}

int StatusErrno(const absl::Status& status) {
  auto payload = status.GetPayload(kErrnoPayloadUrl);
  if (!payload.has_value()) return 0;
  int err = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &err)) return 0;
  return err;
}

}  // namespace migmover
