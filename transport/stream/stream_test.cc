// Sender and receiver over a real TCP connection on loopback, each on its own thread with its
// own IoQueue, moving pipe-backed streams byte-exact over both data paths. The queues are
// io_uring's, or plain syscalls' when MIGMOVER_TEST_IO_ENGINE=syscalls (the stream_test_syscalls
// target): every test here holds on both engines.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <future>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "transport/io/io_queue_factory.h"
#include "transport/net/socket.h"
#include "transport/peer/frame_codec.h"
#include "transport/peer/handshake.h"
#include "transport/stream/pump_worker.h"
#include "transport/stream/send_stream.h"
#include "transport/stream/stream_errors.h"
#include "transport/stream/stream_receiver.h"
#include "transport/stream/stream_sender.h"

namespace migmover::stream {
namespace {

using wire::Phase;

io::IoEngine TestEngine() {
  const char* e = ::getenv("MIGMOVER_TEST_IO_ENGINE");
  return e != nullptr && std::string(e) == "syscalls" ? io::IoEngine::kSyscalls
                                                      : io::IoEngine::kUring;
}

absl::StatusOr<std::unique_ptr<io::IoQueue>> NewQueue(unsigned entries) {
  return io::CreateIoQueue(TestEngine(), entries);
}

struct Conn {
  UniqueFd src, dst;
};

Conn Connect() {
  uint16_t port = 0;
  auto lfd = net::TcpListen({"127.0.0.1", 0}, &port);
  EXPECT_TRUE(lfd.ok()) << lfd.status();
  auto src = net::TcpConnect({"127.0.0.1", port}, absl::Seconds(5));
  EXPECT_TRUE(src.ok()) << src.status();
  auto dst = net::Accept(lfd->get(), absl::Seconds(5));
  EXPECT_TRUE(dst.ok()) << dst.status();
  return {std::move(*src), std::move(*dst)};
}

// What a middlebox's reset or a lost link looks like to both ends: the connection of `fd` (any
// descriptor of it) is reset (connect(AF_UNSPEC) disconnects a TCP socket with an RST), so the
// peer's next call fails with ECONNRESET and this end's with ENOTCONN or EPIPE. Not a close in
// order: a FIN is the peer process's own end of the stream, which is never resumed.
void ResetConnection(int fd) {
  sockaddr unspec{};
  unspec.sa_family = AF_UNSPEC;
  ASSERT_EQ(::connect(fd, &unspec, sizeof(unspec)), 0) << "connect(AF_UNSPEC): " << errno;
}

// Resets the connection of `fd` once the peer's kernel has every byte sent on it (a reset drops
// what is still queued at the sender).
void ResetWhenDelivered(int fd) {
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  int queued = 0;
  while (::ioctl(fd, TIOCOUTQ, &queued) == 0 && queued > 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ResetConnection(fd);
}

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

void WriteAllBlocking(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EAGAIN) {
      usleep(100);
      continue;
    }
    // The sender stopped reading (a test where it fails): the rest never goes anywhere.
    if (w < 0 && errno == EPIPE) return;
    ASSERT_GT(w, 0) << strerror(errno);
    p += w;
    n -= w;
  }
}

struct Outcome {
  absl::Status sender = absl::OkStatus();
  absl::Status receiver = absl::OkStatus();
  std::vector<uint8_t> received;
  ReceiveResult result;
  DataPath sender_path = DataPath::kAuto, receiver_path = DataPath::kAuto;
  bool sender_digest = false;
  uint64_t sender_bytes = 0;        // Stream bytes the sender got out.
  uint64_t acks_before_commit = 0;  // ACKs the sender took while it streamed.
  uint64_t acked = 0;               // What the last one said (all, after COMMIT(0)).
};

// Both ends' protection: the same digest key, and whether TLS is taken to carry the
// connections (`tls`: these socketpairs have none, but every path may then run, as under TLS).
StreamProtection Protection(bool tls) {
  StreamProtection p;
  peer::SessionSecretBytes secret;
  secret.fill(0x42);
  peer::HelloNonce nonce;
  nonce.fill(0x17);
  p.keys = *peer::DeriveStreamKeys(secret, nonce, "test", 0);
  p.aead = tls;
  return p;
}

// Moves `data` (the first `precopy` bytes as a PRE_COPY phase) from a pipe through a sender
// and a receiver over `n` striped connections into another pipe.
Outcome MoveStriped(const std::vector<uint8_t>& data, size_t precopy, int n, StreamOptions so,
                    StreamOptions ro, bool nonblocking_fds = false, PumpWorker* worker = nullptr,
                    PumpWorker* receive_worker = nullptr, bool tls = true) {
  ::signal(SIGPIPE, SIG_IGN);
  Outcome out;
  std::vector<UniqueFd> src, dst;
  for (int i = 0; i < n; ++i) {
    Conn c = Connect();
    src.push_back(std::move(c.src));
    dst.push_back(std::move(c.dst));
  }
  auto src_pipe = MakePipe(nonblocking_fds ? O_NONBLOCK : 0);
  auto dst_pipe = MakePipe(nonblocking_fds ? O_NONBLOCK : 0);
  std::atomic<bool> stop{false}, cancel{false};
  std::thread feeder([&] {
    WriteAllBlocking(src_pipe->write.get(), data.data(), data.size());
    src_pipe->write.Reset();
  });
  std::thread drain([&] {
    std::vector<uint8_t> buf(1 << 16);
    while (true) {
      ssize_t r = ::read(dst_pipe->read.get(), buf.data(), buf.size());
      if (r > 0) {
        out.received.insert(out.received.end(), buf.data(), buf.data() + r);
      } else if (r < 0 && errno == EAGAIN) {
        usleep(100);
      } else {
        return;
      }
    }
  });
  std::thread source([&] {
    auto ring = NewQueue(64);
    ASSERT_TRUE(ring.ok()) << ring.status();
    auto sender = StreamSender::Create(ring->get(), std::move(src), 0, so);
    ASSERT_TRUE(sender.ok()) << sender.status();
    // However the source ends: what it sent.
    struct Tally {
      Outcome& out;
      StreamSender& s;
      ~Tally() { out.sender_bytes = s.bytes_sent(); }
    } tally{out, **sender};
    (*sender)->set_worker(worker, 6 + ReplayFrames(so));
    ASSERT_TRUE((*sender)->Protect(Protection(tls)).ok());
    peer::Hello hello;
    hello.session_id = "test";
    out.sender = (*sender)->Handshake(hello, absl::Seconds(5));
    if (!out.sender.ok()) return;
    if (precopy > 0) {
      auto r = (*sender)->Pump(src_pipe->read.get(), Phase::kPreCopy, precopy, stop, cancel);
      if (!r.ok()) {
        out.sender = r.status();
        return;
      }
      EXPECT_EQ(r->bytes, precopy);
      out.sender = (*sender)->EndPhase(Phase::kPreCopy);
    }
    auto r = (*sender)->Pump(src_pipe->read.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
    if (!r.ok()) {
      out.sender = r.status();
      return;
    }
    EXPECT_EQ(r->end, PumpResult::End::kEof);
    out.sender = (*sender)->EndStream();
    out.acks_before_commit = (*sender)->acks();
    if (out.sender.ok()) out.sender = (*sender)->AwaitCommit(absl::Seconds(10), cancel);
    out.acked = (*sender)->acked_bytes();
    out.sender_path = (*sender)->data_path_used();
    out.sender_digest = (*sender)->digest_valid();
  });
  std::thread dest([&] {
    auto ring = NewQueue(64);
    ASSERT_TRUE(ring.ok());
    for (int i = 0; i < n; ++i) {
      auto hello = peer::ReadHello(dst[i].get(), absl::Now() + absl::Seconds(5));
      ASSERT_TRUE(hello.ok()) << hello.status();
      EXPECT_EQ(hello->stream, i);
      EXPECT_EQ(hello->stream_count, n);
      ASSERT_TRUE(
          peer::SendHelloAck(dst[i].get(), absl::OkStatus(), 0, absl::Now() + absl::Seconds(5))
              .ok());
    }
    auto receiver = StreamReceiver::Create(ring->get(), std::move(dst), 0, ro);
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    (*receiver)->set_worker(receive_worker, 4);
    ASSERT_TRUE((*receiver)->Protect(Protection(tls)).ok());
    auto r = (*receiver)->Receive(dst_pipe->write.get(), cancel);
    out.receiver = r.status();
    if (r.ok()) out.result = *r;
    dst_pipe->write.Reset();
    out.receiver_path = (*receiver)->data_path_used();
    (void)(*receiver)->SendCommit(r.status());
  });
  source.join();
  src_pipe->read.Reset();  // A sender that failed stopped reading: the feeder must not wait.
  dest.join();
  feeder.join();
  drain.join();
  return out;
}

Outcome Move(const std::vector<uint8_t>& data, size_t precopy, StreamOptions so, StreamOptions ro,
             bool nonblocking_fds = false, bool tls = true) {
  return MoveStriped(data, precopy, 1, so, ro, nonblocking_fds, nullptr, nullptr, tls);
}

// END_STREAM for `total` bytes without a digest (a source that spliced).
peer::EndStream NoDigest(uint64_t total) {
  peer::EndStream e;
  e.total_bytes = total;
  return e;
}

// END_STREAM for `total` bytes with a keyed digest that is not theirs.
peer::EndStream WrongDigest(uint64_t total) {
  peer::EndStream e;
  e.total_bytes = total;
  e.digest_kind = wire::DigestKind::kPoly1305;
  e.digest.fill(0x33);
  return e;
}

std::string DataFrame(uint64_t seq, uint64_t offset, const std::string& bytes,
                      uint32_t device = 0, Phase phase = Phase::kStopCopy) {
  wire::FrameHeader h{wire::kFrameMagic,
                      static_cast<uint8_t>(wire::FrameType::kData),
                      static_cast<uint8_t>(phase),
                      0,
                      device,
                      static_cast<uint32_t>(bytes.size()),
                      seq,
                      offset};
  std::string f(sizeof(h), '\0');
  std::memcpy(f.data(), &h, sizeof(h));
  return f + bytes;
}

StreamOptions Opts(DataPath p, uint32_t chunk = 1 << 20) {
  StreamOptions o;
  o.data_path = p;
  o.chunk_size = chunk;
  o.io_engine = TestEngine();
  o.idle_timeout = absl::Seconds(10);
  return o;
}

TEST(StreamTest, CopyPathIsByteExactAndDigestChecked) {
  auto data = RandomBytes(9 << 20 | 12345, 1);
  Outcome o = Move(data, 3 << 20, Opts(DataPath::kCopy), Opts(DataPath::kCopy));
  ASSERT_TRUE(o.sender.ok()) << o.sender;
  ASSERT_TRUE(o.receiver.ok()) << o.receiver;
  EXPECT_EQ(o.received, data);
  EXPECT_TRUE(o.result.digest_checked);
  EXPECT_EQ(o.result.precopy_phases_ended, 1u);
  EXPECT_EQ(o.result.total_bytes, data.size());
  EXPECT_EQ(o.sender_path, DataPath::kCopy);
}

TEST(StreamTest, TheDestinationAcknowledgesWhatItWroteAsTheStreamGoes) {
  // 48 MiB on the copy path, an ACK every 4 MiB written: the sender hears of most of it while
  // it still streams (what is still in the sockets and buffers comes after), and of all of it
  // by the COMMIT.
  const auto data = RandomBytes(48 << 20, 77);
  StreamOptions ro = Opts(DataPath::kCopy, 256 << 10);
  ro.ack_every = 4 << 20;
  Outcome out = Move(data, 0, Opts(DataPath::kCopy, 256 << 10), ro, false, /*tls=*/false);
  ASSERT_TRUE(out.sender.ok()) << out.sender;
  ASSERT_TRUE(out.receiver.ok()) << out.receiver;
  EXPECT_EQ(out.received, data);
  EXPECT_GE(out.acks_before_commit, 4u);
  EXPECT_EQ(out.acked, data.size());
}

TEST(StreamTest, ASenderKeepsNoMoreThanItsReplayBufferUnacknowledged) {
  // A destination that never acknowledges: the sender holds each frame for a resend, and once
  // 2 MiB are out and held it waits (and its no-progress timeout ends it), instead of sending
  // bytes it could not send again.
  const auto data = RandomBytes(16 << 20, 78);
  StreamOptions so = Opts(DataPath::kCopy, 256 << 10);
  so.replay_bytes = 2 << 20;
  so.idle_timeout = absl::Seconds(1);
  StreamOptions ro = Opts(DataPath::kCopy, 256 << 10);
  ro.ack_every = 0;
  Outcome out = Move(data, 0, so, ro, false, /*tls=*/false);
  EXPECT_EQ(out.sender.code(), absl::StatusCode::kDeadlineExceeded) << out.sender;
  EXPECT_NE(out.sender.message().find("waiting on the peer"), absl::string_view::npos)
      << out.sender;
  EXPECT_GT(out.sender_bytes, 0u);
  EXPECT_LE(out.sender_bytes, 2u << 20);
}

TEST(StreamTest, ASmallReplayBufferMovesALongStreamAsAcksFreeIt) {
  // 2 MiB of replay buffer for a 24 MiB stream, ACKs every 512 KiB: one connection, three
  // stripes (whose sends complete out of stream order), and SEND_ZC (buffers the kernel reads
  // until its notification).
  const auto data = RandomBytes(24 << 20, 79);
  StreamOptions so = Opts(DataPath::kCopy, 256 << 10);
  so.replay_bytes = 2 << 20;
  StreamOptions ro = Opts(DataPath::kCopy, 256 << 10);
  ro.ack_every = 512 << 10;
  for (int stripes : {1, 3}) {
    for (bool zc : {false, true}) {
      so.send_zc = zc;
      Outcome out = MoveStriped(data, 4 << 20, stripes, so, ro, false, nullptr, nullptr,
                                /*tls=*/false);
      ASSERT_TRUE(out.sender.ok()) << stripes << " " << zc << ": " << out.sender;
      ASSERT_TRUE(out.receiver.ok()) << stripes << " " << zc << ": " << out.receiver;
      EXPECT_EQ(out.received, data) << stripes << " " << zc;
      EXPECT_EQ(out.acked, data.size());
    }
  }
}

TEST(StreamTest, SendZcCopyPathIsByteExact) {
  auto data = RandomBytes(6 << 20 | 77, 12);
  StreamOptions so = Opts(DataPath::kCopy, 256 << 10);
  so.send_zc = true;
  Outcome o = Move(data, 1 << 20, so, Opts(DataPath::kCopy));
  ASSERT_TRUE(o.sender.ok()) << o.sender;
  ASSERT_TRUE(o.receiver.ok()) << o.receiver;
  EXPECT_EQ(o.received, data);
  EXPECT_TRUE(o.result.digest_checked);
  Outcome striped = MoveStriped(data, 0, 2, so, Opts(DataPath::kCopy));
  ASSERT_TRUE(striped.sender.ok() && striped.receiver.ok()) << striped.sender << striped.receiver;
  EXPECT_EQ(striped.received, data);
}

// Several streams' copy-path pumps share one worker thread and queue on each side, each with
// its own buffers. The splice engine is a job like the copy engine: splice and copy streams share one worker
// thread on each side, none blocking the others, and every stream arrives byte-exact.
TEST(StreamTest, SpliceAndCopyStreamsShareOnePumpWorker) {
  auto worker = PumpWorker::Start(TestEngine());
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto receive_worker = PumpWorker::Start(TestEngine());
  ASSERT_TRUE(receive_worker.ok()) << receive_worker.status();
  std::vector<std::vector<uint8_t>> data = {RandomBytes(5 << 20 | 3, 41),
                                            RandomBytes(4 << 20 | 9, 42), RandomBytes(6 << 20, 43)};
  const DataPath paths[] = {DataPath::kSplice, DataPath::kCopy, DataPath::kSplice};
  std::vector<Outcome> out(data.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < data.size(); ++i) {
    threads.emplace_back([&, i] {
      out[i] = MoveStriped(data[i], i == 2 ? 2 << 20 : 0, 1, Opts(paths[i], 256 << 10),
                           Opts(paths[i], 256 << 10), false, worker->get(),
                           receive_worker->get());
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < data.size(); ++i) {
    ASSERT_TRUE(out[i].sender.ok()) << i << ": " << out[i].sender;
    ASSERT_TRUE(out[i].receiver.ok()) << i << ": " << out[i].receiver;
    EXPECT_EQ(out[i].received, data[i]) << i;
    EXPECT_EQ(out[i].sender_path, paths[i]) << i;
    EXPECT_EQ(out[i].receiver_path, paths[i]) << i;
  }
  // Every pump ran on the workers: one per stream and phase at the source (the third stream
  // has two phases), one receive per stream at the destination.
  EXPECT_EQ((*worker)->jobs_done(), 4u);
  EXPECT_EQ((*receive_worker)->jobs_done(), 3u);
}

TEST(StreamTest, StreamsSharingAPumpWorkerAreByteExact) {
  auto worker = PumpWorker::Start(TestEngine());
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto receive_worker = PumpWorker::Start(TestEngine());
  ASSERT_TRUE(receive_worker.ok()) << receive_worker.status();
  std::vector<std::vector<uint8_t>> data = {RandomBytes(6 << 20 | 11, 31),
                                            RandomBytes(3 << 20 | 5, 32), RandomBytes(5 << 20, 33)};
  std::vector<Outcome> out(data.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < data.size(); ++i) {
    threads.emplace_back([&, i] {
      // The third stream is striped; the receives' frames are smaller than the sender's.
      out[i] = MoveStriped(data[i], i == 0 ? 1 << 20 : 0, i == 2 ? 2 : 1,
                           Opts(DataPath::kCopy, 256 << 10), Opts(DataPath::kCopy, 128 << 10),
                           false, worker->get(), receive_worker->get());
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < data.size(); ++i) {
    ASSERT_TRUE(out[i].sender.ok()) << i << ": " << out[i].sender;
    ASSERT_TRUE(out[i].receiver.ok()) << i << ": " << out[i].receiver;
    EXPECT_EQ(out[i].received, data[i]) << i;
    EXPECT_TRUE(out[i].result.digest_checked) << i;
  }
}

// A worker is shared by every session of a host: a stream whose peer stops reading must not
// hold up another stream on the same worker. Each stream brings its own buffers, so the second
// one never waits for the first's (with buffers owned by the worker, the stalled pump held
// them all and the second stream never started).
TEST(StreamTest, AStalledStreamDoesNotHoldUpAnotherOnTheSameWorker) {
  ::signal(SIGPIPE, SIG_IGN);
  auto worker = PumpWorker::Start(TestEngine());
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto receive_worker = PumpWorker::Start(TestEngine());
  ASSERT_TRUE(receive_worker.ok()) << receive_worker.status();
  // The stalled stream: its destination answers HELLO and then never reads.
  Conn stalled = Connect();
  auto stalled_pipe = MakePipe(0);
  ASSERT_TRUE(stalled_pipe.ok());
  std::atomic<bool> stop{false}, cancel{false};
  std::thread feeder([&] {
    std::vector<uint8_t> block(1 << 20, 0x5a);
    while (!cancel.load()) {
      if (::write(stalled_pipe->write.get(), block.data(), block.size()) < 0) return;
    }
  });
  std::thread hello([&] {
    auto h = peer::ReadHello(stalled.dst.get(), absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE(peer::SendHelloAck(stalled.dst.get(), absl::OkStatus(), 0,
                                   absl::Now() + absl::Seconds(5)).ok());
  });
  absl::Notification stalled_pumping;
  absl::Status stalled_result;
  std::thread stalled_source([&] {
    std::vector<UniqueFd> socks;
    socks.push_back(std::move(stalled.src));
    auto sender = StreamSender::Create(nullptr, std::move(socks), 0,
                                       Opts(DataPath::kCopy, 256 << 10));
    ASSERT_TRUE(sender.ok()) << sender.status();
    (*sender)->set_worker(worker->get(), 8);
    ASSERT_TRUE((*sender)->Protect(Protection(false)).ok());
    peer::Hello h;
    h.session_id = "stalled";
    ASSERT_TRUE((*sender)->Handshake(h, absl::Seconds(5)).ok());
    stalled_pumping.Notify();
    auto r = (*sender)->Pump(stalled_pipe->read.get(), Phase::kStopCopy, UINT64_MAX, stop,
                             cancel);
    stalled_result = r.status();
  });
  hello.join();
  ASSERT_TRUE(stalled_pumping.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // The stalled pump is under way (its first frames wait unread at the destination): it holds
  // its buffers while it is in flight, which is until cancelled.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  int unread = 0;
  while (unread == 0 && absl::Now() < deadline) {
    ASSERT_EQ(::ioctl(stalled.dst.get(), FIONREAD, &unread), 0);
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_GT(unread, 0);
  EXPECT_EQ((*worker)->jobs_done(), 0u);

  auto data = RandomBytes(6 << 20 | 7, 77);
  Outcome moved;
  absl::Notification done;
  std::thread other([&] {
    moved = MoveStriped(data, 0, 1, Opts(DataPath::kCopy, 256 << 10),
                        Opts(DataPath::kCopy, 256 << 10), false, worker->get(),
                        receive_worker->get(), false);
    done.Notify();
  });
  const bool finished = done.WaitForNotificationWithTimeout(absl::Seconds(30));
  cancel = true;
  stalled.dst.Reset();  // Unblocks the stalled pump's sends (EPIPE/reset) in any case.
  other.join();
  stalled_source.join();
  stalled_pipe->read.Reset();
  feeder.join();
  ASSERT_TRUE(finished) << "the second stream waited for the stalled one";
  ASSERT_TRUE(moved.sender.ok()) << moved.sender;
  ASSERT_TRUE(moved.receiver.ok()) << moved.receiver;
  EXPECT_EQ(moved.received, data);
  EXPECT_FALSE(stalled_result.ok());  // Cancelled (or its connection reset), never "done".
}

// A destination that floods its stream's source with ACKs (each well numbered and sealed, so each
// is read and checked) holds up only that stream: the pump worker it shares with another
// stream reads a bounded number of its frames per turn, and the other stream goes on while the
// flood still runs. Reading until the socket had nothing more left the worker in one job for as
// long as the flood lasted.
TEST(StreamTest, AStreamWhoseDestinationFloodsAcksDoesNotHoldUpAnotherOnTheSameWorker) {
  ::signal(SIGPIPE, SIG_IGN);
  auto worker = PumpWorker::Start(TestEngine());
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto receive_worker = PumpWorker::Start(TestEngine());
  ASSERT_TRUE(receive_worker.ok()) << receive_worker.status();
  const StreamProtection protection = Protection(false);
  // Sealed up front, so the flood outruns any reader: 48 bytes a frame.
  constexpr uint64_t kFrames = 1 << 20;
  std::string flood;
  flood.reserve(kFrames * 48);
  for (uint64_t i = 0; i < kFrames; ++i) {
    flood += peer::SealVerdict(peer::EncodeAck(SendStream::kFirstPeerSeq + i, 0, 0),
                               &protection.keys->control);
  }
  Conn flooded = Connect();
  auto flooded_pipe = MakePipe(0);
  ASSERT_TRUE(flooded_pipe.ok());
  std::atomic<bool> stop{false}, cancel{false}, flood_done{false};
  std::thread feeder([&] {
    std::vector<uint8_t> block(1 << 20, 0x5a);
    while (!cancel.load()) {
      if (::write(flooded_pipe->write.get(), block.data(), block.size()) < 0) return;
    }
  });
  absl::Notification flooding;
  std::thread destination([&] {
    auto h = peer::ReadHello(flooded.dst.get(), absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE(peer::SendHelloAck(flooded.dst.get(), absl::OkStatus(), 0,
                                   absl::Now() + absl::Seconds(5)).ok());
    flooding.Notify();
    // Never reads the stream; says ACK(0) again and again until cut.
    (void)net::SendAll(flooded.dst.get(), flood, absl::Now() + absl::Seconds(60));
    flood_done = true;
  });
  absl::Status flooded_result;
  std::thread flooded_source([&] {
    std::vector<UniqueFd> socks;
    socks.push_back(std::move(flooded.src));
    auto sender = StreamSender::Create(nullptr, std::move(socks), 0,
                                       Opts(DataPath::kCopy, 256 << 10));
    ASSERT_TRUE(sender.ok()) << sender.status();
    (*sender)->set_worker(worker->get(), 8);
    ASSERT_TRUE((*sender)->Protect(protection).ok());
    peer::Hello h;
    h.session_id = "flooded";
    ASSERT_TRUE((*sender)->Handshake(h, absl::Seconds(5)).ok());
    auto r = (*sender)->Pump(flooded_pipe->read.get(), Phase::kStopCopy, UINT64_MAX, stop,
                             cancel);
    flooded_result = r.status();
  });
  ASSERT_TRUE(flooding.WaitForNotificationWithTimeout(absl::Seconds(10)));

  auto data = RandomBytes(6 << 20 | 7, 78);
  Outcome moved;
  std::thread other([&] {
    moved = MoveStriped(data, 0, 1, Opts(DataPath::kCopy, 256 << 10),
                        Opts(DataPath::kCopy, 256 << 10), false, worker->get(),
                        receive_worker->get(), false);
  });
  other.join();
  // The other stream is done: the flood must not be (a million checked ACKs take seconds).
  const bool flood_was_running = !flood_done.load();
  cancel = true;
  ::shutdown(flooded.dst.get(), SHUT_RDWR);  // Ends the flood and the flooded pump's sends.
  destination.join();
  flooded_source.join();
  flooded_pipe->read.Reset();
  feeder.join();
  ASSERT_TRUE(moved.sender.ok()) << moved.sender;
  ASSERT_TRUE(moved.receiver.ok()) << moved.receiver;
  EXPECT_EQ(moved.received, data);
  EXPECT_TRUE(flood_was_running) << "the second stream waited for the flooded one's ACKs";
  EXPECT_FALSE(flooded_result.ok());  // Cancelled (or its connection cut), never "done".
}

// A plaintext sender of one connection, past its HELLO (the destination's thread answers it).
absl::StatusOr<std::unique_ptr<StreamSender>> HandshakenSender(UniqueFd sock, uint32_t chunk) {
  std::vector<UniqueFd> socks;
  socks.push_back(std::move(sock));
  auto sender = StreamSender::Create(nullptr, std::move(socks), 0, Opts(DataPath::kCopy, chunk));
  if (!sender.ok()) return sender.status();
  if (absl::Status st = (*sender)->Protect(Protection(false)); !st.ok()) return st;
  peer::Hello h;
  h.session_id = "vmm";
  if (absl::Status st = (*sender)->Handshake(h, absl::Seconds(5)); !st.ok()) return st;
  return sender;
}

// A VMM's stream on a pipe (data-fd mode) goes out in pumps that each run for as long as it
// flows, however small its writes: a pump hands the thread back only when the writer pauses
// (kIdle, for a keepalive; a preempted writer may cause one early) and ends at
// the writer's close (kEof, in PRE_COPY as well: a pipe has no "nothing now" read). A read is
// never left waiting across `stop`: the writer's bytes after it belong to the next pump.
TEST(StreamTest, AStreamFdPumpRunsUntilItsWriterPausesOrEnds) {
  ::signal(SIGPIPE, SIG_IGN);
  Conn c = Connect();
  auto in = MakePipe(0);
  auto out_pipe = MakePipe(0);
  ASSERT_TRUE(in.ok() && out_pipe.ok());
  const std::vector<uint8_t> data = RandomBytes((3 << 20) + 777, 61);
  std::vector<uint8_t> received;
  std::thread drain([&] {
    std::vector<uint8_t> buf(1 << 16);
    ssize_t r;
    while ((r = ::read(out_pipe->read.get(), buf.data(), buf.size())) > 0) {
      received.insert(received.end(), buf.data(), buf.data() + r);
    }
  });
  absl::Status receive_status;
  std::thread dest([&] {
    auto hello = peer::ReadHello(c.dst.get(), absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(hello.ok()) << hello.status();
    ASSERT_TRUE(
        peer::SendHelloAck(c.dst.get(), absl::OkStatus(), 0, absl::Now() + absl::Seconds(5)).ok());
    std::vector<UniqueFd> socks;
    socks.push_back(std::move(c.dst));
    auto receiver = StreamReceiver::Create(nullptr, std::move(socks), 0,
                                           Opts(DataPath::kCopy, 256 << 10));
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    ASSERT_TRUE((*receiver)->Protect(Protection(false)).ok());
    std::atomic<bool> never{false};
    auto r = (*receiver)->Receive(out_pipe->write.get(), never);
    receive_status = r.status();
    out_pipe->write.Reset();
    (void)(*receiver)->SendCommit(r.status());
  });
  auto sender = HandshakenSender(std::move(c.src), 256 << 10);
  ASSERT_TRUE(sender.ok()) << sender.status();
  std::atomic<bool> stop{false}, cancel{false};
  std::atomic<uint64_t> precopy{0};
  const absl::Duration idle = absl::Milliseconds(100);

  // PRE_COPY: 1 MiB in 4 KiB writes, then a pause: the pump moves it as it comes and yields
  // once the writer pauses (a preempted writer may make it yield earlier too).
  std::thread precopy_writer([&] {
    for (size_t off = 0; off < (1 << 20); off += 4096) {
      WriteAllBlocking(in->write.get(), data.data() + off, 4096);
    }
  });
  uint64_t pumped = 0;
  while (pumped < (1u << 20)) {
    auto r = (*sender)->PumpStreamFd(in->read.get(), Phase::kPreCopy, idle, &precopy, stop,
                                     cancel);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->end, PumpResult::End::kIdle);
    pumped += r->bytes;
    EXPECT_EQ(precopy.load(), pumped);  // Counted as it left.
  }
  precopy_writer.join();
  EXPECT_EQ(pumped, 1u << 20);
  // Switchover while the pump waits on the pipe: it ends without taking what comes after.
  std::thread switchover([&] {
    absl::SleepFor(absl::Milliseconds(20));  // Let the pump reach its wait; either way works.
    stop = true;
  });
  auto stopped = (*sender)->PumpStreamFd(in->read.get(), Phase::kPreCopy, absl::Seconds(30),
                                         &precopy, stop, cancel);
  switchover.join();
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->end, PumpResult::End::kStopped);
  EXPECT_EQ(stopped->bytes, 0u);
  ASSERT_TRUE((*sender)->EndPhase(Phase::kPreCopy).ok());
  // STOP_COPY: the rest, then the writer's close is the end.
  std::thread writer([&] {
    WriteAllBlocking(in->write.get(), data.data() + (1 << 20), data.size() - (1 << 20));
    in->write.Reset();
  });
  std::atomic<bool> never{false};
  uint64_t rest = 0;
  PumpResult::End end = PumpResult::End::kIdle;
  while (end == PumpResult::End::kIdle) {  // A slow writer may pause longer than `idle`.
    auto r = (*sender)->PumpStreamFd(in->read.get(), Phase::kStopCopy, idle, nullptr, never,
                                     cancel);
    ASSERT_TRUE(r.ok()) << r.status();
    rest += r->bytes;
    end = r->end;
  }
  writer.join();
  EXPECT_EQ(end, PumpResult::End::kEof);
  EXPECT_EQ(rest, data.size() - (1 << 20));
  EXPECT_EQ(precopy.load(), 1u << 20);  // STOP_COPY's bytes are not PRE_COPY's.
  ASSERT_TRUE((*sender)->EndStream().ok());
  EXPECT_TRUE((*sender)->AwaitCommit(absl::Seconds(10), cancel).ok());
  dest.join();
  drain.join();
  EXPECT_TRUE(receive_status.ok()) << receive_status;
  EXPECT_EQ(received, data);
}

// With frames no larger than what the pipe holds, a read can take all there is; the next one
// must still wait behind a poll in PRE_COPY. A read left waiting would take the VMM's first
// bytes after Switchover into PRE_COPY (before the job's next tick withdrew it).
TEST(StreamTest, AStreamFdPumpTakesNothingWrittenAfterStopIntoPrecopy) {
  ::signal(SIGPIPE, SIG_IGN);
  Conn c = Connect();
  auto in = MakePipe(0);
  ASSERT_TRUE(in.ok());
  std::thread dest([&] {  // Answers HELLO and takes what comes; the test ends before END.
    auto hello = peer::ReadHello(c.dst.get(), absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(hello.ok()) << hello.status();
    ASSERT_TRUE(
        peer::SendHelloAck(c.dst.get(), absl::OkStatus(), 0, absl::Now() + absl::Seconds(5)).ok());
    char buf[1 << 16];
    while (::recv(c.dst.get(), buf, sizeof(buf), 0) > 0) {
    }
  });
  auto sender = HandshakenSender(std::move(c.src), 16 << 10);
  ASSERT_TRUE(sender.ok()) << sender.status();
  std::atomic<bool> stop{false}, cancel{false};
  std::atomic<uint64_t> precopy{0};
  const std::vector<uint8_t> piece = RandomBytes(16 << 10, 62);
  absl::StatusOr<PumpResult> r;
  std::thread pump([&] {
    r = (*sender)->PumpStreamFd(in->read.get(), Phase::kPreCopy, absl::Seconds(30), &precopy,
                                stop, cancel);
  });
  WriteAllBlocking(in->write.get(), piece.data(), piece.size());  // One full frame.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (precopy.load() < piece.size() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(precopy.load(), piece.size());
  stop = true;  // The agent's Switchover; the VMM's next bytes are STOP_COPY's.
  WriteAllBlocking(in->write.get(), piece.data(), piece.size());
  pump.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->end, PumpResult::End::kStopped);
  EXPECT_EQ(r->bytes, piece.size());
  EXPECT_EQ(precopy.load(), piece.size());
  sender->reset();  // Closes the connection: the destination's thread ends.
  dest.join();
}

TEST(StreamTest, SplicePathIsByteExact) {
  auto data = RandomBytes(7 << 20 | 999, 2);
  Outcome o = Move(data, 1 << 20, Opts(DataPath::kSplice), Opts(DataPath::kSplice));
  ASSERT_TRUE(o.sender.ok()) << o.sender;
  ASSERT_TRUE(o.receiver.ok()) << o.receiver;
  EXPECT_EQ(o.received, data);
  EXPECT_EQ(o.sender_path, DataPath::kSplice);
  EXPECT_EQ(o.receiver_path, DataPath::kSplice);
  EXPECT_FALSE(o.sender_digest);  // Spliced bytes are never seen in userspace.
}

TEST(StreamTest, AutoPicksSpliceForPipes) {
  auto data = RandomBytes(1 << 20, 3);
  Outcome o = Move(data, 0, Opts(DataPath::kAuto), Opts(DataPath::kAuto));
  ASSERT_TRUE(o.sender.ok() && o.receiver.ok()) << o.sender << o.receiver;
  EXPECT_EQ(o.received, data);
  EXPECT_EQ(o.sender_path, DataPath::kSplice);
  EXPECT_EQ(o.receiver_path, DataPath::kSplice);
}

TEST(StreamTest, MixedPathsAndSmallReceiverBuffers) {
  auto data = RandomBytes(5 << 20 | 7, 4);
  Outcome o =
      Move(data, 2 << 20, Opts(DataPath::kSplice, 1 << 20), Opts(DataPath::kCopy, 64 << 10));
  ASSERT_TRUE(o.sender.ok() && o.receiver.ok()) << o.sender << o.receiver;
  EXPECT_EQ(o.received, data);
  Outcome o2 =
      Move(data, 2 << 20, Opts(DataPath::kCopy, 256 << 10), Opts(DataPath::kSplice, 64 << 10));
  ASSERT_TRUE(o2.sender.ok() && o2.receiver.ok()) << o2.sender << o2.receiver;
  EXPECT_EQ(o2.received, data);
}

TEST(StreamTest, NonBlockingFdsRequeueEagainAndShortIo) {
  auto data = RandomBytes(3 << 20 | 5, 5);
  Outcome o = Move(data, 0, Opts(DataPath::kCopy, 128 << 10), Opts(DataPath::kCopy, 128 << 10),
                   /*nonblocking_fds=*/true);
  ASSERT_TRUE(o.sender.ok() && o.receiver.ok()) << o.sender << o.receiver;
  EXPECT_EQ(o.received, data);
  Outcome s =
      Move(data, 0, Opts(DataPath::kSplice, 128 << 10), Opts(DataPath::kSplice, 128 << 10), true);
  ASSERT_TRUE(s.sender.ok() && s.receiver.ok()) << s.sender << s.receiver;
  EXPECT_EQ(s.received, data);
}

TEST(StreamTest, BandwidthCapIsNeverExceeded) {
  auto data = RandomBytes(8 << 20, 9);
  for (DataPath p : {DataPath::kCopy, DataPath::kSplice}) {
    StreamOptions so = Opts(p, 256 << 10);
    so.limiter = std::make_shared<RateLimiter>(32u << 20, absl::ZeroDuration());
    const absl::Time start = absl::Now();
    Outcome o = Move(data, 0, so, Opts(p));
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    ASSERT_TRUE(o.sender.ok() && o.receiver.ok()) << o.sender << o.receiver;
    EXPECT_EQ(o.received, data);
    // 8 MiB at 32 MiB/s: a quarter second at least (a busy machine can only make it slower).
    EXPECT_GT(seconds, 0.25 * 0.95) << DataPathName(p);
  }
}

TEST(StreamTest, StripedStreamsAreReassembledByteExact) {
  auto data = RandomBytes(11 << 20 | 4321, 21);
  for (int n : {2, 3, 4}) {
    Outcome o = MoveStriped(data, 3 << 20, n, Opts(DataPath::kCopy, 256 << 10),
                            Opts(DataPath::kCopy, 128 << 10));
    ASSERT_TRUE(o.sender.ok()) << n << ": " << o.sender;
    ASSERT_TRUE(o.receiver.ok()) << n << ": " << o.receiver;
    EXPECT_EQ(o.received, data) << n;
    EXPECT_TRUE(o.result.digest_checked);
    EXPECT_EQ(o.result.precopy_phases_ended, 1u);
  }
  // Spliced sending over stripes; the receiver reassembles in buffers.
  Outcome s = MoveStriped(data, 0, 2, Opts(DataPath::kSplice, 512 << 10),
                          Opts(DataPath::kSplice, 512 << 10));
  ASSERT_TRUE(s.sender.ok() && s.receiver.ok()) << s.sender << s.receiver;
  EXPECT_EQ(s.received, data);
  EXPECT_EQ(s.receiver_path, DataPath::kCopy);
}

// Frames by hand on two connections: connection 1 runs 6 frames ahead while connection 0's
// first frame is held back. The receiver may buffer only its share (2 of 4 buffers) for
// connection 1, leaves the rest in TCP, and completes once connection 0 delivers.
TEST(StreamTest, StalledStripeHoldsOthersWithinBoundedBuffers) {
  ::signal(SIGPIPE, SIG_IGN);
  Conn c0 = Connect(), c1 = Connect();
  std::vector<UniqueFd> dst;
  dst.push_back(std::move(c0.dst));
  dst.push_back(std::move(c1.dst));
  auto ring = NewQueue(32);
  StreamOptions ro = Opts(DataPath::kCopy, 64 << 10);
  ro.buffers = 4;
  auto receiver = StreamReceiver::Create(ring->get(), std::move(dst), 0, ro);
  ASSERT_TRUE(receiver.ok());
  const size_t frame = 64 << 10;
  auto data = RandomBytes(8 * frame, 5);
  auto slice = [&](size_t i) {
    return std::string(reinterpret_cast<const char*>(data.data()) + i * frame, frame);
  };
  std::thread source([&] {
    const absl::Time d = absl::Now() + absl::Seconds(5);
    // Connection 1 carries frames 1, 3, 5, 6, 7 ... far ahead of frame 0.
    uint64_t seq1 = 1;
    for (size_t i : {1, 3, 5, 6, 7}) {
      ASSERT_TRUE(net::SendAll(c1.src.get(), DataFrame(seq1++, i * frame, slice(i)), d).ok());
    }
    absl::SleepFor(absl::Milliseconds(300));
    uint64_t seq0 = 1;
    for (size_t i : {0, 2, 4}) {
      ASSERT_TRUE(net::SendAll(c0.src.get(), DataFrame(seq0++, i * frame, slice(i)), d).ok());
    }
    ASSERT_TRUE(net::SendAll(c0.src.get(),
                             peer::EncodeEndStream(
                                 seq0++, 0, NoDigest(8 * frame)),
                             d)
                    .ok());
  });
  auto pipe = MakePipe();
  std::vector<uint8_t> got;
  std::thread drain([&] {
    std::vector<uint8_t> buf(1 << 16);
    ssize_t r;
    while ((r = ::read(pipe->read.get(), buf.data(), buf.size())) > 0) {
      got.insert(got.end(), buf.data(), buf.data() + r);
    }
  });
  std::atomic<bool> cancel{false};
  auto r = (*receiver)->Receive(pipe->write.get(), cancel);
  source.join();
  pipe->write.Reset();
  drain.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(got, data);
}

TEST(StreamTest, StripedHoleOrDuplicateIsDataLoss) {
  auto run = [](std::vector<std::pair<int, std::string>> frames, uint64_t total) {
    Conn c0 = Connect(), c1 = Connect();
    std::vector<UniqueFd> dst;
    dst.push_back(std::move(c0.dst));
    dst.push_back(std::move(c1.dst));
    auto ring = NewQueue(32);
    StreamOptions ro = Opts(DataPath::kCopy, 64 << 10);
    ro.idle_timeout = absl::Seconds(3);
    auto receiver = StreamReceiver::Create(ring->get(), std::move(dst), 0, ro);
    uint64_t seq[2] = {1, 1};
    const absl::Time d = absl::Now() + absl::Seconds(2);
    for (auto& [k, f] : frames) {
      std::string framed = f;
      // Patch the sequence number for the connection it goes on.
      uint64_t s = seq[k]++;
      std::memcpy(framed.data() + 16, &s, 8);
      EXPECT_TRUE(net::SendAll((k ? c1 : c0).src.get(), framed, d).ok());
    }
    std::string end =
        peer::EncodeEndStream(seq[0]++, 0, NoDigest(total));
    EXPECT_TRUE(net::SendAll(c0.src.get(), end, d).ok());
    auto pipe = MakePipe();
    std::thread drain([&] {
      char buf[4096];
      while (::read(pipe->read.get(), buf, sizeof(buf)) > 0) {
      }
    });
    std::atomic<bool> cancel{false};
    absl::Status st = (*receiver)->Receive(pipe->write.get(), cancel).status();
    pipe->write.Reset();
    drain.join();
    return st;
  };
  // A hole: bytes 3..5 never sent, the END total still matches what arrived.
  absl::Status hole = run({{0, DataFrame(0, 0, "abc")}, {1, DataFrame(0, 6, "ghi")}}, 6);
  EXPECT_EQ(hole.code(), absl::StatusCode::kDataLoss) << hole;
  // The same offset twice.
  absl::Status dup = run({{0, DataFrame(0, 0, "abc")}, {1, DataFrame(0, 0, "abc")}}, 6);
  EXPECT_EQ(dup.code(), absl::StatusCode::kDataLoss) << dup;
  // A control frame on a striped connection (the END total keeps the receiver listening).
  absl::Status ctl = run({{1, peer::EncodeKeepalive(0, 0)}}, 3);
  EXPECT_EQ(ctl.code(), absl::StatusCode::kDataLoss) << ctl;
}

// The destination gives up while it keeps draining the connection (so sends still succeed):
// the sender must notice from its ring's watch on the connection, not only at the end.
TEST(StreamTest, SenderStopsWhenTheDestinationGivesUpMidStream) {
  ::signal(SIGPIPE, SIG_IGN);
  for (DataPath p : {DataPath::kCopy, DataPath::kSplice}) {
    Conn conn = Connect();
    auto ring = NewQueue(32);
    auto sender = StreamSender::Create(ring->get(), std::move(conn.src), 0, Opts(p, 256 << 10));
    ASSERT_TRUE(sender.ok());
    auto pipe = MakePipe();
    std::atomic<bool> stop{false}, cancel{false}, fed{false};
    const uint64_t total = 512ull << 20;
    std::thread feeder([&] {
      std::vector<char> buf(1 << 20, 'z');
      uint64_t left = total;
      while (left > 0) {
        ssize_t n = ::write(pipe->write.get(), buf.data(), std::min<uint64_t>(left, buf.size()));
        if (n <= 0) break;
        left -= n;
      }
      fed = true;
    });
    std::thread dest([&] {
      absl::SleepFor(absl::Milliseconds(20));
      ASSERT_TRUE(net::SendAll(conn.dst.get(),
                               peer::SealVerdict(
                                   peer::EncodeStatusFrame(wire::FrameType::kCommit, 1, 0,
                                                           peer::PeerStatus{9, "device says no"}),
                                   nullptr),
                               absl::Now() + absl::Seconds(1))
                      .ok());
      char sink[1 << 16];
      const absl::Time until = absl::Now() + absl::Seconds(5);
      while (absl::Now() < until && ::recv(conn.dst.get(), sink, sizeof(sink), 0) > 0) {
      }
    });
    auto r = (*sender)->Pump(pipe->read.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
    const uint64_t sent = (*sender)->bytes_sent();
    pipe->read.Reset();  // Unblocks the feeder.
    sender->reset();     // Closes the connection: the destination's drain ends.
    feeder.join();
    dest.join();
    ASSERT_FALSE(r.ok()) << DataPathName(p);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
    EXPECT_NE(r.status().message().find("device says no"), std::string::npos) << r.status();
    // A verdict is no lost connection: nothing to resume.
    EXPECT_FALSE(IsConnectionLost(r.status())) << r.status();
    EXPECT_LT(sent, total) << DataPathName(p);
  }
}

// The splice engine waits on the data fd while the destination gives up: it hears the verdict
// at its next tick instead of waiting out the idle timeout and losing the reason.
TEST(StreamTest, SpliceSenderWaitingOnItsDataFdHearsTheDestinationGiveUp) {
  ::signal(SIGPIPE, SIG_IGN);
  Conn conn = Connect();
  auto ring = NewQueue(16);
  StreamOptions o = Opts(DataPath::kSplice);
  o.idle_timeout = absl::Seconds(30);
  auto sender = StreamSender::Create(ring->get(), std::move(conn.src), 0, o);
  ASSERT_TRUE(sender.ok());
  auto pipe = MakePipe();  // Nothing is ever written: the job waits on it.
  ASSERT_TRUE(net::SendAll(conn.dst.get(),
                           peer::SealVerdict(
                               peer::EncodeStatusFrame(wire::FrameType::kCommit, 1, 0,
                                                       peer::PeerStatus{9, "device says no"}),
                               nullptr),
                           absl::Now() + absl::Seconds(1))
                  .ok());
  std::atomic<bool> stop{false}, cancel{false};
  auto r = (*sender)->Pump(pipe->read.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("device says no"), std::string::npos) << r.status();
}

// TCP urgent data inside a DATA frame: poll keeps saying readable while splice moves nothing.
// The splice receiver fails at once with DataLoss instead of spinning until the idle timeout.
TEST(StreamTest, SpliceReceiverRefusesUrgentDataInsteadOfSpinning) {
  Conn conn = Connect();
  auto ring = NewQueue(16);
  StreamOptions o = Opts(DataPath::kSplice);
  o.idle_timeout = absl::Seconds(30);
  auto receiver = StreamReceiver::Create(ring->get(), std::move(conn.dst), 0, 1, o);
  ASSERT_TRUE(receiver.ok());
  // As under TLS, which is what lets a receiver splice.
  ASSERT_TRUE((*receiver)->Protect(Protection(/*tls=*/true)).ok());
  auto pipe = MakePipe();
  const std::string frame = DataFrame(1, 0, std::string(1000, 'd'));
  ASSERT_EQ(::send(conn.src.get(), frame.data(), wire::kFrameHeaderSize + 10, 0),
            static_cast<ssize_t>(wire::kFrameHeaderSize + 10));
  ASSERT_EQ(::send(conn.src.get(), "!", 1, MSG_OOB), 1);
  // More of the frame behind the urgent byte: the connection stays readable.
  ASSERT_EQ(::send(conn.src.get(), frame.data() + wire::kFrameHeaderSize + 10, 100, 0), 100);
  std::atomic<bool> cancel{false};
  auto r = (*receiver)->Receive(pipe->write.get(), cancel);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_NE(r.status().message().find("urgent"), std::string::npos) << r.status();
}

// The splice receiver waits for a good part of a payload at once (SO_RCVLOWAT), yet bytes that
// come slowly still go into the device as they come: a capped or stalling source is not left
// waiting, nor is its stream declared idle.
TEST(StreamTest, SpliceReceiverPassesOnBytesThatTrickleBelowItsWakeMark) {
  Conn conn = Connect();
  auto ring = NewQueue(16);
  StreamOptions o = Opts(DataPath::kSplice);
  o.idle_timeout = absl::Seconds(30);
  auto receiver = StreamReceiver::Create(ring->get(), std::move(conn.dst), 0, 1, o);
  ASSERT_TRUE(receiver.ok());
  // As under TLS, which is what lets a receiver splice.
  ASSERT_TRUE((*receiver)->Protect(Protection(/*tls=*/true)).ok());
  auto pipe = MakePipe();
  std::atomic<bool> cancel{false};
  absl::Status received;
  std::thread dest([&] { received = (*receiver)->Receive(pipe->write.get(), cancel).status(); });
  const std::string frame = DataFrame(1, 0, std::string(1 << 20, 'd'));
  // Waits for exactly `n` bytes of the payload on the data fd.
  auto expect_in_device = [&](size_t n) {
    std::string got;
    while (got.size() < n) {
      pollfd p{pipe->read.get(), POLLIN, 0};
      ASSERT_EQ(::poll(&p, 1, 10000), 1) << "no byte reached the data fd after " << got.size();
      char buf[4096];
      const ssize_t r = ::read(pipe->read.get(), buf, sizeof(buf));
      ASSERT_GT(r, 0);
      got.append(buf, r);
    }
    EXPECT_EQ(got, std::string(n, 'd'));
  };
  size_t sent = 0;
  for (size_t piece : {wire::kFrameHeaderSize + 10, size_t{1000}, size_t{1}}) {
    ASSERT_EQ(::send(conn.src.get(), frame.data() + sent, piece, 0),
              static_cast<ssize_t>(piece));
    sent += piece;
    expect_in_device(sent <= wire::kFrameHeaderSize + 10 ? 10 : piece);
  }
  cancel = true;
  dest.join();
  EXPECT_EQ(received.code(), absl::StatusCode::kCancelled) << received;
}

// A sender on a ring of its own over a fresh connection; `peer` is the other end.
struct LoneSender {
  std::unique_ptr<io::IoQueue> ring;
  UniqueFd peer;
  std::unique_ptr<StreamSender> sender;
};
LoneSender MakeLoneSender(DataPath p) {
  LoneSender l;
  auto ring = NewQueue(16);
  EXPECT_TRUE(ring.ok()) << ring.status();
  if (!ring.ok()) return l;
  l.ring = std::move(*ring);
  Conn conn = Connect();
  l.peer = std::move(conn.dst);
  auto sender = StreamSender::Create(l.ring.get(), std::move(conn.src), 0, Opts(p));
  EXPECT_TRUE(sender.ok()) << sender.status();
  if (sender.ok()) l.sender = std::move(*sender);
  return l;
}

TEST(StreamTest, PrecopyZeroReadMeansDrained) {
  for (DataPath p : {DataPath::kCopy, DataPath::kSplice}) {
    LoneSender l = MakeLoneSender(p);
    ASSERT_NE(l.sender, nullptr);
    auto pipe = MakePipe();
    ASSERT_TRUE(::write(pipe->write.get(), "abc", 3) == 3);
    pipe->write.Reset();  // mtty's way: read returns 0 when precopy data is drained.
    std::atomic<bool> stop{false}, cancel{false};
    auto r = l.sender->Pump(pipe->read.get(), Phase::kPreCopy, 1 << 20, stop, cancel);
    ASSERT_TRUE(r.ok()) << DataPathName(p) << ": " << r.status();
    EXPECT_EQ(r->bytes, 3u) << DataPathName(p);
    EXPECT_EQ(r->end, PumpResult::End::kDrained) << DataPathName(p);
  }
}

// Switchover must not wait on a PRE_COPY read the device cannot satisfy, on either path.
TEST(StreamTest, SwitchoverWithdrawsAPrecopyReadThatCannotComplete) {
  for (DataPath p : {DataPath::kCopy, DataPath::kSplice}) {
    LoneSender l = MakeLoneSender(p);
    ASSERT_NE(l.sender, nullptr);
    auto pipe = MakePipe();  // Blocking and empty: a read waits forever.
    std::atomic<bool> stop{false}, cancel{false};
    std::thread t([&] {
      absl::SleepFor(absl::Milliseconds(150));
      stop = true;
    });
    const absl::Time start = absl::Now();
    auto r = l.sender->Pump(pipe->read.get(), Phase::kPreCopy, 1 << 20, stop, cancel);
    t.join();
    ASSERT_TRUE(r.ok()) << DataPathName(p) << ": " << r.status();
    EXPECT_EQ(r->bytes, 0u) << DataPathName(p);
    EXPECT_EQ(r->end, PumpResult::End::kStopped) << DataPathName(p);
    EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << DataPathName(p);
  }
}

// A sender whose peer stops reading fills the socket and then waits; cancelling it ends the
// wait on either path (the splice path's blocking splice returns at each send timeout).
TEST(StreamTest, SenderCancelsWhileThePeerDoesNotRead) {
  for (DataPath p : {DataPath::kCopy, DataPath::kSplice}) {
    LoneSender l = MakeLoneSender(p);  // l.peer is never read.
    ASSERT_NE(l.sender, nullptr);
    auto pipe = MakePipe();
    std::atomic<bool> stop{false}, cancel{false}, done{false};
    std::thread feeder([&] {
      std::vector<uint8_t> junk(1 << 16, 7);
      while (!done.load()) {
        if (::write(pipe->write.get(), junk.data(), junk.size()) <= 0) return;
      }
    });
    std::thread t([&] {
      absl::SleepFor(absl::Milliseconds(300));
      cancel = true;
    });
    const absl::Time start = absl::Now();
    auto r = l.sender->Pump(pipe->read.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
    const absl::Duration took = absl::Now() - start;
    t.join();
    done = true;
    pipe->read.Reset();  // The feeder's blocked write fails with EPIPE.
    feeder.join();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << DataPathName(p) << r.status();
    EXPECT_GT(l.sender->bytes_sent(), 0u) << DataPathName(p);  // It was mid-stream.
    EXPECT_LT(took, absl::Seconds(2)) << DataPathName(p);
  }
}

// A receiver fed by hand-made frames.
absl::Status ReceiveFrames(const std::vector<std::string>& frames, bool close_after = true) {
  Conn conn = Connect();
  auto ring = NewQueue(16);
  auto receiver =
      StreamReceiver::Create(ring->get(), std::move(conn.dst), 0, 1, Opts(DataPath::kCopy));
  EXPECT_TRUE(receiver.ok());
  EXPECT_TRUE((*receiver)->Protect(Protection(/*tls=*/false)).ok());
  for (const auto& f : frames) {
    EXPECT_TRUE(net::SendAll(conn.src.get(), f, absl::Now() + absl::Seconds(2)).ok());
  }
  if (close_after) conn.src.Reset();
  auto pipe = MakePipe();
  std::atomic<bool> cancel{false};
  return (*receiver)->Receive(pipe->write.get(), cancel).status();
}

// The source's frames for data[from, to) in `chunk`-sized DATA frames numbered from `seq`.
std::string Frames(const std::vector<uint8_t>& data, uint64_t from, uint64_t to, uint32_t chunk,
                   uint64_t* seq) {
  std::string out;
  for (uint64_t at = from; at < to; at += chunk) {
    const uint64_t n = std::min<uint64_t>(chunk, to - at);
    out += DataFrame((*seq)++, at,
                     std::string(reinterpret_cast<const char*>(data.data() + at), n));
  }
  return out;
}

// A source that closes its connection in order (its FIN) ended the stream itself: a lost link or
// a middlebox never sends one. Not a lost connection, and no resume follows.
TEST(StreamTest, ASourceThatClosesInOrderEndsTheStreamForGood) {
  const uint32_t chunk = 64 << 10;
  const auto data = RandomBytes(1 << 20, 83);
  Conn conn = Connect();
  auto ring = NewQueue(16);
  ASSERT_TRUE(ring.ok());
  auto receiver = StreamReceiver::Create(ring->get(), std::move(conn.dst), 0, 1,
                                         Opts(DataPath::kCopy, chunk));
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  ASSERT_TRUE((*receiver)->Protect(Protection(/*tls=*/false)).ok());
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());
  std::thread drain([&] {
    std::vector<uint8_t> buf(1 << 16);
    while (::read(pipe->read.get(), buf.data(), buf.size()) > 0) {
    }
  });
  uint64_t seq = 1;
  ASSERT_TRUE(net::SendAll(conn.src.get(), Frames(data, 0, data.size(), chunk, &seq),
                           absl::Now() + absl::Seconds(5))
                  .ok());
  conn.src.Reset();
  std::atomic<bool> cancel{false};
  auto r = (*receiver)->Receive(pipe->write.get(), cancel);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_FALSE(IsConnectionLost(r.status())) << r.status();
  EXPECT_FALSE((*receiver)->resumable());
  pipe->write.Reset();
  drain.join();
}

TEST(StreamTest, AReceiverCutMidStreamResumesOnANewConnectionFromWhatItWrote) {
  // 3 MiB and half a frame arrive, then the source's connection closes. The receiver finishes
  // the piece going into the device, drops what came after it, and on a new connection takes
  // the stream again from what it wrote: every byte lands in the device once, and the digest
  // (over the whole stream, computed once by the source) still checks.
  const uint32_t chunk = 256 << 10;
  const auto data = RandomBytes(8 << 20, 80);
  Conn first = Connect(), second = Connect();
  auto ring = NewQueue(16);
  ASSERT_TRUE(ring.ok());
  StreamOptions o = Opts(DataPath::kCopy, chunk);
  auto receiver = StreamReceiver::Create(ring->get(), std::move(first.dst), 0, 1, o);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  ASSERT_TRUE((*receiver)->Protect(Protection(/*tls=*/false)).ok());
  auto pipe = MakePipe();
  std::vector<uint8_t> landed;
  std::thread drain([&] {
    std::vector<uint8_t> buf(1 << 16);
    ssize_t r;
    while ((r = ::read(pipe->read.get(), buf.data(), buf.size())) > 0) {
      landed.insert(landed.end(), buf.data(), buf.data() + r);
    }
  });
  uint64_t seq = 1;
  std::string before = Frames(data, 0, 3 << 20, chunk, &seq);
  // Half of the next frame: its header and 100 KiB of its payload.
  before += DataFrame(seq, 3 << 20,
                      std::string(reinterpret_cast<const char*>(data.data()) + (3 << 20), chunk))
                .substr(0, wire::kFrameHeaderSize + (100 << 10));
  ASSERT_TRUE(net::SendAll(first.src.get(), before, absl::Now() + absl::Seconds(5)).ok());
  ResetWhenDelivered(first.src.get());
  std::atomic<bool> cancel{false};
  auto cut = (*receiver)->Receive(pipe->write.get(), cancel);
  ASSERT_EQ(cut.status().code(), absl::StatusCode::kUnavailable) << cut.status();
  EXPECT_TRUE(IsConnectionLost(cut.status()));

  std::vector<UniqueFd> fresh;
  fresh.push_back(std::move(second.dst));
  auto from = (*receiver)->Resume(std::move(fresh));
  ASSERT_TRUE(from.ok()) << from.status();
  EXPECT_LE(*from, 3u << 20);
  EXPECT_EQ(*from % chunk, 0u);
  // A second resume without a lost connection in between is refused.
  EXPECT_EQ((*receiver)->Resume({}).status().code(), absl::StatusCode::kFailedPrecondition);

  auto mac = peer::StreamMac::Create(Protection(false).keys->digest);
  ASSERT_TRUE(mac.ok());
  (*mac)->Update(data.data(), data.size());
  peer::EndStream end;
  end.total_bytes = data.size();
  end.digest_kind = wire::DigestKind::kPoly1305;
  end.digest = *(*mac)->Finish();
  seq = 1;
  std::string after = Frames(data, *from, data.size(), chunk, &seq);
  after += peer::EncodeEndStream(seq, 0, end);
  std::thread source(
      [&] { EXPECT_TRUE(net::SendAll(second.src.get(), after, absl::Now() + absl::Seconds(10)).ok()); });
  auto done = (*receiver)->Receive(pipe->write.get(), cancel);
  source.join();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->digest_checked);
  EXPECT_EQ(done->total_bytes, data.size());
  pipe->write.Reset();
  drain.join();
  EXPECT_TRUE(landed == data) << landed.size() << " bytes landed of " << data.size();
}

// The device ends of a stream under test: a source pipe a thread fills with `data` (stopping
// if the sender stops reading), and a destination pipe whose bytes a thread collects. Finish()
// closes both and joins the threads; `landed` is then what reached the destination device.
struct DeviceEnds {
  explicit DeviceEnds(const std::vector<uint8_t>& data) : src(*MakePipe()), dst(*MakePipe()) {
    feeder = std::thread([this, &data] {
      WriteAllBlocking(src.write.get(), data.data(), data.size());
      src.write.Reset();
    });
    drain = std::thread([this] {
      std::vector<uint8_t> buf(1 << 16);
      ssize_t r;
      while ((r = ::read(dst.read.get(), buf.data(), buf.size())) > 0) {
        landed.insert(landed.end(), buf.data(), buf.data() + r);
      }
    });
  }
  void Finish() {
    src.read.Reset();
    feeder.join();
    dst.write.Reset();
    drain.join();
  }
  PipeFds src, dst;
  std::vector<uint8_t> landed;
  std::thread feeder, drain;
};

// A sender over `socks`, keyed as Protection(false), its HELLO answered (AnswerHellos).
std::unique_ptr<StreamSender> HandshakenSender(io::IoQueue* ring, std::vector<UniqueFd> socks,
                                               const StreamOptions& so) {
  auto sender = StreamSender::Create(ring, std::move(socks), 0, so);
  EXPECT_TRUE(sender.ok()) << sender.status();
  if (!sender.ok()) return nullptr;
  EXPECT_TRUE((*sender)->Protect(Protection(false)).ok());
  peer::Hello hello;
  hello.session_id = "test";
  EXPECT_TRUE((*sender)->Handshake(hello, absl::Seconds(5)).ok());
  return std::move(*sender);
}

// The destination's side of a handshake on each of `socks`: HELLO read, HELLO_ACK(0) sent.
void AnswerHellos(const std::vector<UniqueFd>& socks) {
  for (const UniqueFd& fd : socks) {
    ASSERT_TRUE(peer::ReadHello(fd.get(), absl::Now() + absl::Seconds(5)).ok());
    ASSERT_TRUE(
        peer::SendHelloAck(fd.get(), absl::OkStatus(), 0, absl::Now() + absl::Seconds(5)).ok());
  }
}

TEST(StreamTest, AStreamCutMidwayResumesOnNewConnectionsAndLandsEveryByteOnce) {
  // A source with a 4 MiB replay buffer and a destination that acknowledges every 512 KiB. Once
  // 8 MiB are in the device, the source's connection is shut down under both. Each end finds
  // its stream broken; the destination takes a new connection and says from where it goes on;
  // the source sends its held frames again from there, then the rest. Every byte lands in the
  // device once, the one digest checks, and the source counts what it sent again.
  for (int stripes : {1, 2}) {
    SCOPED_TRACE(absl::StrCat(stripes, " connection(s)"));
    const uint32_t chunk = 256 << 10;
    const auto data = RandomBytes(24 << 20, 81);
    StreamOptions so = Opts(DataPath::kCopy, chunk);
    so.replay_bytes = 4 << 20;
    StreamOptions ro = Opts(DataPath::kCopy, chunk);
    ro.ack_every = 512 << 10;
    std::vector<UniqueFd> src1, dst1, src2, dst2;
    std::vector<int> cut_fds;
    for (int i = 0; i < stripes; ++i) {
      Conn first = Connect(), second = Connect();
      cut_fds.push_back(::dup(first.src.get()));
      src1.push_back(std::move(first.src));
      dst1.push_back(std::move(first.dst));
      src2.push_back(std::move(second.src));
      dst2.push_back(std::move(second.dst));
    }
    DeviceEnds ends(data);
    std::atomic<uint64_t> written{0};
    // Atomic: a WaitForNotification that finds the notification given returns on an atomic
    // load inside Debian's uninstrumented abseil, an order ThreadSanitizer cannot see.
    absl::Notification resumed_at_set;
    std::atomic<uint64_t> resumed_at{0};
    absl::Status sender_status, receiver_status;
    uint64_t replayed = 0;
    bool digest_checked = false;
    std::thread source([&] {
      auto ring = NewQueue(64);
      ASSERT_TRUE(ring.ok());
      std::unique_ptr<StreamSender> sender = HandshakenSender(ring->get(), std::move(src1), so);
      ASSERT_NE(sender, nullptr);
      std::atomic<bool> stop{false}, cancel{false};
      auto r = sender->Pump(ends.src.read.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
      ASSERT_FALSE(r.ok()) << "the cut should have broken the first pump";
      EXPECT_TRUE(IsConnectionLost(r.status())) << r.status();
      ASSERT_TRUE(sender->Reconnect(std::move(src2)).ok());
      peer::Hello hello;
      hello.session_id = "test";
      ASSERT_TRUE(sender->Handshake(hello, absl::Seconds(5)).ok());
      resumed_at_set.WaitForNotification();
      sender_status = sender->ReplayFrom(resumed_at.load());
      if (!sender_status.ok()) return;
      r = sender->Pump(ends.src.read.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
      sender_status = r.status();
      if (!r.ok()) return;
      sender_status = sender->EndStream();
      if (sender_status.ok()) sender_status = sender->AwaitCommit(absl::Seconds(10), cancel);
      replayed = sender->replayed_bytes();
      EXPECT_EQ(sender->bytes_sent(), data.size());
    });
    std::thread dest([&] {
      auto ring = NewQueue(64);
      ASSERT_TRUE(ring.ok());
      AnswerHellos(dst1);
      auto receiver = StreamReceiver::Create(ring->get(), std::move(dst1), 0, ro);
      ASSERT_TRUE(receiver.ok()) << receiver.status();
      ASSERT_TRUE((*receiver)->Protect(Protection(false)).ok());
      (*receiver)->set_progress_counter(&written);
      std::atomic<bool> cancel{false};
      auto r = (*receiver)->Receive(ends.dst.write.get(), cancel);
      ASSERT_FALSE(r.ok()) << "the cut should have broken the first receive";
      EXPECT_TRUE(IsConnectionLost(r.status())) << r.status();
      AnswerHellos(dst2);
      auto from = (*receiver)->Resume(std::move(dst2));
      ASSERT_TRUE(from.ok()) << from.status();
      resumed_at.store(*from);
      resumed_at_set.Notify();
      r = (*receiver)->Receive(ends.dst.write.get(), cancel);
      receiver_status = r.status();
      if (r.ok()) digest_checked = r->digest_checked;
      (void)(*receiver)->SendCommit(r.status());
    });
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (written.load() < (8u << 20) && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_GE(written.load(), 8u << 20) << "the stream stopped before the cut";
    for (int fd : cut_fds) {
      ResetConnection(fd);
      ::close(fd);
    }
    source.join();
    dest.join();
    ends.Finish();
    EXPECT_TRUE(sender_status.ok()) << sender_status;
    EXPECT_TRUE(receiver_status.ok()) << receiver_status;
    EXPECT_TRUE(digest_checked);
    EXPECT_GE(resumed_at.load(), 8u << 20);
    EXPECT_TRUE(ends.landed == data) << ends.landed.size() << " bytes landed of " << data.size();
    // What was out but not in the device when the cut came, at most the replay buffer.
    EXPECT_LE(replayed, 4u << 20);
  }
}

TEST(StreamTest, AcksReadBetweenPumpsFreeTheNextPumpsBuffers) {
  // A PRE_COPY pump fills the 2 MiB replay buffer exactly and ends on its budget. The
  // destination writes it all and acknowledges it; the source reads those ACKs with a
  // keepalive, between pumps. The STOP_COPY pump that follows must find its buffers free:
  // no further ACK is coming to wake it.
  const uint32_t chunk = 256 << 10;
  const auto data = RandomBytes(6 << 20, 82);
  StreamOptions so = Opts(DataPath::kCopy, chunk);
  so.replay_bytes = 2 << 20;
  so.idle_timeout = absl::Seconds(2);
  StreamOptions ro = Opts(DataPath::kCopy, chunk);
  ro.ack_every = 512 << 10;
  Conn conn = Connect();
  DeviceEnds ends(data);
  std::atomic<uint64_t> written{0};
  absl::Status sender_status, receiver_status;
  std::thread source([&] {
    auto ring = NewQueue(64);
    ASSERT_TRUE(ring.ok());
    std::vector<UniqueFd> socks;
    socks.push_back(std::move(conn.src));
    std::unique_ptr<StreamSender> sender = HandshakenSender(ring->get(), std::move(socks), so);
    ASSERT_NE(sender, nullptr);
    std::atomic<bool> stop{false}, cancel{false};
    auto r = sender->Pump(ends.src.read.get(), Phase::kPreCopy, 2 << 20, stop, cancel);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->bytes, 2u << 20);
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (written.load() < (2u << 20) && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    ASSERT_GE(written.load(), 2u << 20) << "the destination stopped writing";
    // The destination's last ACK for those 2 MiB comes within its 100 ms tick.
    const absl::Time until = absl::Now() + absl::Seconds(5);
    while (sender->acked_bytes() < (2u << 20) && absl::Now() < until) {
      ASSERT_TRUE(sender->Keepalive().ok());
      absl::SleepFor(absl::Milliseconds(5));
    }
    ASSERT_EQ(sender->acked_bytes(), 2u << 20);
    ASSERT_TRUE(sender->EndPhase(Phase::kPreCopy).ok());
    r = sender->Pump(ends.src.read.get(), Phase::kStopCopy, UINT64_MAX, stop, cancel);
    sender_status = r.status();
    if (!r.ok()) return;
    sender_status = sender->EndStream();
    if (sender_status.ok()) sender_status = sender->AwaitCommit(absl::Seconds(10), cancel);
  });
  std::thread dest([&] {
    auto ring = NewQueue(64);
    ASSERT_TRUE(ring.ok());
    std::vector<UniqueFd> socks;
    socks.push_back(std::move(conn.dst));
    AnswerHellos(socks);
    auto receiver = StreamReceiver::Create(ring->get(), std::move(socks), 0, ro);
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    ASSERT_TRUE((*receiver)->Protect(Protection(false)).ok());
    (*receiver)->set_progress_counter(&written);
    std::atomic<bool> cancel{false};
    auto r = (*receiver)->Receive(ends.dst.write.get(), cancel);
    receiver_status = r.status();
    (void)(*receiver)->SendCommit(r.status());
  });
  source.join();
  dest.join();
  ends.Finish();
  EXPECT_TRUE(sender_status.ok()) << sender_status;
  EXPECT_TRUE(receiver_status.ok()) << receiver_status;
  EXPECT_TRUE(ends.landed == data) << ends.landed.size() << " bytes landed of " << data.size();
}

TEST(StreamTest, AReceiveCutWhileItsDeviceTakesNothingStillEnds) {
  // The device's pipe is full (nobody reads it) when the source's connection is reset: the piece
  // being written cannot be finished. The receive must still end, after its idle timeout, not
  // wait on the device for ever.
  Conn conn = Connect();
  auto ring = NewQueue(16);
  ASSERT_TRUE(ring.ok());
  StreamOptions o = Opts(DataPath::kCopy, 256 << 10);
  o.idle_timeout = absl::Seconds(1);
  auto receiver = StreamReceiver::Create(ring->get(), std::move(conn.dst), 0, 1, o);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  ASSERT_TRUE((*receiver)->Protect(Protection(/*tls=*/false)).ok());
  auto pipe = MakePipe(O_NONBLOCK);
  ASSERT_TRUE(pipe.ok());
  const auto data = RandomBytes(1 << 20, 83);
  uint64_t seq = 1;
  ASSERT_TRUE(net::SendAll(conn.src.get(), Frames(data, 0, data.size(), 256 << 10, &seq),
                           absl::Now() + absl::Seconds(5))
                  .ok());
  std::atomic<bool> cancel{false};
  auto receive = std::async(std::launch::async, [&] {
    return (*receiver)->Receive(pipe->write.get(), cancel).status();
  });
  // Cut once the receive took every byte (into its buffers: the device takes none of them).
  ResetWhenDelivered(conn.src.get());
  const bool ended = receive.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  if (!ended) {
    // Unblock it before failing, so the test ends.
    std::vector<uint8_t> buf(1 << 16);
    cancel = true;
    while (receive.wait_for(std::chrono::milliseconds(10)) != std::future_status::ready) {
      (void)::read(pipe->read.get(), buf.data(), buf.size());
    }
  }
  ASSERT_TRUE(ended) << "the receive waited on a device that takes nothing";
  const absl::Status s = receive.get();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  // The piece was not finished: nothing to resume from.
  std::vector<UniqueFd> none;
  EXPECT_EQ((*receiver)->Resume(std::move(none)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(StreamTest, ReceiverRejectsMalformedStreams) {
  // Sequence gap.
  EXPECT_EQ(ReceiveFrames({DataFrame(2, 0, "abc")}).code(), absl::StatusCode::kDataLoss);
  // Offset gap.
  EXPECT_EQ(ReceiveFrames({DataFrame(1, 0, "abc"), DataFrame(2, 5, "def")}).code(),
            absl::StatusCode::kDataLoss);
  // Wrong device.
  EXPECT_EQ(ReceiveFrames({DataFrame(1, 0, "abc", 3)}).code(), absl::StatusCode::kDataLoss);
  // Garbage header.
  EXPECT_EQ(ReceiveFrames({std::string(32, 'x')}).code(), absl::StatusCode::kDataLoss);
  // END_STREAM total disagrees.
  EXPECT_EQ(
      ReceiveFrames({DataFrame(1, 0, "abc"),
                     peer::EncodeEndStream(2, 0, NoDigest(4))})
          .code(),
      absl::StatusCode::kDataLoss);
  // Digest disagrees.
  absl::Status s = ReceiveFrames(
      {DataFrame(1, 0, "abc"),
       peer::EncodeEndStream(2, 0, WrongDigest(3))});
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("digest mismatch"), std::string::npos) << s;
  // Source disconnects mid-stream.
  EXPECT_EQ(ReceiveFrames({DataFrame(1, 0, "abc")}).code(), absl::StatusCode::kUnavailable);
  // Source gives up, sealing its ERROR with the stream's control key.
  const peer::ControlKey key = Protection(false).keys->control;
  const std::string error = peer::EncodeStatusFrame(wire::FrameType::kError, 2, 0,
                                                    peer::PeerStatus{13, "device fell over"});
  s = ReceiveFrames({DataFrame(1, 0, "abc"), peer::SealVerdict(error, &key)});
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_NE(s.message().find("device fell over"), std::string::npos);
  // The same ERROR from someone without the key is not the source's: refused as such.
  s = ReceiveFrames({DataFrame(1, 0, "abc"), peer::SealVerdict(error, nullptr)});
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("seal does not match"), std::string::npos) << s;
}

// Without TLS (the daemons' --plaintext_peers) a stream keeps to the copy path, where the
// keyed digest checks every byte, even with fds that could splice and splice asked of auto.
TEST(StreamTest, WithoutTlsTheStreamKeepsToTheCopyPathAndTheDigestChecksIt) {
  auto data = RandomBytes(3 << 20, 21);
  StreamOptions o = Opts(DataPath::kAuto);
  o.auto_spliceable = DataPath::kSplice;
  Outcome out = Move(data, 1 << 20, o, o, /*nonblocking_fds=*/true, /*tls=*/false);
  ASSERT_TRUE(out.sender.ok()) << out.sender;
  ASSERT_TRUE(out.receiver.ok()) << out.receiver;
  EXPECT_EQ(out.received, data);
  EXPECT_EQ(out.sender_path, DataPath::kCopy);
  EXPECT_EQ(out.receiver_path, DataPath::kCopy);
  EXPECT_TRUE(out.result.digest_checked);
  EXPECT_FALSE(out.result.aead);
  EXPECT_TRUE(out.result.checked());
}

// Whatever a peer sends, the receiver ends (never hangs past its idle timeout, never crashes),
// and it only succeeds on a well-formed stream whose bytes it then wrote exactly.
TEST(StreamTest, ReceiverSurvivesRandomFrames) {
  ::signal(SIGPIPE, SIG_IGN);
  std::mt19937_64 rng(2026);
  int ok = 0, refused = 0;
  for (int iter = 0; iter < 150; ++iter) {
    Conn conn = Connect();
    auto ring = NewQueue(16);
    StreamOptions ro = Opts(DataPath::kCopy, 64 << 10);
    ro.idle_timeout = absl::Milliseconds(500);
    auto receiver = StreamReceiver::Create(ring->get(), std::move(conn.dst), 0, 1, ro);
    ASSERT_TRUE(receiver.ok());
    std::string wire;
    std::string expected;
    uint64_t seq = 1, offset = 0;
    const int frames = 1 + rng() % 5;
    for (int f = 0; f < frames; ++f) {
      const int kind = rng() % 6;
      if (kind <= 2) {  // A DATA frame, usually in order.
        std::string payload(1 + rng() % 3000, static_cast<char>('a' + rng() % 26));
        const bool skew = kind == 2 && rng() % 2;
        wire += DataFrame(skew ? seq + 1 : seq, skew ? offset + 7 : offset, payload);
        ++seq;
        offset += payload.size();
        expected += payload;
      } else if (kind == 3) {  // END_STREAM, right or wrong.
        const uint64_t total = rng() % 2 ? offset : offset + rng() % 100;
        wire += peer::EncodeEndStream(seq++, 0, NoDigest(total));
      } else if (kind == 4) {  // Garbage.
        std::string junk(1 + rng() % 80, '\0');
        for (auto& c : junk) c = static_cast<char>(rng());
        wire += junk;
      } else {  // A header claiming a huge frame.
        wire += DataFrame(seq++, offset, "x").substr(0, wire::kFrameHeaderSize - 20) +
                std::string(20, '\xff');
      }
    }
    // Write what fits and close: the receiver must finish on its own.
    (void)net::SendAll(conn.src.get(), wire, absl::Now() + absl::Seconds(1));
    conn.src.Reset();
    auto pipe = MakePipe();
    std::string got;
    std::thread drain([&] {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(pipe->read.get(), buf, sizeof(buf))) > 0) got.append(buf, n);
    });
    std::atomic<bool> cancel{false};
    const absl::Time start = absl::Now();
    auto r = (*receiver)->Receive(pipe->write.get(), cancel);
    pipe->write.Reset();
    drain.join();
    EXPECT_LT(absl::Now() - start, absl::Seconds(3)) << "iteration " << iter;
    if (r.ok()) {
      ++ok;
      EXPECT_EQ(got, expected.substr(0, got.size())) << "iteration " << iter;
      EXPECT_EQ(r->total_bytes, got.size());
    } else {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
}

TEST(StreamTest, ReceiverCancelsWhileWaiting) {
  for (DataPath p : {DataPath::kCopy, DataPath::kSplice}) {
    Conn conn = Connect();
    auto ring = NewQueue(16);
    auto receiver = StreamReceiver::Create(ring->get(), std::move(conn.dst), 0, 1, Opts(p));
    auto pipe = MakePipe();
    std::atomic<bool> cancel{false};
    std::thread t([&] {
      absl::SleepFor(absl::Milliseconds(200));
      cancel = true;
    });
    auto r = (*receiver)->Receive(pipe->write.get(), cancel);
    t.join();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << DataPathName(p) << r.status();
  }
}

TEST(StreamTest, CommitVerdictReachesSender) {
  Conn conn = Connect();
  auto ring = NewQueue(16);
  auto sender = StreamSender::Create(ring->get(), std::move(conn.src), 0, Opts(DataPath::kCopy));
  auto ring2 = NewQueue(16);
  auto receiver =
      StreamReceiver::Create(ring2->get(), std::move(conn.dst), 0, 1, Opts(DataPath::kCopy));
  ASSERT_TRUE((*receiver)
                  ->SendCommit(absl::InvalidArgumentError(
                      "ioctl(VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE RESUMING->STOP): EINVAL"))
                  .ok());
  std::atomic<bool> cancel{false};
  absl::Status s = (*sender)->AwaitCommit(absl::Seconds(5), cancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("RESUMING->STOP"), std::string::npos) << s;
}

// The source reads the destination's verdict by the same rules on every transport (the DPDK
// link's in link_stream_test): an ERROR that carries code 0 is ABORTED, and a verdict that is not
// the destination's next frame on the connection (HELLO_ACK was 0, so 1) is refused.
TEST(StreamTest, VerdictRulesMatchEveryTransport) {
  struct Case {
    wire::FrameType type;
    uint32_t code;
    uint64_t seq;
    absl::StatusCode want;
  };
  for (const Case& c : {Case{wire::FrameType::kError, 0, 1, absl::StatusCode::kAborted},
                        Case{wire::FrameType::kCommit, 0, 5, absl::StatusCode::kDataLoss},
                        Case{wire::FrameType::kCommit, 0, 1, absl::StatusCode::kOk}}) {
    Conn conn = Connect();
    auto sender = StreamSender::Create(nullptr, std::move(conn.src), 0, Opts(DataPath::kCopy));
    ASSERT_TRUE(sender.ok()) << sender.status();
    ASSERT_TRUE(net::SendAll(conn.dst.get(),
                             peer::SealVerdict(
                                 peer::EncodeStatusFrame(c.type, c.seq, 0, {c.code, "why"}),
                                 nullptr),
                             absl::Now() + absl::Seconds(1))
                    .ok());
    std::atomic<bool> cancel{false};
    absl::Status s = (*sender)->AwaitCommit(absl::Seconds(5), cancel);
    EXPECT_EQ(s.code(), c.want) << s;
    if (c.want == absl::StatusCode::kDataLoss) {
      EXPECT_NE(s.message().find("sequence number 5, expected 1"), std::string::npos) << s;
    }
  }
}

// The stream's rules are the same on every transport (the DPDK link's in link_stream_test):
// PRE_COPY data after END_PHASE(PRE_COPY) is refused, on both data paths.
TEST(StreamTest, PreCopyDataAfterItsPhaseEndedIsDataLoss) {
  for (DataPath p : {DataPath::kCopy, DataPath::kSplice}) {
    Conn conn = Connect();
    auto receiver = StreamReceiver::Create(nullptr, std::move(conn.dst), 0, 1, Opts(p));
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    auto pipe = MakePipe();
    ASSERT_TRUE(pipe.ok());
    const std::string frames = peer::EncodeEndPhase(1, 0, Phase::kPreCopy, 0) +
                               DataFrame(2, 0, "late", 0, Phase::kPreCopy);
    ASSERT_TRUE(net::SendAll(conn.src.get(), frames, absl::Now() + absl::Seconds(1)).ok());
    std::atomic<bool> cancel{false};
    auto r = (*receiver)->Receive(pipe->write.get(), cancel);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << DataPathName(p) << r.status();
    EXPECT_NE(r.status().message().find("after the PRE_COPY phase ended"), std::string::npos)
        << DataPathName(p) << r.status();
  }
}

TEST(StreamTest, WriteFailureOnDataFdIsReported) {
  ::signal(SIGPIPE, SIG_IGN);
  Conn conn = Connect();
  auto ring = NewQueue(16);
  auto receiver =
      StreamReceiver::Create(ring->get(), std::move(conn.dst), 0, 1, Opts(DataPath::kCopy));
  auto pipe = MakePipe();
  pipe->read.Reset();  // The "device" refuses every write (EPIPE).
  ASSERT_TRUE(
      net::SendAll(conn.src.get(), DataFrame(1, 0, "abc"), absl::Now() + absl::Seconds(1)).ok());
  std::atomic<bool> cancel{false};
  auto r = (*receiver)->Receive(pipe->write.get(), cancel);
  EXPECT_NE(r.status().message().find("write(data fd"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("EPIPE"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace migmover::stream
