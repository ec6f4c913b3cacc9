#include "webui_json.h"

#include <algorithm>
#include <ctime>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "atelier/v1/common.pb.h"
#include "infotext_fields.h"

namespace atelier::web {
namespace {

using nlohmann::json;

json CommonDefaults() {
  return json{{"prompt", ""},
              {"negative_prompt", ""},
              {"styles", nullptr},
              {"seed", -1},
              {"subseed", -1},
              {"subseed_strength", 0},
              {"seed_resize_from_h", -1},
              {"seed_resize_from_w", -1},
              {"sampler_name", nullptr},
              {"scheduler", nullptr},
              {"batch_size", 1},
              {"n_iter", 1},
              {"steps", 50},
              {"cfg_scale", 7.0},
              {"width", 512},
              {"height", 512},
              {"restore_faces", nullptr},
              {"tiling", nullptr},
              {"do_not_save_samples", false},
              {"do_not_save_grid", false},
              {"eta", nullptr},
              {"denoising_strength", 0.75},
              {"s_min_uncond", nullptr},
              {"s_churn", nullptr},
              {"s_tmax", nullptr},
              {"s_tmin", nullptr},
              {"s_noise", nullptr},
              {"override_settings", nullptr},
              {"override_settings_restore_afterwards", true},
              {"refiner_checkpoint", nullptr},
              {"refiner_switch_at", nullptr},
              {"disable_extra_networks", false},
              {"firstpass_image", nullptr},
              {"comments", nullptr},
              {"force_task_id", nullptr},
              {"sampler_index", "Euler"},
              {"script_name", nullptr},
              {"script_args", json::array()},
              {"send_images", true},
              {"save_images", false},
              {"alwayson_scripts", json::object()},
              {"infotext", nullptr}};
}

json Txt2ImgDefaults() {
  json d = CommonDefaults();
  d.update(json{{"enable_hr", false},
                {"firstphase_width", 0},
                {"firstphase_height", 0},
                {"hr_scale", 2.0},
                {"hr_upscaler", nullptr},
                {"hr_second_pass_steps", 0},
                {"hr_resize_x", 0},
                {"hr_resize_y", 0},
                {"hr_checkpoint_name", nullptr},
                {"hr_sampler_name", nullptr},
                {"hr_scheduler", nullptr},
                {"hr_prompt", ""},
                {"hr_negative_prompt", ""}});
  return d;
}

json Img2ImgDefaults() {
  json d = CommonDefaults();
  d.update(json{{"init_images", nullptr},
                {"resize_mode", 0},
                {"image_cfg_scale", nullptr},
                {"mask", nullptr},
                {"mask_blur_x", 4},
                {"mask_blur_y", 4},
                {"mask_blur", nullptr},
                {"mask_round", true},
                {"inpainting_fill", 0},
                {"inpaint_full_res", true},
                {"inpaint_full_res_padding", 0},
                {"inpainting_mask_invert", 0},
                {"initial_noise_multiplier", nullptr},
                {"latent_mask", nullptr},
                {"include_init_images", false}});
  return d;
}

// An infotext number as JSON (int when whole), else the text.
json NumberOr(const std::string* text, json fallback) {
  if (text == nullptr) return fallback;
  std::int64_t i;
  if (absl::SimpleAtoi(*text, &i)) return i;
  double d;
  if (absl::SimpleAtod(*text, &d)) return d;
  return *text;
}

}  // namespace

json RequestParameters(const json& payload, bool img2img) {
  json out = img2img ? Img2ImgDefaults() : Txt2ImgDefaults();
  if (payload.is_object()) {
    for (auto it = payload.begin(); it != payload.end(); ++it) out[it.key()] = it.value();
  }
  return out;
}

std::string InfoJson(const json& p, const JobOutcome& outcome) {
  InfotextFields first;
  if (!outcome.infotexts.empty()) first = ParseInfotextFields(outcome.infotexts.front());
  const std::size_t images = std::max<std::size_t>(outcome.infotexts.size(), 1);
  auto text_or = [&](const char* key, const std::string& fallback) -> std::string {
    return p.contains(key) && p[key].is_string() ? p[key].get<std::string>() : fallback;
  };
  const std::string prompt = first.found ? first.prompt : text_or("prompt", "");
  const std::string negative = first.found ? first.negative_prompt : text_or("negative_prompt", "");
  json all_prompts = json::array(), all_negatives = json::array();
  for (const std::string& infotext : outcome.infotexts) {
    const InfotextFields f = ParseInfotextFields(infotext);
    all_prompts.push_back(f.prompt);
    all_negatives.push_back(f.negative_prompt);
  }
  if (outcome.infotexts.empty()) {
    all_prompts.push_back(prompt);
    all_negatives.push_back(negative);
  }
  const json seeds = outcome.all_seeds.empty() ? json::array({p.value("seed", json(-1))}) : json(outcome.all_seeds);
  const json subseeds =
      outcome.all_subseeds.empty() ? json::array({p.value("subseed", json(-1))}) : json(outcome.all_subseeds);
  char stamp[32] = "";
  const std::time_t started = static_cast<std::time_t>(outcome.started_unix_ms / 1000);
  std::tm local{};
  if (outcome.started_unix_ms > 0 && localtime_r(&started, &local) != nullptr) {
    std::strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &local);
  }
  json extra = json::object();
  for (const auto& [key, value] : first.extra) extra[key] = value;
  // Processed.js()'s key order (ordered_json keeps insertion order).
  nlohmann::ordered_json info{
      {"prompt", prompt},
      {"all_prompts", all_prompts},
      {"negative_prompt", negative},
      {"all_negative_prompts", all_negatives},
      {"seed", seeds.empty() ? json(-1) : seeds.front()},
      {"all_seeds", seeds},
      {"subseed", subseeds.empty() ? json(-1) : subseeds.front()},
      {"all_subseeds", subseeds},
      {"subseed_strength", NumberOr(first.Find("Variation seed strength"), p.value("subseed_strength", json(0)))},
      {"width", NumberOr(first.Find("Size-1"), p.value("width", json(512)))},
      {"height", NumberOr(first.Find("Size-2"), p.value("height", json(512)))},
      {"sampler_name", first.Find("Sampler") ? json(*first.Find("Sampler")) : p.value("sampler_name", json(nullptr))},
      {"cfg_scale", NumberOr(first.Find("CFG scale"), p.value("cfg_scale", json(7.0)))},
      {"steps", NumberOr(first.Find("Steps"), p.value("steps", json(50)))},
      {"batch_size", p.value("batch_size", json(1))},
      {"restore_faces", p.value("restore_faces", json(nullptr))},
      {"face_restoration_model", nullptr},
      {"sd_model_name", first.Find("Model") ? json(*first.Find("Model")) : json(nullptr)},
      {"sd_model_hash", first.Find("Model hash") ? json(*first.Find("Model hash")) : json(nullptr)},
      {"sd_vae_name", first.Find("VAE") ? json(*first.Find("VAE")) : json(nullptr)},
      {"sd_vae_hash", first.Find("VAE hash") ? json(*first.Find("VAE hash")) : json(nullptr)},
      {"seed_resize_from_w", p.value("seed_resize_from_w", json(-1))},
      {"seed_resize_from_h", p.value("seed_resize_from_h", json(-1))},
      {"denoising_strength", NumberOr(first.Find("Denoising strength"), p.value("denoising_strength", json(nullptr)))},
      {"extra_generation_params", extra},
      {"index_of_first_image", 0},
      {"infotexts", outcome.infotexts},
      {"styles", p.contains("styles") && p["styles"].is_array() ? p["styles"] : json::array()},
      {"job_timestamp", stamp},
      {"clip_skip", NumberOr(first.Find("Clip skip"), json(1))},
      {"is_using_inpainting_conditioning", false},
      {"version", first.Find("Version") ? json(*first.Find("Version")) : json("atelier")},
  };
  (void)images;
  return info.dump(-1, ' ', false, json::error_handler_t::replace);
}

