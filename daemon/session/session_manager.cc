#include "daemon/session/session_manager.h"

#include <pthread.h>

#include <algorithm>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "api/peer_wire.h"

namespace migmover {

SessionManager::SessionManager(SessionLimits limits, std::shared_ptr<MemoryBudget> memory)
    : limits_(limits), memory_(std::move(memory)), reaper_([this] { ReaperLoop(); }) {}

SessionManager::~SessionManager() {
  CancelAll();
  {
    absl::MutexLock l(&reap_mu_);
    stopping_ = true;
  }
  reaper_.join();
}

void SessionManager::ReaperLoop() {
  pthread_setname_np(pthread_self(), "mm-reaper");
  while (true) {
    std::vector<std::shared_ptr<Session>> batch;
    {
      absl::MutexLock l(&reap_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(reap_mu_) {
        return stopping_ || !to_reap_.empty();
      };
      reap_mu_.Await(absl::Condition(&ready));
      if (to_reap_.empty()) return;  // Stopping, and nothing left.
      batch.swap(to_reap_);
    }
    // A session's last worker may still be returning (and a forgotten one's destructor joins).
    for (auto& s : batch) s->Join();
  }
}

absl::Status SessionManager::CheckId(const std::string& id) {
  if (id.empty() || id.size() > wire::kMaxSessionIdLength) {
    // Never echoed: it may be megabytes.
    return absl::InvalidArgumentError(absl::StrCat("session id must be 1..",
                                                   wire::kMaxSessionIdLength, " characters, not ",
                                                   id.size()));
  }
  for (char c : id) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat("session id '", absl::CHexEscape(id),
                                                     "' may only hold printable ASCII without "
                                                     "spaces"));
    }
  }
  return absl::OkStatus();
}

