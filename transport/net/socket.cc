#include "transport/net/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"

namespace migmover::net {
namespace {

constexpr absl::Duration kSlice = absl::Milliseconds(100);

int PollTimeoutMs(absl::Time deadline) {
  absl::Duration left = deadline - absl::Now();
  if (left > kSlice) left = kSlice;
  if (left < absl::ZeroDuration()) left = absl::ZeroDuration();
  return static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
}

absl::StatusOr<sockaddr_storage> Resolve(const HostPort& addr, socklen_t* len) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string port = absl::StrCat(addr.port);
  int r =
      ::getaddrinfo(addr.host.empty() ? nullptr : addr.host.c_str(), port.c_str(), &hints, &res);
  if (r != 0 || res == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("getaddrinfo(", addr.host, ":", addr.port, "): ", ::gai_strerror(r)));
  }
  sockaddr_storage ss{};
  std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return ss;
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text) {
  HostPort hp;
  absl::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == absl::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not [host]:port"));
    }
    hp.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not host:port"));
    }
    hp.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  uint32_t p = 0;
  if (!absl::SimpleAtoi(port, &p) || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "': bad port '", port, "'"));
  }
  hp.port = static_cast<uint16_t>(p);
  return hp;
}

absl::StatusOr<UniqueFd> TcpListen(const HostPort& addr, uint16_t* bound_port) {
  socklen_t len = 0;
  auto ss = Resolve(addr, &len);
  if (!ss.ok()) return ss.status();
  UniqueFd fd(::socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket(TCP)", errno);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const std::string where = absl::StrCat(addr.host, ":", addr.port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&*ss), len) != 0) {
    return ErrnoStatus(absl::StrCat("bind(", where, ")"), errno);
  }
  if (::listen(fd.get(), 64) != 0) return ErrnoStatus(absl::StrCat("listen(", where, ")"), errno);
  if (bound_port) {
    sockaddr_storage got{};
    socklen_t got_len = sizeof(got);
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&got), &got_len);
    *bound_port = ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                                                  : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
  }
  return fd;
}

absl::StatusOr<UniqueFd> TcpConnect(const HostPort& addr, absl::Duration timeout) {
  socklen_t len = 0;
  auto ss = Resolve(addr, &len);
  if (!ss.ok()) return ss.status();
  const std::string where = absl::StrCat(addr.host, ":", addr.port);
  UniqueFd fd(::socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return ErrnoStatus("socket(TCP)", errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*ss), len) != 0) {
    if (errno != EINPROGRESS) return ErrnoStatus(absl::StrCat("connect(", where, ")"), errno);
    pollfd p{fd.get(), POLLOUT, 0};
    int r = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
    if (r == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("connect(", where, "): no answer within ", absl::FormatDuration(timeout)));
    }
    int err = 0;
    socklen_t elen = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &elen);
    if (err != 0) return ErrnoStatus(absl::StrCat("connect(", where, ")"), err);
  }
  int flags = ::fcntl(fd.get(), F_GETFL);
  ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

absl::StatusOr<UniqueFd> Accept(int listen_fd, absl::Duration timeout) {
  pollfd p{listen_fd, POLLIN, 0};
  int r = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  if (r < 0) return ErrnoStatus(absl::StrCat("poll(listen fd ", listen_fd, ")"), errno);
  if (r == 0) return absl::DeadlineExceededError("accept: nobody connected");
  int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return ErrnoStatus(absl::StrCat("accept4(listen fd ", listen_fd, ")"), errno);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return UniqueFd(fd);
}

namespace {
absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("unix socket path too long (", path.size(),
                                                   " bytes, at most ", sizeof(sa.sun_path) - 1,
                                                   "): ", path));
  }
  std::memcpy(sa.sun_path, path.data(), path.size());
  return sa;
}
}  // namespace

absl::StatusOr<UniqueFd> UnixListen(const std::string& path, mode_t mode) {
  mode &= 0777;
  absl::StatusOr<sockaddr_un> sa = UnixAddress(path);
  if (!sa.ok()) return sa.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket(AF_UNIX)", errno);
  // bind creates the file with the socket inode's mode less the umask: set that mode first, so
  // the file is born no looser than `mode` (a chmod after bind leaves a window, and under
  // umask 0 the window was a world-writable socket).
  if (::fchmod(fd.get(), mode) != 0) {
    return ErrnoStatus(absl::StrFormat("fchmod(unix socket for %s, 0%o)", path, mode),
                       errno);
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&*sa), sizeof(*sa)) != 0) {
    return ErrnoStatus(absl::StrCat("bind(unix:", path, ")"), errno);
  }
  // The umask may have taken bits away; give back exactly `mode` (never more).
  if (::chmod(path.c_str(), mode) != 0) {
    return ErrnoStatus(absl::StrFormat("chmod(%s, 0%o)", path, mode), errno);
  }
  if (::listen(fd.get(), 16) != 0)
    return ErrnoStatus(absl::StrCat("listen(unix:", path, ")"), errno);
  return fd;
}

absl::StatusOr<UniqueFd> UnixConnect(const std::string& path) {
  absl::StatusOr<sockaddr_un> sa = UnixAddress(path);
  if (!sa.ok()) return sa.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket(AF_UNIX)", errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*sa), sizeof(*sa)) != 0) {
    return ErrnoStatus(absl::StrCat("connect(unix:", path, ")"), errno);
  }
  return fd;
}

