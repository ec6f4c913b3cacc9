#include "server/generation_runner.h"

#include <filesystem>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "jobs/generation_job.h"
#include "jobs/job_check.h"
#include "server/generation_settings.h"
#include "server/plugin_invoke.h"
#include "server/request_work.h"
#include "server/upscale_request.h"
#include "server/xyz_plot.h"
#include "util/limits.h"

namespace atelier::server {
namespace {

// A generation request as the job layer takes it, parsed when the request was admitted.
struct PreparedGeneration final : PreparedJob {
  jobs::JobSettings settings;
  jobs::JobWork work;
  std::optional<double> estimate;   // seconds, once the cost model is calibrated
  double megapixel_steps = 0;
  std::optional<double> estimated_seconds() const override { return estimate; }
  double quota_work() const override { return megapixel_steps; }
};

// An X/Y/Z plot: every cell prepared as its own generation.
struct PreparedXyz final : PreparedJob {
  struct Cell {
    int ix = 0, iy = 0, iz = 0;
    v1::GenerateRequest request;
    std::shared_ptr<const PreparedGeneration> prepared;
  };
  jobs::XyzLayout layout;
  std::vector<Cell> cells;
  std::optional<double> estimate;
  double megapixel_steps = 0;
  std::optional<double> estimated_seconds() const override { return estimate; }
  double quota_work() const override { return megapixel_steps; }
};

}  // namespace

GenerationRunner::GenerationRunner(engine::ModelManager& models, const host::PluginRegistry& plugins,
                                   const engine::ClipTokenizer& tokenizer)
    : models_(models), plugins_(plugins), tokenizer_(tokenizer), pipelines_(models, tokenizer) {}

GenerationRunner::~GenerationRunner() = default;

absl::StatusOr<std::shared_ptr<const PreparedJob>> GenerationRunner::Prepare(v1::GenerateRequest& request) const {
  if (!request.script_name().empty()) {
    if (absl::AsciiStrToLower(request.script_name()) != kXyzScriptName) {
      return absl::NotFoundError(absl::StrCat("selectable script \"", request.script_name().substr(0, 64),
                                              "\" not found; scripts: ", kXyzScriptName));
    }
    auto plan = PlanXyz(request, kMaxImagesPerJob);
    if (!plan.ok()) return plan.status();
    auto xyz = std::make_shared<PreparedXyz>();
    xyz->layout = std::move(plan->layout);
    int images = 0;
    double seconds = 0;
    bool estimated = true;
    for (auto& cell : plan->cells) {
      auto prepared = Prepare(cell.request);  // styles, settings and the job checks of each cell, now
      if (!prepared.ok()) {
        return absl::Status(prepared.status().code(), absl::StrCat("X/Y/Z plot cell ", cell.ix, ",", cell.iy, ",",
                                                                   cell.iz, ": ", prepared.status().message()));
      }
      auto generation = std::static_pointer_cast<const PreparedGeneration>(*std::move(prepared));
      images += generation->settings.params.batch_size * generation->settings.params.n_iter;
      if (images > kMaxImagesPerJob) {
        return absl::InvalidArgumentError(absl::StrCat("the X/Y/Z plot makes more than ", kMaxImagesPerJob,
                                                       " images; a job may make at most ", kMaxImagesPerJob));
      }
      xyz->megapixel_steps += generation->megapixel_steps;
      if (generation->estimate) {
        seconds += *generation->estimate;
      } else {
        estimated = false;
      }
      xyz->cells.push_back({cell.ix, cell.iy, cell.iz, std::move(cell.request), std::move(generation)});
    }
    if (estimated) xyz->estimate = seconds;
    xyz->layout.output = xyz->cells.front().prepared->settings.output;
    return std::shared_ptr<const PreparedJob>(std::move(xyz));
  }
  try {
    // Styles first, as WebUI's processing does: the styled prompts are the job's prompts (and its infotext's).
    if (request.styles_size() > 0) {
      if (styles_ == nullptr) {
        return absl::NotFoundError(absl::StrCat("style \"", request.styles(0).substr(0, 64),
                                                "\" not found: no prompt styles are defined (styles.csv, --styles-file)"));
      }
      const std::vector<std::string> names(request.styles().begin(), request.styles().end());
      std::string prompt = request.prompt(), negative = request.negative_prompt();
      if (auto st = styles_->Apply(names, prompt, negative); !st.ok()) return st;
      request.set_prompt(prompt);
      request.set_negative_prompt(negative);
      if (!request.hr_prompt().empty() || !request.hr_negative_prompt().empty()) {
        std::string hr = request.hr_prompt(), hr_negative = request.hr_negative_prompt();
        if (auto st = styles_->Apply(names, hr, hr_negative); !st.ok()) return st;
        request.set_hr_prompt(hr);
        request.set_hr_negative_prompt(hr_negative);
      }
      request.clear_styles();
    }
    auto settings = JobSettingsFromRequest(request);
    if (!settings.ok()) return settings.status();
    std::vector<int> prompt_tokens;
    for (const std::string* text : {&request.prompt(), &request.negative_prompt(), &request.hr_prompt(),
                                    &request.hr_negative_prompt()}) {
      if (!text->empty()) prompt_tokens.push_back(static_cast<int>(tokenizer_.Encode(*text).size()));
    }
    if (absl::Status st = CheckRequestLimits(*settings, prompt_tokens, limits_); !st.ok()) return st;
    const std::string& init_image = request.init_images_size() > 0 ? request.init_images(0) : std::string();
    if (absl::Status st = jobs::CheckJob(*settings, models_, init_image, request.mask()); !st.ok()) return st;
    auto prepared = std::make_shared<PreparedGeneration>();
    prepared->settings = *std::move(settings);
    prepared->work = jobs::EstimateWork(prepared->settings);
    prepared->megapixel_steps = MegapixelSteps(prepared->settings);
    prepared->estimate = cost_.EstimateSeconds(prepared->work, models_.current().get());
    return prepared;
  } catch (const std::exception& e) {  // e.g. bad_alloc decoding an image: refuse the request, keep serving
    return absl::ResourceExhaustedError(absl::StrCat("cannot take this request: ", e.what()));
  }
}

void GenerationRunner::FillDefaultSize(v1::GenerateRequest& request) const {
  if (request.has_width() && request.has_height()) return;
  const auto model = models_.current();
  if (model == nullptr || model->config.native_width <= 0) return;
  const auto& fields = request.override_settings().fields();
  if (auto it = fields.find("sd_model_checkpoint"); it != fields.end() && it->second.has_string_value()) {
    const std::string& named = it->second.string_value();
    const std::string stem = std::filesystem::path(model->filename).replace_extension().string();
    if (!named.empty() && named != model->filename && named != model->title && named != stem) return;
  }
  if (!request.has_width()) request.set_width(model->config.native_width);
  if (!request.has_height()) request.set_height(model->config.native_height);
}

void GenerationRunner::ReleaseModel() { pipelines_.Release(); }

absl::Status GenerationRunner::Run(JobContext& context) {
  absl::Status invoked;
  if (RunIfInvoke(context, plugins_, invoked)) return invoked;
  if (RunIfUpscale(context, pipelines_, invoked)) return invoked;
  if (const auto* xyz = dynamic_cast<const PreparedXyz*>(context.prepared())) {
    std::vector<jobs::XyzCell> cells;
    for (const auto& cell : xyz->cells) {
      jobs::XyzCell c;
      c.ix = cell.ix;
      c.iy = cell.iy;
      c.iz = cell.iz;
      c.width = cell.prepared->settings.params.width;
      c.height = cell.prepared->settings.params.height;
      c.run = [this, &cell](jobs::JobEvents& events) {
        const std::string& init = cell.request.init_images_size() > 0 ? cell.request.init_images(0) : std::string();
        return jobs::RunGenerationJob(pipelines_, plugins_, cell.prepared->settings, init, cell.request.mask(), events);
      };
      cells.push_back(std::move(c));
    }
    return jobs::RunXyzJob(xyz->layout, cells, context);
  }
  const auto* prepared = dynamic_cast<const PreparedGeneration*>(context.prepared());
  if (prepared == nullptr) return absl::InternalError("a generation job without its prepared settings");
  const v1::GenerateRequest& request = context.request();
  const std::string& init_image = request.init_images_size() > 0 ? request.init_images(0) : std::string();
  absl::Status status =
      jobs::RunGenerationJob(pipelines_, plugins_, prepared->settings, init_image, request.mask(), context);
  // Calibrate the cost model on what the estimate covers (sampling, hires upscale, decode; not a model load).
  if (status.ok()) {
    jobs::StageSeconds seconds;
    for (const auto& [stage, s] : context.timings()) {
      if (stage == "text") seconds.text += s;
      if (stage == "sampling") seconds.sampling += s;
      if (stage == "upscale" || stage == "decode") seconds.vae += s;
    }
    cost_.Observe(prepared->work, seconds, models_.current().get());
  }
  return status;
}

}  // namespace atelier::server
