#include "tests/kernel/vfio_mdev.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/device/vfio_uapi.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"

// The cdev + iommufd uAPI (Linux 6.6) is newer than Debian 12's headers; values and layouts from
// linux-source-6.12's include/uapi/linux/{vfio,iommufd}.h.
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {
  __u32 argsz;
  __u32 flags;
  __s32 iommufd;
  __u32 out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
struct vfio_device_attach_iommufd_pt {
  __u32 argsz;
  __u32 flags;
  __u32 pt_id;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#endif
#ifndef IOMMU_IOAS_ALLOC
struct iommu_ioas_alloc {
  __u32 size;
  __u32 flags;
  __u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(';', 0x81)
#endif
static_assert(VFIO_DEVICE_BIND_IOMMUFD == 0x3B76 && VFIO_DEVICE_ATTACH_IOMMUFD_PT == 0x3B77);
static_assert(IOMMU_IOAS_ALLOC == 0x3B81);
static_assert(sizeof(vfio_device_bind_iommufd) == 16 && sizeof(iommu_ioas_alloc) == 12);

namespace migmover::kernel_test {
namespace {

std::string NewUuid() {
  std::random_device rd;
  uint32_t w[4] = {rd(), rd(), rd(), rd()};
  // Version 4, variant 1.
  w[1] = (w[1] & 0xffff0fffu) | 0x00004000u;
  w[2] = (w[2] & 0x3fffffffu) | 0x80000000u;
  return absl::StrFormat("%08x-%04x-%04x-%04x-%04x%08x", w[0], w[1] >> 16, w[1] & 0xffff,
                         w[2] >> 16, w[2] & 0xffff, w[3]);
}

absl::Status WriteSysfs(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open(", path, ")"), errno);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return ErrnoStatus(absl::StrCat("write(", path, ", \"", value, "\")"), errno);
  }
  return absl::OkStatus();
}

absl::Status Ioctl(int fd, unsigned long request, void* arg, absl::string_view what) {
  if (::ioctl(fd, request, arg) < 0) return ErrnoStatus(absl::StrCat("ioctl(", what, ")"), errno);
  return absl::OkStatus();
}

// A VFIO_DEVICE_FEATURE GET of a feature whose payload is a `Payload`.
template <typename Payload>
absl::StatusOr<Payload> GetFeature(int device_fd, uint32_t feature, absl::string_view what) {
  alignas(8) uint8_t buf[sizeof(vfio_device_feature) + sizeof(Payload)] = {};
  auto* header = reinterpret_cast<vfio_device_feature*>(buf);
  header->argsz = sizeof(buf);
  header->flags = VFIO_DEVICE_FEATURE_GET | feature;
  RETURN_IF_ERROR(Ioctl(device_fd, VFIO_DEVICE_FEATURE, buf, what));
  Payload p;
  std::memcpy(&p, buf + sizeof(vfio_device_feature), sizeof(p));
  return p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<VfioMdev>> VfioMdev::Create(const std::string& parent,
                                                           const std::string& type, Access access) {
  std::unique_ptr<VfioMdev> m(new VfioMdev());
  m->parent_ = parent;
  m->uuid_ = NewUuid();
  RETURN_IF_ERROR(WriteSysfs(
      absl::StrCat("/sys/class/mdev_bus/", parent, "/mdev_supported_types/", type, "/create"),
      m->uuid_));
  RETURN_IF_ERROR(access == Access::kGroup ? m->OpenGroup() : m->OpenCdev());
  RETURN_IF_ERROR(m->FindBar0());
  return m;
}

absl::Status VfioMdev::OpenCdev() {
  const std::string dir = absl::StrCat("/sys/bus/mdev/devices/", uuid_, "/vfio-dev");
  std::string name;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().filename().string().rfind("vfio", 0) == 0) name = e.path().filename().string();
  }
  if (name.empty()) return absl::NotFoundError(absl::StrCat("no vfioN in ", dir));
  const std::string cdev = absl::StrCat("/dev/vfio/devices/", name);
  device_.Reset(::open(cdev.c_str(), O_RDWR | O_CLOEXEC));
  if (!device_.valid()) return ErrnoStatus(absl::StrCat("open(", cdev, ")"), errno);
  container_.Reset(::open("/dev/iommu", O_RDWR | O_CLOEXEC));
  if (!container_.valid()) return ErrnoStatus("open(/dev/iommu)", errno);
  vfio_device_bind_iommufd bind{sizeof(bind), 0, container_.get(), 0};
  RETURN_IF_ERROR(Ioctl(device_.get(), VFIO_DEVICE_BIND_IOMMUFD, &bind,
                        absl::StrCat("VFIO_DEVICE_BIND_IOMMUFD, ", cdev)));
  iommu_ioas_alloc ioas{sizeof(ioas), 0, 0};
  RETURN_IF_ERROR(Ioctl(container_.get(), IOMMU_IOAS_ALLOC, &ioas, "IOMMU_IOAS_ALLOC"));
  vfio_device_attach_iommufd_pt attach{sizeof(attach), 0, ioas.out_ioas_id};
  return Ioctl(device_.get(), VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach,
               absl::StrCat("VFIO_DEVICE_ATTACH_IOMMUFD_PT, IOAS ", ioas.out_ioas_id));
}

absl::Status VfioMdev::OpenGroup() {
  const std::string dev = absl::StrCat("/sys/bus/mdev/devices/", uuid_);
  char link[256];
  ssize_t n = ::readlink((dev + "/iommu_group").c_str(), link, sizeof(link) - 1);
  if (n <= 0) return ErrnoStatus(absl::StrCat("readlink(", dev, "/iommu_group)"), errno);
  link[n] = 0;
  const char* slash = std::strrchr(link, '/');
  const std::string group = absl::StrCat("/dev/vfio/", slash ? slash + 1 : link);

  container_.Reset(::open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC));
  if (!container_.valid()) return ErrnoStatus("open(/dev/vfio/vfio)", errno);
  if (int v = ::ioctl(container_.get(), VFIO_GET_API_VERSION); v != VFIO_API_VERSION) {
    return absl::FailedPreconditionError(absl::StrCat("VFIO API version ", v));
  }
  group_.Reset(::open(group.c_str(), O_RDWR | O_CLOEXEC));
  if (!group_.valid()) return ErrnoStatus(absl::StrCat("open(", group, ")"), errno);
  vfio_group_status status{sizeof(status), 0};
  RETURN_IF_ERROR(Ioctl(group_.get(), VFIO_GROUP_GET_STATUS, &status, "VFIO_GROUP_GET_STATUS"));
  if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    return absl::FailedPreconditionError(absl::StrCat(group, " is not viable"));
  }
  int container = container_.get();
  RETURN_IF_ERROR(
      Ioctl(group_.get(), VFIO_GROUP_SET_CONTAINER, &container, "VFIO_GROUP_SET_CONTAINER"));
  if (::ioctl(container_.get(), VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0) {
    return ErrnoStatus("ioctl(VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)", errno);
  }
  device_.Reset(::ioctl(group_.get(), VFIO_GROUP_GET_DEVICE_FD, uuid_.c_str()));
  if (!device_.valid()) {
    return ErrnoStatus(absl::StrCat("ioctl(VFIO_GROUP_GET_DEVICE_FD, ", uuid_, ")"), errno);
  }
  return absl::OkStatus();
}

absl::Status VfioMdev::FindBar0() {
  vfio_region_info region{};
  region.argsz = sizeof(region);
  region.index = VFIO_PCI_BAR0_REGION_INDEX;
  RETURN_IF_ERROR(Ioctl(device_.get(), VFIO_DEVICE_GET_REGION_INFO, &region,
                        "VFIO_DEVICE_GET_REGION_INFO BAR0"));
  bar0_offset_ = region.offset;
  return absl::OkStatus();
}

VfioMdev::~VfioMdev() {
  device_.Reset();
  group_.Reset();
  container_.Reset();
  if (!uuid_.empty()) {
    (void)WriteSysfs(absl::StrCat("/sys/bus/mdev/devices/", uuid_, "/remove"), "1");
  }
}

absl::StatusOr<UniqueFd> VfioMdev::Dup() const { return device_.Dup(); }

absl::StatusOr<MigState> VfioMdev::State() const {
  ASSIGN_OR_RETURN(auto st, GetFeature<vfio_device_feature_mig_state>(
                                device_.get(), VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                                "VFIO_DEVICE_FEATURE GET MIG_DEVICE_STATE"));
  return static_cast<MigState>(st.device_state);
}

absl::StatusOr<uint64_t> VfioMdev::MigrationFlags() const {
  ASSIGN_OR_RETURN(auto m, GetFeature<vfio_device_feature_migration>(
                               device_.get(), VFIO_DEVICE_FEATURE_MIGRATION,
                               "VFIO_DEVICE_FEATURE GET MIGRATION"));
  return m.flags;
}

absl::Status VfioMdev::Reset() const {
  if (::ioctl(device_.get(), VFIO_DEVICE_RESET) < 0) {
    return ErrnoStatus("ioctl(VFIO_DEVICE_RESET)", errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint8_t> VfioMdev::ReadBar0(uint32_t offset) const {
  uint8_t v = 0;
  if (::pread(device_.get(), &v, 1, bar0_offset_ + offset) != 1) {
    return ErrnoStatus(absl::StrCat("pread(BAR0 + ", offset, ")"), errno);
  }
  return v;
}

absl::Status VfioMdev::WriteBar0(uint32_t offset, uint8_t value) const {
  if (::pwrite(device_.get(), &value, 1, bar0_offset_ + offset) != 1) {
    return ErrnoStatus(absl::StrCat("pwrite(BAR0 + ", offset, ")"), errno);
  }
  return absl::OkStatus();
}

}  // namespace migmover::kernel_test
