#include "daemon/intake/fd_intake.h"

#include <pthread.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
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
  const int mode = flags & O_ACCMODE;
  // Anonymous-inode files (VFIO device and migration data fds) report no file type.
  const bool anon = (st.st_mode & S_IFMT) == 0;
  const bool stream = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode) || anon;
  switch (purpose) {
    case FdPurpose::kVfioDevice:
      if (!S_ISCHR(st.st_mode) && !anon) {
        return absl::InvalidArgumentError(
            "vfio-device fd is neither a VFIO device file nor a character device");
      }
      return absl::OkStatus();
    case FdPurpose::kSaveData:
      if (!stream) return absl::InvalidArgumentError("save-data fd is not a stream");
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

absl::StatusOr<std::unique_ptr<FdIntake>> FdIntake::Start(const std::string& path) {
  std::unique_ptr<FdIntake> intake(new FdIntake());
  intake->path_ = path;
  ASSIGN_OR_RETURN(intake->listen_fd_, net::UnixListen(path));
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

void FdIntake::Serve() {
  pthread_setname_np(pthread_self(), "mm-fd-intake");
  while (true) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    UniqueFd conn(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) continue;
    ServeConnection(std::move(conn));
  }
}

void FdIntake::ServeConnection(UniqueFd conn) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  ::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len);
  while (true) {
    pollfd fds[2] = {{conn.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    // An idle agent connection must not hold the (single) intake thread for long.
    int r = ::poll(fds, 2, 5000);
    if (r <= 0 || fds[1].revents) return;
    std::optional<std::string> reply = HandleOne(conn.get());
    if (!reply) return;
    MM_LOG(INFO) << "fd intake: pid " << cred.pid << " uid " << cred.uid << ": "
                 << absl::StripSuffix(*reply, "\n");
    if (!net::SendAll(conn.get(), *reply, absl::Now() + absl::Seconds(5)).ok()) return;
  }
}

std::optional<std::string> FdIntake::HandleOne(int conn) {
  char buf[kMaxRequest + 1];
  iovec iov{buf, sizeof(buf)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  if (n <= 0) return std::nullopt;

  // Take ownership of every fd that arrived before judging the request, so none leaks.
  std::vector<UniqueFd> fds;
  bool foreign_cmsg = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(fd);
      }
    } else {
      foreign_cmsg = true;
    }
  }
  auto error = [](absl::StatusCode code, absl::string_view why) {
    return absl::StrCat("error ", absl::StatusCodeToString(code), " ", why, "\n");
  };
  if (msg.msg_flags & MSG_CTRUNC) {
    return error(absl::StatusCode::kInvalidArgument,
                 "ancillary data truncated: send exactly one fd per request");
  }
  if (msg.msg_flags & MSG_TRUNC || static_cast<size_t>(n) > kMaxRequest) {
    return error(absl::StatusCode::kInvalidArgument, "request longer than 64 bytes");
  }
  if (foreign_cmsg) {
    return error(absl::StatusCode::kInvalidArgument, "unexpected ancillary data (not SCM_RIGHTS)");
  }
  absl::string_view text(buf, n);
  if (!absl::ConsumeSuffix(&text, "\n")) {
    return error(absl::StatusCode::kInvalidArgument, "request must end with a newline");
  }
  auto purpose = ParseFdPurpose(text);
  if (!purpose.ok()) return error(purpose.status().code(), purpose.status().message());
  if (fds.size() != 1) {
    return error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("expected exactly one fd with the request, got ", fds.size()));
  }
  if (absl::Status s = CheckFdForPurpose(fds[0].get(), *purpose); !s.ok()) {
    return error(s.code(), s.message());
  }
  absl::MutexLock l(&mu_);
  if (pending_.size() >= kMaxPending) {
    return error(absl::StatusCode::kResourceExhausted,
                 absl::StrCat(kMaxPending, " fds already wait for AttachDevice"));
  }
  uint64_t handle = next_handle_++;
  pending_.emplace(handle, ReceivedFd{std::move(fds[0]), *purpose});
  return absl::StrCat("ok ", handle, "\n");
}

absl::StatusOr<ReceivedFd> FdIntake::Take(uint64_t handle) {
  absl::MutexLock l(&mu_);
  auto it = pending_.find(handle);
  if (it == pending_.end()) {
    return absl::NotFoundError(absl::StrCat("no fd waits under handle ", handle,
                                            " (unknown, or already attached)"));
  }
  ReceivedFd r = std::move(it->second);
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
    return ErrnoStatus(absl::StrCat("sendmsg(fd intake ", path, ", SCM_RIGHTS fd ", fd, ")"),
                       errno);
  }
  std::string reply;
  char ch;
  while (reply.size() < 4096) {
    RETURN_IF_ERROR(net::RecvExact(conn.get(), &ch, 1, absl::Now() + absl::Seconds(10)));
    if (ch == '\n') break;
    reply.push_back(ch);
  }
  std::vector<std::string> parts = absl::StrSplit(reply, absl::MaxSplits(' ', 2));
  if (parts.size() == 2 && parts[0] == "ok") {
    uint64_t handle = 0;
    if (absl::SimpleAtoi(parts[1], &handle)) return handle;
  }
  if (parts.size() == 3 && parts[0] == "error") {
    absl::StatusCode code = absl::StatusCode::kUnknown;
    for (int i = 0; i <= 16; ++i) {
      if (absl::StatusCodeToString(static_cast<absl::StatusCode>(i)) == parts[1]) {
        code = static_cast<absl::StatusCode>(i);
      }
    }
    return absl::Status(code, absl::StrCat("fd intake refused the fd: ", parts[2]));
  }
  return absl::DataLossError(absl::StrCat("fd intake: malformed reply '", reply, "'"));
}

}  // namespace migmover
