// The WebUI folder layout under --models-dir: where each kind of model file lives, listing, and safe lookup.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace atelier::engine {

// Kinds of model files, one per WebUI folder. Values match ATELIER_FOLDER_* in atelier/plugin.h.
enum class ModelFolder : int {
  kCheckpoint = 0,    // models/Stable-diffusion
  kVae = 1,           // models/VAE
  kEmbedding = 2,     // embeddings
  kControlNet = 3,    // models/ControlNet
  kMotionModule = 4,  // models/AnimateDiff
  kVaeApprox = 5,     // models/VAE-approx
  kRife = 6,          // models/RIFE
  kLora = 7,          // models/Lora (and models/LyCORIS)
  kEsrgan = 8,        // models/ESRGAN (and models/RealESRGAN)
};
inline constexpr int kModelFolderCount = 9;

// WebUI's folder name of a kind ("Stable-diffusion", "VAE", ...).
const char* ModelFolderName(ModelFolder folder);

struct ModelFileEntry {
  ModelFolder folder;
  std::string name;      // path below the folder without extension, "/"-separated
  std::string filename;  // path below the folder with extension
  std::string format;    // "safetensors", "ckpt", "pt", "pth", "bin"
  std::int64_t size_bytes = 0;
  // Shipped with the daemon (its assets' models folder, a fallback the user's folders extend), not the user's.
  bool shipped = false;
  // The file name without folders and extension (WebUI's network / upscaler name: "foo" for "anime/foo.pt").
  std::string stem() const {
    const size_t slash = name.rfind('/');
    return slash == std::string::npos ? name : name.substr(slash + 1);
  }
};

class ModelFolders {
 public:
  // `root` is either a WebUI install root (holding models/ and embeddings/) or a models folder itself (holding
  // Stable-diffusion/, VAE/, ... and optionally embeddings/). A root that does not exist is an error; missing
  // sub-folders are fine (they list nothing).
  static absl::StatusOr<ModelFolders> Open(const std::filesystem::path& root);

  const std::filesystem::path& root() const { return root_; }
  // The directory of a kind (it may not exist).
  std::filesystem::path FolderPath(ModelFolder folder) const;

  // Model files of one kind, sorted by filename; files with other extensions are skipped. ControlNets also come
  // from a WebUI install's extensions/sd-webui-controlnet/models (the models folder wins a name found in both).
  std::vector<ModelFileEntry> List(ModelFolder folder) const;
  // Checkpoints come from `dir` instead of <models>/Stable-diffusion (the daemon's embedded model while the user's
  // folder has none); every other kind stays the user's.
  void UseCheckpointFolder(std::filesystem::path dir) { checkpoints_ = std::move(dir); }

  // The daemon's own models (assets/models: trained tiny ControlNets, motion modules, RIFE, ...) as the last folder of
  // every kind but checkpoints and embeddings: listed (marked `shipped`) and resolved after the user's folders, so
  // a user's file of the same name wins. Ignored when `models_dir` is the user's models folder itself.
  void AddShippedFolders(std::filesystem::path models_dir);

  // Every directory a kind is read from, in priority order (FolderPath first, the shipped folder last).
  std::vector<std::filesystem::path> FolderPaths(ModelFolder folder) const;

  // Resolves `relative` (e.g. "anime/foo.safetensors") inside a kind's folder. Refuses absolute paths, "..",
  // and anything whose real path leaves the folder (symlink escapes): INVALID_ARGUMENT; NOT_FOUND when absent.
  absl::StatusOr<std::filesystem::path> Resolve(ModelFolder folder, const std::string& relative) const;

 private:
  std::vector<ModelFileEntry> ListDirectory(ModelFolder folder, const std::filesystem::path& dir) const;
  std::filesystem::path root_;
  std::filesystem::path models_;      // holds Stable-diffusion, VAE, ...
  std::filesystem::path embeddings_;  // embeddings folder
  std::filesystem::path checkpoints_;  // set by UseCheckpointFolder
  std::filesystem::path shipped_;      // set by AddShippedFolders
};

}  // namespace atelier::engine
