#include "server/infotext_request.h"

#include "jobs/job_loras.h"

#include <cmath>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "engine/pipeline/infotext_parse.h"
#include "util/status_macros.h"

namespace atelier::server {
namespace {

class Filler {
 public:
  explicit Filler(const engine::ParsedInfotext& p) : p_(p) {}

  const std::string* Text(const char* key) const { return p_.Find(key); }

  // Calls set(value) when the key is there; a value that is not a number is an error naming the key.
  template <typename T, typename Set>
  absl::Status Number(const char* key, Set set) {
    const std::string* text = p_.Find(key);
    if (text == nullptr) return absl::OkStatus();
    double value = 0;
    if (!absl::SimpleAtod(*text, &value) || !std::isfinite(value)) {
      return absl::InvalidArgumentError(absl::StrCat("infotext: \"", key, ": ", *text, "\" is not a number"));
    }
    // Casting a double outside the target's range is undefined: refuse it (the request's own checks then name
    // the allowed range for values that fit).
    if (std::fabs(value) > 9.0e15 || (std::is_same_v<T, int> && std::fabs(value) > 2.0e9)) {
      return absl::InvalidArgumentError(absl::StrCat("infotext: \"", key, ": ", *text, "\" is out of range"));
    }
    set(static_cast<T>(value));
    return absl::OkStatus();
  }

 private:
  const engine::ParsedInfotext& p_;
};

// sd-webui-controlnet's on_infotext_pasted: a "ControlNet N" value ("Module: canny, Model: ..., Weight: 1.0, ...")
// becomes unit N, enabled, with each "Key Words: value" as the field key_words (True/False, numbers, else text).
// Malformed values (the legacy lowercase format) are skipped, as the extension skips them.
bool UnitFromInfotext(const std::string& text, google::protobuf::Struct& unit) {
  auto& fields = *unit.mutable_fields();
  fields["enabled"].set_bool_value(true);
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    item = absl::StripAsciiWhitespace(item);
    std::vector<std::string> kv = absl::StrSplit(item, ": ");
    if (kv.size() != 2) return false;
    const std::string field = absl::AsciiStrToLower(absl::StrJoin(absl::StrSplit(kv[0], ' '), "_"));
    double number = 0;
    if (kv[1] == "True" || kv[1] == "False") {
      fields[field].set_bool_value(kv[1] == "True");
    } else if (absl::SimpleAtod(kv[1], &number) && kv[1].find_first_not_of("0123456789+-.eE") == std::string::npos) {
      fields[field].set_number_value(number);
    } else {
      fields[field].set_string_value(kv[1]);
    }
  }
  return true;
}

// Units from the infotext fill what the request's units leave unset (the request's own fields win), as pasting
// into the extension's UI and then adding the image does.
void ApplyControlNetUnits(const engine::ParsedInfotext& parsed, v1::GenerateRequest& r) {
  std::vector<google::protobuf::Struct> units;
  for (int i = 0; i < 64; ++i) {
    const std::string* text = parsed.Find(absl::StrCat("ControlNet ", i));
    if (text == nullptr) break;
    google::protobuf::Struct unit;
    if (UnitFromInfotext(*text, unit)) units.push_back(std::move(unit));
  }
  if (units.empty()) return;
  auto& scripts = *r.mutable_alwayson_scripts()->mutable_fields();
  std::string key = "controlnet";
  for (const auto& [name, value] : scripts) {
    if (absl::AsciiStrToLower(name) == "controlnet") key = name;
  }
  google::protobuf::Value& entry = scripts[key];
  auto& args_value = (*entry.mutable_struct_value()->mutable_fields())["args"];
  google::protobuf::ListValue* args = args_value.mutable_list_value();
  for (size_t i = 0; i < units.size(); ++i) {
    if (static_cast<int>(i) >= args->values_size()) args->add_values()->mutable_struct_value();
    google::protobuf::Value& given = *args->mutable_values(static_cast<int>(i));
    if (!given.has_struct_value()) continue;  // positional or odd values: left as given
    auto& fields = *given.mutable_struct_value()->mutable_fields();
    for (const auto& [field, value] : units[i].fields()) {
      if (fields.count(field) == 0) fields[field] = value;
    }
  }
}

// sd-webui-animatediff's infotext_pasted: "AnimateDiff: model: x, video_length: 16, ..." becomes its enabled
// process (the extension's paste fields), unless the request already has AnimateDiff arguments. mm_hash and version
// describe the file and the extension, not the process: left out.
void ApplyAnimateDiff(const engine::ParsedInfotext& parsed, v1::GenerateRequest& r) {
  const std::string* text = parsed.Find("AnimateDiff");
  if (text == nullptr) return;
  for (const auto& [name, value] : r.alwayson_scripts().fields()) {
    if (absl::AsciiStrToLower(name) == "animatediff") return;
  }
  google::protobuf::Struct unit;
  if (!UnitFromInfotext(*text, unit)) return;
  auto& fields = *unit.mutable_fields();
  fields.erase("enabled");
  fields.erase("mm_hash");
  fields.erase("version");
  fields["enable"].set_bool_value(true);
  google::protobuf::Value& entry = (*r.mutable_alwayson_scripts()->mutable_fields())["AnimateDiff"];
  *(*entry.mutable_struct_value()->mutable_fields())["args"].mutable_list_value()->add_values()->mutable_struct_value() =
      unit;
}

}  // namespace

