#include "daemon/base/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace migmover {
namespace {
std::atomic<int> g_min{static_cast<int>(LogSeverity::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};
std::mutex g_mu;
std::string* g_tag = new std::string("migmover");

const char* Letter(LogSeverity s) {
  switch (s) {
    case LogSeverity::kDebug:
      return "D";
    case LogSeverity::kInfo:
      return "I";
    case LogSeverity::kWarning:
      return "W";
    case LogSeverity::kError:
      return "E";
  }
  return "?";
}

const char* LevelName(LogSeverity s) {
  switch (s) {
    case LogSeverity::kDebug:
      return "debug";
    case LogSeverity::kInfo:
      return "info";
    case LogSeverity::kWarning:
      return "warning";
    case LogSeverity::kError:
      return "error";
  }
  return "?";
}

// A JSON string body: quotes and backslashes escaped, and every byte outside printable ASCII as
// \u00XX (UTF-8 text too): the line is valid JSON whatever bytes a peer sent.
void AppendJsonString(std::string* out, absl::string_view v) {
  out->push_back('"');
  for (unsigned char c : v) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
    } else if (c < 0x20 || c >= 0x7f) {
      absl::StrAppend(out, "\\u00", absl::Hex(c, absl::kZeroPad2));
    } else {
      out->push_back(static_cast<char>(c));
    }
  }
  out->push_back('"');
}

// logfmt: bare when safe, else quoted with the same escapes as JSON.
void AppendKvValue(std::string* out, absl::string_view v) {
  bool bare = !v.empty();
  for (unsigned char c : v) {
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '=' || c == '\\') bare = false;
  }
  if (bare) {
    out->append(v.data(), v.size());
  } else {
    AppendJsonString(out, v);
  }
}
}  // namespace

void SetLogFormat(LogFormat format) { g_format = static_cast<int>(format); }

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "kv") return LogFormat::kKeyValue;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError("--log_format: expected text, kv or json");
}

void SetMinLogSeverity(LogSeverity severity) { g_min = static_cast<int>(severity); }
LogSeverity MinLogSeverity() { return static_cast<LogSeverity>(g_min.load()); }
void SetLogTag(const std::string& tag) {
  std::lock_guard<std::mutex> l(g_mu);
  *g_tag = tag;
}

LogLine::LogLine(LogSeverity severity, const char*, int)
    : enabled_(static_cast<int>(severity) >= g_min.load()), severity_(severity) {}

LogLine::~LogLine() {
  if (!enabled_) return;
  const absl::Time now = absl::Now();
  const auto format = static_cast<LogFormat>(g_format.load());
  std::string out;
  std::lock_guard<std::mutex> l(g_mu);
  if (format == LogFormat::kText) {
    out = absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3S", now, absl::UTCTimeZone()), " ",
                       Letter(severity_), " ", *g_tag, ": ", stream_.str(), "\n");
  } else if (format == LogFormat::kKeyValue) {
    out = absl::StrCat("ts=", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now, absl::UTCTimeZone()),
                       " level=", LevelName(severity_), " daemon=");
    AppendKvValue(&out, *g_tag);
    out.append(" msg=");
    AppendKvValue(&out, stream_.str());
    for (const auto& [k, v] : fields_) {
      absl::StrAppend(&out, " ", k, "=");
      AppendKvValue(&out, v);
    }
    out.push_back('\n');
  } else {
    out = absl::StrCat("{\"ts\":\"",
                       absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now, absl::UTCTimeZone()),
                       "\",\"level\":\"", LevelName(severity_), "\",\"daemon\":");
    AppendJsonString(&out, *g_tag);
    out.append(",\"msg\":");
    AppendJsonString(&out, stream_.str());
    for (const auto& [k, v] : fields_) {
      absl::StrAppend(&out, ",\"", k, "\":");
      AppendJsonString(&out, v);
    }
    out.append("}\n");
  }
  (void)!::write(STDERR_FILENO, out.data(), out.size());
}

}  // namespace migmover
