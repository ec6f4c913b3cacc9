// The metrics' Prometheus exposition: cumulative histogram buckets, escaped labels, gauges; and structured logs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/daemon_metrics.h"
#include "util/log.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;

TEST(DaemonMetricsTest, HistogramBucketsAreCumulativeInTheExposition) {
  server::DaemonMetrics metrics;
  metrics.JobFinished("succeeded", 0.01, 0.07, {{"sampling", 0.05}, {"decode", 0.02}});
  metrics.JobFinished("succeeded", 0.02, 3.0, {{"sampling", 2.5}});
  metrics.JobFinished("failed", 0.5, 5000, {});
  metrics.Refused("RESOURCE_EXHAUSTED");
  metrics.EventSent("preview", 100);
  metrics.EventSent("preview", 50);
  metrics.StreamOpened();
  const auto snapshot = metrics.Take();
  EXPECT_EQ(snapshot.run_seconds.count, 3u);
  server::LiveGauges live;
  live.queue_depth = 4;
  const std::string text = server::RenderPrometheus(snapshot, live);
  EXPECT_THAT(text, HasSubstr("atelier_job_run_seconds_bucket{le=\"0.05\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("atelier_job_run_seconds_bucket{le=\"0.1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("atelier_job_run_seconds_bucket{le=\"5\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("atelier_job_run_seconds_bucket{le=\"1800\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("atelier_job_run_seconds_bucket{le=\"+Inf\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("atelier_job_run_seconds_sum 5003.07\n"));
  EXPECT_THAT(text, HasSubstr("atelier_jobs_total{state=\"succeeded\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("atelier_jobs_total{state=\"failed\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("atelier_requests_refused_total{code=\"RESOURCE_EXHAUSTED\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("atelier_stage_seconds_total{stage=\"sampling\"} 2.55\n"));
  EXPECT_THAT(text, HasSubstr("atelier_stage_runs_total{stage=\"sampling\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("atelier_bytes_sent_total{kind=\"preview\"} 150\n"));
  EXPECT_THAT(text, HasSubstr("atelier_queue_depth 4\n"));
  EXPECT_THAT(text, HasSubstr("atelier_streams_open 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE atelier_job_run_seconds histogram\n"));
}

TEST(DaemonMetricsTest, LabelValuesAreEscaped) {
  server::DaemonMetrics metrics;
  metrics.JobFinished("succeeded", 0, 0, {{"plug\"in\\x\nz", 1}});
  const std::string text = server::RenderPrometheus(metrics.Take(), {});
  EXPECT_THAT(text, HasSubstr("{stage=\"plug\\\"in\\\\x\\nz\"}"));
}

TEST(StructuredLogTest, TextAndJsonLines) {
  testing::internal::CaptureStderr();
  Log(LogLevel::kInfo, "job finished", {{"job", "ab12"}, {"message", "a \"quoted\" word"}});
  SetLogFormat(LogFormat::kJson);
  Log(LogLevel::kWarning, "job \"x\"\n", {{"job", "ab12"}, {"ctl", std::string("\x01", 1)}});
  SetLogFormat(LogFormat::kText);
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_THAT(out, HasSubstr(" I job finished job=ab12 message=\"a \\\"quoted\\\" word\"\n"));
  EXPECT_THAT(out, HasSubstr("\"level\":\"warning\",\"msg\":\"job \\\"x\\\"\\n\",\"job\":\"ab12\",\"ctl\":\"\\u0001\"}\n"));
  EXPECT_FALSE(ParseLogFormat("xml").ok());
}

}  // namespace
}  // namespace atelier
