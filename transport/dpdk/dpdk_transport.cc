#include "transport/dpdk/dpdk_transport.h"

#include <sys/random.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"
#include "transport/peer/handshake.h"
#include "transport/peer/peer_connect.h"
#include "transport/peer/heartbeat_connection.h"
#include "transport/dpdk/eal.h"
#include "transport/dpdk/link_stream.h"
#include "transport/dpdk/port.h"
#include "transport/dpdk/port_mux.h"

namespace migmover::dpdk {

struct DpdkTransport::Impl {
  std::unique_ptr<DpdkPort> port;
  std::unique_ptr<PortMux> mux;  // After the port: goes first.

  absl::Status Up(absl::Duration wait) {
    absl::Status up = port->WaitLinkUp(wait);
    if (up.ok()) return up;
    return absl::UnavailableError(absl::StrCat("DPDK port ", port->name(),
                                               " is down: is the peer daemon's port up? (",
                                               up.message(), ")"));
  }

  // A new link's io on the port, and the settings of a session stream on it.
  absl::StatusOr<std::unique_ptr<FrameIo>> Attach(uint64_t link_id, absl::Duration wait) {
    RETURN_IF_ERROR(Up(wait));
    return mux->Attach(link_id, kSessionLinkWindow);
  }
  LinkOptions Link(uint64_t link_id, const stream::StreamOptions& o) const {
    return SessionLinkOptions(link_id, o.idle_timeout, port->frame_capacity());
  }

  LinkStreamOptions StreamOptions(const stream::StreamOptions& o) const {
    LinkStreamOptions l;
    l.chunk_size = o.chunk_size;
    l.idle_timeout = o.idle_timeout;
    l.limiter = o.limiter;
    return l;
  }

  std::string Describe() const {
    const rte_ether_addr mac = port->mac();
    return absl::StrFormat("%s (%02x:%02x:%02x:%02x:%02x:%02x), %d queue(s)", port->name(),
                           mac.addr_bytes[0], mac.addr_bytes[1], mac.addr_bytes[2],
                           mac.addr_bytes[3], mac.addr_bytes[4], mac.addr_bytes[5],
                           port->queues());
  }

  // A fresh random link id (never 0) whose queue is `spread` mod the port's queues: devices
  // 0, 1, 2, ... of a session land on different queues.
  uint32_t NewLinkId(uint32_t spread) const {
    const uint32_t queues = port->queues();
    uint32_t id = 0;
    while (id == 0) {
      uint32_t r = 0;
      if (::getrandom(&r, sizeof(r), 0) != sizeof(r)) continue;
      id = r - r % queues + spread % queues;
    }
    return id;
  }
};

absl::StatusOr<std::unique_ptr<DpdkTransport>> DpdkTransport::Start(
    const DpdkTransportOptions& options) {
  EalOptions eal;
  eal.memory_mb = options.memory_mb;
  eal.no_huge = !options.hugepages;
  RETURN_IF_ERROR(InitEal(eal));
  auto impl = std::make_unique<Impl>();
  // Most of DPDK's memory goes to frame buffers: a power of two minus one (what DPDK's pools
  // size best), between 1023 and 16383.
  const uint64_t frame = DpdkPort::BufferRoomFor(options.devargs, options.frame_size) + 512;
  const uint64_t fit = (static_cast<uint64_t>(options.memory_mb) << 20) * 3 / 5 / frame;
  uint32_t buffers = 1023;
  while (buffers < 16383 && (buffers * 2 + 1) <= fit) buffers = buffers * 2 + 1;
  ASSIGN_OR_RETURN(impl->port, DpdkPort::Open({.devargs = options.devargs,
                                               .queues = options.queues,
                                               .buffers = buffers,
                                               .frame_capacity = options.frame_size}));
  impl->mux = std::make_unique<PortMux>(impl->port.get());
  return std::unique_ptr<DpdkTransport>(new DpdkTransport(std::move(impl)));
}

DpdkTransport::DpdkTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DpdkTransport::~DpdkTransport() = default;

namespace {

// A link's frames do not travel on the HELLO connection, but their keys come from it.
std::string LinkSecurity(const std::string& hello_connection, bool tls) {
  return absl::StrCat("DPDK link frames sealed (ChaCha20-Poly1305, keys from ",
                      tls ? "the HELLO connection's TLS handshake" : "the session secret",
                      "); HELLO connection ", hello_connection);
}

}  // namespace

class DpdkTransport::Source final : public transport::SourceChannel {
 public:
  Source(Impl* impl, const transport::SessionSpec& spec) : impl_(impl), spec_(spec) {}

