#include "engine/models/lora_catalog.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/io/safetensors.h"

namespace atelier::engine {
namespace fs = std::filesystem;
namespace {

// network.py NetworkOnDisk.detect_version.
std::string DetectVersion(const std::map<std::string, std::string>& metadata) {
  auto get = [&metadata](const char* key) {
    const auto it = metadata.find(key);
    return it == metadata.end() ? std::string() : it->second;
  };
  if (absl::StartsWith(get("ss_base_model_version"), "sdxl_")) return "SDXL";
  if (get("ss_v2") == "True") return "SD2";
  if (!metadata.empty()) return "SD1";
  return "Unknown";
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::vector<std::string> NearestNames(const std::string& name, const std::vector<std::string>& candidates,
                                      size_t limit) {
  const std::string lower = absl::AsciiStrToLower(name);
  std::vector<std::pair<size_t, std::string>> near;
  for (const auto& c : candidates) {
    const std::string other = absl::AsciiStrToLower(c);
    const size_t d = EditDistance(lower, other);
    const bool prefix = lower.size() >= 3 && (absl::StartsWith(other, lower) || absl::StartsWith(lower, other));
    if (prefix || d <= std::max<size_t>(2, lower.size() / 3)) near.emplace_back(prefix ? 0 : d, c);
  }
  std::vector<std::string> out;
  if (near.empty()) {
    out.assign(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(std::min(limit, candidates.size())));
    return out;
  }
  std::stable_sort(near.begin(), near.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  for (size_t i = 0; i < near.size() && i < limit; ++i) out.push_back(near[i].second);
  return out;
}

std::vector<LoraFile> LoraCatalog::List() {
  std::vector<LoraFile> out;
  if (folders_ == nullptr) return out;
  for (const ModelFileEntry& entry : folders_->List(ModelFolder::kLora)) {
    auto path = folders_->Resolve(ModelFolder::kLora, entry.filename);
    if (!path.ok()) continue;
    LoraFile lora;
    lora.file = entry;
    lora.path = *path;
    lora.name = entry.stem();
    struct stat st {};
    if (::stat(path->c_str(), &st) != 0) continue;
    const std::int64_t mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Header& h = headers_[path->string()];
      if (h.size != static_cast<std::uint64_t>(st.st_size) || h.mtime_ns != mtime) {
        h = Header{static_cast<std::uint64_t>(st.st_size), mtime, {}, ""};
        if (entry.format == "safetensors") {
          auto file = SafetensorsFile::Open(*path);
          if (file.ok()) {
            h.metadata = (*file)->metadata();
          } else {
            h.error = std::string(file.status().message());
          }
        }
      }
      lora.metadata = h.metadata;
      lora.error = h.error;
    }
    const auto alias = lora.metadata.find("ss_output_name");
    lora.alias = alias != lora.metadata.end() && !alias->second.empty() ? alias->second : lora.name;
    lora.sd_version = DetectVersion(lora.metadata);
    out.push_back(std::move(lora));
  }
  return out;
}

absl::StatusOr<LoraFile> LoraCatalog::Find(const std::string& name) {
  const std::vector<LoraFile> all = List();
  // WebUI's available_network_aliases: each file under its name and its alias, a later file overwriting; an alias
  // two files share (or "none") is forbidden and then only the name counts.
  std::map<std::string, int> alias_count;
  for (const auto& l : all) alias_count[absl::AsciiStrToLower(l.alias)] += l.alias != l.name ? 1 : 0;
  const LoraFile* found = nullptr;
  for (const auto& l : all) {
    const std::string alias = absl::AsciiStrToLower(l.alias);
    const bool alias_ok = alias != "none" && alias_count[alias] <= 1;
    if (l.name == name || (alias_ok && l.alias == name) || l.file.name == name) found = &l;
  }
  for (const auto& l : all) {  // a name typed in another case (WebUI would miss it; nothing is lost by finding it)
    if (found == nullptr && absl::AsciiStrToLower(l.name) == absl::AsciiStrToLower(name)) found = &l;
  }
  if (found != nullptr) return *found;
  std::vector<std::string> names;
  for (const auto& l : all) names.push_back(l.name);
  const std::vector<std::string> near = NearestNames(name, names);
  if (names.empty()) {
    return absl::NotFoundError(absl::StrCat("LoRA '", name.substr(0, 64), "' not found: models/Lora has no LoRAs"));
  }
  return absl::NotFoundError(absl::StrCat("LoRA '", name.substr(0, 64), "' not found in models/Lora; ",
                                          near.size() < names.size() ? "nearest: " : "LoRAs: ", absl::StrJoin(near, ", ")));
}

// kohya's own hash in the metadata wins (network.py NetworkOnDisk.__init__).
absl::StatusOr<std::string> LoraCatalog::Hash(const LoraFile& lora) {
  if (const auto it = lora.metadata.find("sshs_model_hash"); it != lora.metadata.end() && !it->second.empty()) {
    return it->second;
  }
  return hashes_->Sha256(lora.path, lora.file.format == "safetensors" ? HashCache::Kind::kAddnet : HashCache::Kind::kSha256);
}

std::string LoraCatalog::CachedHash(const LoraFile& lora) const {
  if (const auto it = lora.metadata.find("sshs_model_hash"); it != lora.metadata.end() && !it->second.empty()) {
    return it->second;
  }
  return hashes_->Cached(lora.path, lora.file.format == "safetensors" ? HashCache::Kind::kAddnet : HashCache::Kind::kSha256);
}

}  // namespace atelier::engine
