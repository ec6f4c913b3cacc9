// The models under --models-dir as the API shows them (names, hashes, architecture), and the one loaded
// checkpoint. Loading builds the new model completely before it replaces the old one, so a failed load leaves
// the previous model serving.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/io/file_hash.h"
#include "engine/io/model_folders.h"
#include "engine/models/lora_catalog.h"

namespace atelier::engine {

struct ModelListing {
  ModelFileEntry file;
  std::string title;         // WebUI title: filename, plus " [sha256[:10]]" once the hash is known
  std::string sha256;        // empty until computed (on load, or when listing asks for hashes)
  std::string short_hash;    // WebUI's old 8-digit hash (cheap: 64 KiB)
  std::string architecture;  // e.g. "SD1.x", "VAE (SD1.x)"; empty when unrecognised
  std::string error;         // why the file is not usable, when it is not
  // LoRAs: alias, metadata and WebUI's network hash (see LoraCatalog).
  std::string alias, network_hash;
  std::map<std::string, std::string> metadata;
};

// Told when the current model changes: the one place the plugins' model_loaded / model_unloaded come from (the
// plugin registry implements it). Called on the thread that loads or unloads, with no lock of the manager held.
class ModelObserver {
 public:
  virtual ~ModelObserver() = default;
  // The current model is about to be replaced (after its successor loaded) or unloaded.
  virtual void ModelUnloading(const Sd1Weights& weights) = 0;
  // `weights` became the current model.
  virtual void ModelLoaded(const Sd1Weights& weights) = 0;
};

class ModelManager {
 public:
  // `folders` may be null (no models directory). `hash_cache_file` may be empty (no persistent cache).
  ModelManager(const ModelFolders* folders, std::filesystem::path hash_cache_file, LoadOptions options);

  // Model files with their identification; `compute_hashes` hashes files not yet in the cache (slow on GBs).
  std::vector<ModelListing> List(std::optional<ModelFolder> only, bool compute_hashes);

  // A checkpoint by WebUI title ("name.safetensors [0123456789]"), filename, name without extension, bare file
  // name, or hash prefix (8+ hex digits). NOT_FOUND lists what is there.
  absl::StatusOr<ModelFileEntry> FindCheckpoint(const std::string& query);

  // WebUI's sd_vae: "Automatic" (a VAE file named like the checkpoint, else the checkpoint's own), "None" or ""
  // (the checkpoint's own), or a VAE filename/name in models/VAE. An empty path means the checkpoint's own.
  absl::StatusOr<std::filesystem::path> ResolveVae(const std::string& sd_vae, const ModelFileEntry& checkpoint);

  // Loads a checkpoint (see FindCheckpoint) with a VAE (see ResolveVae) and makes it current. Loading what is
  // already current does nothing; another VAE for the current checkpoint replaces only the VAE (the UNet and text
  // encoder are shared with the previous model, not reloaded). The previous model stays current on any error.
  absl::StatusOr<std::shared_ptr<const Sd1Weights>> Load(const std::string& checkpoint, const std::string& sd_vae);
  void Unload();
  std::shared_ptr<const Sd1Weights> current() const;
  // The sd_vae request the current model was loaded with ("Automatic", "None", a file); empty when none is loaded.
  std::string current_vae_request() const;
  const LoadOptions& options() const { return options_; }
  // Set before the first load; must outlive the manager (null: none).
  void set_observer(ModelObserver* observer) { observer_ = observer; }
  const ModelFolders* folders() const { return folders_; }
  // A file's full SHA-256 through the manager's hash cache (embeddings' "TI hashes").
  absl::StatusOr<std::string> FileSha256(const std::filesystem::path& path) { return hashes_.Sha256(path); }
  // The LoRAs of models/Lora and models/LyCORIS (names, aliases, hashes through the manager's hash cache).
  LoraCatalog& loras() { return loras_; }

 private:
  struct Identified {
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::string architecture, error, short_hash;
  };
  Identified Identify(const std::filesystem::path& path);
  // Replaces the VAE of the current model when it is `entry`; UNAVAILABLE when another checkpoint is current.
  absl::StatusOr<std::shared_ptr<const Sd1Weights>> SwapVae(const std::filesystem::path& checkpoint_path,
                                                            const ModelFileEntry& entry,
                                                            const std::filesystem::path& vae_file,
                                                            const std::string& vae_request);

  const ModelFolders* folders_;
  HashCache hashes_;
  LoraCatalog loras_{folders_, &hashes_};
  const LoadOptions options_;

  std::mutex identify_mu_;
  std::map<std::string, Identified> identified_;  // by absolute path

  mutable std::mutex current_mu_;
  std::shared_ptr<const Sd1Weights> current_;
  std::string current_vae_request_;
  std::mutex load_mu_;  // one load at a time
  ModelObserver* observer_ = nullptr;
  // Makes `next` current (null: none), telling the observer.
  void MakeCurrent(std::shared_ptr<const Sd1Weights> next, const std::string& vae_request);
};

}  // namespace atelier::engine
