// Machine-readable logs of real daemons (--log_format): every line of a JSON log parses, FSM
// arcs and errors carry session, device, from, to and errno, and a session id full of JSON's
// special characters stays one escaped value.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/integration/two_daemons.h"

namespace migmover {
namespace {

using testing::TwoDaemons;
using v1::SessionStatus;

class LogFormat : public TwoDaemons {
 protected:
  LogFormat() {
    src_flags_.push_back("--log_format=json");
    dst_flags_.push_back("--log_format=kv");
  }
};

// The string value of `key` in one of the daemon's JSON lines (flat, string values only), decoded.
// Read by hand rather than through protobuf's Struct: its map code, inlined into a test built
// under ThreadSanitizer, crashed against Debian's uninstrumented library.
std::string Field(absl::string_view line, const std::string& key) {
  const std::string open = "\"" + key + "\":\"";
  size_t i = line.find(open);
  if (i == absl::string_view::npos) return "";
  std::string out;
  for (i += open.size(); i < line.size() && line[i] != '"'; ++i) {
    if (line[i] != '\\' || i + 1 >= line.size()) {
      out.push_back(line[i]);
      continue;
    }
    const char c = line[++i];
    if (c == 'u' && i + 4 < line.size()) {
      int v = 0;
      absl::SimpleHexAtoi(line.substr(i + 1, 4), &v);
      out.push_back(static_cast<char>(v));
      i += 4;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

TEST_F(LogFormat, JsonLinesParseAndArcsCarryTheirFields) {
  const std::string id = R"(q"x\y}{)";
  ASSERT_TRUE(Attach(*src_, "bad", "size=1MiB,fail_arc=RUNNING:PRE_COPY:EIO").ok());
  ASSERT_TRUE(Attach(*dst_, "bad", "size=1MiB").ok());
  ASSERT_TRUE(Prepare(id, {"bad"}).ok());
  ASSERT_TRUE(Start(id, {"bad"}, /*precopy=*/true).ok());
  ASSERT_EQ(WaitFinal(*src_, id).phase(), SessionStatus::FAILED);
  WaitFinal(*dst_, id);

  int lines = 0;
  bool arc_failure = false, phase = false;
  for (absl::string_view line : absl::StrSplit(src_->Log(), '\n', absl::SkipEmpty())) {
    ++lines;
    google::protobuf::Struct parsed;  // Valid JSON, whatever a peer's text held.
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(std::string(line), &parsed).ok())
        << line;
    const absl::string_view s = line;
    EXPECT_FALSE(Field(s, "ts").empty()) << line;
    EXPECT_FALSE(Field(s, "level").empty()) << line;
    EXPECT_FALSE(Field(s, "msg").empty()) << line;
    if (Field(s, "session") != id) continue;
    if (Field(s, "device") == "bad" && Field(s, "from") == "RUNNING" &&
        Field(s, "to") == "PRE_COPY") {
      if (Field(s, "errno") == "EIO" && Field(s, "level") == "warning") arc_failure = true;
    }
    if (Field(s, "device").empty() && Field(s, "to") == "FAILED") phase = true;
  }
  EXPECT_GT(lines, 5);
  EXPECT_TRUE(arc_failure) << src_->Log();
  EXPECT_TRUE(phase) << src_->Log();

  // logfmt on the destination: every line opens with its timestamp and names level and msg;
  // the session id is quoted and escaped; the arcs to RESUMING carry their fields.
  bool named = false, arc = false;
  for (absl::string_view line : absl::StrSplit(dst_->Log(), '\n', absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(line, "ts=")) << line;
    EXPECT_TRUE(absl::StrContains(line, " level=") && absl::StrContains(line, " msg=")) << line;
    named = named || absl::StrContains(line, R"(session="q\"x\\y}{")");
    arc = arc || (absl::StrContains(line, R"(session="q\"x\\y}{" device=bad from=)") &&
                  absl::StrContains(line, " to=RESUMING"));
  }
  EXPECT_TRUE(named) << dst_->Log();
  EXPECT_TRUE(arc) << dst_->Log();
}

}  // namespace
}  // namespace migmover
