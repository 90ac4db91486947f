// The test agent that runs inside the kernel-in-the-loop VM (tests/kernel/run.sh). It creates
// instances of the kernel's mtty sample driver, opens them through VFIO like a VMM, hands the
// device fds to two real migmoverd processes over their fd intake sockets, drives them over
// gRPC, and checks every outcome against the kernel itself through its own device fds.
// Its last line is "kernel-in-the-loop: N passed, M failed".
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <algorithm>
#include <atomic>
#include <random>
#include <thread>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_cat.h"
#include "daemon/device/fsm_path.h"
#include "daemon/device/mig_state.h"
#include "daemon/intake/fd_intake.h"
#include "gtest/gtest.h"
#include "tests/integration/two_daemons.h"
#include "tests/integration/corrupting_relay.h"
#include "tests/kernel/vfio_mdev.h"
#include "transport/net/socket.h"
#include "transport/tls/testing/test_pki.h"
#include "transport/tls/tls_handshake.h"

namespace migmover {
// gtest prints states by name in failures.
void PrintTo(MigState state, std::ostream* os) { *os << MigStateName(state); }
}  // namespace migmover

namespace migmover::kernel_test {
namespace {

using ::migmover::testing::TwoDaemons;
using v1::SessionStatus;

constexpr char kParent[] = "mtty";
constexpr char kType[] = "mtty-1";
constexpr uint64_t kMttyFlags = MigFeatures::kStopCopy | MigFeatures::kP2P | MigFeatures::kPreCopy;

// The uAPI's four arcs that return a new data fd (vfio-migration-uapi.md), written out here
// rather than taken from the daemon, so the daemon is checked against the document.
bool OpensDataFd(MigState from, MigState to) {
  using S = MigState;
  return (from == S::kStop && (to == S::kStopCopy || to == S::kResuming)) ||
         (from == S::kRunning && to == S::kPreCopy) ||
         (from == S::kRunningP2P && to == S::kPreCopyP2P);
}

MigState KernelState(const VfioMdev& m) {
  auto s = m.State();
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : MigState::kError;
}

// Runs migmoverctl (the SRE's tool, next to the agent in the guest) and returns its output.
std::string Ctl(const std::string& args, int* exit_status) {
  const char* ctl = std::getenv("MIGMOVERCTL");
  const std::string cmd = absl::StrCat(ctl ? ctl : "/bin/migmoverctl", " ", args, " 2>&1");
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *exit_status = -1;
    return "popen failed";
  }
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p)) out += buf;
  *exit_status = ::pclose(p);
  return out;
}

// A marker for the UART scratch register, different from what `other` holds (mtty keeps its
// registers until a reset, so a fixed value could pass by accident).
uint8_t FreshMarker(const VfioMdev& other) {
  std::random_device rd;
  auto held = other.ReadBar0(kUartScratchRegister);
  uint8_t v;
  do {
    v = static_cast<uint8_t>(rd());
  } while (v == 0 || (held.ok() && v == *held));
  return v;
}

// Rule 5 of the commit protocol, watched in the kernel: a thread reads the kernel's state of a
// host's devices in turns, as fast as it can, through the agent's own fds. The kernel keeps no
// history of arcs, so this samples; but a sample cannot accuse falsely: when device i is read
// already past the quiesce point (source: STOP_COPY or STOP) and device j, read after it, is not
// yet quiesced (RUNNING or PRE_COPY), i left before j was quiesced; the same for running
// (destination: i RUNNING, j read after it still RESUMING or STOP).
class P2PWatcher {
 public:
  P2PWatcher(std::vector<VfioMdev*> source, std::vector<VfioMdev*> destination)
      : source_(std::move(source)), destination_(std::move(destination)) {}
  ~P2PWatcher() { Stop(); }

