// TlsRelay: userspace TLS for one connection where the kernel has no TLS. The data plane gets
// one end of a unix socketpair and uses it as it would the TCP socket (send, recv, splice,
// io_uring); a thread of the relay's own moves the bytes between the pair's other end and
// OpenSSL over the TCP socket, both ways, with nonblocking I/O. Costlier than kernel TLS (two
// more copies per byte and a thread per connection; bench/README.md has the figures), but the
// data plane is the same code either way.
//
// Ends: the data plane closing (or shutting down for writing) its end sends close_notify and
// ends the TCP direction; the peer's close_notify or TCP end is seen as the end of the data
// plane's reads. An error on either side (a bad record, a reset, the peer's alert) closes both,
// so the data plane sees the failure as it would a broken TCP connection; `on_failure` hears
// why first (the data plane sees only the broken connection).
//
// Threads: one per relay (mm-tls-relay), detached and owning the SSL, the TCP socket and its
// end of the pair: it ends when both directions have ended. Nothing here blocks the caller.
#ifndef MIGMOVER_TRANSPORT_TLS_TLS_RELAY_H_
#define MIGMOVER_TRANSPORT_TLS_TLS_RELAY_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "transport/base/unique_fd.h"

typedef struct ssl_st SSL;

namespace migmover::tls {

// Starts relaying for `ssl` (owned from here, its handshake done) over `tcp`; returns the data
// plane's end. `on_failure` (may be empty) is called on the relay's thread, once, if the
// connection fails rather than ends. Errors: the socketpair's or fcntl's (then `ssl` and `tcp`
// are freed and closed).
absl::StatusOr<UniqueFd> StartTlsRelay(SSL* ssl, UniqueFd tcp,
                                       std::function<void(const std::string&)> on_failure);

// Relays now running in this process (tests check none outlives its connection).
int RunningTlsRelays();

}  // namespace migmover::tls

#endif  // MIGMOVER_TRANSPORT_TLS_TLS_RELAY_H_
