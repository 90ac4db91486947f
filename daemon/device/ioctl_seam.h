// IoctlSeam: the one narrow point where the device layer meets the kernel. The production seam
// issues ioctl(2); the simulated device implements the same seam as a userspace migration driver,
// so VfioDevice's struct packing, argsz handling and errno mapping run unchanged against both.
#ifndef MIGMOVER_DAEMON_DEVICE_IOCTL_SEAM_H_
#define MIGMOVER_DAEMON_DEVICE_IOCTL_SEAM_H_

namespace migmover {

class IoctlSeam {
 public:
  virtual ~IoctlSeam() = default;
  // ioctl(fd, request, arg). Returns the ioctl's non-negative result, or -errno.
  // `arg` points to caller-owned memory laid out as the uAPI struct for `request`.
  virtual int Ioctl(int fd, unsigned long request, void* arg) = 0;
};

// The seam that issues the real ioctl(2). Stateless; lives for the whole process.
IoctlSeam& KernelIoctlSeam();

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_DEVICE_IOCTL_SEAM_H_
