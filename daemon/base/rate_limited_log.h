// RateLimitedLog: log lines for a flood of like events (refused connections), at most one per
// interval; the events it held back are counted in the next line it writes ("(and 41 more not
// logged)"). Not thread-safe: one owner thread (a listener's loop) uses it.
#ifndef MIGMOVER_DAEMON_BASE_RATE_LIMITED_LOG_H_
#define MIGMOVER_DAEMON_BASE_RATE_LIMITED_LOG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace migmover {

class RateLimitedLog {
 public:
  // Each line is `prefix` + the event's text.
  explicit RateLimitedLog(std::string prefix, absl::Duration interval = absl::Seconds(1))
      : prefix_(std::move(prefix)), interval_(interval) {}

  // Logs `why` as a WARNING, unless a line went out less than the interval ago.
  void Warn(const std::string& why);

  // What Warn logs for `why` at `now`, or nullopt when it holds the event back (and counts it).
  std::optional<std::string> Line(const std::string& why, absl::Time now);

 private:
  const std::string prefix_;
  const absl::Duration interval_;
  absl::Time last_ = absl::InfinitePast();
  uint64_t held_back_ = 0;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_BASE_RATE_LIMITED_LOG_H_
