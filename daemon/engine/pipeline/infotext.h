// WebUI's infotext ("parameters"): the text create_infotext writes into images, with its line structure, key
// order, value formatting (Python str() of the API's values: floats keep ".0") and quoting (JSON only when a value
// contains ',', ':' or a newline).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace atelier::engine {

// One "Key: value" entry; values are already formatted text.
using InfotextEntry = std::pair<std::string, std::string>;

struct InfotextFields {
  std::string prompt, negative_prompt;
  int steps = 0;
  std::string sampler;        // "DPM++ 2M"
  std::string schedule_type;  // the effective label: "Karras" for DPM++ 2M on Automatic, "Automatic" for Euler
  double cfg_scale = 7.0;
  int64_t seed = 0;
  int width = 0, height = 0;
  std::string model_hash, model;  // SHA-256[:10], checkpoint file stem
  std::string vae_hash, vae;      // empty: omitted
  int64_t subseed = 0;
  double subseed_strength = 0;     // > 0: "Variation seed" and its strength
  int seed_resize_from_w = 0, seed_resize_from_h = 0;  // > 0: "Seed resize from"
  bool img2img = false;            // "Denoising strength" (txt2img prints it only with hires fix)
  double denoising_strength = 0;
  double conditional_mask_weight = -1;  // >= 0: "Conditional mask weight" (9-channel inpainting models)
  int clip_skip = 1;               // printed when > 1
  int64_t eta_noise_seed_delta = 0;
  bool sampler_uses_ensd = false;  // ENSD is printed only for samplers that draw step noise, with eta != 0
  double eta = 0;
  std::string rng = "GPU";         // printed when not GPU
  std::vector<InfotextEntry> extra;  // extra_generation_params in insertion order (Eta, Emphasis, extensions)
  std::string version;             // "Version"; empty: omitted
};

// The infotext text exactly as WebUI writes it.
std::string CreateInfotext(const InfotextFields& fields);

// Python's str() of a float: the shortest text that reads back to the same double, with ".0" for whole numbers.
std::string PythonFloat(double value);

// WebUI's quote(): JSON string (non-ASCII kept) when the value contains ',', ':' or '\n', else unchanged; also
// when the value starts and ends with '"' (WebUI leaves those bare and loses the quotes when reading them back).
std::string QuoteInfotextValue(const std::string& value);

}  // namespace atelier::engine
