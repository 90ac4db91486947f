#include "daemon/intake/fd_intake.h"

#include <pthread.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "daemon/base/log.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"

namespace migmover {
namespace {
constexpr size_t kMaxRequest = 64;

std::string ReadLink(const std::string& path) {
  char target[512];
  ssize_t n = ::readlink(path.c_str(), target, sizeof(target));
  return n > 0 ? std::string(target, static_cast<size_t>(n)) : std::string();
}

// What /proc says the fd is ("anon_inode:[vfio-device]", "/dev/null"), or "" if it cannot tell.
std::string FdTarget(int fd) { return ReadLink(absl::StrCat("/proc/self/fd/", fd)); }

// The device class of a character device, from sysfs ("vfio-dev", "mem", "tty"), or "".
std::string CharDeviceClass(dev_t rdev) {
  const std::string link =
      ReadLink(absl::StrCat("/sys/dev/char/", major(rdev), ":", minor(rdev), "/subsystem"));
  const size_t slash = link.rfind('/');
  return slash == std::string::npos ? link : link.substr(slash + 1);
}

// Control bytes as \xNN, the rest as is: the daemon's text may reach an agent's log.
std::string EscapeControl(absl::string_view text) {
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string ErrorLine(absl::StatusCode code, absl::string_view why) {
  return absl::StrCat("error ", absl::StatusCodeToString(code), " ", why, "\n");
}

// Best effort, never blocking: for a refusal on a connection about to be closed.
void SendNow(int fd, absl::string_view line) {
  (void)!::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}
}  // namespace

const char* FdPurposeName(FdPurpose purpose) {
  switch (purpose) {
    case FdPurpose::kVfioDevice:
      return "vfio-device";
    case FdPurpose::kSaveData:
      return "save-data";
    case FdPurpose::kResumeData:
      return "resume-data";
  }
  return "?";
}

absl::StatusOr<FdPurpose> ParseFdPurpose(absl::string_view text) {
  if (text == "vfio-device") return FdPurpose::kVfioDevice;
  if (text == "save-data") return FdPurpose::kSaveData;
  if (text == "resume-data") return FdPurpose::kResumeData;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown fd purpose '", absl::CHexEscape(text),
      "'; expected vfio-device, save-data or resume-data"));
}

absl::Status CheckFdForPurpose(int fd, FdPurpose purpose) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(absl::StrCat("fstat(received fd ", fd, ")"), errno);
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return ErrnoStatus(absl::StrCat("fcntl(received fd ", fd, ", F_GETFL)"), errno);
  if (flags & O_PATH) {
    return absl::InvalidArgumentError(absl::StrCat(
        FdPurposeName(purpose), " fd was opened with O_PATH: it can do no I/O or ioctl"));
  }
  const int mode = flags & O_ACCMODE;
  // Anonymous-inode files (VFIO device and migration data fds): /proc names them
  // "anon_inode:[...]"; older kernels also report no file type for them.
  const std::string target = FdTarget(fd);
  const bool anon = absl::StartsWith(target, "anon_inode:") || (st.st_mode & S_IFMT) == 0;
  const bool stream = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode) || anon;
  switch (purpose) {
    case FdPurpose::kVfioDevice:
      if (anon) {
        // A VFIO group hands out device fds as anonymous inodes named "[vfio-device]"; an
        // eventfd, epoll or another driver's anonymous file is not one.
        if (target != "anon_inode:[vfio-device]") {
          return absl::InvalidArgumentError(absl::StrCat(
              "vfio-device fd is an anonymous file of another kind (", absl::CHexEscape(target),
              "), not a VFIO group's device fd"));
        }
      } else if (S_ISCHR(st.st_mode)) {
        // A VFIO device cdev (/dev/vfio/devices/vfioN) is of class vfio-dev; /dev/null or a tty
        // would take the migration ioctls as something else.
        const std::string cls = CharDeviceClass(st.st_rdev);
        if (cls != "vfio-dev") {
          return absl::InvalidArgumentError(absl::StrCat(
              "vfio-device fd is a character device of class '",
              cls.empty() ? "unknown" : absl::CHexEscape(cls), "' (",
              absl::CHexEscape(target), "), not a VFIO device cdev (class vfio-dev)"));
        }
      } else {
        return absl::InvalidArgumentError(
            "vfio-device fd is neither a VFIO device file nor a character device");
      }
      if (mode != O_RDWR) {
        return absl::InvalidArgumentError("vfio-device fd is not open for reading and writing");
      }
      return absl::OkStatus();
    case FdPurpose::kSaveData:
      // A regular file (a memfd, a saved stream) reads like a VFIO data fd: 0 at its current
      // end, more after it grows.
      if (!stream && !S_ISREG(st.st_mode)) {
        return absl::InvalidArgumentError("save-data fd is neither a stream nor a file");
      }
      if (mode != O_RDONLY && mode != O_RDWR) {
        return absl::InvalidArgumentError("save-data fd is not open for reading");
      }
      return absl::OkStatus();
    case FdPurpose::kResumeData:
      if (!stream) return absl::InvalidArgumentError("resume-data fd is not a stream");
      if (mode != O_WRONLY && mode != O_RDWR) {
        return absl::InvalidArgumentError("resume-data fd is not open for writing");
      }
      return absl::OkStatus();
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<std::unique_ptr<FdIntake>> FdIntake::Start(const std::string& path,
                                                          FdIntakeOptions options) {
  if (options.max_connections < 1 || options.max_pending < 1 ||
      options.idle_timeout <= absl::ZeroDuration() || options.handle_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "fd intake: connections, pending fds, idle timeout and handle lifetime must be positive");
  }
  std::unique_ptr<FdIntake> intake(new FdIntake());
  intake->path_ = path;
  intake->options_ = options;
  ASSIGN_OR_RETURN(intake->listen_fd_, net::UnixListen(path, options.socket_mode));
  // Nonblocking: a client that connects and vanishes before accept must not block the loop.
  if (::fcntl(intake->listen_fd_.get(), F_SETFL, O_NONBLOCK) != 0) {
    return ErrnoStatus(absl::StrCat("fcntl(unix:", path, ", F_SETFL, O_NONBLOCK)"), errno);
  }
  intake->stop_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!intake->stop_fd_) return ErrnoStatus("eventfd(fd intake stop)", errno);
  intake->thread_ = std::thread([p = intake.get()] { p->Serve(); });
  return intake;
}

