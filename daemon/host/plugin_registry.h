// Loading plugins from a directory, and the set of loaded and refused plugins.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "engine/models/model_manager.h"
#include "host/host_environment.h"
#include "host/loaded_plugin.h"

namespace atelier::host {

struct RefusedPlugin {
  std::string file;    // file name, no directory
  std::string reason;  // why, naming expected vs actual values
};

struct PluginLoaderOptions {
  HostEnvironment environment;
  // sizeof(atelier_host_api) told to plugins. Tests lower it to play an older host.
  std::uint64_t host_api_size = sizeof(atelier_host_api);
};

// Also the model manager's observer: model changes reach the plugins' model_loaded / model_unloaded from there.
class PluginRegistry final : public engine::ModelObserver {
 public:
  // Loads every "*.so" in `dir`, in file-name order, serialised under one process-wide lock. A plugin that fails a
  // check is refused: logged as an error and listed in refused(), never partly loaded. A directory that does not
  // exist gives an empty registry (logged). Plugins are finalized and unloaded in reverse order on destruction.
  static std::unique_ptr<PluginRegistry> LoadDirectory(const std::filesystem::path& dir, PluginLoaderOptions options);

  ~PluginRegistry() override;
  PluginRegistry(const PluginRegistry&) = delete;
  PluginRegistry& operator=(const PluginRegistry&) = delete;

  // Loaded plugins, by name.
  const std::vector<std::unique_ptr<Plugin>>& plugins() const { return plugins_; }
  const std::vector<RefusedPlugin>& refused() const { return refused_; }
  // Case-insensitive, like WebUI's alwayson_scripts keys; nullptr when absent.
  const Plugin* Find(absl::string_view name) const;
  // "a, b" (for error messages), or "none".
  std::string NameList() const;
  const HostEnvironment& environment() const { return *environment_; }

  // The plugins in hook order: ascending descriptor priority, then name.
  std::vector<const Plugin*> InHookOrder() const;

  // Calls every plugin's model_unloaded hook (the checkpoint is about to go). Call on the executor thread.
  void NotifyModelUnloaded() const;
  // engine::ModelObserver
  void ModelUnloading(const engine::Sd1Weights&) override { NotifyModelUnloaded(); }
  void ModelLoaded(const engine::Sd1Weights& weights) override {
    NotifyModelLoaded(weights.title, weights.filename, weights.layout.unet_in_channels);
  }

  // Calls every plugin's model_loaded hook (WebUI on_model_loaded). A plugin's error is logged; the model stays
  // loaded. Call on the executor thread.
  void NotifyModelLoaded(const std::string& title, const std::string& file, int unet_in_channels) const;

 private:
  PluginRegistry() = default;
  // Loads one file; records a refusal on failure.
  void LoadFile(const std::filesystem::path& path);

  std::unique_ptr<HostEnvironment> environment_;
  std::uint64_t host_api_size_ = sizeof(atelier_host_api);
  std::vector<std::unique_ptr<Plugin>> plugins_;
  std::vector<RefusedPlugin> refused_;
};

}  // namespace atelier::host
