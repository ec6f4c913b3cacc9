// Checks a GenerateRequest against the daemon's limits and fills WebUI's defaults into the fields left unset.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "atelier/v1/generation.pb.h"
#include "engine/models/lora_catalog.h"
#include "host/plugin_registry.h"

namespace atelier::server {

// INVALID_ARGUMENT naming the field, its value and what is allowed. On success every `optional` field the
// pipeline reads has a value (WebUI API defaults: steps 50, 512x512, cfg 7, batch 1, n_iter 1, seed -1, ...).
// `loras` (may be null): the daemon's LoRAs, for the infotext's "Lora hashes" (see ApplyInfotext).
absl::Status ValidateAndFillDefaults(v1::GenerateRequest& request, engine::LoraCatalog* loras = nullptr);

// INVALID_ARGUMENT when an alwayson_scripts key names no loaded plugin (WebUI: "always on script X not found").
absl::Status ValidatePluginArgs(const v1::GenerateRequest& request, const host::PluginRegistry& plugins);

}  // namespace atelier::server
