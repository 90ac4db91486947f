#include "daemon/base/rate_limited_log.h"

#include "absl/strings/str_cat.h"
#include "daemon/base/log.h"

namespace migmover {

std::optional<std::string> RateLimitedLog::Line(const std::string& why, absl::Time now) {
  if (now - last_ < interval_) {
    ++held_back_;
    return std::nullopt;
  }
  std::string line = absl::StrCat(prefix_, why);
  if (held_back_ > 0) absl::StrAppend(&line, " (and ", held_back_, " more not logged)");
  last_ = now;
  held_back_ = 0;
  return line;
}

void RateLimitedLog::Warn(const std::string& why) {
  if (std::optional<std::string> line = Line(why, absl::Now())) MM_LOG(WARNING) << *line;
}

}  // namespace migmover
