// Logging for the daemon: one line per event on stderr (journald adds its own timestamps when
// run as a service; ours are for terminals and test logs).
//   MM_LOG(INFO) << "session " << id << ": switchover";
#ifndef MIGMOVER_DAEMON_BASE_LOG_H_
#define MIGMOVER_DAEMON_BASE_LOG_H_

#include <sstream>
#include <string>

namespace migmover {

enum class LogSeverity { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below this severity are dropped (default kInfo).
void SetMinLogSeverity(LogSeverity severity);
LogSeverity MinLogSeverity();
// Names the process in every line ("migmoverd[dst]").
void SetLogTag(const std::string& tag);

class LogLine {
 public:
  LogLine(LogSeverity severity, const char* file, int line);
  ~LogLine();
  template <typename T>
  LogLine& operator<<(const T& v) {
    if (enabled_) stream_ << v;
    return *this;
  }

 private:
  bool enabled_;
  LogSeverity severity_;
  std::ostringstream stream_;
};

}  // namespace migmover

#define MM_LOG_DEBUG ::migmover::LogSeverity::kDebug
#define MM_LOG_INFO ::migmover::LogSeverity::kInfo
#define MM_LOG_WARNING ::migmover::LogSeverity::kWarning
#define MM_LOG_ERROR ::migmover::LogSeverity::kError
#define MM_LOG(severity) ::migmover::LogLine(MM_LOG_##severity, __FILE__, __LINE__)

#endif  // MIGMOVER_DAEMON_BASE_LOG_H_
