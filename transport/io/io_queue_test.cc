// What every IoQueue backend must do alike: the same request on the same fd state completes with
// the same result, whether io_uring or plain syscalls carry it.
#include "transport/io/io_queue.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"

#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"
#include "transport/io/io_queue_factory.h"

namespace migmover::io {
namespace {

struct Pair {
  UniqueFd a, b;
};

Pair MakePipe(bool nonblocking) {
  int p[2];
  EXPECT_EQ(::pipe2(p, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0)), 0);
  return {UniqueFd(p[0]), UniqueFd(p[1])};
}

Pair MakeSocketPair() {
  int s[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
  return {UniqueFd(s[0]), UniqueFd(s[1])};
}

class IoQueueTest : public ::testing::TestWithParam<IoEngine> {
 protected:
  void SetUp() override {
    auto q = CreateIoQueue(GetParam(), 16);
    if (!q.ok() && GetParam() == IoEngine::kUring) {
      GTEST_SKIP() << "io_uring refused here: " << q.status();
    }
    ASSERT_TRUE(q.ok()) << q.status();
    q_ = std::move(*q);
  }

  // Waits until a completion other than a cancel's arrives (or `timeout`); fails if none.
  Completion Next(absl::Duration timeout = absl::Seconds(5)) {
    Completion c;
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      absl::StatusOr<bool> got = q_->Wait(deadline - absl::Now(), &c);
      EXPECT_TRUE(got.ok()) << got.status();
      if (!got.ok() || !*got) break;
      if (c.user_data != kCancelTag) return c;
    }
    ADD_FAILURE() << "no completion within " << timeout;
    return Completion{0, -ETIMEDOUT, 0};
  }

  // True when nothing but cancel notices completes within `for_how_long`.
  bool Quiet(absl::Duration for_how_long = absl::Milliseconds(30)) {
    Completion c;
    const absl::Time deadline = absl::Now() + for_how_long;
    while (absl::Now() < deadline) {
      absl::StatusOr<bool> got = q_->Wait(deadline - absl::Now(), &c);
      if (!got.ok()) return false;
      if (*got && c.user_data != kCancelTag) return false;
    }
    return true;
  }

  std::unique_ptr<IoQueue> q_;
};

// A read of an empty pipe waits for data, blocking or O_NONBLOCK alike (io_uring waits on
// every file whose poll tracks readiness), and then completes with what arrived.
TEST_P(IoQueueTest, AReadWaitsForDataOnAPipeWhateverItsMode) {
  for (bool nonblocking : {false, true}) {
    Pair p = MakePipe(nonblocking);
    char buf[16];
    q_->Read(p.a.get(), buf, sizeof(buf), kUnregistered, 7);
    ASSERT_TRUE(q_->Submit().ok());
    EXPECT_TRUE(Quiet()) << "nonblocking=" << nonblocking;
    ASSERT_EQ(::write(p.b.get(), "abc", 3), 3);
    Completion c = Next();
    EXPECT_EQ(c.user_data, 7u);
    EXPECT_EQ(c.res, 3);
    EXPECT_EQ(std::string(buf, 3), "abc");
  }
}

TEST_P(IoQueueTest, AReadAtTheEndOfAStreamCompletesWithZero) {
  Pair p = MakePipe(false);
  p.b.Reset();
  char buf[4];
  q_->Read(p.a.get(), buf, sizeof(buf), kUnregistered, 1);
  Completion c = Next();
  EXPECT_EQ(c.res, 0);
}

// A frame header arriving in two pieces: a MSG_WAITALL recv may complete short (always on the
// syscall backend, which never blocks); asking again for the rest gets it all, in order.
TEST_P(IoQueueTest, SendsAndRecvsMoveEveryByteInOrder) {
  Pair s = MakeSocketPair();
  std::string sent(100000, '\0');
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>(i * 7);
  std::string got(sent.size(), '\0');
  size_t out = 0, in = 0;
  q_->Send(s.a.get(), sent.data(), sent.size(), MSG_NOSIGNAL, 1);
  q_->Recv(s.b.get(), got.data(), got.size(), MSG_WAITALL, 2);
  while (out < sent.size() || in < got.size()) {
    Completion c = Next();
    ASSERT_GT(c.res, 0) << "request " << c.user_data << ": " << c.res;
    if (c.user_data == 1) {
      out += c.res;
      if (out < sent.size()) q_->Send(s.a.get(), sent.data() + out, sent.size() - out, 0, 1);
    } else {
      in += c.res;
      if (in < got.size()) q_->Recv(s.b.get(), got.data() + in, got.size() - in, MSG_WAITALL, 2);
    }
  }
  EXPECT_EQ(got, sent);
}

// A write into a full pipe waits until the reader makes room.
TEST_P(IoQueueTest, AWriteIntoAFullPipeWaitsForRoom) {
  Pair p = MakePipe(true);
  std::vector<char> fill(1 << 20, 'x');
  while (::write(p.b.get(), fill.data(), fill.size()) > 0) {
  }
  ASSERT_EQ(errno, EAGAIN);
  q_->Write(p.b.get(), "z", 1, kUnregistered, 3);
  ASSERT_TRUE(q_->Submit().ok());
  EXPECT_TRUE(Quiet());
  ASSERT_GT(::read(p.a.get(), fill.data(), fill.size()), 0);
  Completion c = Next();
  EXPECT_EQ(c.user_data, 3u);
  EXPECT_EQ(c.res, 1);
}

// A write into a blocking pipe with less room than asked for moves what fits and completes
// (io_uring's result); it never holds the thread until a reader makes room for all of it.
TEST_P(IoQueueTest, AWriteIntoABlockingPipeWithLittleRoomMovesWhatFits) {
  Pair p = MakePipe(false);
  ASSERT_EQ(::fcntl(p.b.get(), F_SETFL, O_NONBLOCK), 0);
  std::vector<char> fill(1 << 20, 'x');
  while (::write(p.b.get(), fill.data(), fill.size()) > 0) {
  }
  ASSERT_EQ(::fcntl(p.b.get(), F_SETFL, 0), 0);  // Blocking again, and full.
  ASSERT_EQ(::read(p.a.get(), fill.data(), 8192), 8192);
  const uint32_t want = 1 << 20;
  q_->Write(p.b.get(), fill.data(), want, kUnregistered, 9);
  // Fail-safe only: if the queue blocked in write(2), a reader frees it after 5 s, and the
  // assertions below then fail (it would have written everything).
  absl::Notification done;
  std::thread rescue([&] {
    if (done.WaitForNotificationWithTimeout(absl::Seconds(5))) return;
    std::vector<char> sink(1 << 16);
    while (::read(p.a.get(), sink.data(), sink.size()) > 0) {
    }
  });
  Completion c = Next();
  done.Notify();
  const int32_t res = c.res;
  p.b.Reset();  // Lets the rescue reader end, if it ran.
  rescue.join();
  EXPECT_EQ(c.user_data, 9u);
  EXPECT_GT(res, 0);
  EXPECT_LT(res, static_cast<int32_t>(want));
}

TEST_P(IoQueueTest, APollCompletesWithTheReadyEvents) {
  Pair s = MakeSocketPair();
  q_->Poll(s.b.get(), POLLIN, 4);
  ASSERT_TRUE(q_->Submit().ok());
  EXPECT_TRUE(Quiet());
  ASSERT_EQ(::send(s.a.get(), "x", 1, 0), 1);
  Completion c = Next();
  EXPECT_EQ(c.user_data, 4u);
  EXPECT_TRUE(c.res & POLLIN) << c.res;
}

// CancelFd withdraws every request on that fd and no other; Cancel one request by its tag.
TEST_P(IoQueueTest, CancelsWithdrawOnlyWhatTheyName) {
  Pair p1 = MakePipe(false), p2 = MakePipe(false), p3 = MakePipe(false);
  char b1[4], b2[4], b3[4];
  q_->Read(p1.a.get(), b1, sizeof(b1), kUnregistered, 11);
  q_->Read(p2.a.get(), b2, sizeof(b2), kUnregistered, 12);
  q_->Read(p3.a.get(), b3, sizeof(b3), kUnregistered, 13);
  ASSERT_TRUE(q_->Submit().ok());
  ASSERT_TRUE(q_->CancelFd(p1.a.get()).ok());
  Completion c = Next();
  EXPECT_EQ(c.user_data, 11u);
  EXPECT_EQ(c.res, -ECANCELED);
  ASSERT_TRUE(q_->Cancel(13).ok());
  c = Next();
  EXPECT_EQ(c.user_data, 13u);
  EXPECT_EQ(c.res, -ECANCELED);
  EXPECT_TRUE(Quiet());
  ASSERT_EQ(::write(p2.b.get(), "ok", 2), 2);
  c = Next();
  EXPECT_EQ(c.user_data, 12u);
  EXPECT_EQ(c.res, 2);
}

TEST_P(IoQueueTest, ARequestOnABadFdCompletesWithEbadf) {
  char buf[4];
  q_->Read(1 << 20, buf, sizeof(buf), kUnregistered, 5);
  Completion c = Next();
  EXPECT_EQ(c.user_data, 5u);
  EXPECT_EQ(c.res, -EBADF);
}

TEST_P(IoQueueTest, AWaitWithNothingQueuedTimesOut) {
  Completion c;
  absl::StatusOr<bool> got = q_->Wait(absl::Milliseconds(20), &c);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(*got);
  EXPECT_TRUE(q_->status().ok());
}

INSTANTIATE_TEST_SUITE_P(Engines, IoQueueTest,
                         ::testing::Values(IoEngine::kUring, IoEngine::kSyscalls),
                         [](const ::testing::TestParamInfo<IoEngine>& info) {
                           return std::string(IoEngineName(info.param));
                         });

TEST(IoEngineTest, NamesParseBackAndOthersAreRefused) {
  for (IoEngine e : {IoEngine::kAuto, IoEngine::kUring, IoEngine::kSyscalls}) {
    absl::StatusOr<IoEngine> back = ParseIoEngine(IoEngineName(e));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, e);
  }
  absl::StatusOr<IoEngine> bad = ParseIoEngine("epoll");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("auto, uring or syscalls"), std::string::npos);
}

// Asking for syscalls is a choice, not a fallback: no refusal is reported.
TEST(IoEngineTest, AskingForSyscallsChoosesThemWithoutAReason) {
  absl::StatusOr<EngineChoice> c = ChooseIoEngine(IoEngine::kSyscalls);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->engine, IoEngine::kSyscalls);
  EXPECT_TRUE(c->uring_refused.ok());
}

}  // namespace
}  // namespace migmover::io
