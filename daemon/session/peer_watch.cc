#include "daemon/session/peer_watch.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon/base/log.h"

namespace migmover {

absl::Duration PeerWatch::IntervalFor(absl::Duration timeout) {
  return std::min(timeout / 5, absl::Milliseconds(500));
}

void PeerWatch::Lost(absl::Status why) {
  if (stop_.exchange(true)) return;  // Stopped meanwhile: the session is over.
  on_lost_(std::move(why));
}

bool PeerWatch::Stalled(absl::Time until, absl::Time* last_heard) {
  const absl::Time now = absl::Now();
  if (now - until <= timeout_ / 2) return false;
  // This thread ran long after its wait ended (its daemon was stopped, or starved): the peer's
  // silence meanwhile proves nothing, so it gets a fresh timeout from now.
  MM_LOG(WARNING) << what_ << ": heartbeat thread stalled for "
                  << absl::FormatDuration(now - until) << "; the peer's timeout starts again";
  *last_heard = now;
  return true;
}

transport::HeartbeatLink* PeerWatch::Replace(const absl::Status& why,
                                             std::unique_ptr<transport::HeartbeatLink>* owned) {
  if (window_ <= absl::ZeroDuration() || !replace_ || stop_.load()) return nullptr;
  const absl::Time start = absl::Now();
  MM_LOG(WARNING) << what_ << ": heartbeat failed (" << why << "); replacing it within "
                  << absl::FormatDuration(window_);
  std::unique_ptr<transport::HeartbeatLink> next = replace_(start + window_);
  if (next == nullptr || stop_.load()) {
    if (!stop_.load()) {
      MM_LOG(WARNING) << what_ << ": no new heartbeat within the reconnect window";
    }
    return nullptr;
  }
  MM_LOG(INFO) << what_ << ": heartbeat replaced after "
               << absl::FormatDuration(absl::Now() - start);
  *owned = std::move(next);
  return owned->get();
}

void PeerWatch::PeerClosed(absl::string_view who, const absl::Status& how) {
  // Its session ended (or its daemon died): what it had to say is on the streams, or was lost
  // with them. Give the streams a timeout to deliver it; a session still waiting then is lost.
  MM_LOG(INFO) << what_ << ": the " << who << " closed the heartbeat (" << how << ")";
  const absl::Time closed = absl::Now();
  while (!stop_.load() && absl::Now() - closed < timeout_) {
    absl::SleepFor(std::min(absl::Milliseconds(100), timeout_ - (absl::Now() - closed)));
  }
  Lost(absl::UnavailableError(absl::StrCat(
      "heartbeat: the ", who, " daemon closed the session's heartbeat and no word of its "
      "outcome arrived within ", absl::FormatDuration(timeout_), " (its session ended, or the "
      "daemon died)")));
}

void PeerWatch::WatchDestination(transport::HeartbeatLink* link,
                                 std::function<void(uint32_t)> on_loaded,
                                 std::function<void()> on_tick) {
  const absl::Duration interval = IntervalFor(timeout_);
  absl::Time last_heard = absl::Now();
  absl::Time next_ping = last_heard;
  std::unique_ptr<transport::HeartbeatLink> replaced;
  // A failed heartbeat replaced: the watch goes on on the new one, its peer heard just now.
  auto go_on = [&](const absl::Status& why) {
    transport::HeartbeatLink* next = Replace(why, &replaced);
    if (next == nullptr) return false;
    link = next;
    last_heard = next_ping = absl::Now();
    return true;
  };
  while (!stop_.load()) {
    if (on_tick) on_tick();
    const absl::Time now = absl::Now();
    if (now >= next_ping) {
      // A PING that cannot go out within the timeout means the peer is not reading at all.
      if (absl::Status s = link->Beat(last_heard + timeout_, stop_); !s.ok()) {
        if (!absl::IsCancelled(s) && go_on(s)) continue;
        if (absl::IsUnavailable(s)) {
          PeerClosed("destination", s);
        } else if (!absl::IsCancelled(s)) {
          Lost(absl::Status(s.code(), absl::StrCat("heartbeat: the destination daemon took no "
                                                   "PING: ", s.message())));
        }
        return;
      }
      next_ping = now + interval;
    }
    const absl::Time silent_at = last_heard + timeout_;
    const absl::Time until = std::min(next_ping, silent_at);
    absl::Status s = link->AwaitBeat(until, stop_);
    for (uint32_t device : link->TakeLoaded()) {
      if (on_loaded) on_loaded(device);
    }
    if (s.ok()) {
      last_heard = absl::Now();
      continue;
    }
    if (Stalled(until, &last_heard)) {
      next_ping = last_heard;
      continue;
    }
    if (absl::IsCancelled(s)) return;
    if (absl::IsDeadlineExceeded(s) && absl::Now() < silent_at) continue;  // The next PING.
    if (go_on(s)) continue;
    if (absl::IsDeadlineExceeded(s)) {
      Lost(absl::DeadlineExceededError(absl::StrCat(
          "heartbeat: the destination daemon answered no PING for ",
          absl::FormatDuration(absl::Now() - last_heard), " (peer timeout ",
          absl::FormatDuration(timeout_), "): hung, or the network between us is cut")));
      return;
    }
    if (absl::IsUnavailable(s)) {
      PeerClosed("destination", s);
      return;
    }
    Lost(absl::Status(s.code(), absl::StrCat("heartbeat with the destination: ", s.message())));
    return;
  }
}

void PeerWatch::WatchSource(transport::HeartbeatLink* link,
                            std::function<std::vector<uint32_t>()> newly_loaded) {
  absl::Time last_heard = absl::Now();
  bool heard = false;
  std::unique_ptr<transport::HeartbeatLink> replaced;
  while (!stop_.load()) {
    // At most a second at a time, so a stall of this thread shows as a late return.
    const absl::Time until = std::min(last_heard + timeout_, absl::Now() + absl::Seconds(1));
    absl::Status s = link->AwaitBeat(until, stop_);
    if (!s.ok() && Stalled(until, &last_heard)) continue;
    if (absl::IsDeadlineExceeded(s) && absl::Now() < last_heard + timeout_) continue;
    if (s.ok()) {
      heard = true;
      last_heard = absl::Now();
      if (newly_loaded) {
        for (uint32_t device : newly_loaded()) {
          s = link->SendLoaded(device, last_heard + timeout_, stop_);
          if (!s.ok()) break;
        }
      }
      if (s.ok()) s = link->Beat(last_heard + timeout_, stop_);
      if (s.ok()) continue;
    }
    if (absl::IsCancelled(s)) return;
    if (heard || !absl::IsUnavailable(s)) {
      if (transport::HeartbeatLink* next = Replace(s, &replaced)) {
        link = next;
        last_heard = absl::Now();
        heard = true;  // A close of the new one is no "gave up before beating".
        continue;
      }
    }
    if (absl::IsDeadlineExceeded(s)) {
      Lost(absl::DeadlineExceededError(absl::StrCat(
          "heartbeat: the source daemon sent no PING for ",
          absl::FormatDuration(absl::Now() - last_heard), " (peer timeout ",
          absl::FormatDuration(timeout_), "): hung, or the network between us is cut")));
      return;
    }
    if (absl::IsUnavailable(s)) {
      if (!heard) {
        // Closed before its first PING: the source gave up on its heartbeat (and fails its
        // session, which its streams say); this is no sign of its outcome.
        MM_LOG(INFO) << what_ << ": the source closed the heartbeat before beating (" << s << ")";
        return;
      }
      PeerClosed("source", s);
      return;
    }
    Lost(absl::Status(s.code(), absl::StrCat("heartbeat with the source: ", s.message())));
    return;
  }
}

}  // namespace migmover
