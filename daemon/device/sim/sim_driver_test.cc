#include "daemon/device/sim/sim_driver.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon/device/vfio_uapi.h"
#include "gtest/gtest.h"
#include "transport/base/errno_status.h"

namespace migmover::sim {
namespace {

struct Sim {
  std::shared_ptr<SimulatedDriver> driver;
  std::unique_ptr<VfioDevice> dev;
};

Sim Make(const std::string& spec_text) {
  auto spec = ParseSimDeviceSpec(spec_text);
  EXPECT_TRUE(spec.ok()) << spec.status();
  Sim s;
  auto dev = OpenSimulatedDevice(*spec, &s.driver);
  EXPECT_TRUE(dev.ok()) << dev.status();
  s.dev = std::move(*dev);
  return s;
}

// Reads what is there now (PRE_COPY semantics: stop at EAGAIN once nothing is pending), or
// everything to EOF.
struct ReadResult {
  std::vector<uint8_t> bytes;
  int short_reads = 0;
  int eagains = 0;
};

void ReadSome(int fd, size_t want, ReadResult* out) {
  std::vector<uint8_t> buf(1 << 20);
  while (want > 0) {
    ssize_t n = ::read(fd, buf.data(), std::min(buf.size(), want));
    if (n > 0) {
      out->bytes.insert(out->bytes.end(), buf.data(), buf.data() + n);
      if (static_cast<size_t>(n) < std::min(buf.size(), want)) ++out->short_reads;
      want -= n;
    } else if (n == 0) {
      return;
    } else if (errno == EAGAIN) {
      ++out->eagains;
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 100);
    } else {
      ADD_FAILURE() << "read: " << ErrnoName(errno);
      return;
    }
  }
}

void ReadToEof(int fd, ReadResult* out) { ReadSome(fd, SIZE_MAX, out); }

// Writes everything; returns the errno of the first failed write (0 if none).
int WriteAll(int fd, const uint8_t* p, size_t n, int* short_writes = nullptr) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w > 0) {
      if (short_writes && static_cast<size_t>(w) < n) ++*short_writes;
      p += w;
      n -= w;
    } else if (w < 0 && errno == EAGAIN) {
      pollfd pf{fd, POLLOUT, 0};
      ::poll(&pf, 1, 100);
    } else {
      return errno;
    }
  }
  return 0;
}

// Saves a device through PRE_COPY (reading while precopy info reports data) then STOP_COPY.
std::vector<uint8_t> SaveWithPrecopy(Sim& src, ReadResult* rr) {
  auto fd = src.dev->SetState(MigState::kPreCopy);
  EXPECT_TRUE(fd.ok()) << fd.status();
  EXPECT_TRUE(fd->valid());
  for (int round = 0; round < 1000; ++round) {
    auto info = src.dev->GetPrecopyInfo(fd->get());
    EXPECT_TRUE(info.ok()) << info.status();
    uint64_t pending = info->initial_bytes + info->dirty_bytes;
    if (pending == 0) break;
    ReadSome(fd->get(), pending, rr);
  }
  auto same = src.dev->SetState(MigState::kStopCopy);
  EXPECT_TRUE(same.ok()) << same.status();
  EXPECT_FALSE(same->valid());  // PRE_COPY -> STOP_COPY keeps the fd.
  ReadToEof(fd->get(), rr);
  EXPECT_TRUE(src.dev->SetState(MigState::kStop).ok());
  return rr->bytes;
}

absl::Status Resume(Sim& dst, const std::vector<uint8_t>& stream, int* write_err = nullptr,
                    int* short_writes = nullptr) {
  auto fd = dst.dev->SetState(MigState::kResuming);
  if (!fd.ok()) return fd.status();
  int err = WriteAll(fd->get(), stream.data(), stream.size(), short_writes);
  if (write_err) *write_err = err;
  return dst.dev->SetState(MigState::kRunning).status();
}

TEST(SimDriverTest, RoundTripWithPrecopyMovesExactState) {
  ::signal(SIGPIPE, SIG_IGN);
  Sim src = Make("size=4MiB,chunk=64KiB,seed=77");
  Sim dst = Make("size=4MiB,chunk=4KiB,seed=1");
  ReadResult rr;
  auto stream = SaveWithPrecopy(src, &rr);
  EXPECT_GT(stream.size(), 4u << 20);
  ASSERT_TRUE(Resume(dst, stream).ok());
  EXPECT_EQ(dst.driver->state(), MigState::kRunning);
  EXPECT_EQ(dst.driver->state_digest(), src.driver->state_digest());
}