  absl::StatusOr<std::unique_ptr<transport::DeviceStreamSender>> Open(
      uint32_t device, absl::Duration timeout) override {
    peer::Hello hello;
    hello.session_id = spec_.session_id;
    hello.device = device;
    hello.device_count = spec_.device_count;
    hello.token = spec_.token;
    ASSIGN_OR_RETURN(hello.nonce, peer::NewHelloNonce());
    hello.link = impl_->NewLinkId(device);
    // The link first (it may wait for the port to come up): the destination gives a connection
    // only a few seconds to say HELLO.
    ASSIGN_OR_RETURN(std::unique_ptr<FrameIo> io, impl_->Attach(hello.link, absl::Seconds(10)));
    ASSIGN_OR_RETURN(std::unique_ptr<LinkStreamSender> sender,
                     LinkStreamSender::Create(std::move(io), impl_->Link(hello.link, spec_.stream),
                                              device, impl_->StreamOptions(spec_.stream)));
    const absl::Time deadline = absl::Now() + timeout;
    // The HELLO connection runs the daemons' TLS like any other; the link's keys come from it.
    ASSIGN_OR_RETURN(peer::PeerConnection conn,
                     peer::ConnectPeer(spec_.peer, timeout, spec_.tls.get(),
                                       {.peer_timeout = spec_.stream.peer_timeout}));
    hello.binding = conn.binding;
    RETURN_IF_ERROR(
        conn.Explain(net::SendAll(conn.fd.get(), peer::EncodeHello(0, hello), deadline)));
    RETURN_IF_ERROR(conn.Explain(peer::AwaitHelloAck(conn.fd.get(), deadline)));
    sender->set_security(LinkSecurity(conn.security, conn.tls));
    ASSIGN_OR_RETURN(peer::StreamKeys keys,
                     peer::DeriveStreamKeys(spec_.token, hello.nonce, spec_.session_id, device));
    ASSIGN_OR_RETURN(peer::LinkKeys link_keys,
                     peer::DeriveLinkKeys(spec_.token, hello.binding, hello.nonce,
                                          spec_.session_id, device));
    RETURN_IF_ERROR(sender->Protect(keys, link_keys));
    sender->WatchPeerConnection(std::move(conn.fd));
    return std::unique_ptr<transport::DeviceStreamSender>(std::move(sender));
  }

  absl::StatusOr<std::unique_ptr<transport::HeartbeatLink>> OpenHeartbeat(
      absl::Duration timeout) override {
    // The heartbeat goes over TCP to the peer listener, as every HELLO does: it checks the
    // daemons, not the port.
    return peer::OpenHeartbeat(spec_, timeout);
  }

  std::string Describe() const override {
    return absl::StrCat(spec_.peer.host, ":", spec_.peer.port, " over DPDK port ",
                        impl_->Describe());
  }

 private:
  Impl* const impl_;
  const transport::SessionSpec spec_;
};

class DpdkTransport::Destination final : public transport::DestinationChannel {
 public:
  Destination(Impl* impl, const transport::SessionSpec& spec)
      : impl_(impl), spec_(spec), taken_(spec.device_count, false) {}

