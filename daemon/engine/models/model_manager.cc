#include "engine/models/model_manager.h"

#include <sys/stat.h>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/models/checkpoint_layout.h"
#include "engine/io/mapped_file_guard.h"
#include "engine/io/tensor_file.h"
#include "util/log.h"
#include "util/user_text.h"

namespace atelier::engine {
namespace fs = std::filesystem;
namespace {

constexpr ModelFolder kAllFolders[] = {ModelFolder::kCheckpoint, ModelFolder::kVae,         ModelFolder::kEmbedding,
                                       ModelFolder::kControlNet, ModelFolder::kMotionModule, ModelFolder::kVaeApprox,
                                       ModelFolder::kRife,       ModelFolder::kLora,         ModelFolder::kEsrgan};

std::string Title(const std::string& filename, const std::string& sha256) {
  return sha256.empty() ? filename : absl::StrCat(filename, " [", ModelHash(sha256), "]");
}

bool IsHexPrefix(const std::string& s) {
  if (s.size() < 8 || s.size() > 64) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

ModelManager::ModelManager(const ModelFolders* folders, fs::path hash_cache_file, LoadOptions options)
    : folders_(folders), hashes_(std::move(hash_cache_file)), options_(std::move(options)) {}

ModelManager::Identified ModelManager::Identify(const fs::path& path) {
  struct stat st {};
  Identified fresh;
  if (::stat(path.c_str(), &st) == 0) {
    fresh.size = static_cast<std::uint64_t>(st.st_size);
    fresh.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
  const std::string key = fs::absolute(path).lexically_normal().string();
  {
    std::lock_guard<std::mutex> lock(identify_mu_);
    const auto it = identified_.find(key);
    if (it != identified_.end() && it->second.size == fresh.size && it->second.mtime_ns == fresh.mtime_ns) {
      return it->second;
    }
  }
  auto index = ReadTensorIndex(path);
  if (!index.ok()) {
    fresh.error = std::string(index.status().message());
  } else if (auto layout = DetectLayout(*index, path.filename().string()); !layout.ok()) {
    fresh.error = std::string(layout.status().message());
  } else {
    fresh.architecture = layout->architecture;
  }
  if (auto shorthash = ShortHash(path); shorthash.ok()) fresh.short_hash = *shorthash;
  std::lock_guard<std::mutex> lock(identify_mu_);
  identified_[key] = fresh;
  return fresh;
}

std::vector<ModelListing> ModelManager::List(std::optional<ModelFolder> only, bool compute_hashes) {
  std::vector<ModelListing> out;
  if (folders_ == nullptr) return out;
  for (ModelFolder folder : kAllFolders) {
    if (only && *only != folder) continue;
    if (folder == ModelFolder::kLora) {
      for (LoraFile& lora : loras_.List()) {
        ModelListing listing;
        listing.architecture = lora.error.empty() ? (lora.sd_version == "Unknown" ? "LoRA" : absl::StrCat("LoRA (", lora.sd_version, ")")) : "";
        listing.error = lora.error;
        listing.alias = lora.alias;
        listing.metadata = lora.metadata;
        if (compute_hashes) {
          auto hash = loras_.Hash(lora);
          if (hash.ok()) listing.network_hash = *hash;
        } else {
          listing.network_hash = loras_.CachedHash(lora);
        }
        listing.sha256 = hashes_.Cached(lora.path);
        listing.title = Title(lora.file.filename, listing.sha256);
        listing.file = std::move(lora.file);
        out.push_back(std::move(listing));
      }
      continue;
    }
    for (ModelFileEntry& file : folders_->List(folder)) {
      auto resolved = folders_->Resolve(folder, file.filename);
      const fs::path path = resolved.ok() ? *resolved : folders_->FolderPath(folder) / file.filename;
      ModelListing listing;
      if (folder != ModelFolder::kEsrgan) {  // upscalers are identified by the upscale layer (DescribeUpscaler)
        const Identified id = Identify(path);
        listing.architecture = id.architecture;
        listing.error = id.error;
        listing.short_hash = id.short_hash;
      }
      if (compute_hashes) {
        auto hash = hashes_.Sha256(path);
        if (hash.ok()) listing.sha256 = *hash;
      } else {
        listing.sha256 = hashes_.Cached(path);
      }
      listing.title = Title(file.filename, listing.sha256);
      listing.file = std::move(file);
      out.push_back(std::move(listing));
    }
  }
  return out;
}

absl::StatusOr<ModelFileEntry> ModelManager::FindCheckpoint(const std::string& query) {
  if (folders_ == nullptr) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", Quoted(query), " not found: the daemon has no models directory"));
  }
  const auto files = folders_->List(ModelFolder::kCheckpoint);
  const fs::path dir = folders_->FolderPath(ModelFolder::kCheckpoint);
  std::string wanted = query;
  // "name.safetensors [0123456789]": match the filename part and, when known, the hash.
  if (const auto bracket = query.rfind(" ["); bracket != std::string::npos && absl::EndsWith(query, "]")) {
    wanted = query.substr(0, bracket);
  }
  for (const auto& f : files) {
    if (f.filename == wanted || f.name == wanted) return f;
  }
  for (const auto& f : files) {  // bare file name or stem, in any sub-folder
    const fs::path p(f.filename);
    if (p.filename().string() == wanted || p.stem().string() == wanted) return f;
  }
  if (IsHexPrefix(query)) {
    const std::string lower = absl::AsciiStrToLower(query);
    for (const auto& f : files) {
      const std::string sha = hashes_.Cached(dir / f.filename);
      if (!sha.empty() && absl::StartsWith(sha, lower)) return f;
      if (query.size() == 8 && Identify(dir / f.filename).short_hash == lower) return f;
    }
  }
  std::vector<std::string> names;
  for (const auto& f : files) {
    if (names.size() == 20) {
      names.push_back("...");
      break;
    }
    names.push_back(f.filename);
  }
  return absl::NotFoundError(absl::StrCat("checkpoint ", Quoted(query), " not found in ", dir.string(), "; available: ",
                                          names.empty() ? "none" : absl::StrJoin(names, ", ")));
}

absl::StatusOr<fs::path> ModelManager::ResolveVae(const std::string& sd_vae, const ModelFileEntry& checkpoint) {
  if (sd_vae.empty() || sd_vae == "None") return fs::path();
  if (folders_ == nullptr) return absl::NotFoundError("no models directory for VAE files");
  const fs::path vae_dir = folders_->FolderPath(ModelFolder::kVae);
  const auto vaes = folders_->List(ModelFolder::kVae);
  if (sd_vae == "Automatic") {
    // WebUI's find_vae_near_checkpoint: a VAE whose file name starts with the checkpoint's stem, first beside the
    // checkpoint (name.vae.pt / .vae.safetensors), then in models/VAE.
    const fs::path ckpt = folders_->FolderPath(ModelFolder::kCheckpoint) / checkpoint.filename;
    const std::string stem = ckpt.stem().string();
    for (const char* ext : {".vae.safetensors", ".vae.pt", ".vae.ckpt"}) {
      const fs::path beside = ckpt.parent_path() / (stem + ext);
      if (fs::is_regular_file(beside)) return beside;
    }
    for (const auto& v : vaes) {
      if (absl::StartsWith(fs::path(v.filename).filename().string(), stem)) return vae_dir / v.filename;
    }
    return fs::path();
  }
  for (const auto& v : vaes) {
    if (v.filename == sd_vae || v.name == sd_vae || fs::path(v.filename).filename().string() == sd_vae) {
      return vae_dir / v.filename;
    }
  }
  std::vector<std::string> names = {"Automatic", "None"};
  for (const auto& v : vaes) names.push_back(v.filename);
  return absl::NotFoundError(absl::StrCat("VAE ", Quoted(sd_vae), " not found; valid: ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<std::shared_ptr<const Sd1Weights>> ModelManager::Load(const std::string& checkpoint,
                                                                     const std::string& sd_vae) {
  std::lock_guard<std::mutex> load_lock(load_mu_);
  auto entry = FindCheckpoint(checkpoint);
  if (!entry.ok()) return entry.status();
  const std::string vae_request = sd_vae.empty() ? "Automatic" : sd_vae;
  {
    std::lock_guard<std::mutex> lock(current_mu_);
    if (current_ != nullptr && current_->filename == entry->filename && current_vae_request_ == vae_request) {
      return current_;
    }
  }
  auto vae = ResolveVae(vae_request, *entry);
  if (!vae.ok()) return vae.status();
  const fs::path path = folders_->FolderPath(ModelFolder::kCheckpoint) / entry->filename;
  if (auto swapped = SwapVae(path, *entry, *vae, vae_request); swapped.ok() || !absl::IsUnavailable(swapped.status())) {
    return swapped;
  }
  auto sha256 = hashes_.Sha256(path);
  if (!sha256.ok()) return sha256.status();
  const std::uint64_t faults_before = MappedFileFaults();
  auto loaded = LoadSd1Checkpoint(path, entry->filename, *vae, options_);
  if (!loaded.ok()) return loaded.status();
  if (MappedFileFaults() != faults_before) {
    return absl::DataLossError(absl::StrCat("'", entry->filename, "' was cut short (truncated) while it was being "
                                            "read, e.g. copied over or re-downloaded: not loaded; the model loaded "
                                            "before keeps serving. Load it again once the file is complete"));
  }
  auto weights = std::make_shared<Sd1Weights>(**loaded);  // shares the tensors; adds the identity
  weights->sha256 = *sha256;
  weights->title = Title(entry->filename, *sha256);
  std::shared_ptr<const Sd1Weights> result = std::move(weights);
  MakeCurrent(result, vae_request);
  LogInfo(absl::StrCat("loaded ", result->title, " (", result->layout.architecture, ", config: ",
                       result->config.source, ", VAE: ", result->vae_source, ") in ", result->load_seconds, " s, ",
                       result->resident_bytes / (1 << 20), " MiB ", std::string(c10::toString(result->dtype)), " on ",
                       result->device));
  return result;
}

absl::StatusOr<std::shared_ptr<const Sd1Weights>> ModelManager::SwapVae(const fs::path& checkpoint_path,
                                                                        const ModelFileEntry& entry,
                                                                        const fs::path& vae_file,
                                                                        const std::string& vae_request) {
  std::shared_ptr<const Sd1Weights> base = current();
  if (base == nullptr || base->filename != entry.filename) return absl::UnavailableError("another checkpoint");
  const std::string source = vae_file.empty() ? "checkpoint" : vae_file.filename().string();
  if (base->vae_source == source) {  // e.g. "Automatic" resolving to what is loaded
    std::lock_guard<std::mutex> lock(current_mu_);
    current_vae_request_ = vae_request;
    return current_;
  }
  const absl::Time start = absl::Now();
  auto vae = vae_file.empty() ? LoadCheckpointVae(checkpoint_path, options_) : LoadVaeFile(vae_file, base->config.vae, options_);
  if (!vae.ok()) return vae.status();
  auto weights = std::make_shared<Sd1Weights>(*base);  // shares the UNet and text encoder
  weights->vae = *std::move(vae);
  weights->vae_source = source;
  weights->resident_bytes = ResidentBytes(*weights);
  weights->load_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::shared_ptr<const Sd1Weights> result = std::move(weights);
  MakeCurrent(result, vae_request);
  LogInfo(absl::StrCat("VAE of ", result->title, " switched to ", source, " in ", result->load_seconds, " s"));
  return result;
}

void ModelManager::Unload() {
  std::lock_guard<std::mutex> load_lock(load_mu_);
  MakeCurrent(nullptr, "");
}

void ModelManager::MakeCurrent(std::shared_ptr<const Sd1Weights> next, const std::string& vae_request) {
  const std::shared_ptr<const Sd1Weights> previous = current();
  if (previous != nullptr && previous != next && observer_ != nullptr) observer_->ModelUnloading(*previous);
  {
    std::lock_guard<std::mutex> lock(current_mu_);
    current_ = next;
    current_vae_request_ = vae_request;
  }
  if (next != nullptr && next != previous && observer_ != nullptr) observer_->ModelLoaded(*next);
}

std::string ModelManager::current_vae_request() const {
  std::lock_guard<std::mutex> lock(current_mu_);
  return current_vae_request_;
}

std::shared_ptr<const Sd1Weights> ModelManager::current() const {
  std::lock_guard<std::mutex> lock(current_mu_);
  return current_;
}

}  // namespace atelier::engine
