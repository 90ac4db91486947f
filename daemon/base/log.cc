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
}  // namespace

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
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3S", absl::Now(), absl::UTCTimeZone()), " ",
      Letter(severity_), " ", "");
  std::lock_guard<std::mutex> l(g_mu);
  std::string out = absl::StrCat(line, *g_tag, ": ", stream_.str(), "\n");
  (void)!::write(STDERR_FILENO, out.data(), out.size());
}

}  // namespace migmover
