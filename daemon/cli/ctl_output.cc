#include "daemon/cli/ctl_output.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "daemon/cli/ctl_client.h"
#include "google/protobuf/util/json_util.h"

namespace migmover::ctl {

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  auto s = google::protobuf::util::MessageToJsonString(m, &out, options);
  // Only a message with an unresolvable Any fails; ours have none.
  if (!s.ok()) return absl::StrCat("{\"error\":\"", absl::CEscape(s.ToString()), "\"}");
  return out;
}

void PrintJson(const google::protobuf::Message& m, std::ostream& out) { out << ToJson(m) << "\n"; }

int Refused(const grpc::Status& st, const std::string& rpc, const std::string& daemon,
            std::ostream& err) {
  err << FromGrpc(st, rpc, daemon) << "\n";
  return 1;
}

void PrintSession(const v1::SessionStatus& s, std::ostream& out) {
  out << StatusLine(s) << "\n";
  for (const auto& d : s.devices()) {
    out << Printable(absl::StrCat(
               "  ", d.name(), ": ", d.state().empty() ? "-" : d.state(), ", ",
               HumanBytes(d.bytes()), ", path ", d.data_path().empty() ? "-" : d.data_path(),
               d.transport().empty() ? "" : " over " + d.transport(),
               d.security().empty() ? "" : " (" + d.security() + ")",
               d.committed() ? ", committed" : "",
               d.error().empty() ? "" : ", error: " + d.error()))
        << "\n";
  }
}

std::string DeviceLine(const v1::Device& d) {
  return absl::StrCat(Printable(d.name()), "\t", v1::Device::Kind_Name(d.kind()), "\t",
                      Printable(d.state().empty() ? "-" : d.state()), "\t",
                      Printable(d.session_id().empty() ? "-" : d.session_id()), "\t",
                      Printable(d.description()));
}

std::string Hex(const std::string& bytes) { return absl::BytesToHexString(bytes); }

std::string Printable(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

absl::StatusOr<std::string> ParseToken(const std::string& text) {
  const bool all_hex = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return absl::ascii_isxdigit(c);
  });
  // Hex digits are read as hex only: a mistyped or cut hex secret must be an error here, not
  // base64 for a different secret that the peer refuses later.
  if (all_hex) {
    if (text.size() % 2 == 0 && text.size() >= 32 && text.size() <= 64) {
      return absl::HexStringToBytes(text);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "--token: ", text.size(), " hex digits; a session secret is 32 to 64 (an even number)"));
  }
  std::string bytes;
  // Padded base64 only, as protobuf's JSON prints it.
  if (text.size() % 4 == 0 && absl::Base64Unescape(text, &bytes) && bytes.size() >= 16 &&
      bytes.size() <= 32) {
    return bytes;
  }
  return absl::InvalidArgumentError(
      "--token: expected the session secret as 32 to 64 hex digits (as `prepare` prints it) or "
      "as base64 (as --json shows it)");
}

}  // namespace migmover::ctl
