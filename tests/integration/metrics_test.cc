// /metrics against real daemons: a finished migration's bytes by direction and phase, sessions
// by result, the active gauge, the duration and downtime histograms, and device arc failures.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/integration/two_daemons.h"
#include "transport/net/socket.h"

namespace migmover {
namespace {

using testing::DaemonProcess;
using testing::TwoDaemons;
using v1::SessionStatus;

class Metrics : public TwoDaemons {
 protected:
  Metrics() {
    src_flags_.push_back("--metrics_listen=127.0.0.1:0");
    dst_flags_.push_back("--metrics_listen=127.0.0.1:0");
  }

  // GET /metrics from the daemon's exporter (its address from GetDaemonInfo).
  std::string Scrape(DaemonProcess& d) {
    grpc::ClientContext ctx;
    v1::DaemonInfo info;
    EXPECT_TRUE(d.stub()->GetDaemonInfo(&ctx, v1::GetDaemonInfoRequest(), &info).ok());
    auto hp = net::ParseHostPort(info.metrics_address());
    EXPECT_TRUE(hp.ok()) << info.metrics_address();
    if (!hp.ok()) return "";
    auto fd = net::TcpConnect(*hp, absl::Seconds(5));
    EXPECT_TRUE(fd.ok()) << fd.status();
    if (!fd.ok()) return "";
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
    EXPECT_TRUE(net::SendAll(fd->get(), req, absl::Now() + absl::Seconds(5)).ok());
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd->get(), buf, sizeof(buf))) > 0) out.append(buf, n);
    return out;
  }

  // The value of the sample line that starts with `series` (name and labels, as exported).
  static double Value(const std::string& text, const std::string& series) {
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (absl::StartsWith(line, series + " ")) {
        double v = 0;
        EXPECT_TRUE(absl::SimpleAtod(line.substr(series.size() + 1), &v)) << line;
        return v;
      }
    }
    ADD_FAILURE() << "no series " << series << " in:\n" << text;
    return -1;
  }
};

TEST_F(Metrics, AFinishedMigrationShowsItsBytesResultAndTimes) {
  ASSERT_TRUE(Attach(*src_, "d", "size=4MiB,seed=9").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=4MiB").ok());
  ASSERT_TRUE(Prepare("m", {"d"}).ok());
  ASSERT_TRUE(Start("m", {"d"}, /*precopy=*/true).ok());
  WatchUntilRounds("m", 1);
  Ended e = SwitchoverAndWait("m");
  ASSERT_TRUE(BothSucceeded(e.source, e.destination));

  const std::string src = Scrape(*src_);
  EXPECT_EQ(Value(src, R"(migmover_session_bytes_total{direction="sent",phase="precopy"})"),
            static_cast<double>(e.source.precopy_bytes()));
  EXPECT_EQ(Value(src, R"(migmover_session_bytes_total{direction="sent",phase="stop_copy"})"),
            static_cast<double>(e.source.stop_copy_bytes()));
  EXPECT_GT(e.source.precopy_bytes(), 4u << 20);
  EXPECT_EQ(Value(src, R"(migmover_sessions_total{result="succeeded",role="source"})"), 1);
  EXPECT_EQ(Value(src, R"(migmover_sessions_active{role="source"})"), 0);
  EXPECT_EQ(Value(src, R"(migmover_session_duration_seconds_count{role="source"})"), 1);
  EXPECT_EQ(Value(src, "migmover_switchover_downtime_seconds_count"), 1);
  EXPECT_EQ(src.find("session_id"), std::string::npos);  // No session ids as labels.

  const std::string dst = Scrape(*dst_);
  const double received =
      Value(dst, R"(migmover_session_bytes_total{direction="received",phase="precopy"})") +
      Value(dst, R"(migmover_session_bytes_total{direction="received",phase="stop_copy"})");
  EXPECT_EQ(received, static_cast<double>(e.destination.bytes_moved()));
  EXPECT_EQ(Value(dst, R"(migmover_sessions_total{result="succeeded",role="destination"})"), 1);
}

TEST_F(Metrics, AFailedArcIsCountedByArc) {
  ASSERT_TRUE(Attach(*src_, "bad", "size=1MiB,fail_arc=RUNNING:PRE_COPY:EIO").ok());
  ASSERT_TRUE(Attach(*dst_, "bad", "size=1MiB").ok());
  ASSERT_TRUE(Prepare("f", {"bad"}).ok());
  ASSERT_TRUE(Start("f", {"bad"}, /*precopy=*/true).ok());
  SessionStatus s = WaitFinal(*src_, "f");
  ASSERT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  WaitFinal(*dst_, "f");
  const std::string src = Scrape(*src_);
  EXPECT_GE(Value(src, R"(migmover_device_arc_failures_total{from="RUNNING",to="PRE_COPY"})"), 1);
  EXPECT_EQ(Value(src, R"(migmover_sessions_total{result="failed",role="source"})"), 1);
  EXPECT_EQ(Value(Scrape(*dst_), R"(migmover_sessions_total{result="failed",role="destination"})"),
            1);
}

}  // namespace
}  // namespace migmover
