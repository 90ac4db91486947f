// VfioDevice against a scripted seam: the exact bytes it hands the kernel and how it reads the
// kernel's answers.
#include "daemon/device/vfio_device.h"

#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>

#include "daemon/device/vfio_uapi.h"
#include "gtest/gtest.h"
#include "transport/base/errno_status.h"

namespace migmover {
namespace {

struct Call {
  unsigned long request;
  uint32_t argsz = 0;
  uint32_t flags = 0;
  uint32_t device_state = 0;
};

// Answers from a script; records every call.
class ScriptedSeam : public IoctlSeam {
 public:
  using Answer = std::function<int(unsigned long, void*)>;
  std::deque<Answer> script;
  std::vector<Call> calls;

  int Ioctl(int, unsigned long request, void* arg) override {
    Call c{request};
    if (request == VFIO_DEVICE_FEATURE) {
      auto* b = static_cast<VfioFeatureBuffer*>(arg);
      c.argsz = b->argsz;
      c.flags = b->flags;
      vfio_device_feature_mig_state m;
      std::memcpy(&m, b->payload, sizeof(m));
      c.device_state = m.device_state;
    } else if (request == VFIO_MIG_GET_PRECOPY_INFO) {
      c.argsz = static_cast<vfio_precopy_info*>(arg)->argsz;
    }
    calls.push_back(c);
    if (script.empty()) return -EPROTO;
    Answer a = std::move(script.front());
    script.pop_front();
    return a(request, arg);
  }
};

ScriptedSeam::Answer Migration(uint64_t flags) {
  return [flags](unsigned long, void* arg) {
    vfio_device_feature_migration m{flags};
    std::memcpy(static_cast<VfioFeatureBuffer*>(arg)->payload, &m, sizeof(m));
    return 0;
  };
}

ScriptedSeam::Answer StateIs(MigState s, int fd = -1) {
  return [s, fd](unsigned long, void* arg) {
    vfio_device_feature_mig_state m{static_cast<uint32_t>(s), fd};
    std::memcpy(static_cast<VfioFeatureBuffer*>(arg)->payload, &m, sizeof(m));
    return 0;
  };
}

ScriptedSeam::Answer Fail(int err) {
  return [err](unsigned long, void*) { return -err; };
}

UniqueFd AnyFd() { return UniqueFd(::eventfd(0, EFD_CLOEXEC)); }

std::unique_ptr<VfioDevice> OpenWith(std::shared_ptr<ScriptedSeam> seam, uint64_t flags,
                                     MigState start) {
  seam->script.push_back(Migration(flags));
  seam->script.push_back(StateIs(start));
  auto dev = VfioDevice::Open(AnyFd(), seam);
  EXPECT_TRUE(dev.ok()) << dev.status();
  return dev.ok() ? std::move(*dev) : nullptr;
}

constexpr uint64_t kAll = 7;

TEST(VfioDeviceTest, OpenProbesMigrationThenState) {
  auto seam = std::make_shared<ScriptedSeam>();
  auto dev = OpenWith(seam, kAll, MigState::kRunning);
  ASSERT_NE(dev, nullptr);
  ASSERT_EQ(seam->calls.size(), 2u);
  EXPECT_EQ(seam->calls[0].request, 0x3B75u);
  EXPECT_EQ(seam->calls[0].argsz, 16u);
  EXPECT_EQ(seam->calls[0].flags, 0x10001u);
  EXPECT_EQ(seam->calls[1].flags, 0x10002u);
  EXPECT_EQ(dev->features().flags, kAll);
  EXPECT_EQ(dev->last_known_state(), MigState::kRunning);
}

TEST(VfioDeviceTest, OpenWithoutMigrationIsUnimplemented) {
  auto seam = std::make_shared<ScriptedSeam>();
  seam->script.push_back(Fail(ENOTTY));
  auto dev = VfioDevice::Open(AnyFd(), seam);
  EXPECT_EQ(dev.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(dev.status().message().find("ioctl(VFIO_DEVICE_FEATURE GET MIGRATION"),
            std::string::npos);
}

TEST(VfioDeviceTest, OpenWithoutStopCopyIsRefused) {
  auto seam = std::make_shared<ScriptedSeam>();
  seam->script.push_back(Migration(MigFeatures::kP2P));
  EXPECT_EQ(VfioDevice::Open(AnyFd(), seam).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(VfioDeviceTest, SetStateWalksOneArcPerSetAndTakesFinalFd) {
  auto seam = std::make_shared<ScriptedSeam>();
  auto dev = OpenWith(seam, kAll, MigState::kRunning);
  UniqueFd fd = AnyFd();
  const int raw = fd.get();
  seam->script.push_back(StateIs(MigState::kRunningP2P));
  seam->script.push_back(StateIs(MigState::kStop));
  seam->script.push_back(StateIs(MigState::kStopCopy, fd.Release()));
  auto data = dev->SetState(MigState::kStopCopy);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->get(), raw);
  ASSERT_EQ(seam->calls.size(), 5u);
  for (int i = 2; i < 5; ++i) {
    EXPECT_EQ(seam->calls[i].flags, 0x20002u);
    EXPECT_EQ(seam->calls[i].argsz, 16u);
  }
  EXPECT_EQ(seam->calls[2].device_state, VFIO_DEVICE_STATE_RUNNING_P2P);
  EXPECT_EQ(seam->calls[3].device_state, VFIO_DEVICE_STATE_STOP);
  EXPECT_EQ(seam->calls[4].device_state, VFIO_DEVICE_STATE_STOP_COPY);
  EXPECT_EQ(dev->last_known_state(), MigState::kStopCopy);
}

TEST(VfioDeviceTest, FailedSetReadsStateBackAndNamesArc) {
  auto seam = std::make_shared<ScriptedSeam>();
  auto dev = OpenWith(seam, kAll, MigState::kRunning);
  seam->script.push_back(StateIs(MigState::kRunningP2P));
  // The failed SET echoes the request (STOP); the GET tells the truth (RUNNING_P2P).
  seam->script.push_back([](unsigned long, void* arg) {
    vfio_device_feature_mig_state m{VFIO_DEVICE_STATE_STOP, -1};
    std::memcpy(static_cast<VfioFeatureBuffer*>(arg)->payload, &m, sizeof(m));
    return -EIO;
  });
  seam->script.push_back(StateIs(MigState::kRunningP2P));
  auto data = dev->SetState(MigState::kStopCopy);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(StatusErrno(data.status()), EIO);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(data.status().message().find(
                "ioctl(VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE RUNNING_P2P->STOP"),
            std::string::npos)
      << data.status();
  EXPECT_NE(data.status().message().find("EIO"), std::string::npos);
  EXPECT_NE(data.status().message().find("device now in RUNNING_P2P"), std::string::npos);
  EXPECT_EQ(dev->last_known_state(), MigState::kRunningP2P);
  EXPECT_EQ(seam->calls.back().flags, 0x10002u);  // The GET after the failure.
}

TEST(VfioDeviceTest, BlockedArcRefusedBeforeAnyIoctl) {
  auto seam = std::make_shared<ScriptedSeam>();
  auto dev = OpenWith(seam, kAll, MigState::kStopCopy);
  const size_t before = seam->calls.size();
  auto r = dev->SetState(MigState::kPreCopy);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StatusErrno(r.status()), EINVAL);
  EXPECT_EQ(seam->calls.size(), before);
}

TEST(VfioDeviceTest, UnexpectedFdIsAnError) {
  auto seam = std::make_shared<ScriptedSeam>();
  auto dev = OpenWith(seam, kAll, MigState::kPreCopy);
  seam->script.push_back(StateIs(MigState::kPreCopyP2P, AnyFd().Release()));
  EXPECT_EQ(dev->SetState(MigState::kPreCopyP2P).status().code(), absl::StatusCode::kInternal);
}

TEST(VfioDeviceTest, PrecopyInfoAndDataSize) {
  auto seam = std::make_shared<ScriptedSeam>();
  auto dev = OpenWith(seam, kAll, MigState::kPreCopy);
  seam->script.push_back([](unsigned long, void* arg) {
    auto* i = static_cast<vfio_precopy_info*>(arg);
    i->initial_bytes = 24;
    i->dirty_bytes = 7;
    return 0;
  });
  auto info = dev->GetPrecopyInfo(42);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->initial_bytes, 24u);
  EXPECT_EQ(info->dirty_bytes, 7u);
  EXPECT_EQ(seam->calls.back().request, 0x3B79u);
  EXPECT_EQ(seam->calls.back().argsz, 24u);

  seam->script.push_back([](unsigned long, void* arg) {
    vfio_device_feature_mig_data_size d{60};
    std::memcpy(static_cast<VfioFeatureBuffer*>(arg)->payload, &d, sizeof(d));
    return 0;
  });
  auto size = dev->StopCopySize();
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 60u);
  EXPECT_EQ(seam->calls.back().flags, 0x10009u);

  seam->script.push_back(Fail(EINVAL));
  auto bad = dev->GetPrecopyInfo(42);
  EXPECT_NE(bad.status().message().find("ioctl(VFIO_MIG_GET_PRECOPY_INFO, data fd 42): EINVAL"),
            std::string::npos);
}

TEST(VfioDeviceTest, ResetReturnsToRunning) {
  auto seam = std::make_shared<ScriptedSeam>();
  auto dev = OpenWith(seam, kAll, MigState::kResuming);
  seam->script.push_back([](unsigned long, void*) { return 0; });
  ASSERT_TRUE(dev->Reset().ok());
  EXPECT_EQ(seam->calls.back().request, 0x3B6Fu);
  EXPECT_EQ(dev->last_known_state(), MigState::kRunning);
}

}  // namespace
}  // namespace migmover
