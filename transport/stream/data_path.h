// How a stream's bytes cross between a data fd and a socket.
#ifndef MIGMOVER_TRANSPORT_STREAM_DATA_PATH_H_
#define MIGMOVER_TRANSPORT_STREAM_DATA_PATH_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migmover::stream {

enum class DataPath {
  kAuto,    // Per fd: copy where the fd cannot splice; where it can, whichever measured faster.
  kSplice,  // fd -> pipe -> socket (and back) in the kernel: no userspace copy.
  kCopy,    // Reads/writes into the stream's buffers: one copy, and a digest of every byte.
};

const char* DataPathName(DataPath path);
// "auto", "splice", "copy". InvalidArgument otherwise.
absl::StatusOr<DataPath> ParseDataPath(absl::string_view text);

// Whether the splice engines can take this fd: pipes, regular files and nonblocking sockets.
// Anonymous-inode files such as real VFIO migration data fds implement only read/write (splice
// gives EINVAL); a blocking socket would block the engine's thread.
bool FdSupportsSplice(int fd);

// The concrete path for `fd`: `requested` unless it is kAuto; then copy for fds that cannot
// splice, and `auto_spliceable` (what measured faster on this machine) for those that can.
DataPath ResolveDataPath(DataPath requested, int fd, DataPath auto_spliceable = DataPath::kSplice);

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_DATA_PATH_H_
