#include "webui_payload.h"

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace atelier::client {

// WebUI accepts images as base64 with or without a data: URI prefix; protobuf's JSON reader wants plain base64.
static void StripDataUri(nlohmann::json& value) {
  if (!value.is_string()) return;
  std::string text = value.get<std::string>();
  if (absl::StartsWith(text, "data:")) {
    const auto comma = text.find(',');
    if (comma != std::string::npos) value = text.substr(comma + 1);
  }
}

absl::StatusOr<v1::GenerateRequest> WebUiPayloadToRequest(const std::string& text, const std::string& path) {
  nlohmann::json payload = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (payload.is_discarded() || !payload.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  if (payload.contains("init_images") && payload["init_images"].is_array()) {
    for (auto& image : payload["init_images"]) StripDataUri(image);
  }
  if (payload.contains("mask")) {
    if (payload["mask"].is_null()) payload.erase("mask");
    else StripDataUri(payload["mask"]);
  }
  // WebUI's legacy sampler_index is the sampler when sampler_name is not given.
  if ((!payload.contains("sampler_name") || payload["sampler_name"].is_null()) && payload.contains("sampler_index")) {
    payload["sampler_name"] = payload["sampler_index"];
  }
  // null means "WebUI's default": leave the field unset.
  for (auto it = payload.begin(); it != payload.end();) {
    it = it.value().is_null() ? payload.erase(it) : std::next(it);
  }
  for (const char* key : {"prompt", "negative_prompt"}) {
    if (payload.contains(key) && !payload[key].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"", key, "\" must be a string (per-image prompt lists "
                                                     "are not supported)"));
    }
  }
  v1::GenerateRequest request;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(payload.dump(), &request, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", std::string(status.message())));
  }
  return request;
}

}  // namespace atelier::client
