// DelayLine: a TCP relay inside a network namespace that holds every byte it forwards for a
// fixed time, both ways: the latency of a long link for the fault suite, since this kernel has
// no sch_netem. It listens on `host` (an address of namespace `netns`) and joins each connection
// it accepts to `host:target_port` there, so a source daemon pointed at the relay reaches the
// destination daemon through it, heartbeat included.
//
// Threads: one accepting, two per relayed connection (one per direction); all stop and are
// joined by the destructor.
#ifndef MIGMOVER_TESTS_FAULTS_DELAY_LINE_H_
#define MIGMOVER_TESTS_FAULTS_DELAY_LINE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "transport/base/unique_fd.h"

namespace migmover::testing {

class DelayLine {
 public:
  // Errors: the namespace's or the socket calls' errno, naming the call.
  static absl::StatusOr<std::unique_ptr<DelayLine>> Start(const std::string& netns,
                                                          const std::string& host,
                                                          uint16_t target_port,
                                                          absl::Duration delay);
  ~DelayLine();

  // Where sources connect: host:port.
  std::string address() const { return host_ + ":" + std::to_string(port_); }

 private:
  DelayLine(std::string host, uint16_t target_port, absl::Duration delay)
      : host_(std::move(host)), target_port_(target_port), delay_(delay) {}
  void Accept(UniqueFd listener);
  // Moves bytes from `in` to `out`, each `delay_` after it arrived, until `in` ends.
  void Pump(int in, int out);

  const std::string host_;
  const uint16_t target_port_;
  const absl::Duration delay_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<std::thread> pumps_ ABSL_GUARDED_BY(mu_);
  std::vector<UniqueFd> fds_ ABSL_GUARDED_BY(mu_);  // Both ends of every relayed connection.
};

}  // namespace migmover::testing

#endif  // MIGMOVER_TESTS_FAULTS_DELAY_LINE_H_
