// migmoverctl: the operator's command-line tool for migmover.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "daemon/cli/fsm_path_command.h"

ABSL_FLAG(std::string, features, "stop_copy,p2p,pre_copy",
          "fsm-path: the device's migration features, a comma list of stop_copy, p2p, pre_copy");
ABSL_FLAG(bool, all, false, "fsm-path: print every (FROM, TO) pair as FROM<TAB>TO<TAB>PATH");

namespace {
constexpr char kUsage[] =
    R"(migmoverctl: operate and inspect migmover.

Commands:
  fsm-path [--features F] FROM TO
      Print the walk the kernel's VFIO migration FSM takes from FROM to TO for a device with
      features F (default stop_copy,p2p,pre_copy), e.g. RUNNING > RUNNING_P2P > STOP > STOP_COPY.
      Exits 1 naming the errno (EINVAL) when the kernel would refuse the request.
  fsm-path [--features F] --all
      Print every pair, one per line: FROM<TAB>TO<TAB>PATH, PATH being the states joined by '>'
      (the start state alone for a no-op) or the errno name.

States: ERROR STOP RUNNING STOP_COPY RESUMING RUNNING_P2P PRE_COPY PRE_COPY_P2P)";
}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  std::string command = args.front();
  args.erase(args.begin());
  if (command == "fsm-path") {
    return migmover::RunFsmPathCommand(absl::GetFlag(FLAGS_features), absl::GetFlag(FLAGS_all),
                                       args, std::cout, std::cerr);
  }
  std::cerr << "migmoverctl: unknown command '" << command << "'\n\n" << kUsage << "\n";
  return 2;
}
