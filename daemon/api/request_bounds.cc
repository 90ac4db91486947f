#include "daemon/api/request_bounds.h"

#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace migmover {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

absl::Status Check(const Message& m, const std::string& prefix, int depth) {
  if (depth > 8) return absl::InvalidArgumentError("request nests too deep");
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string name = prefix + f->name();
    if (f->is_repeated()) {
      const int n = r->FieldSize(m, f);
      if (static_cast<size_t>(n) > kMaxRequestRepeated) {
        return absl::InvalidArgumentError(absl::StrCat(name, " has ", n, " elements; at most ",
                                                       kMaxRequestRepeated));
      }
      for (int i = 0; i < n; ++i) {
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
          std::string scratch;
          const std::string& v = r->GetRepeatedStringReference(m, f, i, &scratch);
          if (v.size() > kMaxRequestStringBytes) {
            return absl::InvalidArgumentError(absl::StrCat(name, "[", i, "] is ", v.size(),
                                                           " bytes; at most ",
                                                           kMaxRequestStringBytes));
          }
        } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          if (absl::Status s = Check(r->GetRepeatedMessage(m, f, i),
                                     absl::StrCat(name, "[", i, "]."), depth + 1);
              !s.ok()) {
            return s;
          }
        }
      }
      continue;
    }
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
      std::string scratch;
      const std::string& v = r->GetStringReference(m, f, &scratch);
      if (v.size() > kMaxRequestStringBytes) {
        return absl::InvalidArgumentError(absl::StrCat(name, " is ", v.size(), " bytes; at most ",
                                                       kMaxRequestStringBytes));
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (absl::Status s = Check(r->GetMessage(m, f), name + ".", depth + 1); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckRequestBounds(const Message& request) { return Check(request, "", 0); }

std::string EchoForError(absl::string_view text, size_t max) {
  if (text.size() <= max) return absl::CHexEscape(text);
  return absl::StrCat(absl::CHexEscape(text.substr(0, max)), "... (", text.size(), " bytes)");
}

}  // namespace migmover
