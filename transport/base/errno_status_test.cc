#include "transport/base/errno_status.h"

#include <cerrno>

#include "gtest/gtest.h"
#include "transport/base/status_macros.h"

namespace migmover {
namespace {

TEST(ErrnoStatusTest, NamesCallAndErrno) {
  absl::Status s = ErrnoStatus("ioctl(VFIO_DEVICE_RESET, fd 7)", EIO);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("ioctl(VFIO_DEVICE_RESET, fd 7): EIO"), absl::string_view::npos)
      << s.message();
  EXPECT_EQ(StatusErrno(s), EIO);
  EXPECT_EQ(StatusErrno(absl::InternalError("x")), 0);
}

TEST(ErrnoStatusTest, CodesFollowErrno) {
  EXPECT_EQ(ErrnoToCode(EINVAL), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrnoToCode(ENODEV), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrnoToCode(EAGAIN), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrnoName(ENOMSG), "ENOMSG");
}

absl::StatusOr<int> Half(int v) {
  if (v % 2) return absl::InvalidArgumentError("odd");
  return v / 2;
}

absl::Status UseMacros(int v, int* out) {
  ASSIGN_OR_RETURN(int h, Half(v));
  RETURN_IF_ERROR(h > 100 ? absl::OutOfRangeError("big") : absl::OkStatus());
  *out = h;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagateErrorsAndValues) {
  int out = 0;
  EXPECT_TRUE(UseMacros(8, &out).ok());
  EXPECT_EQ(out, 4);
  EXPECT_EQ(UseMacros(7, &out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UseMacros(400, &out).code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace migmover
