#include "jobs/job_loras.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/io/tensor_file.h"
#include "engine/text/prompt_parser.h"
#include "util/log.h"

namespace atelier::jobs {
namespace {

absl::StatusOr<double> Multiplier(const std::string& text, const std::string& name) {
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || !std::isfinite(v) || std::fabs(v) > 100) {
    return absl::InvalidArgumentError(absl::StrCat("<lora:", name.substr(0, 64), ":", text.substr(0, 32),
                                                   ">: the multiplier must be a number within +-100"));
  }
  return v;
}

// The file's identity for the patch cache: a changed file patches again.
std::string FileKey(const engine::LoraFile& f) {
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(f.path, ec).time_since_epoch().count();
  return absl::StrCat(f.path.string(), "|", f.file.size_bytes, "|", mtime);
}

}  // namespace

absl::StatusOr<std::vector<LoraRequest>> LorasInPrompts(const std::vector<std::string>& prompts) {
  std::vector<LoraRequest> wanted;
  for (const auto& prompt : prompts) {
    std::vector<engine::ExtraNetworkTag> tags;
    engine::StripExtraNetworkTags(prompt, &tags);
    for (const auto& tag : tags) {
      if (tag.name != "lora" && tag.name != "lyco") continue;  // other networks are not LoRAs (WebUI ignores them)
      // extra_networks.ExtraNetworkParams: "key=value" items are named, the rest positional.
      std::vector<std::string> positional;
      std::map<std::string, std::string> named;
      for (const auto& item : tag.args) {
        const size_t eq = item.find('=');
        if (eq == std::string::npos) {
          positional.push_back(item);
        } else {
          named[std::string(absl::StripAsciiWhitespace(item.substr(0, eq)))] = item.substr(eq + 1);
        }
      }
      if (positional.empty() || positional[0].empty()) return absl::InvalidArgumentError("<lora:...> without a name");
      LoraRequest r;
      r.name = positional[0];
      // extra_networks_lora.activate: te from the 2nd item or te=, unet from the 3rd or unet= (else te's).
      if (positional.size() > 1) {
        auto te = Multiplier(positional[1], r.name);
        if (!te.ok()) return te.status();
        r.te = *te;
      }
      if (named.count("te")) {
        auto te = Multiplier(named["te"], r.name);
        if (!te.ok()) return te.status();
        r.te = *te;
      }
      r.unet = r.te;
      if (positional.size() > 2) {
        auto unet = Multiplier(positional[2], r.name);
        if (!unet.ok()) return unet.status();
        r.unet = *unet;
      }
      if (named.count("unet")) {
        auto unet = Multiplier(named["unet"], r.name);
        if (!unet.ok()) return unet.status();
        r.unet = *unet;
      }
      std::string dyn_text = positional.size() > 3 ? positional[3] : "";
      if (named.count("dyn")) dyn_text = named["dyn"];
      if (!dyn_text.empty() && (!absl::SimpleAtoi(dyn_text, &r.dyn) || r.dyn < 0)) {
        return absl::InvalidArgumentError(absl::StrCat("<lora:", r.name.substr(0, 64), ">: dyn ", dyn_text.substr(0, 32),
                                                       " must be a whole number >= 0"));
      }
      bool seen = false;  // the same network in several prompts of the batch counts once
      for (const auto& other : wanted) seen |= other.name == r.name;
      if (!seen) wanted.push_back(r);
    }
  }
  return wanted;
}