void SessionManager::Reap(std::vector<std::shared_ptr<Session>> sessions) {
  if (sessions.empty()) return;
  absl::MutexLock l(&reap_mu_);
  for (auto& s : sessions) to_reap_.push_back(std::move(s));
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Reserve(const std::string& id,
                                                                 const std::string& fingerprint,
                                                                 uint64_t memory_bytes) {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  std::vector<std::shared_ptr<Session>> reap;
  absl::StatusOr<std::shared_ptr<Session>> result = std::shared_ptr<Session>();
  {
    absl::MutexLock l(&mu_);
    reap = PruneLocked();
    auto it = sessions_.find(id);
    if (it != sessions_.end()) {
      const Entry& e = it->second;
      if (e.fingerprint != fingerprint) {
        result = absl::AlreadyExistsError(absl::StrCat(
            "session '", id, "' exists here, created by a different request",
            e.session && IsSettled(e.session->phase())
                ? ": it ended; forget it first (ForgetSession) or choose another id"
                : ""));
      } else if (e.session == nullptr) {
        result = absl::AbortedError(
            absl::StrCat("session '", id, "' is being created by the same request: retry"));
      } else {
        result = e.session;  // The same request again: what it created.
      }
    } else {
      const size_t active = ActiveCountLocked();
      if (active >= limits_.max_sessions) {
        result = absl::ResourceExhaustedError(absl::StrCat(
            "this daemon runs ", active, " sessions, its limit (--max_sessions=",
            limits_.max_sessions, "): retry once one ends"));
      } else {
        // Sessions that ended gave theirs back in PruneLocked above.
        absl::StatusOr<MemoryBudget::Reservation> memory = MemoryBudget::Reservation();
        if (memory_ != nullptr) {
          memory = memory_->Reserve(memory_bytes, absl::StrCat("session '", id, "'"));
        }
        if (!memory.ok()) {
          result = memory.status();
        } else {
          sessions_[id] = Entry{nullptr, fingerprint, absl::InfiniteFuture(), *std::move(memory)};
        }
      }
    }
  }
  Reap(std::move(reap));
  return result;
}

void SessionManager::Unreserve(const std::string& id) {
  absl::MutexLock l(&mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end() && it->second.session == nullptr) sessions_.erase(it);
}

void SessionManager::Put(std::shared_ptr<Session> session) {
  std::vector<std::shared_ptr<Session>> reap;
  {
    absl::MutexLock l(&mu_);
    reap = PruneLocked();
    Metrics().SessionStarted(Session::MetricsRoleOf(session->role()));
    sessions_[session->id()].session = std::move(session);
  }
  // Outside the lock: the last worker of a session that just ended may still be returning, and
  // a forgotten session's destructor joins too.
  Reap(std::move(reap));
}

std::vector<std::shared_ptr<Session>> SessionManager::PruneLocked() {
  std::vector<std::shared_ptr<Session>> reap;
  const absl::Time now = absl::Now();
  for (auto& [id, e] : sessions_) {
    // An IN_DOUBT session holds its devices until its agent settles it: never forgotten.
    if (e.session == nullptr || e.ended != absl::InfiniteFuture() ||
        !IsSettled(e.session->phase())) {
      continue;
    }
    e.ended = now;
    // Its buffers go with its last worker, which is returning now.
    e.memory.Reset();
    reap.push_back(e.session);  // Its threads hold stacks until joined.
    ended_.push_back(id);
  }
  while (!ended_.empty()) {
    auto it = sessions_.find(ended_.front());
    if (it == sessions_.end() || it->second.ended == absl::InfiniteFuture()) {
      ended_.pop_front();  // Forgotten or replaced already.
      continue;
    }
    if (ended_.size() <= limits_.max_ended && now - it->second.ended < limits_.retention) break;
    reap.push_back(std::move(it->second.session));
    sessions_.erase(it);
    ended_.pop_front();
  }
  return reap;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Find(const std::string& id) {
  std::vector<std::shared_ptr<Session>> reap;
  absl::StatusOr<std::shared_ptr<Session>> result;
  {
    absl::MutexLock l(&mu_);
    reap = PruneLocked();
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second.session == nullptr) {
      result = absl::NotFoundError(absl::StrCat("no session '", id, "' on this daemon"));
    } else {
      result = it->second.session;
    }
  }
  Reap(std::move(reap));
  return result;
}

absl::StatusOr<std::shared_ptr<SourceSession>> SessionManager::FindSource(const std::string& id) {
  auto s = Find(id);
  if (!s.ok()) return s.status();
  auto src = std::dynamic_pointer_cast<SourceSession>(*s);
  if (!src) {
    return absl::FailedPreconditionError(
        absl::StrCat("session '", id, "' is a destination session here"));
  }
  return src;
}

absl::StatusOr<std::shared_ptr<DestinationSession>> SessionManager::FindDestination(
    const std::string& id) {
  auto s = Find(id);
  if (!s.ok()) return s.status();
  auto dst = std::dynamic_pointer_cast<DestinationSession>(*s);
  if (!dst) {
    return absl::FailedPreconditionError(
        absl::StrCat("session '", id, "' is a source session here"));
  }
  return dst;
}

std::vector<std::shared_ptr<Session>> SessionManager::List() {
  std::vector<std::shared_ptr<Session>> reap, all;
  {
    absl::MutexLock l(&mu_);
    reap = PruneLocked();
    for (const auto& [id, e] : sessions_) {
      if (e.session) all.push_back(e.session);
    }
  }
  Reap(std::move(reap));
  return all;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Forget(const std::string& id) {
  std::shared_ptr<Session> forgotten;
  {
    absl::MutexLock l(&mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second.session == nullptr) {
      return absl::NotFoundError(absl::StrCat("no session '", id, "' on this daemon"));
    }
    const SessionPhase phase = it->second.session->phase();
    if (!IsSettled(phase)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session '", id, "' is ", SessionPhaseName(phase),
          phase == SessionPhase::kInDoubt ? ": settle it first (ResolveSession)"
                                          : ": cancel it first (CancelSession)"));
    }
    forgotten = std::move(it->second.session);
    sessions_.erase(it);
    ended_.erase(std::remove(ended_.begin(), ended_.end(), id), ended_.end());
  }
  Reap({forgotten});  // Its last worker may still be returning.
  return forgotten;
}

size_t SessionManager::ActiveCount() {
  std::vector<std::shared_ptr<Session>> reap;
  size_t active;
  {
    absl::MutexLock l(&mu_);
    reap = PruneLocked();  // Also gives ended sessions' memory back.
    active = ActiveCountLocked();
  }
  Reap(std::move(reap));
  return active;
}

size_t SessionManager::ActiveCountLocked() {
  size_t active = 0;
  for (const auto& [_, e] : sessions_) {
    if (e.session == nullptr || !IsSettled(e.session->phase())) ++active;
  }
  return active;
}

void SessionManager::CancelAll() {
  std::vector<std::shared_ptr<Session>> all;
  {
    absl::MutexLock l(&mu_);
    for (auto& [id, e] : sessions_) {
      if (e.session) all.push_back(e.session);
    }
  }
  // Refused for sessions whose devices all committed: those finish (or end in doubt) alone.
  // Ended ones have nothing to cancel (and would only log that).
  for (auto& s : all) {
    if (!IsFinal(s->phase())) (void)s->Cancel();
  }
  for (auto& s : all) s->Join();
}

}  // namespace migmover
