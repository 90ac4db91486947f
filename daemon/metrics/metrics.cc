#include "daemon/metrics/metrics.h"

#include <atomic>

namespace migmover {
namespace {

class NullMetrics final : public MetricsSink {
 public:
  void SessionStarted(MetricsRole) override {}
  void SessionEnded(const SessionOutcome&) override {}
  void SessionSettled(MetricsRole, const char*, const char*) override {}
  void DeviceArcFailed(const char*, const char*) override {}
};

NullMetrics g_null;
std::atomic<MetricsSink*> g_sink{&g_null};

}  // namespace

MetricsSink& Metrics() { return *g_sink.load(std::memory_order_acquire); }

void SetMetricsSink(MetricsSink* sink) {
  g_sink.store(sink != nullptr ? sink : &g_null, std::memory_order_release);
}

}  // namespace migmover
