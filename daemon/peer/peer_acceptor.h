// PeerAcceptor: the TCP listener for source daemons. Each new connection gets a handshake
// thread of its own: it reads the HELLO (bounded in size, and in time by kHelloDeadline), finds
// the destination session it names, and hands the connection over; an unknown session or a
// malformed HELLO is refused with HELLO_ACK and closed. Handshakes run concurrently, so a silent
// or slow connection delays nobody else. At most kMaxHandshakes are served at once; a new
// connection beyond that does not wait and is not refused: it takes the place of a connection
// that has not completed its HELLO, the oldest one from the address holding the most such
// places. A real source says HELLO within a round trip of connecting, so connections that never
// speak (a flood, half-open sockets) cannot keep it out; they are what gets cut.
//
// Threads: Start and the destructor from the owner; the listener thread (mm-peer-accept) and
// the handshake threads (mm-peer-hello) are the acceptor's own. Only the listener thread starts,
// counts, evicts and joins handshake threads; a handshake's `mu` orders an eviction against its
// thread leaving the HELLO read (after which its fd is no longer the listener's to cut). The
// destructor stops accepting, cuts pending HELLO reads short and joins the listener, which joins
// every handshake thread.
#ifndef MIGMOVER_DAEMON_PEER_PEER_ACCEPTOR_H_
#define MIGMOVER_DAEMON_PEER_PEER_ACCEPTOR_H_

#include <atomic>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/session/session_manager.h"
#include "transport/net/socket.h"
#include "transport/tls/tls_context.h"

namespace migmover {

class PeerAcceptor {
 public:
  // A connection must complete its HELLO (and be answered) within this long.
  static constexpr absl::Duration kHelloDeadline = absl::Seconds(5);
  // Handshakes served at once; past this, a new connection evicts one still silent.
  static constexpr int kMaxHandshakes = 64;

  // Listens on `addr` (port 0: any free port, see port()). `sessions` must outlive this. With
  // `tls`, every connection runs the TLS handshake (as the server) before its HELLO, within the
  // same deadline; null: plaintext, by the operator's explicit choice. `tuning` is set on each
  // accepted TCP socket (net::TuneDataSocket) before TLS: the daemon's socket buffer size,
  // --tcp_congestion and peer timeout then hold under a userspace relay too.
  static absl::StatusOr<std::unique_ptr<PeerAcceptor>> Start(
      const net::HostPort& addr, SessionManager* sessions,
      std::shared_ptr<const tls::TlsContext> tls = nullptr, net::SocketTuning tuning = {});
  ~PeerAcceptor();
  uint16_t port() const { return port_; }

 private:
  PeerAcceptor() = default;
  struct Handshake {
    std::thread thread;
    std::atomic<bool> done{false};
    std::string host;  // The peer's address, without its port.
    absl::Time start;
    absl::Mutex mu;
    // Still in TLS or reading the HELLO: the listener may cut the connection to make room,
    // through `cut_fd`, a duplicate of the accepted socket (valid whoever closes the original
    // meanwhile: the TLS relay, or a failed handshake), closed once reading ends.
    bool reading ABSL_GUARDED_BY(mu) = true;
    UniqueFd cut_fd ABSL_GUARDED_BY(mu);
    bool evicted ABSL_GUARDED_BY(mu) = false;
  };
  void Serve();
  // Joins the handshake threads that have finished (all of them with `all`).
  void Reap(bool all);
  // Cuts the HELLO read of one silent handshake (see above). False if none is silent.
  bool EvictOne();
  // One connection's handshake, on its own thread.
  void Handle(Handshake* h, UniqueFd conn);

  SessionManager* sessions_ = nullptr;
  std::shared_ptr<const tls::TlsContext> tls_;
  net::SocketTuning tuning_;
  UniqueFd listen_fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::list<std::unique_ptr<Handshake>> handshakes_;  // The listener thread's only.
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_PEER_PEER_ACCEPTOR_H_
