// LocalAccess: who may use the daemon's unix sockets (the gRPC API and the fd intake). The
// socket file's mode is the first gate (the kernel checks it at connect); this is the second,
// checked on every accepted connection against the peer's credentials as the kernel reports
// them (SO_PEERCRED, SO_PEERGROUPS), so a socket made too open by mistake, or reached through a
// bind mount or another namespace, still lets in only the callers configured.
//
// A peer may connect when its uid is 0 or the daemon's own effective uid, when its uid is
// listed, or when its primary or any supplementary group is listed.
//
// Thread-safe: immutable after Parse.
#ifndef MIGMOVER_DAEMON_ACCESS_LOCAL_ACCESS_H_
#define MIGMOVER_DAEMON_ACCESS_LOCAL_ACCESS_H_

#include <sys/types.h>

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migmover {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // Supplementary groups (SO_PEERGROUPS; empty if unavailable).
};

// The credentials of the process at the other end of unix socket `conn`, as of its connect.
// Errors: the getsockopt's, named (SO_PEERGROUPS is optional: ENOPROTOOPT leaves groups empty).
absl::StatusOr<PeerCredentials> PeerCredentialsOf(int conn);

// "pid 51 uid 1000 gid 1000".
std::string DescribePeer(const PeerCredentials& peer);

class LocalAccess {
 public:
  // `uids` and `gids`: comma-separated numbers or user/group names ("" = none). Errors:
  // InvalidArgument naming an entry that is neither a number nor a known name.
  static absl::StatusOr<LocalAccess> Parse(absl::string_view uids, absl::string_view gids);

  // OK when `peer` may use the socket named `what`; PermissionDenied saying who was refused
  // ("pid 7 uid 1000 gid 1000 may not use the fd intake") otherwise.
  absl::Status Check(const PeerCredentials& peer, absl::string_view what) const;

  // "uids 0,1000; gids 27" for logs.
  std::string Describe() const;

 private:
  std::set<uid_t> uids_;
  std::set<gid_t> gids_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_ACCESS_LOCAL_ACCESS_H_
