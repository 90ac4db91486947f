// SimDeviceSpec: what a simulated migration device looks like and how it misbehaves.
#ifndef MIGMOVER_DAEMON_DEVICE_SIM_SIM_DEVICE_SPEC_H_
#define MIGMOVER_DAEMON_DEVICE_SIM_SIM_DEVICE_SPEC_H_

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/device/mig_state.h"

namespace migmover::sim {

struct SimDeviceSpec {
  MigFeatures features{MigFeatures::kStopCopy | MigFeatures::kP2P | MigFeatures::kPreCopy};
  uint64_t state_size = 64ull << 20;
  uint32_t chunk_size = 256u << 10;  // Unit of content and of dirtying.
  uint64_t seed = 1;                 // Content; the resuming side learns it from the stream.
  // Size of the mandatory first precopy chunk (rounded up to whole chunks, capped at the state).
  uint64_t initial_bytes = std::numeric_limits<uint64_t>::max();
  uint64_t dirty_rate = 0;  // Bytes per second dirtied while the device runs.
  // Data fds are non-blocking pipes of one page, written in pieces of at most a page: readers
  // see short reads and EAGAIN, writers short writes and EAGAIN.
  bool short_io = false;
  // The saving data fd's kind. kPipe: reads block until data comes (EAGAIN with short_io), EOF
  // only at the end of STOP_COPY. kFile (mtty's behaviour): a memfd read through its own file
  // offset; a read at a temporary end of precopy returns 0 and later data follows; the STOP_COPY
  // data is all produced inside the arc, as mtty does, so 0 in STOP_COPY is the end.
  enum class SaveFd { kPipe, kFile };
  SaveFd save_fd = SaveFd::kPipe;
  // Where DATA payloads come from. kChecked: generated per chunk on the path, and the resuming
  // side regenerates and compares every byte (tests' default: a wrong byte names its chunk).
  // kImage (the benchmark device): served from a prepared memory image whose pages are spliced
  // into the data pipe, so the bytes on the path cost what a real driver's do (the reader's
  // one copy); the resuming side checks them by a digest as they pass (sim_content_image.h).
  // Needs save_fd=pipe, no short_io and no corrupt_at.
  enum class Content { kChecked, kImage };
  Content content = Content::kChecked;

  // Fault injection. The arc fail_from -> fail_to fails with fail_errno every time it is taken;
  // with fail_to_error the device then lands in ERROR (else it stays where it was).
  bool fail_arc = false;
  MigState fail_from = MigState::kError;
  MigState fail_to = MigState::kError;
  int fail_errno = 5;  // EIO
  bool fail_to_error = false;
  // Flip one byte of the saving stream at this offset (after it was digested), as a wire would.
  uint64_t corrupt_at = std::numeric_limits<uint64_t>::max();
  // RESUMING -> STOP takes this long (a driver loading a large state): a window in which the
  // destination has the whole stream but has not committed yet.
  uint32_t commit_delay_ms = 0;
  // The resuming side stops taking data for resume_stall_ms once it has taken resume_stall_at
  // bytes (once): a device whose writes stall, so userspace's writes block (or EAGAIN); its
  // data fd then buffers at most 64 KiB.
  uint64_t resume_stall_at = 0;
  uint32_t resume_stall_ms = 0;
  // Off: the driver has no VFIO_DEVICE_FEATURE_MIG_DATA_SIZE (ENOTTY), as older ones lack it.
  bool data_size = true;

  absl::Status Validate() const;
  // The memory the simulated driver holds for this device: a generation number and two bits per
  // chunk in the model, a copy of the generations per data session, a chunk buffer each way,
  // and with image content the image (at most 256 MiB).
  // It grows with size/chunk (a 1 TiB device in 64 B chunks would need 150 GB): the daemon
  // charges it to --max_memory before creating the device.
  uint64_t BookkeepingBytes() const;
  // "size=64MiB,chunk=256KiB,seed=1,initial=64MiB,dirty_rate=0,features=stop_copy+p2p+pre_copy"
  std::string ToString() const;
};

// Parses "key=value" pairs separated by commas. Keys: size, chunk, seed, initial, dirty_rate
// (bytes per second; sizes take B/KiB/MiB/GiB/KB/MB/GB suffixes), features (stop_copy+p2p+...),
// short_io (0/1), save_fd (pipe|file), content (checked|image), fail_arc (FROM:TO[:ERRNO[:error]]), corrupt_at,
// commit_delay_ms, stall (BYTES:MS, resume_stall_at and resume_stall_ms), data_size (on|off). InvalidArgument names
// the key.
absl::StatusOr<SimDeviceSpec> ParseSimDeviceSpec(absl::string_view text);

// "1GiB" -> 1073741824; "4096" -> 4096; "10MB" -> 10000000.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

}  // namespace migmover::sim

#endif  // MIGMOVER_DAEMON_DEVICE_SIM_SIM_DEVICE_SPEC_H_
