#include "jobs/job_loras.h"

#include <cmath>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/io/tensor_file.h"
#include "engine/text/prompt_parser.h"
#include "util/log.h"

namespace atelier::jobs {
namespace {

absl::StatusOr<double> Multiplier(const std::string& text, const std::string& name) {
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || !std::isfinite(v) || std::fabs(v) > 100) {
    return absl::InvalidArgumentError(absl::StrCat("<lora:", name, ":", text.substr(0, 32),
                                                   ">: the multiplier must be a number within +-100"));
  }
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobLoras>> JobLoras::Apply(engine::Sd1Pipeline& pipeline,
                                                          const engine::ModelFolders* folders,
                                                          const std::vector<std::string>& prompts) {
  struct Wanted {
    std::string name;
    double te = 1, unet = 1;
  };
  std::vector<Wanted> wanted;
  for (const auto& prompt : prompts) {
    std::vector<engine::ExtraNetworkTag> tags;
    engine::StripExtraNetworkTags(prompt, &tags);
    for (const auto& tag : tags) {
      if (tag.name != "lora" && tag.name != "lyco") continue;  // other networks: not here (WebUI warns too)
      if (tag.args.empty() || tag.args[0].empty()) return absl::InvalidArgumentError("<lora:...> without a name");
      Wanted w;
      w.name = tag.args[0];
      if (tag.args.size() > 1) {
        auto te = Multiplier(tag.args[1], w.name);
        if (!te.ok()) return te.status();
        w.te = w.unet = *te;
      }
      if (tag.args.size() > 2) {
        auto unet = Multiplier(tag.args[2], w.name);
        if (!unet.ok()) return unet.status();
        w.unet = *unet;
      }
      bool seen = false;  // the same network in several prompts of the batch counts once
      for (const auto& other : wanted) seen |= other.name == w.name;
      if (!seen) wanted.push_back(w);
    }
  }
  if (wanted.empty()) return std::unique_ptr<JobLoras>();
  const auto files = folders != nullptr ? folders->List(engine::ModelFolder::kLora) : std::vector<engine::ModelFileEntry>{};
  std::vector<std::pair<std::string, size_t>> unet_names, text_names;
  for (const auto& [name, t] : pipeline.weights().unet) unet_names.emplace_back(name, static_cast<size_t>(t.dim()));
  for (const auto& [name, t] : pipeline.weights().text_encoder) text_names.emplace_back(name, static_cast<size_t>(t.dim()));
  const auto names = engine::LoraNameMap::Build(unet_names, text_names);
  std::unique_ptr<JobLoras> job(new JobLoras());
  job->pipeline_ = &pipeline;
  std::vector<engine::LoraUse> uses;
  for (const auto& w : wanted) {
    const engine::ModelFileEntry* file = nullptr;
    for (const auto& f : files) {
      const size_t slash = f.name.rfind('/');
      const std::string stem = slash == std::string::npos ? f.name : f.name.substr(slash + 1);
      if (stem == w.name || f.name == w.name) file = &f;
    }
    for (const auto& f : files) {
      if (file == nullptr && absl::AsciiStrToLower(f.name) == absl::AsciiStrToLower(w.name)) file = &f;
    }
    if (file == nullptr) {
      std::vector<std::string> known;
      for (const auto& f : files) known.push_back(f.name);
      return absl::NotFoundError(absl::StrCat("LoRA '", w.name.substr(0, 64), "' not found in models/Lora; LoRAs: ",
                                              known.empty() ? "none" : absl::StrJoin(known, ", ")));
    }
    auto path = folders->Resolve(engine::ModelFolder::kLora, file->filename);
    if (!path.ok()) return path.status();
    auto set = engine::ReadTensorSet(*path);
    if (!set.ok()) return set.status();
    std::map<std::string, at::Tensor> tensors(set->tensors.begin(), set->tensors.end());
    auto network = engine::LoraNetwork::FromTensors(tensors, names, file->filename);
    if (!network.ok()) return network.status();
    uses.push_back({network->get(), w.te, w.unet});
    job->networks_.push_back(*std::move(network));
  }
  auto patch = engine::ApplyLoras(&pipeline.mutable_unet(), &pipeline.mutable_clip(), uses);
  if (!patch.ok()) return patch.status();
  job->patch_ = *std::move(patch);
  return job;
}

JobLoras::~JobLoras() {
  if (pipeline_ == nullptr) return;
  if (auto s = engine::RestoreLoras(&pipeline_->mutable_unet(), &pipeline_->mutable_clip(), patch_); !s.ok()) {
    LogError(absl::StrCat("restoring the weights after a LoRA job failed: ", s.message()));
  }
}

}  // namespace atelier::jobs
