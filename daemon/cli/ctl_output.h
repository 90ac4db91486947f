// How migmoverctl prints: protobuf's JSON mapping with --json (the one JSON printer; nothing is
// formatted by hand), lines for people otherwise.
#ifndef MIGMOVER_DAEMON_CLI_CTL_OUTPUT_H_
#define MIGMOVER_DAEMON_CLI_CTL_OUTPUT_H_

#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "api/migmover.pb.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"

namespace migmover::ctl {

// `m` as one line of JSON: protobuf's mapping, field names as in the .proto, fields at their
// default values included (a reader need not know the defaults). 64-bit integers are quoted
// strings and bytes are base64, as the mapping says.
std::string ToJson(const google::protobuf::Message& m);
// Prints ToJson(m) and a newline.
void PrintJson(const google::protobuf::Message& m, std::ostream& out);

// A call the daemon at `daemon` refused: prints FromGrpc's line (the RPC, the daemon, the
// code, the message made Printable) on `err`; returns exit code 1.
int Refused(const grpc::Status& st, const std::string& rpc, const std::string& daemon,
            std::ostream& err);

// A session's status line (ctl_client.h's StatusLine) and a line per device.
void PrintSession(const v1::SessionStatus& s, std::ostream& out);
// "NAME  KIND  STATE  SESSION  DESCRIPTION", tab-separated.
std::string DeviceLine(const v1::Device& d);

// `text` from a daemon (error messages, descriptions) made safe for a terminal: control
// characters become \xNN, so none can move the cursor or recolour the screen.
std::string Printable(absl::string_view text);

// Lowercase hex of `bytes` (a session secret as people copy it).
std::string Hex(const std::string& bytes);
// A session secret given on the command line: 32 to 64 hex digits (as `prepare` prints it), or
// the base64 protobuf's JSON shows. InvalidArgument otherwise.
absl::StatusOr<std::string> ParseToken(const std::string& text);

}  // namespace migmover::ctl

#endif  // MIGMOVER_DAEMON_CLI_CTL_OUTPUT_H_
