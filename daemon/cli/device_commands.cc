#include "daemon/cli/device_commands.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/cli/ctl_client.h"
#include "daemon/cli/ctl_output.h"
#include "daemon/intake/fd_intake.h"
#include "grpcpp/grpcpp.h"
#include "transport/base/unique_fd.h"

namespace migmover::ctl {
namespace {

int PrintDevice(const v1::Device& d, const CtlOptions& o, std::ostream& out) {
  if (o.json) {
    PrintJson(d, out);
  } else {
    out << DeviceLine(d) << "\n";
  }
  return 0;
}

int Attach(const std::vector<std::string>& args, const CtlOptions& o, std::ostream& out,
           std::ostream& err) {
  const int sources = (o.sim.empty() ? 0 : 1) + (o.fd >= 0 ? 1 : 0) + (o.path.empty() ? 0 : 1);
  if (args.size() != 1 || sources != 1) {
    err << "attach: expected NAME and exactly one of --sim SPEC, --fd N, --path PATH\n";
    return 2;
  }
  v1::AttachDeviceRequest req;
  req.set_name(args[0]);
  if (!o.sim.empty()) {
    req.set_simulated(o.sim);
  } else {
    auto purpose = ParseFdPurpose(o.purpose);
    if (!purpose.ok()) {
      err << "attach: --purpose: " << purpose.status().message() << "\n";
      return 2;
    }
    UniqueFd opened;  // Ours to close once the daemon has its own copy.
    int fd = o.fd;
    if (!o.path.empty()) {
      const int flags = *purpose == FdPurpose::kVfioDevice  ? O_RDWR
                        : *purpose == FdPurpose::kSaveData ? O_RDONLY
                                                           : O_WRONLY;
      opened = UniqueFd(::open(o.path.c_str(), flags | O_CLOEXEC));
      if (!opened.valid()) {
        err << "attach: open(" << o.path << "): " << std::strerror(errno) << "\n";
        return 1;
      }
      fd = opened.get();
    } else if (::fcntl(fd, F_GETFD) < 0) {
      err << "attach: --fd " << fd << ": not an open fd of migmoverctl (" << std::strerror(errno)
          << "); the program running migmoverctl must leave it open across exec\n";
      return 2;
    }
    absl::StatusOr<uint64_t> handle = SendFdToIntake(o.fd_socket, *purpose, fd);
    if (!handle.ok()) {
      err << "attach: fd intake " << o.fd_socket << ": " << handle.status() << "\n";
      return 1;
    }
    req.set_fd_handle(*handle);
  }
  grpc::ClientContext ctx;
  v1::Device d;
  grpc::Status st = Connect(o.socket)->AttachDevice(&ctx, req, &d);
  if (!st.ok()) return Refused(st, "AttachDevice", o.socket, err);
  return PrintDevice(d, o, out);
}

int Detach(const std::vector<std::string>& args, const CtlOptions& o, std::ostream& out,
           std::ostream& err) {
  if (args.size() != 1) {
    err << "detach: expected NAME\n";
    return 2;
  }
  grpc::ClientContext ctx;
  v1::DetachDeviceRequest req;
  req.set_name(args[0]);
  v1::Device d;
  grpc::Status st = Connect(o.socket)->DetachDevice(&ctx, req, &d);
  if (!st.ok()) return Refused(st, "DetachDevice", o.socket, err);
  return PrintDevice(d, o, out);
}

int Devices(const std::vector<std::string>& args, const CtlOptions& o, std::ostream& out,
            std::ostream& err) {
  if (!args.empty()) {
    err << "devices: takes no arguments\n";
    return 2;
  }
  grpc::ClientContext ctx;
  v1::ListDevicesResponse resp;
  grpc::Status st = Connect(o.socket)->ListDevices(&ctx, v1::ListDevicesRequest(), &resp);
  if (!st.ok()) return Refused(st, "ListDevices", o.socket, err);
  if (o.json) {
    PrintJson(resp, out);
    return 0;
  }
  for (const auto& d : resp.devices()) out << DeviceLine(d) << "\n";
  return 0;
}

}  // namespace

int RunDeviceCommand(const std::string& command, const std::vector<std::string>& args,
                     const CtlOptions& o, std::ostream& out, std::ostream& err) {
  if (command == "attach") return Attach(args, o, out, err);
  if (command == "detach") return Detach(args, o, out, err);
  if (command == "devices") return Devices(args, o, out, err);
  return -1;
}

}  // namespace migmover::ctl
