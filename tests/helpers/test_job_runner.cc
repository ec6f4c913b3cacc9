#include "test_job_runner.h"

#include <ATen/ATen.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/job_context.h"
#include "server/plugin_invoke.h"
#include "util/stage_timer.h"

namespace atelier::testing {
namespace {

double Setting(const server::v1::GenerateRequest& request, const std::string& key, double fallback) {
  const auto& fields = request.override_settings().fields();
  const auto it = fields.find(key);
  return it == fields.end() ? fallback : it->second.number_value();
}

std::string TextSetting(const server::v1::GenerateRequest& request, const std::string& key) {
  const auto& fields = request.override_settings().fields();
  const auto it = fields.find(key);
  return it == fields.end() ? "" : it->second.string_value();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const server::PreparedJob>> TestJobRunner::Prepare(
    server::v1::GenerateRequest& request) const {
  if (request.prompt() == "reject me") return absl::InvalidArgumentError("the test runner rejects this prompt");
  return nullptr;
}

std::vector<std::string> TestJobRunner::run_order() const {
  std::lock_guard<std::mutex> lock(mu_);
  return run_order_;
}

absl::Status TestJobRunner::Run(server::JobContext& context) {
  absl::Status invoked;
  if (plugins_ != nullptr && server::RunIfInvoke(context, *plugins_, invoked)) return invoked;
  const auto& request = context.request();
  {
    std::lock_guard<std::mutex> lock(mu_);
    run_order_.push_back(request.prompt());
  }
  const int steps = request.steps();
  const int step_ms = static_cast<int>(Setting(request, "test_step_ms", 5));
  const int preview_every = static_cast<int>(Setting(request, "test_preview_every", 0));
  const int preview_bytes = static_cast<int>(Setting(request, "test_preview_bytes", 100));
  const int results = static_cast<int>(Setting(request, "test_results", 1));
  const int result_bytes = static_cast<int>(Setting(request, "test_result_bytes", 1000));

  std::vector<std::int64_t> seeds;
  for (int i = 0; i < results; ++i) seeds.push_back(request.seed() + i);
  context.Started(seeds, {}, results);

  steps_done_ = 0;
  steps_after_cancel_ = 0;
  bool skipped = false;
  {
    StageTimer timer([&context](const std::string& stage, double s) { context.AddTiming(stage, s); }, "sampling");
    for (int step = 1; step <= steps; ++step) {
      if (context.ShouldStop()) return absl::CancelledError("stopped at a step boundary");
      if (context.TakeSkip()) {
        skipped = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
      if (context.ShouldStop()) ++steps_after_cancel_;
      server::v1::Progress progress;
      progress.set_sampling_step(step);
      progress.set_sampling_steps(steps);
      progress.set_job_count(1);
      progress.set_progress(static_cast<float>(step) / steps);
      progress.set_pass("test");
      if (preview_every > 0 && step % preview_every == 0) {
        progress.mutable_preview()->set_data(std::string(static_cast<size_t>(preview_bytes), 'p'));
        progress.mutable_preview()->set_mime_type("image/jpeg");
      }
      context.Progress(std::move(progress));
      steps_done_ = step;
    }
  }
  if (const std::string fail = TextSetting(request, "test_fail"); !fail.empty()) {
    return absl::InternalError(fail);
  }
  for (int i = 0; i < results; ++i) {
    server::v1::Result result;
    result.set_index(i);
    result.set_seed(request.seed() + i);
    result.set_interrupted(skipped && i == 0);
    result.mutable_image()->set_data(std::string(static_cast<size_t>(result_bytes), static_cast<char>('a' + i % 26)));
    result.mutable_image()->set_mime_type("image/png");
    result.set_infotext(absl::StrCat(request.prompt(), "\nSteps: ", steps));
    if (auto s = context.Result(std::move(result)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace atelier::testing
