#include "daemon/device/ioctl_seam.h"

#include <sys/ioctl.h>

#include <cerrno>

namespace migmover {
namespace {

class KernelSeam final : public IoctlSeam {
 public:
  int Ioctl(int fd, unsigned long request, void* arg) override {
    int r;
    do {
      r = ::ioctl(fd, request, arg);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
  }
};

}  // namespace

IoctlSeam& KernelIoctlSeam() {
  static KernelSeam* seam = new KernelSeam();
  return *seam;
}

}  // namespace migmover