absl::Status CheckLoras(engine::LoraCatalog& catalog, const std::vector<std::string>& prompts, bool lenient) {
  auto wanted = LorasInPrompts(prompts);
  if (!wanted.ok()) return wanted.status();
  if (lenient) return absl::OkStatus();
  for (const auto& w : *wanted) {
    if (auto found = catalog.Find(w.name); !found.ok()) return found.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<JobLoras>> JobLoras::Apply(engine::Sd1Pipeline& pipeline, engine::LoraCatalog& catalog,
                                                          LoraPatchCache& cache,
                                                          const std::vector<std::string>& prompts, bool lenient,
                                                          std::vector<std::string>* warnings) {
  auto wanted = LorasInPrompts(prompts);
  if (!wanted.ok()) return wanted.status();
  if (wanted->empty()) return std::unique_ptr<JobLoras>();
  struct Found {
    LoraRequest request;
    engine::LoraFile file;
  };
  std::vector<Found> found;
  std::vector<std::string> missing;
  for (const auto& w : *wanted) {
    auto file = catalog.Find(w.name);
    if (file.ok()) {
      found.push_back({w, *std::move(file)});
    } else if (lenient && absl::IsNotFound(file.status())) {
      missing.push_back(w.name);
    } else {
      return file.status();
    }
  }
  if (!missing.empty() && warnings != nullptr) {
    warnings->push_back(absl::StrCat("Lora not found: ", absl::StrJoin(missing, ", ")));
  }
  if (found.empty()) return std::unique_ptr<JobLoras>();
  // One canonical order (by file), so that the same networks named in any order make the same sums: LoRAs commute
  // bit for bit, and the cache recognises the set.
  std::stable_sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.file.path < b.file.path; });

  std::unique_ptr<JobLoras> job(new JobLoras());
  job->pipeline_ = &pipeline;
  std::string key;
  for (const auto& f : found) {
    key += absl::StrCat(FileKey(f.file), "|", f.request.te, "|", f.request.unet, "|", f.request.dyn, "\n");
  }
  // "Lora hashes": the name as the prompt wrote it, without ':' and ',', and the AutoV3 short hash.
  std::vector<std::string> hashes;
  for (const auto& f : found) {
    auto hash = catalog.Hash(f.file);
    if (!hash.ok()) return hash.status();
    if (hash->empty()) continue;
    std::string name = f.request.name;
    name.erase(std::remove_if(name.begin(), name.end(), [](char c) { return c == ':' || c == ','; }), name.end());
    hashes.push_back(absl::StrCat(name, ": ", hash->substr(0, 12)));
  }
  job->hashes_ = absl::StrJoin(hashes, ", ");
  nlohmann::json listed = nlohmann::json::array();
  for (const auto& f : found) {
    listed.push_back({{"name", f.request.name}, {"filename", f.file.file.filename}, {"te", f.request.te},
                        {"unet", f.request.unet}, {"dyn", f.request.dyn}});
  }
  job->networks_json_ = listed.dump();

  if (cache.pipeline == &pipeline && cache.key == key) {
    // The same networks as the last LoRA job: swap the patched tensors in.
    for (const auto& [te, name, patched] : cache.patched) {
      auto original = te ? pipeline.mutable_clip().Parameter(name) : pipeline.mutable_unet().Parameter(name);
      if (!original.ok()) return original.status();
      absl::Status s = te ? pipeline.mutable_clip().ReplaceParameter(name, patched)
                          : pipeline.mutable_unet().ReplaceParameter(name, patched);
      if (!s.ok()) {
        (void)engine::RestoreLoras(&pipeline.mutable_unet(), &pipeline.mutable_clip(), job->patch_);
        job->pipeline_ = nullptr;
        return s;
      }
      job->patch_.originals.push_back({te, name, *original});
    }
    job->reused_ = true;
    return job;
  }

  std::vector<std::pair<std::string, size_t>> unet_names, text_names;
  for (const auto& [name, t] : pipeline.weights().unet) unet_names.emplace_back(name, static_cast<size_t>(t.dim()));
  for (const auto& [name, t] : pipeline.weights().text_encoder) text_names.emplace_back(name, static_cast<size_t>(t.dim()));
  const auto names = engine::LoraNameMap::Build(unet_names, text_names);
  std::vector<std::unique_ptr<engine::LoraNetwork>> networks;
  std::vector<engine::LoraUse> uses;
  for (const auto& f : found) {
    if (f.file.sd_version == "SDXL" || f.file.sd_version == "SD2") {
      return absl::InvalidArgumentError(absl::StrCat("LoRA '", f.file.file.filename, "' was trained for ",
                                                     f.file.sd_version, " (its metadata says so); the loaded model is SD1.x"));
    }
    auto set = engine::ReadTensorSet(f.file.path);
    if (!set.ok()) return set.status();
    std::map<std::string, at::Tensor> tensors(set->tensors.begin(), set->tensors.end());
    auto network = engine::LoraNetwork::FromTensors(tensors, names, f.file.file.filename);
    if (!network.ok()) return network.status();
    uses.push_back({network->get(), f.request.te, f.request.unet, f.request.dyn});
    networks.push_back(*std::move(network));
  }
  cache.Clear();  // the old patch's tensors go before the new ones are made
  auto patch = engine::ApplyLoras(&pipeline.mutable_unet(), &pipeline.mutable_clip(), uses);
  if (!patch.ok()) {
    job->pipeline_ = nullptr;
    return patch.status();
  }
  job->patch_ = *std::move(patch);
  cache.pipeline = &pipeline;
  cache.key = key;
  for (const auto& [te, name, original] : job->patch_.originals) {
    auto patched = te ? pipeline.mutable_clip().Parameter(name) : pipeline.mutable_unet().Parameter(name);
    if (!patched.ok()) {
      cache.Clear();
      break;
    }
    cache.patched.push_back({te, name, *patched});
  }
  return job;
}

JobLoras::~JobLoras() {
  if (pipeline_ == nullptr) return;
  if (auto s = engine::RestoreLoras(&pipeline_->mutable_unet(), &pipeline_->mutable_clip(), patch_); !s.ok()) {
    LogError(absl::StrCat("restoring the weights after a LoRA job failed: ", s.message()));
  }
}

std::string RenameLorasByHash(const std::string& prompt, const std::string& lora_hashes,
                              engine::LoraCatalog& catalog) {
  if (lora_hashes.empty() || prompt.find("<lora:") == std::string::npos) return prompt;
  std::map<std::string, std::string> by_name;  // name in the infotext -> short hash
  for (absl::string_view item : absl::StrSplit(lora_hashes, ',')) {
    const size_t colon = item.find(':');
    if (colon == absl::string_view::npos) continue;
    by_name[std::string(absl::StripAsciiWhitespace(item.substr(0, colon)))] =
        std::string(absl::StripAsciiWhitespace(item.substr(colon + 1)));
  }
  // Local networks by short hash (hashing what is not hashed yet: a paste is worth it).
  std::map<std::string, std::string> by_hash;
  for (const auto& f : catalog.List()) {
    auto hash = catalog.Hash(f);
    if (hash.ok() && !hash->empty()) by_hash.emplace(hash->substr(0, 12), f.alias);
  }
  static const std::regex kLora("<lora:([^:]+):");
  std::string out;
  auto begin = std::sregex_iterator(prompt.begin(), prompt.end(), kLora);
  size_t last = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    out += prompt.substr(last, static_cast<size_t>(m.position(0)) - last);
    last = static_cast<size_t>(m.position(0) + m.length(0));
    const auto hash = by_name.find(m[1].str());
    const auto local = hash == by_name.end() ? by_hash.end() : by_hash.find(hash->second);
    out += local == by_hash.end() ? m[0].str() : absl::StrCat("<lora:", local->second, ":");
  }
  out += prompt.substr(last);
  return out;
}

}  // namespace atelier::jobs
