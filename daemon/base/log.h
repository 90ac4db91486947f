// Logging for the daemon: one line per event on stderr (journald adds its own timestamps when
// run as a service; ours are for terminals and test logs).
//   MM_LOG(INFO) << "session " << id << ": switchover";
// Lines may carry fields for machines (SetLogFormat: logfmt key=value or JSON lines); the text
// format shows the message alone:
//   MM_LOG(WARNING).With("session", id).With("device", name).With("errno", "EIO") << "...";
// Every value (and the message) is escaped in the structured formats: a peer's text cannot
// forge a field or a line.
#ifndef MIGMOVER_DAEMON_BASE_LOG_H_
#define MIGMOVER_DAEMON_BASE_LOG_H_

#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migmover {

enum class LogSeverity { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below this severity are dropped (default kInfo).
void SetMinLogSeverity(LogSeverity severity);
LogSeverity MinLogSeverity();
// Names the process in every line ("migmoverd[dst]").
void SetLogTag(const std::string& tag);

enum class LogFormat {
  kText,      // "2026-11-28T15:00:00.000 I tag: message"
  kKeyValue,  // logfmt: ts=... level=info daemon=tag msg="message" session=s1 device=d0 ...
  kJson,      // {"ts":"...","level":"info","daemon":"tag","msg":"message","session":"s1",...}
};
void SetLogFormat(LogFormat format);
// "text", "kv" or "json"; InvalidArgument otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);

class LogLine {
 public:
  LogLine(LogSeverity severity, const char* file, int line);
  ~LogLine();
  template <typename T>
  LogLine& operator<<(const T& v) {
    if (enabled_) stream_ << v;
    return *this;
  }
  // A field for the structured formats (`key`: a literal of [a-z_]).
  LogLine& With(const char* key, absl::string_view value) {
    if (enabled_) fields_.emplace_back(key, std::string(value));
    return *this;
  }

 private:
  bool enabled_;
  LogSeverity severity_;
  std::ostringstream stream_;
  std::vector<std::pair<const char*, std::string>> fields_;
};

}  // namespace migmover

#define MM_LOG_DEBUG ::migmover::LogSeverity::kDebug
#define MM_LOG_INFO ::migmover::LogSeverity::kInfo
#define MM_LOG_WARNING ::migmover::LogSeverity::kWarning
#define MM_LOG_ERROR ::migmover::LogSeverity::kError
#define MM_LOG(severity) ::migmover::LogLine(MM_LOG_##severity, __FILE__, __LINE__)

#endif  // MIGMOVER_DAEMON_BASE_LOG_H_
