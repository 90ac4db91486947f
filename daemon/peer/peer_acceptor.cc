#include "daemon/peer/peer_acceptor.h"

#include <pthread.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "daemon/base/log.h"
#include "daemon/session/session_secret.h"
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

void PeerAcceptor::Reap(bool all) {
  for (auto it = handshakes_.begin(); it != handshakes_.end();) {
    if (all || (*it)->done.load()) {
      (*it)->thread.join();
      it = handshakes_.erase(it);
    } else {
      ++it;
    }
  }
}

void PeerAcceptor::Serve() {
  pthread_setname_np(pthread_self(), "mm-peer-accept");
  while (!stop_.load()) {
    Reap(false);
    absl::StatusOr<UniqueFd> conn = net::Accept(listen_fd_.get(), absl::Milliseconds(200));
    if (!conn.ok()) {
      if (conn.status().code() != absl::StatusCode::kDeadlineExceeded) {
        MM_LOG(WARNING) << "peer listener: " << conn.status();
      }
      continue;
    }
    if (handshakes_.size() >= kMaxHandshakes) {
      Reap(false);
    }
    if (handshakes_.size() >= kMaxHandshakes) {
      // Refused at once, without waiting on this peer: the listener serves everyone else.
      (void)peer::SendHelloAck(
          conn->get(),
          absl::ResourceExhaustedError(absl::StrCat(
              kMaxHandshakes, " handshakes already pending on this daemon; try again")),
          0, absl::Now());
      MM_LOG(WARNING) << "peer connection refused: " << kMaxHandshakes
                      << " handshakes already pending";
      continue;
    }
    auto h = std::make_unique<Handshake>();
    Handshake* raw = h.get();
    h->thread = std::thread([this, raw, c = std::move(*conn)]() mutable {
      pthread_setname_np(pthread_self(), "mm-peer-hello");
      Handle(std::move(c));
      raw->done = true;
    });
    handshakes_.push_back(std::move(h));
  }
  // Pending HELLO reads see stop_ within a receive slice and return.
  Reap(true);
}

void PeerAcceptor::Handle(UniqueFd conn) {
  const absl::Time deadline = absl::Now() + kHelloDeadline;
  absl::StatusOr<peer::Hello> hello = peer::ReadHello(conn.get(), deadline, &stop_);
  if (!hello.ok()) {
    MM_LOG(WARNING) << "peer connection refused: " << hello.status();
    (void)peer::SendHelloAck(conn.get(), hello.status(), 0, deadline);
    return;
  }
  auto session = sessions_->FindDestination(hello->session_id);
  if (!session.ok()) {
    MM_LOG(WARNING) << "peer connection for device " << hello->device << " of session '"
                    << hello->session_id << "' refused: " << session.status();
    // Whatever the reason, the peer hears what a wrong secret gets (no existence oracle).
    (void)peer::SendHelloAck(conn.get(), UnrecognizedSession(), hello->device, deadline);
    return;
  }
  absl::Status accepted = (*session)->AcceptStream(*hello, std::move(conn), deadline);
  if (!accepted.ok()) {
    MM_LOG(WARNING) << "session " << hello->session_id << ": stream for device " << hello->device
                    << " refused: " << accepted;
  }
}

}  // namespace migmover
