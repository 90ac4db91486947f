// CorruptingRelay: an attacker on the path between a source migmoverd and a destination
// migmoverd whose peers run in the clear (--plaintext_peers). It flips one byte of the first
// DATA frame's payload on its way and, if asked, also strips END_STREAM's digest (kind none,
// zeros) so nothing seems to contradict the flip. The relay reads peer frames
// (api/PEER_PROTOCOL.md) only to find those bytes; everything else passes through unchanged,
// both ways. Under TLS it sees no frames and relays nothing.
#ifndef MIGMOVER_TESTS_INTEGRATION_CORRUPTING_RELAY_H_
#define MIGMOVER_TESTS_INTEGRATION_CORRUPTING_RELAY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "transport/base/unique_fd.h"

namespace migmover::testing {

class CorruptingRelay {
 public:
  enum class Mode {
    kFlipByte,                // The first DATA payload byte.
    kFlipByteAndStripDigest,  // That, and END_STREAM without its digest.
  };
  // Listens on 127.0.0.1 (a free port) and relays each connection to `target` ("host:port").
  static absl::StatusOr<std::unique_ptr<CorruptingRelay>> Start(const std::string& target,
                                                                Mode mode = Mode::kFlipByte);
  // Closes every connection and joins the relay's threads.
  ~CorruptingRelay();

  // "127.0.0.1:<port>": the address to give the source as its peer.
  std::string address() const;
  // Whether a DATA payload byte has been flipped yet.
  bool corrupted() const { return corrupted_.load(); }
  // Whether an END_STREAM's digest has been stripped yet.
  bool stripped() const { return stripped_.load(); }

 private:
  CorruptingRelay() = default;
  void AcceptLoop();
  // Source -> destination, frame by frame; flips the first DATA payload's first byte (and
  // strips END_STREAM's digest).
  void ForwardFrames(int from, int to);
  // Destination -> source, as bytes.
  void ForwardBytes(int from, int to);

  std::string target_;
  uint16_t port_ = 0;
  UniqueFd listen_fd_;
  std::atomic<bool> stopping_{false};
  Mode mode_ = Mode::kFlipByte;
  std::atomic<bool> corrupted_{false};
  std::atomic<bool> stripped_{false};
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<UniqueFd> sockets_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> pumps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migmover::testing

#endif  // MIGMOVER_TESTS_INTEGRATION_CORRUPTING_RELAY_H_