  void Start() {
    thread_ = std::thread([this] {
      uint64_t turn = 0;
      while (!stop_.load()) {
        Sample(source_, turn, /*source=*/true);
        Sample(destination_, turn, /*source=*/false);
        ++turn;
        std::this_thread::yield();
      }
    });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  // Breaches seen (empty when none), and every distinct pair of states seen on each host, in
  // the order first seen.
  std::vector<std::string> breaches;
  std::vector<std::string> source_seen, destination_seen;
  uint64_t samples = 0;

 private:
  void Sample(const std::vector<VfioMdev*>& devices, uint64_t turn, bool source) {
    if (devices.size() != 2) return;
    const size_t i = turn % 2, j = 1 - i;
    auto si = devices[i]->State();
    auto sj = devices[j]->State();
    if (!si.ok() || !sj.ok()) return;
    ++samples;
    using S = MigState;
    const bool breach =
        source ? ((*si == S::kStopCopy || *si == S::kStop) &&
                  (*sj == S::kRunning || *sj == S::kPreCopy))
               : (*si == S::kRunning && (*sj == S::kResuming || *sj == S::kStop));
    const std::string pair = i == 0 ? absl::StrCat(MigStateName(*si), "/", MigStateName(*sj))
                                    : absl::StrCat(MigStateName(*sj), "/", MigStateName(*si));
    std::vector<std::string>& seen = source ? source_seen : destination_seen;
    if (seen.empty() || seen.back() != pair) {
      if (std::find(seen.begin(), seen.end(), pair) == seen.end()) seen.push_back(pair);
    }
    if (breach) {
      breaches.push_back(absl::StrCat(source ? "source" : "destination", ": device ", i, " in ",
                                      MigStateName(*si), " while device ", j, " was then still ",
                                      MigStateName(*sj)));
    }
  }

  std::vector<VfioMdev*> source_, destination_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class KernelInTheLoop : public TwoDaemons {
 protected:
  // The daemons go first: removing an mdev waits until every fd on it is closed, and the
  // daemons hold some.
  void TearDown() override {
    TwoDaemons::TearDown();
    src_.reset();
    dst_.reset();
    mdevs_.clear();
  }

  // A new mtty instance, owned by the test.
  VfioMdev* NewMtty(const std::string& type = kType,
                    VfioMdev::Access access = VfioMdev::Access::kGroup) {
    auto m = VfioMdev::Create(kParent, type, access);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return nullptr;
    mdevs_.push_back(std::move(*m));
    return mdevs_.back().get();
  }

  // Hands a duplicate of `m`'s device fd to `d` and attaches it as `name`.
  void AttachMtty(::migmover::testing::DaemonProcess& d, const std::string& name, const VfioMdev& m,
                  v1::Device* out = nullptr) {
    auto fd = m.Dup();
    ASSERT_TRUE(fd.ok()) << fd.status();
    auto handle = SendFdToIntake(d.fd_socket(), FdPurpose::kVfioDevice, fd->get());
    ASSERT_TRUE(handle.ok()) << handle.status();
    grpc::ClientContext ctx;
    v1::AttachDeviceRequest req;
    req.set_name(name);
    req.set_fd_handle(*handle);
    v1::Device dev;
    grpc::Status s = d.stub()->AttachDevice(&ctx, req, &dev);
    ASSERT_TRUE(s.ok()) << "AttachDevice(" << name << "): " << s.error_message();
    if (out) *out = dev;
  }

  struct Pair {
    std::string name;
    VfioMdev* a;  // Source.
    VfioMdev* b;  // Destination.
  };

  // Migrates every pair's A to its B in one session through the API (PRE_COPY until a round is
  // done, switchover, STOP_COPY, commit), with a fresh marker in each A's UART scratch register,
  // and checks the outcome against the kernel: markers on the Bs, A in STOP, B in RUNNING, the
  // copy path on both ends (mtty's data fds refuse splice).
  void MigrateAndCheck(const std::string& id, const std::vector<Pair>& pairs,
                       P2PWatcher* watcher = nullptr) {
    std::vector<std::string> names;
    std::vector<uint8_t> markers;
    for (const Pair& p : pairs) {
      markers.push_back(FreshMarker(*p.b));
      ASSERT_TRUE(p.a->WriteBar0(kUartScratchRegister, markers.back()).ok());
      ASSERT_EQ(*p.a->ReadBar0(kUartScratchRegister), markers.back());
      AttachMtty(*src_, p.name, *p.a);
      AttachMtty(*dst_, p.name, *p.b);
      names.push_back(p.name);
    }
    ASSERT_TRUE(Prepare(id, names).ok());
    for (const Pair& p : pairs) EXPECT_EQ(KernelState(*p.b), MigState::kResuming);
    // From here every destination device is in RESUMING and every source device RUNNING.
    if (watcher) watcher->Start();
    grpc::Status started = Start(id, names, /*precopy=*/true);
    ASSERT_TRUE(started.ok()) << started.error_message();
    SessionStatus pre = WatchUntilRounds(id, 1);
    EXPECT_EQ(pre.phase(), SessionStatus::PRE_COPY) << pre.DebugString();
    for (const Pair& p : pairs) EXPECT_EQ(KernelState(*p.a), MigState::kPreCopy);
    auto [s, d] = SwitchoverAndWait(id);
    if (watcher) watcher->Stop();
    ASSERT_TRUE(BothSucceeded(s, d));
    EXPECT_GT(s.precopy_bytes(), 0u);
    EXPECT_GT(s.stop_copy_bytes(), 0u);
    EXPECT_EQ(s.bytes_moved(), s.precopy_bytes() + s.stop_copy_bytes());
    std::cout << "  " << pairs.size() << " mtty device(s): " << s.precopy_bytes()
              << " bytes in PRE_COPY, " << s.stop_copy_bytes() << " in STOP_COPY, downtime "
              << s.stop_copy_seconds() * 1e3 << " ms\n";
    ASSERT_EQ(s.devices_size(), static_cast<int>(pairs.size()));
    ASSERT_EQ(d.devices_size(), static_cast<int>(pairs.size()));
    for (size_t i = 0; i < pairs.size(); ++i) {
      SCOPED_TRACE(pairs[i].name);
      EXPECT_EQ(s.devices(i).data_path(), "copy");
      EXPECT_EQ(d.devices(i).data_path(), "copy");
      // The daemons run TLS by default, and this kernel has it (CONFIG_TLS): the stream was
      // encrypted by the kernel at both ends, on the copy path's io_uring sends and receives.
      EXPECT_TRUE(absl::StartsWith(s.devices(i).security(), "TLS 1.3 in the kernel"))
          << s.devices(i).security();
      EXPECT_TRUE(absl::StartsWith(d.devices(i).security(), "TLS 1.3 in the kernel"))
          << d.devices(i).security();
      EXPECT_TRUE(d.devices(i).committed());
      EXPECT_EQ(KernelState(*pairs[i].b), MigState::kRunning);
      EXPECT_EQ(KernelState(*pairs[i].a), MigState::kStop);
      auto got = pairs[i].b->ReadBar0(kUartScratchRegister);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, markers[i]) << "B's scratch register after migration";
    }
  }

  // Migrates A to B (through `peer` if not empty, else straight to the destination) where the
  // destination's driver must refuse the stream: both sessions fail with the kernel's error for
  // the write into the device (or for loading it), the agent hears why, the destination device
  // is reset and the source device runs again, in the kernel's view and the daemons'.
  void MigrateExpectingTheDriverToRefuse(const std::string& id, VfioMdev* a, VfioMdev* b,
                                         const std::string& peer) {
    ASSERT_TRUE(a->WriteBar0(kUartScratchRegister, FreshMarker(*b)).ok());
    AttachMtty(*src_, "uart", *a);
    AttachMtty(*dst_, "uart", *b);
    ASSERT_TRUE(Prepare(id, {"uart"}).ok());
    grpc::Status started = Start(id, {"uart"}, /*precopy=*/true, "", "", peer);
    ASSERT_TRUE(started.ok()) << started.error_message();
    SessionStatus pre = WatchUntilRounds(id, 1);
    if (!Final(pre)) (void)Switchover(id);
    SessionStatus s = WaitFinal(*src_, id);
    SessionStatus d = WaitFinal(*dst_, id);
    EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
    EXPECT_EQ(d.phase(), SessionStatus::FAILED) << d.DebugString();
    std::cout << "  source's error: " << s.error() << "\n  destination's error: " << d.error()
              << "\n";
    EXPECT_TRUE(absl::StrContains(d.error(), "write(data fd") ||
                absl::StrContains(d.error(), "RESUMING->"))
        << d.error();
    EXPECT_TRUE(absl::StrContains(s.error(), d.error())) << s.error();
    EXPECT_EQ(KernelState(*a), MigState::kRunning);
    EXPECT_EQ(KernelState(*b), MigState::kRunning);
    EXPECT_EQ(StateOf(*src_, "uart"), "RUNNING");
    EXPECT_EQ(StateOf(*dst_, "uart"), "RUNNING");
  }

  std::vector<std::unique_ptr<VfioMdev>> mdevs_;

  grpc::Status Detach(::migmover::testing::DaemonProcess& d, const std::string& name) {
    grpc::ClientContext ctx;
    v1::DetachDeviceRequest req;
    req.set_name(name);
    v1::Device out;
    return d.stub()->DetachDevice(&ctx, req, &out);
  }

  grpc::Status SetState(::migmover::testing::DaemonProcess& d, const std::string& name,
                        MigState state, v1::SetDeviceStateResponse* out) {
    grpc::ClientContext ctx;
    v1::SetDeviceStateRequest req;
    req.set_name(name);
    req.set_state(MigStateName(state));
    return d.stub()->SetDeviceState(&ctx, req, out);
  }
};

TEST_F(KernelInTheLoop, MttyOffersMigrationWithPreCopyAndP2P) {
  auto m = NewMtty();
  ASSERT_NE(m, nullptr);
  auto flags = m->MigrationFlags();
  ASSERT_TRUE(flags.ok()) << flags.status();
  EXPECT_EQ(*flags, kMttyFlags);
  EXPECT_EQ(KernelState(*m), MigState::kRunning);
  v1::Device dev;
  AttachMtty(*src_, "uart", *m, &dev);
  EXPECT_EQ(dev.kind(), v1::Device::VFIO_DEVICE);
  EXPECT_EQ(dev.state(), "RUNNING");
  EXPECT_EQ(std::set<std::string>(dev.features().begin(), dev.features().end()),
            (std::set<std::string>{"stop_copy", "p2p", "pre_copy"}));
}

// A value written into A's UART before the migration reads back from B after it: the device
// state crossed through both daemons, PRE_COPY first, then STOP_COPY, on the copy path.
TEST_F(KernelInTheLoop, FullMigrationMovesUartStateOverTheCopyPath) {
  auto a = NewMtty();
  auto b = NewMtty();
  ASSERT_TRUE(a && b);
  MigrateAndCheck("k-full", {{"uart", a, b}});
  if (HasFatalFailure()) return;

  // What an SRE sees of the same migration.
  int rc = 0;
  std::string status = Ctl(absl::StrCat("status --socket=", src_->grpc_socket(), " k-full"), &rc);
  std::cout << "  migmoverctl status: " << status;
  EXPECT_EQ(rc, 0) << status;
  EXPECT_TRUE(absl::StrContains(status, "source k-full: SUCCEEDED")) << status;
  std::string devices = Ctl(absl::StrCat("devices --socket=", dst_->grpc_socket()), &rc);
  EXPECT_EQ(rc, 0) << devices;
  EXPECT_TRUE(absl::StrContains(devices, "uart\tVFIO_DEVICE\tRUNNING")) << devices;
}

// Two devices in one migration, one of each mtty type, one pair opened through VFIO groups and
// the other through cdevs bound to an iommufd: the daemon takes either kind of device fd.
TEST_F(KernelInTheLoop, TwoDevicesOpenedBothWaysMigrateTogether) {
  auto a1 = NewMtty("mtty-1", VfioMdev::Access::kGroup);
  auto b1 = NewMtty("mtty-1", VfioMdev::Access::kGroup);
  auto a2 = NewMtty("mtty-2", VfioMdev::Access::kCdev);
  auto b2 = NewMtty("mtty-2", VfioMdev::Access::kCdev);
  ASSERT_TRUE(a1 && b1 && a2 && b2);
  MigrateAndCheck("k-two", {{"uart1", a1, b1}, {"uart2", a2, b2}});
}

// Rule 5 with two P2P devices, in the kernel: at switchover the source moves both to
// PRE_COPY_P2P before either enters STOP_COPY, and after CONFIRM the destination moves both to
// RUNNING_P2P before either runs. A thread samples both hosts' kernel states throughout.
TEST_F(KernelInTheLoop, TwoP2PDevicesAreAllQuiescedBeforeAnyStopsAndAllLoadedBeforeAnyRuns) {
  auto a1 = NewMtty();
  auto a2 = NewMtty();
  auto b1 = NewMtty();
  auto b2 = NewMtty();
  ASSERT_TRUE(a1 && a2 && b1 && b2);
  P2PWatcher watcher({a1, a2}, {b1, b2});
  MigrateAndCheck("k-p2p", {{"uart1", a1, b1}, {"uart2", a2, b2}}, &watcher);
  std::cout << "  " << watcher.samples << " samples; source states seen: "
            << absl::StrJoin(watcher.source_seen, " ") << "\n  destination states seen: "
            << absl::StrJoin(watcher.destination_seen, " ") << "\n";
  EXPECT_TRUE(watcher.breaches.empty()) << absl::StrJoin(watcher.breaches, "\n");
  EXPECT_GT(watcher.samples, 0u);
}

// Every (from, to) pair over mtty's states, requested through the daemon, against the kernel:
// each lands where the path finder says, except out of RESUMING, where mtty refuses to load the
// empty stream and the daemon must report that and the kernel's real state.
TEST_F(KernelInTheLoop, EveryStatePairAgreesWithThePathFinderAndTheKernel) {
  auto m = NewMtty();
  ASSERT_NE(m, nullptr);
  const MigFeatures features{kMttyFlags};
  int pairs = 0, refused = 0;
  for (MigState from : kAllMigStates) {
    if (!features.Supports(from)) continue;
    for (MigState to : kAllMigStates) {
      if (!features.Supports(to)) continue;
      SCOPED_TRACE(absl::StrCat(MigStateName(from), " -> ", MigStateName(to)));
      ASSERT_TRUE(m->Reset().ok());
      ASSERT_EQ(KernelState(*m), MigState::kRunning);
      AttachMtty(*src_, "c", *m);
      v1::SetDeviceStateResponse r1, r2;
      grpc::Status s1 = SetState(*src_, "c", from, &r1);
      ASSERT_TRUE(s1.ok()) << s1.error_message();
      ASSERT_EQ(KernelState(*m), from);
      auto to_from = FindFsmPath(features, MigState::kRunning, from);
      ASSERT_TRUE(to_from.ok()) << to_from.status();
      EXPECT_EQ(r1.path(), to_from->ToString());
      EXPECT_EQ(r1.data_fd_opened(),
                to_from->arcs() > 0 && OpensDataFd((*to_from)[to_from->size() - 2], from));
      auto path = FindFsmPath(features, from, to);
      grpc::Status s2 = SetState(*src_, "c", to, &r2);
      if (!path.ok()) {
        // No walk exists: refused without a single ioctl, the device where it was.
        ++refused;
        EXPECT_FALSE(s2.ok());
        EXPECT_FALSE(absl::StrContains(s2.error_message(), "ioctl")) << s2.error_message();
        EXPECT_EQ(KernelState(*m), from);
      } else if (from == MigState::kResuming && to != MigState::kResuming) {
        // Leaving RESUMING loads the state written so far, and nothing was: mtty refuses the
        // arc, and the daemon must say so with the kernel's error and report the state the
        // kernel is really in.
        EXPECT_FALSE(s2.ok()) << r2.DebugString();
        EXPECT_TRUE(absl::StrContains(s2.error_message(), "RESUMING->STOP")) << s2.error_message();
        const MigState now = KernelState(*m);
        grpc::ClientContext ctx;
        v1::ListDevicesResponse list;
        ASSERT_TRUE(src_->stub()->ListDevices(&ctx, v1::ListDevicesRequest(), &list).ok());
        ASSERT_EQ(list.devices_size(), 1);
        EXPECT_EQ(list.devices(0).state(), MigStateName(now));
      } else {
        EXPECT_TRUE(s2.ok()) << s2.error_message();
        EXPECT_EQ(r2.path(), path->ToString());
        EXPECT_EQ(r2.device().state(), MigStateName(to));
        EXPECT_EQ(KernelState(*m), to);
        const bool opens = path->arcs() > 0 && OpensDataFd((*path)[path->size() - 2], to);
        EXPECT_EQ(r2.data_fd_opened(), opens);
      }
      ++pairs;
      ASSERT_TRUE(Detach(*src_, "c").ok());
    }
  }
  EXPECT_EQ(pairs, 49);
  EXPECT_EQ(refused, 2);  // STOP_COPY -> PRE_COPY and -> PRE_COPY_P2P.
  ASSERT_TRUE(m->Reset().ok());
  AttachMtty(*src_, "c", *m);
  v1::SetDeviceStateResponse r;
  EXPECT_FALSE(SetState(*src_, "c", MigState::kError, &r).ok());
  EXPECT_EQ(KernelState(*m), MigState::kRunning);
}

// The kernel itself refuses STOP_COPY -> PRE_COPY(_P2P); migmover must not even ask.
TEST_F(KernelInTheLoop, BlockedArcsAreRefusedBeforeAnyIoctl) {
  auto m = NewMtty();
  ASSERT_NE(m, nullptr);
  AttachMtty(*src_, "c", *m);
  v1::SetDeviceStateResponse r;
  ASSERT_TRUE(SetState(*src_, "c", MigState::kStopCopy, &r).ok());
  for (MigState to : {MigState::kPreCopy, MigState::kPreCopyP2P}) {
    r.Clear();
    grpc::Status s = SetState(*src_, "c", to, &r);
    EXPECT_FALSE(s.ok());
    // InvalidArgument, as the kernel's EINVAL would be; but the words are the path finder's,
    // not an ioctl's, and no walk was reported.
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "blocked arc")) << s.error_message();
    EXPECT_FALSE(absl::StrContains(s.error_message(), "ioctl")) << s.error_message();
    EXPECT_EQ(r.path(), "");
    EXPECT_EQ(KernelState(*m), MigState::kStopCopy);
  }
}