absl::Status ApplyInfotext(v1::GenerateRequest& r, engine::LoraCatalog* loras) {
  if (r.infotext().empty()) return absl::OkStatus();
  const engine::ParsedInfotext parsed = engine::ParseInfotext(r.infotext());
  Filler f(parsed);
  const bool img2img = r.mode() == v1::MODE_IMG2IMG || (r.mode() == v1::MODE_UNSPECIFIED && r.init_images_size() > 0);

  ApplyControlNetUnits(parsed, r);
  ApplyAnimateDiff(parsed, r);
  if (r.prompt().empty()) {
    const std::string* hashes = f.Text("Lora hashes");
    r.set_prompt(loras != nullptr && hashes != nullptr ? jobs::RenameLorasByHash(parsed.prompt, *hashes, *loras)
                                                        : parsed.prompt);
  }
  if (r.negative_prompt().empty()) r.set_negative_prompt(parsed.negative_prompt);
  if (r.sampler_name().empty()) {
    if (const std::string* v = f.Text("Sampler")) r.set_sampler_name(*v);
  }
  if (r.scheduler().empty()) {
    if (const std::string* v = f.Text("Schedule type")) r.set_scheduler(*v);
  }
  if (!r.has_steps()) ATELIER_RETURN_IF_ERROR(f.Number<int>("Steps", [&](int v) { r.set_steps(v); }));
  if (!r.has_cfg_scale()) ATELIER_RETURN_IF_ERROR(f.Number<double>("CFG scale", [&](double v) { r.set_cfg_scale(v); }));
  if (!r.has_seed()) ATELIER_RETURN_IF_ERROR(f.Number<int64_t>("Seed", [&](int64_t v) { r.set_seed(v); }));
  if (!r.has_width()) ATELIER_RETURN_IF_ERROR(f.Number<int>("Size-1", [&](int v) { r.set_width(v); }));
  if (!r.has_height()) ATELIER_RETURN_IF_ERROR(f.Number<int>("Size-2", [&](int v) { r.set_height(v); }));
  if (!r.has_subseed()) ATELIER_RETURN_IF_ERROR(f.Number<int64_t>("Variation seed", [&](int64_t v) { r.set_subseed(v); }));
  if (!r.has_subseed_strength()) {
    ATELIER_RETURN_IF_ERROR(f.Number<double>("Variation seed strength", [&](double v) { r.set_subseed_strength(v); }));
  }
  // WebUI's paste fields swap these two (Seed resize from-1 -> seed_resize_from_h); the written order is WxH and
  // reading it back the same way keeps write -> read -> write the identity.
  if (!r.has_seed_resize_from_w()) {
    ATELIER_RETURN_IF_ERROR(f.Number<int>("Seed resize from-1", [&](int v) { r.set_seed_resize_from_w(v); }));
  }
  if (!r.has_seed_resize_from_h()) {
    ATELIER_RETURN_IF_ERROR(f.Number<int>("Seed resize from-2", [&](int v) { r.set_seed_resize_from_h(v); }));
  }
  if (!r.has_denoising_strength()) {
    ATELIER_RETURN_IF_ERROR(f.Number<double>("Denoising strength", [&](double v) { r.set_denoising_strength(v); }));
  }

  if (!img2img) {
    // Hires fix: WebUI turns it on when the infotext has a denoising strength and hires keys.
    // (the keys as written: the parser's default "Hires resize-1" stands for "not given").
    const auto& written = parsed.written;
    if (!r.has_enable_hr() && written.count("Denoising strength") > 0 &&
        (written.count("Hires upscale") > 0 || written.count("Hires upscaler") > 0 ||
         written.count("Hires resize-1") > 0)) {
      r.set_enable_hr(true);
    }
    if (!r.has_hr_scale()) ATELIER_RETURN_IF_ERROR(f.Number<double>("Hires upscale", [&](double v) { r.set_hr_scale(v); }));
    if (r.hr_upscaler().empty()) {
      if (const std::string* v = f.Text("Hires upscaler")) r.set_hr_upscaler(*v);
    }
    if (!r.has_hr_second_pass_steps()) {
      ATELIER_RETURN_IF_ERROR(f.Number<int>("Hires steps", [&](int v) { r.set_hr_second_pass_steps(v); }));
    }
    if (!r.has_hr_resize_x()) ATELIER_RETURN_IF_ERROR(f.Number<int>("Hires resize-1", [&](int v) { r.set_hr_resize_x(v); }));
    if (!r.has_hr_resize_y()) ATELIER_RETURN_IF_ERROR(f.Number<int>("Hires resize-2", [&](int v) { r.set_hr_resize_y(v); }));
    const std::string* hr_sampler = f.Text("Hires sampler");
    if (r.hr_sampler_name().empty() && hr_sampler != nullptr && *hr_sampler != "Use same sampler") {
      r.set_hr_sampler_name(*hr_sampler);
    }
    const std::string* hr_scheduler = f.Text("Hires schedule type");
    if (r.hr_scheduler().empty() && hr_scheduler != nullptr && *hr_scheduler != "Use same scheduler") {
      r.set_hr_scheduler(*hr_scheduler);
    }
    if (r.hr_prompt().empty()) {
      if (const std::string* v = f.Text("Hires prompt")) r.set_hr_prompt(*v);
    }
    if (r.hr_negative_prompt().empty()) {
      if (const std::string* v = f.Text("Hires negative prompt")) r.set_hr_negative_prompt(*v);
    }
  } else {
    if (!r.has_mask_blur()) ATELIER_RETURN_IF_ERROR(f.Number<int>("Mask blur", [&](int v) { r.set_mask_blur(v); }));
    if (!r.has_inpainting_fill()) {
      if (const std::string* v = f.Text("Masked content")) {
        const char* const kFills[] = {"fill", "original", "latent noise", "latent nothing"};
        for (int i = 0; i < 4; ++i) {
          if (*v == kFills[i]) r.set_inpainting_fill(i);
        }
      }
    }
    if (!r.has_inpaint_full_res()) {
      if (const std::string* v = f.Text("Inpaint area")) r.set_inpaint_full_res(*v == "Only masked");
    }
    if (!r.has_inpaint_full_res_padding()) {
      ATELIER_RETURN_IF_ERROR(f.Number<int>("Masked area padding", [&](int v) { r.set_inpaint_full_res_padding(v); }));
    }
    if (!r.has_inpainting_mask_invert()) {
      if (const std::string* v = f.Text("Mask mode")) r.set_inpainting_mask_invert(*v == "Inpaint not masked" ? 1 : 0);
    }
  }

  // Settings: the infotext's value when it differs from the option's default and the request sets no override.
  auto& overrides = *r.mutable_override_settings()->mutable_fields();
  struct Setting {
    const char* key;
    const char* option;
    double default_value;
  };
  const Setting numbers[] = {
      {"Clip skip", "CLIP_stop_at_last_layers", 1},  {"ENSD", "eta_noise_seed_delta", 0},
      {"Eta", "eta_ancestral", 1},                   {"Eta DDIM", "eta_ddim", 0},
      {"Schedule max sigma", "sigma_max", 0},        {"Schedule min sigma", "sigma_min", 0},
      {"Schedule rho", "rho", 0},                    {"Noise multiplier", "initial_noise_multiplier", 1},
      {"Sigma churn", "s_churn", 0},                 {"Sigma tmin", "s_tmin", 0},
      {"Sigma tmax", "s_tmax", 0},                   {"Sigma noise", "s_noise", 1},
  };
  for (const Setting& s : numbers) {
    const std::string* text = f.Text(s.key);
    double value = 0;
    if (text == nullptr || overrides.count(s.option) > 0) continue;
    if (!absl::SimpleAtod(*text, &value) || !std::isfinite(value)) {
      return absl::InvalidArgumentError(absl::StrCat("infotext: \"", s.key, ": ", *text, "\" is not a number"));
    }
    if (value != s.default_value) overrides[s.option].set_number_value(value);
  }
  const std::pair<const char*, const char*> texts[][2] = {
      {{"RNG", "randn_source"}, {"GPU", ""}},
      {{"Emphasis", "emphasis"}, {"Original", ""}},
  };
  for (const auto& entry : texts) {
    const auto [key, option] = entry[0];
    const std::string* text = f.Text(key);
    if (text != nullptr && overrides.count(option) == 0 && *text != entry[1].first) {
      overrides[option].set_string_value(*text);
    }
  }
  if (const std::string* discard = f.Text("Discard penultimate sigma");
      discard != nullptr && *discard == "True" && overrides.count("always_discard_next_to_last_sigma") == 0) {
    overrides["always_discard_next_to_last_sigma"].set_bool_value(true);
  }
  return absl::OkStatus();
}

}  // namespace atelier::server
