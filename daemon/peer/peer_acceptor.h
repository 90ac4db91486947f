// PeerAcceptor: the TCP listener for source daemons. Each new connection gets a handshake
// thread of its own: it reads the HELLO (bounded in size, and in time by kHelloDeadline), finds
// the destination session it names, and hands the connection over; an unknown session or a
// malformed HELLO is refused with HELLO_ACK and closed. Handshakes run concurrently, so a silent
// or slow connection delays nobody else; at most kMaxHandshakes are served at once, and a
// connection beyond that is refused at once (ResourceExhausted) instead of queueing.
//
// Threads: Start and the destructor from the owner; the listener thread (mm-peer-accept) and
// the handshake threads (mm-peer-hello) are the acceptor's own. Only the listener thread starts,
// counts and joins handshake threads (so no lock); the destructor stops accepting, cuts pending
// HELLO reads short and joins the listener, which joins every handshake thread.
#ifndef MIGMOVER_DAEMON_PEER_PEER_ACCEPTOR_H_
#define MIGMOVER_DAEMON_PEER_PEER_ACCEPTOR_H_

#include <atomic>
#include <list>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "daemon/session/session_manager.h"
#include "transport/net/socket.h"

namespace migmover {

class PeerAcceptor {
 public:
  // A connection must complete its HELLO (and be answered) within this long.
  static constexpr absl::Duration kHelloDeadline = absl::Seconds(5);
  // Handshakes served at once; past this, new connections are refused until one ends.
  static constexpr int kMaxHandshakes = 64;

  // Listens on `addr` (port 0: any free port, see port()). `sessions` must outlive this.
  static absl::StatusOr<std::unique_ptr<PeerAcceptor>> Start(const net::HostPort& addr,
                                                             SessionManager* sessions);
  ~PeerAcceptor();
  uint16_t port() const { return port_; }

 private:
  PeerAcceptor() = default;
  struct Handshake {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void Serve();
  // Joins the handshake threads that have finished (all of them with `all`).
  void Reap(bool all);
  // One connection's handshake, on its own thread.
  void Handle(UniqueFd conn);

  SessionManager* sessions_ = nullptr;
  UniqueFd listen_fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::list<std::unique_ptr<Handshake>> handshakes_;  // The listener thread's only.
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_PEER_PEER_ACCEPTOR_H_