absl::Status TuneDataSocket(int fd, int buffer_bytes, absl::string_view congestion,
                            absl::Duration peer_timeout) {
  // The data plane's end of a userspace TLS relay is a unix socket: the relay's TCP socket was
  // tuned when it connected.
  if (!IsTcp(fd)) return absl::OkStatus();
  auto set = [fd](int level, int name, const char* what, int value) -> absl::Status {
    if (::setsockopt(fd, level, name, &value, sizeof(value)) != 0) {
      return ErrnoStatus(absl::StrCat("setsockopt(fd ", fd, ", ", what, ", ", value, ")"), errno);
    }
    return absl::OkStatus();
  };
  if (buffer_bytes > 0) {
    RETURN_IF_ERROR(set(SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF", buffer_bytes));
    RETURN_IF_ERROR(set(SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF", buffer_bytes));
  }
  RETURN_IF_ERROR(set(SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", 1));
  if (peer_timeout > absl::ZeroDuration()) {
    // Probe an idle connection every second; the user timeout, not the probe count, decides
    // when silence is death (it overrides keepalive's own count).
    const int ms = static_cast<int>(
        std::clamp<int64_t>(absl::ToInt64Milliseconds(peer_timeout), 1, 3'600'000));
    RETURN_IF_ERROR(set(IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", 1));
    RETURN_IF_ERROR(set(IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL", 1));
    // The kernel takes at most 127 probes; past that the user timeout decides alone anyway.
    RETURN_IF_ERROR(
        set(IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", std::clamp(ms / 1000, 1, 127)));
    RETURN_IF_ERROR(set(IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", ms));
  } else {
    RETURN_IF_ERROR(set(IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", 10));
    RETURN_IF_ERROR(set(IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL", 5));
    RETURN_IF_ERROR(set(IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", 3));
  }
  return congestion.empty() ? absl::OkStatus() : SetCongestionControl(fd, congestion);
}

bool IsTcp(int fd) {
  int domain = 0, type = 0;
  socklen_t len = sizeof(domain);
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return false;
  len = sizeof(type);
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return false;
  return (domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM;
}

absl::Status SetCongestionControl(int fd, absl::string_view name) {
  if (::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name.data(), name.size()) != 0) {
    return ErrnoStatus(absl::StrCat("setsockopt(fd ", fd, ", TCP_CONGESTION, ", name, ")"), errno);
  }
  return absl::OkStatus();
}

absl::Status CheckCongestionControl(absl::string_view name) {
  const char* kAvailable = "/proc/sys/net/ipv4/tcp_available_congestion_control";
  std::ifstream in(kAvailable);
  std::string available;
  std::getline(in, available);
  for (absl::string_view a : absl::StrSplit(available, ' ', absl::SkipEmpty())) {
    if (a == name) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("TCP congestion control '", name, "' is not available here (", kAvailable, ": ",
                   available.empty() ? "unreadable" : available, ")"));
}

absl::Status SendAll(int fd, absl::string_view data, absl::Time deadline,
                     const std::atomic<bool>* cancel) {
  size_t done = 0;
  while (done < data.size()) {
    if (cancel && cancel->load()) return absl::CancelledError("send cancelled");
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) {
      return ErrnoStatus(absl::StrCat("send(fd ", fd, ", ", data.size() - done, " bytes)"), errno);
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("send(fd ", fd, "): peer accepted ", done,
                                                      " of ", data.size(),
                                                      " bytes before the deadline"));
    }
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, PollTimeoutMs(deadline));
  }
  return absl::OkStatus();
}

absl::Status PeerClosedError(absl::string_view message) {
  absl::Status s = absl::UnavailableError(message);
  s.SetPayload(kPeerClosedPayload, absl::Cord("eof"));
  return s;
}

bool IsPeerClosed(const absl::Status& s) { return s.GetPayload(kPeerClosedPayload).has_value(); }

bool PeerClosedInOrder(int fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return false;
  // The peer's FIN came (and was taken): a reset or an abort leaves TCP_CLOSE instead.
  return info.tcpi_state == TCP_CLOSE_WAIT || info.tcpi_state == TCP_LAST_ACK ||
         info.tcpi_state == TCP_CLOSING || info.tcpi_state == TCP_TIME_WAIT;
}

absl::Status RecvExact(int fd, void* buf, size_t n, absl::Time deadline,
                       const std::atomic<bool>* cancel) {
  size_t done = 0;
  auto* p = static_cast<uint8_t*>(buf);
  while (done < n) {
    if (cancel && cancel->load()) return absl::CancelledError("receive cancelled");
    ssize_t r = ::recv(fd, p + done, n - done, MSG_DONTWAIT);
    if (r > 0) {
      done += r;
      continue;
    }
    if (r == 0) {
      const std::string what =
          absl::StrCat("peer closed the connection after ", done, " of ", n, " bytes");
      // After a reset the reads that follow the one that said so see an end too.
      return PeerClosedInOrder(fd) ? PeerClosedError(what) : absl::UnavailableError(what);
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      return ErrnoStatus(absl::StrCat("recv(fd ", fd, ", ", n - done, " bytes)"), errno);
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("recv(fd ", fd, "): ", done, " of ", n,
                                                      " bytes arrived before the deadline"));
    }
    pollfd pf{fd, POLLIN, 0};
    ::poll(&pf, 1, PollTimeoutMs(deadline));
  }
  return absl::OkStatus();
}

}  // namespace migmover::net
