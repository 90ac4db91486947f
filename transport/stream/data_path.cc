#include "transport/stream/data_path.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace migmover::stream {

const char* DataPathName(DataPath path) {
  switch (path) {
    case DataPath::kAuto:
      return "auto";
    case DataPath::kSplice:
      return "splice";
    case DataPath::kCopy:
      return "copy";
  }
  return "?";
}

absl::StatusOr<DataPath> ParseDataPath(absl::string_view text) {
  std::string t = absl::AsciiStrToLower(text);
  if (t == "auto") return DataPath::kAuto;
  if (t == "splice") return DataPath::kSplice;
  if (t == "copy") return DataPath::kCopy;
  return absl::InvalidArgumentError(
      absl::StrCat("data path '", text, "': expected auto, splice or copy"));
}

bool FdSupportsSplice(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return false;
  if (S_ISSOCK(st.st_mode)) {
    // A blocking TCP socket ignores SPLICE_F_NONBLOCK: a splice from an empty one or into a
    // full one blocks the thread (and every stream sharing it). Its O_NONBLOCK belongs to the
    // agent's open file, so it is not ours to set: such a socket takes the copy path.
    const int flags = ::fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK) != 0;
  }
  return S_ISFIFO(st.st_mode) || S_ISREG(st.st_mode);
}

DataPath ResolveDataPath(DataPath requested, int fd, DataPath auto_spliceable) {
  if (requested != DataPath::kAuto) return requested;
  if (!FdSupportsSplice(fd)) return DataPath::kCopy;
  return auto_spliceable == DataPath::kAuto ? DataPath::kSplice : auto_spliceable;
}

}  // namespace migmover::stream
