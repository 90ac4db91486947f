// PeerAcceptor: the TCP listener for source daemons. It reads each new connection's HELLO
// (bounded in size and time), finds the destination session it names, and hands the
// connection over; an unknown session or a malformed HELLO is refused with HELLO_ACK and closed.
#ifndef MIGMOVER_DAEMON_PEER_PEER_ACCEPTOR_H_
#define MIGMOVER_DAEMON_PEER_PEER_ACCEPTOR_H_

#include <atomic>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "daemon/session/session_manager.h"
#include "transport/net/socket.h"

namespace migmover {

class PeerAcceptor {
 public:
  // Listens on `addr` (port 0: any free port, see port()).
  static absl::StatusOr<std::unique_ptr<PeerAcceptor>> Start(const net::HostPort& addr,
                                                             SessionManager* sessions);
  ~PeerAcceptor();
  uint16_t port() const { return port_; }

 private:
  PeerAcceptor() = default;
  void Serve();
  void Handle(UniqueFd conn);

  SessionManager* sessions_ = nullptr;
  UniqueFd listen_fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_PEER_PEER_ACCEPTOR_H_
