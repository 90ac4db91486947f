#include "daemon/cli/progress_bar.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/cli/ctl_client.h"

namespace migmover::ctl {

uint64_t RemainingBytes(const v1::SessionStatus& s, bool* known) {
  *known = s.role() == v1::SessionStatus::SOURCE;
  if (!*known) return 0;
  if (s.phase() == v1::SessionStatus::SUCCEEDED) return 0;
  // Saturating: the sizes come from drivers, and a wild one must not wrap the sum.
  auto add = [](uint64_t a, uint64_t b) { return b > UINT64_MAX - a ? UINT64_MAX : a + b; };
  uint64_t remaining = 0;
  for (const auto& d : s.devices()) {
    remaining = add(remaining, std::max(d.pending_bytes(), d.stop_copy_size_known()
                                                               ? d.stop_copy_size_bytes()
                                                               : uint64_t{0}));
  }
  return std::max(remaining, s.devices_size() == 0 ? s.pending_bytes() : uint64_t{0});
}

std::string ProgressLine(const v1::SessionStatus& s, int width) {
  bool known = false;
  const uint64_t remaining = RemainingBytes(s, &known);
  // The fields, most important first; the bar takes what is left of the width.
  std::vector<std::string> fields = {
      v1::SessionStatus::Phase_Name(s.phase()),
      absl::StrCat(HumanBytes(s.bytes_moved()), " moved"),
      absl::StrCat(HumanBytes(s.rate_bytes_per_second()), "/s"),
  };
  if (known) fields.push_back(absl::StrCat(HumanBytes(remaining), " left"));
  if (s.role() == v1::SessionStatus::SOURCE && s.expected_downtime_seconds() > 0) {
    fields.push_back(absl::StrFormat("downtime ~%.3f s (limit %.3f s)",
                                     s.expected_downtime_seconds(), s.downtime_limit_seconds()));
  }
  if (s.role() == v1::SessionStatus::SOURCE && s.phase() == v1::SessionStatus::PRE_COPY) {
    fields.insert(fields.begin() + 1, s.switchover_ready() ? "READY" : "not ready");
    fields.push_back(absl::StrCat("round ", s.precopy_rounds()));
  }
  std::string tail;
  for (const std::string& f : fields) {
    const std::string next = tail.empty() ? f : absl::StrCat(tail, ", ", f);
    // Keep room for a bar of at least 10 columns plus " 100% " when there is one.
    if (static_cast<int>(next.size()) + (known ? 18 : 0) > width && !tail.empty()) break;
    tail = next;
  }
  if (!known) return tail.substr(0, std::max(0, width));
  const double moved = static_cast<double>(s.bytes_moved());
  const double total = moved + static_cast<double>(remaining);
  const double fraction = total <= 0 ? 0 : std::clamp(moved / total, 0.0, 1.0);
  const int bar = std::max(10, std::min(40, width - static_cast<int>(tail.size()) - 8));
  const int filled = static_cast<int>(fraction * bar);
  std::string line = absl::StrCat("[", std::string(filled, '#'), std::string(bar - filled, '.'),
                                  "] ", absl::StrFormat("%3d%%", static_cast<int>(fraction * 100)),
                                  " ", tail);
  return line.substr(0, std::max(0, width));
}

}  // namespace migmover::ctl
