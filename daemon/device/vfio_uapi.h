// The VFIO migration uAPI (protocol v2 with PRE_COPY) as this daemon uses it.
//
// Debian 12's <linux/vfio.h> (linux-libc-dev 6.1) stops before PRE_COPY (Linux 6.2). The missing
// definitions below are guarded so a newer header wins; their values are ABI and are checked at
// compile time against ../shared/docs/vfio-migration-uapi.md section 1.
#ifndef MIGMOVER_DAEMON_DEVICE_VFIO_UAPI_H_
#define MIGMOVER_DAEMON_DEVICE_VFIO_UAPI_H_

#include <linux/types.h>
#include <linux/vfio.h>
#include <stddef.h>
#include <sys/ioctl.h>

// VFIO_MIGRATION_PRE_COPY, the PRE_COPY states and VFIO_DEVICE_STATE_NR arrived together (6.2).
// The states are enumerators in newer headers, so they cannot be #ifndef-tested one by one.
#ifndef VFIO_MIGRATION_PRE_COPY
#define VFIO_MIGRATION_PRE_COPY (1 << 2)
#define MIGMOVER_VFIO_DEFINES_PRE_COPY_STATES 1
enum {
  VFIO_DEVICE_STATE_PRE_COPY = 6,
  VFIO_DEVICE_STATE_PRE_COPY_P2P = 7,
  VFIO_DEVICE_STATE_NR = 8,
};
#endif

#ifndef VFIO_MIG_GET_PRECOPY_INFO
struct vfio_precopy_info {
  __u32 argsz;
  __u32 flags;
  __aligned_u64 initial_bytes;
  __aligned_u64 dirty_bytes;
};
#define VFIO_MIG_GET_PRECOPY_INFO _IO(VFIO_TYPE, VFIO_BASE + 21)
#endif

#ifndef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
struct vfio_device_feature_mig_data_size {
  __aligned_u64 stop_copy_length;
};
#define VFIO_DEVICE_FEATURE_MIG_DATA_SIZE 9
#endif

#ifndef VFIO_PRECOPY_INFO_REINIT
#define VFIO_PRECOPY_INFO_REINIT (1 << 0)
#endif

// --- Compile-time checks of the ABI (values from the uAPI reference, section 1). ---
static_assert(VFIO_TYPE == ';' && VFIO_BASE == 100);
static_assert(VFIO_DEVICE_GET_INFO == 0x3B6B);
static_assert(VFIO_DEVICE_RESET == 0x3B6F);
static_assert(VFIO_DEVICE_FEATURE == 0x3B75 && VFIO_DEVICE_FEATURE == 15221);
static_assert(VFIO_MIG_GET_PRECOPY_INFO == 0x3B79 && VFIO_MIG_GET_PRECOPY_INFO == 15225);

static_assert(VFIO_DEVICE_FEATURE_MASK == 0xffff);
static_assert(VFIO_DEVICE_FEATURE_GET == 0x10000);
static_assert(VFIO_DEVICE_FEATURE_SET == 0x20000);
static_assert(VFIO_DEVICE_FEATURE_PROBE == 0x40000);
static_assert(VFIO_DEVICE_FEATURE_MIGRATION == 1);
static_assert(VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE == 2);
static_assert(VFIO_DEVICE_FEATURE_MIG_DATA_SIZE == 9);

static_assert(VFIO_MIGRATION_STOP_COPY == 1);
static_assert(VFIO_MIGRATION_P2P == 2);
static_assert(VFIO_MIGRATION_PRE_COPY == 4);
static_assert(VFIO_PRECOPY_INFO_REINIT == 1);

static_assert(VFIO_DEVICE_STATE_ERROR == 0);
static_assert(VFIO_DEVICE_STATE_STOP == 1);
static_assert(VFIO_DEVICE_STATE_RUNNING == 2);
static_assert(VFIO_DEVICE_STATE_STOP_COPY == 3);
static_assert(VFIO_DEVICE_STATE_RESUMING == 4);
static_assert(VFIO_DEVICE_STATE_RUNNING_P2P == 5);
static_assert(VFIO_DEVICE_STATE_PRE_COPY == 6);
static_assert(VFIO_DEVICE_STATE_PRE_COPY_P2P == 7);
static_assert(VFIO_DEVICE_STATE_NR == 8);

static_assert(sizeof(struct vfio_device_feature) == 8);
static_assert(offsetof(struct vfio_device_feature, argsz) == 0);
static_assert(offsetof(struct vfio_device_feature, flags) == 4);
static_assert(offsetof(struct vfio_device_feature, data) == 8);

static_assert(sizeof(struct vfio_device_feature_migration) == 8);
static_assert(offsetof(struct vfio_device_feature_migration, flags) == 0);

static_assert(sizeof(struct vfio_device_feature_mig_state) == 8);
static_assert(offsetof(struct vfio_device_feature_mig_state, device_state) == 0);
static_assert(offsetof(struct vfio_device_feature_mig_state, data_fd) == 4);

static_assert(sizeof(struct vfio_device_feature_mig_data_size) == 8);
static_assert(offsetof(struct vfio_device_feature_mig_data_size, stop_copy_length) == 0);

static_assert(sizeof(struct vfio_precopy_info) == 24);
static_assert(offsetof(struct vfio_precopy_info, argsz) == 0);
static_assert(offsetof(struct vfio_precopy_info, flags) == 4);
static_assert(offsetof(struct vfio_precopy_info, initial_bytes) == 8);
static_assert(offsetof(struct vfio_precopy_info, dirty_bytes) == 16);

namespace migmover {

// The argsz of every migration feature call: the 8-byte header plus an 8-byte payload.
inline constexpr __u32 kVfioMigFeatureArgsz = 16;

// A VFIO_DEVICE_FEATURE buffer with room for one 8-byte payload, 8-byte aligned as the
// payloads contain __aligned_u64.
// Same layout as struct vfio_device_feature (whose payload is a flexible array member).
struct alignas(8) VfioFeatureBuffer {
  __u32 argsz;
  __u32 flags;
  unsigned char payload[8];
};
static_assert(sizeof(VfioFeatureBuffer) == kVfioMigFeatureArgsz);
static_assert(offsetof(VfioFeatureBuffer, argsz) == offsetof(struct vfio_device_feature, argsz));
static_assert(offsetof(VfioFeatureBuffer, flags) == offsetof(struct vfio_device_feature, flags));
static_assert(offsetof(VfioFeatureBuffer, payload) == offsetof(struct vfio_device_feature, data));

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_DEVICE_VFIO_UAPI_H_