// Daemons whose peers run in the clear (--plaintext_peers): a relay on the path can read and
// change the stream's frames.
class PlaintextKernelInTheLoop : public KernelInTheLoop {
 protected:
  void SetUp() override {
    src_flags_.push_back("--plaintext_peers");
    dst_flags_.push_back("--plaintext_peers");
    KernelInTheLoop::SetUp();
  }
};

// A flipped byte in the stream: the real driver rejects it, the destination device is reset,
// the source device runs again, and the agent hears why.
TEST_F(PlaintextKernelInTheLoop, CorruptedStreamFailsAtTheDeviceAndBothSidesRecover) {
  auto a = NewMtty();
  auto b = NewMtty();
  ASSERT_TRUE(a && b);
  auto relay = ::migmover::testing::CorruptingRelay::Start(dst_->peer_address());
  ASSERT_TRUE(relay.ok()) << relay.status();
  MigrateExpectingTheDriverToRefuse("k-bad", a, b, (*relay)->address());
  EXPECT_TRUE((*relay)->corrupted());
}

// A destination device of another kind (two UARTs for one): the stream arrives intact, and
// the driver itself refuses it; both sides recover as for a corrupted stream.
TEST_F(KernelInTheLoop, IncompatibleDestinationIsRefusedByTheDriverAndBothSidesRecover) {
  auto a = NewMtty("mtty-1");
  auto b = NewMtty("mtty-2");
  ASSERT_TRUE(a && b);
  MigrateExpectingTheDriverToRefuse("k-mismatch", a, b, "");
}

