#include "jobs/upscaler_models.h"

#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/io/tensor_file.h"

namespace atelier::jobs {

absl::StatusOr<std::shared_ptr<const engine::ImageUpscaler>> UpscalerModels::Get(const engine::UpscalerEntry& entry,
                                                                                 const engine::TileOptions& tiles,
                                                                                 const at::Device& device) {
  if (entry.builtin) {
    auto builtin = engine::BuiltinUpscaler(entry.name);
    if (!builtin.ok()) return builtin.status();
    return std::shared_ptr<const engine::ImageUpscaler>(*std::move(builtin));
  }
  std::error_code ec;
  const auto size = std::filesystem::file_size(entry.path, ec);
  const auto mtime = std::filesystem::last_write_time(entry.path, ec).time_since_epoch().count();
  const std::string key = absl::StrCat(entry.path.string(), "|", size, "|", mtime, "|", device.str());
  std::shared_ptr<const engine::EsrganNet> net;
  for (auto it = loaded_.begin(); it != loaded_.end(); ++it) {
    if (it->key != key) continue;
    Loaded hit = *it;
    loaded_.erase(it);
    loaded_.push_back(hit);
    net = hit.net;
    break;
  }
  if (net == nullptr) {
    auto set = engine::ReadTensorSet(entry.path);
    if (!set.ok()) return set.status();
    std::map<std::string, at::Tensor> tensors(set->tensors.begin(), set->tensors.end());
    auto loaded = engine::EsrganNet::FromTensors(std::move(tensors), entry.filename);
    if (!loaded.ok()) return loaded.status();
    try {
      (*loaded)->To(device);
    } catch (const std::exception& e) {
      return absl::ResourceExhaustedError(absl::StrCat("moving '", entry.filename, "' to ", device.str(), ": ", e.what()));
    }
    net = *std::move(loaded);
    loaded_.push_back({key, net});
    if (loaded_.size() > 2) loaded_.erase(loaded_.begin());
  }
  return std::shared_ptr<const engine::ImageUpscaler>(
      std::make_shared<engine::ModelUpscaler>(entry.name, net, device, tiles));
}

}  // namespace atelier::jobs