const char* JobStateName(int state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED: return "queued";
    case v1::JOB_STATE_RUNNING: return "running";
    case v1::JOB_STATE_SUCCEEDED: return "succeeded";
    case v1::JOB_STATE_CANCELLED: return "cancelled";
    case v1::JOB_STATE_FAILED: return "failed";
    default: return "unknown";
  }
}

int HttpStatusOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE: return 422;
    case grpc::StatusCode::NOT_FOUND: return 404;
    case grpc::StatusCode::FAILED_PRECONDITION: return 409;
    case grpc::StatusCode::UNAUTHENTICATED: return 401;
    case grpc::StatusCode::PERMISSION_DENIED: return 403;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return 429;
    case grpc::StatusCode::UNAVAILABLE: return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return 504;
    case grpc::StatusCode::CANCELLED: return 499;
    case grpc::StatusCode::UNIMPLEMENTED: return 501;
    default: return 500;
  }
}

json ErrorBody(const std::string& error, const std::string& detail) {
  return json{{"error", error}, {"detail", detail}, {"body", ""}, {"errors", detail}};
}

json ProgressJson(const ProgressState& s, bool skip_current_image) {
  double progress = 0;
  if (s.active && s.job_count > 0) {
    progress = 0.01 + static_cast<double>(s.job_no) / s.job_count;
    if (s.sampling_steps > 0) progress += 1.0 / s.job_count * s.sampling_step / s.sampling_steps;
    progress = std::min(progress, 1.0);
  }
  const double eta = progress > 0 ? s.elapsed_seconds / progress - s.elapsed_seconds : 0;
  char stamp[32] = "0";
  if (s.started_unix_ms > 0) {
    const std::time_t started = static_cast<std::time_t>(s.started_unix_ms / 1000);
    std::tm local{};
    if (localtime_r(&started, &local) != nullptr) std::strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &local);
  }
  json state{{"skipped", s.skipped},
             {"interrupted", s.interrupted},
             {"stopping_generation", false},
             {"job", s.active ? s.job : ""},
             {"job_count", s.active ? s.job_count : 0},
             {"job_timestamp", stamp},
             {"job_no", s.job_no},
             {"sampling_step", s.sampling_step},
             {"sampling_steps", s.sampling_steps}};
  json image = nullptr;
  if (!skip_current_image && s.active && !s.current_image.empty()) image = absl::Base64Escape(s.current_image);
  json textinfo = s.textinfo.empty() ? json(nullptr) : json(s.textinfo);
  return json{{"progress", progress},
              {"eta_relative", eta},
              {"state", state},
              {"current_image", image},
              {"textinfo", textinfo}};
}

}  // namespace atelier::web
