#include "daemon/api/grpc_unix_listener.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "daemon/base/log.h"
#include "grpcpp/server_posix.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"

namespace migmover {

absl::StatusOr<std::unique_ptr<GrpcUnixListener>> GrpcUnixListener::Start(
    const std::string& path, mode_t mode, const LocalAccess* access, grpc::Server* server) {
  std::unique_ptr<GrpcUnixListener> l(new GrpcUnixListener());
  l->path_ = path;
  l->access_ = access;
  l->server_ = server;
  ASSIGN_OR_RETURN(l->listen_fd_, net::UnixListen(path, mode));
  if (::fcntl(l->listen_fd_.get(), F_SETFL, O_NONBLOCK) != 0) {
    return ErrnoStatus(absl::StrCat("fcntl(unix:", path, ", F_SETFL, O_NONBLOCK)"), errno);
  }
  l->stop_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!l->stop_fd_) return ErrnoStatus("eventfd(gRPC listener stop)", errno);
  l->thread_ = std::thread([p = l.get()] { p->Serve(); });
  return l;
}

GrpcUnixListener::~GrpcUnixListener() {
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  ::unlink(path_.c_str());
}

void GrpcUnixListener::Serve() {
  pthread_setname_np(pthread_self(), "mm-grpc-accept");
  while (true) {
    pollfd fds[2] = {{stop_fd_.get(), POLLIN, 0}, {listen_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
      MM_LOG(ERROR) << "gRPC listener: " << ErrnoStatus("poll", errno) << "; stopped";
      return;
    }
    if (fds[0].revents) return;
    if (!(fds[1].revents & POLLIN)) continue;
    for (int i = 0; i < 16; ++i) {  // A bounded batch, then the stop fd is looked at again.
      UniqueFd conn(
          ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!conn) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          // EMFILE and the like leave the connection queued and the socket readable: pause
          // rather than spin on it.
          MM_LOG(WARNING) << "gRPC listener: " << ErrnoStatus("accept4(unix:" + path_ + ")", errno)
                          << "; not accepting for 100 ms";
          pollfd stop{stop_fd_.get(), POLLIN, 0};
          (void)::poll(&stop, 1, 100);
        }
        break;
      }
      absl::StatusOr<PeerCredentials> peer = PeerCredentialsOf(conn.get());
      if (!peer.ok()) {
        refusals_.Warn(std::string(peer.status().message()));
        continue;
      }
      if (access_ != nullptr) {
        if (absl::Status allowed = access_->Check(*peer, "the gRPC API"); !allowed.ok()) {
          refusals_.Warn(std::string(allowed.message()));
          continue;  // Closed: the client sees UNAVAILABLE.
        }
      }
      // gRPC owns the fd from here.
      grpc::AddInsecureChannelFromFd(server_, conn.Release());
    }
  }
}

}  // namespace migmover
