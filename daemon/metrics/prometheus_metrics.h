// PrometheusMetrics: the MetricsSink served over HTTP in Prometheus's text format
// (prometheus-cpp's Exposer), at http://LISTEN/metrics. What it exports:
//   migmover_sessions_active{role}                       gauge
//   migmover_sessions_total{role,result}                 counter (ended sessions)
//   migmover_session_bytes_total{direction,phase}        counter (sent: source; received:
//                                                        destination; phase precopy|stop_copy)
//   migmover_session_duration_seconds{role}              histogram
//   migmover_switchover_downtime_seconds                 histogram (source: Switchover to the
//                                                        last COMMIT)
//   migmover_device_arc_failures_total{from,to}          counter
//   migmover_in_doubt_settled_total{role,result}         counter (IN_DOUBT settled by the agent)
// Bytes count when a session ends (a finished migration's bytes; in-flight progress is in the
// API's status).
#ifndef MIGMOVER_DAEMON_METRICS_PROMETHEUS_METRICS_H_
#define MIGMOVER_DAEMON_METRICS_PROMETHEUS_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/metrics/metrics.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace migmover {

class PrometheusMetrics final : public MetricsSink {
 public:
  // Listens on `listen` ("127.0.0.1:9464"; port 0 picks one). Errors: InvalidArgument for a
  // malformed address; Unavailable when it cannot listen.
  static absl::StatusOr<std::unique_ptr<PrometheusMetrics>> Start(const std::string& listen);
  ~PrometheusMetrics() override;

  // host:port as bound.
  const std::string& address() const { return address_; }

  void SessionStarted(MetricsRole role) override;
  void SessionEnded(const SessionOutcome& outcome) override;
  void SessionSettled(MetricsRole role, const char* from, const char* to) override;
  void DeviceArcFailed(const char* from, const char* to) override;

 private:
  struct Families;
  PrometheusMetrics() = default;

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Families> f_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_METRICS_PROMETHEUS_METRICS_H_