FdIntake::~FdIntake() {
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  ::unlink(path_.c_str());
}

void FdIntake::AcceptSome(std::vector<Connection>& conns) {
  // A bounded number per turn: a flood of connections cannot keep the loop from serving the
  // connections it has.
  for (int i = 0; i < 16; ++i) {
    UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // EMFILE and the like: the connection stays queued, and the listening socket stays
      // readable; pause accepting rather than spin on it.
      MM_LOG(WARNING) << "fd intake: " << ErrnoStatus("accept4(unix:" + path_ + ")", errno)
                      << "; not accepting for 100 ms";
      accept_paused_until_ = absl::Now() + absl::Milliseconds(100);
      return;
    }
    absl::StatusOr<PeerCredentials> peer = PeerCredentialsOf(fd.get());
    if (!peer.ok()) {
      refusals_.Warn(std::string(peer.status().message()));
      continue;
    }
    if (options_.access != nullptr) {
      if (absl::Status allowed = options_.access->Check(*peer, "the fd intake"); !allowed.ok()) {
        refusals_.Warn(std::string(allowed.message()));
        SendNow(fd.get(), ErrorLine(allowed.code(), allowed.message()));
        continue;
      }
    }
    if (conns.size() >= options_.max_connections) {
      refusals_.Warn(absl::StrCat(DescribePeer(*peer), ": ", options_.max_connections,
                              " connections already open"));
      SendNow(fd.get(), ErrorLine(absl::StatusCode::kResourceExhausted,
                                  absl::StrCat(options_.max_connections,
                                               " connections already open; try again")));
      continue;
    }
    conns.push_back(Connection{std::move(fd), *peer, absl::Now() + options_.idle_timeout});
  }
}

