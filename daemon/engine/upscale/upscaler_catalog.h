// WebUI's upscaler names (shared.sd_upscalers) over the files this daemon has: the built-ins "None", "Lanczos",
// "Nearest"; every model file in models/ESRGAN and models/RealESRGAN under its file name without extension (WebUI's
// ESRGAN folder rule, applied to both); and Real-ESRGAN's fixed names ("R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B",
// "R-ESRGAN AnimeVideo", "R-ESRGAN General 4xV3", "R-ESRGAN General WDN 4xV3", "R-ESRGAN 2x+") for the released
// files WebUI downloads under those names (RealESRGAN_x4plus_anime_6B.pth, ...), found when they are present —
// this daemon downloads nothing, so a missing one is named with its file and URL. Sorted as WebUI sorts them: the
// built-ins first, then by lower-case name.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/io/model_folders.h"

namespace atelier::engine {

struct UpscalerEntry {
  std::string name;
  bool builtin = false;          // None / Lanczos / Nearest
  std::string filename;          // below the folder; empty for built-ins and missing Real-ESRGAN files
  std::filesystem::path path;    // resolved file
  std::string missing_file;      // a Real-ESRGAN name without its file: the file name
  std::string url;               // ... and where Real-ESRGAN publishes it
};

class UpscalerCatalog {
 public:
  explicit UpscalerCatalog(const ModelFolders* folders) : folders_(folders) {}

  // Every name, the Real-ESRGAN names whose file is missing included (with missing_file set).
  std::vector<UpscalerEntry> List() const;
  // The usable upscaler of that name. INVALID_ARGUMENT listing the usable names; FAILED_PRECONDITION naming the file
  // (and URL) for a Real-ESRGAN name whose file is not in models/RealESRGAN.
  absl::StatusOr<UpscalerEntry> Find(const std::string& name, const std::string& field = "upscaler") const;

 private:
  const ModelFolders* folders_;
};

}  // namespace atelier::engine
