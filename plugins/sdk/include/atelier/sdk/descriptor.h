// Plugin SDK: the descriptor of a plugin built on the SDK. It is a plain atelier_plugin_descriptor (the C header
// stays the binary contract) with the ABI version, its size and the engine ABI tag filled in: a plugin that links
// the engine library is refused by a daemon whose engine differs (another Atelier or libtorch build), with both tags
// in the message, instead of crashing on a C++ layout mismatch.
#pragma once

#include "atelier/plugin.h"
#include "engine/engine_abi.h"

namespace atelier::sdk {

// A descriptor for `name` / `version` at hook-order `priority`; set the hooks, then return it (with static storage
// duration) from atelier_plugin_entry.
inline atelier_plugin_descriptor Descriptor(const char* name, const char* version, int32_t priority = 0) {
  atelier_plugin_descriptor d{};
  d.abi_major = ATELIER_PLUGIN_ABI_MAJOR;
  d.abi_minor = ATELIER_PLUGIN_ABI_MINOR;
  d.struct_size = sizeof(atelier_plugin_descriptor);
  d.name = name;
  d.version = version;
  d.priority = priority;
  d.engine_abi = ATELIER_ENGINE_ABI;
  return d;
}

}  // namespace atelier::sdk
