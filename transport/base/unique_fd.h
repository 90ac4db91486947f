// UniqueFd: the one owner type for file descriptors. Move-only; closes on destruction.
#ifndef MIGMOVER_TRANSPORT_BASE_UNIQUE_FD_H_
#define MIGMOVER_TRANSPORT_BASE_UNIQUE_FD_H_

#include <utility>

#include "absl/status/statusor.h"

namespace migmover {

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (which may be -1 for "none").
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }

  // Gives up ownership without closing.
  int Release() { return std::exchange(fd_, -1); }
  // Closes the owned fd (if any) and takes `fd`.
  void Reset(int fd = -1);

  // A new owner of a duplicate (F_DUPFD_CLOEXEC) of this fd.
  absl::StatusOr<UniqueFd> Dup() const;

 private:
  int fd_ = -1;
};

// Both ends of a pipe2(O_CLOEXEC | flags).
struct PipeFds {
  UniqueFd read;
  UniqueFd write;
};
absl::StatusOr<PipeFds> MakePipe(int flags = 0);

}  // namespace migmover

#endif  // MIGMOVER_TRANSPORT_BASE_UNIQUE_FD_H_
