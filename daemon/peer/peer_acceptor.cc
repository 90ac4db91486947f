#include "daemon/peer/peer_acceptor.h"

#include <pthread.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "daemon/base/log.h"
#include "transport/base/status_macros.h"
#include "transport/peer/handshake.h"

namespace migmover {

absl::StatusOr<std::unique_ptr<PeerAcceptor>> PeerAcceptor::Start(const net::HostPort& addr,
                                                                  SessionManager* sessions) {
  std::unique_ptr<PeerAcceptor> a(new PeerAcceptor());
  a->sessions_ = sessions;
  ASSIGN_OR_RETURN(a->listen_fd_, net::TcpListen(addr, &a->port_));
  a->thread_ = std::thread([p = a.get()] { p->Serve(); });
  return a;
}

PeerAcceptor::~PeerAcceptor() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void PeerAcceptor::Serve() {
  pthread_setname_np(pthread_self(), "mm-peer-accept");
  while (!stop_.load()) {
    absl::StatusOr<UniqueFd> conn = net::Accept(listen_fd_.get(), absl::Milliseconds(200));
    if (!conn.ok()) {
      if (conn.status().code() != absl::StatusCode::kDeadlineExceeded) {
        MM_LOG(WARNING) << "peer listener: " << conn.status();
      }
      continue;
    }
    Handle(std::move(*conn));
  }
}

void PeerAcceptor::Handle(UniqueFd conn) {
  sockaddr_storage peer{};
  socklen_t len = sizeof(peer);
  ::getpeername(conn.get(), reinterpret_cast<sockaddr*>(&peer), &len);
  // A silent or slow client may hold the listener for at most this long.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  absl::StatusOr<peer::Hello> hello = peer::ReadHello(conn.get(), deadline);
  if (!hello.ok()) {
    MM_LOG(WARNING) << "peer connection refused: " << hello.status();
    (void)peer::SendHelloAck(conn.get(), hello.status(), 0, deadline);
    return;
  }
  auto session = sessions_->FindDestination(hello->session_id);
  if (!session.ok()) {
    MM_LOG(WARNING) << "peer connection for device " << hello->device << " of session '"
                    << hello->session_id << "' refused: " << session.status();
    (void)peer::SendHelloAck(conn.get(), session.status(), hello->device, deadline);
    return;
  }
  absl::Status accepted = (*session)->AcceptStream(*hello, std::move(conn), deadline);
  if (!accepted.ok()) {
    MM_LOG(WARNING) << "session " << hello->session_id << ": stream for device " << hello->device
                    << " refused: " << accepted;
  }
}

}  // namespace migmover
