// A WebUI /sdapi/v1/txt2img or img2img JSON payload as a GenerateRequest, as `atelier txt2img --json` reads it:
// unknown keys ignored and null meaning "the default" (as WebUI does), images as base64 with or without a data: URI
// prefix, sampler_index as the legacy sampler_name. Any text gives a request or INVALID_ARGUMENT naming `label`
// (fuzz/webui_payload_fuzz.cc).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "atelier/v1/generation.pb.h"

namespace atelier::client {

absl::StatusOr<v1::GenerateRequest> WebUiPayloadToRequest(const std::string& text, const std::string& label);

}  // namespace atelier::client
