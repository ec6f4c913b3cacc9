// The host function table given to each plugin (atelier_host_api).
#pragma once

#include "atelier/plugin.h"
#include "host/loaded_plugin.h"

namespace atelier::host {

// Fills a table whose functions act for `context`'s plugin. `context` must outlive the table.
atelier_host_api MakeHostApi(PluginHostContext* context);

// Maps a plugin's status and message to an absl::Status naming the plugin and the hook.
absl::Status PluginStatus(atelier_status code, const std::string& plugin, const char* hook,
                          const atelier_error& error);

}  // namespace atelier::host
