#include "server/request_limits.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/pipeline/hires_fix.h"
#include "server/request_work.h"

namespace atelier::server {
namespace {

absl::Status Over(const std::string& what, const std::string& limit, const char* flag) {
  return absl::InvalidArgumentError(absl::StrCat(what, ", over this daemon's limit of ", limit, " (", flag,
                                                 "); ask the operator to raise it, or ask for less"));
}

}  // namespace

int EnabledControlNetUnits(const jobs::JobSettings& settings) {
  const auto it = settings.plugin_args.find("controlnet");
  if (it == settings.plugin_args.end()) return 0;
  const nlohmann::json value = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* args = value.is_object() && value.contains("args") ? &value["args"] : &value;
  if (!args->is_array()) return 0;
  int enabled = 0;
  for (const nlohmann::json& unit : *args) {
    if (!unit.is_object()) continue;
    const auto flag = unit.find("enabled");
    if (flag == unit.end() || !flag->is_boolean() || flag->get<bool>()) ++enabled;
  }
  return enabled;
}

absl::Status CheckRequestLimits(const jobs::JobSettings& settings, const std::vector<int>& prompt_tokens,
                                const RequestLimits& limits) {
  const engine::GenerationParams& p = settings.params;
  for (const auto& [name, side] : {std::pair<const char*, int>{"width", p.width}, {"height", p.height}}) {
    if (side > limits.max_image_side) {
      return Over(absl::StrCat(name, " ", side), absl::StrCat(limits.max_image_side, " pixels"), "--max-image-side");
    }
  }
  auto check_pixels = [&limits](const char* pass, std::int64_t w, std::int64_t h) -> absl::Status {
    if (w * h > limits.max_image_pixels) {
      return Over(absl::StrCat(pass, " ", w, "x", h, " = ", w * h, " pixels"),
                  absl::StrCat(limits.max_image_pixels, " pixels"), "--max-image-pixels");
    }
    if (w > limits.max_image_side || h > limits.max_image_side) {
      return Over(absl::StrCat(pass, " ", w, "x", h), absl::StrCat(limits.max_image_side, " pixels a side"),
                  "--max-image-side");
    }
    return absl::OkStatus();
  };
  if (absl::Status st = check_pixels("the image", p.width, p.height); !st.ok()) return st;
  if (p.sampling.steps > limits.max_steps) {
    return Over(absl::StrCat("steps ", p.sampling.steps), absl::StrCat(limits.max_steps), "--max-steps");
  }
  if (p.hires.enabled) {
    auto target = engine::HiresTargetSize(p.width, p.height, p.hires, kMaxImageSide);
    if (target.ok()) {
      if (absl::Status st = check_pixels("the hires fix pass", target->width, target->height); !st.ok()) return st;
    }
    if (p.hires.second_pass_steps > limits.max_steps) {
      return Over(absl::StrCat("hr_second_pass_steps ", p.hires.second_pass_steps), absl::StrCat(limits.max_steps),
                  "--max-steps");
    }
  }
  const std::int64_t images = std::int64_t{p.batch_size} * p.n_iter;
  if (images > limits.max_images_per_job) {
    return Over(absl::StrCat("batch_size ", p.batch_size, " x n_iter ", p.n_iter, " = ", images, " images"),
                absl::StrCat(limits.max_images_per_job, " images per job"), "--max-images-per-job");
  }
  if (const int frames = AnimateDiffFrames(settings); frames > limits.max_frames) {
    return Over(absl::StrCat("AnimateDiff video_length ", frames), absl::StrCat(limits.max_frames, " frames"),
                "--max-frames");
  }
  for (const int tokens : prompt_tokens) {
    if (tokens > limits.max_prompt_tokens) {
      return Over(absl::StrCat("a prompt of ", tokens, " CLIP tokens"), absl::StrCat(limits.max_prompt_tokens, " tokens"),
                  "--max-prompt-tokens");
    }
  }
  if (const int units = EnabledControlNetUnits(settings); units > limits.max_controlnet_units) {
    return Over(absl::StrCat(units, " enabled ControlNet units"), absl::StrCat(limits.max_controlnet_units),
                "--max-controlnet-units");
  }
  std::int64_t args_bytes = 0;
  for (const auto& [name, json] : settings.plugin_args) args_bytes += static_cast<std::int64_t>(json.size());
  if (args_bytes > limits.max_plugin_args_bytes) {
    return Over(absl::StrCat("alwayson_scripts of ", args_bytes, " bytes"),
                absl::StrCat(limits.max_plugin_args_bytes / 1024, " KiB"), "--max-plugin-args-kb");
  }
  return absl::OkStatus();
}

}  // namespace atelier::server
