#include "infotext_fields.h"

#include <set>

#include "util/infotext_text.h"

namespace atelier::web {

InfotextFields ParseInfotextFields(const std::string& infotext) {
  // The keys create_infotext writes from the job's own fields; the rest are extra_generation_params.
  static const std::set<std::string> kOwn = {
      "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration", "Size-1",
      "Size-2", "Model hash", "Model", "FP8 weight", "Cache FP16 weight for LoRA", "VAE hash", "VAE",
      "Variation seed", "Variation seed strength", "Seed resize from-1", "Seed resize from-2", "Denoising strength",
      "Conditional mask weight", "Clip skip", "ENSD", "Tiling", "Init image hash", "RNG", "Version",
      "User", "Token merging ratio", "Token merging ratio hr", "NGMS"};
  InfotextText text = SplitInfotextText(infotext);
  InfotextFields out;
  out.found = !text.params.empty();
  out.prompt = std::move(text.prompt);
  out.negative_prompt = std::move(text.negative_prompt);
  for (auto& [key, value] : text.params) {
    if (kOwn.count(key) == 0) out.extra.emplace_back(key, value);
    out.params[key] = std::move(value);
  }
  return out;
}

}  // namespace atelier::web
