#include "engine/upscale/upscaler_catalog.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atelier::engine {
namespace {

struct RealEsrgan {
  const char* name;
  const char* stem;
  const char* url;
};
// realesrgan_model.py get_realesrgan_models.
constexpr RealEsrgan kRealEsrgan[] = {
    {"R-ESRGAN General 4xV3", "realesr-general-x4v3",
     "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-x4v3.pth"},
    {"R-ESRGAN General WDN 4xV3", "realesr-general-wdn-x4v3",
     "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-wdn-x4v3.pth"},
    {"R-ESRGAN AnimeVideo", "realesr-animevideov3",
     "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-animevideov3.pth"},
    {"R-ESRGAN 4x+", "RealESRGAN_x4plus",
     "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"},
    {"R-ESRGAN 4x+ Anime6B", "RealESRGAN_x4plus_anime_6B",
     "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth"},
    {"R-ESRGAN 2x+", "RealESRGAN_x2plus",
     "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth"},
};

}  // namespace

std::vector<UpscalerEntry> UpscalerCatalog::List() const {
  std::vector<UpscalerEntry> out;
  for (const char* b : {"None", "Lanczos", "Nearest"}) {
    UpscalerEntry e;
    e.name = b;
    e.builtin = true;
    out.push_back(e);
  }
  std::vector<UpscalerEntry> models;
  const std::vector<ModelFileEntry> files =
      folders_ != nullptr ? folders_->List(ModelFolder::kEsrgan) : std::vector<ModelFileEntry>{};
  for (const ModelFileEntry& f : files) {
    auto path = folders_->Resolve(ModelFolder::kEsrgan, f.filename);
    if (!path.ok()) continue;
    UpscalerEntry e;
    e.name = f.stem();
    e.filename = f.filename;
    e.path = *path;
    models.push_back(e);
  }
  for (const RealEsrgan& r : kRealEsrgan) {
    UpscalerEntry e;
    e.name = r.name;
    for (const ModelFileEntry& f : files) {
      if (f.stem() == r.stem || absl::EndsWith(f.stem(), std::string("/") + r.stem)) {
        e.filename = f.filename;
        auto path = folders_->Resolve(ModelFolder::kEsrgan, f.filename);
        if (path.ok()) e.path = *path;
      }
    }
    if (e.filename.empty()) {
      e.missing_file = absl::StrCat(r.stem, ".pth");
      e.url = r.url;
    }
    models.push_back(e);
  }
  std::stable_sort(models.begin(), models.end(), [](const UpscalerEntry& a, const UpscalerEntry& b) {
    return absl::AsciiStrToLower(a.name) < absl::AsciiStrToLower(b.name);
  });
  out.insert(out.end(), models.begin(), models.end());
  return out;
}

absl::StatusOr<UpscalerEntry> UpscalerCatalog::Find(const std::string& name, const std::string& field) const {
  std::vector<std::string> usable;
  for (const UpscalerEntry& e : List()) {
    if (e.name == name) {
      if (!e.missing_file.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(field, " '", name, "' needs ", e.missing_file,
                                                          " in models/RealESRGAN (", e.url,
                                                          "); this daemon does not download models"));
      }
      return e;
    }
    if (e.missing_file.empty()) usable.push_back(e.name);
  }
  return absl::InvalidArgumentError(absl::StrCat(field, " '", name.substr(0, 64), "' not found; available: ",
                                                 absl::StrJoin(usable, ", ")));
}

}  // namespace atelier::engine