void FdIntake::Serve() {
  pthread_setname_np(pthread_self(), "mm-fd-intake");
  std::vector<Connection> conns;
  std::vector<pollfd> fds;
  while (true) {
    const absl::Time now = absl::Now();
    absl::Time wake = ExpireHandles();
    for (auto it = conns.begin(); it != conns.end();) {
      if (it->idle_deadline <= now) {
        MM_LOG(INFO) << "fd intake: " << DescribePeer(it->peer) << ": idle for "
                     << absl::FormatDuration(options_.idle_timeout) << ", connection closed";
        it = conns.erase(it);
      } else {
        wake = std::min(wake, it->idle_deadline);
        ++it;
      }
    }
    fds.clear();
    fds.push_back({stop_fd_.get(), POLLIN, 0});
    // -1: poll ignores it while accepting is paused.
    const bool accepting = absl::Now() >= accept_paused_until_;
    if (!accepting) wake = std::min(wake, accept_paused_until_);
    fds.push_back({accepting ? listen_fd_.get() : -1, POLLIN, 0});
    for (const Connection& c : conns) fds.push_back({c.fd.get(), POLLIN, 0});
    // At most a second (wake may be the infinite future), rounded up so a deadline is past
    // when poll returns.
    const int timeout_ms = static_cast<int>(
        std::clamp<int64_t>(absl::ToInt64Milliseconds(wake - absl::Now()), -1, 999) + 1);
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      MM_LOG(ERROR) << "fd intake: " << ErrnoStatus("poll", errno) << "; stopped";
      return;
    }
    if (fds[0].revents) return;
    // One request per ready connection per turn, in order: nobody waits on anybody's pace.
    std::vector<bool> close(conns.size(), false);
    for (size_t i = 0; i < conns.size(); ++i) {
      if (fds[i + 2].revents == 0) continue;
      close[i] = !ServeOne(conns[i]);
    }
    for (size_t i = conns.size(); i-- > 0;) {
      if (close[i]) conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(i));
    }
    if (fds[1].revents & POLLIN) AcceptSome(conns);
  }
}

bool FdIntake::ServeOne(Connection& c) {
  std::vector<UniqueFd> received;
  Reply reply = HandleOne(c, received);
  closer_.Close(std::move(received));  // What it did not keep.
  if (reply.line.empty()) return !reply.close;  // Nothing to answer.
  c.idle_deadline = absl::Now() + options_.idle_timeout;
  MM_LOG(INFO) << "fd intake: " << DescribePeer(c.peer) << ": "
               << absl::StripSuffix(reply.line, "\n")
               << (reply.close ? " (connection closed: its requests can no longer be told apart)"
                               : "");
  ssize_t n =
      ::send(c.fd.get(), reply.line.data(), reply.line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n == static_cast<ssize_t>(reply.line.size())) return !reply.close;
  // A reply line is far smaller than the socket's buffer: only a client that sends request
  // after request without reading its answers fills it. It loses its connection, not the
  // others their turn.
  MM_LOG(WARNING) << "fd intake: " << DescribePeer(c.peer) << ": "
                  << (n < 0 ? ErrnoStatus("send(reply)", errno).ToString()
                            : "the client does not read its replies")
                  << "; connection closed";
  return false;
}

absl::Time FdIntake::ExpireHandles() {
  absl::Time next = absl::InfiniteFuture();
  std::vector<std::pair<uint64_t, Pending>> expired;
  {
    absl::MutexLock l(&mu_);
    const absl::Time now = absl::Now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.expires <= now) {
        expired.emplace_back(it->first, std::move(it->second));
        it = pending_.erase(it);
      } else {
        next = std::min(next, it->second.expires);
        ++it;
      }
    }
  }
  for (auto& [handle, p] : expired) {
    MM_LOG(WARNING) << "fd intake: handle " << handle << " (" << FdPurposeName(p.received.purpose)
                    << " from " << p.from << ") was not attached within "
                    << absl::FormatDuration(options_.handle_ttl) << "; its fd is closed";
    closer_.Close(std::move(p.received.fd));
  }
  return next;
}

size_t FdIntake::pending() {
  (void)ExpireHandles();
  absl::MutexLock l(&mu_);
  return pending_.size();
}

