// Fuzz target: the handshake as a destination and a source run it (transport/peer/handshake.h),
// over a real socket: the input is everything the other end sends before it closes. ReadHello
// (the destination reading a source), AwaitHelloAck (a source reading the destination's answer)
// and ReadControlFrame must each end with a value or an error, never a crash or a hang.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/time/clock.h"
#include "transport/base/unique_fd.h"
#include "transport/net/socket.h"
#include "transport/peer/handshake.h"

using namespace migmover;  // NOLINT: a fuzz target's one function.

namespace {

// A connection whose other end sent `bytes` and closed.
UniqueFd Feed(const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  UniqueFd ours(sv[0]), theirs(sv[1]);
  if (!net::SendAll(theirs.get(), absl::string_view(reinterpret_cast<const char*>(data), size),
                    absl::Now() + absl::Seconds(5))
           .ok()) {
    std::abort();
  }
  return ours;  // `theirs` closes here: the reader sees the end after the bytes.
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;  // Within one socket buffer: SendAll never waits.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  {
    UniqueFd c = Feed(data, size);
    (void)peer::ReadHello(c.get(), deadline);
  }
  {
    UniqueFd c = Feed(data, size);
    (void)peer::AwaitHelloAck(c.get(), deadline);
  }
  {
    UniqueFd c = Feed(data, size);
    // Every frame on the connection, as a stream's reader would go on after the first.
    for (int i = 0; i < 64; ++i) {
      auto f = peer::ReadControlFrame(c.get(), deadline);
      if (!f.ok()) break;
      // With a key, as the daemons check verdicts, and without (the seal only stripped).
      static const peer::ControlKey key{};
      (void)peer::VerdictOf(*f, "fuzz", f->header.seq, &key);
      (void)peer::VerdictOf(*f, "fuzz", f->header.seq, nullptr);
    }
  }
  return 0;
}
