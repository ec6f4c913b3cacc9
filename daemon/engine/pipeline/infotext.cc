#include "engine/pipeline/infotext.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace atelier::engine {

std::string PythonFloat(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  if (value == std::trunc(value) && std::fabs(value) < 1e16) {  // Python keeps whole numbers positional to 1e16
    std::snprintf(buffer, sizeof(buffer), "%.0f.0", value);
    return buffer;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  std::string text = buffer;
  // Shortest %g text: exponent below 1e-4 ("1e-05") and from 1e16, as Python's repr.
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

std::string QuoteInfotextValue(const std::string& value) {
  // WebUI quotes only values with ',', ':' or a newline; a value that itself looks quoted ("x") would then read
  // back without its quotes, so it is quoted too (the one place this writer differs, for a lossless round trip).
  const bool looks_quoted = value.size() >= 2 && value.front() == '"' && value.back() == '"';
  if (!looks_quoted && value.find_first_of(",:\n") == std::string::npos) return value;
  return nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string CreateInfotext(const InfotextFields& f) {
  std::vector<InfotextEntry> entries;
  auto add = [&](const std::string& key, const std::string& value) {
    // A key an extension set again keeps its first position but takes the later value (dict semantics).
    for (auto& e : entries) {
      if (e.first == key) {
        e.second = value;
        return;
      }
    }
    entries.emplace_back(key, value);
  };
  add("Steps", std::to_string(f.steps));
  add("Sampler", f.sampler);
  add("Schedule type", f.schedule_type);
  add("CFG scale", PythonFloat(f.cfg_scale));
  add("Seed", std::to_string(f.seed));
  add("Size", absl::StrCat(f.width, "x", f.height));
  if (!f.model_hash.empty()) add("Model hash", f.model_hash);
  if (!f.model.empty()) add("Model", f.model);
  if (!f.vae_hash.empty()) add("VAE hash", f.vae_hash);
  if (!f.vae.empty()) add("VAE", f.vae);
  if (f.subseed_strength > 0) {
    add("Variation seed", std::to_string(f.subseed));
    add("Variation seed strength", PythonFloat(f.subseed_strength));
  }
  if (f.seed_resize_from_w > 0 && f.seed_resize_from_h > 0) {
    add("Seed resize from", absl::StrCat(f.seed_resize_from_w, "x", f.seed_resize_from_h));
  }
  if (f.img2img) add("Denoising strength", PythonFloat(f.denoising_strength));
  if (f.conditional_mask_weight >= 0) add("Conditional mask weight", PythonFloat(f.conditional_mask_weight));
  if (f.clip_skip > 1) add("Clip skip", std::to_string(f.clip_skip));
  if (f.eta_noise_seed_delta != 0 && f.sampler_uses_ensd && f.eta != 0) {
    add("ENSD", std::to_string(f.eta_noise_seed_delta));
  }
  if (f.rng != "GPU") add("RNG", f.rng);
  for (const auto& [key, value] : f.extra) add(key, value);
  if (!f.version.empty()) add("Version", f.version);

  std::vector<std::string> parts;
  for (const auto& [key, value] : entries) {
    parts.push_back(key == value ? key : absl::StrCat(key, ": ", QuoteInfotextValue(value)));
  }
  const std::string negative = f.negative_prompt.empty() ? "" : absl::StrCat("\nNegative prompt: ", f.negative_prompt);
  const std::string text = absl::StrCat(f.prompt, negative, "\n", absl::StrJoin(parts, ", "));
  return std::string(absl::StripAsciiWhitespace(text));
}

}  // namespace atelier::engine
