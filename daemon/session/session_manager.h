// SessionManager: every session of this daemon by id. Thread-safe; its one mutex guards the
// map only: sessions are joined and destroyed outside it, so a lookup never waits on a session.
#ifndef MIGMOVER_DAEMON_SESSION_SESSION_MANAGER_H_
#define MIGMOVER_DAEMON_SESSION_SESSION_MANAGER_H_

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/session/destination_session.h"
#include "daemon/session/source_session.h"

namespace migmover {

class SessionManager {
 public:
  ~SessionManager();

  // Valid ids: 1..128 printable ASCII characters without spaces.
  static absl::Status CheckId(const std::string& id);
  // Reserves `id`. AlreadyExists while a session with that id has not ended; an ended one is
  // replaced.
  absl::Status Reserve(const std::string& id);
  void Unreserve(const std::string& id);
  void Put(std::shared_ptr<Session> session);

  absl::StatusOr<std::shared_ptr<Session>> Find(const std::string& id);
  absl::StatusOr<std::shared_ptr<SourceSession>> FindSource(const std::string& id);
  absl::StatusOr<std::shared_ptr<DestinationSession>> FindDestination(const std::string& id);

  // Cancels every session and waits for their workers (daemon shutdown).
  void CancelAll();

  // Ended sessions stay queryable (GetSession) until this many newer ones have ended.
  static constexpr size_t kKeepEnded = 64;

 private:
  // Notes newly ended sessions and forgets the oldest ended ones beyond kKeepEnded. Returns
  // the sessions to join (their threads hold stacks until joined) once mu_ is released: no
  // join, and no session destructor, runs under mu_.
  std::vector<std::shared_ptr<Session>> PruneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> ended_ ABSL_GUARDED_BY(mu_);  // Oldest first.
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_SESSION_MANAGER_H_