// Prints the verdict line run.sh reads from the console.
class VerdictPrinter : public ::testing::EmptyTestEventListener {
  void OnTestProgramEnd(const ::testing::UnitTest& u) override {
    std::cout << "kernel-in-the-loop: " << u.successful_test_count() << " passed, "
              << u.failed_test_count() << " failed" << std::endl;
  }
};

// Kernel TLS with keys from OpenSSL's handshake (transport/tls): both ends of a loopback
// connection hand their application keys to the kernel, which then carries the bytes exactly,
// both ways. Host kernels here lack the TLS module (the host test skips this part); this VM has
// it (CONFIG_TLS).
TEST(KernelTls, TheKernelCarriesTheStreamWithTheHandshakesKeys) {
  auto pki = tls::testing::TestPki::Create("/tmp", "kernel TLS test CA", "ktls-");
  ASSERT_TRUE(pki.ok()) << pki.status();
  auto src_config = (*pki)->Issue("src.example", {"dst.example"});
  auto dst_config = (*pki)->Issue("dst.example", {"src.example"});
  ASSERT_TRUE(src_config.ok() && dst_config.ok());
  auto src = tls::TlsContext::Create(*src_config);
  auto dst = tls::TlsContext::Create(*dst_config);
  ASSERT_TRUE(src.ok() && dst.ok()) << src.status() << " " << dst.status();
  uint16_t port = 0;
  auto listener = net::TcpListen({"127.0.0.1", 0}, &port);
  ASSERT_TRUE(listener.ok()) << listener.status();
  auto c = net::TcpConnect({"127.0.0.1", port}, absl::Seconds(5));
  ASSERT_TRUE(c.ok()) << c.status();
  auto s = net::Accept(listener->get(), absl::Seconds(5));
  ASSERT_TRUE(s.ok()) << s.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::StatusOr<tls::TlsConnection> server = absl::UnknownError("not run");
  std::thread t([&] {
    server = tls::EstablishTls(std::move(*s), tls::TlsRole::kServer, **dst, deadline);
  });
  auto client = tls::EstablishTls(std::move(*c), tls::TlsRole::kClient, **src, deadline);
  t.join();
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(server.ok()) << server.status();
  std::cout << "  client: " << client->Describe() << "\n  server: " << server->Describe()
            << "\n";
  EXPECT_TRUE(client->kernel);
  EXPECT_TRUE(server->kernel);
  // 4 MiB each way at once, byte for byte: a wrong key, IV or record sequence would fail the
  // first record's authentication instead.
  const size_t n = 4 << 20;
  std::string ab(n, '\0'), ba(n, '\0'), got_ab(n, '\0'), got_ba(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    ab[i] = static_cast<char>(i * 7 + 3);
    ba[i] = static_cast<char>(i * 11 + 1);
  }
  const int a = client->fd.get(), b = server->fd.get();
  std::thread t1([&] { EXPECT_TRUE(net::SendAll(b, ba, deadline).ok()); });
  std::thread t2([&] { EXPECT_TRUE(net::RecvExact(b, got_ab.data(), n, deadline).ok()); });
  std::thread t3([&] { EXPECT_TRUE(net::RecvExact(a, got_ba.data(), n, deadline).ok()); });
  EXPECT_TRUE(net::SendAll(a, ab, deadline).ok());
  t1.join();
  t2.join();
  t3.join();
  EXPECT_TRUE(got_ab == ab) << "client -> server bytes differ";
  EXPECT_TRUE(got_ba == ba) << "server -> client bytes differ";
}

}  // namespace
}  // namespace migmover::kernel_test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  ::testing::UnitTest::GetInstance()->listeners().Append(new migmover::kernel_test::VerdictPrinter);
  return RUN_ALL_TESTS();
}
