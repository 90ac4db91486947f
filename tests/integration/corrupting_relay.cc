#include "tests/integration/corrupting_relay.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "api/peer_wire.h"
#include "transport/net/socket.h"
#include "transport/peer/frame_codec.h"

namespace migmover::testing {
namespace {

// Blocking until done or the relay shuts the sockets down (which ends both with an error).
bool ReadExact(int fd, uint8_t* p, size_t n) {
  return net::RecvExact(fd, p, n, absl::InfiniteFuture()).ok();
}

bool WriteAll(int fd, const uint8_t* p, size_t n) {
  return net::SendAll(fd, absl::string_view(reinterpret_cast<const char*>(p), n),
                      absl::InfiniteFuture())
      .ok();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CorruptingRelay>> CorruptingRelay::Start(const std::string& target,
                                                                        Mode mode) {
  std::unique_ptr<CorruptingRelay> r(new CorruptingRelay());
  r->target_ = target;
  r->mode_ = mode;
  auto fd = net::TcpListen({"127.0.0.1", 0}, &r->port_);
  if (!fd.ok()) return fd.status();
  r->listen_fd_ = std::move(*fd);
  r->acceptor_ = std::thread([p = r.get()] { p->AcceptLoop(); });
  return r;
}

CorruptingRelay::~CorruptingRelay() {
  stopping_ = true;
  ::shutdown(listen_fd_.get(), SHUT_RDWR);
  acceptor_.join();
  std::vector<std::thread> pumps;
  {
    absl::MutexLock l(&mu_);
    for (UniqueFd& s : sockets_) ::shutdown(s.get(), SHUT_RDWR);
    pumps.swap(pumps_);
  }
  for (std::thread& t : pumps) t.join();
}

std::string CorruptingRelay::address() const { return absl::StrCat("127.0.0.1:", port_); }

void CorruptingRelay::AcceptLoop() {
  auto target = net::ParseHostPort(target_);
  if (!target.ok()) return;
  while (!stopping_.load()) {
    auto in = net::Accept(listen_fd_.get(), absl::Milliseconds(200));
    if (!in.ok()) continue;
    auto out = net::TcpConnect(*target, absl::Seconds(10));
    if (!out.ok()) continue;
    absl::MutexLock l(&mu_);
    const int a = in->get(), b = out->get();
    sockets_.push_back(std::move(*in));
    sockets_.push_back(std::move(*out));
    pumps_.emplace_back([this, a, b] { ForwardFrames(a, b); });
    pumps_.emplace_back([this, a, b] { ForwardBytes(b, a); });
  }
}

void CorruptingRelay::ForwardFrames(int from, int to) {
  std::vector<uint8_t> payload;
  uint8_t hdr[wire::kFrameHeaderSize];
  while (ReadExact(from, hdr, sizeof(hdr))) {
    auto h = peer::DecodeHeader(hdr);
    if (!h.ok()) break;  // Not a frame: stop relaying this connection.
    payload.resize(h->length);
    if (!ReadExact(from, payload.data(), payload.size())) break;
    if (h->type == static_cast<uint8_t>(wire::FrameType::kData) && !payload.empty() &&
        !corrupted_.exchange(true)) {
      payload[0] ^= 0xff;
    }
    if (h->type == static_cast<uint8_t>(wire::FrameType::kEndStream) &&
        mode_ == Mode::kFlipByteAndStripDigest && payload.size() == sizeof(wire::EndStreamPayload)) {
      wire::EndStreamPayload end;
      std::memcpy(&end, payload.data(), sizeof(end));
      end.digest_kind = static_cast<uint32_t>(wire::DigestKind::kNone);
      std::memset(end.digest, 0, sizeof(end.digest));
      std::memcpy(payload.data(), &end, sizeof(end));
      stripped_ = true;
    }
    if (!WriteAll(to, hdr, sizeof(hdr)) || !WriteAll(to, payload.data(), payload.size())) break;
  }
  ::shutdown(to, SHUT_WR);
}

void CorruptingRelay::ForwardBytes(int from, int to) {
  uint8_t buf[4096];
  while (true) {
    ssize_t n = ::recv(from, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !WriteAll(to, buf, n)) break;
  }
  ::shutdown(to, SHUT_WR);
}

}  // namespace migmover::testing
