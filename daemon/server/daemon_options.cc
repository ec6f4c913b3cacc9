#include "server/daemon_options.h"

#include <google/protobuf/util/message_differencer.h>

namespace atelier::server {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

Value Number(double v) {
  Value value;
  value.set_number_value(v);
  return value;
}
Value Bool(bool v) {
  Value value;
  value.set_bool_value(v);
  return value;
}
Value Text(const char* v) {
  Value value;
  value.set_string_value(v);
  return value;
}

Struct MakeDefaults() {
  Struct s;
  auto& f = *s.mutable_fields();
  // Text encoder and noise.
  f["CLIP_stop_at_last_layers"] = Number(1);
  f["eta_noise_seed_delta"] = Number(0);
  f["randn_source"] = Text("GPU");
  f["emphasis"] = Text("Original");
  f["comma_padding_backtrack"] = Number(20);
  // Samplers and schedules.
  f["eta_ancestral"] = Number(1.0);
  f["eta_ddim"] = Number(0.0);
  f["s_churn"] = Number(0.0);
  f["s_tmin"] = Number(0.0);
  f["s_tmax"] = Number(0.0);
  f["s_noise"] = Number(1.0);
  f["sigma_min"] = Number(0.0);
  f["sigma_max"] = Number(0.0);
  f["rho"] = Number(0.0);
  f["always_discard_next_to_last_sigma"] = Bool(false);
  f["sgm_noise_multiplier"] = Bool(false);
  f["use_old_karras_scheduler_sigmas"] = Bool(false);
  f["enable_quantization"] = Bool(false);
  f["beta_dist_alpha"] = Number(0.6);
  f["beta_dist_beta"] = Number(0.6);
  // img2img and inpainting.
  f["initial_noise_multiplier"] = Number(1.0);
  f["inpainting_mask_weight"] = Number(1.0);
  // Live previews (the daemon's default: every step, cheap approximation).
  f["live_previews_enable"] = Bool(true);
  f["show_progress_every_n_steps"] = Number(1);
  f["show_progress_type"] = Text("Approx cheap");
  // Saved images.
  f["samples_format"] = Text("png");
  f["jpeg_quality"] = Number(95);
  f["enable_pnginfo"] = Bool(true);
  // Upscalers and extra networks.
  f["ESRGAN_tile"] = Number(192);
  f["ESRGAN_tile_overlap"] = Number(8);
  f["lora_missing_warn"] = Bool(false);
  f["lora_add_hashes_to_infotext"] = Bool(true);
  f["textual_inversion_add_hashes_to_infotext"] = Bool(true);
  return s;
}

bool SameValue(const Value& a, const Value& b) { return google::protobuf::util::MessageDifferencer::Equals(a, b); }

}  // namespace

const Struct& DaemonOptions::Defaults() {
  static const Struct* defaults = new Struct(MakeDefaults());
  return *defaults;
}

bool DaemonOptions::Honoured(const std::string& key) { return Defaults().fields().count(key) > 0; }

Struct DaemonOptions::Snapshot() const {
  Struct out = Defaults();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, value] : set_.fields()) (*out.mutable_fields())[key] = value;
  return out;
}

void DaemonOptions::Set(const Struct& changes) {
  const auto& defaults = Defaults().fields();
  std::lock_guard<std::mutex> lock(mu_);
  auto& set = *set_.mutable_fields();
  for (const auto& [key, value] : changes.fields()) {
    const auto it = defaults.find(key);
    if (it != defaults.end() && SameValue(it->second, value)) {
      set.erase(key);
    } else {
      set[key] = value;
    }
  }
}

void DaemonOptions::ApplyTo(v1::GenerateRequest& request) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (set_.fields().empty()) return;
  auto& overrides = *request.mutable_override_settings()->mutable_fields();
  for (const auto& [key, value] : set_.fields()) {
    if (Honoured(key) && overrides.count(key) == 0) overrides[key] = value;
  }
}

}  // namespace atelier::server
