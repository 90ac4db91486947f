#include "tests/faults/delay_line.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/net/socket.h"

namespace migmover::testing {

absl::StatusOr<std::unique_ptr<DelayLine>> DelayLine::Start(const std::string& netns,
                                                            const std::string& host,
                                                            uint16_t target_port,
                                                            absl::Duration delay) {
  std::unique_ptr<DelayLine> d(new DelayLine(host, target_port, delay));
  // The acceptor thread enters the namespace (setns is per thread): sockets it makes live there.
  absl::Status started;
  absl::Notification ready;
  DelayLine* self = d.get();
  d->acceptor_ = std::thread([self, netns, &started, &ready] {
    const std::string path = "/var/run/netns/" + netns;
    UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid()) {
      started = ErrnoStatus(absl::StrCat("open(", path, ")"), errno);
    } else if (::setns(ns.get(), CLONE_NEWNET) != 0) {
      started = ErrnoStatus(absl::StrCat("setns(", path, ")"), errno);
    }
    absl::StatusOr<UniqueFd> listener;
    if (started.ok()) {
      listener = net::TcpListen(net::HostPort{self->host_, 0}, &self->port_);
      if (!listener.ok()) started = listener.status();
    }
    const bool ok = started.ok();  // `started` is the caller's: not read after the notify.
    ready.Notify();
    if (ok) self->Accept(std::move(*listener));
  });
  ready.WaitForNotification();
  if (!started.ok()) return started;
  return d;
}

DelayLine::~DelayLine() {
  stop_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> pumps;
  {
    absl::MutexLock l(&mu_);
    pumps.swap(pumps_);
  }
  for (std::thread& t : pumps) t.join();
}

void DelayLine::Accept(UniqueFd listener) {
  while (!stop_.load()) {
    pollfd p{listener.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    UniqueFd in(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!in.valid()) continue;
    absl::StatusOr<UniqueFd> out =
        net::TcpConnect(net::HostPort{host_, target_port_}, absl::Seconds(5));
    if (!out.ok()) continue;  // `in` closes: the source sees the refusal as a reset.
    const int a = in.get(), b = out->get();
    absl::MutexLock l(&mu_);
    fds_.push_back(std::move(in));
    fds_.push_back(std::move(*out));
    pumps_.emplace_back([this, a, b] { Pump(a, b); });
    pumps_.emplace_back([this, a, b] { Pump(b, a); });
  }
}

void DelayLine::Pump(int in, int out) {
  struct Piece {
    absl::Time due;
    std::string bytes;
  };
  std::deque<Piece> line;
  size_t queued = 0;
  bool ended = false;
  char buf[64 << 10];
  while (!stop_.load()) {
    const absl::Time now = absl::Now();
    while (!line.empty() && line.front().due <= now) {
      // Blocking: a receiver that does not read holds this direction back, as a link would.
      if (!net::SendAll(out, line.front().bytes, absl::Now() + absl::Seconds(30), &stop_).ok()) {
        ::shutdown(in, SHUT_RDWR);
        return;
      }
      queued -= line.front().bytes.size();
      line.pop_front();
    }
    if (ended && line.empty()) {
      ::shutdown(out, SHUT_WR);
      return;
    }
    int timeout_ms = 100;
    if (!line.empty()) {
      timeout_ms = static_cast<int>(
          absl::ToInt64Milliseconds(std::max(line.front().due - now, absl::ZeroDuration())) + 1);
    }
    // At most 16 MiB in the line: beyond that the sender waits, as on a link with that much
    // in flight.
    pollfd p{in, static_cast<int16_t>(ended || queued > (16u << 20) ? 0 : POLLIN), 0};
    if (::poll(&p, 1, std::min(timeout_ms, 100)) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) {
      continue;
    }
    const ssize_t n = ::recv(in, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      line.push_back(Piece{absl::Now() + delay_, std::string(buf, static_cast<size_t>(n))});
      queued += static_cast<size_t>(n);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      ended = true;
    }
  }
}

}  // namespace migmover::testing
