#include "daemon/cli/fsm_path_command.h"

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/cli/ctl_output.h"
#include "daemon/cli/ctl_output.pb.h"
#include "daemon/device/fsm_path.h"
#include "transport/base/errno_status.h"

namespace migmover {

namespace {

ctl::FsmPathResult Result(const std::string& features, MigState from, MigState to,
                          const absl::StatusOr<FsmPath>& path) {
  ctl::FsmPathResult r;
  r.set_from(MigStateName(from));
  r.set_to(MigStateName(to));
  for (absl::string_view f : absl::StrSplit(features, ',', absl::SkipWhitespace())) {
    r.add_features(std::string(f));
  }
  if (path.ok()) {
    for (MigState s : *path) r.add_path(MigStateName(s));
  } else {
    r.set_error(ErrnoName(StatusErrno(path.status())));
  }
  return r;
}

}  // namespace

int RunFsmPathCommand(const std::string& features, bool all, const std::vector<std::string>& args,
                      std::ostream& out, std::ostream& err, bool json) {
  auto parsed = ParseMigFeatures(features);
  if (!parsed.ok()) {
    err << "fsm-path: --features: " << parsed.status().message() << "\n";
    return 2;
  }
  if (all) {
    if (!args.empty()) {
      err << "fsm-path: --all takes no FROM/TO arguments\n";
      return 2;
    }
    if (json) {
      ctl::FsmPathTable table;
      for (MigState from : kAllMigStates) {
        for (MigState to : kAllMigStates) {
          *table.add_paths() = Result(features, from, to, FindFsmPath(*parsed, from, to));
        }
      }
      ctl::PrintJson(table, out);
      return 0;
    }
    for (MigState from : kAllMigStates) {
      for (MigState to : kAllMigStates) {
        auto path = FindFsmPath(*parsed, from, to);
        out << MigStateName(from) << "\t" << MigStateName(to) << "\t";
        if (path.ok()) {
          out << absl::StrJoin(*path, ">",
                               [](std::string* o, MigState s) { o->append(MigStateName(s)); });
        } else {
          out << ErrnoName(StatusErrno(path.status()));
        }
        out << "\n";
      }
    }
    return 0;
  }
  if (args.size() != 2) {
    err << "fsm-path: expected FROM and TO states (or --all)\n";
    return 2;
  }
  auto from = ParseMigState(args[0]);
  auto to = ParseMigState(args[1]);
  if (!from.ok() || !to.ok()) {
    err << "fsm-path: " << (from.ok() ? to.status() : from.status()).message() << "\n";
    return 2;
  }
  auto path = FindFsmPath(*parsed, *from, *to);
  if (json) {
    ctl::PrintJson(Result(features, *from, *to, path), out);
    return path.ok() ? 0 : 1;
  }
  if (!path.ok()) {
    err << ErrnoName(StatusErrno(path.status())) << ": " << path.status().message() << "\n";
    return 1;
  }
  out << path->ToString() << "\n";
  return 0;
}

}  // namespace migmover
