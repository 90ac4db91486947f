// SessionManager: every session of this daemon by id, the admission limit on running sessions,
// and how long ended sessions are remembered. Thread-safe; its mutex guards the map only.
// Sessions that end are joined and destroyed on the manager's own reaper thread, never under
// the mutex nor in a caller's: a lookup (a peer's HELLO, an RPC) never waits on a session.
#ifndef MIGMOVER_DAEMON_SESSION_SESSION_MANAGER_H_
#define MIGMOVER_DAEMON_SESSION_SESSION_MANAGER_H_

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/base/memory_budget.h"
#include "daemon/session/destination_session.h"
#include "daemon/session/source_session.h"

namespace migmover {

struct SessionLimits {
  // Sessions not yet settled (running, or IN_DOUBT) at once; more are RESOURCE_EXHAUSTED.
  uint32_t max_sessions = 64;
  // Ended sessions stay queryable until this many newer ones have ended...
  uint32_t max_ended = 64;
  // ...or this long after they ended, whichever comes first.
  absl::Duration retention = absl::Hours(1);
};

class SessionManager {
 public:
  // `memory` (null: none) is the daemon's --max_memory, which sessions share with devices.
  explicit SessionManager(SessionLimits limits = {}, std::shared_ptr<MemoryBudget> memory = nullptr);
  // Cancels every session, joins them and the reaper.
  ~SessionManager();

  const SessionLimits& limits() const { return limits_; }

  // Valid ids: 1..128 printable ASCII characters without spaces.
  static absl::Status CheckId(const std::string& id);

  // Reserves `id` for a new session created by a request whose fingerprint (a digest of the
  // whole request) is `fingerprint`. Returns null when the id is now reserved for the caller
  // (who then calls Put or Unreserve), or the session the same request created before (an
  // idempotent retry: nothing is reserved). Errors: InvalidArgument (bad id); AlreadyExists
  // (a session under this id was created by a different request and is not forgotten);
  // Aborted (the same request is creating it right now: retry); ResourceExhausted
  // (limits().max_sessions sessions are not settled, or `memory_bytes`, what the session will
  // hold while it runs, would pass the memory budget). The memory stays reserved until the
  // session is settled (or Unreserve).
  absl::StatusOr<std::shared_ptr<Session>> Reserve(const std::string& id,
                                                   const std::string& fingerprint,
                                                   uint64_t memory_bytes = 0);
  void Unreserve(const std::string& id);
  // Fills the reservation of session->id().
  void Put(std::shared_ptr<Session> session);

  absl::StatusOr<std::shared_ptr<Session>> Find(const std::string& id);
  absl::StatusOr<std::shared_ptr<SourceSession>> FindSource(const std::string& id);
  absl::StatusOr<std::shared_ptr<DestinationSession>> FindDestination(const std::string& id);
  // Every session remembered, ordered by id.
  std::vector<std::shared_ptr<Session>> List();
  // Forgets a settled session, freeing its id; returns it. NotFound; FailedPrecondition while
  // it runs or is IN_DOUBT.
  absl::StatusOr<std::shared_ptr<Session>> Forget(const std::string& id);
  // Sessions not settled (reservations included). Notes those that ended (their memory is
  // given back) first.
  size_t ActiveCount();

  // Cancels every session and waits for their workers (daemon shutdown).
  void CancelAll();

 private:
  struct Entry {
    std::shared_ptr<Session> session;  // Null while reserved.
    std::string fingerprint;
    absl::Time ended = absl::InfiniteFuture();  // When it was first seen settled.
    MemoryBudget::Reservation memory;  // Given back once it is seen settled.
  };
  // Notes newly ended sessions and forgets those past limits_. Returns the sessions to join
  // (their threads hold stacks until joined), for Reap once mu_ is released.
  std::vector<std::shared_ptr<Session>> PruneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t ActiveCountLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands `sessions` to the reaper thread, which joins them (and drops its references).
  void Reap(std::vector<std::shared_ptr<Session>> sessions);
  void ReaperLoop();

  const SessionLimits limits_;
  const std::shared_ptr<MemoryBudget> memory_;
  absl::Mutex mu_;
  std::map<std::string, Entry> sessions_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> ended_ ABSL_GUARDED_BY(mu_);  // Oldest first.

  absl::Mutex reap_mu_;
  std::vector<std::shared_ptr<Session>> to_reap_ ABSL_GUARDED_BY(reap_mu_);
  bool stopping_ ABSL_GUARDED_BY(reap_mu_) = false;
  std::thread reaper_;  // Last: started once everything above is.
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_SESSION_MANAGER_H_
