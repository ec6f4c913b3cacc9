// WebUI's API `infotext` field (api.py apply_infotext): the infotext is parsed and its values fill the request
// fields the client did not set (WebUI's paste fields for the txt2img/img2img tab), and its settings keys ("Clip
// skip", "ENSD", "RNG", "Eta", ...) become override_settings the request does not already carry, when they differ
// from the defaults. "Model hash" does not switch checkpoints (WebUI's disable_weights_auto_swap, on by default).
#pragma once

#include "absl/status/status.h"
#include "atelier/v1/generation.pb.h"
#include "engine/models/lora_catalog.h"

namespace atelier::server {

// Fills `request` from request.infotext() (nothing when it is empty). INVALID_ARGUMENT when a value the request
// would take is not a number where one is needed, naming the key.
// With `loras`, a prompt taken from the infotext has its <lora:NAME: renamed to the local file whose hash its
// "Lora hashes" gives (WebUI's Lora infotext_pasted).
absl::Status ApplyInfotext(v1::GenerateRequest& request, engine::LoraCatalog* loras = nullptr);

}  // namespace atelier::server
