// A loaded plugin: its library handle, a validated copy of its descriptor, its state and its host function table.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "atelier/plugin.h"
#include "host/host_environment.h"

namespace atelier::host {

// Per-plugin data the host functions reach through atelier_host_api::host_context.
struct PluginHostContext {
  std::string plugin_name;
  const HostEnvironment* environment = nullptr;
};

class Plugin {
 public:
  ~Plugin();  // calls finalize (when init succeeded), then unloads the library
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;

  const std::string& name() const { return name_; }
  const std::string& version() const { return version_; }
  const std::string& description() const { return description_; }
  const std::string& params_schema_json() const { return params_schema_json_; }
  const std::string& file() const { return file_; }
  std::uint32_t abi_major() const { return descriptor_.abi_major; }
  std::uint32_t abi_minor() const { return descriptor_.abi_minor; }
  // The descriptor, zero-filled past the plugin's struct_size: an absent hook is nullptr.
  const atelier_plugin_descriptor& descriptor() const { return descriptor_; }
  atelier_plugin_state* state() const { return state_; }
  // Names of the hooks the plugin implements, in ABI order.
  std::vector<std::string> HookNames() const;

 private:
  friend class PluginRegistry;
  Plugin() = default;

  void* handle_ = nullptr;
  atelier_plugin_descriptor descriptor_{};
  std::string name_, version_, description_, params_schema_json_, file_;
  atelier_plugin_state* state_ = nullptr;
  bool initialized_ = false;
  std::unique_ptr<PluginHostContext> context_;
  atelier_host_api api_{};
};

}  // namespace atelier::host
