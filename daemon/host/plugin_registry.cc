#include "host/plugin_registry.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host/host_services.h"
#include "util/log.h"

namespace atelier::host {
namespace fs = std::filesystem;
namespace {

// dlopen and plugin init run one at a time in the whole process (Triton's SharedLibrary rule).
std::mutex g_load_mu;

bool ValidName(const char* name) {
  if (name == nullptr) return false;
  const size_t length = strnlen(name, 65);
  if (length == 0 || length > 64) return false;
  for (size_t i = 0; i < length; ++i) {
    const char c = name[i];
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') return false;
  }
  return true;
}

std::string OrEmpty(const char* s) { return s == nullptr ? "" : s; }

std::string AbiString(uint32_t major, uint32_t minor) { return absl::StrCat(major, ".", minor); }

}  // namespace

std::unique_ptr<PluginRegistry> PluginRegistry::LoadDirectory(const fs::path& dir, PluginLoaderOptions options) {
  std::unique_ptr<PluginRegistry> registry(new PluginRegistry());
  registry->environment_ = std::make_unique<HostEnvironment>(std::move(options.environment));
  registry->host_api_size_ = std::min<std::uint64_t>(options.host_api_size, sizeof(atelier_host_api));

  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    LogWarning(absl::StrCat("plugins directory '", dir.string(), "' does not exist; no plugins loaded"));
    return registry;
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".so" && entry.is_regular_file(ec)) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::lock_guard<std::mutex> lock(g_load_mu);
  for (const fs::path& file : files) registry->LoadFile(file);
  std::sort(registry->plugins_.begin(), registry->plugins_.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
  return registry;
}

PluginRegistry::~PluginRegistry() {
  std::lock_guard<std::mutex> lock(g_load_mu);
  while (!plugins_.empty()) plugins_.pop_back();
}

const Plugin* PluginRegistry::Find(absl::string_view name) const {
  for (const auto& plugin : plugins_) {
    if (absl::EqualsIgnoreCase(plugin->name(), name)) return plugin.get();
  }
  return nullptr;
}

std::string PluginRegistry::NameList() const {
  if (plugins_.empty()) return "none";
  return absl::StrJoin(plugins_, ", ", [](std::string* out, const auto& p) { out->append(p->name()); });
}

std::vector<const Plugin*> PluginRegistry::InHookOrder() const {
  std::vector<const Plugin*> ordered;
  for (const auto& plugin : plugins_) ordered.push_back(plugin.get());
  std::stable_sort(ordered.begin(), ordered.end(), [](const Plugin* a, const Plugin* b) {
    const int32_t pa = a->descriptor().priority, pb = b->descriptor().priority;
    return pa != pb ? pa < pb : a->name() < b->name();
  });
  return ordered;
}

void PluginRegistry::NotifyModelUnloaded() const {
  for (const Plugin* plugin : InHookOrder()) {
    const auto& d = plugin->descriptor();
    if (d.model_unloaded == nullptr) continue;
    try {
      d.model_unloaded(plugin->state());
    } catch (...) {
      LogWarning(absl::StrCat("plugin ", plugin->name(), ": model_unloaded threw a C++ exception across the C ABI"));
    }
  }
}

void PluginRegistry::NotifyModelLoaded(const std::string& title, const std::string& file,
                                       int unet_in_channels) const {
  atelier_model_info info{};
  info.struct_size = sizeof(info);
  info.checkpoint_title = title.c_str();
  info.checkpoint_file = file.c_str();
  info.unet_in_channels = unet_in_channels;
  for (const Plugin* plugin : InHookOrder()) {
    const auto& d = plugin->descriptor();
    if (d.model_loaded == nullptr) continue;
    atelier_error error{};
    atelier_status status = ATELIER_INTERNAL;
    try {
      status = d.model_loaded(plugin->state(), &info, &error);
    } catch (...) {
      std::snprintf(error.message, sizeof(error.message), "C++ exception across the C ABI");
    }
    if (status != ATELIER_OK) LogWarning(std::string(PluginStatus(status, plugin->name(), "model_loaded", error).message()));
  }
}

void PluginRegistry::LoadFile(const fs::path& path) {
  const std::string file = path.filename().string();
  auto refuse = [&](std::string reason) {
    LogError(absl::StrCat("plugin ", file, " refused: ", reason));
    refused_.push_back({file, std::move(reason)});
  };

  std::unique_ptr<Plugin> plugin(new Plugin());
  plugin->file_ = file;
  dlerror();
  plugin->handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (plugin->handle_ == nullptr) {
    const std::string why = OrEmpty(dlerror());
    // An SDK plugin built against another engine needs another libatelier_engine.so (its soname has the version).
    const std::string hint = why.find("libatelier_engine") != std::string::npos
                                 ? absl::StrCat(" (an SDK plugin built against another engine: rebuild it against "
                                                "this daemon's plugins/sdk, engine ABI '", environment_->engine_abi, "')")
                                 : "";
    return refuse(absl::StrCat("cannot load the shared library: ", why.empty() ? "unknown dlopen error" : why, hint));
  }
  auto entry = reinterpret_cast<atelier_plugin_entry_fn>(dlsym(plugin->handle_, ATELIER_PLUGIN_ENTRY_NAME));
  if (entry == nullptr) {
    return refuse(absl::StrCat("missing entry symbol '", ATELIER_PLUGIN_ENTRY_NAME,
                               "' (not an Atelier plugin, or not exported with ATELIER_PLUGIN_EXPORT)"));
  }
  const atelier_plugin_descriptor* descriptor = entry(ATELIER_PLUGIN_ABI_MAJOR, ATELIER_PLUGIN_ABI_MINOR);
  if (descriptor == nullptr) {
    return refuse(absl::StrCat(ATELIER_PLUGIN_ENTRY_NAME, " returned NULL: the plugin declined this daemon (ABI ",
                               AbiString(ATELIER_PLUGIN_ABI_MAJOR, ATELIER_PLUGIN_ABI_MINOR), ")"));
  }
  // Only the first three fields are read before the version checks pass.
  const uint32_t major = descriptor->abi_major;
  const uint32_t minor = descriptor->abi_minor;
  const uint64_t size = descriptor->struct_size;
  const std::string host_abi = AbiString(ATELIER_PLUGIN_ABI_MAJOR, ATELIER_PLUGIN_ABI_MINOR);
  if (major != ATELIER_PLUGIN_ABI_MAJOR) {
    return refuse(absl::StrCat("built for plugin ABI ", AbiString(major, minor), "; this daemon supports ABI ",
                               ATELIER_PLUGIN_ABI_MAJOR, ".x (", host_abi,
                               "): rebuild the plugin against this daemon's atelier/plugin.h"));
  }
  if (minor > ATELIER_PLUGIN_ABI_MINOR) {
    return refuse(absl::StrCat("built against plugin ABI ", AbiString(major, minor), ", newer than this daemon's ",
                               host_abi, ": upgrade the daemon or rebuild the plugin against its header"));
  }
  if (size < ATELIER_PLUGIN_DESCRIPTOR_MIN_SIZE) {
    return refuse(absl::StrCat("descriptor struct_size ", size, " is below the ABI ", host_abi, " minimum of ",
                               ATELIER_PLUGIN_DESCRIPTOR_MIN_SIZE, " bytes (identity and lifecycle fields)"));
  }
  if (size > sizeof(atelier_plugin_descriptor)) {
    return refuse(absl::StrCat("descriptor struct_size ", size, " is larger than ABI ", AbiString(major, minor),
                               " allows (", sizeof(atelier_plugin_descriptor),
                               " bytes): the plugin's header does not match the version it claims"));
  }
  // Copy what the plugin declared; the rest stays zero, so hooks it does not know of read as NULL.
  std::memcpy(&plugin->descriptor_, descriptor, static_cast<size_t>(size));
  const atelier_plugin_descriptor& d = plugin->descriptor_;

  if (!ValidName(d.name)) {
    return refuse(absl::StrCat("invalid plugin name '", OrEmpty(d.name).substr(0, 80),
                               "': use 1-64 characters from A-Z a-z 0-9 _ - ."));
  }
  plugin->name_ = d.name;
  if (d.init == nullptr || d.finalize == nullptr) {
    return refuse(absl::StrCat("plugin '", plugin->name_, "' lacks the required init/finalize functions"));
  }
  if (d.process != nullptr && d.job_end == nullptr) {
    return refuse(absl::StrCat("plugin '", plugin->name_, "' has a process hook but no job_end to free job state"));
  }
  if (d.engine_abi != nullptr && environment_->engine_abi != d.engine_abi) {
    return refuse(absl::StrCat("plugin '", plugin->name_, "' was built against engine ABI '",
                               OrEmpty(d.engine_abi).substr(0, 200), "'; this daemon's is '",
                               environment_->engine_abi,
                               "': rebuild it against this daemon's plugin SDK (plugins/sdk), or use the C ABI alone"));
  }
  if (const Plugin* existing = Find(plugin->name_)) {
    return refuse(absl::StrCat("a plugin named '", existing->name(), "' is already loaded from ", existing->file()));
  }
  plugin->version_ = OrEmpty(d.version);
  plugin->description_ = OrEmpty(d.description);
  plugin->params_schema_json_ = d.params_schema_json ? d.params_schema_json : "{}";

  plugin->context_ = std::make_unique<PluginHostContext>();
  plugin->context_->plugin_name = plugin->name_;
  plugin->context_->environment = environment_.get();
  plugin->api_ = MakeHostApi(plugin->context_.get());
  plugin->api_.struct_size = host_api_size_;

  atelier_error error{};
  atelier_status status = ATELIER_INTERNAL;
  try {
    status = d.init(&plugin->api_, &plugin->state_, &error);
  } catch (...) {
    std::snprintf(error.message, sizeof(error.message), "init threw a C++ exception across the C ABI");
  }
  if (status != ATELIER_OK) {
    const absl::Status why = PluginStatus(status, plugin->name_, "init", error);
    return refuse(std::string(why.message()));
  }
  plugin->initialized_ = true;
  LogInfo(absl::StrCat("plugin ", plugin->name_, " ", plugin->version_, " loaded from ", file, " (ABI ",
                       AbiString(major, minor), "; hooks: ", absl::StrJoin(plugin->HookNames(), ", "), ")"));
  plugins_.push_back(std::move(plugin));
}

}  // namespace atelier::host
