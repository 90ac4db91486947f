// Metrics: what the daemon counts for operators (Prometheus, on --metrics_listen), as events the
// sessions and devices report. Labels are bounded (role, result, phase, direction, a device arc):
// never a session id or a device name.
//
// Threads: every method may be called from any thread, and must not block.
#ifndef MIGMOVER_DAEMON_METRICS_METRICS_H_
#define MIGMOVER_DAEMON_METRICS_METRICS_H_

#include <cstdint>

namespace migmover {

enum class MetricsRole { kSource, kDestination };

// One session, as it ended.
struct SessionOutcome {
  MetricsRole role = MetricsRole::kSource;
  // "succeeded", "failed", "cancelled" or "in_doubt".
  const char* result = "failed";
  uint64_t precopy_bytes = 0;
  uint64_t stop_copy_bytes = 0;
  double seconds = 0;
  // Source, when it switched over: from Switchover to the destination's last COMMIT.
  double downtime_seconds = -1;
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void SessionStarted(MetricsRole role) = 0;
  // Once per session, when it ends (IN_DOUBT is an end, result in_doubt).
  virtual void SessionEnded(const SessionOutcome& outcome) = 0;
  // An IN_DOUBT session the agent settled: `to` is "succeeded" or "failed".
  virtual void SessionSettled(MetricsRole role, const char* from, const char* to) = 0;
  // A device's FSM arc failed (`from`, `to`: state names, e.g. "STOP", "STOP_COPY").
  virtual void DeviceArcFailed(const char* from, const char* to) = 0;
};

// The process's sink: a no-op until SetMetricsSink (migmoverd with --metrics_listen). The sink
// must outlive every caller.
MetricsSink& Metrics();
void SetMetricsSink(MetricsSink* sink);

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_METRICS_METRICS_H_