// STOP -> STOP_COPY straight away (no precopy): the whole state in one stream, resumed exactly.
void ExpectStopCopyOnlyRoundTrip(const std::string& src_spec, const std::string& dst_spec) {
  Sim src = Make(src_spec);
  Sim dst = Make(dst_spec);
  ASSERT_TRUE(src.dev->SetState(MigState::kStop).ok());
  auto fd = src.dev->SetState(MigState::kStopCopy);
  ASSERT_TRUE(fd.ok() && fd->valid());
  ReadResult rr;
  ReadToEof(fd->get(), &rr);
  ASSERT_TRUE(Resume(dst, rr.bytes).ok());
  EXPECT_EQ(dst.driver->state(), MigState::kRunning);
  EXPECT_EQ(dst.driver->state_digest(), src.driver->state_digest());
}

TEST(SimDriverTest, StopCopyWithoutPrecopyMovesExactState) {
  ExpectStopCopyOnlyRoundTrip("size=1MiB,chunk=64KiB,seed=5", "size=1MiB");
}

// Precopies a dirtying 2 MiB device until dirty data was reported and read, then STOP_COPY to
// the end, and resumes the stream into a fresh device.
void ExpectDirtyChunksResent(const std::string& src_spec) {
  Sim src = Make(src_spec);
  Sim dst = Make("size=2MiB");
  auto fd = src.dev->SetState(MigState::kPreCopy);
  ASSERT_TRUE(fd.ok());
  ReadResult rr;
  bool saw_dirty = false;
  for (int i = 0; i < 200 && !saw_dirty; ++i) {
    auto info = src.dev->GetPrecopyInfo(fd->get());
    ASSERT_TRUE(info.ok());
    if (info->initial_bytes == 0 && info->dirty_bytes > 0) saw_dirty = true;
    ReadSome(fd->get(), info->initial_bytes + info->dirty_bytes, &rr);
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_TRUE(saw_dirty);
  ASSERT_TRUE(src.dev->SetState(MigState::kStopCopy).ok());
  ReadToEof(fd->get(), &rr);
  EXPECT_GT(rr.bytes.size(), 2u << 20);
  ASSERT_TRUE(Resume(dst, rr.bytes).ok());
  EXPECT_EQ(dst.driver->state_digest(), src.driver->state_digest());
  EXPECT_EQ(dst.driver->content_digest(), src.driver->content_digest());
}

TEST(SimDriverTest, DirtyingWhileRunningIsResent) {
  ExpectDirtyChunksResent("size=2MiB,chunk=64KiB,dirty_rate=64MiB");
}

TEST(SimDriverTest, PrecopyInfoShrinksAsRead) {
  Sim src = Make("size=1MiB,chunk=64KiB,initial=512KiB");
  auto fd = src.dev->SetState(MigState::kPreCopy);
  ASSERT_TRUE(fd.ok());
  auto first = src.dev->GetPrecopyInfo(fd->get());
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->initial_bytes, 32u + 24u + 8u * (32u + (64u << 10)));
  EXPECT_EQ(first->dirty_bytes, 0u);
  ReadResult rr;
  ReadSome(fd->get(), 1000, &rr);
  auto second = src.dev->GetPrecopyInfo(fd->get());
  EXPECT_EQ(second->initial_bytes, first->initial_bytes - 1000);
  ReadSome(fd->get(), second->initial_bytes, &rr);
  auto drained = src.dev->GetPrecopyInfo(fd->get());
  EXPECT_EQ(drained->initial_bytes + drained->dirty_bytes, 0u);  // Temporary end of stream.
  // Outside PRE_COPY the query is refused.
  ASSERT_TRUE(src.dev->SetState(MigState::kStopCopy).ok());
  EXPECT_EQ(StatusErrno(src.dev->GetPrecopyInfo(fd->get()).status()), EINVAL);
}

TEST(SimDriverTest, TruncatedStreamFailsResumeAndResetRecovers) {
  Sim src = Make("size=1MiB,chunk=64KiB");
  Sim dst = Make("size=1MiB");
  ReadResult rr;
  auto stream = SaveWithPrecopy(src, &rr);
  stream.resize(stream.size() / 2);
  absl::Status s = Resume(dst, stream);
  EXPECT_EQ(StatusErrno(s), EINVAL) << s;
  EXPECT_EQ(dst.driver->state(), MigState::kResuming);  // Never half-resumed into RUNNING.
  ASSERT_TRUE(dst.dev->Reset().ok());
  EXPECT_EQ(dst.driver->state(), MigState::kRunning);
}

