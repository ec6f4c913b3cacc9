// Plugin SDK: images as WebUI's API sends them (base64, optionally a data: URL) decoded with the host's decoder.
#pragma once

#include <string>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "atelier/plugin.h"
#include "atelier/sdk/tensor.h"

namespace atelier::sdk {

// The bytes of a base64 text (a "data:...;base64," prefix is dropped). `what` names the field in errors.
inline absl::StatusOr<std::string> Base64Bytes(const std::string& text, const std::string& what) {
  std::string b64 = text;
  if (absl::StartsWith(b64, "data:")) {
    const size_t comma = b64.find(',');
    if (comma == std::string::npos) return absl::InvalidArgumentError(absl::StrCat(what, " is a data URL without data"));
    b64 = b64.substr(comma + 1);
  }
  std::string bytes;
  if (!absl::Base64Unescape(b64, &bytes) || bytes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not base64 image data"));
  }
  return bytes;
}

// A base64 PNG / JPEG / WebP as uint8 [H, W, 3|4] (CPU), through host->image_decode. INVALID_ARGUMENT naming `what`.
inline absl::StatusOr<at::Tensor> DecodeBase64Image(const atelier_host_api* host, const std::string& text,
                                                    const std::string& what) {
  auto bytes = Base64Bytes(text, what);
  if (!bytes.ok()) return bytes.status();
  DLManagedTensor* image = nullptr;
  atelier_error err{};
  if (atelier_status s = host->image_decode(host, bytes->data(), bytes->size(), &image, &err); s != ATELIER_OK) {
    return absl::InvalidArgumentError(absl::StrCat(what, " cannot be decoded: ", err.message));
  }
  return Adopt(image);
}

}  // namespace atelier::sdk
