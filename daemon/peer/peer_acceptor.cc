#include "daemon/peer/peer_acceptor.h"

#include <pthread.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/base/log.h"
#include "daemon/session/session_secret.h"
#include "transport/base/status_macros.h"
#include "transport/peer/handshake.h"
#include "transport/peer/peer_connect.h"

namespace migmover {

absl::StatusOr<std::unique_ptr<PeerAcceptor>> PeerAcceptor::Start(
    const net::HostPort& addr, SessionManager* sessions,
    std::shared_ptr<const tls::TlsContext> tls, net::SocketTuning tuning) {
  std::unique_ptr<PeerAcceptor> a(new PeerAcceptor());
  a->sessions_ = sessions;
  a->tls_ = std::move(tls);
  a->tuning_ = std::move(tuning);
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

namespace {

// The peer's address without its port ("10.0.0.7"), or "?" if the socket cannot tell.
std::string PeerHost(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, buf, sizeof(buf));
  } else if (ss.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof(buf));
  }
  return buf;
}

}  // namespace

bool PeerAcceptor::EvictOne() {
  // Silent handshakes per address; the victim is the oldest of the address holding the most.
  std::map<std::string, int> silent;
  std::vector<Handshake*> candidates;
  for (auto& h : handshakes_) {
    if (h->done.load()) continue;
    absl::MutexLock l(&h->mu);
    if (!h->reading || h->evicted) continue;
    ++silent[h->host];
    candidates.push_back(h.get());
  }
  Handshake* victim = nullptr;
  for (Handshake* h : candidates) {
    if (victim == nullptr || silent[h->host] > silent[victim->host] ||
        (silent[h->host] == silent[victim->host] && h->start < victim->start)) {
      victim = h;
    }
  }
  if (victim == nullptr) return false;
  absl::MutexLock l(&victim->mu);
  if (!victim->reading) return false;  // It finished its HELLO meanwhile; the next turn retries.
  victim->evicted = true;
  // Its handshake or HELLO read fails at once; the thread then ends and the listener joins it.
  ::shutdown(victim->cut_fd.get(), SHUT_RDWR);
  return true;
}

void PeerAcceptor::Serve() {
  pthread_setname_np(pthread_self(), "mm-peer-accept");
  while (!stop_.load()) {
    Reap(false);
    absl::StatusOr<UniqueFd> conn = net::Accept(listen_fd_.get(), absl::Milliseconds(200));
    if (!conn.ok()) {
      if (conn.status().code() != absl::StatusCode::kDeadlineExceeded) {
        MM_LOG(WARNING) << "peer listener: " << conn.status();
        // EMFILE and the like leave the connection queued: do not spin on it.
        absl::SleepFor(absl::Milliseconds(100));
      }
      continue;
    }
    if (handshakes_.size() >= kMaxHandshakes) Reap(false);
    if (handshakes_.size() >= kMaxHandshakes && !EvictOne()) {
      // Every place is taken by a connection past its HELLO: those finish within their
      // deadline; this one is refused rather than kept waiting.
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
    raw->host = PeerHost(conn->get());
    raw->start = absl::Now();
    {
      absl::MutexLock l(&raw->mu);
      raw->cut_fd.Reset(::fcntl(conn->get(), F_DUPFD_CLOEXEC, 0));
    }
    h->thread = std::thread([this, raw, c = std::move(*conn)]() mutable {
      pthread_setname_np(pthread_self(), "mm-peer-hello");
      Handle(raw, std::move(c));
      raw->done = true;
    });
    handshakes_.push_back(std::move(h));
  }
  // Pending HELLO reads see stop_ within a receive slice and return.
  Reap(true);
}

void PeerAcceptor::Handle(Handshake* h, UniqueFd conn) {
  const absl::Time deadline = absl::Now() + kHelloDeadline;
  // TLS first (within the same deadline, and cut like a silent HELLO when the place is needed).
  absl::StatusOr<peer::PeerConnection> secured =
      peer::AcceptPeer(std::move(conn), tls_.get(), deadline, tuning_, &stop_);
  absl::StatusOr<peer::Hello> hello =
      secured.ok() ? peer::ReadHello(secured->fd.get(), deadline, &stop_) : secured.status();
  std::string security;
  bool over_tls = false;
  if (secured.ok()) {
    conn = std::move(secured->fd);
    security = std::move(secured->security);
    over_tls = secured->tls;
    // The proof is checked against this connection's own exporter value.
    if (hello.ok()) hello->binding = secured->binding;
  }
  bool evicted;
  {
    // From here the listener no longer cuts this fd, which may close at any time.
    absl::MutexLock l(&h->mu);
    h->reading = false;
    h->cut_fd.Reset();
    evicted = h->evicted;
  }
  if (evicted) {
    MM_LOG(WARNING) << "peer connection from " << h->host
                    << " cut before its HELLO: its place went to a newer connection ("
                    << kMaxHandshakes << " handshakes pending)";
    return;
  }
  if (!secured.ok()) {
    // Nothing to answer on: the peer failed TLS (or speaks none); OpenSSL sent its alert.
    MM_LOG(WARNING) << "peer connection from " << h->host << " refused: " << secured.status();
    return;
  }
  if (!hello.ok()) {
    (void)peer::SendHelloAck(conn.get(), hello.status(), 0, deadline);
    MM_LOG(WARNING) << "peer connection from " << h->host << " refused: " << hello.status();
    return;
  }
  auto session = sessions_->FindDestination(hello->session_id);
  if (!session.ok()) {
    // The HMAC a real session would cost, so the answer's timing says nothing either.
    (void)hello->ProofValid(peer::SessionSecretBytes{});
    // Whatever the reason, the peer hears what a wrong secret gets (no existence oracle), and
    // as soon (the log line comes after, as it does for a wrong secret).
    (void)peer::SendHelloAck(conn.get(), UnrecognizedSession(), hello->device, deadline);
    MM_LOG(WARNING) << "peer connection from " << h->host << " for device " << hello->device
                    << " of session '" << hello->session_id << "' refused: " << session.status();
    return;
  }
  absl::Status accepted = (*session)->AcceptStream(*hello, std::move(conn), security, over_tls, deadline);
  if (!accepted.ok()) {
    MM_LOG(WARNING) << "session " << hello->session_id << ": stream for device " << hello->device
                    << " from " << h->host << " refused: " << accepted;
  }
}

}  // namespace migmover
