// Plugin SDK: a model file read whole through the host's tensor_file_* functions (safetensors memory-mapped, pickles
// through the daemon's non-executing reader), as name -> at::Tensor (read-only CPU views of the mapping, or the
// pickle's own tensors).
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "atelier/sdk/status.h"
#include "atelier/sdk/tensor.h"

namespace atelier::sdk {

// Every tensor of `name` in model folder `folder` (ATELIER_FOLDER_*). The host's error (NOT_FOUND, INVALID_ARGUMENT
// for a corrupt file or a pickle that would run code, ...) as a status.
inline absl::StatusOr<std::map<std::string, at::Tensor>> ReadTensorFile(const atelier_host_api* host, int32_t folder,
                                                                         const std::string& name) {
  atelier_tensor_file* file = nullptr;
  atelier_error err{};
  if (atelier_status s = host->tensor_file_open(host, folder, name.c_str(), &file, &err); s != ATELIER_OK) {
    return FromAbi(s, err);
  }
  std::map<std::string, at::Tensor> out;
  const int64_t count = host->tensor_file_count(file);
  for (int64_t i = 0; i < count; ++i) {
    const char* tensor_name = nullptr;
    DLManagedTensor* t = nullptr;
    atelier_error e{};
    if (atelier_status s = host->tensor_file_get(file, i, &tensor_name, &t, &e); s != ATELIER_OK) {
      host->tensor_file_close(file);
      return FromAbi(s, e);
    }
    out.emplace(tensor_name, Adopt(t));
  }
  host->tensor_file_close(file);
  return out;
}

}  // namespace atelier::sdk