TEST(SimDriverTest, CorruptedByteIsCaught) {
  ::signal(SIGPIPE, SIG_IGN);
  Sim src = Make("size=1MiB,chunk=64KiB,corrupt_at=200000");
  Sim dst = Make("size=1MiB");
  ReadResult rr;
  auto stream = SaveWithPrecopy(src, &rr);
  int write_err = 0;
  absl::Status s = Resume(dst, stream, &write_err);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(dst.driver->state(), MigState::kResuming);
}

// The benchmark device: payloads from a prepared image, spliced into the pipe. Through precopy
// and dirtying (resent chunks come from another slot) the destination, which learns the content
// kind from BEGIN, ends with the source's exact state.
TEST(SimDriverTest, ImageContentRoundTripWithPrecopyAndDirtying) {
  ExpectDirtyChunksResent("size=2MiB,chunk=64KiB,seed=9,dirty_rate=64MiB,content=image");
}

// Moves `src_fd` to EOF into `dst_fd` through a small buffer, flipping the byte at `flip_at`.
void Pump(int src_fd, int dst_fd, uint64_t flip_at, uint64_t* moved) {
  std::vector<uint8_t> buf(256 << 10);
  *moved = 0;
  while (true) {
    ssize_t n = ::read(src_fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    ASSERT_GE(n, 0) << ErrnoName(errno);
    if (n == 0) return;
    if (flip_at >= *moved && flip_at < *moved + n) buf[flip_at - *moved] ^= 0x01;
    if (WriteAll(dst_fd, buf.data(), n) != 0) return;  // The device refused the stream.
    *moved += n;
  }
}

absl::Status ImageStopCopy(const std::string& spec, uint64_t flip_at, uint64_t* moved) {
  Sim src = Make(spec);
  auto parsed = ParseSimDeviceSpec(spec);
  Sim dst = Make(absl::StrCat("size=", parsed->state_size));
  EXPECT_TRUE(src.dev->SetState(MigState::kStop).ok());
  auto out = src.dev->SetState(MigState::kStopCopy);
  auto in = dst.dev->SetState(MigState::kResuming);
  EXPECT_TRUE(out.ok() && in.ok());
  Pump(out->get(), in->get(), flip_at, moved);
  in->Reset();
  absl::Status s = dst.dev->SetState(MigState::kRunning).status();
  if (s.ok()) {
    EXPECT_EQ(dst.driver->content_digest(), src.driver->content_digest());
  } else {
    EXPECT_EQ(dst.driver->state(), MigState::kResuming);  // Never half-resumed.
  }
  return s;
}

// A device larger than the image (256 MiB) serves its chunks from the slots again, and a last
// chunk shorter than the others from a slot's first bytes.
TEST(SimDriverTest, ImageContentLargerThanItsImage) {
  ::signal(SIGPIPE, SIG_IGN);
  uint64_t moved = 0;
  absl::Status s = ImageStopCopy("size=300MiB,chunk=1MiB,content=image,seed=3", ~0ull, &moved);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_GT(moved, 300ull << 20);
  s = ImageStopCopy("size=1000000,chunk=64KiB,content=image", ~0ull, &moved);
  EXPECT_TRUE(s.ok()) << s;
}

// One bit flipped anywhere: in a payload (caught by the record digests at END) or in a header.
TEST(SimDriverTest, ImageContentCatchesAFlippedBit) {
  ::signal(SIGPIPE, SIG_IGN);
  const std::string spec = "size=4MiB,chunk=256KiB,content=image";
  uint64_t moved = 0;
  for (uint64_t at : {uint64_t{56 + 32 + 1000}, uint64_t{3u << 20}, uint64_t{56 + 5}}) {
    absl::Status s = ImageStopCopy(spec, at, &moved);
    EXPECT_EQ(StatusErrno(s), EINVAL) << "flip at " << at << ": " << s;
  }
}

TEST(SimDriverTest, StreamForOtherDeviceSizeIsRefused) {
  Sim src = Make("size=1MiB");
  Sim dst = Make("size=2MiB");
  ReadResult rr;
  auto stream = SaveWithPrecopy(src, &rr);
  EXPECT_FALSE(Resume(dst, stream).ok());
}

TEST(SimDriverTest, ShortIoStillExact) {
  ::signal(SIGPIPE, SIG_IGN);
  Sim src = Make("size=256KiB,chunk=16KiB,short_io=1");
  Sim dst = Make("size=256KiB,short_io=1");
  ReadResult rr;
  auto stream = SaveWithPrecopy(src, &rr);
  EXPECT_GT(rr.short_reads, 0);
  EXPECT_GT(rr.eagains, 0);
  int short_writes = 0;
  ASSERT_TRUE(Resume(dst, stream, nullptr, &short_writes).ok());
  EXPECT_GT(short_writes, 0);
  EXPECT_EQ(dst.driver->state_digest(), src.driver->state_digest());
}

TEST(SimDriverTest, InjectedArcFailureKeepsLastState) {
  Sim src = Make("size=64KiB,fail_arc=STOP:STOP_COPY:EIO");
  auto r = src.dev->SetState(MigState::kStopCopy);
  EXPECT_EQ(StatusErrno(r.status()), EIO);
  EXPECT_EQ(src.driver->state(), MigState::kStop);
  EXPECT_EQ(src.dev->last_known_state(), MigState::kStop);
  EXPECT_TRUE(src.dev->SetState(MigState::kRunning).ok());
}

TEST(SimDriverTest, InjectedFailureIntoErrorNeedsReset) {
  Sim src = Make("size=64KiB,fail_arc=RUNNING_P2P:STOP:ENODEV:error");
  auto r = src.dev->SetState(MigState::kStop);
  EXPECT_EQ(StatusErrno(r.status()), ENODEV);
  EXPECT_EQ(src.dev->last_known_state(), MigState::kError);
  // In ERROR every request is refused (FindFsmPath: ERROR is not a state the device has).
  EXPECT_EQ(StatusErrno(src.dev->SetState(MigState::kRunning).status()), EINVAL);
  ASSERT_TRUE(src.dev->Reset().ok());
  EXPECT_EQ(src.driver->state(), MigState::kRunning);
}

TEST(SimDriverTest, FileModeReadsZeroAtTemporaryEndLikeMtty) {
  Sim src = Make("size=1MiB,chunk=64KiB,save_fd=file,dirty_rate=32MiB");
  Sim dst = Make("size=1MiB");
  auto fd = src.dev->SetState(MigState::kPreCopy);
  ASSERT_TRUE(fd.ok() && fd->valid());
  ReadResult rr;
  auto info = src.dev->GetPrecopyInfo(fd->get());
  ASSERT_TRUE(info.ok());
  ReadSome(fd->get(), info->initial_bytes, &rr);
  // Drained for now: read returns 0 (not EOF for good), as mtty's does.
  std::vector<uint8_t> buf(1 << 20);
  int zeros = 0;
  bool more_after_zero = false;
  for (int i = 0; i < 400 && !more_after_zero; ++i) {
    ssize_t n = ::read(fd->get(), buf.data(), buf.size());
    ASSERT_GE(n, 0);
    if (n == 0) {
      ++zeros;
      absl::SleepFor(absl::Milliseconds(2));
    } else {
      rr.bytes.insert(rr.bytes.end(), buf.data(), buf.data() + n);
      more_after_zero = zeros > 0;
    }
  }
  EXPECT_GT(zeros, 0);
  EXPECT_TRUE(more_after_zero);  // Dirty data arrived after a temporary end.
  ASSERT_TRUE(src.dev->SetState(MigState::kStopCopy).ok());
  ReadToEof(fd->get(), &rr);  // All STOP_COPY data was produced inside the arc.
  ASSERT_TRUE(Resume(dst, rr.bytes).ok());
  EXPECT_EQ(dst.driver->state_digest(), src.driver->state_digest());
}

TEST(SimDriverTest, FileModeStopCopyWithoutPrecopy) {
  ExpectStopCopyOnlyRoundTrip("size=3MiB,chunk=64KiB,save_fd=file", "size=3MiB");
}

TEST(SimDriverTest, KernelEnvelopeChecks) {
  Sim s = Make("size=64KiB");
  auto fd = s.driver->OpenDeviceFd();
  ASSERT_TRUE(fd.ok());
  VfioFeatureBuffer b{};
  auto call = [&](uint32_t argsz, uint32_t flags) {
    std::memset(&b, 0, sizeof(b));
    b.argsz = argsz;
    b.flags = flags;
    return s.driver->Ioctl(fd->get(), VFIO_DEVICE_FEATURE, &b);
  };
  EXPECT_EQ(call(4, VFIO_DEVICE_FEATURE_GET | 1), -EINVAL);
  EXPECT_EQ(call(16, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET | 2), -EINVAL);
  EXPECT_EQ(call(8, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET |
                        VFIO_DEVICE_FEATURE_SET | 2),
            0);
  EXPECT_EQ(call(16, VFIO_DEVICE_FEATURE_SET | 1), -EINVAL);  // MIGRATION is GET-only.
  EXPECT_EQ(call(16, VFIO_DEVICE_FEATURE_GET | 5), -ENOTTY);
  EXPECT_EQ(call(16, VFIO_DEVICE_FEATURE_GET | (1u << 20) | 1), -EINVAL);
  EXPECT_EQ(call(12, VFIO_DEVICE_FEATURE_GET | 1), -EINVAL);  // Payload too small.
  EXPECT_EQ(call(16, VFIO_DEVICE_FEATURE_GET | 1), 0);
  // A failed SET echoes the requested state and returns no fd.
  std::memset(&b, 0, sizeof(b));
  b.argsz = 16;
  b.flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
  vfio_device_feature_mig_state m{VFIO_DEVICE_STATE_ERROR, 99};
  std::memcpy(b.payload, &m, sizeof(m));
  EXPECT_EQ(s.driver->Ioctl(fd->get(), VFIO_DEVICE_FEATURE, &b), -EINVAL);
  std::memcpy(&m, b.payload, sizeof(m));
  EXPECT_EQ(m.device_state, VFIO_DEVICE_STATE_ERROR);
  EXPECT_EQ(m.data_fd, -1);
  // Unknown fds and ioctls.
  EXPECT_EQ(s.driver->Ioctl(fd->get(), 0x3B70, nullptr), -ENOTTY);
}

TEST(SimDriverTest, BlockedArcsAreRefused) {
  Sim s = Make("size=64KiB");
  ASSERT_TRUE(s.dev->SetState(MigState::kStop).ok());
  auto fd = s.dev->SetState(MigState::kStopCopy);
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(StatusErrno(s.dev->SetState(MigState::kPreCopy).status()), EINVAL);
  EXPECT_EQ(StatusErrno(s.dev->SetState(MigState::kPreCopyP2P).status()), EINVAL);
  EXPECT_EQ(s.driver->state(), MigState::kStopCopy);
}

TEST(SimDeviceSpecTest, ParsesAndRejects) {
  auto spec = ParseSimDeviceSpec("size=1GiB,chunk=128KiB,dirty_rate=10MB,features=stop_copy+p2p");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->state_size, 1ull << 30);
  EXPECT_EQ(spec->chunk_size, 128u << 10);
  EXPECT_EQ(spec->dirty_rate, 10000000u);
  EXPECT_FALSE(spec->features.pre_copy());
  EXPECT_FALSE(ParseSimDeviceSpec("size=lots").ok());
  EXPECT_FALSE(ParseSimDeviceSpec("colour=blue").ok());
  EXPECT_FALSE(ParseSimDeviceSpec("chunk=2MiB").ok());
  EXPECT_FALSE(ParseSimDeviceSpec("fail_arc=STOP").ok());
  EXPECT_EQ(ParseSimDeviceSpec("fail_arc=resuming:stop:EIO")->fail_errno, EIO);
  auto stall = ParseSimDeviceSpec("size=64MiB,stall=8MiB:20000");
  ASSERT_TRUE(stall.ok()) << stall.status();
  EXPECT_EQ(stall->resume_stall_at, 8u << 20);
  EXPECT_EQ(stall->resume_stall_ms, 20000u);
  EXPECT_EQ(ParseSimDeviceSpec(stall->ToString())->resume_stall_ms, 20000u);
  EXPECT_FALSE(ParseSimDeviceSpec("stall=8MiB").ok());
  auto image = ParseSimDeviceSpec("size=1GiB,content=image");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->content, SimDeviceSpec::Content::kImage);
  EXPECT_EQ(ParseSimDeviceSpec(image->ToString())->content, SimDeviceSpec::Content::kImage);
  // The image (256 MiB at most, and a digest per slot) is charged with the rest of the device's
  // memory.
  EXPECT_EQ(image->BookkeepingBytes(),
            ParseSimDeviceSpec("size=1GiB")->BookkeepingBytes() + (256u << 20) + 1024 * 16);
  EXPECT_FALSE(ParseSimDeviceSpec("content=image,short_io=1").ok());
  EXPECT_FALSE(ParseSimDeviceSpec("content=image,save_fd=file").ok());
  EXPECT_FALSE(ParseSimDeviceSpec("content=image,corrupt_at=5").ok());
  EXPECT_FALSE(ParseSimDeviceSpec("content=random").ok());
  EXPECT_FALSE(ParseSimDeviceSpec("stall=8MiB:0").ok());
}

}  // namespace
}  // namespace migmover::sim
