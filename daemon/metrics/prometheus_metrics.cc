#include "daemon/metrics/prometheus_metrics.h"

#include <exception>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "transport/net/socket.h"

namespace migmover {

struct PrometheusMetrics::Families {
  prometheus::Family<prometheus::Gauge>* active;
  prometheus::Family<prometheus::Counter>* sessions;
  prometheus::Family<prometheus::Counter>* bytes;
  prometheus::Family<prometheus::Histogram>* duration;
  prometheus::Family<prometheus::Histogram>* downtime;
  prometheus::Family<prometheus::Counter>* arc_failures;
  prometheus::Family<prometheus::Counter>* settled;
};

namespace {

const char* RoleName(MetricsRole r) {
  return r == MetricsRole::kSource ? "source" : "destination";
}

// Seconds, from a device's quick migration to a large state over a slow link.
prometheus::Histogram::BucketBoundaries DurationBuckets() {
  return {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
}
// Seconds of the VM stopped: QEMU's default limit is 0.3 s.
prometheus::Histogram::BucketBoundaries DowntimeBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

}  // namespace

absl::StatusOr<std::unique_ptr<PrometheusMetrics>> PrometheusMetrics::Start(
    const std::string& listen) {
  auto hp = net::ParseHostPort(listen);
  if (!hp.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics_listen: ", hp.status().message()));
  }
  std::unique_ptr<PrometheusMetrics> m(new PrometheusMetrics());
  m->registry_ = std::make_shared<prometheus::Registry>();
  prometheus::Registry& r = *m->registry_;
  m->f_ = std::make_unique<Families>(Families{
      &prometheus::BuildGauge()
           .Name("migmover_sessions_active")
           .Help("Sessions running, by role (an IN_DOUBT one has ended, result in_doubt).")
           .Register(r),
      &prometheus::BuildCounter()
           .Name("migmover_sessions_total")
           .Help("Sessions ended, by role and result (succeeded, failed, cancelled, in_doubt).")
           .Register(r),
      &prometheus::BuildCounter()
           .Name("migmover_session_bytes_total")
           .Help("Device stream bytes of ended sessions: sent (source) or received "
                 "(destination), by migration phase (precopy, stop_copy).")
           .Register(r),
      &prometheus::BuildHistogram()
           .Name("migmover_session_duration_seconds")
           .Help("How long ended sessions ran, by role.")
           .Register(r),
      &prometheus::BuildHistogram()
           .Name("migmover_switchover_downtime_seconds")
           .Help("Source sessions that switched over: from Switchover to the destination's "
                 "last COMMIT (the VM is stopped meanwhile).")
           .Register(r),
      &prometheus::BuildCounter()
           .Name("migmover_device_arc_failures_total")
           .Help("Device migration FSM arcs that failed, by arc (from, to).")
           .Register(r),
      &prometheus::BuildCounter()
           .Name("migmover_in_doubt_settled_total")
           .Help("IN_DOUBT sessions the agent settled, by role and the result it chose.")
           .Register(r),
  });
  for (MetricsRole role : {MetricsRole::kSource, MetricsRole::kDestination}) {
    m->f_->active->Add({{"role", RoleName(role)}}).Set(0);
  }
  try {
    m->exposer_ = std::make_unique<prometheus::Exposer>(
        absl::StrCat(hp->host.find(':') != std::string::npos ? "[" + hp->host + "]" : hp->host,
                     ":", hp->port),
        /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("--metrics_listen=", listen, ": cannot listen: ", e.what()));
  }
  m->exposer_->RegisterCollectable(m->registry_);
  const std::vector<int> ports = m->exposer_->GetListeningPorts();
  m->address_ = absl::StrCat(hp->host, ":", ports.empty() ? hp->port : ports.front());
  return m;
}

PrometheusMetrics::~PrometheusMetrics() = default;

void PrometheusMetrics::SessionStarted(MetricsRole role) {
  f_->active->Add({{"role", RoleName(role)}}).Increment();
}

void PrometheusMetrics::SessionEnded(const SessionOutcome& o) {
  const char* role = RoleName(o.role);
  f_->active->Add({{"role", role}}).Decrement();
  f_->sessions->Add({{"role", role}, {"result", o.result}}).Increment();
  const char* direction = o.role == MetricsRole::kSource ? "sent" : "received";
  f_->bytes->Add({{"direction", direction}, {"phase", "precopy"}})
      .Increment(static_cast<double>(o.precopy_bytes));
  f_->bytes->Add({{"direction", direction}, {"phase", "stop_copy"}})
      .Increment(static_cast<double>(o.stop_copy_bytes));
  f_->duration->Add({{"role", role}}, DurationBuckets()).Observe(o.seconds);
  if (o.downtime_seconds >= 0) {
    f_->downtime->Add({}, DowntimeBuckets()).Observe(o.downtime_seconds);
  }
}

void PrometheusMetrics::SessionSettled(MetricsRole role, const char* from, const char* to) {
  (void)from;
  f_->settled->Add({{"role", RoleName(role)}, {"result", to}}).Increment();
}

void PrometheusMetrics::DeviceArcFailed(const char* from, const char* to) {
  f_->arc_failures->Add({{"from", from}, {"to", to}}).Increment();
}

}  // namespace migmover
