#include "daemon/device/fsm_path.h"

#include <cerrno>
#include <deque>
#include <map>
#include <set>
#include <utility>

#include "gtest/gtest.h"
#include "transport/base/errno_status.h"

namespace migmover {
namespace {

using S = MigState;
constexpr uint64_t kSC = MigFeatures::kStopCopy;
constexpr uint64_t kP2P = MigFeatures::kP2P;
constexpr uint64_t kPre = MigFeatures::kPreCopy;

std::string Walk(uint64_t flags, S from, S to) {
  auto path = FindFsmPath(MigFeatures{flags}, from, to);
  if (!path.ok()) return ErrnoName(StatusErrno(path.status()));
  return path->ToString();
}

// The full STOP_COPY|P2P|PRE_COPY table, pair by pair, as listed in
// shared/docs/vfio-migration-uapi.md section 2.3 (the kernel comment's path list).
TEST(FsmPathTest, FullFeatureSetMatchesKernelPathList) {
  const uint64_t f = kSC | kP2P | kPre;
  const std::map<std::pair<S, S>, std::string> expected = {
      {{S::kRunning, S::kStop}, "RUNNING > RUNNING_P2P > STOP"},
      {{S::kRunning, S::kStopCopy}, "RUNNING > RUNNING_P2P > STOP > STOP_COPY"},
      {{S::kRunning, S::kResuming}, "RUNNING > RUNNING_P2P > STOP > RESUMING"},
      {{S::kRunning, S::kRunningP2P}, "RUNNING > RUNNING_P2P"},
      {{S::kRunning, S::kPreCopy}, "RUNNING > PRE_COPY"},
      {{S::kRunning, S::kPreCopyP2P}, "RUNNING > RUNNING_P2P > PRE_COPY_P2P"},
      {{S::kStop, S::kRunning}, "STOP > RUNNING_P2P > RUNNING"},
      {{S::kStop, S::kStopCopy}, "STOP > STOP_COPY"},
      {{S::kStop, S::kResuming}, "STOP > RESUMING"},
      {{S::kStop, S::kRunningP2P}, "STOP > RUNNING_P2P"},
      {{S::kStop, S::kPreCopy}, "STOP > RUNNING_P2P > RUNNING > PRE_COPY"},
      {{S::kStop, S::kPreCopyP2P}, "STOP > RUNNING_P2P > PRE_COPY_P2P"},
      {{S::kStopCopy, S::kStop}, "STOP_COPY > STOP"},
      {{S::kStopCopy, S::kRunning}, "STOP_COPY > STOP > RUNNING_P2P > RUNNING"},
      {{S::kStopCopy, S::kRunningP2P}, "STOP_COPY > STOP > RUNNING_P2P"},
      {{S::kStopCopy, S::kResuming}, "STOP_COPY > STOP > RESUMING"},
      {{S::kStopCopy, S::kPreCopy}, "EINVAL"},
      {{S::kStopCopy, S::kPreCopyP2P}, "EINVAL"},
      {{S::kResuming, S::kStop}, "RESUMING > STOP"},
      {{S::kResuming, S::kRunning}, "RESUMING > STOP > RUNNING_P2P > RUNNING"},
      {{S::kResuming, S::kRunningP2P}, "RESUMING > STOP > RUNNING_P2P"},
      {{S::kResuming, S::kStopCopy}, "RESUMING > STOP > STOP_COPY"},
      {{S::kResuming, S::kPreCopy}, "RESUMING > STOP > RUNNING_P2P > RUNNING > PRE_COPY"},
      {{S::kResuming, S::kPreCopyP2P}, "RESUMING > STOP > RUNNING_P2P > PRE_COPY_P2P"},
      {{S::kRunningP2P, S::kRunning}, "RUNNING_P2P > RUNNING"},
      {{S::kRunningP2P, S::kStop}, "RUNNING_P2P > STOP"},
      {{S::kRunningP2P, S::kStopCopy}, "RUNNING_P2P > STOP > STOP_COPY"},
      {{S::kRunningP2P, S::kResuming}, "RUNNING_P2P > STOP > RESUMING"},
      {{S::kRunningP2P, S::kPreCopy}, "RUNNING_P2P > RUNNING > PRE_COPY"},
      {{S::kRunningP2P, S::kPreCopyP2P}, "RUNNING_P2P > PRE_COPY_P2P"},
      {{S::kPreCopy, S::kRunning}, "PRE_COPY > RUNNING"},
      {{S::kPreCopy, S::kPreCopyP2P}, "PRE_COPY > PRE_COPY_P2P"},
      {{S::kPreCopy, S::kStopCopy}, "PRE_COPY > PRE_COPY_P2P > STOP_COPY"},
      {{S::kPreCopy, S::kRunningP2P}, "PRE_COPY > RUNNING > RUNNING_P2P"},
      {{S::kPreCopy, S::kStop}, "PRE_COPY > RUNNING > RUNNING_P2P > STOP"},
      {{S::kPreCopy, S::kResuming}, "PRE_COPY > RUNNING > RUNNING_P2P > STOP > RESUMING"},
      {{S::kPreCopyP2P, S::kPreCopy}, "PRE_COPY_P2P > PRE_COPY"},
      {{S::kPreCopyP2P, S::kStopCopy}, "PRE_COPY_P2P > STOP_COPY"},
      {{S::kPreCopyP2P, S::kRunningP2P}, "PRE_COPY_P2P > RUNNING_P2P"},
      {{S::kPreCopyP2P, S::kRunning}, "PRE_COPY_P2P > RUNNING_P2P > RUNNING"},
      {{S::kPreCopyP2P, S::kStop}, "PRE_COPY_P2P > RUNNING_P2P > STOP"},
      {{S::kPreCopyP2P, S::kResuming}, "PRE_COPY_P2P > RUNNING_P2P > STOP > RESUMING"},
  };
  int checked = 0;
  for (S from : kAllMigStates) {
    for (S to : kAllMigStates) {
      std::string want;
      if (from == S::kError || to == S::kError) {
        want = "EINVAL";
      } else if (from == to) {
        want = MigStateName(from);
      } else {
        auto it = expected.find({from, to});
        ASSERT_NE(it, expected.end()) << MigStateName(from) << "->" << MigStateName(to);
        want = it->second;
      }
      EXPECT_EQ(Walk(f, from, to), want) << MigStateName(from) << " -> " << MigStateName(to);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 64);
}

// The arcs a driver implements for each feature set (uAPI reference section 2.1), written
// independently of the next-hop table.
std::set<std::pair<S, S>> DriverArcs(uint64_t flags) {
  std::set<std::pair<S, S>> arcs = {{S::kStop, S::kStopCopy},
                                    {S::kStopCopy, S::kStop},
                                    {S::kStop, S::kResuming},
                                    {S::kResuming, S::kStop}};
  const bool p2p = flags & kP2P, pre = flags & kPre;
  if (!p2p) {
    arcs.insert({{S::kRunning, S::kStop}, {S::kStop, S::kRunning}});
  } else {
    arcs.insert({{S::kRunning, S::kRunningP2P},
                 {S::kRunningP2P, S::kRunning},
                 {S::kRunningP2P, S::kStop},
                 {S::kStop, S::kRunningP2P}});
  }
  if (pre && !p2p) {
    arcs.insert(
        {{S::kRunning, S::kPreCopy}, {S::kPreCopy, S::kRunning}, {S::kPreCopy, S::kStopCopy}});
  }
  if (pre && p2p) {
    arcs.insert({{S::kRunning, S::kPreCopy},
                 {S::kPreCopy, S::kRunning},
                 {S::kPreCopy, S::kPreCopyP2P},
                 {S::kPreCopyP2P, S::kPreCopy},
                 {S::kPreCopyP2P, S::kRunningP2P},
                 {S::kPreCopyP2P, S::kStopCopy},
                 {S::kRunningP2P, S::kPreCopyP2P}});
  }
  return arcs;
}

bool PassThroughForbidden(S s) {
  return s == S::kPreCopy || s == S::kPreCopyP2P || s == S::kStopCopy || s == S::kResuming;
}

// May a walk from `from` to `to` pass through `s`? Not through RESUMING, and not through a
// saving-group state unless the whole walk stays inside the saving group (it keeps one data fd).
bool MayPassThrough(S from, S s, S to) {
  if (!PassThroughForbidden(s)) return true;
  return InSavingGroup(from) && InSavingGroup(s) && InSavingGroup(to);
}

// Shortest walk length by BFS over the driver's arcs under MayPassThrough: the rule the kernel's
// table was built by. -1 if unreachable.
int ShortestLegalWalk(uint64_t flags, S from, S to) {
  auto arcs = DriverArcs(flags);
  std::map<S, int> dist = {{from, 0}};
  std::deque<S> queue = {from};
  while (!queue.empty()) {
    S cur = queue.front();
    queue.pop_front();
    if (cur == to) return dist[cur];
    if (cur != from && !MayPassThrough(from, cur, to)) continue;
    for (auto [a, b] : arcs) {
      if (a == cur && !dist.count(b)) {
        dist[b] = dist[cur] + 1;
        queue.push_back(b);
      }
    }
  }
  return -1;
}

TEST(FsmPathTest, EveryFeatureSetWalksShortestLegalDriverArcs) {
  for (uint64_t flags : kAllFeatureSets) {
    MigFeatures f{flags};
    auto arcs = DriverArcs(flags);
    for (S from : kAllMigStates) {
      for (S to : kAllMigStates) {
        SCOPED_TRACE(f.ToString() + ": " + MigStateName(from) + " -> " + MigStateName(to));
        auto path = FindFsmPath(f, from, to);
        const bool blocked = from == S::kStopCopy && (to == S::kPreCopy || to == S::kPreCopyP2P);
        if (!f.Supports(from) || !f.Supports(to) || blocked) {
          ASSERT_FALSE(path.ok());
          EXPECT_EQ(StatusErrno(path.status()), EINVAL);
          continue;
        }
        ASSERT_TRUE(path.ok()) << path.status();
        EXPECT_EQ(path->front(), from);
        EXPECT_EQ(path->back(), to);
        for (size_t i = 1; i < path->size(); ++i) {
          EXPECT_TRUE(arcs.count({(*path)[i - 1], (*path)[i]}))
              << "arc " << MigStateName((*path)[i - 1]) << "->" << MigStateName((*path)[i])
              << " is not one the driver implements; walk " << path->ToString();
          if (i + 1 < path->size()) {
            EXPECT_TRUE(MayPassThrough(from, (*path)[i], to)) << path->ToString();
          }
        }
        EXPECT_EQ(static_cast<int>(path->arcs()), ShortestLegalWalk(flags, from, to))
            << path->ToString();
      }
    }
  }
}

TEST(FsmPathTest, ReducedFeatureSetsSkipMissingStates) {
  EXPECT_EQ(Walk(kSC, S::kRunning, S::kStop), "RUNNING > STOP");
  EXPECT_EQ(Walk(kSC, S::kRunning, S::kStopCopy), "RUNNING > STOP > STOP_COPY");
  EXPECT_EQ(Walk(kSC, S::kRunning, S::kRunningP2P), "EINVAL");
  EXPECT_EQ(Walk(kSC, S::kRunning, S::kPreCopy), "EINVAL");
  EXPECT_EQ(Walk(kSC | kPre, S::kPreCopy, S::kStopCopy), "PRE_COPY > STOP_COPY");
  EXPECT_EQ(Walk(kSC | kPre, S::kStop, S::kPreCopy), "STOP > RUNNING > PRE_COPY");
  EXPECT_EQ(Walk(kSC | kPre, S::kStopCopy, S::kPreCopy), "EINVAL");
  EXPECT_EQ(Walk(kSC | kP2P, S::kStopCopy, S::kRunning), "STOP_COPY > STOP > RUNNING_P2P > RUNNING");
  EXPECT_EQ(Walk(kSC | kP2P, S::kRunning, S::kPreCopyP2P), "EINVAL");
}

TEST(FsmPathTest, NoOpIsStartStateAlone) {
  auto path = FindFsmPath(MigFeatures{kSC | kP2P | kPre}, S::kStopCopy, S::kStopCopy);
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(path->size(), 1u);
  EXPECT_FALSE(PathOpensDataFd(*path));
}

TEST(FsmPathTest, DataFdArcs) {
  const MigFeatures f{kSC | kP2P | kPre};
  auto fd_of = [&](S from, S to) { return PathOpensDataFd(*FindFsmPath(f, from, to)); };
  EXPECT_TRUE(fd_of(S::kRunning, S::kPreCopy));
  EXPECT_TRUE(fd_of(S::kRunning, S::kStopCopy));
  EXPECT_TRUE(fd_of(S::kRunning, S::kResuming));
  EXPECT_TRUE(fd_of(S::kRunning, S::kPreCopyP2P));
  EXPECT_FALSE(fd_of(S::kPreCopy, S::kStopCopy));
  EXPECT_FALSE(fd_of(S::kPreCopy, S::kPreCopyP2P));
  EXPECT_FALSE(fd_of(S::kResuming, S::kRunning));
  EXPECT_TRUE(ArcEndsDataSession(S::kStopCopy, S::kStop));
  EXPECT_TRUE(ArcEndsDataSession(S::kResuming, S::kStop));
  EXPECT_TRUE(ArcEndsDataSession(S::kPreCopyP2P, S::kRunningP2P));
  EXPECT_FALSE(ArcEndsDataSession(S::kPreCopyP2P, S::kStopCopy));
}

TEST(MigStateTest, ParseNamesAndFeatures) {
  EXPECT_EQ(*ParseMigState("running_p2p"), S::kRunningP2P);
  EXPECT_FALSE(ParseMigState("FLYING").ok());
  EXPECT_EQ(ParseMigFeatures("stop_copy,p2p,pre_copy")->flags, kSC | kP2P | kPre);
  EXPECT_EQ(ParseMigFeatures("pre_copy, stop_copy")->flags, kSC | kPre);
  EXPECT_FALSE(ParseMigFeatures("p2p").ok());
  EXPECT_FALSE(ParseMigFeatures("stop_copy,warp").ok());
  EXPECT_EQ(MigStateName(9u), "STATE(9)");
}

}  // namespace
}  // namespace migmover
