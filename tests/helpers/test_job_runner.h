// A test-only job type for exercising the queue, streaming and cancellation without a model (plugins run in real
// jobs only: tests/integration/generation_test.cc). It also runs Plugins.Invoke jobs.
// It reads its behaviour from the request (never part of the product):
//   prompt                          a label recorded in run_order()
//   steps                           number of steps
//   override_settings.test_step_ms  wall time per step (default 5)
//   override_settings.test_preview_every / test_preview_bytes   a preview of that many bytes every N steps
//   override_settings.test_results / test_result_bytes          results sent at the end (default 1 x 1000 bytes)
//   override_settings.test_fail     fail the job with this message after the steps
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "host/plugin_registry.h"
#include "server/job_runner.h"

namespace atelier::testing {

class TestJobRunner final : public server::JobRunner {
 public:
  // `plugins` may be null (Plugins.Invoke jobs then fail).
  explicit TestJobRunner(const host::PluginRegistry* plugins = nullptr) : plugins_(plugins) {}

  absl::StatusOr<std::shared_ptr<const server::PreparedJob>> Prepare(
      server::v1::GenerateRequest& request) const override;
  absl::Status Run(server::JobContext& context) override;

  // Labels (prompts) of the jobs run so far, in order.
  std::vector<std::string> run_order() const;
  // Steps a job ran after its cancel request was first seen... measured as steps started after the request.
  int steps_after_cancel() const { return steps_after_cancel_.load(); }
  // Steps of the current/last job completed.
  int steps_done() const { return steps_done_.load(); }

 private:
  const host::PluginRegistry* plugins_;
  mutable std::mutex mu_;
  std::vector<std::string> run_order_;
  std::atomic<int> steps_after_cancel_{0};
  std::atomic<int> steps_done_{0};
};

}  // namespace atelier::testing
