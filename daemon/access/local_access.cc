#include "daemon/access/local_access.h"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "transport/base/errno_status.h"

namespace migmover {
namespace {

absl::StatusOr<uid_t> ResolveUser(absl::string_view entry) {
  uint32_t n = 0;
  if (absl::SimpleAtoi(entry, &n)) return static_cast<uid_t>(n);
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  const std::string name(entry);
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->pw_uid;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("allowed uid '", entry, "' is neither a number nor a known user"));
}

absl::StatusOr<gid_t> ResolveGroup(absl::string_view entry) {
  uint32_t n = 0;
  if (absl::SimpleAtoi(entry, &n)) return static_cast<gid_t>(n);
  std::vector<char> buf(65536);
  group gr{};
  group* found = nullptr;
  const std::string name(entry);
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->gr_gid;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("allowed gid '", entry, "' is neither a number nor a known group"));
}

}  // namespace

absl::StatusOr<PeerCredentials> PeerCredentialsOf(int conn) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoStatus(absl::StrCat("getsockopt(fd ", conn, ", SO_PEERCRED)"), errno);
  }
  PeerCredentials p;
  p.pid = cred.pid;
  p.uid = cred.uid;
  p.gid = cred.gid;
  std::vector<gid_t> groups(64);
  while (true) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(conn, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      p.groups = std::move(groups);
      break;
    }
    if (errno == ERANGE && glen > groups.size() * sizeof(gid_t) && glen <= 65536 * sizeof(gid_t)) {
      groups.resize(glen / sizeof(gid_t));  // The kernel said how many.
      continue;
    }
    if (errno == ENOPROTOOPT) break;  // Kernels before 4.13: primary group only.
    return ErrnoStatus(absl::StrCat("getsockopt(fd ", conn, ", SO_PEERGROUPS)"), errno);
  }
  return p;
}

std::string DescribePeer(const PeerCredentials& peer) {
  return absl::StrCat("pid ", peer.pid, " uid ", peer.uid, " gid ", peer.gid);
}

absl::StatusOr<LocalAccess> LocalAccess::Parse(absl::string_view uids, absl::string_view gids) {
  LocalAccess a;
  a.uids_.insert(0);
  a.uids_.insert(::geteuid());
  for (absl::string_view e : absl::StrSplit(uids, ',', absl::SkipWhitespace())) {
    auto u = ResolveUser(absl::StripAsciiWhitespace(e));
    if (!u.ok()) return u.status();
    a.uids_.insert(*u);
  }
  for (absl::string_view e : absl::StrSplit(gids, ',', absl::SkipWhitespace())) {
    auto g = ResolveGroup(absl::StripAsciiWhitespace(e));
    if (!g.ok()) return g.status();
    a.gids_.insert(*g);
  }
  return a;
}

absl::Status LocalAccess::Check(const PeerCredentials& peer, absl::string_view what) const {
  if (uids_.count(peer.uid) || gids_.count(peer.gid)) return absl::OkStatus();
  for (gid_t g : peer.groups) {
    if (gids_.count(g)) return absl::OkStatus();
  }
  // The allow-list itself is in the daemon's start-up line, not in every refusal.
  return absl::PermissionDeniedError(absl::StrCat(DescribePeer(peer), " may not use ", what));
}

std::string LocalAccess::Describe() const {
  return absl::StrCat("uids ", absl::StrJoin(uids_, ","), "; gids ",
                      gids_.empty() ? "none" : absl::StrJoin(gids_, ","));
}

}  // namespace migmover
