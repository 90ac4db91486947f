// Socket set-up and the blocking control-frame I/O around the data plane. Every call returns a
// Status naming the call, its arguments and errno.
#ifndef MIGMOVER_TRANSPORT_NET_SOCKET_H_
#define MIGMOVER_TRANSPORT_NET_SOCKET_H_

#include <atomic>
#include <cstdint>
#include <string>

#include <sys/types.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "transport/base/unique_fd.h"

namespace migmover::net {

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

// "127.0.0.1:7000", "[::1]:7000", "localhost:7000". InvalidArgument on anything else.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text);

// A listening TCP socket (SO_REUSEADDR, CLOEXEC). Port 0 picks a free port; `bound_port`
// (optional) receives the port actually bound.
absl::StatusOr<UniqueFd> TcpListen(const HostPort& addr, uint16_t* bound_port = nullptr);

// Connects within `timeout`. The socket is returned in blocking mode with TCP_NODELAY.
absl::StatusOr<UniqueFd> TcpConnect(const HostPort& addr, absl::Duration timeout);

// accept4 with CLOEXEC, waiting at most `timeout`. DeadlineExceeded when nobody came.
absl::StatusOr<UniqueFd> Accept(int listen_fd, absl::Duration timeout);

// A listening AF_UNIX stream socket at `path` (an existing socket file there is replaced) whose
// file has mode `mode` (permission bits only) and never more, at no moment, whatever the umask:
// the socket's inode gets the mode before bind creates the file. Errors: the calls', named.
absl::StatusOr<UniqueFd> UnixListen(const std::string& path, mode_t mode = 0660);
absl::StatusOr<UniqueFd> UnixConnect(const std::string& path);

// Sizes the kernel buffers of a data connection and bounds how long its peer may stay silent:
// with `peer_timeout` > 0, data (or a keepalive probe, sent every second while the connection is
// idle) unacknowledged for that long, or a receive window held shut that long, fails the
// connection with ETIMEDOUT (TCP_USER_TIMEOUT), so a cut without a reset is noticed within it in
// every phase. 0 leaves the kernel's keepalive defaults. A non-empty `congestion` sets the TCP
// congestion control (TCP_CONGESTION). Does nothing on a socket that is not TCP (the unix end of
// a userspace TLS relay). Errors: the errno of the call that failed, naming it.
absl::Status TuneDataSocket(int fd, int buffer_bytes, absl::string_view congestion = "",
                            absl::Duration peer_timeout = absl::ZeroDuration());

// What TuneDataSocket sets, as one value: peer connections are tuned on their TCP socket before
// TLS, because under userspace TLS the data plane only ever sees the relay's unix end.
struct SocketTuning {
  int buffer_bytes = 0;              // SO_SNDBUF/SO_RCVBUF; 0: the kernel's autotuning.
  std::string congestion;            // TCP_CONGESTION; empty: the system default.
  absl::Duration peer_timeout = absl::ZeroDuration();
};
inline absl::Status TuneDataSocket(int fd, const SocketTuning& t) {
  return TuneDataSocket(fd, t.buffer_bytes, t.congestion, t.peer_timeout);
}

// Whether `fd` is a TCP socket (IPv4 or IPv6): only those take TuneDataSocket.
bool IsTcp(int fd);

// Sets the TCP congestion control of socket `fd` (TCP_CONGESTION). Errors: the errno, naming it.
absl::Status SetCongestionControl(int fd, absl::string_view name);

// OK if `name` is a TCP congestion control this kernel offers
// (/proc/sys/net/ipv4/tcp_available_congestion_control); InvalidArgument listing them if not.
absl::Status CheckCongestionControl(absl::string_view name);

// Sends all of `data` (MSG_NOSIGNAL), polling in slices so that `cancel` and `deadline` are
// honoured. Errors: the send errno; Cancelled; DeadlineExceeded.
absl::Status SendAll(int fd, absl::string_view data, absl::Time deadline,
                     const std::atomic<bool>* cancel = nullptr);

// Receives exactly `n` bytes. A peer that closes first is Unavailable ("peer closed the
// connection after X of N bytes").
// The peer closed the TCP connection in order (its FIN came), as opposed to a reset or a
// silence: its process closed it. A read returns 0 either way (after a reset, every read but
// the one that said ECONNRESET), so the socket's TCP state tells them apart. False for
// anything but a TCP socket (a userspace TLS relay's plaintext end: its relay's failures end it
// the same way).
bool PeerClosedInOrder(int fd);
// Unavailable, marked as the peer's close in order (IsPeerClosed).
inline constexpr char kPeerClosedPayload[] = "migmover/peer-closed";
absl::Status PeerClosedError(absl::string_view message);
bool IsPeerClosed(const absl::Status& s);

// Errors: PeerClosedError when the peer closed in order before `n` bytes came, Unavailable when
// the connection ended otherwise.
absl::Status RecvExact(int fd, void* buf, size_t n, absl::Time deadline,
                       const std::atomic<bool>* cancel = nullptr);

}  // namespace migmover::net

#endif  // MIGMOVER_TRANSPORT_NET_SOCKET_H_
