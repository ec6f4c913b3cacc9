#include "engine/pipeline/infotext_parse.h"

#include "engine/sampling/sampler_table.h"
#include "engine/sampling/schedulers.h"

namespace atelier::engine {

ParsedInfotext ParseInfotext(absl::string_view text) {
  ParsedInfotext out;
  InfotextText split = SplitInfotextText(text);
  out.prompt = std::move(split.prompt);
  out.negative_prompt = std::move(split.negative_prompt);
  for (auto& [key, value] : split.params) {
    out.written.insert(key);
    out.params[key] = std::move(value);
  }
  // WebUI's defaults for keys an infotext leaves out.
  const std::pair<const char*, const char*> defaults[] = {
      {"Clip skip", "1"},
      {"Hires resize-1", "0"},
      {"Hires resize-2", "0"},
      {"Hires sampler", "Use same sampler"},
      {"Hires schedule type", "Use same scheduler"},
      {"Hires checkpoint", "Use same checkpoint"},
      {"Hires prompt", ""},
      {"Hires negative prompt", ""},
      {"Mask mode", "Inpaint masked"},
      {"Masked content", "original"},
      {"Inpaint area", "Whole picture"},
      {"Masked area padding", "32"},
      {"RNG", "GPU"},
      {"Schedule type", "Automatic"},
      {"Schedule max sigma", "0"},
      {"Schedule min sigma", "0"},
      {"Schedule rho", "0"},
      {"VAE Encoder", "Full"},
      {"VAE Decoder", "Full"},
      {"FP8 weight", "Disable"},
      {"Refiner switch by sampling steps", "False"},
  };
  for (const auto& [key, value] : defaults) out.params.emplace(key, value);
  // Legacy combined sampler names ("DPM++ 2M Karras") are split the way WebUI splits them.
  if (const std::string* sampler = out.Find("Sampler")) {
    auto choice = ResolveSampler(*sampler, out.params["Schedule type"]);
    if (choice.ok() && *sampler != choice->sampler->name) {  // a legacy name or an alias: take WebUI's split
      out.params["Sampler"] = choice->sampler->name;
      out.params["Schedule type"] = SchedulerLabel(choice->scheduler);
    }
  }
  return out;
}

}  // namespace atelier::engine