  absl::StatusOr<std::unique_ptr<transport::DeviceStreamReceiver>> Accept(
      const peer::Hello& hello, UniqueFd connection, const std::string& security, bool tls,
      absl::Time deadline) override {
    absl::StatusOr<std::unique_ptr<LinkStreamReceiver>> receiver =
        absl::InvalidArgumentError(absl::StrCat(
            "device ", hello.device, ": a DPDK link carries a stream whole, not in ",
            hello.stream_count, " stripes"));
    bool took = false;  // This HELLO holds the device's one link while it is answered.
    if (hello.stream_count == 1) {
      absl::MutexLock l(&mu_);
      if (taken_[hello.device]) {
        receiver = absl::AlreadyExistsError(
            absl::StrCat("device ", hello.device, " already has a DPDK link"));
      } else {
        taken_[hello.device] = took = true;
      }
    }
    if (took) {
      // Attached before the answer, so the link's first frames find their queue. The HELLO
      // connection stays open while the stream runs: watched, it tells at once when the
      // source is gone.
      receiver = [&]() -> absl::StatusOr<std::unique_ptr<LinkStreamReceiver>> {
        ASSIGN_OR_RETURN(std::unique_ptr<FrameIo> io,
                         impl_->Attach(hello.link, absl::Seconds(2)));
        LinkStreamOptions so = impl_->StreamOptions(spec_.stream);
        so.peer_connection_fd = connection.get();
        ASSIGN_OR_RETURN(std::unique_ptr<LinkStreamReceiver> r,
                         LinkStreamReceiver::Create(std::move(io),
                                                    impl_->Link(hello.link, spec_.stream),
                                                    hello.device, so));
        // Keyed before the answer: a stream the source is told to send is one we can check.
        ASSIGN_OR_RETURN(peer::StreamKeys keys, peer::DeriveStreamKeys(spec_.token, hello.nonce,
                                                                       spec_.session_id,
                                                                       hello.device));
        ASSIGN_OR_RETURN(peer::LinkKeys link_keys,
                         peer::DeriveLinkKeys(spec_.token, hello.binding, hello.nonce,
                                              spec_.session_id, hello.device));
        RETURN_IF_ERROR(r->Protect(keys, link_keys));
        return r;
      }();
    }
    absl::Status acked =
        peer::SendHelloAck(connection.get(), receiver.status(), hello.device, deadline);
    if (took && (!receiver.ok() || !acked.ok())) {
      absl::MutexLock l(&mu_);
      taken_[hello.device] = false;  // The source may try again.
    }
    if (!receiver.ok()) return receiver.status();
    if (!acked.ok()) return acked;
    (*receiver)->set_security(LinkSecurity(security, tls));
    (*receiver)->OwnPeerConnection(std::move(connection));
    return std::unique_ptr<transport::DeviceStreamReceiver>(std::move(*receiver));
  }

  void DropPending() override {}  // A link's stream is whole from its one HELLO.

 private:
  Impl* const impl_;
  const transport::SessionSpec spec_;
  absl::Mutex mu_;
  std::vector<bool> taken_ ABSL_GUARDED_BY(mu_);  // By device: a link was (being) accepted.
};

absl::StatusOr<std::unique_ptr<transport::SourceChannel>> DpdkTransport::StartSource(
    const transport::SessionSpec& spec) {
  if (spec.streams > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a DPDK link carries each device's stream whole: streams must be 1, not ", spec.streams));
  }
  return std::unique_ptr<transport::SourceChannel>(new Source(impl_.get(), spec));
}

absl::StatusOr<std::unique_ptr<transport::DestinationChannel>> DpdkTransport::StartDestination(
    const transport::SessionSpec& spec) {
  return std::unique_ptr<transport::DestinationChannel>(new Destination(impl_.get(), spec));
}

std::string DpdkTransport::Describe() const { return impl_->Describe(); }

}  // namespace migmover::dpdk