FdIntake::Reply FdIntake::HandleOne(Connection& c, std::vector<UniqueFd>& fds) {
  const int conn = c.fd.get();
  char buf[kMaxRequest + 1];
  iovec iov{buf, sizeof(buf)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(conn, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return {};
  if (n <= 0) return {"", true};  // Closed by the client, or broken.

  // Take ownership of every fd that arrived before judging the request, so none leaks.
  bool foreign_cmsg = false;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
      size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        fds.emplace_back(fd);
      }
    } else {
      foreign_cmsg = true;
    }
  }
  // A stream socket keeps no message boundaries: once a request is not exactly one
  // "<purpose>\n" in one read, where the next begins is unknown, and a reply could be taken for
  // another request's. Such a connection gets its error and is closed.
  if (msg.msg_flags & MSG_CTRUNC) {
    return {ErrorLine(absl::StatusCode::kInvalidArgument,
                      "ancillary data truncated: send exactly one fd per request"),
            true};
  }
  if (foreign_cmsg) {
    return {ErrorLine(absl::StatusCode::kInvalidArgument,
                      "unexpected ancillary data (not SCM_RIGHTS)"),
            true};
  }
  auto purpose = ParseIntakeRequest(absl::string_view(buf, n));
  if (!purpose.ok()) {
    const bool framing_lost = static_cast<size_t>(n) > kMaxRequest || buf[n - 1] != '\n';
    return {ErrorLine(purpose.status().code(), purpose.status().message()), framing_lost};
  }
  if (fds.size() != 1) {
    return {ErrorLine(absl::StatusCode::kInvalidArgument,
                      absl::StrCat("expected exactly one fd with the request, got ", fds.size())),
            false};
  }
  if (absl::Status s = CheckFdForPurpose(fds[0].get(), *purpose); !s.ok()) {
    return {ErrorLine(s.code(), s.message()), false};
  }
  (void)ExpireHandles();
  absl::MutexLock l(&mu_);
  if (pending_.size() >= options_.max_pending) {
    return {ErrorLine(absl::StatusCode::kResourceExhausted,
                      absl::StrCat(options_.max_pending, " fds already wait for AttachDevice")),
            false};
  }
  uint64_t handle = next_handle_++;
  pending_.emplace(handle, Pending{ReceivedFd{std::move(fds[0]), *purpose},
                                   absl::Now() + options_.handle_ttl, DescribePeer(c.peer)});
  return {absl::StrCat("ok ", handle, "\n"), false};
}

absl::StatusOr<ReceivedFd> FdIntake::Take(uint64_t handle) {
  (void)ExpireHandles();
  absl::MutexLock l(&mu_);
  auto it = pending_.find(handle);
  if (it == pending_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no fd waits under handle ", handle, " (unknown, already attached, or not "
                     "attached within ", absl::FormatDuration(options_.handle_ttl),
                     " of its intake)"));
  }
  ReceivedFd r = std::move(it->second.received);
  pending_.erase(it);
  return r;
}

absl::StatusOr<uint64_t> SendFdToIntake(const std::string& path, FdPurpose purpose, int fd) {
  ASSIGN_OR_RETURN(UniqueFd conn, net::UnixConnect(path));
  std::string text = absl::StrCat(FdPurposeName(purpose), "\n");
  iovec iov{text.data(), text.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  if (::sendmsg(conn.get(), &msg, MSG_NOSIGNAL) < 0) {
    const int err = errno;
    // A daemon that refuses a connection (its peer credentials) says why before it closes:
    // that line, not the broken pipe, is the answer.
    if (err != EPIPE && err != ECONNRESET) {
      return ErrnoStatus(absl::StrCat("sendmsg(fd intake ", path, ", SCM_RIGHTS fd ", fd, ")"),
                         err);
    }
  }
  std::string reply;
  char ch;
  while (reply.size() < 4096) {
    RETURN_IF_ERROR(net::RecvExact(conn.get(), &ch, 1, absl::Now() + absl::Seconds(10)));
    if (ch == '\n') break;
    reply.push_back(ch);
  }
  return ParseIntakeReply(reply);
}

absl::StatusOr<FdPurpose> ParseIntakeRequest(absl::string_view bytes) {
  if (bytes.size() > kMaxRequest) {
    return absl::InvalidArgumentError("request longer than 64 bytes");
  }
  if (!absl::ConsumeSuffix(&bytes, "\n")) {
    return absl::InvalidArgumentError("request must end with a newline");
  }
  return ParseFdPurpose(bytes);
}

absl::StatusOr<uint64_t> ParseIntakeReply(absl::string_view line) {
  std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 2));
  if (parts.size() == 2 && parts[0] == "ok") {
    uint64_t handle = 0;
    if (absl::SimpleAtoi(parts[1], &handle)) return handle;
  }
  if (parts.size() == 3 && parts[0] == "error") {
    absl::StatusCode code = absl::StatusCode::kUnknown;
    for (int i = 1; i <= 16; ++i) {
      if (absl::StatusCodeToString(static_cast<absl::StatusCode>(i)) == parts[1]) {
        code = static_cast<absl::StatusCode>(i);
      }
    }
    return absl::Status(code,
                        absl::StrCat("fd intake refused the fd: ", EscapeControl(parts[2])));
  }
  return absl::DataLossError(
      absl::StrCat("fd intake: malformed reply '", EscapeControl(line), "'"));
}

}  // namespace migmover
