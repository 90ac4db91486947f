#include "transport/io/io_engine.h"

#include "absl/strings/str_cat.h"

namespace migmover::io {

const char* IoEngineName(IoEngine engine) {
  switch (engine) {
    case IoEngine::kAuto:
      return "auto";
    case IoEngine::kUring:
      return "uring";
    case IoEngine::kSyscalls:
      return "syscalls";
  }
  return "?";
}

absl::StatusOr<IoEngine> ParseIoEngine(absl::string_view text) {
  for (IoEngine e : {IoEngine::kAuto, IoEngine::kUring, IoEngine::kSyscalls}) {
    if (text == IoEngineName(e)) return e;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("io engine '", text, "': expected auto, uring or syscalls"));
}

}  // namespace migmover::io
