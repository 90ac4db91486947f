#include "transport/tls/tls_relay.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "transport/base/errno_status.h"
#include "transport/tls/tls_context.h"

namespace migmover::tls {
namespace {

std::atomic<int> g_running{0};

constexpr size_t kBuffer = 256 * 1024;  // Per direction; TLS records are at most 16 KiB.

class Relay {
 public:
  Relay(SSL* ssl, UniqueFd tcp, UniqueFd local,
        std::function<void(const std::string&)> on_failure)
      : ssl_(ssl), tcp_(std::move(tcp)), local_(std::move(local)),
        on_failure_(std::move(on_failure)), up_(kBuffer), down_(kBuffer) {}
  ~Relay() { SSL_free(ssl_); }

  void Run() {
    pthread_setname_np(pthread_self(), "mm-tls-relay");
    std::string why = Loop();
    if (!why.empty()) {
      // Heard first, so whoever sees the broken connection can already ask why.
      if (on_failure_) on_failure_(why);
      // Both ends go at once: the data plane sees a broken connection, as with plain TCP.
      ::shutdown(tcp_.get(), SHUT_RDWR);
      ::shutdown(local_.get(), SHUT_RDWR);
    }
  }

 private:
  // Returns "" when both directions ended cleanly, else why the connection failed.
  std::string Loop() {
    bool local_eof = false, tls_eof = false, sent_close = false, local_shut = false;
    size_t up_len = 0, up_off = 0, down_len = 0, down_off = 0;
    while (true) {
      bool progress = false;
      bool tcp_in = false, tcp_out = false, local_in = false, local_out = false;
      // Data plane -> TLS.
      if (!local_eof && up_len == 0) {
        const ssize_t n = ::read(local_.get(), up_.data(), up_.size());
        if (n > 0) {
          up_len = static_cast<size_t>(n);
          up_off = 0;
          progress = true;
        } else if (n == 0) {
          local_eof = true;
          progress = true;
        } else if (errno == EAGAIN || errno == EINTR) {
          local_in = true;
        } else {
          return ErrnoStatus("read(data plane end)", errno).ToString();
        }
      }
      if (up_off < up_len) {
        const int r = SSL_write(ssl_, up_.data() + up_off, static_cast<int>(up_len - up_off));
        if (r > 0) {
          up_off += static_cast<size_t>(r);
          if (up_off == up_len) up_len = up_off = 0;
          progress = true;
        } else {
          const int e = SSL_get_error(ssl_, r);
          if (e == SSL_ERROR_WANT_WRITE) {
            tcp_out = true;
          } else if (e == SSL_ERROR_WANT_READ) {
            tcp_in = true;
          } else {
            // A peer that refused us sends its alert and closes; our write may hit the reset
            // first. The alert is still queued for reading, and says more than the reset.
            const std::string write_failed = absl::StrCat("TLS write: ", Reason(e));
            ERR_clear_error();
            const int rr = SSL_read(ssl_, down_.data(), static_cast<int>(down_.size()));
            if (rr <= 0 && SSL_get_error(ssl_, rr) == SSL_ERROR_SSL) {
              return absl::StrCat("TLS read: ", Reason(SSL_ERROR_SSL));
            }
            return write_failed;
          }
        }
      }
      if (local_eof && up_len == 0 && !sent_close) {
        (void)SSL_shutdown(ssl_);  // close_notify; the peer's comes on the read side.
        ::shutdown(tcp_.get(), SHUT_WR);
        sent_close = true;
        progress = true;
      }
      // TLS -> data plane.
      if (!tls_eof && down_len == 0) {
        const int r = SSL_read(ssl_, down_.data(), static_cast<int>(down_.size()));
        if (r > 0) {
          down_len = static_cast<size_t>(r);
          down_off = 0;
          progress = true;
        } else {
          const int e = SSL_get_error(ssl_, r);
          if (e == SSL_ERROR_WANT_READ) {
            tcp_in = true;
          } else if (e == SSL_ERROR_WANT_WRITE) {
            tcp_out = true;
          } else if (e == SSL_ERROR_ZERO_RETURN) {
            // close_notify, or the TCP end (SSL_OP_IGNORE_UNEXPECTED_EOF): the data plane's
            // reads end there; a stream cut short is caught by its own framing (END_STREAM).
            tls_eof = true;
            progress = true;
          } else {
            return absl::StrCat("TLS read: ", Reason(e));
          }
        }
      }
      if (down_off < down_len) {
        const ssize_t n =
            ::send(local_.get(), down_.data() + down_off, down_len - down_off, MSG_NOSIGNAL);
        if (n > 0) {
          down_off += static_cast<size_t>(n);
          if (down_off == down_len) down_len = down_off = 0;
          progress = true;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
          local_out = true;
        } else {
          return ErrnoStatus("send(data plane end)", errno).ToString();
        }
      }
      if (tls_eof && down_len == 0 && !local_shut) {
        ::shutdown(local_.get(), SHUT_WR);
        local_shut = true;
        progress = true;
      }
      if (sent_close && local_shut) return "";
      if (progress) continue;
      pollfd p[2] = {{local_.get(), static_cast<short>((local_in ? POLLIN : 0) |
                                                        (local_out ? POLLOUT : 0)),
                      0},
                     {tcp_.get(), static_cast<short>((tcp_in ? POLLIN : 0) |
                                                      (tcp_out ? POLLOUT : 0)),
                      0}};
      if (::poll(p, 2, -1) < 0 && errno != EINTR) return ErrnoStatus("poll", errno).ToString();
      // A hangup or error on either side shows as a failed read or write on the next turn.
    }
  }

  std::string Reason(int ssl_error) {
    if (ssl_error == SSL_ERROR_SYSCALL) {
      return errno != 0 ? ErrnoStatus("TCP", errno).ToString() : "connection ended mid-record";
    }
    return DrainOpenSslErrors();
  }

  SSL* const ssl_;
  UniqueFd tcp_, local_;
  const std::function<void(const std::string&)> on_failure_;
  std::vector<char> up_, down_;
};

}  // namespace

absl::StatusOr<UniqueFd> StartTlsRelay(SSL* ssl, UniqueFd tcp,
                                       std::function<void(const std::string&)> on_failure) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    SSL_free(ssl);
    return ErrnoStatus("socketpair(AF_UNIX, TLS relay)", errno);
  }
  UniqueFd ours(sv[0]), theirs(sv[1]);
  for (int fd : {ours.get(), tcp.get()}) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
      SSL_free(ssl);
      return ErrnoStatus(absl::StrCat("fcntl(fd ", fd, ", O_NONBLOCK)"), errno);
    }
  }
  // Read whole bursts of records per read(2), not a 5-byte header then a body per record: the
  // handshake is over, so nothing waits to move to the kernel (kernel TLS cannot take read-ahead
  // records, which is why only the relay asks for it).
  SSL_set_read_ahead(ssl, 1);
  auto relay = std::make_unique<Relay>(ssl, std::move(tcp), std::move(ours), std::move(on_failure));
  ++g_running;
  std::thread([r = std::move(relay)]() mutable {
    r->Run();
    r.reset();
    --g_running;
  }).detach();
  return theirs;
}

int RunningTlsRelays() { return g_running.load(); }

}  // namespace migmover::tls
