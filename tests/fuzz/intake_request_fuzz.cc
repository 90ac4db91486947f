// Fuzz target: the fd intake's parsers (daemon/intake/fd_intake.h): the daemon's of an agent's
// request, and the agent library's of the daemon's reply line.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/intake/fd_intake.h"

using namespace migmover;  // NOLINT: a fuzz target's one function.

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  auto purpose = ParseIntakeRequest(in);
  // Only the exact request text is accepted.
  if (purpose.ok() && in != absl::StrCat(FdPurposeName(*purpose), "\n")) std::abort();
  auto reply = ParseIntakeReply(in);
  if (!reply.ok() && reply.status().message().find('\n') != absl::string_view::npos) {
    std::abort();  // Reply text is escaped before it reaches an agent's log.
  }
  return 0;
}
