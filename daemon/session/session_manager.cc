#include "daemon/session/session_manager.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "api/peer_wire.h"

namespace migmover {

SessionManager::~SessionManager() { CancelAll(); }

absl::Status SessionManager::CheckId(const std::string& id) {
  if (id.empty() || id.size() > wire::kMaxSessionIdLength) {
    return absl::InvalidArgumentError("session id must be 1..128 characters");
  }
  for (char c : id) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat("session id '", id, "' may only hold printable ASCII without spaces"));
    }
  }
  return absl::OkStatus();
}

absl::Status SessionManager::Reserve(const std::string& id) {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  std::shared_ptr<Session> replaced;  // Reaped after the lock: joining may wait.
  {
    absl::MutexLock l(&mu_);
    auto it = sessions_.find(id);
    if (it != sessions_.end()) {
      if (it->second == nullptr || !IsSettled(it->second->phase())) {
        return absl::AlreadyExistsError(
            absl::StrCat("session '", id, "' is already running here"));
      }
      // An ended session under this id is replaced.
      replaced = std::move(it->second);
      ended_.erase(std::remove(ended_.begin(), ended_.end(), id), ended_.end());
    }
    sessions_[id] = nullptr;
  }
  if (replaced) replaced->Join();
  return absl::OkStatus();
}

void SessionManager::Unreserve(const std::string& id) {
  absl::MutexLock l(&mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end() && it->second == nullptr) sessions_.erase(it);
}

void SessionManager::Put(std::shared_ptr<Session> session) {
  std::vector<std::shared_ptr<Session>> reap;
  {
    absl::MutexLock l(&mu_);
    reap = PruneLocked();
    sessions_[session->id()] = std::move(session);
  }
  // Outside the lock: the last worker of a session that just ended may still be returning, and
  // a forgotten session's destructor joins too.
  for (auto& s : reap) s->Join();
}

std::vector<std::shared_ptr<Session>> SessionManager::PruneLocked() {
  std::vector<std::shared_ptr<Session>> reap;
  for (auto& [id, s] : sessions_) {
    // An IN_DOUBT session holds its devices until its agent settles it: never forgotten.
    if (s == nullptr || !IsSettled(s->phase())) continue;
    if (std::find(ended_.begin(), ended_.end(), id) == ended_.end()) {
      reap.push_back(s);  // Its threads hold stacks until joined.
      ended_.push_back(id);
    }
  }
  while (ended_.size() > kKeepEnded) {
    auto it = sessions_.find(ended_.front());
    if (it != sessions_.end() && it->second && IsSettled(it->second->phase())) {
      reap.push_back(std::move(it->second));
      sessions_.erase(it);
    }
    ended_.pop_front();
  }
  return reap;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Find(const std::string& id) {
  absl::MutexLock l(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second == nullptr) {
    return absl::NotFoundError(absl::StrCat("no session '", id, "' on this daemon"));
  }
  return it->second;
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

void SessionManager::CancelAll() {
  std::vector<std::shared_ptr<Session>> all;
  {
    absl::MutexLock l(&mu_);
    for (auto& [id, s] : sessions_) {
      if (s) all.push_back(s);
    }
  }
  // Refused for sessions whose devices all committed: those finish (or end in doubt) alone.
  for (auto& s : all) (void)s->Cancel();
  for (auto& s : all) s->Join();
}

}  // namespace migmover
