#include "daemon/cli/fsm_path_command.h"

#include "absl/strings/str_join.h"
#include "daemon/device/fsm_path.h"
#include "transport/base/errno_status.h"

namespace migmover {

int RunFsmPathCommand(const std::string& features, bool all, const std::vector<std::string>& args,
                      std::ostream& out, std::ostream& err) {
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
  if (!path.ok()) {
    err << ErrnoName(StatusErrno(path.status())) << ": " << path.status().message() << "\n";
    return 1;
  }
  out << path->ToString() << "\n";
  return 0;
}

}  // namespace migmover
