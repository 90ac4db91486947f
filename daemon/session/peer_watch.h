// PeerWatch: a session's heartbeat with the peer daemon (transport/api/heartbeat_link.h), on a
// thread of the session's own, apart from the device threads: the source sends a PING every
// interval and expects a PONG within the peer timeout; the destination answers every PING and
// expects the next within the peer timeout. When the peer stays silent that long (a hung daemon,
// a cut the kernel has not yet failed), or the connection fails, the watch reports it once
// through `on_lost` and ends; the session decides what that means (commit-protocol.md: abandon
// before the point of no return, doubt after the destination's last COMMIT). A peer that closes
// the connection ended its session (or died): its word is on the streams, which get one more
// timeout to deliver it before the peer counts as lost.
//
// With a reconnect window (set_replacement), a heartbeat that fails is replaced rather than
// lost: the source opens a new one, the destination waits for it, for up to the window, as the
// device streams resume theirs (api/PEER_PROTOCOL.md, "Resume"). The peer counts as lost only
// when none comes: after the peer timeout plus the window.
//
// Threads: Watch* runs on the caller's thread (the session's watch thread) until Stop or a loss;
// Stop from any thread, including inside `on_lost`; `on_lost` runs on the watch thread.
#ifndef MIGMOVER_DAEMON_SESSION_PEER_WATCH_H_
#define MIGMOVER_DAEMON_SESSION_PEER_WATCH_H_

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "transport/api/heartbeat_link.h"
#include "transport/stream/stream_options.h"

namespace migmover {

class PeerWatch {
 public:
  using LostFn = std::function<void(absl::Status)>;
  // `timeout`: how long the peer may stay silent (see TimeoutFor). `what`: for logs and errors,
  // "session s1".
  PeerWatch(std::string what, absl::Duration timeout, LostFn on_lost)
      : what_(std::move(what)), timeout_(timeout), on_lost_(std::move(on_lost)) {}

  // The daemon's peer timeout, or its idle timeout when the peer timeout is 0 (kernel defaults);
  // at least 1 s (a session's idle timeout may be shorter).
  static absl::Duration TimeoutFor(const stream::StreamOptions& o) {
    return std::max(o.peer_timeout > absl::ZeroDuration() ? o.peer_timeout : o.idle_timeout,
                    absl::Seconds(1));
  }
  // How often the source pings: a fifth of its timeout, at most 500 ms, so a destination whose
  // own timeout is shorter (down to the 1 s minimum) still hears several beats within it.
  static absl::Duration IntervalFor(absl::Duration timeout);

  // The source's end: PING every IntervalFor(timeout), each PONG noted. `on_loaded` (may be
  // empty) gets each device index a LOADED named; `on_tick` (may be empty) runs at least every
  // interval, on this thread, for the session's own clocks.
  void WatchDestination(transport::HeartbeatLink* link,
                        std::function<void(uint32_t)> on_loaded = {},
                        std::function<void()> on_tick = {});
  // The destination's end: every PING answered with a PONG, after a LOADED for each device
  // `newly_loaded` (may be empty) returns.
  void WatchSource(transport::HeartbeatLink* link,
                   std::function<std::vector<uint32_t>()> newly_loaded = {});
  // Returns a new heartbeat link by `deadline`, or null when none can come (the peer refused:
  // its session is over). Called on the watch thread.
  using ReplaceFn =
      std::function<std::unique_ptr<transport::HeartbeatLink>(absl::Time deadline)>;
  // A failed heartbeat is replaced by `replace` within `window` (zero: never). Before Watch*.
  void set_replacement(absl::Duration window, ReplaceFn replace) {
    window_ = window;
    replace_ = std::move(replace);
  }

  // Ends a Watch* within 100 ms (a source's heartbeat still connecting, within its connect
  // timeout); no `on_lost` after it returns unless one is running.
  void Stop() { stop_ = true; }
  bool stopped() const { return stop_.load(); }

 private:
  void Lost(absl::Status why);
  // The peer closed the heartbeat: waits a timeout for the session to end by itself (Stop),
  // else reports it lost.
  void PeerClosed(absl::string_view who, const absl::Status& how);
  // True (and `*last_heard` moved to now) when this thread returned from a wait meant to end at
  // `until` more than half a timeout late.
  bool Stalled(absl::Time until, absl::Time* last_heard);
  // After the heartbeat failed with `why`: a replacement within the window, held in `*owned`
  // and returned, or null (no window, none came, or stopped).
  transport::HeartbeatLink* Replace(const absl::Status& why,
                                    std::unique_ptr<transport::HeartbeatLink>* owned);

  const std::string what_;
  const absl::Duration timeout_;
  const LostFn on_lost_;
  absl::Duration window_ = absl::ZeroDuration();
  ReplaceFn replace_;
  std::atomic<bool> stop_{false};
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_PEER_WATCH_H_
