// CorruptingRelay: a TCP relay between a source migmoverd and a destination migmoverd that
// flips one byte of the first DATA frame's payload on its way, so the destination writes a
// corrupted stream into a real device. The relay reads peer frames (api/PEER_PROTOCOL.md) only
// to find that byte; everything else passes through unchanged, both ways.
#ifndef MIGMOVER_TESTS_KERNEL_CORRUPTING_RELAY_H_
#define MIGMOVER_TESTS_KERNEL_CORRUPTING_RELAY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "transport/base/unique_fd.h"

namespace migmover::kernel_test {

class CorruptingRelay {
 public:
  // Listens on 127.0.0.1 (a free port) and relays each connection to `target` ("host:port").
  static absl::StatusOr<std::unique_ptr<CorruptingRelay>> Start(const std::string& target);
  // Closes every connection and joins the relay's threads.
  ~CorruptingRelay();

  // "127.0.0.1:<port>": the address to give the source as its peer.
  std::string address() const;
  // Whether a DATA payload byte has been flipped yet.
  bool corrupted() const { return corrupted_.load(); }

 private:
  CorruptingRelay() = default;
  void AcceptLoop();
  // Source -> destination, frame by frame; flips the first DATA payload's first byte.
  void ForwardFrames(int from, int to);
  // Destination -> source, as bytes.
  void ForwardBytes(int from, int to);

  std::string target_;
  uint16_t port_ = 0;
  UniqueFd listen_fd_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> corrupted_{false};
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<UniqueFd> sockets_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> pumps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migmover::kernel_test

#endif  // MIGMOVER_TESTS_KERNEL_CORRUPTING_RELAY_H_
